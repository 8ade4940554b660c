#include "core/test_faults.h"

#include <cstdlib>
#include <map>

#include "absl/strings/str_split.h"

namespace efuse {

std::optional<std::string> TestFault(std::string_view point) {
  static const std::map<std::string, std::string, std::less<>> switched_on = [] {
    std::map<std::string, std::string, std::less<>> m;
    const char* env = std::getenv("EFUSE_TEST_FAULTS");
    if (env == nullptr) return m;
    for (absl::string_view item : absl::StrSplit(env, ',', absl::SkipEmpty())) {
      std::pair<std::string, std::string> kv = absl::StrSplit(item, absl::MaxSplits('=', 1));
      m[kv.first] = kv.second;
    }
    return m;
  }();
  auto it = switched_on.find(point);
  if (it == switched_on.end()) return std::nullopt;
  return it->second;
}

}  // namespace efuse
