// Parsing of Local Slurm CLI output (`scontrol show job|node -o`, `squeue -o`) into typed records.
// Pure functions: the Slurm CLIs themselves are run by local_slurm.cc.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace strongroom::vm_controller {

// The fields of a Local Slurm job that conversion and tracking need.
struct SlurmJob {
  uint32_t job_id = 0;
  std::string state;   // JobState: PENDING, RUNNING, COMPLETING, COMPLETED, CANCELLED, FAILED, TIMEOUT, ...
  std::string reason;  // Reason, e.g. JobHeldAdmin
  std::string user;
  uint32_t uid = 0;
  uint32_t gid = 0;
  std::string account;
  uint32_t num_nodes = 0;
  uint32_t num_cpus = 0;
  int64_t time_limit_seconds = 0;   // 0: unlimited or not set
  uint64_t memory_bytes_per_node = 0;  // 0: not set
  bool exclusive = false;           // OverSubscribe=NO
  std::string comment;
  std::string features;
  std::string node_list;
  int64_t priority = 0;
  int exit_code = 0;  // the job's exit status from ExitCode=N:S (N)
  std::string partition;
  std::string std_out;  // StdOut=, the path as scontrol expands it (%j and the like); empty if none
  std::string std_err;  // StdErr=, likewise
  std::string dependency;  // Dependency=, e.g. "afterok:12(unfulfilled)"; empty for none
  // EligibleTime: when the job may start (its --begin, or its submit time); InfiniteFuture while Slurm does not
  // know yet (an unfulfilled dependency prints "Unknown").
  absl::Time eligible_time = absl::InfiniteFuture();

  bool IsPending() const { return state == "PENDING"; }
  bool IsTerminal() const;
};

// Why a pending job in the wait partition may not have its global job yet (job_submit.lua keeps every job there
// until its workload is ready; its own --hold, --begin and --dependency still apply).
enum class Eligibility {
  kEligible,         // nothing of the user's keeps it from running: create the global job
  kHeld,             // the user's hold (--hold or scontrol hold): wait for the release
  kNotYet,           // --begin in the future, or a dependency not fulfilled yet
  kNeverSatisfied,   // a dependency that can never be fulfilled (Slurm's DependencyNeverSatisfied)
};
Eligibility EligibilityOf(const SlurmJob& job, absl::Time now);

// `scontrol show job -o <id>`: one line of Key=Value pairs.
absl::StatusOr<SlurmJob> ParseScontrolJob(absl::string_view line);

// Key=Value pairs of one `scontrol show ... -o` line. Values end at the next " Key=".
std::map<std::string, std::string> ParseKeyValues(absl::string_view line);

// "1-02:03:04", "02:03:04", "03:04", "UNLIMITED" -> seconds (0 for unlimited).
absl::StatusOr<int64_t> ParseSlurmDuration(absl::string_view text);

// "100M", "2G", "512K", "1T" (Slurm memory; bare numbers are MiB) -> bytes.
absl::StatusOr<uint64_t> ParseSlurmMemory(absl::string_view text);

// Lines of `squeue -h -o '%i|%k'`: the id of the job whose comment's first word equals `comment`.
std::optional<uint32_t> FindJobIdByComment(absl::string_view squeue_output, absl::string_view comment);

// One node of `scontrol show nodes -o`.
struct SlurmNode {
  std::string name;
  std::string state;     // e.g. "IDLE+DYNAMIC_NORM", "DOWN+DRAIN+DYNAMIC_NORM+NOT_RESPONDING"
  std::string features;  // AvailableFeatures, e.g. "strongroom,0a1b..."
};
// Every node in `scontrol show nodes -o` output (one per line); lines without NodeName are skipped.
std::vector<SlurmNode> ParseNodes(absl::string_view output);

// The state of a node from `scontrol show node -o <name>`, e.g. "IDLE", "ALLOCATED", "DOWN+DYNAMIC_NORM".
absl::StatusOr<std::string> ParseNodeState(absl::string_view line);

}  // namespace strongroom::vm_controller
