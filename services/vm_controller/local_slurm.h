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
  // An admin hold (the user cannot release it). Verified by reading the job back.
  virtual absl::Status HoldJob(uint32_t job_id) = 0;
  // Requires `feature` (the dynamic node's token) and releases the hold. Verified by reading the job back.
  virtual absl::Status PinAndRelease(uint32_t job_id, const std::string& feature) = 0;
  // The node's state, or nullopt if the controller does not know the node.
  virtual absl::StatusOr<std::optional<std::string>> NodeState(const std::string& node) = 0;
  // Marks the node down and deletes it. FAILED_PRECONDITION while it is busy or completing.
  virtual absl::Status DeleteNode(const std::string& node) = 0;
  virtual absl::Status CancelJob(uint32_t job_id) = 0;
};

struct LocalSlurmCliOptions {
  std::string slurm_conf;              // SLURM_CONF for every call
  std::string bin_dir = "/usr/bin";    // squeue, scontrol, scancel
  absl::Duration timeout = absl::Seconds(15);
};

std::unique_ptr<LocalSlurm> MakeLocalSlurmCli(LocalSlurmCliOptions options);

}  // namespace strongroom::vm_controller
