// tests/mount/passthrough_posix_test.cc — the POSIX mount suite run against
// --fs=passthrough.
//
// tests/mount/posix_test.cc is compiled into this binary whole, so its
// PosixTest fixture and every TEST_P in it are instantiated once more here,
// with passthrough flags; CMake registers only the Passthrough/* instances
// (posix_test itself runs the memfs ones). Sources come from
// tests/mount/passthrough_sources.h: an empty directory per test, on tmpfs
// or on the disk. Configurations:
//   tmpfs_default   kernel passthrough (auto), default cache timeouts
//   tmpfs_off       --passthrough=off without writeback cache: the daemon
//                   serves every read and write
//   disk_nocache    ext4-like source, entry/attribute caching off
//   disk_writeback  --passthrough=off with the kernel's writeback cache
// Known differences from memfs, filtered out in tests/mount/CMakeLists.txt:
// the disk source keeps at most one block of xattr value (ExtendedAttributes
// sets 64 KiB), and with the writeback cache the kernel does not flush before
// LSEEK, so the daemon answers ENOSYS and the kernel reports no holes, and
// st_blocks counts dirty data only once flushed (SparseFileSeekDataAndHole,
// FallocateModes).
#include "tests/mount/passthrough_sources.h"
#include "tests/mount/posix_test.cc"  // NOLINT: the suite itself, instantiated again

namespace efuse::testing {
namespace {

Config PassthroughConfig(const char* name, std::vector<std::string> extra) {
  return Config{name, PassthroughFlags(name, extra)};
}

INSTANTIATE_TEST_SUITE_P(
    Passthrough, PosixTest,
    ::testing::Values(PassthroughConfig("tmpfs_default", {}),
                      PassthroughConfig("tmpfs_off",
                                        {"--passthrough=off", "--writeback_cache=false"}),
                      PassthroughConfig("disk_nocache", {"--entry_timeout=0", "--attr_timeout=0", "--offload=off"}),
                      PassthroughConfig("disk_writeback", {"--passthrough=off"}),
                      // directories opened with OPENDIR (the default opens
                      // them without: the kernel keeps their listings)
                      PassthroughConfig("disk_dir_handles", {"--dir_handles=on"})),
    [](const ::testing::TestParamInfo<Config>& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace efuse::testing
