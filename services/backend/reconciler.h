// backend's background work, all of it resumable from PostgreSQL alone (a restart loses nothing):
//   - submission: each SUBMITTING job gets sbatch (submit_concurrency in parallel). The attempt is counted in
//   the
//     database before sbatch runs, so after a crash a counted attempt means "an sbatch may have happened":
//     the Global Slurm is searched for a job named after the global job id whose comment carries it, and such
//     an orphan is adopted instead of submitting again. Hence no duplicate and no lost job (docs/BACKEND.md).
//   - polling: every poll_interval, one squeue for all active global jobs; starts, ends, external cancels,
//   timeouts
//     and node failures become transitions (job_decisions.h). The readiness deadline is checked there too.
//   - side effects owed by a job (scancel, host-agent StopWorkload, vm-controller ProvisionWorkload) run in a
//   small
//     pool; their outcome goes back through job_decisions.h, with retries while transient.
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "services/backend/backend_config.h"
#include "services/backend/job_decisions.h"
#include "services/backend/job_store.h"
#include "services/backend/peers.h"
#include "services/backend/slurm_client.h"
#include "services/backend/work_pool.h"

namespace strongroom::backend {

class Reconciler {
 public:
  // `timeline_written` is called after every change that appended timeline rows (the audit writer's Kick).
  Reconciler(const BackendSettings& settings, JobStore* store, SlurmClient* slurm, Peers* peers,
             std::function<void()> timeline_written);
  ~Reconciler();  // stops the threads; owed work is resumed by the next start

  void Start();
  void SubmitSoon(const std::string& global_job_id);
  void EffectsSoon(const std::string& global_job_id);
  void PollSoon();

  const DecisionPolicy& policy() const { return policy_; }

 private:
  void PassLoop();
  void Pass();
  void Submit(const std::string& id);
  void RunEffects(const std::string& id);
  absl::StatusOr<JobRecord> Update(const std::string& id, absl::string_view what,
                                   const JobStore::Decide& decide);
  // Applies `decide` only when it would change something (decided on the in-memory copy first).
  // Returns the record as it is afterwards.
  JobRecord UpdateIfChanged(const JobRecord& record, absl::string_view what, const JobStore::Decide& decide);
  void FaultPoint(const std::string& name);
  // Logs the Global Slurm's MinJobAge at start: the window in which an orphan of a crash can be adopted
  // (docs/BACKEND.md, "Crash safety around sbatch"); warns when it is shorter than Slurm's default.
  void CheckMinJobAge();
  absl::Time RetryAt(int attempts) const;

  const BackendSettings& settings_;
  JobStore* const store_;
  SlurmClient* const slurm_;
  Peers* const peers_;
  const std::function<void()> timeline_written_;
  const DecisionPolicy policy_;

  std::mutex mu_;                 // guards the two members below
  std::condition_variable wake_;  // a pass is wanted, or stop
  bool poll_now_ = false;
  bool stop_ = false;
  std::unique_ptr<KeyedWorkPool> submitter_;  // sbatch workers
  std::unique_ptr<KeyedWorkPool> effects_;    // scancel / StopWorkload / ProvisionWorkload workers
  std::thread pass_thread_;                   // runs PassLoop
};

}  // namespace strongroom::backend
