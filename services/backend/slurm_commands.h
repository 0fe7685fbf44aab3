// The Global Slurm command lines backend runs and the parsing of what they print. Pure functions: the argv
// vectors are built here and run by SlurmClient (slurm_client.h) without a shell.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "strongroom/v1/backend.pb.h"

namespace strongroom::backend {

// What one global job is submitted with.
struct SubmitSpec {
  std::string global_job_id;
  std::string workload_id;
  v1::LocalJobKey local;
  std::string project;
  v1::Resources resources;  // exclusive: the job's minimums; otherwise the VM's (job_policy.h VmResources)
  bool exclusive = true;
  std::string partition;  // empty: the default partition
  absl::Duration time_limit_margin = absl::ZeroDuration();
  std::string job_script;
  std::string job_output;
  std::string workload_spec_base64;  // the serialized WorkloadSpec, for the global job script
};

// "strongroom:gj=<id>;wl=<id>;lc=<cluster>;lj=<local id>;tok=<token>". All parts are IDs or TOKENs, so the
// comment needs no quoting; the gj= part is what finds an orphan after a crash.
std::string GlobalJobComment(const SubmitSpec& spec);
// The global job id inside a comment written by GlobalJobComment, or "".
std::string GlobalJobIdOfComment(const std::string& comment);

// sbatch arguments (without the program): --parsable --job-name=<gj> --account=<project> --comment=...
// then, exclusive: --exclusive --nodes=1 [--mincpus] --mem=<MiB>M|0; not exclusive (a VM, resources already
// the VM's): --nodes=1 --ntasks=1 --cpus-per-task=<cpus, min 1> --mem=<MiB>M; then [--time] [--partition]
// --no-requeue --chdir=/ --output
// --export=<only SR_* variables> <script>.
std::vector<std::string> SbatchArgs(const SubmitSpec& spec);
// The variables sbatch's own environment carries into the job (with --export=ALL): NAME=VALUE entries.
std::vector<std::string> SbatchEnvironment(const SubmitSpec& spec);

// The job id from `sbatch --parsable` output ("<id>" or "<id>;<cluster>", possibly among warning lines).
absl::StatusOr<uint32_t> ParseSbatchJobId(const std::string& output);

// Whether a failed sbatch may succeed if retried: the controller was unreachable or busy, or the call timed
// out. Anything else (bad account, impossible resources, invalid options) is permanent.
bool IsTransientSlurmFailure(const std::string& output);

// One line of `squeue -o <kSqueueFormat>`.
struct SqueueRow {
  uint32_t job_id = 0;
  std::string state;   // e.g. "PENDING", "RUNNING", "NODE_FAIL"
  std::string reason;  // Slurm's reason, e.g. "Resources", "None"
  std::string nodes;   // e.g. "gnode1" ("" while pending)
  uint32_t cpus = 0;   // allocated (or requested, while pending) CPUs
  uint32_t node_count = 0;
  std::optional<absl::Time> start_time;  // unset while unknown
  std::string name;
  std::string comment;
};

// squeue arguments to list the given jobs in any state (one line each, format kSqueueFormat).
std::vector<std::string> SqueueJobsArgs(const std::vector<uint32_t>& job_ids);
// squeue arguments to list jobs named `global_job_id` in any state: the orphan search.
std::vector<std::string> SqueueByNameArgs(const std::string& global_job_id);
// Lines that do not start with the format's marker (warnings) are skipped.
std::vector<SqueueRow> ParseSqueue(const std::string& output, const absl::TimeZone& zone);

// scontrol arguments that print the controller's running configuration.
std::vector<std::string> ScontrolShowConfigArgs();
// MinJobAge from `scontrol show config` ("MinJobAge               = 600 sec"): how long the controller still
// reports a job after it ended, i.e. the window in which an orphan can be found by name. Slurm's 0 means
// "never purged": InfiniteDuration.
absl::StatusOr<absl::Duration> ParseMinJobAge(const std::string& output);

// What a Slurm job state means for the global job.
struct SlurmStateMeaning {
  enum Phase { kPending, kRunning, kEnded } phase = kPending;
  v1::JobEndReason end_reason = v1::JOB_END_REASON_UNSPECIFIED;  // for kEnded
  std::string failure_reason;  // FailureInfo.reason for kEnded, e.g. "GLOBAL_JOB_NODE_FAIL"
};
SlurmStateMeaning InterpretSlurmState(const std::string& state);

}  // namespace strongroom::backend
