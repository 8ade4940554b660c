// core/memfs/rw_mutex.h — the reader/writer lock memfs uses, and its guards.
//
// Owns: memfs::RwMutex, memfs::ReadLock, memfs::WriteLock. RwMutex is
// absl::Mutex (writer-fair, so a stream of lookups cannot starve a rename).
// Under ThreadSanitizer it is std::shared_mutex instead: the distribution's
// prebuilt absl is not instrumented, so TSan cannot see absl::Mutex's
// happens-before edges and reports false races; pthread locks it understands.
//
// Thread-safety: a mutex; the guards are scoped and not shareable.
#ifndef EFUSE_CORE_MEMFS_RW_MUTEX_H_
#define EFUSE_CORE_MEMFS_RW_MUTEX_H_

#include "absl/base/config.h"
#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

#ifdef ABSL_HAVE_THREAD_SANITIZER
#include <shared_mutex>
#endif

namespace efuse::memfs {

#ifdef ABSL_HAVE_THREAD_SANITIZER
class ABSL_LOCKABLE RwMutex {
 public:
  void Lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() { mu_.lock(); }
  void Unlock() ABSL_UNLOCK_FUNCTION() { mu_.unlock(); }
  void ReaderLock() ABSL_SHARED_LOCK_FUNCTION() { mu_.lock_shared(); }
  void ReaderUnlock() ABSL_UNLOCK_FUNCTION() { mu_.unlock_shared(); }

 private:
  std::shared_mutex mu_;
};
#else
using RwMutex = absl::Mutex;
#endif

class ABSL_SCOPED_LOCKABLE WriteLock {
 public:
  explicit WriteLock(RwMutex* mu) ABSL_EXCLUSIVE_LOCK_FUNCTION(mu) : mu_(mu) {
    mu_->Lock();
  }
  ~WriteLock() ABSL_UNLOCK_FUNCTION() { mu_->Unlock(); }
  WriteLock(const WriteLock&) = delete;
  WriteLock& operator=(const WriteLock&) = delete;

 private:
  RwMutex* const mu_;
};

class ABSL_SCOPED_LOCKABLE ReadLock {
 public:
  explicit ReadLock(RwMutex* mu) ABSL_SHARED_LOCK_FUNCTION(mu) : mu_(mu) {
    mu_->ReaderLock();
  }
  ~ReadLock() ABSL_UNLOCK_FUNCTION() { mu_->ReaderUnlock(); }
  ReadLock(const ReadLock&) = delete;
  ReadLock& operator=(const ReadLock&) = delete;

 private:
  RwMutex* const mu_;
};

}  // namespace efuse::memfs

#endif  // EFUSE_CORE_MEMFS_RW_MUTEX_H_
