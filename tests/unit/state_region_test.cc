// core/state_region: the log and answers a successor server reads from the
// memfd its predecessor wrote.
#include "core/state_region.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace efuse {
namespace {

std::vector<uint32_t> Replayed(StateRegion& r) {
  std::vector<uint32_t> seen;
  r.Replay([&](uint16_t type, std::span<const uint8_t> payload) {
    uint32_t v = 0;
    if (type == 7 && payload.size() >= sizeof(v)) std::memcpy(&v, payload.data(), sizeof(v));
    seen.push_back(v);
  });
  return seen;
}

bool AppendNumber(StateRegion& r, uint32_t v, size_t padding = 1000) {
  std::vector<uint8_t> payload(sizeof(v) + padding, 0xab);
  std::memcpy(payload.data(), &v, sizeof(v));
  return r.Append(7, payload);
}

// A successor adopts the region, then its predecessor goes on appending
// past the size the successor mapped (a planned restart: the successor
// loads while the predecessor serves): the successor replays every record,
// and its own appends never cut the memfd back.
TEST(StateRegionTest, AnAdopterSeesRecordsAppendedAfterItMappedTheRegion) {
  absl::StatusOr<std::unique_ptr<StateRegion>> writer = StateRegion::Create();
  ASSERT_TRUE(writer.ok()) << writer.status();
  const int dup_fd = fcntl((*writer)->fd(), F_DUPFD_CLOEXEC, 0);
  absl::StatusOr<std::unique_ptr<StateRegion>> reader = StateRegion::Adopt(dup_fd);
  ASSERT_TRUE(reader.ok()) << reader.status();
  constexpr uint32_t kRecords = 5000;  // ~5 MB: several growths past the first 1 MiB
  for (uint32_t i = 0; i < kRecords; ++i) ASSERT_TRUE(AppendNumber(**writer, i));
  std::vector<uint32_t> seen = Replayed(**reader);
  ASSERT_EQ(seen.size(), kRecords);
  for (uint32_t i = 0; i < kRecords; ++i) ASSERT_EQ(seen[i], i);

  struct stat before, after;
  ASSERT_EQ(fstat((*writer)->fd(), &before), 0);
  ASSERT_TRUE(AppendNumber(**reader, kRecords, 0));
  ASSERT_EQ(fstat((*writer)->fd(), &after), 0);
  EXPECT_GE(after.st_size, before.st_size) << "the adopter shrank the memfd";
  seen = Replayed(**writer);
  ASSERT_EQ(seen.size(), kRecords + 1);
  EXPECT_EQ(seen.back(), kRecords);
}

TEST(StateRegionTest, AnAnswerRecordedIsFoundAndAnIntentIsTold) {
  absl::StatusOr<std::unique_ptr<StateRegion>> r = StateRegion::Create();
  ASSERT_TRUE(r.ok()) << r.status();
  std::string message(24, 'x');
  iovec v{message.data(), message.size()};
  ASSERT_TRUE((*r)->RecordAnswer(42, std::span<const iovec>(&v, 1)));
  EXPECT_EQ((*r)->FindAnswer(42), message);
  EXPECT_EQ((*r)->FindAnswer(43), "");
  (*r)->RecordIntent(44);
  EXPECT_TRUE((*r)->HasIntent(44));
  EXPECT_FALSE((*r)->HasIntent(42));
  // Read at once: 44 carried out and never answered; 46 answered after its
  // intent; 42 answered only.
  (*r)->RecordIntent(46);
  ASSERT_TRUE((*r)->RecordAnswer(46, std::span<const iovec>(&v, 1)));
  const StateRegion::Recorded recorded = (*r)->RecordedRequests();
  EXPECT_TRUE(recorded.NeverAnswered(44));
  EXPECT_FALSE(recorded.NeverAnswered(46));
  EXPECT_FALSE(recorded.NeverAnswered(42));
  EXPECT_FALSE(recorded.NeverAnswered(0));
  EXPECT_TRUE(recorded.intents.contains(46));
  EXPECT_FALSE(recorded.intents.contains(42));
}

// The intent of a request in flight is kept however many answers others
// record (the slots' rotation passes over it), and goes with the rotation
// once released. A successor holds its predecessor's unanswered intents
// until their resends are answered.
TEST(StateRegionTest, AHeldIntentOutlivesTheRotation) {
  absl::StatusOr<std::unique_ptr<StateRegion>> r = StateRegion::Create();
  ASSERT_TRUE(r.ok()) << r.status();
  std::string message(24, 'x');
  iovec v{message.data(), message.size()};
  auto answer_many = [&](StateRegion& region, uint64_t first) {
    for (uint64_t u = first; u < first + 2 * StateRegion::kAnswerSlots; u += 2) {
      ASSERT_TRUE(region.RecordAnswer(u, std::span<const iovec>(&v, 1)));
    }
  };
  const uint64_t recorded = (*r)->header().answers_recorded.load();
  const size_t ticket = (*r)->Hold(100);
  ASSERT_NE(ticket, 0u);
  (*r)->RecordIntent(100);
  (*r)->RecordIntent(102);  // not held
  ASSERT_NO_FATAL_FAILURE(answer_many(**r, 1000));
  EXPECT_TRUE((*r)->HasIntent(100));
  EXPECT_FALSE((*r)->HasIntent(102));
  EXPECT_EQ((*r)->header().answers_recorded.load(), recorded + 2 + StateRegion::kAnswerSlots)
      << "answers_recorded counts answers and intents, not slots passed over";
  (*r)->Release(ticket);
  ASSERT_NO_FATAL_FAILURE(answer_many(**r, 1000000));
  EXPECT_FALSE((*r)->HasIntent(100));

  // 104 and 106 carried out and never answered by a server that died.
  (*r)->RecordIntent(104);
  (*r)->RecordIntent(106);
  const int dup_fd = fcntl((*r)->fd(), F_DUPFD_CLOEXEC, 0);
  absl::StatusOr<std::unique_ptr<StateRegion>> successor = StateRegion::Adopt(dup_fd);
  ASSERT_TRUE(successor.ok()) << successor.status();
  (*successor)->HoldUnanswered();
  (*successor)->ReleaseUnresent();  // too soon: a resend may still be on its way to a worker
  ASSERT_NO_FATAL_FAILURE(answer_many(**successor, 2000000));
  EXPECT_TRUE((*successor)->HasIntent(104)) << "the intent went before its resend came";
  EXPECT_TRUE((*successor)->HasIntent(106));
  (*successor)->ReleaseHoldsOf(104);  // its resend answered
  ASSERT_NO_FATAL_FAILURE(answer_many(**successor, 3000000));
  EXPECT_FALSE((*successor)->HasIntent(104));
  EXPECT_TRUE((*successor)->HasIntent(106));
  // Four laps of answers later, 106 is not going to be resent (its caller
  // gone): the next new request lets it go.
  for (uint64_t lap = 0; lap < 2; ++lap) ASSERT_NO_FATAL_FAILURE(answer_many(**successor, 5000000 + lap * 10000));
  (*successor)->ReleaseUnresent();
  ASSERT_NO_FATAL_FAILURE(answer_many(**successor, 6000000));
  EXPECT_FALSE((*successor)->HasIntent(106)) << "an intent never resent stayed held";
}

// A checkpoint moves the log's beginning: replay starts at it, a reader
// that had read the older part is told to forget it, and the memory before
// it goes back to the system. One never committed (its server killed
// halfway) leaves the log as it was, the checkpoint's records after it.
TEST(StateRegionTest, ACommittedCheckpointIsWhereReplayStarts) {
  absl::StatusOr<std::unique_ptr<StateRegion>> writer = StateRegion::Create();
  ASSERT_TRUE(writer.ok()) << writer.status();
  StateRegion& w = **writer;
  constexpr uint32_t kOld = 4000;  // ~4 MB that the checkpoint replaces
  for (uint32_t i = 0; i < kOld; ++i) ASSERT_TRUE(AppendNumber(w, i));
  absl::StatusOr<std::unique_ptr<StateRegion>> reader = StateRegion::Adopt(fcntl(w.fd(), F_DUPFD_CLOEXEC, 0));
  ASSERT_TRUE(reader.ok()) << reader.status();
  std::vector<uint32_t> seen;
  int resets = 0;
  auto collect = [&](uint16_t type, std::span<const uint8_t> payload) {
    uint32_t v = 0;
    if (type == 7 && payload.size() >= sizeof(v)) std::memcpy(&v, payload.data(), sizeof(v));
    seen.push_back(v);
  };
  auto forget = [&] {
    seen.clear();
    ++resets;
  };
  uint64_t offset = (*reader)->Replay(collect, 0, forget);
  ASSERT_EQ(seen.size(), kOld);
  EXPECT_EQ(resets, 0);

  // Killed halfway: nothing changes but the records appended.
  std::optional<uint64_t> abandoned = w.BeginCheckpoint();
  ASSERT_TRUE(abandoned.has_value());
  ASSERT_TRUE(AppendNumber(w, 100000));
  EXPECT_EQ(Replayed(w).size(), kOld + 1) << "the mark is passed on, or records were lost";

  struct stat before, after;
  ASSERT_EQ(fstat(w.fd(), &before), 0);
  std::optional<uint64_t> begin = w.BeginCheckpoint();
  ASSERT_TRUE(begin.has_value());
  ASSERT_TRUE(AppendNumber(w, 200000));  // the checkpoint's records...
  ASSERT_TRUE(AppendNumber(w, 200001));
  w.CommitCheckpoint(*begin);
  ASSERT_TRUE(AppendNumber(w, 200002));  // ...and what follows it
  EXPECT_EQ(Replayed(w), (std::vector<uint32_t>{200000, 200001, 200002}));
  EXPECT_EQ(w.header().checkpoints.load(), 1u);
  EXPECT_LT(w.log_bytes(), 4 * 1024u);
  ASSERT_EQ(fstat(w.fd(), &after), 0);
  EXPECT_LT(after.st_blocks * 512, before.st_blocks * 512 - 3 * 1000 * 1000)
      << "the log before the checkpoint was not freed";
  // The next is due once the log is four times the checkpoint's size.
  EXPECT_FALSE(w.CheckpointDue(0));

  // The reader that had read the old log is told to forget it.
  offset = (*reader)->Replay(collect, offset, forget);
  EXPECT_EQ(resets, 1);
  EXPECT_EQ(seen, (std::vector<uint32_t>{200000, 200001, 200002}));
  ASSERT_TRUE(AppendNumber(w, 200003));
  (*reader)->Replay(collect, offset, forget);
  EXPECT_EQ(resets, 1);
  EXPECT_EQ(seen.back(), 200003u);
  for (uint32_t i = 0; i < 8; ++i) ASSERT_TRUE(AppendNumber(w, 300000 + i));
  EXPECT_TRUE(w.CheckpointDue(0));
  EXPECT_FALSE(w.CheckpointDue(1 << 20));
}

}  // namespace
}  // namespace efuse
