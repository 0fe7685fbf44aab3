#include "services/backend/slurm_client.h"

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status.h"

namespace strongroom::backend {
namespace {

std::string Trimmed(const std::string& output) { return std::string(absl::StripAsciiWhitespace(output)); }

}  // namespace

SlurmClient::SlurmClient(const BackendSettings& settings)
    : bin_dir_(settings.slurm_bin_dir),
      slurm_conf_(settings.slurm_conf),
      timeout_(settings.slurm_command_timeout) {}

absl::StatusOr<RunResult> SlurmClient::RunTool(const std::string& tool, const std::vector<std::string>& args,
                                               const std::vector<std::string>& env) {
  // env -i: nothing of backend's environment (e.g. a stray SLURM_JOB_ID) changes what Slurm does.
  std::vector<std::string> argv = {"/usr/bin/env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin"};
  if (!slurm_conf_.empty()) argv.push_back("SLURM_CONF=" + slurm_conf_);
  argv.insert(argv.end(), env.begin(), env.end());
  argv.push_back(absl::StrCat(bin_dir_, "/", tool));
  argv.insert(argv.end(), args.begin(), args.end());
  absl::StatusOr<RunResult> r = Run(argv, timeout_);
  if (!r.ok()) {
    // A timeout: the controller may or may not have acted; callers treat it as transient.
    return absl::UnavailableError(absl::StrCat(tool, ": ", r.status().message()));
  }
  return r;
}

absl::StatusOr<uint32_t> SlurmClient::Submit(const SubmitSpec& spec) {
  SR_ASSIGN_OR_RETURN(RunResult r, RunTool("sbatch", SbatchArgs(spec), SbatchEnvironment(spec)));
  if (r.exit_code == 0) return ParseSbatchJobId(r.output);
  if (IsTransientSlurmFailure(r.output)) {
    return absl::UnavailableError(absl::StrCat("sbatch: Global Slurm unavailable: ", Trimmed(r.output)));
  }
  return absl::FailedPreconditionError(
      absl::StrCat("sbatch refused the job (exit ", r.exit_code, "): ", Trimmed(r.output)));
}

absl::StatusOr<std::vector<SqueueRow>> SlurmClient::FindByName(const std::string& global_job_id) {
  SR_ASSIGN_OR_RETURN(RunResult r, RunTool("squeue", SqueueByNameArgs(global_job_id)));
  if (r.exit_code != 0) return absl::UnavailableError(absl::StrCat("squeue: ", Trimmed(r.output)));
  return ParseSqueue(r.output, absl::LocalTimeZone());
}

absl::StatusOr<std::vector<SqueueRow>> SlurmClient::Jobs(const std::vector<uint32_t>& job_ids) {
  if (job_ids.empty()) return std::vector<SqueueRow>();
  SR_ASSIGN_OR_RETURN(RunResult r, RunTool("squeue", SqueueJobsArgs(job_ids)));
  if (r.exit_code != 0) {
    // With a single unknown id squeue fails instead of printing nothing.
    if (absl::StrContains(r.output, "Invalid job id specified")) return std::vector<SqueueRow>();
    return absl::UnavailableError(absl::StrCat("squeue: ", Trimmed(r.output)));
  }
  return ParseSqueue(r.output, absl::LocalTimeZone());
}

absl::StatusOr<absl::Duration> SlurmClient::MinJobAge() {
  SR_ASSIGN_OR_RETURN(RunResult r, RunTool("scontrol", ScontrolShowConfigArgs()));
  if (r.exit_code != 0) {
    return absl::UnavailableError(absl::StrCat("scontrol show config: ", Trimmed(r.output)));
  }
  return ParseMinJobAge(r.output);
}

absl::Status SlurmClient::Cancel(uint32_t job_id) {
  SR_ASSIGN_OR_RETURN(RunResult r, RunTool("scancel", {absl::StrCat(job_id)}));
  if (r.exit_code == 0) return absl::OkStatus();
  if (absl::StrContains(r.output, "Invalid job id") || absl::StrContains(r.output, "already completing") ||
      absl::StrContains(r.output, "already completed")) {
    return absl::OkStatus();
  }
  if (IsTransientSlurmFailure(r.output)) {
    return absl::UnavailableError(
        absl::StrCat("scancel ", job_id, ": Global Slurm unavailable: ", Trimmed(r.output)));
  }
  return absl::InternalError(
      absl::StrCat("scancel ", job_id, " failed (exit ", r.exit_code, "): ", Trimmed(r.output)));
}

}  // namespace strongroom::backend
