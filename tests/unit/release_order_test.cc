// ReleaseOrder: which lock requests may have overtaken a RELEASE.
#include "core/release_order.h"

#include <gtest/gtest.h>

#include <chrono>
#include <thread>

namespace efuse {
namespace {

using std::chrono::milliseconds;

TEST(ReleaseOrderTest, NothingPendingWhenEveryEarlierRequestIsReceivedAndDone) {
  ReleaseOrder order;
  for (uint64_t u = 2; u <= 20; u += 2) order.Received(u, false);
  EXPECT_FALSE(order.Pending(22));
  const auto start = std::chrono::steady_clock::now();
  EXPECT_FALSE(order.WaitForEarlierReleases(22, milliseconds(500)));
  EXPECT_LT(std::chrono::steady_clock::now() - start, milliseconds(100));
}

TEST(ReleaseOrderTest, AnEarlierNumberNotYetReceivedIsPendingUntilItArrives) {
  ReleaseOrder order;
  order.Received(2, false);  // INIT
  order.Received(4, false);
  order.Received(8, false);  // the lock request; 6 (its RELEASE) is late
  EXPECT_TRUE(order.Pending(8));
  EXPECT_FALSE(order.Pending(6));
  std::thread late([&] {
    std::this_thread::sleep_for(milliseconds(20));
    int token = order.Received(6, true);
    std::this_thread::sleep_for(milliseconds(20));
    order.ReleaseDone(token);
  });
  const auto start = std::chrono::steady_clock::now();
  EXPECT_TRUE(order.WaitForEarlierReleases(8, milliseconds(5000)));
  const auto waited = std::chrono::steady_clock::now() - start;
  late.join();
  EXPECT_GE(waited, milliseconds(35)) << "returned before the RELEASE was done";
  EXPECT_LT(waited, milliseconds(4000));
  EXPECT_FALSE(order.Pending(8));
}

TEST(ReleaseOrderTest, OnlyReleasesNumberedEarlierAreWaitedFor) {
  ReleaseOrder order;
  for (uint64_t u = 2; u <= 10; u += 2) order.Received(u, false);
  int later = order.Received(12, true);
  EXPECT_FALSE(order.Pending(12));
  EXPECT_TRUE(order.Pending(14));
  order.ReleaseDone(later);
  EXPECT_FALSE(order.Pending(14));
}

TEST(ReleaseOrderTest, NumbersFarBackOrBeforeTheFirstAreNotWaitedFor) {
  ReleaseOrder order;
  order.Received(1000, false);  // the first number seen: nothing before counts
  EXPECT_FALSE(order.Pending(1002));
  // A gap further back than the window is never waited for.
  const uint64_t lock = 1002 + 4 * ReleaseOrder::kWindow;
  for (uint64_t u = lock - 2 * ReleaseOrder::kWindow; u < lock; u += 2) order.Received(u, false);
  EXPECT_FALSE(order.Pending(lock));
  // INTERRUPT numbers (odd) and 0 are ignored, even as releases.
  order.Received(lock, false);
  order.Received(lock + 1, true);
  order.Received(0, true);
  EXPECT_FALSE(order.Pending(lock + 2));
  EXPECT_TRUE(order.Pending(lock + 4)) << "lock + 2 is missing";
}

TEST(ReleaseOrderTest, AGapThatNeverFillsEndsAtTheLimit) {
  ReleaseOrder order;
  order.Received(2, false);
  order.Received(6, false);
  const auto start = std::chrono::steady_clock::now();
  EXPECT_TRUE(order.WaitForEarlierReleases(6, milliseconds(30)));
  const auto waited = std::chrono::steady_clock::now() - start;
  EXPECT_GE(waited, milliseconds(30));
  EXPECT_LT(waited, milliseconds(1000));
}

TEST(ReleaseOrderTest, MoreReleasesThanSlotsStillCount) {
  ReleaseOrder order;
  order.Received(2, false);
  std::vector<int> tokens;
  for (uint64_t u = 4; u < 4 + 2 * 100; u += 2) tokens.push_back(order.Received(u, true));
  const uint64_t lock = 4 + 2 * 100;
  EXPECT_TRUE(order.Pending(lock));
  for (int t : tokens) order.ReleaseDone(t);
  EXPECT_FALSE(order.Pending(lock));
}

}  // namespace
}  // namespace efuse
