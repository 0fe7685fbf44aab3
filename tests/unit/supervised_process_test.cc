// SupervisedProcess (common/supervised_process.h) with real child processes.
#include "common/supervised_process.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <string>

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

// A daemon killed without stopping its child (SIGKILL, a crash) leaves no orphan: the parent-death signal.
TEST(SupervisedProcessTest, TheChildDiesWithItsParent) {
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  const pid_t daemon = fork();
  ASSERT_GE(daemon, 0);
  if (daemon == 0) {  // the "daemon": starts a child, reports its PID, dies without stopping it
    close(fds[0]);
    auto p = SupervisedProcess::Start("orphan", {"/bin/sleep", "600"}, "/dev/null", nullptr);
    pid_t child = p.ok() ? (*p)->pid() : 0;
    absl::SleepFor(absl::Milliseconds(200));  // setpriv has set the signal and exec'd sleep
    (void)!write(fds[1], &child, sizeof child);
    _exit(0);
  }
  close(fds[1]);
  pid_t child = 0;
  ASSERT_EQ(read(fds[0], &child, sizeof child), static_cast<ssize_t>(sizeof child));
  close(fds[0]);
  int status = 0;
  ASSERT_EQ(waitpid(daemon, &status, 0), daemon);
  ASSERT_GT(child, 1);
  auto gone = [child] {
    std::ifstream stat("/proc/" + std::to_string(child) + "/stat");
    std::string pid, comm, state;
    return !(stat >> pid >> comm >> state) || state == "Z";
  };
  const absl::Time deadline = absl::Now() + absl::Seconds(5);
  while (!gone() && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(50));
  EXPECT_TRUE(gone()) << "pid " << child << " outlived its parent";
  if (!gone()) kill(child, SIGKILL);
}

TEST(SupervisedProcessTest, ARelativeBinaryIsRefused) {
  auto p = SupervisedProcess::Start("x", {"sleep", "1"}, "/dev/null", nullptr);
  EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace strongroom
