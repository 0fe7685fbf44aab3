#include "services/workload_enroll/workload_tunnel.h"

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/status.h"
#include "common/subprocess.h"
#include "common/vici.h"

namespace strongroom::workload_enroll {
namespace {

constexpr absl::Duration kIpTimeout = absl::Seconds(10);

absl::Status RunIp(const std::vector<std::string>& argv, absl::string_view what) {
  SR_ASSIGN_OR_RETURN(RunResult r, Run(argv, kIpTimeout));
  if (r.exit_code == 0) return absl::OkStatus();
  std::string command;
  for (const std::string& a : argv) absl::StrAppend(&command, command.empty() ? "" : " ", a);
  return absl::InternalError(absl::StrCat(what, ": ", command, " exited ", r.exit_code, ": ", r.output));
}

}  // namespace

absl::StatusOr<CharonRun> PrepareWorkloadCharon(const std::string& dir, IpsecBackend backend,
                                                const std::string& charon_binary) {
  absl::StatusOr<CharonRun> run = PrepareCharon(charon_binary, dir, backend, CharonRunDir::kOwnRun);
  if (!run.ok()) return Annotate(run.status(), "writing charon's strongswan.conf");
  // A stale rule (an entrypoint restarted in the same namespace) is deleted first; "del" of a missing rule
  // fails and is ignored.
  for (const std::vector<std::string>& argv : LibipsecBypassRuleCommands(backend, "del")) {
    (void)Run(argv, kIpTimeout);
  }
  for (const std::vector<std::string>& argv : LibipsecBypassRuleCommands(backend, "add")) {
    SR_RETURN_IF_ERROR(RunIp(argv, "kernel-libipsec bypass rule"));
  }
  return std::move(*run);
}

std::string CharonEnv(const CharonRun& run) {
  return absl::StrCat("IPSEC_BACKEND=", IpsecBackendName(run.settings.backend),
                      "\nSTRONGSWAN_CONF=", run.conf_path, "\nVICI_SOCKET=", run.settings.vici_socket,
                      "\nCHARON_LOG=", run.settings.log_path, "\n");
}

absl::StatusOr<TunnelSpec> WorkloadTunnelSpec(const EnrolledWorkload& e, const TunnelOptions& o) {
  if (e.ipsec_address.empty())
    return absl::FailedPreconditionError(
        "GetProjectSecrets gave no ipsec_address: vm-controller has no IPsec responder (enrollment { ipsec } "
        "or "
        "ipsec_address) for this project");
  if (e.key == nullptr) return absl::FailedPreconditionError("the enrolled key is not held in memory");
  absl::StatusOr<CertBinding> read = ReadBinding(e.cert_pem);
  if (!read.ok()) return Annotate(read.status(), "the project certificate");
  const CertBinding& binding = *read;
  if (binding.workload_id != o.workload_id || binding.job_id != o.global_job_id ||
      binding.project != o.project)
    return absl::FailedPreconditionError(absl::StrCat("the project certificate binds ", binding.project, "/",
                                                      binding.job_id, "/", binding.workload_id, ", not ",
                                                      o.project, "/", o.global_job_id, "/", o.workload_id));
  return WorkloadSideTunnel(
      WorkloadTunnelEnds{o.project, o.global_job_id, o.workload_id, binding.ip, e.ipsec_address}, e.cert_pem,
      e.project_ca_pem, o.backend);
}

absl::StatusOr<WorkloadTunnel> BringUpWorkloadTunnel(const EnrolledWorkload& e, const TunnelOptions& o) {
  WorkloadTunnel out;
  SR_ASSIGN_OR_RETURN(out.spec, WorkloadTunnelSpec(e, o));
  // The entrypoint has just started charon: wait (bounded) until it answers.
  absl::StatusOr<ViciClient> connected = absl::UnavailableError("not tried");
  const absl::Time deadline = absl::Now() + o.charon_wait;
  while (true) {
    // Each call's deadline outlasts charon's own initiate timeout, so its answer is never left behind.
    connected = ViciClient::Connect(o.vici_socket, o.timeout + absl::Seconds(10));
    if (connected.ok()) {
      absl::StatusOr<ViciMessage> version = connected->Call("version", ViciMessage());
      if (version.ok()) break;
      connected = version.status();
    }
    if (absl::Now() > deadline)
      return Annotate(connected.status(),
                      absl::StrCat("charon's VICI socket ", o.vici_socket, " did not answer within ",
                                   absl::FormatDuration(o.charon_wait)));
    absl::SleepFor(absl::Milliseconds(50));
  }
  ViciClient& vici = *connected;
  // From here on nothing of this workload reaches the controlling VM in the clear, not before the CHILD_SA
  // is installed and not after it goes (the VM deletes it at the job's end while slurmd and the entrypoint
  // may still talk to slurmctld): without the tunnel's route or policy, traffic to the VM is refused here.
  const std::string remote = out.spec.remote_ip + "/32";
  for (const std::vector<std::string>& argv : PlaintextGuardCommands(o.backend, remote, "del")) {
    (void)Run(argv, kIpTimeout);  // a stale one (an entrypoint restarted in this namespace)
  }
  for (const std::vector<std::string>& argv : PlaintextGuardCommands(o.backend, remote, "add")) {
    SR_RETURN_IF_ERROR(RunIp(argv, "no plaintext to the controlling VM"));
  }
  absl::Status up = LoadIdentity(vici, *e.key, e.cert_pem);
  if (up.ok()) up = LoadTunnel(vici, out.spec);
  if (up.ok())
    up = Annotate(BringUpTunnel(vici, out.spec.name, o.timeout),
                  absl::StrCat(out.spec.local_ip, " to the controlling VM ", out.spec.remote_ip));
  if (up.ok()) {
    absl::StatusOr<TunnelState> st = GetTunnelState(vici, out.spec.name);
    if (!st.ok()) {
      up = Annotate(st.status(), "reading the tunnel's state");
    } else if (!st->child_installed || !st->udp_encapsulated) {
      up = absl::InternalError(absl::StrCat("tunnel ", out.spec.name,
                                            ": no installed, UDP-encapsulated CHILD_SA "
                                            "after initiate (installed=",
                                            st->child_installed, " encap=", st->udp_encapsulated, ")"));
    } else {
      out.state = *st;
    }
  }
  if (!up.ok()) {
    // Nothing of ours stays in charon (the key above all): a half-open IKE_SA (CONNECTING, still
    // retransmitting) is not seen by TearDownTunnel, so terminate it by name first.
    // A fresh connection: the failed call may have left the first one mid-conversation.
    absl::StatusOr<ViciClient> fresh = ViciClient::Connect(o.vici_socket, absl::Seconds(10));
    if (!fresh.ok())
      return absl::Status(
          up.code(),
          absl::StrCat(up.message(), "; and charon could not be reached to remove what was loaded: ",
                       fresh.status().message()));
    ViciMessage t;
    t.Set("ike", out.spec.name);
    t.Set("timeout", "2000");
    t.Set("force", "yes");
    (void)fresh->CallChecked("terminate", t);
    if (absl::Status down = TearDownTunnel(*fresh, out.spec.name); !down.ok())
      return absl::Status(
          up.code(), absl::StrCat(up.message(), "; and removing what was loaded failed: ", down.message()));
    return up;
  }
  return out;
}

absl::Status WriteTunnelEnv(const WorkloadTunnel& t, const std::string& dir) {
  return WriteFileAtomically(
      dir, "tunnel.env",
      absl::StrCat("TUNNEL_NAME=", t.spec.name, "\nTUNNEL_LOCAL=", t.spec.local_ip,
                   "\nTUNNEL_REMOTE=", t.spec.remote_ip, "\nIPSEC_BACKEND=", IpsecBackendName(t.spec.backend),
                   "\nTUNNEL_ESP=", t.state.encryption, "\n"),
      0644);
}

}  // namespace strongroom::workload_enroll
