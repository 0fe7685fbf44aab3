#include "services/vm_controller/job_conversion.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/field_rules.h"
#include "common/status.h"

namespace strongroom::vm_controller {
namespace {

absl::Status CheckCluster(const v1::LocalJobKey& key, const std::string& cluster) {
  if (key.local_cluster() != cluster) {
    return InvalidField("local.local_cluster", key.local_cluster(),
                        absl::StrCat("is not this controller's cluster \"", cluster, "\""));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateResources(const v1::Resources& r) {
  SR_RETURN_IF_ERROR(CheckNodes("resources.nodes", r.nodes()));
  SR_RETURN_IF_ERROR(CheckCpus("resources.cpus", r.cpus()));
  SR_RETURN_IF_ERROR(CheckMemoryBytes("resources.memory_bytes", r.memory_bytes()));
  SR_RETURN_IF_ERROR(CheckGpus("resources.gpus", r.gpus()));
  if (r.has_time_limit()) {
    SR_RETURN_IF_ERROR(CheckTimeLimitSeconds("resources.time_limit", r.time_limit().seconds(),
                                             r.time_limit().nanos()));
  }
  return absl::OkStatus();
}

bool IsValidToken(const std::string& token) { return IsToken(token); }
bool IsValidId(const std::string& id) { return IsId(id); }

absl::Status ValidateConvertRequest(const v1::ConvertLocalJobRequest& request, const std::string& cluster) {
  SR_RETURN_IF_ERROR(CheckCluster(request.local(), cluster));
  SR_RETURN_IF_ERROR(CheckToken("local.token", request.local().token()));
  SR_RETURN_IF_ERROR(CheckUserName("user.name", request.user().name()));
  if (request.user().uid() == 0) {
    return absl::FailedPreconditionError("user.uid: jobs of root are not run in secure workloads");
  }
  SR_RETURN_IF_ERROR(CheckUid("user.uid", request.user().uid()));
  SR_RETURN_IF_ERROR(CheckGid("user.gid", request.user().gid()));
  SR_RETURN_IF_ERROR(CheckProject("project", request.project(), /*allow_empty=*/true));
  const v1::Resources& r = request.resources();
  SR_RETURN_IF_ERROR(ValidateResources(r));
  // Exclusive or not, the job takes the same path; only the workload's kind differs (WorkloadKindOf).
  if (r.nodes() > 1) {
    return absl::FailedPreconditionError(
        absl::StrCat("resources.nodes: ", r.nodes(), " nodes requested; jobs run on one node for now"));
  }
  if (r.gpus() > 0) return absl::FailedPreconditionError("resources.gpus: GPUs are not supported yet");
  if (request.script_path().size() > 4096) {
    return InvalidField("script_path", request.script_path(), "is longer than 4096 bytes");
  }
  if (request.work_dir().size() > 4096) return InvalidField("work_dir", request.work_dir(), "is longer than 4096 bytes");
  return absl::OkStatus();
}

absl::Status ValidateEndedRequest(const v1::LocalJobEndedRequest& request, const std::string& cluster) {
  if (absl::Status s = CheckCluster(request.local(), cluster); !s.ok()) return s;
  if (request.local().local_job_id() == 0 && request.local().token().empty()) {
    return absl::InvalidArgumentError("local: local_job_id or token is required");
  }
  if (!request.local().token().empty()) SR_RETURN_IF_ERROR(CheckToken("local.token", request.local().token()));
  SR_RETURN_IF_ERROR(CheckSlurmJobId("local.local_job_id", request.local().local_job_id(), false));
  if (request.end().kind() == v1::LOCAL_JOB_END_KIND_UNSPECIFIED) {
    return absl::InvalidArgumentError("end.kind: required");
  }
  return absl::OkStatus();
}

absl::Status ValidateProvisionRequest(const v1::ProvisionWorkloadRequest& request, const std::string& cluster) {
  if (absl::Status s = CheckCluster(request.local(), cluster); !s.ok()) return s;
  SR_RETURN_IF_ERROR(CheckToken("local.token", request.local().token()));
  for (const auto& [field, value] : {std::pair<const char*, const std::string&>{"global_job_id", request.global_job_id()},
                                     {"workload_id", request.workload_id()},
                                     {"node_name", request.node_name()}}) {
    if (!IsId(value)) return InvalidField(field, value, absl::StrCat("must match ", kIdPattern));
  }
  if (request.registration_timeout().seconds() < 0 || request.registration_timeout().seconds() > 600) {
    return InvalidField("registration_timeout", absl::StrCat(request.registration_timeout().seconds(), "s"),
                        "is not in 0..600 s");
  }
  return absl::OkStatus();
}

v1::WorkloadKind WorkloadKindOf(bool exclusive) {
  return exclusive ? v1::WORKLOAD_KIND_CONTAINER : v1::WORKLOAD_KIND_VM;
}

v1::Resources ResourcesFromSlurm(const SlurmJob& job) {
  v1::Resources resources;
  const uint32_t nodes = job.num_nodes == 0 ? 1 : job.num_nodes;
  resources.set_nodes(nodes);
  resources.set_cpus(std::max<uint32_t>((job.num_cpus + nodes - 1) / nodes, 1));
  resources.set_memory_bytes(job.memory_bytes_per_node);
  if (job.time_limit_seconds > 0) resources.mutable_time_limit()->set_seconds(job.time_limit_seconds);
  return resources;
}

}  // namespace strongroom::vm_controller
