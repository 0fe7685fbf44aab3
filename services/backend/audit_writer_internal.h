// What audit_writer.cc (the queue and its thread) and audit_batch.cc (the SQL of one batch) share.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "services/backend/audit_writer.h"
#include "services/backend/db.h"
#include "strongroom/v1/backend.pb.h"

namespace strongroom::backend {

// A caller's share of a batch: one of backend's own records, or one AppendAudit call's records.
struct AuditWriter::Unit {
  bool remote = false;
  std::string recorded_by;               // remote: the sender's verified identity
  std::vector<v1::AuditRecord> records;  // drafts: the sender's fields only
  uint64_t spool_id = 0;                 // local: its position in backend's spool (0: not spooled)
  absl::Time enqueued;                   // when it was accepted (the lag is measured from here)
  bool committed = false;                // in the chain (written by the writer thread only)
  bool done = false;                     // committed and reported (guarded by the writer's mu_)
  std::condition_variable changed;       // done, or the writer became unhealthy or stopped (with mu_)
  v1::AppendAuditResponse response;      // remote: the outcome
};

// What the append attempts of one round did, summed over them.
struct BatchResult {
  uint64_t appended = 0;        // records now in the chain
  uint64_t unstorable = 0;      // records replaced by an audit.record_unstorable note
  uint64_t spool_position = 0;  // the highest spool position now held by the chain
  bool full_page = false;       // a sweep found as many timeline rows as it asked for: more may wait
  bool swept_any = false;       // the last attempt chained at least one timeline row
};

// Whether a failed append failed for the data it carried (a record the database refuses), not for the
// database being unreachable: SQLSTATE classes 22, 23 and 54, and our CHECK constraints and triggers.
bool IsDataError(const absl::Status& status);

// Prepares the statements AppendBatch uses, on every connection.
void PrepareBatchStatements(Database& db);

// The chained record that stands in for `record` when the database cannot store it: action
// "audit.record_unstorable", `why` and an escaped (printable ASCII) copy of the record in its details, the
// same time and, for a sender's record, the same recorded_by and source_sequence. `actor`: who says so
// (backend).
v1::AuditRecord UnstorableNote(const v1::AuditRecord& record, const absl::Status& why,
                               const std::string& actor);

}  // namespace strongroom::backend
