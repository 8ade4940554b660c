/* null_ll: tools/examples/null (one file of zeros that takes every write,
 * attributes never cached, direct I/O) written on libfuse 3's low-level
 * API, the peer engine.py serves beside efuse. Built by engine.py against
 * Debian's libfuse3-dev:
 *   gcc -O2 -o null_ll null_ll.c $(pkg-config --cflags --libs fuse3)
 *   null_ll MOUNTPOINT [-o clone_fd] [-s]      (multi-threaded unless -s)
 */
#define FUSE_USE_VERSION 34
#include <errno.h>
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define NULL_INO 2
#define NULL_SIZE (1ULL << 40)
static const char kName[] = "null";

static void fill(fuse_ino_t ino, struct stat *st) {
  memset(st, 0, sizeof(*st));
  st->st_ino = ino;
  if (ino == FUSE_ROOT_ID) {
    st->st_mode = S_IFDIR | 0755;
    st->st_nlink = 2;
  } else {
    st->st_mode = S_IFREG | 0666;
    st->st_nlink = 1;
    st->st_size = NULL_SIZE;
  }
}

static void null_lookup(fuse_req_t req, fuse_ino_t parent, const char *name) {
  if (parent != FUSE_ROOT_ID || strcmp(name, kName) != 0) {
    fuse_reply_err(req, ENOENT);
    return;
  }
  struct fuse_entry_param e;
  memset(&e, 0, sizeof(e));
  e.ino = NULL_INO;
  e.entry_timeout = 3600;
  e.attr_timeout = 0;
  fill(NULL_INO, &e.attr);
  fuse_reply_entry(req, &e);
}

static void null_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  (void)fi;
  if (ino != FUSE_ROOT_ID && ino != NULL_INO) {
    fuse_reply_err(req, ENOENT);
    return;
  }
  struct stat st;
  fill(ino, &st);
  fuse_reply_attr(req, &st, 0);
}

static void null_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set, struct fuse_file_info *fi) {
  (void)attr;
  (void)to_set;
  null_getattr(req, ino, fi);
}

static void null_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  if (ino != NULL_INO) {
    fuse_reply_err(req, EISDIR);
    return;
  }
  fi->direct_io = 1;
  fuse_reply_open(req, fi);
}

static void null_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi) {
  (void)ino;
  (void)fi;
  static __thread char *zeros;
  static __thread size_t zeros_size;
  if ((unsigned long long)off >= NULL_SIZE) {
    fuse_reply_buf(req, NULL, 0);
    return;
  }
  if (size > NULL_SIZE - off) size = NULL_SIZE - off;
  if (zeros_size < size) {
    free(zeros);
    zeros = calloc(1, size);
    zeros_size = zeros ? size : 0;
  }
  fuse_reply_buf(req, zeros, size);
}

static void null_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
                       struct fuse_file_info *fi) {
  (void)ino;
  (void)buf;
  (void)off;
  (void)fi;
  fuse_reply_write(req, size);
}

static void null_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  (void)ino;
  (void)fi;
  fuse_reply_err(req, 0);
}

static const struct fuse_lowlevel_ops ops = {
    .lookup = null_lookup,
    .getattr = null_getattr,
    .setattr = null_setattr,
    .open = null_open,
    .read = null_read,
    .write = null_write,
    .flush = null_flush,
};

int main(int argc, char *argv[]) {
  struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
  struct fuse_cmdline_opts opts;
  if (fuse_parse_cmdline(&args, &opts) != 0 || opts.mountpoint == NULL) {
    fprintf(stderr, "usage: %s MOUNTPOINT [-o clone_fd] [-s]\n", argv[0]);
    return 2;
  }
  struct fuse_session *se = fuse_session_new(&args, &ops, sizeof(ops), NULL);
  int ret = 1;
  if (se != NULL && fuse_set_signal_handlers(se) == 0) {
    if (fuse_session_mount(se, opts.mountpoint) == 0) {
      if (opts.singlethread) {
        ret = fuse_session_loop(se);
      } else {
        struct fuse_loop_config config;
        config.clone_fd = opts.clone_fd;
        config.max_idle_threads = opts.max_idle_threads;
        ret = fuse_session_loop_mt(se, &config);
      }
      fuse_session_unmount(se);
    }
    fuse_remove_signal_handlers(se);
  }
  if (se != NULL) fuse_session_destroy(se);
  free(opts.mountpoint);
  fuse_opt_free_args(&args);
  return ret ? 1 : 0;
}
