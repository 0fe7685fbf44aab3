#include "services/backend/usage.h"

#include "gtest/gtest.h"

namespace strongroom::backend {
namespace {

const absl::Time kT0 = absl::FromUnixSeconds(1700000000);

TEST(UsageTest, RunTimeIsClippedToTheWindowAndCountedPerUser) {
  std::vector<RunRecord> runs = {
      // Inside the window: 2 h on 1 node with 64 CPUs, completed.
      {"alice", v1::JOB_STATE_COMPLETED, kT0 + absl::Hours(1), kT0 + absl::Hours(3), 1, 64},
      // Starts before the window: only the part inside counts (1 h), failed inside it.
      {"bob", v1::JOB_STATE_FAILED, kT0 - absl::Hours(5), kT0 + absl::Hours(1), 1, 32},
      // Still running: counted up to `now` (kT0 + 10 h), 4 h.
      {"alice", v1::JOB_STATE_RUNNING, kT0 + absl::Hours(6), std::nullopt, 1, 64},
      // Entirely before the window: not counted.
      {"carol", v1::JOB_STATE_CANCELLED, kT0 - absl::Hours(9), kT0 - absl::Hours(8), 1, 8},
  };
  const v1::UsageReportResponse r =
      ComputeUsage("p", kT0, kT0 + absl::Hours(24), kT0 + absl::Hours(10), runs);
  EXPECT_EQ(r.total().jobs(), 3u);
  EXPECT_EQ(r.total().jobs_completed(), 1u);
  EXPECT_EQ(r.total().jobs_failed(), 1u);
  EXPECT_EQ(r.total().jobs_cancelled(), 0u);
  EXPECT_DOUBLE_EQ(r.total().node_hours(), 2 + 1 + 4);
  EXPECT_DOUBLE_EQ(r.total().core_hours(), 2 * 64 + 1 * 32 + 4 * 64);
  ASSERT_EQ(r.per_user_size(), 2);
  EXPECT_EQ(r.per_user(0).user(), "alice");
  EXPECT_DOUBLE_EQ(r.per_user(0).usage().core_hours(), 6 * 64);
  EXPECT_EQ(r.per_user(1).user(), "bob");
  EXPECT_EQ(r.per_user(0).usage().jobs() + r.per_user(1).usage().jobs(), r.total().jobs());
}

TEST(UsageTest, AJobEndingAfterTheWindowIsNotCountedAsEndedInIt) {
  std::vector<RunRecord> runs = {{"a", v1::JOB_STATE_COMPLETED, kT0, kT0 + absl::Hours(30), 1, 10}};
  const v1::UsageReportResponse r =
      ComputeUsage("p", kT0, kT0 + absl::Hours(24), kT0 + absl::Hours(40), runs);
  EXPECT_EQ(r.total().jobs(), 1u);
  EXPECT_EQ(r.total().jobs_completed(), 0u);
  EXPECT_DOUBLE_EQ(r.total().node_hours(), 24);
}

}  // namespace
}  // namespace strongroom::backend
