// A child process a daemon owns for its whole life (vm-controller's charon and nfs-ganesha on the controlling
// VM): started with common/subprocess.h's Spawn (argv vector, its own session, output appended to a log),
// watched by a thread that notices its exit at once, and stopped with SIGTERM and, after a grace period,
// SIGKILL, sent to its PID only. The PID is signalled only while it is not reaped (the watcher reaps under
// the same lock), so a reused PID is never hit. It also gets SIGTERM when the daemon dies without stopping it
// (SIGKILL, a crash): it is started through `setpriv --pdeathsig TERM`, which execs it (same PID). The parent
// death signal follows the thread that started it: start it from a thread that lives as long as the daemon
// (vm-controller: the main thread).
//
//   SR_ASSIGN_OR_RETURN(auto charon, SupervisedProcess::Start("charon", argv, dir + "/stdout.log", on_exit));
//   ...
//   charon->Stop(absl::Seconds(5));   // also done by the destructor
#pragma once

#include <sys/types.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace strongroom {

inline constexpr absl::string_view kSetprivBinary = "/usr/bin/setpriv";  // util-linux

class SupervisedProcess {
 public:
  // Called on the watcher thread when the process exits while nobody stopped it (`exit_code`: 0..255, 128+N
  // for signal N). Must not call Stop.
  using ExitCallback = std::function<void(const std::string& name, pid_t pid, int exit_code)>;

  static absl::StatusOr<std::unique_ptr<SupervisedProcess>> Start(std::string name,
                                                                  const std::vector<std::string>& argv,
                                                                  const std::string& log_path,
                                                                  ExitCallback on_unexpected_exit);
  SupervisedProcess(const SupervisedProcess&) = delete;
  SupervisedProcess& operator=(const SupervisedProcess&) = delete;
  ~SupervisedProcess();  // Stop(5 s)

  const std::string& name() const { return name_; }
  pid_t pid() const { return pid_; }
  // Empty while it runs; then its exit code.
  std::optional<int> exit_code() const;
  bool running() const { return !exit_code().has_value(); }
  // Sends `sig` while it runs; FAILED_PRECONDITION naming it once it has exited.
  absl::Status Signal(int sig);
  // SIGTERM, then SIGKILL after `grace`; returns once it is reaped. Idempotent; no exit callback.
  void Stop(absl::Duration grace);

 private:
  SupervisedProcess(std::string name, pid_t pid, ExitCallback on_exit)
      : name_(std::move(name)), pid_(pid), on_exit_(std::move(on_exit)) {}
  void Watch();

  const std::string name_;  // in logs and errors, e.g. "charon"
  const pid_t pid_;         // ours until exit_code_ is set (reaped)
  const ExitCallback on_exit_;
  mutable absl::Mutex mu_;  // orders signals against reaping
  std::optional<int> exit_code_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;  // Stop was called: the exit is expected
  std::thread watcher_;                         // runs Watch() until the process is reaped
};

}  // namespace strongroom
