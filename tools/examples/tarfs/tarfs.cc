// tarfs: a tar archive (ustar) served read-only, and served anew when the
// archive is replaced.
//
//   tarfs ARCHIVE MOUNTPOINT [-o OPTIONS] [--transport=...]
//
// (Regular files, directories and symbolic links; hard links and GNU long
// names are left out.)
//
// What it shows:
// - lookups and READDIRPLUS: a listing carries each entry's attributes, so
//   `ls -l` or `find` need no LOOKUP per name; every entry given with a
//   node id counts as a lookup, which Forget gives back;
// - caching lifetimes: nothing changes between reloads, so names and
//   attributes are cached for an hour, listings kept (kFopenCacheDir) and
//   file pages kept across opens (kFopenKeepCache);
// - notify: when the archive is replaced (written and closed, or renamed
//   over), a watcher thread reads it again and tells the kernel what it may
//   no longer trust (InvalidateEntry for each old name, InvalidateData for
//   each old directory and file), so the long lifetimes never serve stale
//   contents.
#include <efuse/efuse.h>

#include <fcntl.h>
#include <poll.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace {

constexpr double kForAnHour = 3600;

struct Node {
  uint64_t id = 0;
  uint32_t mode = 0;  // S_IF* | permissions
  uint64_t size = 0;
  uint64_t data_offset = 0;  // in the archive
  int64_t mtime = 0;
  uint32_t uid = 0, gid = 0;
  std::string target;                 // symlinks
  std::map<std::string, Node*> kids;  // directories, in name order (stable cookies)
};

// One version of the archive: its nodes and the fd their data is read from
// (kept open, so files opened before a reload read what they opened).
struct Tree {
  int fd = -1;
  std::vector<std::unique_ptr<Node>> nodes;
  std::map<uint64_t, Node*> by_id;
  ~Tree() {
    if (fd >= 0) close(fd);
  }
};

uint64_t Octal(const char* field, size_t n) {
  uint64_t v = 0;
  for (size_t i = 0; i < n && field[i] >= '0' && field[i] <= '7'; ++i) v = v * 8 + (field[i] - '0');
  return v;
}

// Reads ARCHIVE into a tree whose node ids start at `next_id` (the root is
// always 1). Names are "prefix/name" as ustar keeps them; directories a
// path implies are made.
std::shared_ptr<Tree> Load(const std::string& archive, std::atomic<uint64_t>* next_id) {
  auto tree = std::make_shared<Tree>();
  tree->fd = open(archive.c_str(), O_RDONLY | O_CLOEXEC);
  if (tree->fd < 0) return nullptr;
  auto add = [&](uint32_t mode) {
    tree->nodes.push_back(std::make_unique<Node>());
    Node* n = tree->nodes.back().get();
    n->id = tree->nodes.size() == 1 ? efuse::abi::kRootId : (*next_id)++;
    n->mode = mode;
    tree->by_id[n->id] = n;
    return n;
  };
  Node* root = add(S_IFDIR | 0755);
  auto dir_of = [&](std::string_view path) {  // makes missing directories
    Node* d = root;
    size_t at = 0;
    while (true) {
      const size_t slash = path.find('/', at);
      if (slash == std::string_view::npos) return std::make_pair(d, std::string(path.substr(at)));
      std::string part(path.substr(at, slash - at));
      at = slash + 1;
      if (part.empty() || part == ".") continue;
      Node*& kid = d->kids[part];
      if (kid == nullptr) kid = add(S_IFDIR | 0755);
      d = kid;
    }
  };
  char h[512];
  for (uint64_t off = 0; pread(tree->fd, h, sizeof(h), static_cast<off_t>(off)) == sizeof(h);) {
    if (h[0] == '\0') break;  // the end-of-archive blocks
    const uint64_t size = Octal(h + 124, 12);
    std::string name(h + 345, strnlen(h + 345, 155));  // prefix
    if (!name.empty()) name += '/';
    name.append(h, strnlen(h, 100));
    while (!name.empty() && name.back() == '/') name.pop_back();
    const char type = h[156];
    auto [dir, base] = dir_of(name);
    if (!base.empty() && base != ".") {
      const uint32_t perm = static_cast<uint32_t>(Octal(h + 100, 8) & 07777);
      Node* n = nullptr;
      if (type == '5') {
        Node*& kid = dir->kids[base];
        if (kid == nullptr) kid = add(S_IFDIR);
        n = kid;
        n->mode = S_IFDIR | perm;
      } else if (type == '2') {
        n = dir->kids[base] = add(S_IFLNK | 0777);
        n->target.assign(h + 157, strnlen(h + 157, 100));
        n->size = n->target.size();
      } else if (type == '0' || type == '\0' || type == '7') {
        n = dir->kids[base] = add(S_IFREG | perm);
        n->size = size;
        n->data_offset = off + 512;
      }
      if (n != nullptr) {
        n->mtime = static_cast<int64_t>(Octal(h + 136, 12));
        n->uid = static_cast<uint32_t>(Octal(h + 108, 8));
        n->gid = static_cast<uint32_t>(Octal(h + 116, 8));
      }
    }
    off += 512 + (size + 511) / 512 * 512;
  }
  return tree;
}

class TarFs : public efuse::FileSystem {
 public:
  explicit TarFs(std::string archive) : archive_(std::move(archive)) { tree_ = Load(archive_, &next_id_); }
  ~TarFs() override {
    stop_.store(true);
    if (watcher_.joinable()) watcher_.join();
  }
  bool loaded() const { return tree_ != nullptr; }

  std::string_view Name() const override { return "tarfs"; }

  void Init(const efuse::InitInfo& info) override {
    kernel_ = info.kernel;
    watcher_ = std::thread([this] { Watch(); });
  }

  efuse::Result<efuse::Entry> Lookup(const efuse::RequestContext&, uint64_t parent, std::string_view name) override {
    std::shared_lock l(mu_);
    Node* dir = Find(parent);
    if (dir == nullptr) return efuse::Errno(ESTALE);  // from an archive replaced since
    auto it = dir->kids.find(std::string(name));
    if (it == dir->kids.end()) return efuse::Errno(ENOENT);
    return EntryOf(*it->second);
  }

  efuse::Result<efuse::AttrReply> GetAttr(const efuse::RequestContext&, uint64_t nodeid, const uint64_t*) override {
    std::shared_lock l(mu_);
    Node* n = Find(nodeid);
    if (n == nullptr) return efuse::Errno(ESTALE);
    efuse::AttrReply r;
    r.attr = AttributesOf(*n);
    r.attr_timeout = kForAnHour;
    return r;
  }

  efuse::Result<std::string> ReadLink(const efuse::RequestContext&, uint64_t nodeid) override {
    std::shared_lock l(mu_);
    Node* n = Find(nodeid);
    if (n == nullptr) return efuse::Errno(ESTALE);
    if (!S_ISLNK(n->mode)) return efuse::Errno(EINVAL);
    return n->target;
  }

  efuse::Result<efuse::OpenReply> Open(const efuse::RequestContext&, uint64_t nodeid, uint32_t flags,
                                       uint32_t) override {
    if ((flags & O_ACCMODE) != O_RDONLY) return efuse::Errno(EROFS);
    std::shared_lock l(mu_);
    Node* n = Find(nodeid);
    if (n == nullptr) return efuse::Errno(ESTALE);
    // The handle keeps the tree (and its archive fd) it was opened in.
    efuse::OpenReply r;
    r.fh = Keep(tree_, n);
    r.open_flags = efuse::abi::kFopenKeepCache;
    return r;
  }

  efuse::Result<size_t> Read(const efuse::RequestContext&, uint64_t, uint64_t fh, uint64_t offset,
                             std::span<uint8_t> out, uint32_t) override {
    auto [tree, n] = Opened(fh);
    if (tree == nullptr) return efuse::Errno(EBADF);
    if (offset >= n->size) return size_t{0};
    const size_t want = static_cast<size_t>(std::min<uint64_t>(out.size(), n->size - offset));
    const ssize_t got = pread(tree->fd, out.data(), want, static_cast<off_t>(n->data_offset + offset));
    if (got < 0) return efuse::Errno::Last();
    return static_cast<size_t>(got);
  }

  void Release(const efuse::RequestContext&, uint64_t, uint64_t fh, uint32_t, uint32_t, uint64_t) override {
    std::lock_guard l(handles_mu_);
    handles_.erase(fh);
  }

  efuse::Result<efuse::OpenReply> OpenDir(const efuse::RequestContext&, uint64_t nodeid, uint32_t) override {
    std::shared_lock l(mu_);
    Node* n = Find(nodeid);
    if (n == nullptr) return efuse::Errno(ESTALE);
    if (!S_ISDIR(n->mode)) return efuse::Errno(ENOTDIR);
    efuse::OpenReply r;
    r.fh = Keep(tree_, n);
    r.open_flags = efuse::abi::kFopenCacheDir | efuse::abi::kFopenKeepCache;  // listings cached until notified
    return r;
  }

  // Cookies: "." is 1, ".." 2, then the children in name order from 3.
  efuse::Status ReadDir(const efuse::RequestContext&, uint64_t nodeid, uint64_t fh, uint64_t offset,
                        efuse::DirSink& sink) override {
    auto [tree, dir] = Opened(fh);
    if (tree == nullptr) return efuse::Errno(EBADF);
    efuse::Entry none;  // "." and "..": no node given, no lookup counted
    if (offset < 1 && !sink.Add(".", nodeid, S_IFDIR, 1, sink.plus() ? &none : nullptr)) return efuse::OkStatus();
    if (offset < 2 && !sink.Add("..", nodeid, S_IFDIR, 2, sink.plus() ? &none : nullptr)) return efuse::OkStatus();
    uint64_t cookie = 3;
    for (const auto& [name, kid] : dir->kids) {
      if (cookie++ <= offset) continue;
      efuse::Entry e = EntryOf(*kid);  // READDIRPLUS: the kernel takes a lookup of it
      if (!sink.Add(name, kid->id, kid->mode & S_IFMT, cookie, sink.plus() ? &e : nullptr)) break;
    }
    return efuse::OkStatus();
  }

  void ReleaseDir(const efuse::RequestContext&, uint64_t, uint64_t fh) override {
    std::lock_guard l(handles_mu_);
    handles_.erase(fh);
  }

  efuse::Result<efuse::FsStats> StatFs(const efuse::RequestContext&, uint64_t) override { return efuse::FsStats{}; }

 private:
  // Lookups need no counting here: nodes live as long as their tree, and
  // a replaced tree's ids are never used again.
  static efuse::Attributes AttributesOf(const Node& n) {
    efuse::Attributes a;
    a.ino = n.id;
    a.mode = n.mode;
    a.nlink = S_ISDIR(n.mode) ? 2 : 1;
    a.size = n.size;
    a.blocks = (n.size + 511) / 512;
    a.uid = n.uid;
    a.gid = n.gid;
    a.mtime.tv_sec = a.ctime.tv_sec = a.atime.tv_sec = n.mtime;
    return a;
  }
  static efuse::Entry EntryOf(const Node& n) {
    efuse::Entry e;
    e.nodeid = n.id;
    e.attr = AttributesOf(n);
    e.entry_timeout = e.attr_timeout = kForAnHour;
    return e;
  }
  Node* Find(uint64_t id) const {
    auto it = tree_->by_id.find(id);
    return it == tree_->by_id.end() ? nullptr : it->second;
  }
  uint64_t Keep(std::shared_ptr<Tree> tree, Node* n) {
    std::lock_guard l(handles_mu_);
    handles_[++next_fh_] = {std::move(tree), n};
    return next_fh_;
  }
  std::pair<std::shared_ptr<Tree>, Node*> Opened(uint64_t fh) {
    std::lock_guard l(handles_mu_);
    auto it = handles_.find(fh);
    return it == handles_.end() ? std::make_pair(std::shared_ptr<Tree>(), nullptr) : it->second;
  }

  // Watches the archive's directory; when the archive is written or renamed
  // over, loads it again and tells the kernel to forget what it cached.
  void Watch() {
    const size_t slash = archive_.rfind('/');
    const std::string dir = slash == std::string::npos ? "." : archive_.substr(0, slash + 1);
    const std::string base = slash == std::string::npos ? archive_ : archive_.substr(slash + 1);
    const int in = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (in < 0 || inotify_add_watch(in, dir.c_str(), IN_CLOSE_WRITE | IN_MOVED_TO) < 0) return;
    alignas(inotify_event) char buf[4096];
    while (!stop_.load()) {
      pollfd p{in, POLLIN, 0};
      if (poll(&p, 1, 200) <= 0) continue;  // (wakes to see stop_)
      const ssize_t n = read(in, buf, sizeof(buf));
      if (n <= 0) continue;
      bool ours = false;
      for (ssize_t at = 0; at < n;) {
        auto* ev = reinterpret_cast<inotify_event*>(buf + at);
        if (ev->len > 0 && base == ev->name) ours = true;
        at += static_cast<ssize_t>(sizeof(inotify_event) + ev->len);
      }
      if (ours) Reload();
    }
    close(in);
  }

  void Reload() {
    std::shared_ptr<Tree> fresh = Load(archive_, &next_id_);
    if (fresh == nullptr) return;
    std::shared_ptr<Tree> old;
    {
      std::unique_lock l(mu_);
      old = std::exchange(tree_, fresh);
    }
    // Outside the lock: the kernel may ask us about these while it drops them.
    if (kernel_ == nullptr) return;
    for (const auto& n : old->nodes) {
      for (const auto& [name, kid] : n->kids) kernel_->InvalidateEntry(n->id, name).ok();
      kernel_->InvalidateData(n->id).ok();  // a listing, or a file's pages, and attributes
    }
    std::fprintf(stderr, "tarfs: %s replaced: %zu nodes now\n", archive_.c_str(), fresh->nodes.size());
  }

  const std::string archive_;
  efuse::KernelConnection* kernel_ = nullptr;
  std::atomic<uint64_t> next_id_{2};
  mutable std::shared_mutex mu_;
  std::shared_ptr<Tree> tree_;  // guarded by mu_ (swapped by Reload)
  std::mutex handles_mu_;
  std::map<uint64_t, std::pair<std::shared_ptr<Tree>, Node*>> handles_;
  uint64_t next_fh_ = 0;
  std::atomic<bool> stop_{false};
  std::thread watcher_;
};

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "tarfs: usage: %s ARCHIVE MOUNTPOINT [-o OPTIONS] [--transport=...]\n", argv[0]);
    return 2;
  }
  char resolved[PATH_MAX];
  if (realpath(argv[1], resolved) == nullptr) {
    std::fprintf(stderr, "tarfs: %s: %s\n", argv[1], std::strerror(errno));
    return 2;
  }
  TarFs fs(resolved);
  if (!fs.loaded()) {
    std::fprintf(stderr, "tarfs: cannot read %s\n", resolved);
    return 2;
  }
  std::vector<char*> args = {argv[0]};
  for (int i = 2; i < argc; ++i) args.push_back(argv[i]);
  efuse::ServerOptions defaults;
  defaults.mount_options = {"ro"};
  return efuse::ServeMain(fs, static_cast<int>(args.size()), args.data(), defaults);
}
