// How every daemon other than backend puts its audit events into the one hash-chained log: it ships them to
// backend with AppendAudit. Why this design (docs/AUDIT.md): backend's single chain gives one order, one
// verifier and one place to query; a local disk spool (audit_spool.h) means a backend outage or a daemon
// crash loses no record; batches amortise the RPC and the database commit; (recorded_by, source_sequence)
// makes every retry idempotent, so at-least-once delivery becomes exactly-once in the chain, and a gap is
// itself recorded.
//
//   spec.make_audit_sink = [&] { return MakeShippingAuditSink(options); };  // in a daemon's main.cc
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/audit.h"
#include "strongroom/v1/config.pb.h"

namespace strongroom {

struct AuditShippingOptions {
  std::string backend_address;  // HOST:PORT of backend
  v1::TlsFiles tls;             // this daemon's certificate: its identity becomes recorded_by
  std::string trust_domain;
  std::string spool_dir;  // created 0700 if missing; must survive restarts
  int max_batch = 500;    // records per AppendAudit (backend takes at most 1000)
  absl::Duration flush_interval = absl::Milliseconds(200);  // records wait at most this long before shipping
  absl::Duration sync_interval = absl::Seconds(1);          // spool fdatasync period (the host-crash window)
  uint64_t max_spool_bytes = uint64_t{1} << 30;             // beyond it events are dropped and counted
};

class AuditShipper : public AuditSink {
 public:
  // Appends to the spool (one write(2)) and returns; a thread ships. Never blocks on backend.
  void Record(const AuditEvent& event) override = 0;
  // Waits until everything recorded so far is acknowledged by backend; false on timeout.
  virtual bool Flush(absl::Duration timeout) = 0;
  virtual uint64_t acknowledged() const = 0;
  virtual size_t pending() const = 0;
  virtual uint64_t dropped() const = 0;
};

// Opens the spool (shipping what a previous run left) and starts the shipping thread.
absl::StatusOr<std::shared_ptr<AuditShipper>> MakeShippingAuditSink(AuditShippingOptions options);

}  // namespace strongroom
