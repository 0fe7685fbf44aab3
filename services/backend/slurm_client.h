// Runs the Global Slurm CLIs (slurm_commands.h builds their argv): never through a shell, always with a
// timeout, with a clean environment holding only PATH and SLURM_CONF. Errors: UNAVAILABLE when the controller
// is unreachable or the command timed out (retry is safe: submissions are deduplicated by job name),
// FAILED_PRECONDITION when Slurm refused the request, with Slurm's own message.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/subprocess.h"
#include "services/backend/backend_config.h"
#include "services/backend/slurm_commands.h"

namespace strongroom::backend {

class SlurmClient {
 public:
  explicit SlurmClient(const BackendSettings& settings);
  virtual ~SlurmClient() = default;

  // sbatch; the new job id.
  absl::StatusOr<uint32_t> Submit(const SubmitSpec& spec);
  // Jobs named `global_job_id`, in any state Slurm still remembers (MinJobAge): the orphan search.
  absl::StatusOr<std::vector<SqueueRow>> FindByName(const std::string& global_job_id);
  // These jobs, in any state; a job Slurm no longer knows is simply absent.
  absl::StatusOr<std::vector<SqueueRow>> Jobs(const std::vector<uint32_t>& job_ids);
  // scancel; OK when the job is already gone or ending.
  absl::Status Cancel(uint32_t job_id);
  // The controller's MinJobAge (scontrol show config): how long an ended job can still be found by name.
  absl::StatusOr<absl::Duration> MinJobAge();

 private:
  // `env` (NAME=VALUE) is added to the tool's otherwise empty environment.
  absl::StatusOr<RunResult> RunTool(const std::string& tool, const std::vector<std::string>& args,
                                    const std::vector<std::string>& env = {});

  const std::string bin_dir_;     // where sbatch and friends live
  const std::string slurm_conf_;  // SLURM_CONF, or "" for Slurm's default
  const absl::Duration timeout_;  // per command
};

}  // namespace strongroom::backend
