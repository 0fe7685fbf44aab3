#include "services/backend/job_policy.h"

#include <algorithm>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "services/backend/validation.h"

namespace strongroom::backend {
namespace {

constexpr uint32_t kSlurmdPort = 6818;
constexpr uint64_t kMiB = uint64_t{1} << 20;
constexpr char kStrongroomNodeFeature[] = "strongroom";

absl::Status CheckWithinCeiling(const std::string& field, const std::string& cidr,
                                const std::vector<std::string>& ceiling, const std::string& project) {
  absl::StatusOr<Ipv4Cidr> rule = ParseIpv4Cidr(cidr);
  if (!rule.ok()) return InvalidField(field, cidr, rule.status().message());
  for (const std::string& allowed : ceiling) {
    absl::StatusOr<Ipv4Cidr> bound = ParseIpv4Cidr(allowed);
    if (bound.ok() && bound->Contains(*rule)) return absl::OkStatus();
  }
  return absl::PermissionDeniedError(
      absl::StrCat(field, ": ", cidr, " is outside project ", project, "'s allowlist ceiling"));
}

// The IPv4 literal and port of "a.b.c.d:port", if it is one.
bool Ipv4HostPort(const std::string& address, std::string* ip, uint32_t* port) {
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos) return false;
  *ip = address.substr(0, colon);
  return ParseIpv4Cidr(*ip).ok() && absl::SimpleAtoi(address.substr(colon + 1), port);
}

}  // namespace

absl::Status CheckCreatePolicy(const v1::CreateGlobalJobRequest& r, const BackendSettings& settings,
                               const Identity& caller) {
  const std::string& cluster = r.local().local_cluster();
  if (caller.role == Role::kVmController && caller.instance != cluster) {
    return absl::PermissionDeniedError(
        absl::StrCat("vm-controller ", caller.instance, " may not create jobs for cluster ", cluster));
  }
  auto project = settings.projects.find(r.project());
  if (project == settings.projects.end()) {
    return absl::NotFoundError(absl::StrCat("project ", r.project(), " is not configured in backend"));
  }
  const ProjectPolicy& policy = project->second;
  if (std::find(policy.local_clusters.begin(), policy.local_clusters.end(), cluster) ==
      policy.local_clusters.end()) {
    return absl::PermissionDeniedError(
        absl::StrCat("project ", r.project(), " is not bound to cluster ", cluster));
  }
  // Exclusive jobs run in a whole-node container, the others in a VM (WorkloadKindFor); ValidateCreateRequest
  // refused a workload_kind that contradicts exclusive.
  if (r.resources().nodes() > 1) {
    return absl::FailedPreconditionError(
        absl::StrCat("resources.nodes is ", r.resources().nodes(), ": v1 runs single-node jobs only"));
  }
  if (r.resources().gpus() > 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("resources.gpus is ", r.resources().gpus(), ": GPU passthrough is not built yet"));
  }
  if (r.image().name().empty() && policy.default_image.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("image.name: required (project ", r.project(), " has no default image)"));
  }
  if (policy.ipsec_data_path) {
    // Nothing the user asks for may reach the controlling VM outside the tunnel.
    for (const std::string& address : r.slurmctld_addresses()) {
      std::string ip;
      uint32_t port = 0;
      if (!Ipv4HostPort(address, &ip, &port)) continue;
      absl::StatusOr<Ipv4Cidr> vm = ParseIpv4Cidr(ip);
      for (int i = 0; vm.ok() && i < r.egress_allowlist_size(); ++i) {
        absl::StatusOr<Ipv4Cidr> rule = ParseIpv4Cidr(r.egress_allowlist(i).destination_cidr());
        if (rule.ok() && rule->Contains(*vm))
          return absl::PermissionDeniedError(absl::StrCat(
              "egress_allowlist[", i, "].destination_cidr: ", r.egress_allowlist(i).destination_cidr(),
              " reaches the controlling VM ", ip, ", which project ", r.project(),
              " reaches only through IPsec"));
      }
      for (int i = 0; vm.ok() && i < r.ingress_allowlist_size(); ++i) {
        absl::StatusOr<Ipv4Cidr> rule = ParseIpv4Cidr(r.ingress_allowlist(i).source_cidr());
        if (rule.ok() && rule->Contains(*vm))
          return absl::PermissionDeniedError(
              absl::StrCat("ingress_allowlist[", i, "].source_cidr: ", r.ingress_allowlist(i).source_cidr(),
                           " lets the controlling VM ", ip, " in outside IPsec (project ", r.project(), ")"));
      }
    }
  }
  for (int i = 0; i < r.egress_allowlist_size(); ++i) {
    SR_RETURN_IF_ERROR(CheckWithinCeiling(absl::StrCat("egress_allowlist[", i, "].destination_cidr"),
                                          r.egress_allowlist(i).destination_cidr(), policy.egress_ceiling,
                                          r.project()));
  }
  for (int i = 0; i < r.ingress_allowlist_size(); ++i) {
    SR_RETURN_IF_ERROR(CheckWithinCeiling(absl::StrCat("ingress_allowlist[", i, "].source_cidr"),
                                          r.ingress_allowlist(i).source_cidr(), policy.ingress_ceiling,
                                          r.project()));
  }
  return absl::OkStatus();
}

void AddDataPathRules(const v1::CreateGlobalJobRequest& r, const std::string& enrollment_address,
                      v1::WorkloadSpec* spec) {
  auto add = [spec](const std::string& ip, v1::Protocol protocol, uint32_t port, const char* why) {
    v1::EgressRule* out = spec->add_egress_allowlist();
    out->set_destination_cidr(ip + "/32");
    out->set_protocol(protocol);
    out->set_port_start(port);
    out->set_description(why);
  };
  for (const std::string& address : r.slurmctld_addresses()) {
    std::string ip;
    uint32_t port = 0;
    if (!Ipv4HostPort(address, &ip, &port)) continue;
    add(ip, v1::PROTOCOL_UDP, 500, "IKE -> controlling VM (added by backend)");
    add(ip, v1::PROTOCOL_UDP, 4500, "IKE NAT-T and ESP-in-UDP -> controlling VM (added by backend)");
  }
  std::string ip;
  uint32_t port = 0;
  if (Ipv4HostPort(enrollment_address, &ip, &port))
    add(ip, v1::PROTOCOL_TCP, port, "enrollment -> vm-controller (added by backend)");
}

v1::Resources VmResources(const v1::Resources& job, uint32_t vm_memory_overhead_mb) {
  v1::Resources vm = job;
  vm.set_nodes(1);
  vm.set_cpus(std::max<uint32_t>(job.cpus(), 1));
  // Whole MiB, as Slurm counts: the Global job's --mem is exactly this.
  const uint64_t job_mib = (job.memory_bytes() + kMiB - 1) / kMiB;
  vm.set_memory_bytes((job_mib + vm_memory_overhead_mb) * kMiB);
  return vm;
}

v1::WorkloadSpec BuildWorkloadSpec(const v1::CreateGlobalJobRequest& r, const ProjectPolicy& project,
                                   const JobIds& ids, const std::string& trust_domain,
                                   const std::string& enrollment_address, uint32_t vm_memory_overhead_mb,
                                   const std::string& enrollment_listener) {
  v1::WorkloadSpec spec;
  spec.set_workload_id(ids.workload_id);
  spec.set_kind(WorkloadKindFor(r.exclusive()));
  // The same image name for both kinds: host-agent's catalog holds <name>.squashfs and the VM's boot files.
  spec.mutable_image()->set_name(r.image().name().empty() ? project.default_image : r.image().name());
  spec.mutable_image()->set_digest(r.image().digest());
  if (r.exclusive()) {
    *spec.mutable_resources() = r.resources();
    spec.set_whole_node(true);
  } else {
    *spec.mutable_resources() = VmResources(r.resources(), vm_memory_overhead_mb);
    spec.set_whole_node(false);
  }
  v1::JobRef* job = spec.mutable_job();
  job->set_global_job_id(ids.global_job_id);
  *job->mutable_local() = r.local();
  *job->mutable_user() = r.user();
  job->set_project(r.project());
  *spec.mutable_egress_allowlist() = r.egress_allowlist();
  *spec.mutable_ingress_allowlist() = r.ingress_allowlist();
  if (project.ipsec_data_path)
    AddDataPathRules(r, enrollment_listener.empty() ? enrollment_address : enrollment_listener, &spec);
  // The plaintext path: slurmd <-> slurmctld directly.
  for (const std::string& address : r.slurmctld_addresses()) {
    if (project.ipsec_data_path) break;
    std::string ip;
    uint32_t port = 0;
    // DNS names cannot be expressed as CIDR rules; such addresses need a rule in the request.
    if (!Ipv4HostPort(address, &ip, &port)) continue;
    v1::EgressRule* out = spec.add_egress_allowlist();
    out->set_destination_cidr(ip + "/32");
    out->set_protocol(v1::PROTOCOL_TCP);
    out->set_port_start(port);
    out->set_description("slurmd -> Local slurmctld (added by backend)");
    v1::IngressRule* in = spec.add_ingress_allowlist();
    in->set_source_cidr(ip + "/32");
    in->set_protocol(v1::PROTOCOL_TCP);
    in->set_port_start(kSlurmdPort);
    in->set_description("Local slurmctld -> slurmd (added by backend)");
  }
  *spec.mutable_scratch() = r.scratch();
  v1::ProvisioningBundle* bundle = spec.mutable_provisioning();
  bundle->set_local_cluster(r.local().local_cluster());
  *bundle->mutable_slurmctld_addresses() = r.slurmctld_addresses();
  bundle->set_node_name(ids.local_node_name);
  bundle->set_munge_socket(r.local_munge_socket());
  bundle->set_enrollment_address(enrollment_listener);  // where the workload enrolls (docs/IPSEC.md)
  bundle->set_ipsec_data_path(project.ipsec_data_path);
  // Every workload's node carries "strongroom" (the Local Slurm's nodeset for Strongroom nodes selects it:
  // Nodeset=strongroom Feature=strongroom) and the job's token (vm-controller pins the job to it).
  bundle->add_features(kStrongroomNodeFeature);
  bundle->add_features(r.local().token());
  v1::Identity* identity = bundle->mutable_identity();
  identity->set_spiffe_id(absl::StrCat("spiffe://", trust_domain, "/workload/", ids.workload_id));
  identity->set_trust_domain(trust_domain);
  identity->set_role(v1::ROLE_WORKLOAD);
  identity->set_instance(ids.workload_id);
  bundle->mutable_slurm_auth_ref()->set_uri(absl::StrCat("vmc://", r.local().local_cluster(), "/munge-key"));
  return spec;
}

}  // namespace strongroom::backend
