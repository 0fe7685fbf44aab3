#include "services/host_agent/container/apptainer.h"

#include <signal.h>

#include <fstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/subprocess.h"

namespace strongroom::host_agent {
namespace {

// Capability names by number (linux/capability.h), as apptainer spells them.
constexpr const char* kCapNames[] = {"CAP_CHOWN",
                                     "CAP_DAC_OVERRIDE",
                                     "CAP_DAC_READ_SEARCH",
                                     "CAP_FOWNER",
                                     "CAP_FSETID",
                                     "CAP_KILL",
                                     "CAP_SETGID",
                                     "CAP_SETUID",
                                     "CAP_SETPCAP",
                                     "CAP_LINUX_IMMUTABLE",
                                     "CAP_NET_BIND_SERVICE",
                                     "CAP_NET_BROADCAST",
                                     "CAP_NET_ADMIN",
                                     "CAP_NET_RAW",
                                     "CAP_IPC_LOCK",
                                     "CAP_IPC_OWNER",
                                     "CAP_SYS_MODULE",
                                     "CAP_SYS_RAWIO",
                                     "CAP_SYS_CHROOT",
                                     "CAP_SYS_PTRACE",
                                     "CAP_SYS_PACCT",
                                     "CAP_SYS_ADMIN",
                                     "CAP_SYS_BOOT",
                                     "CAP_SYS_NICE",
                                     "CAP_SYS_RESOURCE",
                                     "CAP_SYS_TIME",
                                     "CAP_SYS_TTY_CONFIG",
                                     "CAP_MKNOD",
                                     "CAP_LEASE",
                                     "CAP_AUDIT_WRITE",
                                     "CAP_AUDIT_CONTROL",
                                     "CAP_SETFCAP",
                                     "CAP_MAC_OVERRIDE",
                                     "CAP_MAC_ADMIN",
                                     "CAP_SYSLOG",
                                     "CAP_WAKE_ALARM",
                                     "CAP_BLOCK_SUSPEND",
                                     "CAP_AUDIT_READ",
                                     "CAP_PERFMON",
                                     "CAP_BPF",
                                     "CAP_CHECKPOINT_RESTORE"};

constexpr absl::Duration kTimeout = absl::Seconds(30);

class ApptainerRuntime : public Runtime {
 public:
  explicit ApptainerRuntime(ApptainerParams params) : a_(std::move(params)) {}
  std::string name() const override { return "apptainer"; }

  absl::Status Prepare(const ContainerParams& params, const std::string& bundle_dir) override {
    argv_ = ApptainerStartArgv(a_, params);
    std::ofstream(bundle_dir + "/apptainer.argv") << absl::StrJoin(argv_, "\n") << "\n";
    return absl::OkStatus();
  }

  absl::StatusOr<StartedContainer> Start(const std::string& id, const std::string& bundle_dir,
                                         const std::string& log_path, absl::Duration timeout) override {
    absl::StatusOr<RunResult> r = Run(argv_, timeout);
    if (!r.ok()) return r.status();
    if (r->exit_code != 0) return absl::InternalError(absl::StrCat("apptainer instance start: ", r->output));
    absl::StatusOr<RuntimeState> state = State(id);
    if (!state.ok()) return state.status();
    return StartedContainer{0, state->pid};
  }

  absl::StatusOr<RuntimeState> State(const std::string& id) override {
    absl::StatusOr<RunResult> r = Run(ApptainerListArgv(a_, id), kTimeout);
    if (!r.ok()) return r.status();
    RuntimeState s;
    const size_t at = r->output.find("\"pid\":");
    if (r->exit_code != 0 || at == std::string::npos) return s;
    s.exists = true;
    s.status = "running";
    int pid = 0;
    (void)absl::SimpleAtoi(
        absl::StripAsciiWhitespace(r->output.substr(at + 6, r->output.find_first_of(",}", at) - at - 6)),
        &pid);
    s.pid = pid;
    return s;
  }

  absl::Status Kill(const std::string& id, int signal, bool all) override {
    absl::StatusOr<RunResult> r = Run(ApptainerStopArgv(a_, id, signal), kTimeout);
    if (!r.ok()) return r.status();
    return absl::OkStatus();
  }

  absl::Status Delete(const std::string& id) override { return Kill(id, SIGKILL, true); }

 private:
  const ApptainerParams a_;        // binary, image and overlay
  std::vector<std::string> argv_;  // the start command built by Prepare
};

}  // namespace

std::string ApptainerDroppedCaps() {
  const uint64_t kept = KeptCapabilityMask();
  std::vector<std::string> dropped;
  for (int i = 0; i < static_cast<int>(sizeof kCapNames / sizeof kCapNames[0]); ++i) {
    if ((kept & (uint64_t{1} << i)) == 0) dropped.push_back(kCapNames[i]);
  }
  return absl::StrJoin(dropped, ",");
}

std::vector<std::string> ApptainerStartArgv(const ApptainerParams& a, const ContainerParams& p) {
  std::vector<std::string> argv;
  if (!p.netns_path.empty()) argv = {a.nsenter, "--net=" + p.netns_path, "--"};
  argv.insert(argv.end(),
              {a.binary, "instance", "start", "--fakeroot", "--contain", "--cleanenv", "--no-home",
               "--overlay", p.overlay_dir, "--hostname", p.hostname, "--drop-caps", ApptainerDroppedCaps()});
  if (p.netns_path.empty()) argv.insert(argv.end(), {"--net", "--network=none"});
  for (const std::string& e : p.env) argv.insert(argv.end(), {"--env", e});
  for (const BindMount& b : p.binds) {
    argv.insert(argv.end(), {"--bind", absl::StrCat(b.source, ":", b.destination, b.read_only ? ":ro" : "")});
  }
  if (!p.whole_node) {
    argv.insert(argv.end(), {"--cpus", std::to_string(p.cpus), "--memory", std::to_string(p.memory_bytes)});
  }
  argv.insert(argv.end(), {p.image_path, p.id});
  argv.insert(argv.end(), p.args.begin(), p.args.end());
  return argv;
}

std::vector<std::string> ApptainerStopArgv(const ApptainerParams& a, const std::string& id, int signal) {
  return {a.binary, "instance", "stop", "--signal", std::to_string(signal), id};
}

std::vector<std::string> ApptainerListArgv(const ApptainerParams& a, const std::string& id) {
  return {a.binary, "instance", "list", "--json", id};
}

std::unique_ptr<Runtime> MakeApptainerRuntime(ApptainerParams params) {
  return std::make_unique<ApptainerRuntime>(std::move(params));
}

}  // namespace strongroom::host_agent
