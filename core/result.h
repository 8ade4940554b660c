// core/result.h — errno-style results for the data plane.
//
// Owns: Errno (a positive errno that can never be 0, so "success" can never be
// sent to the kernel by mistake) and Result<T> (a value or an Errno). Control
// plane code uses absl::Status instead. Value types; thread-compatible.
#ifndef EFUSE_CORE_RESULT_H_
#define EFUSE_CORE_RESULT_H_

#include <cerrno>
#include <utility>
#include <variant>

namespace efuse {

class Errno {
 public:
  /// A non-positive value is a programming error; it becomes EIO so the kernel
  /// still sees a failure rather than a bogus success.
  explicit constexpr Errno(int value) : value_(value > 0 ? value : EIO) {}
  constexpr int value() const { return value_; }
  friend constexpr bool operator==(Errno a, Errno b) { return a.value_ == b.value_; }

  /// The errno of the last failed libc call.
  static Errno Last() { return Errno(errno); }

 private:
  int value_;
};

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}  ///< NOLINT: implicit by design
  Result(Errno err) : v_(err) {}             ///< NOLINT
  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }
  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  Errno error() const { return std::get<1>(v_); }

 private:
  std::variant<T, Errno> v_;
};

/// Result<void>: success or an Errno.
struct Ok {};
using Status = Result<Ok>;
inline Status OkStatus() { return Ok{}; }

}  // namespace efuse

#endif  // EFUSE_CORE_RESULT_H_
