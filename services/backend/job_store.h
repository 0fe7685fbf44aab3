// PostgreSQL persistence of global jobs, their workloads and their timeline. Every state change goes through
// Update(): one transaction that locks the job, lets the caller decide, checks each transition against the
// transition table (job_state.h, and the database trigger), writes the row and appends the timeline rows that
// the audit chain then picks up (audit_writer.h).
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <string>
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

  // NOT_FOUND "no job with ..." when nothing matches.
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
  Database* const db_;  // not owned; outlives the store
};

}  // namespace strongroom::backend
