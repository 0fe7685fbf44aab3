// Reports to backend (WorkloadReady / WorkloadFailed / WorkloadStopped) for workloads whose spec names a job.
// Durable and ordered: a state change and the reports it causes are written to the tracking DB's outbox in
// one transaction (Store::Put); a sender thread delivers them oldest first, one workload's reports strictly
// in order, retrying with exponential backoff while backend is unreachable, and across agent restarts (the
// outbox is read from the DB). A report backend refuses for good (NOT_FOUND, FAILED_PRECONDITION,
// INVALID_ARGUMENT, PERMISSION_DENIED) is dropped with a log line and an audit event
// `host-agent.report_dropped`; anything else is retried.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/audit.h"
#include "services/host_agent/store.h"
#include "strongroom/v1/config.pb.h"
#include "strongroom/v1/host_agent.pb.h"

namespace strongroom::host_agent {

inline constexpr const char* kReportReady = "ready";
inline constexpr const char* kReportFailed = "failed";
inline constexpr const char* kReportStopped = "stopped";

// What identifies this agent in reports.
struct ReportContext {
  std::string node;          // this node, the agent's certificate instance (backend checks it)
  std::string trust_domain;  // for the workload's SPIFFE id when the spec gives none
};

// The reports a transition of `record` from `from` causes (pure): none unless record.spec().job has a
// global_job_id; RUNNING -> ready; STOPPED -> stopped; FAILED -> failed, then stopped (final_state FAILED,
// with the scrub report: every FAILED workload has been torn down first).
std::vector<OutboxEntry> ReportsFor(const v1::Workload& record, v1::WorkloadState from,
                                    const ReportContext& context);

// Whether backend's answer means "never retry this report".
bool IsPermanentReportError(absl::StatusCode code);

// Delivers one report. The real one calls backend over mTLS; unit tests use a fake.
class ReportSender {
 public:
  virtual ~ReportSender() = default;
  virtual absl::Status Send(const OutboxEntry& report) = 0;
};

// backend at `address` (HOST:PORT), presenting `tls` (role host-agent); backend must prove role backend.
absl::StatusOr<std::unique_ptr<ReportSender>> MakeBackendReportSender(const std::string& address,
                                                                      const v1::TlsFiles& tls,
                                                                      const std::string& trust_domain,
                                                                      absl::Duration rpc_timeout);

struct OutboxOptions {
  std::string agent_id;  // actor of the audit events
  absl::Duration initial_backoff = absl::Milliseconds(500);
  absl::Duration max_backoff = absl::Seconds(30);
  absl::Duration rescan = absl::Seconds(5);  // re-reads the DB at least this often
};

// The sender thread over the store's outbox.
class Outbox {
 public:
  Outbox(Store* store, std::unique_ptr<ReportSender> sender, std::shared_ptr<AuditSink> audit,
         OutboxOptions options);
  ~Outbox();  // stops the thread (an RPC in flight finishes first)

  void Start();
  // New entries were committed: look now rather than at the next rescan.
  void Kick();
  // Test helper: waits until the outbox is empty; false on timeout.
  bool WaitEmpty(absl::Duration timeout);
  uint64_t delivered() const;
  uint64_t dropped() const;

 private:
  struct Backoff {
    int attempts = 0;
    absl::Time next_try = absl::InfinitePast();
  };
  void Run();
  // One pass over the outbox; returns when the next pass is due.
  absl::Time Pass();

  Store* const store_;                          // owns the outbox table
  const std::unique_ptr<ReportSender> sender_;  // backend (or a fake)
  const std::shared_ptr<AuditSink> audit_;      // drops are audited
  const OutboxOptions options_;

  mutable absl::Mutex mu_;  // guards everything below
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  bool kicked_ ABSL_GUARDED_BY(mu_) = false;
  bool empty_ ABSL_GUARDED_BY(mu_) = false;  // the last pass found nothing pending
  uint64_t delivered_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t dropped_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<std::string, Backoff> backoff_;  // per workload; only the sender thread touches it
  std::thread thread_;
};

}  // namespace strongroom::host_agent
