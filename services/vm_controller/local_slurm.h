// The Local Slurm as vm-controller drives it: find, hold, pin, release and cancel jobs; watch and delete dynamic
// nodes. LocalSlurmCli runs the Slurm CLIs (there is no library) with argv vectors and a timeout.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "services/vm_controller/slurm_records.h"

namespace strongroom::vm_controller {

class LocalSlurm {
 public:
  virtual ~LocalSlurm() = default;
  // The job whose comment is `comment`, if squeue still knows it.
  virtual absl::StatusOr<std::optional<uint32_t>> FindJobByComment(const std::string& comment) = 0;
  // NOT_FOUND when the controller no longer knows the job.
  virtual absl::StatusOr<SlurmJob> ShowJob(uint32_t job_id) = 0;
  // In one update (so no scheduler pass sees one without the other): moves the job from the wait partition to
  // `partition` and requires `feature` (its workload's token), then releases any hold. Verified by reading
  // the job back.
  virtual absl::Status PinAndRelease(uint32_t job_id, const std::string& feature, const std::string& partition) = 0;
  // Refuses the job where its user sees why: `comment` (the tag and the reason) becomes its Comment and
  // AdminComment (scontrol show job, squeue %k), then the job is cancelled.
  virtual absl::Status RefuseJob(uint32_t job_id, const std::string& comment) = 0;
  // The pending jobs in `partition`: id, comment and submit time.
  struct QueuedJob {
    uint32_t job_id = 0;
    std::string comment;
    absl::Time submitted;
  };
  virtual absl::StatusOr<std::vector<QueuedJob>> PendingJobsIn(const std::string& partition) = 0;
  // Every node the controller knows (dynamic ones included).
  virtual absl::StatusOr<std::vector<SlurmNode>> ListNodes() = 0;
  // The node's state, or nullopt if the controller does not know the node.
  virtual absl::StatusOr<std::optional<std::string>> NodeState(const std::string& node) = 0;
  // Marks the node DOWN (no job can start on it) and, unless `down_only`, deletes it. FAILED_PRECONDITION while
  // a job is on it or completing on it. OK if the node is gone already.
  virtual absl::Status DeleteNode(const std::string& node, bool down_only = false) = 0;
  virtual absl::Status CancelJob(uint32_t job_id) = 0;
};

struct LocalSlurmCliOptions {
  std::string slurm_conf;              // SLURM_CONF for every call
  std::string bin_dir = "/usr/bin";    // squeue, scontrol, scancel
  absl::Duration timeout = absl::Seconds(15);
  // The periodic reconciliation's listings (ListNodes, PendingJobsIn): short, so a hung Slurm CLI cannot hold up
  // the worker (and with it a SIGTERM drain) for long; the next round asks again.
  absl::Duration listing_timeout = absl::Seconds(5);
};

std::unique_ptr<LocalSlurm> MakeLocalSlurmCli(LocalSlurmCliOptions options);

}  // namespace strongroom::vm_controller
