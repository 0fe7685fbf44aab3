#include "services/vm_controller/controlling_vm.h"

#include <signal.h>

#include "absl/strings/str_cat.h"
#include "common/charon_process.h"
#include "common/log.h"
#include "common/status.h"
#include "common/subprocess.h"
#include "services/vm_controller/nfs_server.h"

namespace strongroom {
namespace {

constexpr absl::Duration kIpTimeout = absl::Seconds(10);

absl::Status RunIp(const std::vector<std::string>& argv) {
  SR_ASSIGN_OR_RETURN(RunResult r, Run(argv, kIpTimeout));
  if (r.exit_code != 0)
    return absl::InternalError(absl::StrCat(argv[0], " ", argv[3], ": exit ", r.exit_code, ": ", r.output));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<ControllingVm>> ControllingVm::Start(const ControllingVmOptions& options,
                                                                    const ProjectCa& ca, AuditSink* audit) {
  // Whatever is started below is stopped by the destructor if a later step fails.
  std::unique_ptr<ControllingVm> vm(new ControllingVm(options, audit));
  auto on_exit = [raw = vm.get()](const std::string& name, pid_t pid, int code) {
    raw->Exited(name, pid, code);
  };
  if (absl::Status s = vm->StartCharon(ca, on_exit); !s.ok()) return Annotate(s, options.charon_context);
  if (absl::Status s = vm->StartGanesha(on_exit); !s.ok()) return Annotate(s, options.ganesha_context);
  return vm;
}

absl::Status ControllingVm::StartCharon(const ProjectCa& ca, const SupervisedProcess::ExitCallback& on_exit) {
  const ControllingVmOptions& options = options_;
  std::string vici_socket = options.external_vici_socket;
  if (!options.charon_binary.empty()) {
    SR_ASSIGN_OR_RETURN(CharonRun run,
                        PrepareCharon(options.charon_binary, options.charon_dir, options.ipsec_backend));
    for (const std::vector<std::string>& add : LibipsecBypassRuleCommands(options.ipsec_backend, "add")) {
      std::vector<std::string> del = add;
      del[3] = "del";
      (void)Run(del, kIpTimeout);  // one left by a vm-controller that was killed
      SR_RETURN_IF_ERROR(Annotate(RunIp(add), "charon's kernel-libipsec bypass rule"));
      std::vector<std::string> undo = add;
      undo[3] = "del";
      undo_commands_.push_back(std::move(undo));
    }
    // slurmctld keeps talking to a workload's slurmd for a moment after the job's end closed its tunnel (and
    // before IKE): without the SA's route or policy that would go out in the clear.
    const IpsecBackend b = options.ipsec_backend;
    for (const std::string& subnet : options.workload_subnets) {
      std::vector<std::vector<std::string>> adds = PlaintextGuardCommands(b, subnet, "add");
      std::vector<std::vector<std::string>> dels = PlaintextGuardCommands(b, subnet, "del");
      if (options.enrollment_port > 0) {
        for (auto& a : PlaintextGuardExceptionCommands(b, subnet, options.enrollment_port, "add"))
          adds.insert(adds.begin(), std::move(a));
        for (auto& d : PlaintextGuardExceptionCommands(b, subnet, options.enrollment_port, "del"))
          dels.push_back(std::move(d));
      }
      for (const auto& del : dels) (void)Run(del, kIpTimeout);  // left by a vm-controller that was killed
      for (const auto& add : adds) {
        SR_RETURN_IF_ERROR(Annotate(RunIp(add), "the plaintext guard for workload subnet " + subnet));
      }
      for (auto& del : dels) undo_commands_.push_back(std::move(del));
    }
    SR_ASSIGN_OR_RETURN(charon_, SupervisedProcess::Start("charon", run.argv, run.stdout_path, on_exit));
    SupervisedProcess* charon = charon_.get();
    SR_RETURN_IF_ERROR(WaitForCharon(
        run, [charon] { return !charon->running(); }, options.ready_timeout));
    vici_socket = run.settings.vici_socket;
    Log(LogLevel::kInfo, "charon started",
        {{"pid", absl::StrCat(charon->pid())},
         {"vici_socket", vici_socket},
         {"backend", std::string(IpsecBackendName(options.ipsec_backend))}});
  }
  if (!vici_socket.empty()) {
    SR_ASSIGN_OR_RETURN(tunnels_,
                        VmTunnels::Create(ca, vici_socket, options.ipsec_address, options.ipsec_backend));
  }
  return absl::OkStatus();
}

absl::Status ControllingVm::StartGanesha(const SupervisedProcess::ExitCallback& on_exit) {
  const ControllingVmOptions& options = options_;
  if (!options.ganesha_binary.empty()) {
    NfsServerSettings settings;
    settings.port = options.nfs_port;
    settings.exports.push_back(NfsExport{1, options.share_path, options.export_path, {}});
    SR_ASSIGN_OR_RETURN(GaneshaRun run,
                        PrepareGanesha(options.ganesha_binary, options.ganesha_dir, &settings));
    SR_ASSIGN_OR_RETURN(ganesha_,
                        SupervisedProcess::Start("nfs-ganesha", run.argv, run.stdout_path, on_exit));
    SupervisedProcess* ganesha = ganesha_.get();
    SR_RETURN_IF_ERROR(WaitForGanesha(
        run, ganesha->pid(), options.nfs_port, [ganesha] { return !ganesha->running(); },
        options.ready_timeout));
    absl::MutexLock lock(&mu_);
    // A dead ganesha serves nothing: its conf is still rewritten, the reload skipped (Health refuses grants).
    exports_ = std::make_unique<GaneshaExports>(
        run.conf_path,
        [ganesha]() -> absl::Status {
          return ganesha->running() ? ganesha->Signal(SIGHUP) : absl::OkStatus();
        },
        std::move(settings));
    Log(LogLevel::kInfo, "nfs-ganesha started",
        {{"pid", absl::StrCat(ganesha->pid())},
         {"conf", run.conf_path},
         {"port", absl::StrCat(options.nfs_port)}});
  }
  return absl::OkStatus();
}

void ControllingVm::Audit(const std::string& action, const std::string& object, const absl::Status& status,
                          std::map<std::string, std::string> details) {
  if (audit_ == nullptr) return;
  AuditEvent e;
  e.actor = "vm-controller";
  e.action = action;
  e.object = object;
  e.outcome = absl::StatusCodeToString(status.code());
  e.detail = std::string(status.message());
  e.details = std::move(details);
  audit_->Record(e);
}

void ControllingVm::Exited(const std::string& name, pid_t pid, int exit_code) {
  const absl::Status why =
      absl::UnavailableError(absl::StrCat(name, " (pid ", pid, ") exited with status ", exit_code,
                                          "; new handovers are refused until vm-controller is restarted"));
  Log(LogLevel::kError, "a process of the controlling VM exited", {{"error", std::string(why.message())}});
  Audit("controlling-vm/ProcessExited", absl::StrCat("process/", name), why,
        {{"pid", absl::StrCat(pid)}, {"exit_code", absl::StrCat(exit_code)}});
}

absl::Status ControllingVm::Health() const {
  for (const SupervisedProcess* p : {charon_.get(), ganesha_.get()}) {
    if (p == nullptr) continue;
    if (std::optional<int> code = p->exit_code(); code.has_value())
      return absl::FailedPreconditionError(
          absl::StrCat("the controlling VM's ", p->name(), " (pid ", p->pid(), ") exited with status ", *code,
                       "; no workload can be handed over until vm-controller "
                       "is restarted"));
  }
  return absl::OkStatus();
}

absl::Status ControllingVm::Open(const std::string& workload_id, const std::string& job_id,
                                 const std::string& workload_ip) {
  SR_RETURN_IF_ERROR(Health());
  absl::MutexLock lock(&mu_);
  Given& given = given_[workload_id];
  given.ip = workload_ip;
  const std::string object = absl::StrCat("workload/", workload_id);
  if (tunnels_ != nullptr) {
    absl::Status s = tunnels_->Add(workload_id, job_id, workload_ip);
    Audit("ipsec/LoadConnection", object, s, {{"address", workload_ip}, {"job", job_id}});
    SR_RETURN_IF_ERROR(s);
    given.tunnel = true;
  }
  if (exports_ != nullptr) {
    given.grant = true;  // before the attempt: a half-applied grant is revoked at the end
    absl::Status s = exports_->Grant(workload_ip);
    Audit("nfs/Grant", object, s, {{"address", workload_ip}, {"export", options_.export_path}});
    SR_RETURN_IF_ERROR(s);
  }
  return absl::OkStatus();
}

absl::Status ControllingVm::Close(const std::string& workload_id) {
  absl::MutexLock lock(&mu_);
  auto it = given_.find(workload_id);
  if (it == given_.end()) return absl::OkStatus();
  Given& given = it->second;
  const std::string object = absl::StrCat("workload/", workload_id);
  if (given.tunnel) {
    // A dead charon took the connection with it.
    absl::Status s =
        charon_ != nullptr && !charon_->running() ? absl::OkStatus() : tunnels_->Remove(workload_id);
    Audit("ipsec/UnloadConnection", object, s, {{"address", given.ip}});
    SR_RETURN_IF_ERROR(s);
    given.tunnel = false;
  }
  if (given.grant) {
    absl::Status s = exports_->Revoke(given.ip);
    Audit("nfs/Revoke", object, s, {{"address", given.ip}, {"export", options_.export_path}});
    SR_RETURN_IF_ERROR(s);
    given.grant = false;
  }
  given_.erase(it);
  return absl::OkStatus();
}

void ControllingVm::Stop() {
  if (ganesha_ != nullptr && ganesha_->running()) {
    ganesha_->Stop(options_.stop_grace);
    Log(LogLevel::kInfo, "nfs-ganesha stopped", {{"pid", absl::StrCat(ganesha_->pid())}});
  }
  if (charon_ != nullptr && charon_->running()) {
    charon_->Stop(options_.stop_grace);
    Log(LogLevel::kInfo, "charon stopped", {{"pid", absl::StrCat(charon_->pid())}});
  }
  // Also reaps a process that had exited on its own (its watcher is joined).
  if (ganesha_ != nullptr) ganesha_->Stop(options_.stop_grace);
  if (charon_ != nullptr) charon_->Stop(options_.stop_grace);
  for (const std::vector<std::string>& undo : undo_commands_) {
    if (absl::Status s = RunIp(undo); !s.ok())
      Log(LogLevel::kWarn, "cannot remove charon's bypass rule or plaintext guard", {{"error", s.ToString()}});
  }
  undo_commands_.clear();
}

ControllingVm::~ControllingVm() { Stop(); }

}  // namespace strongroom
