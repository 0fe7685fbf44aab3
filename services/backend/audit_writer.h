// The single writer of the audit chain. Everything that enters the chain goes through here, in one thread, in
// batches (one transaction per batch, so appends share commits the way PostgreSQL's group commit would):
//   1. job timeline rows not yet chained (state transitions and events, committed with the job itself: the
//      outbox; a crash between the job's commit and the chain loses nothing);
//   2. backend's own events: one per RPC and per refusal (ChainAuditSink, the AuditSink of backend's daemon);
//   3. batches of other services' records (AppendAudit), deduplicated per (recorded_by, source_sequence).
// Each batch takes a transaction-scoped advisory lock, reads the head, hashes the new records (common/
// audit_chain.h) and inserts them. Callers wait for the commit: an RPC is answered after its audit record is
// durable, except while the database is unreachable, when records queue in memory (bounded; a loss is counted
// and itself recorded once the database is back).
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
#include "services/backend/db.h"
#include "strongroom/v1/backend.pb.h"

namespace strongroom::backend {

class AuditWriter {
 public:
  struct Options {
    std::string identity;  // backend's SPIFFE id: recorded_by of its own records and actor of its own events
    int max_batch = 2000;
    int max_queued = 200000;
    absl::Duration local_wait = absl::Seconds(5);      // how long RecordLocal waits for the commit
    absl::Duration sweep_interval = absl::Seconds(1);  // how often unchained timeline rows are looked for
  };
  AuditWriter(Database* db, Options options);
  ~AuditWriter();  // stops the thread after a last flush attempt

  void Start();
  // Makes a last append attempt and stops the thread; later events are dropped silently. Idempotent.
  void Stop();

  // Appends one of backend's own events and waits for its commit (up to local_wait; not at all while the
  // database is known to be down).
  void RecordLocal(const AuditEvent& event);

  // Appends another service's records, in order, as `recorded_by` (the caller's verified identity). Waits
  // until committed or `deadline`: DEADLINE_EXCEEDED / UNAVAILABLE then (the records stay queued; a retry is
  // deduplicated).
  absl::StatusOr<v1::AppendAuditResponse> AppendRemote(const std::string& recorded_by,
                                                       std::vector<v1::AuditRecord> records,
                                                       absl::Time deadline);

  // New timeline rows were committed: chain them soon.
  void Kick();

 private:
  struct Unit;
  void Run();
  // `sweep`: also chain committed timeline rows (when kicked, and every sweep_interval).
  absl::Status AppendBatch(std::vector<std::shared_ptr<Unit>>& units, bool sweep);
  // Wakes every caller still waiting for a queued unit (the database went down, or stop). Holds mu_.
  void WakeAllWaiters();

  Database* const db_;  // not owned
  const Options options_;

  mutable std::mutex mu_;                    // guards the members below
  std::condition_variable wake_;             // work arrived, or stop
  std::deque<std::shared_ptr<Unit>> queue_;  // waiting to be appended, in arrival order
  size_t queued_records_ = 0;                // records in queue_
  bool kicked_ = false;                      // timeline rows are waiting
  bool stop_ = false;
  bool healthy_ = true;            // the last append attempt succeeded
  uint64_t dropped_ = 0;           // events refused because the queue was full
  uint64_t dropped_reported_ = 0;  // of those, already recorded in the chain
  // Each waiting caller waits on its own unit's condition variable, so a commit wakes exactly the callers
  // whose records it committed (a shared one woke every waiter per batch: most went back to sleep).
  std::thread thread_;  // runs Run()
};

// backend's AuditSink: every RPC and refusal of the backend daemon goes straight into the chain.
std::shared_ptr<AuditSink> MakeChainAuditSink(std::shared_ptr<AuditWriter> writer);

}  // namespace strongroom::backend
