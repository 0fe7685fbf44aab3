#include "common/supervised_process.h"

#include <signal.h>
#include <sys/wait.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/subprocess.h"

namespace strongroom {

absl::StatusOr<std::unique_ptr<SupervisedProcess>> SupervisedProcess::Start(
    std::string name, const std::vector<std::string>& argv, const std::string& log_path,
    ExitCallback on_unexpected_exit) {
  if (argv.empty() || argv[0].empty() || argv[0][0] != '/')
    return absl::InvalidArgumentError(absl::StrCat(name, ": argv[0] must be an absolute path"));
  // It dies with the daemon even when the daemon is killed (no orphan keeps the ports, sockets or namespace):
  // setpriv sets the parent-death signal and execs it, so the PID is still its own.
  std::vector<std::string> with_parent = {std::string(kSetprivBinary), "--pdeathsig", "TERM", "--"};
  with_parent.insert(with_parent.end(), argv.begin(), argv.end());
  absl::StatusOr<pid_t> pid = Spawn(with_parent, log_path);
  if (!pid.ok()) return absl::Status(pid.status().code(), absl::StrCat(name, ": ", pid.status().message()));
  std::unique_ptr<SupervisedProcess> p(
      new SupervisedProcess(std::move(name), *pid, std::move(on_unexpected_exit)));
  p->watcher_ = std::thread([raw = p.get()] { raw->Watch(); });
  return p;
}

void SupervisedProcess::Watch() {
  // Wait for the exit without reaping, so that Signal (under mu_) never targets a PID that was released.
  siginfo_t info{};
  while (waitid(P_PID, pid_, &info, WEXITED | WNOWAIT) != 0 && errno == EINTR) {
  }
  bool expected = false;
  int code = 0;
  {
    absl::MutexLock lock(&mu_);
    code = WaitChild(pid_);
    exit_code_ = code;
    expected = stopping_;
  }
  if (!expected && on_exit_) on_exit_(name_, pid_, code);
}

std::optional<int> SupervisedProcess::exit_code() const {
  absl::MutexLock lock(&mu_);
  return exit_code_;
}

absl::Status SupervisedProcess::Signal(int sig) {
  absl::MutexLock lock(&mu_);
  if (exit_code_.has_value())
    return absl::FailedPreconditionError(
        absl::StrCat(name_, " (pid ", pid_, ") exited with status ", *exit_code_));
  if (kill(pid_, sig) != 0)
    return absl::InternalError(
        absl::StrCat("signal ", sig, " to ", name_, " (pid ", pid_, "): ", std::strerror(errno)));
  return absl::OkStatus();
}

void SupervisedProcess::Stop(absl::Duration grace) {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    if (!exit_code_.has_value()) kill(pid_, SIGTERM);
    const absl::Condition exited(
        +[](std::optional<int>* code) { return code->has_value(); }, &exit_code_);
    if (!mu_.AwaitWithTimeout(exited, grace)) {
      kill(pid_, SIGKILL);
      mu_.Await(exited);
    }
  }
  if (watcher_.joinable()) watcher_.join();
}

SupervisedProcess::~SupervisedProcess() { Stop(absl::Seconds(5)); }

}  // namespace strongroom
