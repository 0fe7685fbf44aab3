#include "services/vm_controller/vm_tunnels.h"

#include "absl/strings/str_cat.h"
#include "common/ipsec_session.h"
#include "common/status.h"
#include "common/vici.h"

namespace strongroom {
namespace {

constexpr absl::Duration kViciTimeout = absl::Seconds(10);

}  // namespace

absl::StatusOr<std::unique_ptr<VmTunnels>> VmTunnels::Create(const ProjectCa& ca, std::string vici_socket,
                                                             std::string vm_ip, IpsecBackend backend) {
  SR_ASSIGN_OR_RETURN(EcKey key, EcKey::Generate());
  absl::Time now = absl::Now();
  SR_ASSIGN_OR_RETURN(std::string cert,
                      ca.IssueForKey(key, CertBinding{ca.project(), "controlling-vm", "project", vm_ip,
                                                      now - absl::Minutes(1), now + absl::Hours(24 * 30)}));
  SR_ASSIGN_OR_RETURN(ViciClient vici, ViciClient::Connect(vici_socket, kViciTimeout));
  SR_RETURN_IF_ERROR(Annotate(LoadIdentity(vici, key, cert), "controlling VM IPsec identity"));
  return std::unique_ptr<VmTunnels>(new VmTunnels(std::move(vici_socket), std::move(vm_ip), backend,
                                                  std::move(cert), ca.cert_pem(), ca.project()));
}

absl::Status VmTunnels::Add(const std::string& workload_id, const std::string& job_id,
                            const std::string& workload_ip) {
  absl::MutexLock lock(&mu_);
  SR_ASSIGN_OR_RETURN(ViciClient vici, ViciClient::Connect(vici_socket_, kViciTimeout));
  const TunnelSpec spec = VmSideTunnel(WorkloadTunnelEnds{project_, job_id, workload_id, workload_ip, vm_ip_},
                                       cert_pem_, ca_pem_, backend_);
  return Annotate(LoadTunnel(vici, spec), absl::StrCat("VM side of workload ", workload_id));
}

absl::Status VmTunnels::Remove(const std::string& workload_id) {
  absl::MutexLock lock(&mu_);
  SR_ASSIGN_OR_RETURN(ViciClient vici, ViciClient::Connect(vici_socket_, kViciTimeout));
  SR_ASSIGN_OR_RETURN(TunnelState st, GetTunnelState(vici, workload_id));
  if (st.ike_established || st.child_installed) {
    ViciMessage t;
    t.Set("ike", workload_id);
    t.Set("timeout", "5000");
    t.Set("force", "yes");
    SR_RETURN_IF_ERROR(
        Annotate(vici.CallChecked("terminate", t), absl::StrCat("terminating workload ", workload_id)));
  }
  ViciMessage u;
  u.Set("name", workload_id);
  absl::Status s = vici.CallChecked("unload-conn", u);
  if (!s.ok() && s.code() != absl::StatusCode::kFailedPrecondition) return s;  // not loaded: already gone
  return absl::OkStatus();
}

}  // namespace strongroom
