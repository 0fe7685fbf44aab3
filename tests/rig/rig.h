// A C++ handle on tests/rig/rig.sh: each service under test runs as its own "host" (network
// namespace, hostname, IP on a test bridge), with real TCP between hosts.
//
//   SR_ASSIGN_OR_RETURN(std::unique_ptr<Rig> rig, Rig::Create(RigShPath()));
//   SR_RETURN_IF_ERROR(rig->AddHost("backend", "198.51.100.10/24"));
//   SR_ASSIGN_OR_RETURN(pid_t pid, rig->Spawn("backend", log, {"/path/to/backend", "--flag"}));
//   SR_ASSIGN_OR_RETURN(Rig::ExecResult r, rig->Exec("netd", {"/bin/true"}, absl::Seconds(5)));
//
// The state lives in a fresh directory under /tmp/strongroom-rig/ (mode 0700). The destructor
// tears everything down; if the test process crashes instead, `rig.sh sweep
// /tmp/strongroom-rig` (a ctest cleanup fixture) removes rigs whose owner process is gone.
// rig.sh is always run through posix_spawn with an argv vector (never a shell string), in its
// own process group, with a timeout after which that group is killed.
#pragma once

#include <sys/types.h>

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace strongroom {

class Rig {
 public:
  // Where Create() puts state directories, and what `rig.sh sweep` should be given.
  static constexpr absl::string_view kDefaultRoot = "/tmp/strongroom-rig";

  struct ExecResult {
    int exit_code = 0;   // the command's exit status; 128+N if it died from signal N
    std::string output;  // stdout and stderr, interleaved
  };

  // Brings up an empty rig (the switch namespace). The calling process becomes the rig's
  // owner. `root` is created with mode 0700 if missing and must not be group/world-writable.
  static absl::StatusOr<std::unique_ptr<Rig>> Create(std::string rig_sh_path,
                                                     const std::string& root = std::string(kDefaultRoot));

  // Tears down every rig under `root` whose owner process has died.
  static absl::Status Sweep(const std::string& rig_sh_path,
                            const std::string& root = std::string(kDefaultRoot));

  Rig(const Rig&) = delete;
  Rig& operator=(const Rig&) = delete;
  ~Rig();  // calls Down(); reports (does not throw) a failure on stderr

  // Adds host `name` (^[a-z0-9][a-z0-9.-]{0,62}$) with eth0 address `ip_cidr`, e.g.
  // "198.51.100.10/24".
  absl::Status AddHost(absl::string_view name, absl::string_view ip_cidr);

  // Starts argv (argv[0] an absolute path or a name on PATH) in the background on `host`, in
  // its own session/process group, stdout+stderr appended to `log_path`. Returns its PID.
  absl::StatusOr<pid_t> Spawn(absl::string_view host, absl::string_view log_path,
                              const std::vector<std::string>& argv);

  // Runs argv on `host` in the foreground and waits for it. Returns DeadlineExceeded (and
  // kills it) if it runs longer than `timeout`. A non-zero exit of the command is not an error:
  // look at exit_code.
  absl::StatusOr<ExecResult> Exec(absl::string_view host, const std::vector<std::string>& argv,
                                  absl::Duration timeout);

  // Sends `sig` to a PID returned by Spawn (that process only, like kill(2)).
  absl::Status Kill(pid_t pid, int sig);

  // Stops a PID returned by Spawn together with its process group: SIGTERM, then SIGKILL
  // after 3 s. Waits until the group is gone.
  absl::Status Stop(pid_t pid);

  // Stops all spawned processes, deletes all namespaces and removes state_dir() with
  // everything in it. Idempotent.
  absl::Status Down();

  // The IP address (no prefix) of a host added with AddHost, or "" if there is no such host.
  std::string Ip(absl::string_view host) const;

  // The network namespace name of `host` (under /run/netns), for `ip -n`; "" if unknown.
  std::string Netns(absl::string_view host) const;

  const std::string& state_dir() const { return state_dir_; }
  const std::string& id() const { return id_; }

 private:
  Rig(std::string rig_sh_path, std::string state_dir, std::string id);

  // Runs `rig.sh <args...>` with a timeout. A non-zero exit becomes an error naming the
  // command and carrying rig.sh's message.
  absl::StatusOr<std::string> RunRigSh(const std::vector<std::string>& args, absl::Duration timeout) const;

  const std::string rig_sh_path_;  // the rig.sh every call runs
  const std::string state_dir_;    // STATE: unique per rig, under the root given to Create
  const std::string id_;           // the rig id from STATE/id; names netns sr<id>-*

  mutable std::mutex mu_;                   // guards the members below
  std::map<std::string, std::string> ips_;  // host name -> IP, filled by AddHost
  bool down_ = false;                       // Down() has succeeded; later calls are no-ops
};

// Runs argv[0] (a path; no PATH search) with argv, stdin from /dev/null, stdout and stderr
// captured together, in a new process group with a clean signal mask. On timeout the whole
// process group is SIGKILLed and DeadlineExceeded is returned with the output so far.
// Used by Rig; exposed for tests.
absl::StatusOr<Rig::ExecResult> RunWithTimeout(const std::vector<std::string>& argv, absl::Duration timeout);

}  // namespace strongroom
