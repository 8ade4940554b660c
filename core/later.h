// core/later.h — the engine's side of answers given later (efuse::Later,
// core/filesystem.h).
//
// Owns: LaterValue (what a Later was answered with), LaterAnswer (where it
// goes: the dispatcher's pending reply to one request) and LaterSource
// (what RequestContext::AnswerLater asks during one call: the dispatcher).
// Thread-safety: a LaterAnswer is given its value once, from any thread; a
// LaterSource is used only by the thread of the call it was made for.
#ifndef EFUSE_CORE_LATER_H_
#define EFUSE_CORE_LATER_H_

#include <cstddef>
#include <memory>
#include <string>
#include <variant>

#include "core/filesystem.h"

namespace efuse {

using LaterValue = std::variant<Errno, Entry, AttrReply, OpenReply, CreateReply, size_t, std::string, FsStats, Ok>;

class LaterAnswer {
 public:
  virtual ~LaterAnswer() = default;
  virtual void Give(LaterValue value) = 0;
  virtual bool Interrupted() const = 0;
};

class LaterSource {
 public:
  virtual ~LaterSource() = default;
  // The pending reply of the request being served, or null if it cannot be
  // answered later (then nothing changed: the call answers now).
  virtual std::unique_ptr<LaterAnswer> Take() = 0;
};

}  // namespace efuse

#endif  // EFUSE_CORE_LATER_H_
