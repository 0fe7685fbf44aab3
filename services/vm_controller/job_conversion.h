// Validation of vm-controller's requests and conversion of a Local Slurm job into the global job's resources.
// Pure functions with unit tests.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "services/vm_controller/slurm_records.h"
#include "strongroom/v1/vm_controller.pb.h"

namespace strongroom::vm_controller {

// INVALID_ARGUMENT naming the field for malformed input; FAILED_PRECONDITION for what v1 policy refuses
// (more than one node, GPUs, root). Exclusive and non-exclusive jobs are both accepted.
absl::Status ValidateConvertRequest(const v1::ConvertLocalJobRequest& request, const std::string& cluster);
absl::Status ValidateEndedRequest(const v1::LocalJobEndedRequest& request, const std::string& cluster);
absl::Status ValidateProvisionRequest(const v1::ProvisionWorkloadRequest& request, const std::string& cluster);

// The field rules (common/field_rules.h) for every resource: what the hook sent and what the Local Slurm recorded
// are both checked with it.
absl::Status ValidateResources(const v1::Resources& resources);

// The workload a job runs in: a whole-node container for an --exclusive job, a secure VM of the job's size
// for any other (no --exclusive, --exclusive=user/mcs, --oversubscribe). The only difference between the two
// paths.
v1::WorkloadKind WorkloadKindOf(bool exclusive);

// Per-node resources of the global job from what the Local Slurm recorded for the local one.
v1::Resources ResourcesFromSlurm(const SlurmJob& job);

bool IsValidToken(const std::string& token);
bool IsValidId(const std::string& id);

}  // namespace strongroom::vm_controller
