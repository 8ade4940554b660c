// core/test_faults.h — test-only fault switches at named points.
//
// Owns: reading EFUSE_TEST_FAULTS ("point=argument,point2=argument") once,
// and answering whether a named point is switched on. Tests set it in the
// daemon's environment to make a fault happen at an exact place, never by
// timing. Production runs never set it; a switched-on point logs a warning
// each time it fires. Thread-safe (read once, then immutable).
//
// Points:
//   no_reply_lookup=NAME   LOOKUP of NAME is read and never answered: a
//                          daemon that stopped answering, as the kernel
//                          sees it (for --request_timeout)
//   crash_before_reply=OP  the first server of a supervised mount dies
//                          after recording its answer to OP, unsent (an
//                          OP whose answer is not recorded, LOOKUP: after
//                          carrying out the first that succeeds)
//   crash_before_answer=OP the same, after carrying OP out and before its
//                          answer is recorded (only its intent is)
//   crash_before_answer_after=N  with crash_before_answer: waits (up to
//                          30 s) until N more answers were recorded by
//                          other requests before it dies (a slow request
//                          among many quick ones)
//   journal_checkpoint_at=BYTES  the takeover journal is checkpointed
//                          from BYTES on (instead of 8 MiB)
//   crash_in_checkpoint=1  the first server dies halfway through writing
//                          a journal checkpoint
//   crash_mid_append=1     the first server dies having written half of an
//                          O_APPEND write (passthrough, daemon I/O)
//   crash_after_go=1       a gated server (a standby, an upgrade's new
//                          server) dies as it is told to take over
//   crash_before_serving=1 a server of a supervised mount dies having taken
//                          the connection and its generation, before it serves
//   crash_before_listing_drop=1  the first server dies having made a change
//                          in a directory whose listing the kernel keeps,
//                          before it drops that listing (passthrough,
//                          memfs)
//   journal_refuses=1      memfs's journal takes no record (as when its
//                          memfd cannot grow): the mount is not recoverable
#ifndef EFUSE_CORE_TEST_FAULTS_H_
#define EFUSE_CORE_TEST_FAULTS_H_

#include <optional>
#include <string>
#include <string_view>

namespace efuse {

// The argument of `point` if EFUSE_TEST_FAULTS switches it on.
std::optional<std::string> TestFault(std::string_view point);

}  // namespace efuse

#endif  // EFUSE_CORE_TEST_FAULTS_H_
