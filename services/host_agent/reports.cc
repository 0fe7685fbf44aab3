#include "services/host_agent/reports.h"

#include <chrono>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/identity.h"
#include "common/log.h"
#include "common/status.h"
#include "common/tls.h"
#include "strongroom/v1/backend.grpc.pb.h"

namespace strongroom::host_agent {
namespace {

std::string Serialized(const google::protobuf::Message& m) { return m.SerializeAsString(); }

class BackendReportSender : public ReportSender {
 public:
  BackendReportSender(std::shared_ptr<grpc::Channel> channel, absl::Duration timeout)
      : stub_(v1::Backend::NewStub(channel)), timeout_(timeout) {}

  absl::Status Send(const OutboxEntry& report) override {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::chrono::milliseconds(absl::ToInt64Milliseconds(timeout_)));
    if (report.kind == kReportReady) {
      v1::WorkloadReadyRequest req;
      if (!req.ParseFromString(report.payload)) return Unparsable(report);
      v1::WorkloadReadyResponse resp;
      return FromGrpcStatus(stub_->WorkloadReady(&ctx, req, &resp));
    }
    if (report.kind == kReportFailed) {
      v1::WorkloadFailedRequest req;
      if (!req.ParseFromString(report.payload)) return Unparsable(report);
      v1::WorkloadFailedResponse resp;
      return FromGrpcStatus(stub_->WorkloadFailed(&ctx, req, &resp));
    }
    if (report.kind == kReportStopped) {
      v1::WorkloadStoppedRequest req;
      if (!req.ParseFromString(report.payload)) return Unparsable(report);
      v1::WorkloadStoppedResponse resp;
      return FromGrpcStatus(stub_->WorkloadStopped(&ctx, req, &resp));
    }
    return absl::InvalidArgumentError(
        absl::StrCat("outbox entry ", report.seq, ": unknown kind ", report.kind));
  }

 private:
  static absl::Status Unparsable(const OutboxEntry& r) {
    return absl::InvalidArgumentError(absl::StrCat("outbox entry ", r.seq, " (", r.kind, ") does not parse"));
  }
  const std::unique_ptr<v1::Backend::Stub> stub_;  // one channel, reconnecting on its own
  const absl::Duration timeout_;                   // per RPC
};

}  // namespace

std::vector<OutboxEntry> ReportsFor(const v1::Workload& record, v1::WorkloadState from,
                                    const ReportContext& context) {
  const v1::WorkloadState to = record.state();
  const v1::WorkloadSpec& spec = record.spec();
  if (from == to || !spec.has_job() || spec.job().global_job_id().empty()) return {};
  std::vector<OutboxEntry> out;
  auto add = [&](const char* kind, const google::protobuf::Message& m) {
    OutboxEntry e;
    e.workload_id = spec.workload_id();
    e.kind = kind;
    e.payload = Serialized(m);
    out.push_back(std::move(e));
  };
  if (to == v1::WORKLOAD_STATE_RUNNING) {
    v1::WorkloadReadyRequest r;
    r.set_workload_id(spec.workload_id());
    r.set_global_job_id(spec.job().global_job_id());
    r.set_node(context.node);
    // Without netd (development) the workload has only loopback; backend wants an address all the same.
    r.add_addresses(record.network().ipv4_address().empty() ? "127.0.0.1" : record.network().ipv4_address());
    *r.mutable_identity() = record.identity();
    if (r.identity().spiffe_id().empty()) {
      v1::Identity* id = r.mutable_identity();
      if (id->trust_domain().empty()) id->set_trust_domain(context.trust_domain);
      if (id->role() == v1::ROLE_UNSPECIFIED) id->set_role(v1::ROLE_WORKLOAD);
      if (id->instance().empty()) id->set_instance(spec.workload_id());
      id->set_spiffe_id(absl::StrCat("spiffe://", id->trust_domain(), "/workload/", id->instance()));
    }
    r.set_kind(spec.kind());
    r.set_enrollment_ticket_sha256(record.enrollment_ticket_sha256());
    if (record.has_running_time()) *r.mutable_ready_time() = record.running_time();
    add(kReportReady, r);
  } else if (to == v1::WORKLOAD_STATE_FAILED || to == v1::WORKLOAD_STATE_STOPPED) {
    if (to == v1::WORKLOAD_STATE_FAILED) {
      v1::WorkloadFailedRequest f;
      f.set_workload_id(spec.workload_id());
      f.set_global_job_id(spec.job().global_job_id());
      f.set_node(context.node);
      *f.mutable_failure() = record.failure();
      add(kReportFailed, f);
    }
    v1::WorkloadStoppedRequest s;
    s.set_workload_id(spec.workload_id());
    s.set_global_job_id(spec.job().global_job_id());
    s.set_node(context.node);
    s.set_final_state(to);
    if (record.has_exit()) *s.mutable_exit() = record.exit();
    *s.mutable_scrub() = record.scrub();
    if (to == v1::WORKLOAD_STATE_FAILED) *s.mutable_failure() = record.failure();
    add(kReportStopped, s);
  }
  return out;
}

bool IsPermanentReportError(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kPermissionDenied:
      return true;
    default:
      return false;
  }
}

absl::StatusOr<std::unique_ptr<ReportSender>> MakeBackendReportSender(const std::string& address,
                                                                      const v1::TlsFiles& tls,
                                                                      const std::string& trust_domain,
                                                                      absl::Duration rpc_timeout) {
  SR_ASSIGN_OR_RETURN(
      std::shared_ptr<grpc::Channel> channel,
      MakeSecureChannel(address, tls, ServerExpectation{trust_domain, Role::kBackend, std::nullopt}));
  return std::unique_ptr<ReportSender>(new BackendReportSender(std::move(channel), rpc_timeout));
}

Outbox::Outbox(Store* store, std::unique_ptr<ReportSender> sender, std::shared_ptr<AuditSink> audit,
               OutboxOptions options)
    : store_(store), sender_(std::move(sender)), audit_(std::move(audit)), options_(std::move(options)) {}

Outbox::~Outbox() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

void Outbox::Start() { thread_ = std::thread(&Outbox::Run, this); }

void Outbox::Kick() {
  absl::MutexLock lock(&mu_);
  kicked_ = true;
  empty_ = false;
}

bool Outbox::WaitEmpty(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  return mu_.AwaitWithTimeout(
      absl::Condition(
          +[](Outbox* o) ABSL_NO_THREAD_SAFETY_ANALYSIS { return o->empty_ && !o->kicked_; }, this),
      timeout);
}

uint64_t Outbox::delivered() const {
  absl::MutexLock lock(&mu_);
  return delivered_;
}

uint64_t Outbox::dropped() const {
  absl::MutexLock lock(&mu_);
  return dropped_;
}

void Outbox::Run() {
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      if (stop_) return;
      kicked_ = false;
    }
    const absl::Time next = Pass();
    absl::MutexLock lock(&mu_);
    mu_.AwaitWithDeadline(
        absl::Condition(
            +[](Outbox* o) ABSL_NO_THREAD_SAFETY_ANALYSIS { return o->stop_ || o->kicked_; }, this),
        std::min(next, absl::Now() + options_.rescan));
  }
}

absl::Time Outbox::Pass() {
  absl::StatusOr<std::vector<OutboxEntry>> pending = store_->PendingReports();
  if (!pending.ok()) {
    Log(LogLevel::kError, "report outbox: cannot read", {{"error", pending.status().ToString()}});
    return absl::Now() + options_.initial_backoff;
  }
  absl::Time next = absl::InfiniteFuture();
  bool progress = false;
  std::set<std::string> blocked;  // a workload whose head report is waiting: its later reports wait too
  std::set<std::string> present;
  for (const OutboxEntry& e : *pending) {
    present.insert(e.workload_id);
    if (blocked.count(e.workload_id) != 0) continue;
    {
      absl::MutexLock lock(&mu_);
      if (stop_) return absl::Now();
    }
    Backoff& b = backoff_[e.workload_id];
    const absl::Time now = absl::Now();
    if (b.next_try > now) {
      blocked.insert(e.workload_id);
      next = std::min(next, b.next_try);
      continue;
    }
    const absl::Status sent = sender_->Send(e);
    const std::string what = absl::StrCat(e.kind, " report of workload ", e.workload_id);
    if (sent.ok() || IsPermanentReportError(sent.code())) {
      if (absl::Status d = store_->DeleteReport(e.seq); !d.ok()) {
        Log(LogLevel::kError, "report outbox: cannot delete a sent report",
            {{"workload", e.workload_id}, {"error", d.ToString()}});
        blocked.insert(e.workload_id);
        next = std::min(next, now + options_.initial_backoff);
        continue;
      }
      b = Backoff();
      progress = true;
      absl::MutexLock lock(&mu_);
      if (sent.ok()) {
        ++delivered_;
        Log(LogLevel::kInfo, "report delivered to backend", {{"workload", e.workload_id}, {"kind", e.kind}});
      } else {
        ++dropped_;
        Log(LogLevel::kWarn, "report refused by backend for good; dropped",
            {{"workload", e.workload_id}, {"kind", e.kind}, {"error", sent.ToString()}});
        audit_->Record({options_.agent_id,
                        "host-agent.report_dropped",
                        "workload/" + e.workload_id,
                        absl::StatusCodeToString(sent.code()),
                        absl::StrCat(what, " refused by backend: ", sent.message()),
                        {{"kind", e.kind}}});
      }
      continue;
    }
    ++b.attempts;
    absl::Duration delay = options_.initial_backoff;
    for (int i = 1; i < b.attempts && delay < options_.max_backoff; ++i) delay *= 2;
    delay = std::min(delay, options_.max_backoff);
    b.next_try = now + delay;
    blocked.insert(e.workload_id);
    next = std::min(next, b.next_try);
    Log(b.attempts == 1 ? LogLevel::kWarn : LogLevel::kInfo, "report to backend failed; will retry",
        {{"workload", e.workload_id},
         {"kind", e.kind},
         {"attempt", absl::StrCat(b.attempts)},
         {"retry_in", absl::FormatDuration(delay)},
         {"error", sent.ToString()}});
  }
  for (auto it = backoff_.begin(); it != backoff_.end();) {
    it = present.count(it->first) == 0 ? backoff_.erase(it) : std::next(it);
  }
  absl::MutexLock lock(&mu_);
  empty_ = pending->empty();
  if (progress) {
    empty_ = false;
    return absl::Now();  // look again: what was behind a delivered report may go now
  }
  return next;
}

}  // namespace strongroom::host_agent
