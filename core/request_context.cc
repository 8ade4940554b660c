// core/request_context.cc — supplementary-group lookup for permission checks.
#include <cstdio>
#include <cstring>

#include "core/filesystem.h"

namespace efuse {

namespace {
// Reads the "Groups:" line of /proc/<pid>/status. An unreadable file (the
// caller already exited) leaves the list empty: fewer rights, never more.
std::vector<uint32_t> ReadProcGroups(uint32_t pid) {
  std::vector<uint32_t> groups;
  char path[64];
  std::snprintf(path, sizeof(path), "/proc/%u/status", pid);
  FILE* f = std::fopen(path, "re");
  if (f == nullptr) return groups;
  char line[4096];
  while (std::fgets(line, sizeof(line), f) != nullptr) {
    if (std::strncmp(line, "Groups:", 7) != 0) continue;
    char* p = line + 7;
    while (*p != '\0') {
      char* end = nullptr;
      unsigned long v = std::strtoul(p, &end, 10);
      if (end == p) break;
      groups.push_back(static_cast<uint32_t>(v));
      p = end;
    }
    break;
  }
  std::fclose(f);
  return groups;
}
}  // namespace

bool RequestContext::InGroup(uint32_t g) const {
  if (!IdentityKnown()) return false;
  if (g == gid) return true;
  for (uint32_t x : groups)
    if (x == g) return true;
  if (!groups.empty() || pid == 0) return false;
  if (!proc_groups_loaded_) {
    proc_groups_ = ReadProcGroups(pid);
    proc_groups_loaded_ = true;
  }
  for (uint32_t x : proc_groups_)
    if (x == g) return true;
  return false;
}

}  // namespace efuse
