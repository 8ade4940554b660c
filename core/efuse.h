// <efuse/efuse.h> — the public API of libefuse, in one include.
//
// Owns nothing itself: it gathers the FileSystem interface and its value
// types (core/filesystem.h), errno-style results (core/result.h), the
// FUSE protocol's constants (proto/abi.h: open, setattr and INIT flags) and
// the entry points that mount and serve (core/server.h). Link with
// efuse::efuse (CMake: find_package(efuse)) or `pkg-config --libs efuse`.
#ifndef EFUSE_EFUSE_H_
#define EFUSE_EFUSE_H_

#include "core/filesystem.h"
#include "core/result.h"
#include "core/server.h"
#include "proto/abi.h"

#endif  // EFUSE_EFUSE_H_
