// Policy for CreateGlobalJob beyond syntax: who may create what, and the WorkloadSpec backend derives from
// the request and the project's configuration. Pure functions.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/identity.h"
#include "services/backend/backend_config.h"
#include "services/backend/ids.h"
#include "strongroom/v1/backend.pb.h"

namespace strongroom::backend {

// In this order: the caller's instance is the request's cluster (PERMISSION_DENIED), the project is
// configured (NOT_FOUND) and bound to that cluster (PERMISSION_DENIED), the job is single-node and GPU-free
// (FAILED_PRECONDITION; exclusive or not: the kind follows exclusive, ValidateCreateRequest), an image is
// known (INVALID_ARGUMENT), and every requested allowlist rule lies within the project's ceiling
// (PERMISSION_DENIED naming the rule).
absl::Status CheckCreatePolicy(const v1::CreateGlobalJobRequest& request, const BackendSettings& settings,
                               const Identity& caller);

// What a VM workload gets for a non-exclusive job: 1 node, the job's CPUs (at least 1), and the job's memory
// (rounded up to whole MiB) plus `vm_memory_overhead_mb` for the guest OS. Its Global job asks for exactly
// this.
v1::Resources VmResources(const v1::Resources& job, uint32_t vm_memory_overhead_mb);

// The spec the global job hands to host-agent: an exclusive job's CONTAINER on the whole node, or a
// non-exclusive job's VM with VmResources (whole_node false); the project's default image (for both kinds)
// when none is named, the requested allowlists plus what provisioning needs (egress to each slurmctld
// address, ingress from it to slurmd), and the provisioning bundle (dynamic node name, token feature,
// workload identity, munge key reference). With the project's ipsec_data_path, the provisioning rules are
// DataPathRules instead. `enrollment_address`: "HOST:PORT" of the cluster's vm-controller ("" if not
// configured). `enrollment_listener`: that vm-controller's enrollment listener ("" if not configured): the
// bundle's enrollment_address, and the allowlist's enrollment rule in place of `enrollment_address`.
v1::WorkloadSpec BuildWorkloadSpec(const v1::CreateGlobalJobRequest& request, const ProjectPolicy& project,
                                   const JobIds& ids, const std::string& trust_domain,
                                   const std::string& enrollment_address = "",
                                   uint32_t vm_memory_overhead_mb = kDefaultVmMemoryOverheadMb,
                                   const std::string& enrollment_listener = "");

// The secure data path's allowlist (issue 14): for each IPv4 slurmctld address, UDP 500 (IKE) and UDP 4500
// (IKE after NAT-T floating, and ESP in UDP: Strongroom always encapsulates, so one allowlist fits kernel ESP
// and kernel-libipsec alike) to it; TCP to the enrollment endpoint. No ingress rule: the controlling VM's
// traffic comes back as replies on the workload's own IKE flow (netd's connection tracking), and slurmctld ->
// slurmd runs inside the tunnel. Appended to `spec`.
void AddDataPathRules(const v1::CreateGlobalJobRequest& request, const std::string& enrollment_address,
                      v1::WorkloadSpec* spec);

}  // namespace strongroom::backend
