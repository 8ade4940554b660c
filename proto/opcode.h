// proto/opcode.h — one table of per-opcode traits.
//
// Owns: for every opcode the kernel can send, its name, the size of its fixed
// argument struct (and the smallest size an older kernel may send), what
// follows the struct (names, payload, forget array), and whether it gets a
// reply. Decoding and logging read this table; nothing else repeats it.
// Immutable after static initialisation; safe from any thread.
#ifndef EFUSE_PROTO_OPCODE_H_
#define EFUSE_PROTO_OPCODE_H_

#include <cstdint>

#include "proto/abi.h"

namespace efuse::proto {

// What follows an opcode's fixed argument struct.
enum class Tail : uint8_t {
  kNone,          // nothing
  kName,          // one NUL-terminated name
  kTwoNames,      // two NUL-terminated names (RENAME old/new, SYMLINK name/target)
  kNameAndValue,  // SETXATTR: name + NUL, then SetxattrIn.size value bytes
  kWriteData,     // WRITE: exactly WriteIn.size bytes
  kIoctlData,     // IOCTL: exactly IoctlIn.in_size bytes
  kRest,          // opaque bytes to the end (NOTIFY_REPLY data, DAX mapping)
  kForgets,       // BATCH_FORGET: BatchForgetIn.count ForgetOne records
};

struct OpcodeTraits {
  const char* name = nullptr;  // nullptr: not an opcode this engine knows
  uint16_t in_size = 0;        // size of the fixed argument struct we decode into
  // Smallest size accepted; below in_size only for structs that grew within
  // the minors we support or whose size depends on negotiation (INIT, SETXATTR).
  uint16_t min_in_size = 0;
  Tail tail = Tail::kNone;
  bool no_reply = false;       // FORGET, BATCH_FORGET: the kernel expects none
};

// Traits of `opcode`, or nullptr for an unknown opcode.
const OpcodeTraits* TraitsOf(uint32_t opcode);

// "LOOKUP", "READ", ... or "UNKNOWN".
const char* OpcodeName(uint32_t opcode);

}  // namespace efuse::proto

#endif  // EFUSE_PROTO_OPCODE_H_
