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
// is a request), so each call a benchmark makes reaches the server.
#include <efuse/efuse.h>

#include <fcntl.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstring>
#include <string_view>

namespace {

constexpr uint64_t kRoot = efuse::abi::kRootId;
constexpr uint64_t kNull = 2;
constexpr std::string_view kName = "null";
constexpr uint64_t kSize = uint64_t{1} << 40;  // 1 TiB of zeros

class NullFs : public efuse::FileSystem {
 public:
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

  efuse::Result<efuse::AttrReply> GetAttr(const efuse::RequestContext&, uint64_t nodeid, const uint64_t*) override {
    if (nodeid != kRoot && nodeid != kNull) return efuse::Errno(ENOENT);
    efuse::AttrReply r;
    r.attr = AttributesOf(nodeid);
    r.attr_timeout = 0;
    return r;
  }

  // Truncation and the like: accepted, nothing changes.
  efuse::Result<efuse::AttrReply> SetAttr(const efuse::RequestContext& ctx, uint64_t nodeid,
                                          const efuse::SetAttrRequest&) override {
    return GetAttr(ctx, nodeid, nullptr);
  }

  efuse::Result<efuse::OpenReply> Open(const efuse::RequestContext&, uint64_t nodeid, uint32_t, uint32_t) override {
    if (nodeid != kNull) return efuse::Errno(EISDIR);
    efuse::OpenReply r;
    r.open_flags = efuse::abi::kFopenDirectIo;
    return r;
  }

  efuse::Result<size_t> Read(const efuse::RequestContext&, uint64_t, uint64_t, uint64_t offset,
                             std::span<uint8_t> out, uint32_t) override {
    if (offset >= kSize) return size_t{0};
    const size_t n = static_cast<size_t>(std::min<uint64_t>(out.size(), kSize - offset));
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
};

}  // namespace

int main(int argc, char** argv) {
  NullFs fs;
  return efuse::ServeMain(fs, argc, argv);
}
