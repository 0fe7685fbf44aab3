// Where services put their audit events: every RPC outcome and every state change.
// The hash-chained, append-only store lives in backend (the backend issue); until a service
// is wired to it, events go to the JSON log with "audit":"true" so nothing is silently lost.
#pragma once

#include <memory>
#include <string>

namespace strongroom {

struct AuditEvent {
  std::string actor;    // caller SPIFFE id, or "unauthenticated"
  std::string action;   // e.g. the RPC path "/strongroom.v1.Netd/AllocatePort"
  std::string object;   // the object acted on, when known
  std::string outcome;  // status code name, e.g. "OK", "PERMISSION_DENIED"
  std::string detail;   // the reason for a refusal or failure
};

class AuditSink {
 public:
  virtual ~AuditSink() = default;
  virtual void Record(const AuditEvent& event) = 0;
};

// Writes each event as a JSON log line.
std::shared_ptr<AuditSink> MakeLogAuditSink();

}  // namespace strongroom
