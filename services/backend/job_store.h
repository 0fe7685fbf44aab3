// PostgreSQL persistence of global jobs, their workloads and their timeline. Every state change goes through
// Update(): one transaction that locks the job, lets the caller decide, checks each transition against the
// transition table (job_state.h, and the database trigger), writes the row and appends the timeline rows that
// the audit chain then picks up (audit_writer.h).
#pragma once

#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "services/backend/db.h"
#include "services/backend/usage.h"
#include "strongroom/v1/backend.pb.h"

namespace strongroom::backend {

// One timeline row: a transition (to set) or an event (event set).
struct TimelineItem {
  v1::JobState to = v1::JOB_STATE_UNSPECIFIED;
  std::string event;  // ^[a-z][a-z0-9_.]{0,63}$, e.g. "workload.stop_requested"
  std::string actor;  // SPIFFE id of whoever caused or reported it
  v1::AuditOutcome outcome = v1::AUDIT_OUTCOME_SUCCESS;
  int status_code = 0;
  std::string message;
  std::map<std::string, std::string> details;
};

// A job as stored: what GetJob shows plus backend's bookkeeping.
struct JobRecord {
  v1::Job job;
  absl::Time local_submit_time;
  std::string slurm_state;  // last state squeue reported
  // Side effects still owed, resumed after a restart (reconciler.h).
  bool need_scancel = false;
  bool need_stop_workload = false;
  bool need_provision = false;
  int effect_attempts = 0;
  absl::Time effect_after = absl::InfinitePast();  // no retry before this
  absl::Time effect_since = absl::InfinitePast();  // when the current effect was first owed

  bool HasEffects() const { return need_scancel || need_stop_workload || need_provision; }
};

struct NewJob {
  JobRecord record;                    // state SUBMITTING; ids, user, project, resources, times filled
  v1::CreateGlobalJobRequest request;  // stored for idempotent repeats
  v1::WorkloadSpec spec;
  TimelineItem created;  // the first timeline row (to = SUBMITTING)
};

struct ListFilter {
  std::vector<v1::JobState> states;
  std::string project, user, local_cluster;
  std::optional<absl::Time> created_from, created_to;
};

// "global_job_id gj-1", "local job c1/17", "global_slurm_job_id 42": for NOT_FOUND messages.
std::string DescribeSelector(const v1::JobSelector& selector);

class JobStore {
 public:
  explicit JobStore(Database* db);

  // FAILED_PRECONDITION unless the database's job_state_transitions equals AllowedTransitions().
  absl::Status CheckTransitionTable();

  struct Created {
    JobRecord record;
    bool created = false;
  };
  // Inserts the job, its workload and its first timeline row, unless (local_cluster, local_job_id) already
  // has a job: then that one when its stored request equals `job.request`, else ALREADY_EXISTS.
  absl::StatusOr<Created> Create(const NewJob& job);

  // NOT_FOUND "no job with ..." when nothing matches. By global_job_id (GetJob's usual selector, and
  // GetById) the record comes from a read-through cache when it holds the job (below).
  absl::StatusOr<JobRecord> Get(const v1::JobSelector& selector);
  absl::StatusOr<JobRecord> GetById(const std::string& global_job_id);
  absl::StatusOr<JobRecord> GetByWorkloadId(const std::string& workload_id);
  absl::StatusOr<v1::WorkloadSpec> GetSpec(const std::string& global_job_id);

  // Newest first; `after` is the (created, id) of the last job of the previous page. Returns up to `limit`
  // jobs.
  absl::StatusOr<std::vector<JobRecord>> List(const ListFilter& filter,
                                              std::optional<std::pair<int64_t, std::string>> after,
                                              int limit);

  absl::StatusOr<std::vector<v1::TimelineEntry>> Timeline(const std::string& global_job_id);

  // Jobs that are not terminal or still owe a side effect.
  absl::StatusOr<std::vector<JobRecord>> Active();

  // Jobs of `project` whose run time may overlap [from, to).
  absl::StatusOr<std::vector<RunRecord>> Runs(const std::string& project, absl::Time from, absl::Time to);

  // The one way to change a job. In one transaction: lock the row, call `decide` with the current record; it
  // may change the record's fields (not job.state) and returns timeline items in order. Each transition is
  // checked (FAILED_PRECONDITION naming both states) and applied; updated_time and end_time follow. Nothing
  // is written when `decide` fails, or returns no item and changes nothing. Returns the record as stored
  // afterwards.
  using Decide = std::function<absl::StatusOr<std::vector<TimelineItem>>(JobRecord& record)>;
  absl::StatusOr<JobRecord> Update(const std::string& global_job_id, absl::string_view what,
                                   const Decide& decide);

 private:
  // The read-through cache of jobs by global_job_id. Sound because this store is the only writer of the
  // jobs and workloads tables (one backend per database, BACKEND.md) and Create never changes a job that
  // exists. Only rows read by a SELECT are cached, never a record built in memory. Update drops the job
  // before its transaction and again after it ends (committed, rolled back or unknown), and a read that
  // overlapped any Update (the generation moved) or that runs while one is in flight for the job does not
  // fill the cache, so a stale row is never cached after a commit.
  std::optional<JobRecord> Cached(const std::string& id, uint64_t* generation);
  void Fill(const std::string& id, uint64_t generation, const JobRecord& record);
  void BeginWrite(const std::string& id);
  void EndWrite(const std::string& id);

  Database* const db_;  // not owned; outlives the store
  std::mutex cache_mu_;
  std::unordered_map<std::string, JobRecord> cache_;  // bounded: kCacheMax entries
  std::unordered_map<std::string, int> writing_;      // jobs with an Update in flight, and how many
  uint64_t generation_ = 0;                           // + 1 at the end of every Update
};

}  // namespace strongroom::backend
