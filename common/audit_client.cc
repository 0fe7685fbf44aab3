#include "common/audit_client.h"

#include <condition_variable>
#include <mutex>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/audit_spool.h"
#include "common/log.h"
#include "common/status.h"
#include "common/tls.h"
#include "strongroom/v1/backend.grpc.pb.h"

namespace strongroom {
namespace {

constexpr absl::Duration kCallTimeout = absl::Seconds(15);
constexpr absl::Duration kMaxBackoff = absl::Seconds(10);
constexpr size_t kMaxDetailValue = 1024;

google::protobuf::Timestamp Micros(absl::Time t) {
  google::protobuf::Timestamp ts;
  const int64_t us = absl::ToUnixMicros(t);
  ts.set_seconds(us / 1000000);
  ts.set_nanos(static_cast<int32_t>(us % 1000000) * 1000);
  return ts;
}

class Shipper final : public AuditShipper {
 public:
  Shipper(AuditShippingOptions options, std::unique_ptr<AuditSpool> spool,
          std::unique_ptr<v1::Backend::Stub> stub)
      : options_(std::move(options)), spool_(std::move(spool)), stub_(std::move(stub)) {
    thread_ = std::thread([this] { Run(); });
  }

  ~Shipper() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    wake_.notify_all();
    thread_.join();
  }

  void Record(const AuditEvent& e) override {
    v1::AuditRecord r;
    *r.mutable_time() = Micros(e.time);
    *r.mutable_actor() = AuditIdentityOf(e.actor);
    r.set_action(e.action);
    r.set_object(e.object.substr(0, 256));
    r.set_outcome(AuditOutcomeOfCode(e.outcome));
    r.set_status_code(AuditStatusCodeOf(e.outcome));
    for (const auto& [key, value] : e.details) (*r.mutable_details())[key] = value.substr(0, kMaxDetailValue);
    if (!e.detail.empty()) (*r.mutable_details())["error"] = e.detail.substr(0, kMaxDetailValue);
    std::lock_guard<std::mutex> lock(mu_);
    if (spool_->pending_bytes() >= options_.max_spool_bytes) {
      ++dropped_;
      return;
    }
    if (absl::Status s = spool_->Append(std::move(r)); !s.ok()) {
      ++dropped_;
      Log(LogLevel::kError, "audit spool append failed; event dropped", {{"error", s.ToString()}});
      return;
    }
    if (static_cast<int>(spool_->pending().size()) >= options_.max_batch) wake_.notify_one();
  }

  bool Flush(absl::Duration timeout) override {
    std::unique_lock<std::mutex> lock(mu_);
    const uint64_t target = spool_->next_sequence() - 1;
    flush_requested_ = true;
    wake_.notify_one();
    return shipped_.wait_for(lock, absl::ToChronoMilliseconds(timeout),
                             [&] { return spool_->acknowledged() >= target || spool_->pending().empty(); });
  }

  uint64_t acknowledged() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return spool_->acknowledged();
  }
  size_t pending() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return spool_->pending().size();
  }
  uint64_t dropped() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return dropped_;
  }

 private:
  void Run() {
    absl::Duration backoff = options_.flush_interval;
    absl::Time last_sync = absl::Now();
    bool failing = false;
    std::unique_lock<std::mutex> lock(mu_);
    while (!stop_) {
      wake_.wait_for(lock, absl::ToChronoMilliseconds(failing ? backoff : options_.flush_interval), [&] {
        return stop_ || flush_requested_ || static_cast<int>(spool_->pending().size()) >= options_.max_batch;
      });
      flush_requested_ = false;
      if (absl::Now() - last_sync >= options_.sync_interval) {
        (void)spool_->Sync();
        last_sync = absl::Now();
      }
      if (spool_->pending().empty()) {
        shipped_.notify_all();
        continue;
      }
      v1::AppendAuditRequest request;
      for (const v1::AuditRecord& r : spool_->pending()) {
        if (request.records_size() >= options_.max_batch) break;
        *request.add_records() = r;
      }
      const bool fresh = spool_->fresh();
      lock.unlock();
      v1::AppendAuditResponse response;
      grpc::ClientContext context;
      context.set_deadline(absl::ToChronoTime(absl::Now() + kCallTimeout));
      const absl::Status status = FromGrpcStatus(stub_->AppendAudit(&context, request, &response));
      lock.lock();
      if (!status.ok()) {
        if (!failing)
          Log(LogLevel::kWarn, "cannot ship audit records; they stay spooled",
              {{"error", status.ToString()}});
        failing = true;
        backoff = std::min(kMaxBackoff, backoff * 2);
        continue;
      }
      if (failing) Log(LogLevel::kInfo, "audit shipping resumed");
      failing = false;
      backoff = options_.flush_interval;
      const uint64_t sent_last = request.records(request.records_size() - 1).source_sequence();
      if (fresh && response.appended() == 0 && response.acknowledged_source_sequence() >= sent_last) {
        // A wiped spool starts numbering at 1 again, but backend holds this daemon's earlier records:
        // renumber after them instead of having everything skipped as duplicates.
        Log(LogLevel::kWarn, "audit spool was reset; renumbering after backend's acknowledged sequence",
            {{"acknowledged", absl::StrCat(response.acknowledged_source_sequence())}});
        (void)spool_->Renumber(response.acknowledged_source_sequence() + 1);
        continue;
      }
      if (absl::Status s = spool_->Acknowledge(std::min(response.acknowledged_source_sequence(), sent_last));
          !s.ok()) {
        Log(LogLevel::kError, "cannot record the audit acknowledgement", {{"error", s.ToString()}});
      }
      shipped_.notify_all();
    }
  }

  const AuditShippingOptions options_;
  mutable std::mutex mu_;  // guards the spool and the flags below
  std::unique_ptr<AuditSpool> spool_;
  const std::unique_ptr<v1::Backend::Stub> stub_;
  std::condition_variable wake_;     // a batch is full, a flush is wanted, or stop
  std::condition_variable shipped_;  // an acknowledgement arrived
  bool stop_ = false;
  bool flush_requested_ = false;
  uint64_t dropped_ = 0;  // events refused: spool full or unwritable
  std::thread thread_;    // runs Run()
};

}  // namespace

absl::StatusOr<std::shared_ptr<AuditShipper>> MakeShippingAuditSink(AuditShippingOptions options) {
  if (options.max_batch < 1 || options.max_batch > 1000) {
    return absl::InvalidArgumentError("audit shipping: max_batch must be 1..1000");
  }
  SR_ASSIGN_OR_RETURN(std::unique_ptr<AuditSpool> spool, AuditSpool::Open(options.spool_dir));
  SR_ASSIGN_OR_RETURN(std::shared_ptr<grpc::Channel> channel,
                      MakeSecureChannel(options.backend_address, options.tls,
                                        {options.trust_domain, Role::kBackend, std::nullopt}));
  return std::make_shared<Shipper>(std::move(options), std::move(spool), v1::Backend::NewStub(channel));
}

}  // namespace strongroom
