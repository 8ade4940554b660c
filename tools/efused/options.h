// tools/efused/options.h — efused's options as one table.
//
// Owns: the list of efused's options, read from the flags themselves (each
// ABSL_FLAG in tools/efused/cli.cc is the one definition of its name, type,
// default and meaning; its group is the word before the first ':' of its
// meaning, e.g. "passthrough: ..."), and everything that serves them from
// that list:
//   * `--help`: every option, grouped, with its default and meaning;
//   * `--version`: efuse's version, the git commit it was built from, and
//     the newest FUSE protocol minor it speaks;
//   * `--man`: the manual page efused(8);
//   * `-o NAME=VALUE` (and `-o NAME` for a true boolean, `-o noNAME` for a
//     false one): any option as a mount option, as mount(8) and fstab pass
//     them; the remaining -o words are mount options proper;
//   * `--config=FILE`: NAME=VALUE lines (blank lines and # comments
//     skipped), the form /etc/efuse/<instance>.conf takes.
// A bad name or value is refused with one line naming it.
//
// Thread-safety: call from main() before any thread starts (flags are
// process-wide).
#ifndef EFUSE_TOOLS_EFUSED_OPTIONS_H_
#define EFUSE_TOOLS_EFUSED_OPTIONS_H_

#include <string>
#include <vector>

#include "absl/status/status.h"

namespace efuse {

struct OptionInfo {
  std::string name;
  std::string group;  // "general", "memfs", "passthrough", ...
  std::string type;   // "bool", "string", "double", ...
  std::string default_value;
  std::string meaning;  // the flag's help text without its group word
};

// Every efused option, grouped (general first), by name within a group.
std::vector<OptionInfo> AllOptions();

// The text `efused --help` prints (usage, then every option).
std::string HelpText();
// "efused 0.1.0 (git 1a2b3c4), FUSE protocol 7.45".
std::string VersionText();
// efused(8), in roff (man -l -): the same options, with the mount and
// service usage. Built into build/tools/efused/man8/efused.8 and installed.
std::string ManPage();

// Sets option `name` from `value` (as --name=value would). `origin` names
// where it came from in the error ("-o", "--config /etc/efuse/a.conf:3").
absl::Status SetOption(const std::string& name, const std::string& value,
                       const std::string& origin);

// Takes the words of the -o lists that name efused options (NAME=VALUE,
// NAME or noNAME for booleans) and applies them; `mount_options` keeps the
// rest, for the mount itself.
absl::Status ApplyOptionsFromMountOptions(std::vector<std::string>* mount_options);

// Applies a --config file: NAME=VALUE lines, # comments.
absl::Status ApplyConfigFile(const std::string& path);

// Options a running mount cannot change: what INIT negotiated, the mount
// options, the file system, its source and storage. A successor server
// (a restart) serves with the values the mount was made with.
// "name=value" lines of their current values.
std::string FixedOptionValues();
// Sets each fixed option whose value differs from `recorded` (what
// FixedOptionValues gave the mount's first server) back to the recorded
// value; returns one "--name=new (the mount has old)" per option set back.
std::vector<std::string> KeepFixedOptions(const std::string& recorded);

}  // namespace efuse

#endif  // EFUSE_TOOLS_EFUSED_OPTIONS_H_
