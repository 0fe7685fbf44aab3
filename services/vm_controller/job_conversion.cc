#include "services/vm_controller/job_conversion.h"

#include "absl/strings/str_cat.h"

namespace strongroom::vm_controller {
namespace {

bool IsLowerAlnum(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }

// ^[a-z0-9][a-z0-9-]{min_rest,max_rest}$ (common.proto's ID and TOKEN).
bool MatchesIdPattern(const std::string& s, size_t min_rest, size_t max_rest) {
  if (s.size() < 1 + min_rest || s.size() > 1 + max_rest || !IsLowerAlnum(s[0])) return false;
  for (char c : s) {
    if (!IsLowerAlnum(c) && c != '-') return false;
  }
  return true;
}

bool IsValidUserName(const std::string& name) {
  if (name.empty() || name.size() > 32) return false;
  if (!((name[0] >= 'a' && name[0] <= 'z') || name[0] == '_')) return false;
  for (char c : name) {
    if (!IsLowerAlnum(c) && c != '_' && c != '.' && c != '-') return false;
  }
  return true;
}

absl::Status Invalid(absl::string_view field, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", why));
}

absl::Status CheckCluster(const v1::LocalJobKey& key, const std::string& cluster) {
  if (key.local_cluster() != cluster) {
    return Invalid("local.local_cluster",
                   absl::StrCat("\"", key.local_cluster(), "\" is not this controller's cluster \"", cluster, "\""));
  }
  return absl::OkStatus();
}

}  // namespace

bool IsValidToken(const std::string& token) { return MatchesIdPattern(token, 7, 62); }
bool IsValidId(const std::string& id) { return MatchesIdPattern(id, 0, 62); }

absl::Status ValidateConvertRequest(const v1::ConvertLocalJobRequest& request, const std::string& cluster) {
  if (absl::Status s = CheckCluster(request.local(), cluster); !s.ok()) return s;
  if (!IsValidToken(request.local().token())) {
    return Invalid("local.token", "must match ^[a-z0-9][a-z0-9-]{7,62}$");
  }
  if (!IsValidUserName(request.user().name())) return Invalid("user.name", "must match ^[a-z_][a-z0-9_.-]{0,31}$");
  if (request.user().uid() == 0) {
    return absl::FailedPreconditionError("user.uid: jobs of root are not run in secure workloads");
  }
  if (request.user().uid() > 4294967293u) return Invalid("user.uid", "must be 1..4294967293");
  if (!request.project().empty() && !IsValidId(request.project())) {
    return Invalid("project", "must be empty (the user's default account) or match ^[a-z0-9][a-z0-9-]{0,62}$");
  }
  if (!request.exclusive()) {
    return absl::FailedPreconditionError(
        "exclusive: only --exclusive jobs are supported; non-exclusive jobs need the secure-VM path, which is not "
        "available yet");
  }
  if (request.resources().nodes() > 1) {
    return absl::FailedPreconditionError(absl::StrCat("resources.nodes: ", request.resources().nodes(),
                                                      " nodes requested; --exclusive jobs run on one node in v1"));
  }
  if (request.resources().gpus() > 0) return absl::FailedPreconditionError("resources.gpus: GPUs are not supported yet");
  if (request.script_path().size() > 4096) return Invalid("script_path", "longer than 4096 bytes");
  if (request.work_dir().size() > 4096) return Invalid("work_dir", "longer than 4096 bytes");
  return absl::OkStatus();
}

absl::Status ValidateEndedRequest(const v1::LocalJobEndedRequest& request, const std::string& cluster) {
  if (absl::Status s = CheckCluster(request.local(), cluster); !s.ok()) return s;
  if (request.local().local_job_id() == 0 && request.local().token().empty()) {
    return Invalid("local", "local_job_id or token is required");
  }
  if (!request.local().token().empty() && !IsValidToken(request.local().token())) {
    return Invalid("local.token", "must match ^[a-z0-9][a-z0-9-]{7,62}$");
  }
  if (request.end().kind() == v1::LOCAL_JOB_END_KIND_UNSPECIFIED) return Invalid("end.kind", "required");
  return absl::OkStatus();
}

absl::Status ValidateProvisionRequest(const v1::ProvisionWorkloadRequest& request, const std::string& cluster) {
  if (absl::Status s = CheckCluster(request.local(), cluster); !s.ok()) return s;
  if (!IsValidToken(request.local().token())) return Invalid("local.token", "must match ^[a-z0-9][a-z0-9-]{7,62}$");
  if (!IsValidId(request.global_job_id())) return Invalid("global_job_id", "must match ^[a-z0-9][a-z0-9-]{0,62}$");
  if (!IsValidId(request.workload_id())) return Invalid("workload_id", "must match ^[a-z0-9][a-z0-9-]{0,62}$");
  if (!IsValidId(request.node_name())) return Invalid("node_name", "must match ^[a-z0-9][a-z0-9-]{0,62}$");
  if (request.registration_timeout().seconds() > 600) return Invalid("registration_timeout", "at most 600 s");
  return absl::OkStatus();
}

v1::Resources ResourcesFromSlurm(const SlurmJob& job) {
  v1::Resources resources;
  const uint32_t nodes = job.num_nodes == 0 ? 1 : job.num_nodes;
  resources.set_nodes(nodes);
  resources.set_cpus((job.num_cpus + nodes - 1) / nodes);
  resources.set_memory_bytes(job.memory_bytes_per_node);
  if (job.time_limit_seconds > 0) resources.mutable_time_limit()->set_seconds(job.time_limit_seconds);
  return resources;
}

}  // namespace strongroom::vm_controller
