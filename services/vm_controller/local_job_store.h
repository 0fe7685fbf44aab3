// Durable record of every local job vm-controller handles (SQLite, WAL, synchronous=FULL): one row per token with
// the LocalJob message, plus an append-only log of its state transitions. A restarted controller resumes from it.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "strongroom/v1/vm_controller.pb.h"

struct sqlite3;

namespace strongroom::vm_controller {

class LocalJobStore {
 public:
  static absl::StatusOr<std::unique_ptr<LocalJobStore>> Open(const std::string& path);
  ~LocalJobStore();

  // Records a new job keyed by its token. A repeat with an equal request returns the stored job and false; a
  // different request for the same token is ALREADY_EXISTS.
  absl::StatusOr<std::pair<v1::LocalJob, bool>> Insert(const v1::LocalJob& job);

  absl::StatusOr<v1::LocalJob> Get(const std::string& token);
  absl::StatusOr<v1::LocalJob> GetByJobId(uint32_t local_job_id);
  absl::StatusOr<v1::LocalJob> GetByWorkload(const std::string& workload_id);

  // Moves the job to `to` (through the state machine; staying in the same state is allowed) after `mutate` edited
  // its other fields, and logs the transition with `reason`. With `only_from` non-empty, the job must currently be
  // in one of those states (FAILED_PRECONDITION otherwise), so concurrent actors cannot overtake each other.
  // All or nothing.
  absl::StatusOr<v1::LocalJob> Update(const std::string& token, v1::LocalJobState to,
                                      const std::function<void(v1::LocalJob*)>& mutate, const std::string& reason,
                                      const std::vector<v1::LocalJobState>& only_from = {});

  // Jobs in any of `states` (all when empty), newest submit first, at most `limit`.
  absl::StatusOr<std::vector<v1::LocalJob>> List(const std::vector<v1::LocalJobState>& states, int limit);

 private:
  explicit LocalJobStore(sqlite3* db) : db_(db) {}
  absl::StatusOr<v1::LocalJob> GetWhere(const std::string& where, const std::string& value)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status Put(const v1::LocalJob& job, bool insert) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  absl::Mutex mu_;
  // The one connection; SQLite serialises writers anyway, the mutex keeps transactions whole.
  sqlite3* const db_ ABSL_GUARDED_BY(mu_);
};

}  // namespace strongroom::vm_controller
