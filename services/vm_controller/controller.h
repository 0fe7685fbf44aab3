// vm-controller's domain logic: turning Local Slurm jobs into global jobs, pinning them to their workload's dynamic
// node, and cleaning up when they end (DESIGN.md §3 steps 1–2, 6–7, 9). Plain C++ over three ports: the local job
// store, the Local Slurm and backend; the gRPC adapter (service.cc) only translates.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "services/vm_controller/controlling_vm.h"
#include "services/vm_controller/enrollment.h"
#include "services/vm_controller/global_jobs.h"
#include "services/vm_controller/local_job_store.h"
#include "services/vm_controller/local_slurm.h"
#include "strongroom/v1/vm_controller.pb.h"

namespace strongroom::vm_controller {

// The Local Slurm comment job_submit.lua gives a job: "strongroom:<token>".
std::string CommentTag(const std::string& token);

struct ControllerOptions {
  std::string cluster;                          // the Local Slurm ClusterName
  std::vector<std::string> slurmctld_addresses;  // passed to backend for the provisioning bundle
  std::string munge_socket;                       // the Local Slurm's AuthInfo socket, for the bundle
  absl::Duration poll_interval = absl::Seconds(1);
  absl::Duration resolve_deadline = absl::Seconds(30);
  absl::Duration register_deadline = absl::Seconds(60);
  std::string wait_partition = "wait";  // job_submit.lua's partition without nodes: the operator-only hold
  std::string run_partition = "batch";  // the dynamic nodes' partition
  absl::Duration node_reconcile = absl::Seconds(10);  // how often dynamic nodes are checked against the jobs
  // The project's enrollment authority (issue 14, docs/IPSEC.md); not owned. When set, ProvisionWorkload
  // hands the workload over to it (a job of another project is refused) and the job's end tombstones the
  // workload there.
  EnrollmentAuthority* enrollment = nullptr;
  // The controlling VM's charon and nfs-ganesha (controlling_vm.h); not owned; optional. Each handed-over
  // workload gets its IPsec connection and NFS grant there (a handover is refused while either is down),
  // removed at the job's end.
  WorkloadDataPath* data_path = nullptr;
  // How long a workload with no time limit may stay enrolled (its certificate then lasts this plus the
  // margin).
  absl::Duration enrollment_default_limit = absl::Hours(24);
};

class Controller {
 public:
  Controller(ControllerOptions options, LocalJobStore* store, LocalSlurm* slurm, GlobalJobs* backend);
  ~Controller();

  // Records the job (idempotent on token) and wakes the background worker, which resolves, holds and converts it.
  absl::StatusOr<std::pair<v1::LocalJob, bool>> Convert(const v1::ConvertLocalJobRequest& request);

  // The local job ended (epilog hook or operator): deletes its dynamic node and releases or cancels its global job.
  absl::StatusOr<v1::LocalJob> LocalJobEnded(const v1::LocalJobEndedRequest& request);

  // Waits until the workload's slurmd registered as node `node_name`, then pins the job to its token feature and
  // releases it. `deadline` bounds the wait.
  absl::StatusOr<v1::ProvisionWorkloadResponse> Provision(const v1::ProvisionWorkloadRequest& request,
                                                          absl::Time deadline);

  absl::StatusOr<v1::LocalJob> Get(const v1::LocalJobKey& key);
  absl::StatusOr<std::vector<v1::LocalJob>> List(const std::vector<v1::LocalJobState>& states, int limit);

  // One pass of background work over every non-terminal job. The worker thread calls it every poll interval and
  // whenever Convert records a job; tests call it directly.
  void Tick();
  void StartWorker();
  // Drains and deletes every dynamic node without a live job (docs/VM_CONTROLLER.md, "Dynamic nodes"). Tick
  // runs it at start and every node_reconcile. False if the Local Slurm could not be asked.
  bool ReconcileNodes();
  // Cancels, with the reason in its Comment, a job waiting in the wait partition that vm-controller never
  // received (its submit hook failed) once resolve_deadline + 30 s passed: it would otherwise wait for ever.
  void RefuseUnannounced();

 private:
  void Resolve(const v1::LocalJob& job);
  void RequestGlobalJob(const v1::LocalJob& job);
  void Watch(const v1::LocalJob& job);
  // Ends a local job whose global job ended first (backend's record), cancelling it on the Local Slurm.
  void FollowGlobalJob(const v1::LocalJob& job);
  // Moves the job to ENDING with `end` (once) and runs the cleanup.
  void End(const v1::LocalJob& job, const v1::LocalJobEnd& end, const std::string& reason);
  // Deletes the node and releases/cancels the global job; on success the job reaches its terminal state.
  void FinishEnding(const v1::LocalJob& job);
  void Fail(const v1::LocalJob& job, const std::string& reason_code, const absl::Status& why);
  // Fails the job and cancels it on the Local Slurm with the reason in its Comment, where its user sees it.
  void Refuse(const v1::LocalJob& job, uint32_t job_id, const std::string& reason_code, const absl::Status& why);

  const ControllerOptions options_;
  LocalJobStore* const store_;
  LocalSlurm* const slurm_;
  GlobalJobs* const backend_;

  absl::Mutex tick_mu_;  // one Tick at a time (the worker and tests)
  absl::Time last_reconcile_ ABSL_GUARDED_BY(tick_mu_) = absl::InfinitePast();  // of ReconcileNodes
  absl::Mutex wake_mu_;
  bool wake_ ABSL_GUARDED_BY(wake_mu_) = false;  // Convert recorded a job: tick now
  std::atomic<bool> stop_{false};
  std::thread worker_;
};

}  // namespace strongroom::vm_controller
