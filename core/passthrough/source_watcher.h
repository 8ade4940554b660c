// core/passthrough/source_watcher.h — noticing changes made to the source
// directory by others than the mount.
//
// Owns: SourceWatcher, a fanotify group (FAN_REPORT_DFID_NAME) with one
// inode mark per watched directory, and a thread that reads its events and
// hands each to a callback as (directory file handle, name, what changed).
// The passthrough backend watches the directories the kernel remembers and
// turns events into FUSE_NOTIFY_INVAL_ENTRY/INVAL_INODE, so a mount with long
// cache lifetimes still sees what others do to the source. Changes the
// daemon makes itself (its own pid) are dropped: the kernel knows them.
//
// What is seen: names created, removed or renamed in a watched directory,
// attribute changes and closes after writing of its entries and of itself.
// Not seen: writes by a writer that has not closed yet (FAN_MODIFY would
// fire on every write, including passthrough writes through the mount), and
// file systems mounted below the source.
//
// Thread-safety: Watch/Unwatch may be called from any thread; the callback
// runs on the watcher's own thread, one event at a time.
#ifndef EFUSE_CORE_PASSTHROUGH_SOURCE_WATCHER_H_
#define EFUSE_CORE_PASSTHROUGH_SOURCE_WATCHER_H_

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <thread>

#include "absl/status/statusor.h"

namespace efuse::passthrough {

struct SourceEvent {
  uint64_t mask = 0;       // FAN_* bits
  std::string dir_handle;  // the watched directory, encoded as HandleOf()
  std::string name;        // the entry; "." for the directory itself
};

class SourceWatcher {
 public:
  using Callback = std::function<void(const SourceEvent&)>;

  // Needs CAP_SYS_ADMIN and a source file system with file handles.
  static absl::StatusOr<std::unique_ptr<SourceWatcher>> Start(Callback callback);
  ~SourceWatcher();  // stops and joins the thread
  SourceWatcher(const SourceWatcher&) = delete;
  SourceWatcher& operator=(const SourceWatcher&) = delete;

  // Adds/removes the mark on the directory open as `fd` (any kind of fd).
  // Errors are returned, not logged (ENOENT: the directory is gone).
  int Watch(int fd);
  int Unwatch(int fd);

 private:
  SourceWatcher(int fan_fd, int stop_fd, Callback callback);
  void Loop();

  const int fan_fd_;
  const int stop_fd_;
  const Callback callback_;
  std::thread thread_;
};

}  // namespace efuse::passthrough

#endif  // EFUSE_CORE_PASSTHROUGH_SOURCE_WATCHER_H_
