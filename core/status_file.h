// core/status_file.h — where a running efused describes itself.
//
// Owns: the place of the "key: value" status file each daemon keeps for
// `efusectl` and tests (<dir>/<connection id>.status): /run/efuse for root;
// for a daemon without root (fusermount3, or root inside a user namespace),
// /run/user/<uid>/efuse where the login manager made /run/user/<uid>, else
// /tmp/efuse-<uid>, with <uid> as the initial user namespace knows it, so
// that a reader outside the namespace finds it under the mount's user_id.
// A directory is trusted only if it is owned by the mount's owner (or root)
// and writable by nobody else: a status file names a pid that efusectl
// signals. Stateless functions; thread-safe.
#ifndef EFUSE_CORE_STATUS_FILE_H_
#define EFUSE_CORE_STATUS_FILE_H_

#include <sys/types.h>

#include <string>

#include "absl/status/statusor.h"

namespace efuse {

// `uid` of this process's user namespace as the initial namespace sees it
// (its own value outside any user namespace; unchanged if unmapped).
uid_t InitialNamespaceUid(uid_t uid);

// True in the initial user namespace (it maps every id to itself); false
// in a child namespace (unshare -U, a rootless container), whose
// capabilities the kernel does not count for system-wide privileges.
bool InInitialUserNamespace();

// The directory this process writes status files into, created if need be
// (mode 0755 for /run/efuse, 0700 otherwise). An error names why none fits.
absl::StatusOr<std::string> StatusDirectoryForWriting();

// The status file of connection `connection_id`, whose mount's user_id is
// `owner` (in this process's namespace), or "" if no trusted one exists.
std::string FindStatusFile(unsigned connection_id, uid_t owner);

}  // namespace efuse

#endif  // EFUSE_CORE_STATUS_FILE_H_
