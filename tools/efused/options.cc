#include "tools/efused/options.h"

#include <algorithm>
#include <fstream>
#include <map>
#include <sstream>

#include "absl/flags/flag.h"
#include "absl/flags/reflection.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "proto/abi.h"

#ifndef EFUSE_VERSION
#define EFUSE_VERSION "unknown"
#endif
#ifndef EFUSE_GIT_COMMIT
#define EFUSE_GIT_COMMIT "unknown"
#endif

namespace efuse {
namespace {

// Every efused option is an ABSL_FLAG in this file; others linked in
// (absl's own, GoogleTest's in tests) are not options of ours.
constexpr const char* kOptionsFile = "tools/efused/cli.cc";
// The -o list itself is the mount-option channel, not an option to set there.
constexpr const char* kMountOptionsFlag = "o";
// Groups, in --help order; a meaning that starts "GROUP: " (or "uring, ...")
// puts its option there.
constexpr const char* kGroups[] = {"general", "memfs", "passthrough", "transport", "telemetry",
                                   "offload"};

std::string GroupOf(const std::string& help, std::string* meaning) {
  const size_t colon = help.find(": ");
  *meaning = help;
  if (colon == std::string::npos || colon > 20) return "general";
  const std::string word = help.substr(0, colon);
  std::string group;
  if (word == "memfs" || word == "passthrough" || word == "telemetry" || word == "offload" ||
      word == "transport") {
    group = word;
  } else if (absl::StartsWith(word, "uring")) {
    group = "transport";
  } else {
    return "general";
  }
  *meaning = help.substr(colon + 2);
  return group;
}

bool IsOurs(const absl::CommandLineFlag& flag) {
  return absl::EndsWith(flag.Filename(), kOptionsFile);
}

absl::CommandLineFlag* FindOption(const std::string& name) {
  absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
  return flag != nullptr && IsOurs(*flag) ? flag : nullptr;
}

}  // namespace

std::vector<OptionInfo> AllOptions() {
  std::vector<OptionInfo> out;
  for (const auto& [name, flag] : absl::GetAllFlags()) {
    if (!IsOurs(*flag)) continue;
    OptionInfo o;
    o.name = std::string(name);
    o.group = GroupOf(flag->Help(), &o.meaning);
    o.type = flag->IsOfType<bool>() ? "bool"
             : flag->IsOfType<std::string>() ? "string"
             : flag->IsOfType<double>() ? "seconds"
             : flag->IsOfType<std::vector<std::string>>() ? "list"
                                                          : "number";
    o.default_value = flag->DefaultValue();
    out.push_back(std::move(o));
  }
  auto rank = [](const std::string& g) {
    return std::find(std::begin(kGroups), std::end(kGroups), g) - std::begin(kGroups);
  };
  std::sort(out.begin(), out.end(), [&](const OptionInfo& a, const OptionInfo& b) {
    return rank(a.group) != rank(b.group) ? rank(a.group) < rank(b.group) : a.name < b.name;
  });
  return out;
}

std::string HelpText() {
  std::ostringstream s;
  s << "usage: efused [options] MOUNTPOINT\n"
       "  Serves an efuse file system at MOUNTPOINT.\n"
       "  efused --fs=memfs --size=1G -o allow_other /mnt/efuse\n"
       "  efused --fs=passthrough --source=/srv/data -o allow_other /mnt/data\n"
       "Every option is also a mount option (-o NAME=VALUE; -o NAME or -o noNAME\n"
       "for a yes/no one) and a line NAME=VALUE of a --config file. Sizes take\n"
       "K, M, G; times are seconds.\n";
  std::string group;
  for (const OptionInfo& o : AllOptions()) {
    if (o.group != group) {
      group = o.group;
      s << "\n" << group << ":\n";
    }
    if (o.name == kMountOptionsFlag) {
      s << "  -o OPTIONS[,...]";  // how mount(8) and users write it
    } else {
      s << "  --" << o.name;
      if (o.type != "bool") s << "=" << absl::AsciiStrToUpper(o.type);
    }
    const std::string shown = o.default_value.empty() ? "\"\"" : o.default_value;
    s << "  (default " << shown << ")\n";
    // The meaning, wrapped at 76 columns, indented.
    std::string line = "     ";
    for (absl::string_view word : absl::StrSplit(o.meaning, ' ', absl::SkipEmpty())) {
      if (line.size() + word.size() + 1 > 78) {
        s << line << "\n";
        line = "     ";
      }
      absl::StrAppend(&line, " ", word);
    }
    s << line << "\n";
  }
  s << "\n  --help     this list\n  --version  efuse's version, build and protocol\n"
       "  --man      the manual page, efused(8), in roff (man -l -)\n";
  return s.str();
}

std::string VersionText() {
  return absl::StrCat("efused ", EFUSE_VERSION, " (git ", EFUSE_GIT_COMMIT, "), FUSE protocol 7.",
                      abi::kKernelMinor);
}

namespace {
// Roff text: a leading '.' or '\'' would be a request; backslashes escape.
std::string Roff(const std::string& text) {
  std::string out;
  for (char c : text) {
    if (c == '\\') {
      out += "\\e";
    } else if (c == '-') {
      out += "\\-";
    } else {
      out += c;
    }
  }
  if (!out.empty() && (out[0] == '.' || out[0] == '\'')) out = "\\&" + out;
  return out;
}
}  // namespace

std::string ManPage() {
  std::ostringstream s;
  s << ".TH EFUSED 8 \"\" \"efuse " << EFUSE_VERSION << "\" \"System Administration\"\n"
    << ".SH NAME\nefused \\- the efuse FUSE file system server\n"
    << ".SH SYNOPSIS\n.B efused\n[\\fIoptions\\fR] \\fIMOUNTPOINT\\fR\n.br\n"
    << ".B mount \\-t fuse.efuse\n\\fISOURCE\\fR \\fIMOUNTPOINT\\fR [\\fB\\-o\\fR \\fIoptions\\fR]\n.br\n"
    << ".B systemctl start efused@\\fIescaped\\-mountpoint\\fR\n"
    << ".SH DESCRIPTION\n"
    << "efused serves a file system at MOUNTPOINT through the kernel's FUSE: memfs (in memory) or "
       "passthrough (a source directory, with kernel passthrough of file data). It speaks the FUSE "
       "protocol itself, over the kernel's FUSE io_uring queues where they are on.\n"
    << ".PP\nEvery option below is also a mount option (\\fB\\-o\\fR \\fINAME\\fR=\\fIVALUE\\fR; "
       "\\fB\\-o\\fR \\fINAME\\fR or \\fB\\-o no\\fR\\fINAME\\fR for a yes/no one), "
       "so an fstab line carries all of them, and a line \\fINAME\\fR=\\fIVALUE\\fR of a "
       "\\fB\\-\\-config\\fR file (the form of /etc/efuse/\\fIinstance\\fR.conf for "
       "efused@.service).\n";
  std::string group;
  for (const OptionInfo& o : AllOptions()) {
    if (o.group != group) {
      group = o.group;
      s << ".SH " << absl::AsciiStrToUpper(group) << " OPTIONS\n";
    }
    s << ".TP\n";
    if (o.name == kMountOptionsFlag) {
      s << ".BI \"\\-o \" options\n";
    } else if (o.type == "bool") {
      s << ".B \\-\\-" << Roff(o.name) << "\n";
    } else {
      s << ".BI \\-\\-" << Roff(o.name) << "= " << absl::AsciiStrToLower(o.type) << "\n";
    }
    s << Roff(o.meaning) << " (default: " << Roff(o.default_value.empty() ? "none" : o.default_value)
      << ")\n";
  }
  s << ".SH EXIT STATUS\n0 after a clean unmount; 2 for a bad option (one line on stderr "
       "naming it); 1 when serving failed.\n"
    << ".SH SEE ALSO\n.BR mount (8),\n.BR fstab (5),\n.BR systemd.service (5)\n";
  return s.str();
}

absl::Status SetOption(const std::string& name, const std::string& value,
                       const std::string& origin) {
  absl::CommandLineFlag* flag = FindOption(name);
  if (flag == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(origin, ": unknown option '", name, "' (efused --help lists them)"));
  }
  std::string error;
  if (!flag->ParseFrom(value, &error)) {
    return absl::InvalidArgumentError(
        absl::StrCat(origin, ": bad value '", value, "' for ", name, ": ", error));
  }
  return absl::OkStatus();
}

absl::Status ApplyOptionsFromMountOptions(std::vector<std::string>* mount_options) {
  std::vector<std::string> rest;
  for (const std::string& list : *mount_options) {
    std::vector<std::string> kept;
    for (absl::string_view word : absl::StrSplit(list, ',', absl::SkipEmpty())) {
      const size_t eq = word.find('=');
      const std::string name(word.substr(0, eq));
      absl::CommandLineFlag* flag = name == kMountOptionsFlag ? nullptr : FindOption(name);
      if (flag != nullptr) {
        const std::string value =
            eq == absl::string_view::npos ? std::string(flag->IsOfType<bool>() ? "true" : "")
                                          : std::string(word.substr(eq + 1));
        if (eq == absl::string_view::npos && !flag->IsOfType<bool>()) {
          return absl::InvalidArgumentError(
              absl::StrCat("-o: option '", name, "' needs a value (", name, "=...)"));
        }
        if (absl::Status s = SetOption(name, value, "-o"); !s.ok()) return s;
        continue;
      }
      if (eq == absl::string_view::npos && absl::StartsWith(word, "no")) {
        absl::CommandLineFlag* negated = FindOption(std::string(word.substr(2)));
        if (negated != nullptr && negated->IsOfType<bool>()) {
          if (absl::Status s = SetOption(std::string(word.substr(2)), "false", "-o"); !s.ok()) {
            return s;
          }
          continue;
        }
      }
      kept.emplace_back(word);
    }
    if (!kept.empty()) rest.push_back(absl::StrJoin(kept, ","));
  }
  *mount_options = std::move(rest);
  return absl::OkStatus();
}

absl::Status ApplyConfigFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::InvalidArgumentError(absl::StrCat("--config: cannot read '", path, "'"));
  std::string line;
  int number = 0;
  while (std::getline(in, line)) {
    ++number;
    const std::string text(absl::StripAsciiWhitespace(line));
    if (text.empty() || text[0] == '#') continue;
    const std::string origin = absl::StrCat("--config ", path, ":", number);
    const size_t eq = text.find('=');
    if (eq == std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat(origin, ": expected NAME=VALUE, got '", text, "'"));
    }
    std::string name(absl::StripAsciiWhitespace(text.substr(0, eq)));
    if (absl::StartsWith(name, "--")) name = name.substr(2);
    const std::string value(absl::StripAsciiWhitespace(text.substr(eq + 1)));
    if (absl::Status s = SetOption(name, value, origin); !s.ok()) return s;
  }
  return absl::OkStatus();
}

namespace {
// Each one either is negotiated at INIT (max_write, passthrough,
// writeback_cache, posix_acl, killpriv_v2, readdirplus, auto_inval_data,
// source_locks, idmap, request_timeout), is the mount (o), is what the
// journal and storage were made for (fs, source, memfs_data, size,
// max_inodes, xattrs), or is kept by the kernel for the connection once
// answered (dir_handles: an OPENDIR answered ENOSYS is never sent again).
constexpr const char* kFixedOptions[] = {
    "fs",         "source",          "memfs_data",  "size",        "max_inodes",   "o",
    "max_write",  "passthrough",     "writeback_cache", "posix_acl", "xattrs",      "killpriv_v2",
    "readdirplus", "auto_inval_data", "source_locks", "idmap",     "request_timeout", "dir_handles",
    "supervise",
};
}  // namespace

std::string FixedOptionValues() {
  std::string lines;
  for (const char* name : kFixedOptions) {
    if (const absl::CommandLineFlag* flag = FindOption(name)) absl::StrAppend(&lines, name, "=", flag->CurrentValue(), "\n");
  }
  return lines;
}

std::vector<std::string> KeepFixedOptions(const std::string& recorded) {
  std::vector<std::string> kept;
  for (absl::string_view line : absl::StrSplit(recorded, '\n', absl::SkipEmpty())) {
    const size_t eq = line.find('=');
    if (eq == absl::string_view::npos) continue;
    const std::string name(line.substr(0, eq)), was(line.substr(eq + 1));
    absl::CommandLineFlag* flag = FindOption(name);
    if (flag == nullptr || flag->CurrentValue() == was) continue;
    kept.push_back(absl::StrCat("--", name, "=", flag->CurrentValue(), " (the mount has ", was.empty() ? "''" : was, ")"));
    std::string error;
    flag->ParseFrom(was, &error);
  }
  return kept;
}

}  // namespace efuse
