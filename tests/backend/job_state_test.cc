#include "services/backend/job_state.h"

#include "absl/strings/match.h"
#include "gtest/gtest.h"

namespace strongroom::backend {
namespace {

TEST(JobStateTest, TheMainPathIsAllowed) {
  const v1::JobState path[] = {v1::JOB_STATE_SUBMITTING,   v1::JOB_STATE_QUEUED,  v1::JOB_STATE_STARTING,
                               v1::JOB_STATE_PROVISIONING, v1::JOB_STATE_RUNNING, v1::JOB_STATE_RELEASING,
                               v1::JOB_STATE_COMPLETED};
  for (size_t i = 0; i + 1 < std::size(path); ++i) EXPECT_TRUE(TransitionAllowed(path[i], path[i + 1])) << i;
}

TEST(JobStateTest, EveryNonTerminalStateMayFailAndBeCancelled) {
  for (int s = v1::JOB_STATE_SUBMITTING; s <= v1::JOB_STATE_RELEASING; ++s) {
    const auto state = static_cast<v1::JobState>(s);
    EXPECT_TRUE(TransitionAllowed(state, v1::JOB_STATE_FAILED)) << JobStateName(state);
    EXPECT_TRUE(TransitionAllowed(state, v1::JOB_STATE_CANCELLING)) << JobStateName(state);
  }
  EXPECT_TRUE(TransitionAllowed(v1::JOB_STATE_CANCELLING, v1::JOB_STATE_CANCELLED));
  EXPECT_FALSE(TransitionAllowed(v1::JOB_STATE_CANCELLING, v1::JOB_STATE_COMPLETED));
}

TEST(JobStateTest, TerminalStatesAreFinal) {
  for (v1::JobState terminal : {v1::JOB_STATE_COMPLETED, v1::JOB_STATE_FAILED, v1::JOB_STATE_CANCELLED}) {
    EXPECT_TRUE(IsTerminal(terminal));
    for (int to = 1; to <= 10; ++to) EXPECT_FALSE(TransitionAllowed(terminal, static_cast<v1::JobState>(to)));
  }
}

TEST(JobStateTest, SkippingAStepIsIllegalAndTheErrorNamesBothStates) {
  EXPECT_FALSE(TransitionAllowed(v1::JOB_STATE_QUEUED, v1::JOB_STATE_RUNNING));
  EXPECT_FALSE(TransitionAllowed(v1::JOB_STATE_SUBMITTING, v1::JOB_STATE_COMPLETED));
  absl::Status s = CheckTransition("gj-1", v1::JOB_STATE_QUEUED, v1::JOB_STATE_COMPLETED);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(s.message(), "job gj-1: illegal state transition QUEUED -> COMPLETED");
  EXPECT_TRUE(CheckTransition("gj-1", v1::JOB_STATE_QUEUED, v1::JOB_STATE_STARTING).ok());
}

TEST(JobStateTest, TheTableHasNineteenTransitionsLikeMigration0001) {
  // services/backend/migrations/0001_initial.sql inserts the same 19 rows; backend refuses to start
  // otherwise.
  EXPECT_EQ(AllowedTransitions().size(), 19u);
}

}  // namespace
}  // namespace strongroom::backend
