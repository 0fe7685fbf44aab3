// What each input does to a job: pure functions over a JobRecord, used as JobStore::Update's `decide`. Each
// one changes the record's fields (never job.state directly) and returns the timeline items, whose
// transitions JobStore checks against the transition table. They never do I/O: the side effects they ask for
// are flags on the record (need_scancel, need_stop_workload, need_provision) that the reconciler carries out
// and reports back here.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "services/backend/job_store.h"
#include "services/backend/slurm_commands.h"
#include "strongroom/v1/backend.pb.h"
#include "strongroom/v1/host_agent.pb.h"
#include "strongroom/v1/vm_controller.pb.h"

namespace strongroom::backend {

using Items = std::vector<TimelineItem>;

// Knobs the decisions need, from BackendSettings.
struct DecisionPolicy {
  std::string backend_actor;  // SPIFFE id for what backend itself detects
  absl::Duration readiness_deadline = absl::Seconds(300);
  absl::Duration peer_retry_window = absl::Seconds(600);
  int max_submit_attempts = 5;
};

// --- submission (reconciler) ---
// sbatch is about to run (or an orphan search): count the attempt. Returns the attempts made before this one.
Items OnSubmitAttempt(JobRecord& r);
// sbatch returned job `slurm_job_id` (or an orphan carrying our comment was found: adopted = true).
Items OnSubmitted(JobRecord& r, uint32_t slurm_job_id, bool adopted, const DecisionPolicy& p);
// sbatch failed. Transient failures are retried (after `retry_at`) until max_submit_attempts.
Items OnSubmitFailed(JobRecord& r, const absl::Status& error, absl::Time now, absl::Time retry_at,
                     const DecisionPolicy& p);
// A cancelled job that never reached Slurm (no id, no orphan).
Items OnNeverSubmitted(JobRecord& r, const DecisionPolicy& p);
// Whether "no global job carries this job's name" proves that no earlier sbatch attempt created one: Slurm
// reports an ended job for MinJobAge after its end, and an orphan ended no earlier than the job row was
// created, so the search is conclusive while `now + margin - created < min_job_age` (`margin`: how late the
// search may run, e.g. one Slurm command timeout).
bool OrphanSearchIsConclusive(absl::Time created, absl::Time now, absl::Duration min_job_age,
                              absl::Duration margin);
// An earlier attempt may have created a global job that Slurm has since forgotten (the search was not
// conclusive): submitting again could run the job twice, so it fails instead (GLOBAL_SUBMIT_FAILED,
// "SUBMIT_OUTCOME_UNKNOWN"). A CANCELLING job ends CANCELLED, as when it never reached Slurm.
Items OnOrphanSearchInconclusive(JobRecord& r, absl::Duration min_job_age, absl::Time now,
                                 const DecisionPolicy& p);

// --- Global Slurm polling (reconciler) ---
Items OnSlurmObserved(JobRecord& r, const SqueueRow& row, absl::Time now, const DecisionPolicy& p);
// Slurm no longer knows the job (purged after MinJobAge, or the controller lost its state).
Items OnSlurmForgot(JobRecord& r, absl::Time now, const DecisionPolicy& p);
// STARTING for longer than the readiness deadline.
Items OnReadinessCheck(JobRecord& r, absl::Time now, const DecisionPolicy& p);

// --- side effects' outcomes (reconciler) ---
Items OnProvisioned(JobRecord& r, const absl::StatusOr<v1::ProvisionWorkloadResponse>& result, absl::Time now,
                    absl::Time retry_at, const DecisionPolicy& p);
Items OnStopWorkloadDone(JobRecord& r, const absl::Status& result, absl::Time now, absl::Time retry_at,
                         const DecisionPolicy& p);
Items OnScancelDone(JobRecord& r, const absl::Status& result, absl::Time now, absl::Time retry_at,
                    const DecisionPolicy& p);

// --- RPCs (the caller's identity is the actor) ---
// CancelJob, and ReleaseWorkload before the job runs. Idempotent on CANCELLING and terminal jobs.
Items OnCancel(JobRecord& r, const std::string& reason, v1::JobEndReason end_reason, const std::string& actor,
               absl::Time now);
absl::StatusOr<Items> OnRelease(JobRecord& r, const v1::ReleaseWorkloadRequest& request,
                                const std::string& actor, absl::Time now);
// A job that is CANCELLING or terminal keeps its state (the caller then gets FAILED_PRECONDITION) but its
// workload is stopped.
Items OnWorkloadReady(JobRecord& r, const v1::WorkloadReadyRequest& request, const std::string& actor,
                      absl::Time now);
Items OnWorkloadFailed(JobRecord& r, const v1::WorkloadFailedRequest& request, const std::string& actor,
                       absl::Time now);
// Before the global job runs (SUBMITTING, QUEUED) a stop report is refused as the illegal transition it would
// be.
absl::StatusOr<Items> OnWorkloadStopped(JobRecord& r, const v1::WorkloadStoppedRequest& request,
                                        const std::string& actor, absl::Time now);

// The end reason a local job's end maps to.
v1::JobEndReason EndReasonOfLocalEnd(const v1::LocalJobEnd& end);
// Why host-agent is asked to stop the workload, from the job's state and end reason.
v1::StopReason StopReasonOf(const JobRecord& r);

}  // namespace strongroom::backend
