// core/later.cc — efuse::Later: a value handed to the request's pending
// reply (core/later.h), once.
#include <utility>

#include "core/filesystem.h"
#include "core/later.h"

namespace efuse {

namespace {
template <typename T>
LaterValue ValueOf(Result<T>&& r) {
  if (!r.ok()) return LaterValue(r.error());
  return LaterValue(std::move(*r));
}
}  // namespace

Later::Later() = default;
Later::Later(std::unique_ptr<LaterAnswer> pending) : pending_(std::move(pending)) {}
Later::Later(Later&& other) noexcept = default;
Later& Later::operator=(Later&& other) noexcept {
  if (this != &other) {
    if (pending_ != nullptr) pending_->Give(Errno(EIO));  // the one replaced goes unanswered
    pending_ = std::move(other.pending_);
  }
  return *this;
}
Later::~Later() {
  if (pending_ != nullptr) pending_->Give(Errno(EIO));
}

// Taken out first: an answer is given once, even if giving it ends up
// destroying this Later (a Later kept inside what the answer frees).
#define EFUSE_LATER_GIVE(value)                                  \
  do {                                                           \
    std::unique_ptr<LaterAnswer> pending = std::move(pending_);  \
    if (pending != nullptr) pending->Give(value);                \
  } while (0)

void Later::Answer(Result<Entry> entry) { EFUSE_LATER_GIVE(ValueOf(std::move(entry))); }
void Later::Answer(Result<AttrReply> attr) { EFUSE_LATER_GIVE(ValueOf(std::move(attr))); }
void Later::Answer(Result<OpenReply> open) { EFUSE_LATER_GIVE(ValueOf(std::move(open))); }
void Later::Answer(Result<CreateReply> create) { EFUSE_LATER_GIVE(ValueOf(std::move(create))); }
void Later::Answer(Result<size_t> count) { EFUSE_LATER_GIVE(ValueOf(std::move(count))); }
void Later::Answer(Result<std::string> bytes) { EFUSE_LATER_GIVE(ValueOf(std::move(bytes))); }
void Later::Answer(Result<FsStats> stats) { EFUSE_LATER_GIVE(ValueOf(std::move(stats))); }
void Later::Answer(Status status) { EFUSE_LATER_GIVE(ValueOf(std::move(status))); }
void Later::Fail(Errno error) { EFUSE_LATER_GIVE(LaterValue(error)); }

#undef EFUSE_LATER_GIVE

bool Later::Interrupted() const { return pending_ != nullptr && pending_->Interrupted(); }

Later RequestContext::AnswerLater() const {
  if (later_source_ == nullptr) return Later();
  return Later(later_source_->Take());
}

}  // namespace efuse
