// The gtest fixture every end-to-end suite shares: one E2eStack per suite (started once, torn down at the end),
// jobs submitted as an ordinary user, the stack's logs dumped after a failed test, and the check that a test left
// nothing behind. `Suite` is the concrete fixture (each suite gets its own stack).
#pragma once

#include <unistd.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "tests/e2e/e2e_jobs.h"
#include "tests/e2e/e2e_stack.h"

namespace strongroom::e2e {

// The user jobs run as: an ordinary, non-root account every Debian system has.
inline constexpr const char* kUser = "nobody";

template <typename Suite>
class E2eSuite : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (geteuid() != 0) return;
    absl::StatusOr<std::unique_ptr<E2eStack>> stack = E2eStack::Start(Suite::StackOptions());
    if (!stack.ok()) {
      start_error_ = new std::string(stack.status().ToString());
      return;
    }
    stack_ = stack->release();
  }
  static void TearDownTestSuite() {
    delete stack_;
    stack_ = nullptr;
  }
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "the end-to-end stack needs root (namespaces, OVS, runc, Slurm)";
    ASSERT_EQ(start_error_, nullptr) << *start_error_;
    jobs_ = std::make_unique<Jobs>(stack_, kUser);
  }
  void TearDown() override {
    if (HasFailure() && stack_ != nullptr) stack_->DumpLogs();
  }

  // A suite shadows this to start its stack differently (e.g. with the data path).
  static E2eOptions StackOptions() { return E2eOptions{}; }

  // Teardown is asynchronous after the local job ends (dynamic node deletion, StopWorkload, scrub).
  void ExpectClean(absl::Duration timeout = absl::Seconds(60)) {
    std::vector<std::string> left;
    const absl::Time deadline = absl::Now() + timeout;
    do {
      left = stack_->Leftovers();
      if (left.empty()) break;
      absl::SleepFor(absl::Milliseconds(250));
    } while (absl::Now() < deadline);
    EXPECT_EQ(left, std::vector<std::string>{});
  }

  static inline E2eStack* stack_ = nullptr;
  static inline std::string* start_error_ = nullptr;
  std::unique_ptr<Jobs> jobs_;
};

}  // namespace strongroom::e2e
