// The seam between host-agent's one workload lifecycle (manager.h) and the kinds of workload it runs. The
// lifecycle owns the record, the state machine, failures, monitors, reconciliation and the order of every
// step; a driver owns what a kind creates and removes: container/ (runc or Apptainer on an encrypted scratch
// and overlay, in a netns) and vm/ (a libvirt domain on a tap). The manager picks the driver by spec.kind.
//
// Start: Resolve (before anything is recorded) -> STARTING -> provisioning inputs -> PrepareStorage ->
// AttachNetwork -> [start.after_network] -> Launch -> [start.after_runtime] -> RUNNING.
// Teardown: StopExecution -> netd ReleasePort (the lifecycle's) -> [stop.after_network] -> RemoveStorage.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "services/host_agent/network.h"
#include "services/host_agent/provisioning.h"
#include "services/host_agent/store.h"
#include "strongroom/v1/host_agent.pb.h"

namespace strongroom::host_agent {

// TrackedResources.stage of a start the agent's restart interrupted: cleaned up, still STARTING, waiting for
// the same StartWorkload to be retried.
inline constexpr char kInterruptedStage[] = "interrupted";

// Where the time of the last start or stop went (the benchmark's breakdown).
struct StepTimings {
  absl::Duration scratch, overlay, network, runtime, total;
};

// What a driver decided before the workload exists anywhere.
struct StartPlan {
  std::string image_path;                                                 // the catalog entry the start uses
  v1::ScratchEncryption encryption = v1::SCRATCH_ENCRYPTION_UNSPECIFIED;  // as recorded in the workload
  // The names teardown needs that derive from the id alone (netns, dm name), recorded with STARTING so a
  // crash at any later step can still be cleaned up.
  TrackedResources names;
};

// One start in progress: what the lifecycle lends the driver's steps, and what they hand each other.
struct StartContext {
  std::string id;
  TrackedWorkload workload;  // the row as recorded STARTING
  std::string image_path;    // StartPlan.image_path
  ProvisioningInputs inputs;
  v1::NetworkAttachment port;  // AttachNetwork's, for Launch
  StepTimings* timings = nullptr;
  // Persists a change to the row; called right after each resource exists.
  std::function<absl::Status(const std::function<void(TrackedWorkload&)>&)> record;
  // Tears down what exists, records FAILED with this phase and reason, and returns what to answer.
  std::function<absl::Status(v1::FailurePhase, const std::string& reason, const absl::Status&)> fail;
  // TESTS ONLY: the lifecycle's named crash points (fault_crash_at).
  std::function<void(absl::string_view)> crash_point;
  // Hands the started main process to the lifecycle's monitor, whose exit ends the workload.
  std::function<void(pid_t supervisor, pid_t init_pid, uint64_t init_start)> watch;
};

// One teardown in progress. Every step runs even if an earlier one failed; what it could not remove goes in
// `leftovers`, and the report's flags say which parts are gone.
struct TeardownContext {
  std::string id;
  TrackedWorkload workload;
  absl::Duration grace;
  // Waits up to the given time for the main process to end (the monitor's view, or the process itself after
  // a restart); true once it has.
  std::function<bool(absl::Duration)> await_exit;
  std::function<void(absl::string_view)> crash_point;
  v1::ScrubReport* report = nullptr;
  std::vector<std::string>* leftovers = nullptr;
  StepTimings* timings = nullptr;
};

// A workload that ended behind host-agent's back, as its driver learnt it (a VM: libvirt's lifecycle event).
struct ExternalStop {
  std::string workload_id;
  std::string runtime_id;  // which instance ended (a domain's UUID): only the workload's current one counts
  bool failed = false;     // false: a normal end (the guest powered off)
  std::string reason;      // FailureInfo.reason when failed, e.g. VM_EMULATOR_FAILED
  std::string message;
};

class WorkloadDriver {
 public:
  virtual ~WorkloadDriver() = default;

  // The record's `runtime`: "runc", "crun", "apptainer", "libvirt".
  virtual std::string runtime_name() const = 0;
  // True if the lifecycle watches a host process of the workload (a container's init); false if the driver
  // reports its end as an ExternalStop (a VM).
  virtual bool has_main_process() const = 0;

  // Every check of the kind before anything is recorded or created: the image in the catalog, what this node
  // can run, the scratch encryption.
  virtual absl::StatusOr<StartPlan> Resolve(const v1::WorkloadSpec& spec) = 0;
  // The workload's files and disks (a container's scratch, image and overlay; a VM's directory).
  virtual absl::Status PrepareStorage(StartContext& ctx) = 0;
  // Its netd port through the shared network client (a veth into its netns, or a tap); sets ctx.port.
  virtual absl::Status AttachNetwork(StartContext& ctx) = 0;
  // The runtime: delivers the provisioning inputs the kind's way and starts the workload's main process.
  virtual absl::Status Launch(StartContext& ctx) = 0;

  // Ends every process of the workload (grace, then kill) and deletes its runtime object.
  virtual void StopExecution(TeardownContext& ctx) = 0;
  // After the port is released: mounts, scratch, disks, netns and the workload dir.
  virtual void RemoveStorage(TeardownContext& ctx) = 0;

  // Whether a RUNNING workload found after a restart can be adopted; `why` says what is wrong otherwise.
  virtual bool HealthyForAdoption(const TrackedWorkload& tw, std::string* why) = 0;
  // Removes what the kind left without a live workload (`active`: ids of the non-terminal ones) below
  // `workloads_root` or in its runtime; the lifecycle then removes the orphaned directories.
  virtual void SweepOrphans(const std::string& workloads_root, const std::set<std::string>& active) = 0;
};

}  // namespace strongroom::host_agent
