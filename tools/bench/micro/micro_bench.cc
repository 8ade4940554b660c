// tools/bench/micro/micro_bench.cc — ns per request in the protocol engine
// (Google Benchmark): decoding alone, and decode + dispatch + reply building
// against memfs, with a reply sender that only takes the iovecs (what a
// transport hands to the kernel). No kernel, no syscalls: the daemon's own
// cost per request, apart from the transport.
#include <fcntl.h>
#include <sys/stat.h>

#include <cstring>
#include <string_view>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "benchmark/benchmark.h"
#include "core/log.h"
#include "core/dispatcher.h"
#include "core/memfs/memfs.h"
#include "proto/abi.h"
#include "proto/init.h"
#include "proto/request.h"

namespace efuse {
namespace {

std::vector<uint8_t> Request(abi::Opcode op, uint64_t unique, uint64_t nodeid, const void* arg,
                             size_t arg_size, std::string_view tail = {}) {
  return proto::EncodeRequest(op, unique, nodeid, arg, arg_size, tail);
}

// Takes the reply's iovecs, as a transport's writev would.
class IovSender : public ReplySender {
 public:
  int Send(proto::Reply& reply) override {
    benchmark::DoNotOptimize(reply.Iov().data());
    ++replies;
    return 0;
  }
  uint64_t replies = 0;
};

// A memfs behind an initialized dispatcher, with one file "f" (node 2).
struct Engine {
  Engine() : fs(Options()), dispatcher(&fs, Config(), 4) {
    abi::InitIn init{};
    init.major = abi::kKernelMajor;
    init.minor = abi::kKernelMinor;
    init.max_readahead = 1 << 20;
    init.flags = abi::init::kMaxPages | abi::init::kInitExt;
    Handle(Request(abi::Opcode::kInit, 1, 0, &init, sizeof(init)));
    abi::CreateIn create{};
    create.flags = O_RDWR;
    create.mode = S_IFREG | 0644;
    Handle(Request(abi::Opcode::kCreate, 2, abi::kRootId, &create, sizeof(create),
                   std::string_view("f\0", 2)));
    std::vector<uint8_t> data(4096, 'x');
    abi::WriteIn w{};
    w.fh = 1;
    w.size = 4096;
    Handle(Request(abi::Opcode::kWrite, 3, 2, &w, sizeof(w),
                   std::string_view(reinterpret_cast<const char*>(data.data()), data.size())));
  }
  static MemFsOptions Options() {
    MemFsOptions o;
    o.root_uid = o.root_gid = 1000;  // EncodeRequest's caller owns the root
    return o;
  }
  static proto::InitConfig Config() {
    proto::InitConfig c;
    c.wanted_flags = abi::init::kMaxPages | abi::init::kInitExt;
    return c;
  }
  void Handle(const std::vector<uint8_t>& req) {
    dispatcher.Handle(std::span<const uint8_t>(req), scratch, dispatcher.interrupts().slot(0),
                      sender);
  }
  MemFs fs;
  Dispatcher dispatcher;
  IovSender sender;
  std::vector<uint8_t> scratch = std::vector<uint8_t>(1 << 20);
};

void Decode(benchmark::State& state, const std::vector<uint8_t>& req) {
  proto::DecodeOptions opts;
  opts.minor = abi::kKernelMinor;
  for (auto _ : state) {
    proto::Request r;
    benchmark::DoNotOptimize(proto::DecodeRequest(req, opts, &r));
    benchmark::DoNotOptimize(r);
  }
}

void BM_DecodeGetattr(benchmark::State& state) {
  abi::GetattrIn in{};
  Decode(state, Request(abi::Opcode::kGetattr, 7, 2, &in, sizeof(in)));
}
BENCHMARK(BM_DecodeGetattr);

void BM_DecodeLookup(benchmark::State& state) {
  Decode(state, Request(abi::Opcode::kLookup, 7, abi::kRootId, nullptr, 0,
                        std::string_view("some-file-name\0", 15)));
}
BENCHMARK(BM_DecodeLookup);

void BM_DecodeDispatchGetattr(benchmark::State& state) {
  Engine e;
  abi::GetattrIn in{};
  const std::vector<uint8_t> req = Request(abi::Opcode::kGetattr, 7, 2, &in, sizeof(in));
  for (auto _ : state) e.Handle(req);
  state.counters["errors"] = static_cast<double>(e.dispatcher.stats().errors.load());
}
BENCHMARK(BM_DecodeDispatchGetattr);

void BM_DecodeDispatchLookup(benchmark::State& state) {
  Engine e;
  const std::vector<uint8_t> req =
      Request(abi::Opcode::kLookup, 7, abi::kRootId, nullptr, 0, std::string_view("f\0", 2));
  for (auto _ : state) e.Handle(req);  // the lookup count only grows
}
BENCHMARK(BM_DecodeDispatchLookup);

void BM_DecodeDispatchRead4K(benchmark::State& state) {
  Engine e;
  abi::ReadIn in{};
  in.fh = 1;
  in.size = 4096;
  const std::vector<uint8_t> req = Request(abi::Opcode::kRead, 7, 2, &in, sizeof(in));
  for (auto _ : state) e.Handle(req);
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * 4096);
}
BENCHMARK(BM_DecodeDispatchRead4K);

}  // namespace
}  // namespace efuse

int main(int argc, char** argv) {
  // As in efused: Debian's abseil checks lock order on every lock otherwise.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  efuse::SetLogLevel(efuse::LogLevel::kWarning);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
