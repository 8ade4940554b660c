// null: one file, /null, that reads as zeros and takes every write. It does
// no work of its own, so what it costs is what the engine costs: it is the
// file system tools/bench/engine.py serves through efuse and through
// libfuse.
//
//   null MOUNTPOINT [-o OPTIONS] [--transport=auto|uring|uring-dev|sync]
//   dd if=MOUNTPOINT/null of=/dev/null bs=1M count=1024 iflag=direct
//
// Attributes are never cached (attr_timeout 0: every stat is a GETATTR)
// and I/O bypasses the page cache (FOPEN_DIRECT_IO: every read and write
// is a request), so each call a benchmark makes reaches the server. READ
// is answered from a read-only mapping of zeros (FileSystem::ViewRead),
// as its libfuse twin answers from one buffer it zeroed once.
//
// With --answer-later, GETATTR and READ are answered from threads of its
// own, as a file system whose backend is a network would: the call takes
// an efuse::Later, hands it to a queue and returns at once.
// --answer-later-in-batches=N holds the answers until N are waiting (or
// 100 ms passed), as a backend that gathers requests would.
#include <efuse/efuse.h>

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace {

constexpr uint64_t kRoot = efuse::abi::kRootId;
constexpr uint64_t kNull = 2;
constexpr std::string_view kName = "null";
constexpr uint64_t kSize = uint64_t{1} << 40;  // 1 TiB of zeros

// A queue of work and the threads that do it. With `batch` > 1 it waits
// for that many jobs (or 100 ms) before doing any, as a backend that
// gathers requests into one round trip would.
class Pool {
 public:
  Pool(int threads, size_t batch) : batch_(batch) {
    for (int i = 0; i < threads; ++i) threads_.emplace_back([this] { Run(); });
  }
  ~Pool() {
    {
      std::lock_guard<std::mutex> l(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (std::thread& t : threads_) t.join();
  }
  void Submit(std::function<void()> job) {
    {
      std::lock_guard<std::mutex> l(mu_);
      jobs_.push_back(std::move(job));
    }
    cv_.notify_one();
  }

 private:
  void Run() {
    for (;;) {
      std::function<void()> job;
      {
        std::unique_lock<std::mutex> l(mu_);
        cv_.wait(l, [this] { return stop_ || !jobs_.empty(); });
        if (jobs_.empty()) return;  // stopping
        if (batch_ > 1 && !releasing_) {
          cv_.wait_for(l, std::chrono::milliseconds(100),
                       [this] { return stop_ || releasing_ || jobs_.size() >= batch_; });
          if (jobs_.empty()) continue;  // another thread took them meanwhile
          releasing_ = true;            // this batch goes out whole
        }
        job = std::move(jobs_.front());
        jobs_.pop_front();
        if (jobs_.empty()) {
          releasing_ = false;  // the next batch gathers again
        } else {
          cv_.notify_one();
        }
      }
      job();
    }
  }
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;
  const size_t batch_;
  bool releasing_ = false;  // a gathered batch is being handed out
  bool stop_ = false;
  std::vector<std::thread> threads_;
};

// Zeros to answer READ from (FileSystem::ViewRead): a read-only anonymous
// mapping that nothing ever writes, so every page of it is the kernel's
// one shared zero page: no memory, and nothing to fill per read.
class Zeros {
 public:
  static constexpr size_t kSize = size_t{4} << 20;  // more than the largest READ (1 MiB)
  Zeros() {
    void* p = mmap(nullptr, kSize, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p != MAP_FAILED) bytes_ = static_cast<const uint8_t*>(p);
  }
  ~Zeros() {
    if (bytes_ != nullptr) munmap(const_cast<uint8_t*>(bytes_), kSize);
  }
  // Null if the mapping failed (then Read fills the reply instead).
  const uint8_t* bytes() const { return bytes_; }

 private:
  const uint8_t* bytes_ = nullptr;
};

class NullFs : public efuse::FileSystem {
 public:
  explicit NullFs(Pool* later) : later_(later) {}
  std::string_view Name() const override { return "null"; }

  efuse::Result<efuse::Entry> Lookup(const efuse::RequestContext&, uint64_t parent, std::string_view name) override {
    if (parent != kRoot || name != kName) return efuse::Errno(ENOENT);
    efuse::Entry e;
    e.nodeid = kNull;
    e.attr = AttributesOf(kNull);
    e.entry_timeout = 3600;  // the name never changes
    e.attr_timeout = 0;
    return e;
  }

  efuse::Result<efuse::AttrReply> GetAttr(const efuse::RequestContext& ctx, uint64_t nodeid, const uint64_t*) override {
    if (later_ != nullptr) {
      if (efuse::Later later = ctx.AnswerLater()) {
        // (std::function wants a copyable job: the Later rides in a shared_ptr.)
        auto answer = std::make_shared<efuse::Later>(std::move(later));
        later_->Submit([answer, nodeid] { answer->Answer(AttrOf(nodeid)); });
        return efuse::kAnsweredLater;
      }
    }
    return AttrOf(nodeid);
  }

  // Truncation and the like: accepted, nothing changes.
  efuse::Result<efuse::AttrReply> SetAttr(const efuse::RequestContext&, uint64_t nodeid,
                                          const efuse::SetAttrRequest&) override {
    return AttrOf(nodeid);
  }

  efuse::Result<efuse::OpenReply> Open(const efuse::RequestContext&, uint64_t nodeid, uint32_t, uint32_t) override {
    if (nodeid != kNull) return efuse::Errno(EISDIR);
    efuse::OpenReply r;
    r.open_flags = efuse::abi::kFopenDirectIo;
    return r;
  }

  // READ answered from the zeros above, as they are: nothing is written
  // per request. (Answered later, or larger than the mapping: Read.)
  efuse::Result<ReadView> ViewRead(const efuse::RequestContext&, uint64_t, uint64_t, uint64_t offset,
                                   uint32_t size, uint32_t) override {
    if (later_ != nullptr || zeros_.bytes() == nullptr || size > Zeros::kSize) return ReadView{};
    return ReadView{{zeros_.bytes(), BytesAt(offset, size)}, nullptr, true};
  }

  efuse::Result<size_t> Read(const efuse::RequestContext& ctx, uint64_t, uint64_t, uint64_t offset,
                             std::span<uint8_t> out, uint32_t) override {
    const size_t n = BytesAt(offset, out.size());
    if (later_ != nullptr) {
      if (efuse::Later later = ctx.AnswerLater()) {
        // `out` is the request's: gone once this returns. A later answer
        // carries its own bytes.
        auto answer = std::make_shared<efuse::Later>(std::move(later));
        later_->Submit([answer, n] { answer->Answer(std::string(n, '\0')); });
        return efuse::kAnsweredLater;
      }
    }
    std::memset(out.data(), 0, n);
    return n;
  }

  efuse::Result<size_t> Write(const efuse::RequestContext&, uint64_t, uint64_t, uint64_t,
                              std::span<const uint8_t> data, uint32_t, uint32_t) override {
    return data.size();
  }

  efuse::Status Flush(const efuse::RequestContext&, uint64_t, uint64_t, uint64_t) override { return efuse::OkStatus(); }
  efuse::Status Fsync(const efuse::RequestContext&, uint64_t, uint64_t, bool) override { return efuse::OkStatus(); }

  efuse::Result<efuse::OpenReply> OpenDir(const efuse::RequestContext&, uint64_t nodeid, uint32_t) override {
    if (nodeid != kRoot) return efuse::Errno(ENOTDIR);
    return efuse::OpenReply{};
  }

  efuse::Status ReadDir(const efuse::RequestContext&, uint64_t nodeid, uint64_t, uint64_t offset,
                        efuse::DirSink& sink) override {
    if (nodeid != kRoot) return efuse::Errno(ENOTDIR);
    // Names only (a READDIRPLUS entry would take a lookup reference): the
    // kernel looks the file up when it is used.
    const std::string_view names[] = {".", "..", kName};
    const uint64_t inos[] = {kRoot, kRoot, kNull};
    const uint32_t modes[] = {S_IFDIR, S_IFDIR, S_IFREG};
    efuse::Entry none;  // nodeid 0: no reference taken
    for (uint64_t i = offset; i < std::size(names); ++i) {
      if (!sink.Add(names[i], inos[i], modes[i], i + 1, sink.plus() ? &none : nullptr)) break;
    }
    return efuse::OkStatus();
  }

 private:
  // How many of `want` bytes the file holds at `offset`.
  static size_t BytesAt(uint64_t offset, size_t want) {
    return offset >= kSize ? 0 : static_cast<size_t>(std::min<uint64_t>(want, kSize - offset));
  }

  static efuse::Result<efuse::AttrReply> AttrOf(uint64_t nodeid) {
    if (nodeid != kRoot && nodeid != kNull) return efuse::Errno(ENOENT);
    efuse::AttrReply r;
    r.attr = AttributesOf(nodeid);
    r.attr_timeout = 0;
    return r;
  }

  static efuse::Attributes AttributesOf(uint64_t nodeid) {
    efuse::Attributes a;
    a.ino = nodeid;
    if (nodeid == kRoot) {
      a.mode = S_IFDIR | 0755;
      a.nlink = 2;
    } else {
      a.mode = S_IFREG | 0666;
      a.nlink = 1;
      a.size = kSize;
    }
    return a;
  }

  Pool* const later_;  // null: every answer in line
  const Zeros zeros_;
};

}  // namespace

int main(int argc, char** argv) {
  // Its own option, taken out before ServeMain reads the rest.
  bool answer_later = false;
  size_t batch = 1;
  std::vector<char*> args;
  for (int i = 0; i < argc; ++i) {
    const std::string_view a = argv[i];
    if (a == "--answer-later") {
      answer_later = true;
    } else if (a.starts_with("--answer-later-in-batches=")) {
      answer_later = true;
      batch = std::strtoul(argv[i] + std::strlen("--answer-later-in-batches="), nullptr, 10);
      if (batch < 1) batch = 1;
    } else {
      args.push_back(argv[i]);
    }
  }
  // The pool's threads must leave the signals that stop the server to it
  // (a SIGTERM they took would end the process without unmounting).
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  for (int sig : {SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGUSR2}) sigaddset(&stop_signals, sig);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  std::unique_ptr<Pool> pool;
  if (answer_later) pool = std::make_unique<Pool>(2, batch);
  NullFs fs(pool.get());
  return efuse::ServeMain(fs, static_cast<int>(args.size()), args.data());
}
