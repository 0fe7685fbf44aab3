// SupervisedProcess (common/supervised_process.h) with real child processes.
#include "common/supervised_process.h"

#include <signal.h>

#include <atomic>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace strongroom {
namespace {

TEST(SupervisedProcessTest, StopTerminatesItAndCallsNoExitCallback) {
  std::atomic<int> calls{0};
  auto p = SupervisedProcess::Start("sleeper", {"/bin/sleep", "600"}, "/dev/null",
                                    [&](const std::string&, pid_t, int) { ++calls; });
  ASSERT_TRUE(p.ok()) << p.status();
  const pid_t pid = (*p)->pid();
  EXPECT_TRUE((*p)->running());
  EXPECT_TRUE((*p)->Signal(0).ok());
  (*p)->Stop(absl::Seconds(5));
  EXPECT_FALSE((*p)->running());
  EXPECT_EQ((*p)->exit_code(), 128 + SIGTERM);
  EXPECT_EQ(kill(pid, 0), -1);  // reaped
  EXPECT_EQ(calls.load(), 0);
  absl::Status after = (*p)->Signal(SIGHUP);
  EXPECT_EQ(after.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(after.message().find("sleeper (pid"), std::string::npos) << after;
  (*p)->Stop(absl::Seconds(1));  // idempotent
}

TEST(SupervisedProcessTest, AProcessThatIgnoresSigtermIsKilledAfterTheGrace) {
  auto p = SupervisedProcess::Start("stubborn", {"/bin/sh", "-c", "trap '' TERM; exec /bin/sleep 600"},
                                    "/dev/null", nullptr);
  ASSERT_TRUE(p.ok()) << p.status();
  absl::SleepFor(absl::Milliseconds(200));  // the trap is set
  const absl::Time start = absl::Now();
  (*p)->Stop(absl::Milliseconds(500));
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(450));
  EXPECT_EQ((*p)->exit_code(), 128 + SIGKILL);
}

TEST(SupervisedProcessTest, AnUnexpectedExitIsReportedOnce) {
  absl::Notification exited;
  std::atomic<int> calls{0};
  int code = -1;
  auto p = SupervisedProcess::Start("short", {"/bin/sh", "-c", "exit 3"}, "/dev/null",
                                    [&](const std::string& name, pid_t, int c) {
                                      EXPECT_EQ(name, "short");
                                      code = c;
                                      ++calls;
                                      exited.Notify();
                                    });
  ASSERT_TRUE(p.ok()) << p.status();
  ASSERT_TRUE(exited.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_EQ(code, 3);
  EXPECT_EQ((*p)->exit_code(), 3);
  (*p)->Stop(absl::Seconds(1));
  EXPECT_EQ(calls.load(), 1);
}

TEST(SupervisedProcessTest, ARelativeBinaryIsRefused) {
  auto p = SupervisedProcess::Start("x", {"sleep", "1"}, "/dev/null", nullptr);
  EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace strongroom
