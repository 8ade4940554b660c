// libefuse as a program outside the tree uses it: `cmake --install` puts
// the library (shared, with its soname, and static), the public headers,
// the CMake package and the pkg-config file into a scratch prefix; the
// examples (tools/examples: hello, null, tarfs) are configured against that prefix
// alone with find_package(efuse), built, and mounted for real, and one is
// built with pkg-config and g++ alone. The library exports its public API
// and nothing of the engine's internals.
#include <algorithm>
#include <chrono>
#include <fstream>
#include <sstream>
#include <string>

#include "gtest/gtest.h"
#include "tests/mount/mount_fixture.h"

#ifndef EFUSE_BINARY_DIR
#error "EFUSE_BINARY_DIR and EFUSE_SOURCE_DIR must name the trees (see tests/mount/CMakeLists.txt)"
#endif

namespace efuse::testing {
namespace {

using std::chrono::seconds;

CommandResult Bash(const std::string& script, seconds timeout = seconds(180)) {
  return RunCommand({"/bin/bash", "-c", "set -euo pipefail\n" + script}, timeout);
}

// Installed and built once for every test here (a minute on 2 CPUs).
class LibraryTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    scratch_ = new ScratchDir();
    const std::string d = scratch_->path();
    install_ = Bash("cmake --install '" EFUSE_BINARY_DIR "' --prefix '" + d + "/prefix' >/dev/null\n"
                    "cmake -S '" EFUSE_SOURCE_DIR "/tools/examples' -B '" + d + "/examples' -G Ninja "
                    "-DCMAKE_PREFIX_PATH='" + d + "/prefix' -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null\n"
                    "cmake --build '" + d + "/examples' 2>&1 | tail -n 20\n");
  }
  static void TearDownTestSuite() {
    delete scratch_;
    scratch_ = nullptr;
  }
  void SetUp() override {
    EFUSE_REQUIRE_FUSE();
    ASSERT_EQ(install_.exit_code(), 0) << "installing and building the examples:\n" << install_.Describe();
  }
  static std::string Dir() { return scratch_->path(); }
  static std::string Prefix() { return scratch_->path() + "/prefix"; }

  // Starts `command MOUNTPOINT args`, waits (bounded) for the mount, runs
  // `checks` against $M, unmounts, and returns the whole transcript; the
  // server's exit code must be 0 after the umount.
  static CommandResult MountAndCheck(const std::string& command, const std::string& args, const std::string& checks) {
    return Bash("M='" + Dir() + "/mnt'; mkdir -p \"$M\"\n"
                "export LD_LIBRARY_PATH='" + Prefix() + "/lib'\n" +
                command + " \"$M\" " + args + " 2>'" + Dir() + "/server.log' &\n"
                "server=$!\n"
                "for i in $(seq 1 200); do mountpoint -q \"$M\" && break\n"
                "  kill -0 $server 2>/dev/null || { cat '" + Dir() + "/server.log'; exit 3; }; sleep 0.05; done\n"
                "mountpoint -q \"$M\"\n"
                "trap 'umount \"$M\" 2>/dev/null || true' EXIT\n" +
                checks +
                "\numount \"$M\"\ntrap - EXIT\n"
                "wait $server; echo \"server exit $?\"\n");
  }

  static ScratchDir* scratch_;
  static CommandResult install_;
};
ScratchDir* LibraryTest::scratch_ = nullptr;
CommandResult LibraryTest::install_;

TEST_F(LibraryTest, InstallPutsTheLibraryHeadersAndPackageInPlace) {
  CommandResult r = Bash("cd '" + Prefix() + "' && find . \\( -type f -o -type l \\) | sort\n"
                         "readelf -d lib/libefuse.so | grep SONAME\n");
  ASSERT_EQ(r.exit_code(), 0) << r.Describe();
  for (const char* path : {"./include/efuse/efuse.h", "./include/efuse/core/filesystem.h",
                           "./include/efuse/core/server.h", "./include/efuse/core/result.h",
                           "./include/efuse/core/api.h", "./include/efuse/proto/abi.h", "./lib/libefuse.so",
                           "./lib/libefuse.so.0.2", "./lib/libefuse.so.0.2.0", "./lib/libefuse.a",
                           "./lib/cmake/efuse/efuseConfig.cmake", "./lib/cmake/efuse/efuseConfigVersion.cmake",
                           "./lib/cmake/efuse/efuseTargets.cmake", "./lib/pkgconfig/efuse.pc"}) {
    EXPECT_NE(r.out.find(std::string(path) + "\n"), std::string::npos) << path << " missing:\n" << r.out;
  }
  // 0.x: a minor release may change the ABI, so the soname names it.
  EXPECT_NE(r.out.find("[libefuse.so.0.2]"), std::string::npos) << r.out;
}

TEST_F(LibraryTest, TheSharedLibraryExportsThePublicApiOnly) {
  CommandResult r = Bash("nm -D --defined-only -C '" + Prefix() + "/lib/libefuse.so' | awk '{$1=$2=\"\"; print}'");
  ASSERT_EQ(r.exit_code(), 0) << r.Describe();
  for (const char* wanted : {"efuse::ServeMain(", "efuse::Serve(", "efuse::KernelConnection::InvalidateEntry(",
                             "efuse::RequestContext::InGroup("}) {
    EXPECT_NE(r.out.find(wanted), std::string::npos) << wanted << " not exported:\n" << r.out;
  }
  // The engine's own classes stay inside: every symbol of efuse's own (not
  // a standard template that names one of its types) is of the public API.
  std::istringstream lines(r.out);
  for (std::string line; std::getline(lines, line);) {
    line.erase(0, line.find_first_not_of(' '));
    const bool ours = line.starts_with("efuse::") || line.starts_with("typeinfo for efuse::") ||
                      line.starts_with("typeinfo name for efuse::") || line.starts_with("vtable for efuse::");
    if (!ours) continue;
    bool public_api = false;
    for (const char* api : {"efuse::KernelConnection::", "efuse::Serve(", "efuse::ServeMain(", "efuse::RequestContext::", "efuse::Later::",
                            "typeinfo for efuse::KernelConnection", "typeinfo name for efuse::KernelConnection",
                            "vtable for efuse::KernelConnection"}) {
      public_api = public_api || line.starts_with(api);
    }
    EXPECT_TRUE(public_api) << "exported, yet not public API: " << line;
  }
}

TEST_F(LibraryTest, HelloServesItsFileOnEveryTransport) {
  for (const char* transport : {"sync", "uring-dev", "uring"}) {
    SCOPED_TRACE(transport);
    CommandResult r = MountAndCheck("'" + Dir() + "/examples/hello'", std::string("--transport=") + transport,
                                    "cat \"$M/hello\"\n"
                                    "ls -l \"$M\" | awk 'NR>1 {print $1, $5, $9}'\n"
                                    "if echo x > \"$M/hello\" 2>/dev/null; then echo 'write allowed'; fi\n"
                                    "if cat \"$M/missing\" 2>/dev/null; then echo 'missing found'; fi\n"
                                    "grep -o 'serving with the [a-z-]* transport' '" + Dir() + "/server.log'\n"
                                    "grep -c \"^hello $M fuse.efuse.hello \" /proc/mounts\n"
                                    "'" EFUSE_BINARY_DIR "/tools/efusectl/efusectl' status | grep -A3 \"^$M \" | "
                                    "grep -c '^  fs: hello$'\n");
    ASSERT_EQ(r.exit_code(), 0) << r.Describe();
    EXPECT_EQ(r.out,
              "Hello from efuse!\n"
              "-r--r--r-- 18 hello\n"
              "serving with the " + std::string(transport) + " transport\n"
              "1\n"   // mounted as fuse.efuse.hello, source "hello"
              "1\n"   // efusectl status lists it, served by "hello"
              "server exit 0\n")
        << r.Describe();
  }
}

TEST_F(LibraryTest, NullReadsZerosAndTakesEveryWrite) {
  CommandResult r = MountAndCheck("'" + Dir() + "/examples/null'", "",
                                  "stat -c '%s %A' \"$M/null\"\n"
                                  "dd if=\"$M/null\" bs=1M count=4 skip=1000 iflag=direct status=none | cmp -n 4194304 - /dev/zero && echo zeros\n"
                                  "dd if=/dev/urandom of=\"$M/null\" bs=64k count=16 oflag=direct conv=notrunc status=none && echo written\n"
                                  "dd if=\"$M/null\" bs=64k count=1 iflag=direct status=none | cmp - <(head -c 65536 /dev/zero) && echo still zeros\n");
  ASSERT_EQ(r.exit_code(), 0) << r.Describe();
  EXPECT_EQ(r.out, "1099511627776 -rw-rw-rw-\nzeros\nwritten\nstill zeros\nserver exit 0\n") << r.Describe();
}

// GETATTR and READ answered from the file system's own threads after the
// calls returned (efuse::Later), on each transport: every answer arrives,
// once, right, also with several readers at once, and unmounting waits for
// none that is lost.
TEST_F(LibraryTest, AnswersGivenLaterReachTheCallerOnEveryTransport) {
  const std::string out = Dir() + "/read";
  for (const char* transport : {"sync", "uring-dev", "uring"}) {
    SCOPED_TRACE(transport);
    CommandResult r = MountAndCheck(
        "'" + Dir() + "/examples/null'", std::string("--answer-later --transport=") + transport,
        "for i in $(seq 1 200); do stat -c %s \"$M/null\"; done | sort | uniq -c | awk '{print $1, $2}'\n"
        "readers=''\n"
        "for j in 1 2 3 4; do\n"
        "  (timeout -s KILL 60 dd if=\"$M/null\" of='" + out + "'$j bs=256k count=16 skip=$((j * 100)) iflag=direct "
        "status=none; echo $? > '" + out + "'$j.rc) &\n"
        "  readers=\"$readers $!\"\n"
        "done; wait $readers\n"
        "for j in 1 2 3 4; do\n"
        "  echo \"reader $j: exit $(cat '" + out + "'$j.rc), $(stat -c %s '" + out + "'$j) bytes, "
        "$(cmp -s '" + out + "'$j <(head -c 4194304 /dev/zero) && echo zeros)\"\n"
        "done\n");
    ASSERT_EQ(r.exit_code(), 0) << r.Describe();
    EXPECT_EQ(r.out,
              "200 1099511627776\n"
              "reader 1: exit 0, 4194304 bytes, zeros\n"
              "reader 2: exit 0, 4194304 bytes, zeros\n"
              "reader 3: exit 0, 4194304 bytes, zeros\n"
              "reader 4: exit 0, 4194304 bytes, zeros\n"
              "server exit 0\n")
        << r.Describe();
  }
}

// Every entry of one FUSE ring queue held by answers not yet given: four
// readers on CPU 0 (whose requests go to queue 0, 4 entries deep) while the
// file system answers only once four are waiting. The queue's worker must
// wait for those answers, not take its queue for drained (it used to leave
// them unsent, and every later request of that CPU hung).
TEST_F(LibraryTest, AFuseRingQueueWhollyHeldByLaterAnswersServesOn) {
  const std::string out = Dir() + "/read";
  CommandResult r = MountAndCheck(
      "'" + Dir() + "/examples/null'", "--answer-later-in-batches=4 --transport=uring",
      "readers=''\n"
      "for j in 1 2 3 4; do\n"
      "  (timeout -s KILL 60 taskset -c 0 dd if=\"$M/null\" of='" + out + "'$j bs=4k count=200 iflag=direct "
      "status=none; echo $? > '" + out + "'$j.rc) &\n"
      "  readers=\"$readers $!\"\n"
      "done; wait $readers\n"
      "for j in 1 2 3 4; do\n"
      "  echo \"reader $j: exit $(cat '" + out + "'$j.rc), $(stat -c %s '" + out + "'$j) bytes, "
      "$(cmp -s '" + out + "'$j <(head -c 819200 /dev/zero) && echo zeros)\"\n"
      "done\n"
      "timeout -s KILL 10 taskset -c 0 stat -c %s \"$M/null\"\n");
  ASSERT_EQ(r.exit_code(), 0) << r.Describe();
  EXPECT_EQ(r.out,
            "reader 1: exit 0, 819200 bytes, zeros\n"
            "reader 2: exit 0, 819200 bytes, zeros\n"
            "reader 3: exit 0, 819200 bytes, zeros\n"
            "reader 4: exit 0, 819200 bytes, zeros\n"
            "1099511627776\n"
            "server exit 0\n")
      << r.Describe() << "\nserver log:\n" << Bash("cat '" + Dir() + "/server.log'").out;
}

// A file system on the library, run by an unprivileged user the two ways
// efused is (rootless_test): through Debian's setuid fusermount3, and
// mounted by itself inside a user namespace of the user's own.
TEST_F(LibraryTest, AnUnprivilegedUserMountsAnExample) {
  constexpr uid_t kUser = 65534;  // nobody
  ScratchDir user_dir(kUser);
  ASSERT_FALSE(user_dir.path().empty());
  const std::string u = user_dir.path();
  // The user reads the installed library and runs the example from the
  // suite's scratch tree.
  ASSERT_EQ(Bash("chmod 0755 '" + Dir() + "'").exit_code(), 0);
  const std::string serve_and_read =
      "export LD_LIBRARY_PATH='" + Prefix() + "/lib'\n"
      "hello='" + Dir() + "/examples/hello'\n" +
      R"sh(M="$1"; mkdir -p "$M"
"$hello" "$M" 2>"$M.log" &
s=$!
# Whatever happens below, no server or mount of the user's outlives this.
trap 'kill $s 2>/dev/null; /usr/bin/fusermount3 -uz "$M" 2>/dev/null; umount -l "$M" 2>/dev/null; true' EXIT
for i in $(seq 1 200); do grep -q " $M " /proc/self/mountinfo && break
  kill -0 $s 2>/dev/null || { cat "$M.log"; exit 3; }; sleep 0.05; done
grep -q " $M " /proc/self/mountinfo || { echo "not mounted within 10 s"; cat "$M.log"; exit 4; }
echo "$2 read: $(cat "$M/hello")"
echo "$2 mounted $(grep -o 'with [a-z0-9]*' "$M.log" | head -n 1)"
if [ "$2" = fusermount3 ]; then /usr/bin/fusermount3 -u "$M"; else kill -TERM $s; fi
wait $s; echo "$2 server exit $?"
trap - EXIT
)sh";
  {
    std::ofstream script(u + "/serve.sh");
    script << serve_and_read;
  }
  CommandResult r = Bash("chown " + std::to_string(kUser) + " '" + u + "/serve.sh'\n"
                         "p='/usr/bin/setpriv --reuid=65534 --regid=65534 --clear-groups'\n"
                         "$p /bin/bash -e '" + u + "/serve.sh' '" + u + "/mnt' fusermount3\n"
                         "$p /usr/bin/unshare -Urm /bin/bash -e '" + u + "/serve.sh' '" + u + "/nsmnt' namespace\n",
                         seconds(60));
  ASSERT_EQ(r.exit_code(), 0) << r.Describe();
  EXPECT_EQ(r.out,
            "fusermount3 read: Hello from efuse!\n"
            "fusermount3 mounted with fusermount3\n"
            "fusermount3 server exit 0\n"
            "namespace read: Hello from efuse!\n"
            "namespace mounted with fsopen\n"
            "namespace server exit 0\n")
      << r.Describe();
}

TEST_F(LibraryTest, StaticallyLinkedHelloNeedsNoSharedEfuse) {
  CommandResult r = MountAndCheck("LD_LIBRARY_PATH= '" + Dir() + "/examples/hello_static'", "",
                                  "cat \"$M/hello\"\n"
                                  "ldd '" + Dir() + "/examples/hello_static' | grep -c libefuse || true\n");
  ASSERT_EQ(r.exit_code(), 0) << r.Describe();
  EXPECT_EQ(r.out, "Hello from efuse!\n0\nserver exit 0\n") << r.Describe();
}

TEST_F(LibraryTest, PkgConfigAloneBuildsHello) {
  CommandResult r = Bash("export PKG_CONFIG_PATH='" + Prefix() + "/lib/pkgconfig'\n"
                         "g++ -std=c++20 -O1 -o '" + Dir() + "/hello_pc' '" EFUSE_SOURCE_DIR "/tools/examples/hello/hello.cc' "
                         "$(pkg-config --cflags --libs efuse)\n"
                         "LD_LIBRARY_PATH='" + Prefix() + "/lib' ldd '" + Dir() + "/hello_pc' | grep -o 'libefuse.so.0.2 => [^ ]*'\n");
  ASSERT_EQ(r.exit_code(), 0) << r.Describe();
  EXPECT_EQ(r.out, "libefuse.so.0.2 => " + Prefix() + "/lib/libefuse.so.0.2\n") << r.Describe();
  CommandResult served = MountAndCheck("'" + Dir() + "/hello_pc'", "", "cat \"$M/hello\"\n");
  ASSERT_EQ(served.exit_code(), 0) << served.Describe();
  EXPECT_EQ(served.out, "Hello from efuse!\nserver exit 0\n") << served.Describe();
}

TEST_F(LibraryTest, BadArgumentsAreNamedInOneLineWithExitCode2) {
  struct Case {
    std::string args, says;
  };
  for (const Case& c : {Case{"", "missing mount point"}, Case{"/tmp --bogus", "unknown option '--bogus'"},
                        Case{"/tmp --transport=fast", "transport: 'fast' is not auto, uring, uring-dev or sync"},
                        Case{"/tmp -o nosuchoption", "-o: "}, Case{"/nonexistent/dir", "mount point '/nonexistent/dir'"},
                        Case{"/tmp /var", "unexpected argument '/var'"},
                        Case{"/tmp --poll-us=soon", "--poll-us: 'soon' is not a number"},
                        Case{"/tmp --poll-us=20000", "poll_us: must be 0..10000"}}) {
    SCOPED_TRACE(c.args);
    CommandResult r = Bash("rc=0; LD_LIBRARY_PATH='" + Prefix() + "/lib' '" + Dir() + "/examples/hello' " + c.args +
                           " || rc=$?; echo \"exit $rc\"");
    EXPECT_EQ(r.out, "exit 2\n") << r.Describe();
    EXPECT_NE(r.err.find(c.says), std::string::npos) << r.Describe();
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.Describe();
  }
}

}  // namespace
}  // namespace efuse::testing
