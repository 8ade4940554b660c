// tests/mount/passthrough_permission_test.cc — the permission suite run
// against --fs=passthrough.
//
// tests/mount/permission_test.cc is compiled into this binary whole and its
// PermissionTest instantiated once more with passthrough flags; CMake
// registers only the Passthrough/* instances. With passthrough the daemon
// reaches the source with its own credentials, so -o allow_other always
// gets default_permissions (the kernel checks): both configurations check
// cached walks. Sources: tests/mount/passthrough_sources.h.
#include "tests/mount/passthrough_sources.h"
#include "tests/mount/permission_test.cc"  // NOLINT: the suite itself, instantiated again

namespace efuse::testing {
namespace {

Config PassthroughConfig(const char* name, std::vector<std::string> extra) {
  return Config{name, PassthroughFlags(name, extra), /*checks_cached_walks=*/true};
}

INSTANTIATE_TEST_SUITE_P(
    Passthrough, PermissionTest,
    ::testing::Values(PassthroughConfig("disk_allow_other", {"-o", "allow_other"}),
                      PassthroughConfig("tmpfs_default_permissions_off",
                                        {"-o", "allow_other,default_permissions",
                                         "--passthrough=off"})),
    [](const ::testing::TestParamInfo<Config>& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace efuse::testing
