// tools/efusectl/status_file.h — reading a daemon's status file.
//
// Owns: the "key: value" lines a running efused keeps in
// <dir>/<connection>.status (core/status_file.h), read as they are or
// rewritten first: SIGUSR1 makes the daemon rewrite them (live counters,
// per-queue lines), and the reader waits up to 1 s for the new status_seq.
// Liveness comes from the pid there, never from stat() on the mount.
//
// Thread-safety: none needed (reads files, sends a signal).
#ifndef EFUSE_TOOLS_EFUSECTL_STATUS_FILE_H_
#define EFUSE_TOOLS_EFUSECTL_STATUS_FILE_H_

#include <string>
#include <vector>

namespace efuse::ctl {

// Connection `id`'s status file (core/status_file.h: /run/efuse, or the
// directory of the user who owns the mount), "" if there is none.
std::string StatusFilePath(unsigned id);
// The lines of connection `id`'s status file (empty if there is none).
std::vector<std::string> ReadStatusFile(unsigned id);
// The number after "key: " in `lines`, 0 if absent.
long StatusValue(const std::vector<std::string>& lines, const std::string& key);
// The text after "key: " in `lines`, "" if absent.
std::string StatusText(const std::vector<std::string>& lines, const std::string& key);
// ReadStatusFile after the daemon rewrote it; the old lines if it did not
// within 1 s (or no daemon names itself there). SIGUSR1 goes only to a
// process named efused whose real uid owns the status file.
std::vector<std::string> FreshStatusFile(unsigned id);
// Sends `sig` to the daemon connection `id`'s status file names, if it is
// an efused of the file's owner. False if there is none such.
bool SignalDaemon(unsigned id, int sig);
// Where a restart request for connection `id` goes (beside its status
// file, read by its supervisor on SIGUSR2), "" if there is no status file.
std::string RestartRequestPath(unsigned id);

}  // namespace efuse::ctl

#endif  // EFUSE_TOOLS_EFUSECTL_STATUS_FILE_H_
