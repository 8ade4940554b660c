// tools/bench/ab/open_loops.c — one metadata loop on a mount, ops/s on stdout.
// Usage: open_loops DIR open_rdwr|open_rdonly|stat|create_unlink N
// (DIR/file must exist for the first three). Built and run by ab.sh.
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }
int main(int argc, char** argv) {
  const char* dir = argv[1]; const char* what = argv[2]; int n = atoi(argv[3]);
  char f[4096]; snprintf(f, sizeof f, "%s/file", dir);
  double t0 = now();
  if (!strcmp(what, "open_rdwr") || !strcmp(what, "open_rdonly")) {
    int fl = !strcmp(what, "open_rdwr") ? O_RDWR : O_RDONLY;
    for (int i = 0; i < n; i++) { int fd = open(f, fl); if (fd < 0) { perror("open"); return 1; } close(fd); }
  } else if (!strcmp(what, "stat")) {
    struct stat st; for (int i = 0; i < n; i++) if (stat(f, &st)) { perror("stat"); return 1; }
  } else if (!strcmp(what, "create_unlink")) {
    char p[4096];
    for (int i = 0; i < n; i++) { snprintf(p, sizeof p, "%s/c%d", dir, i); int fd = open(p, O_CREAT | O_EXCL | O_WRONLY, 0644); if (fd < 0) { perror("create"); return 1; } close(fd); }
    for (int i = 0; i < n; i++) { snprintf(p, sizeof p, "%s/c%d", dir, i); unlink(p); }
  }
  printf("%.0f\n", n / (now() - t0));
  return 0;
}
