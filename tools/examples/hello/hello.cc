// hello: the smallest file system on libefuse: one read-only file, /hello.
//
//   hello MOUNTPOINT [-o OPTIONS] [--transport=auto|uring|uring-dev|sync]
//   cat MOUNTPOINT/hello
//
// A FileSystem answers the kernel's requests by node id (1 is the root, the
// rest are the file system's to choose); every call it does not override
// answers ENOSYS. efuse::ServeMain mounts, serves from one thread per CPU
// and unmounts on SIGINT/SIGTERM or `umount`.
#include <efuse/efuse.h>

#include <fcntl.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstring>
#include <string_view>

namespace {

constexpr uint64_t kRoot = efuse::abi::kRootId;
constexpr uint64_t kHello = 2;
constexpr std::string_view kName = "hello";
constexpr std::string_view kText = "Hello from efuse!\n";

class HelloFs : public efuse::FileSystem {
 public:
  std::string_view Name() const override { return "hello"; }

  efuse::Result<efuse::Entry> Lookup(const efuse::RequestContext&, uint64_t parent, std::string_view name) override {
    if (parent != kRoot || name != kName) return efuse::Errno(ENOENT);
    // The kernel takes a lookup reference on kHello; FORGET gives it back.
    // Nothing to count here: the node lives as long as the file system.
    efuse::Entry e;
    e.nodeid = kHello;
    e.attr = AttributesOf(kHello);
    e.entry_timeout = e.attr_timeout = 3600;  // nothing ever changes
    return e;
  }

  efuse::Result<efuse::AttrReply> GetAttr(const efuse::RequestContext&, uint64_t nodeid, const uint64_t*) override {
    if (nodeid != kRoot && nodeid != kHello) return efuse::Errno(ENOENT);
    efuse::AttrReply r;
    r.attr = AttributesOf(nodeid);
    r.attr_timeout = 3600;
    return r;
  }

  efuse::Result<efuse::OpenReply> Open(const efuse::RequestContext&, uint64_t nodeid, uint32_t flags,
                                       uint32_t) override {
    if (nodeid != kHello) return efuse::Errno(EISDIR);
    if ((flags & O_ACCMODE) != O_RDONLY) return efuse::Errno(EACCES);
    efuse::OpenReply r;
    r.open_flags = efuse::abi::kFopenKeepCache;  // the page cache stays valid across opens
    return r;
  }

  efuse::Result<size_t> Read(const efuse::RequestContext&, uint64_t nodeid, uint64_t, uint64_t offset,
                             std::span<uint8_t> out, uint32_t) override {
    if (nodeid != kHello) return efuse::Errno(EISDIR);
    if (offset >= kText.size()) return size_t{0};
    const size_t n = std::min(out.size(), kText.size() - offset);
    std::memcpy(out.data(), kText.data() + offset, n);
    return n;
  }

  efuse::Result<efuse::OpenReply> OpenDir(const efuse::RequestContext&, uint64_t nodeid, uint32_t) override {
    if (nodeid != kRoot) return efuse::Errno(ENOTDIR);
    return efuse::OpenReply{};
  }

  // Entries after cookie `offset`; each entry's cookie is its position + 1.
  efuse::Status ReadDir(const efuse::RequestContext&, uint64_t nodeid, uint64_t, uint64_t offset,
                        efuse::DirSink& sink) override {
    if (nodeid != kRoot) return efuse::Errno(ENOTDIR);
    struct Item {
      std::string_view name;
      uint64_t ino;
      uint32_t mode;
    };
    const Item items[] = {{".", kRoot, S_IFDIR}, {"..", kRoot, S_IFDIR}, {kName, kHello, S_IFREG}};
    for (uint64_t i = offset; i < std::size(items); ++i) {
      efuse::Entry plus;  // READDIRPLUS: "." and ".." carry no node (nodeid 0)
      if (items[i].ino == kHello) {
        plus.nodeid = kHello;
        plus.attr = AttributesOf(kHello);
        plus.entry_timeout = plus.attr_timeout = 3600;
      }
      if (!sink.Add(items[i].name, items[i].ino, items[i].mode, i + 1, sink.plus() ? &plus : nullptr)) break;
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
      a.mode = S_IFREG | 0444;
      a.nlink = 1;
      a.size = kText.size();
      a.blocks = 1;
    }
    return a;
  }
};

}  // namespace

int main(int argc, char** argv) {
  HelloFs fs;
  return efuse::ServeMain(fs, argc, argv);
}
