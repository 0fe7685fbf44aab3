// The OCI driver: `runc run` in the foreground as our child (it exits with the container's status), plus
// `runc state/kill/delete`, each an argv with a timeout.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "services/host_agent/container/runtime.h"
#include "common/subprocess.h"

namespace strongroom::host_agent {
namespace {

constexpr absl::Duration kCommandTimeout = absl::Seconds(20);

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string Tail(const std::string& text, size_t n = 2000) {
  return text.size() <= n ? text : text.substr(text.size() - n);
}

// True once `pid` has exited (without reaping it).
bool ChildExited(pid_t pid) {
  siginfo_t info{};
  return waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG | WNOWAIT) == 0 && info.si_pid == pid;
}

// The container's first process has exec'd the entrypoint once it is no longer "runc init".
bool Execed(pid_t pid) {
  const std::string cmdline = ReadAll(absl::StrCat("/proc/", pid, "/cmdline"));
  static const std::string kRuncInit("runc\0init\0", 10);
  return !cmdline.empty() && cmdline != kRuncInit;
}

class OciRuntime : public Runtime {
 public:
  OciRuntime(std::string name, std::string binary, std::string root)
      : name_(std::move(name)), binary_(std::move(binary)), root_(std::move(root)) {}

  std::string name() const override { return name_; }

  absl::Status Prepare(const ContainerParams& params, const std::string& bundle_dir) override {
    const std::string path = bundle_dir + "/config.json";
    std::ofstream out(path, std::ios::trunc);
    out << BuildOciConfig(params);
    out.close();
    if (!out) return absl::InternalError(absl::StrCat("cannot write ", path));
    return absl::OkStatus();
  }

  absl::StatusOr<StartedContainer> Start(const std::string& id, const std::string& bundle_dir,
                                         const std::string& log_path, absl::Duration timeout) override {
    const std::string pid_file = bundle_dir + "/init.pid";
    unlink(pid_file.c_str());
    absl::StatusOr<pid_t> child = Spawn({binary_, "--root", root_, "run", "--bundle", bundle_dir,
                                         "--pid-file", pid_file, "--no-new-keyring", id},
                                        log_path);
    if (!child.ok()) return child.status();
    StartedContainer started{*child, 0};
    const absl::Time deadline = absl::Now() + timeout;
    while (true) {
      if (started.init_pid == 0) {
        int pid = 0;
        if (absl::SimpleAtoi(ReadAll(pid_file), &pid) && pid > 0) started.init_pid = pid;
      }
      if (started.init_pid != 0 && Execed(started.init_pid)) return started;
      if (ChildExited(*child)) {
        const int code = WaitChild(*child);
        return absl::InternalError(absl::StrCat(name_, " run ", id, " exited ", code,
                                                " before the entrypoint ran: ", Tail(ReadAll(log_path))));
      }
      if (absl::Now() > deadline) {
        kill(-*child, SIGKILL);
        (void)Kill(id, SIGKILL, true);
        WaitChild(*child);
        return absl::DeadlineExceededError(absl::StrCat(name_, " run ", id, " did not start within ",
                                                        absl::FormatDuration(timeout), ": ",
                                                        Tail(ReadAll(log_path))));
      }
      absl::SleepFor(absl::Microseconds(500));
    }
  }

  absl::StatusOr<RuntimeState> State(const std::string& id) override {
    absl::StatusOr<RunResult> r = Run({binary_, "--root", root_, "state", id}, kCommandTimeout);
    if (!r.ok()) return r.status();
    RuntimeState state;
    if (r->exit_code != 0) return state;  // "container does not exist"
    state.exists = true;
    const std::string& j = r->output;
    if (size_t at = j.find("\"status\": \""); at != std::string::npos) {
      state.status = j.substr(at + 11, j.find('"', at + 11) - at - 11);
    }
    if (size_t at = j.find("\"pid\": "); at != std::string::npos) {
      int pid = 0;
      (void)absl::SimpleAtoi(j.substr(at + 7, j.find_first_of(",\n", at + 7) - at - 7), &pid);
      state.pid = pid;
    }
    return state;
  }

  absl::Status Kill(const std::string& id, int signal, bool all) override {
    std::vector<std::string> argv = {binary_, "--root", root_, "kill"};
    if (all) argv.push_back("--all");
    argv.push_back(id);
    argv.push_back(std::to_string(signal));
    absl::StatusOr<RunResult> r = Run(argv, kCommandTimeout);
    if (!r.ok()) return r.status();
    if (r->exit_code != 0 && !absl::StrContains(r->output, "does not exist") &&
        !absl::StrContains(r->output, "not running") &&
        !absl::StrContains(r->output, "process already finished")) {
      return absl::InternalError(absl::StrCat(name_, " kill ", id, ": ", Tail(r->output)));
    }
    return absl::OkStatus();
  }

  absl::Status Delete(const std::string& id) override {
    absl::StatusOr<RunResult> r = Run({binary_, "--root", root_, "delete", "--force", id}, kCommandTimeout);
    if (!r.ok()) return r.status();
    if (r->exit_code != 0 && !absl::StrContains(r->output, "does not exist")) {
      return absl::InternalError(absl::StrCat(name_, " delete ", id, ": ", Tail(r->output)));
    }
    return absl::OkStatus();
  }

 private:
  const std::string name_;    // "runc" or "crun"
  const std::string binary_;  // absolute path of the runtime
  const std::string root_;    // --root: the runtime's state directory, inside host-agent's state_dir
};

}  // namespace

std::unique_ptr<Runtime> MakeOciRuntime(std::string name, std::string binary, std::string root) {
  return std::make_unique<OciRuntime>(std::move(name), std::move(binary), std::move(root));
}

}  // namespace strongroom::host_agent
