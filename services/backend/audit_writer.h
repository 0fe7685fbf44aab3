// The single writer of the audit chain. Everything that enters the chain goes through here, in one thread, in
// batches (one transaction per batch, so appends share commits the way PostgreSQL's group commit would):
//   1. job timeline rows not yet chained (state transitions and events, committed with the job itself: the
//      outbox; a crash between the job's commit and the chain loses nothing);
//   2. backend's own events: one per RPC and per refusal (ChainAuditSink, the AuditSink of backend's daemon);
//   3. batches of other services' records (AppendAudit), deduplicated per (recorded_by, source_sequence).
// Each batch takes a transaction-scoped advisory lock, reads the head, hashes the new records (common/
// audit_chain.h) and inserts them (audit_batch.cc). Callers wait for the commit: an RPC is answered after its
// audit record is durable.
//
// Nothing stops the chain for long, and a stall is loud (docs/AUDIT.md, 3.3.4):
//   - every value is made storable first (common/audit_text.h); a batch the database still refuses for its
//   data
//     is split until the record it cannot store is found, and that record is replaced by a chained
//     "audit.record_unstorable" record with an escaped copy, so the others go on;
//   - backend's own records are written to a local spool (common/audit_spool.h) before they are queued, and
//   the
//     spool position the chain holds is committed with each batch: a restart replays what the chain lacks,
//     and a record the spool lost anyway (a truncated file) leaves an "audit.records_lost" record;
//   - when nothing commits for `stall_after`, Health() reports why (NOT_SERVING, audited calls refused), an
//     ERROR line repeats, and the metrics show the pending records and the age of the oldest.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/audit.h"
#include "common/audit_spool.h"
#include "services/backend/db.h"
#include "strongroom/v1/backend.pb.h"

namespace strongroom::backend {

struct BatchResult;  // audit_writer_internal.h

class AuditWriter {
 public:
  struct Options {
    std::string identity;   // backend's SPIFFE id: recorded_by of its own records and actor of its own events
    std::string spool_dir;  // backend's own records before they are committed
    int max_batch = 2000;
    int max_queued = 200000;
    absl::Duration local_wait = absl::Seconds(5);      // how long RecordLocal waits for the commit
    absl::Duration sweep_interval = absl::Seconds(1);  // how often unchained timeline rows are looked for
    absl::Duration stall_after = absl::Seconds(5);     // no commit for this long: the chain is stalled
    absl::Duration stall_log_interval = absl::Seconds(10);  // how often the stall's ERROR line repeats
  };
  AuditWriter(Database* db, Options options);
  ~AuditWriter();  // stops the thread after a last flush attempt

  // Opens the spool, queues what it holds that the chain lacks (a crash's leftovers) and records what it
  // lost, then starts the thread.
  absl::Status Start();
  // Makes a last append attempt and stops the thread; later events are dropped silently. Idempotent.
  void Stop();

  // Appends one of backend's own events: spooled, queued, and waited for until committed (up to local_wait;
  // not at all while the chain is failing). OK once committed; UNAVAILABLE saying why not.
  absl::Status RecordLocal(const AuditEvent& event);

  // Appends another service's records, in order, as `recorded_by` (the caller's verified identity). Waits
  // until committed or `deadline`: DEADLINE_EXCEEDED / UNAVAILABLE then (the records stay queued; a retry is
  // deduplicated).
  absl::StatusOr<v1::AppendAuditResponse> AppendRemote(const std::string& recorded_by,
                                                       std::vector<v1::AuditRecord> records,
                                                       absl::Time deadline);

  // New timeline rows were committed: chain them soon.
  void Kick();

  // How far the chain lags what was accepted.
  v1::AuditLag Lag() const;
  // OK while the chain commits; UNAVAILABLE with the lag and the last error once it has not for stall_after.
  absl::Status Health() const;
  // strongroom_audit_* series for /metrics.
  std::string RenderMetrics() const;

 private:
  struct Unit;
  using Batch = std::vector<std::shared_ptr<Unit>>;
  void Run();
  // One transaction (audit_batch.cc): timeline rows (up to `sweep_limit`, none when 0), the drop note, the
  // units. Marks the units committed and fills their responses; adds to `result`. `poison_row`: a timeline
  // row id to chain as an unstorable note instead of itself.
  absl::Status AppendBatch(Batch& units, int sweep_limit, int64_t poison_row, BatchResult* result);
  // The batch failed for its data: commits it piece by piece, replacing what the database cannot store by a
  // note. Fails (and the chain stalls, loudly) only if even a note cannot be stored or the database is down.
  absl::Status Isolate(Batch& units, bool sweep, BatchResult* result);
  absl::Status IsolateUnit(const std::shared_ptr<Unit>& unit, const absl::Status& refused,
                           BatchResult* result);
  absl::Status IsolateSweep(BatchResult* result);
  // The spool's leftovers and losses at start.
  absl::Status Recover();
  // Wakes every caller still waiting for a queued unit (the database went down, or stop). Holds mu_.
  void WakeAllWaiters();
  // UNAVAILABLE with the lag, or OK. Holds mu_.
  absl::Status HealthLocked(absl::Time now) const;

  Database* const db_;  // not owned
  const Options options_;

  mutable std::mutex mu_;                    // guards the members below
  std::condition_variable wake_;             // work arrived, or stop
  std::deque<std::shared_ptr<Unit>> queue_;  // waiting to be appended, in arrival order
  std::unique_ptr<AuditSpool> spool_;        // backend's own records until the chain holds them
  size_t queued_records_ = 0;                // records in queue_
  bool kicked_ = false;                      // timeline rows are waiting
  bool stop_ = false;
  bool healthy_ = true;                              // the last append attempt succeeded
  absl::Time failing_since_ = absl::InfinitePast();  // when appends started failing (healthy_ false)
  absl::Time last_commit_ = absl::InfinitePast();    // the last successful append
  absl::Status last_error_;                          // why the last append failed
  uint64_t dropped_ = 0;                             // events refused because the queue was full
  uint64_t dropped_reported_ = 0;                    // of those, already recorded in the chain
  uint64_t appended_ = 0;                            // records appended by this process
  uint64_t unstorable_ = 0;                          // records replaced by an audit.record_unstorable note
  uint64_t failures_ = 0;                            // failed append attempts
  // Each waiting caller waits on its own unit's condition variable, so a commit wakes exactly the callers
  // whose records it committed (a shared one woke every waiter per batch: most went back to sleep).
  std::thread thread_;  // runs Run()
};

// backend's AuditSink: every RPC and refusal of the backend daemon goes straight into the chain.
std::shared_ptr<AuditSink> MakeChainAuditSink(std::shared_ptr<AuditWriter> writer);

}  // namespace strongroom::backend
