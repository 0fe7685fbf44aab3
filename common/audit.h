// Where services put their audit events: every RPC outcome and every refusal (RpcObserver,
// AuthzProcessor), plus service-specific events. One mechanism for the whole system: every
// event ends up as an append-only, hash-chained record in backend's PostgreSQL (docs/AUDIT.md).
//   - backend appends its own events to the chain directly (services/backend/audit_writer.h);
//   - every other daemon ships them with AppendAudit through a local disk spool
//     (MakeShippingAuditSink in common/audit_client.h);
//   - a daemon not configured for either writes them as JSON log lines (MakeLogAuditSink).
#pragma once

#include <map>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "common/identity.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "google/protobuf/message.h"
#include "strongroom/v1/common.pb.h"

namespace strongroom {

struct AuditEvent {
  std::string actor;    // caller SPIFFE id, or "unauthenticated"
  std::string action;   // e.g. the RPC path "/strongroom.v1.Netd/AllocatePort"
  std::string object;   // the object acted on, when known, e.g. "job/gj-1"
  std::string outcome;  // status code name, e.g. "OK", "PERMISSION_DENIED"
  std::string detail;   // the reason for a refusal or failure
  // Extra context: keys ^[a-z][a-z0-9_.]{0,63}$; any bytes in the values (audit_text.h says how they are
  // stored).
  std::map<std::string, std::string> details = {};
  absl::Time time = absl::Now();  // when it happened, by this host's clock
};

class AuditSink {
 public:
  virtual ~AuditSink() = default;
  // Records one event. May block briefly (backend waits until the record is committed);
  // never fails: a sink that cannot store an event keeps it, or counts and reports the loss.
  virtual void Record(const AuditEvent& event) = 0;
  // Records one event and says whether it is now durable where this sink keeps it (backend: committed to the
  // chain; a shipping daemon: in its spool). The RPC observer answers a call only after this succeeded
  // (UNAVAILABLE with the reason otherwise): an audited call never answers without its record.
  virtual absl::Status RecordDurably(const AuditEvent& event) {
    Record(event);
    return absl::OkStatus();
  }
  // OK while this sink keeps up. Otherwise UNAVAILABLE saying why (e.g. the chain has not committed for 7 s,
  // 120 records pending): audited calls are then refused before their handler runs (AuthzProcessor) and the
  // health service reports NOT_SERVING (RunDaemon). Cheap: called for every call.
  virtual absl::Status Health() const { return absl::OkStatus(); }
  // This sink's own Prometheus series (pending records, their age, losses), appended to /metrics; "" for
  // none.
  virtual std::string RenderMetrics() const { return ""; }
};

// Writes each event as a JSON log line with "audit":"true".
std::shared_ptr<AuditSink> MakeLogAuditSink();

// The object an RPC request is about, derived from well-known fields so every service's calls
// name their objects without per-method code: global_job_id -> "job/<id>", a JobSelector ->
// "job/<id>" | "local-job/<cluster>/<id or token>" | "global-slurm-job/<n>", workload_id (also
// inside spec) -> "workload/<id>", a LocalJobKey `local` -> "local-job/...", project ->
// "project/<name>". Empty when none applies. Whole: the record keeps at most 256 bytes of it, with the length
// and digest of the rest (common/audit_text.h).
std::string AuditObjectOf(const google::protobuf::Message& request);

// The record of `event` as the service that observed it states it: time (cut to whole microseconds, what
// PostgreSQL keeps, so it hashes the same before and after storage), actor, action, object, outcome,
// status_code and details, with `detail` as details["error"]; made storable (common/audit_text.h), so any
// bytes in any field reach the chain. Backend assigns the rest (sequence, hashes, recorded_by,
// received_time).
v1::AuditRecord AuditRecordOfEvent(const AuditEvent& event);

// The chain's fields for an event: outcome SUCCESS for "OK", DENIED for UNAUTHENTICATED and
// PERMISSION_DENIED, FAILURE otherwise; status_code from the code name; `detail` becomes
// details["error"]. `actor` is parsed as a SPIFFE id when it is one. Times are cut to whole
// microseconds (what PostgreSQL keeps), so a record hashes the same before and after storage.
v1::AuditOutcome AuditOutcomeOfCode(absl::string_view code_name);
int AuditStatusCodeOf(absl::string_view code_name);
v1::Identity AuditIdentityOf(absl::string_view spiffe_id);

// The wire form of a role, for every message that carries an Identity.
v1::Role ProtoRole(Role role);

}  // namespace strongroom
