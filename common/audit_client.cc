#include "common/audit_client.h"

#include <condition_variable>
#include <mutex>
#include <optional>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/audit_spool.h"
#include "common/audit_text.h"
#include "common/bounded_file.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/peer_verifier.h"
#include "common/status.h"
#include "common/tls.h"
#include "google/protobuf/text_format.h"
#include "strongroom/v1/backend.grpc.pb.h"

namespace strongroom {
namespace {

constexpr absl::Duration kCallTimeout = absl::Seconds(15);
constexpr absl::Duration kMaxBackoff = absl::Seconds(10);
// How much of a refused record the note that replaces it keeps (escaped text format).
constexpr size_t kMaxRefusedCopy = 8 * 1024;

// The index N of "records[N]" in backend's INVALID_ARGUMENT message, if it names one.
std::optional<int> RefusedIndex(absl::string_view message) {
  const size_t at = message.find("records[");
  if (at == absl::string_view::npos) return std::nullopt;
  const size_t end = message.find(']', at);
  int index = 0;
  if (end == absl::string_view::npos || !absl::SimpleAtoi(message.substr(at + 8, end - at - 8), &index)) {
    return std::nullopt;
  }
  return index;
}

// What replaces a record backend refused as invalid: a chained note saying so, with an escaped copy of the
// refused record, under the same source_sequence (so backend sees no gap). `minimal` drops everything the
// sender supplied except the time, for a note that was refused itself.
v1::AuditRecord RefusalNote(const v1::AuditRecord& refused, const std::string& why, bool minimal,
                            const std::string& self) {
  v1::AuditRecord note;
  *note.mutable_time() = refused.time();
  if (minimal) {
    *note.mutable_actor() = AuditIdentityOf(self);
  } else {
    *note.mutable_actor() = refused.actor();
  }
  note.set_action("audit.record_refused");
  note.set_outcome(v1::AUDIT_OUTCOME_FAILURE);
  note.set_status_code(3);  // INVALID_ARGUMENT, as backend answered
  if (!minimal) {
    std::string copy;
    google::protobuf::TextFormat::Printer printer;
    printer.SetSingleLineMode(true);
    printer.PrintToString(refused, &copy);
    (*note.mutable_details())["refused"] = why;
    (*note.mutable_details())["copy"] = copy.substr(0, kMaxRefusedCopy);
    (*note.mutable_details())["action"] = refused.action();
    (*note.mutable_details())["object"] = refused.object();
  } else {
    (*note.mutable_details())["refused"] = EscapeAuditBytes(why.substr(0, 256));
  }
  MakeAuditRecordStorable(&note);
  note.set_source_sequence(refused.source_sequence());
  return note;
}

// The SPIFFE id of the shipping certificate, or "unauthenticated" when it cannot be read.
std::string SelfIdentity(const v1::TlsFiles& tls) {
  absl::StatusOr<std::string> pem = ReadBoundedRegularFile(tls.cert_file(), kMaxPemFileBytes);
  if (!pem.ok()) return "unauthenticated";
  absl::StatusOr<Identity> identity = IdentityFromCertificatePem(*pem);
  return identity.ok() ? identity->SpiffeId() : "unauthenticated";
}

class Shipper final : public AuditShipper {
 public:
  Shipper(AuditShippingOptions options, std::unique_ptr<AuditSpool> spool,
          std::unique_ptr<v1::Backend::Stub> stub)
      : options_(std::move(options)),
        self_(SelfIdentity(options_.tls)),
        spool_(std::move(spool)),
        stub_(std::move(stub)) {
    ReportOpenFindings();
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

  void Record(const AuditEvent& e) override { (void)RecordDurably(e); }

  absl::Status RecordDurably(const AuditEvent& e) override {
    v1::AuditRecord r = AuditRecordOfEvent(e);
    std::lock_guard<std::mutex> lock(mu_);
    return AppendLocked(std::move(r));
  }

  absl::Status Health() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return spool_error_.ok()
               ? absl::OkStatus()
               : absl::UnavailableError(absl::StrCat("the audit spool in ", options_.spool_dir,
                                                     " cannot be written: ", spool_error_.message()));
  }

  std::string RenderMetrics() const override {
    std::lock_guard<std::mutex> lock(mu_);
    std::string out;
    double oldest = 0;
    if (!spool_->pending().empty()) {
      const google::protobuf::Timestamp& t = spool_->pending().front().time();
      oldest = std::max(0.0, absl::ToDoubleSeconds(absl::Now() - absl::FromUnixSeconds(t.seconds())));
    }
    AppendPrometheusMetric(&out, "strongroom_audit_spool_pending_records", "gauge",
                           "Audit records spooled and not yet acknowledged by backend.",
                           static_cast<double>(spool_->pending().size()));
    AppendPrometheusMetric(&out, "strongroom_audit_spool_oldest_pending_seconds", "gauge",
                           "Age of the oldest spooled record (0 when none): how far shipping lags.", oldest);
    AppendPrometheusMetric(&out, "strongroom_audit_spool_pending_bytes", "gauge",
                           "Serialized size of the spooled records.",
                           static_cast<double>(spool_->pending_bytes()));
    AppendPrometheusMetric(&out, "strongroom_audit_spool_acknowledged_sequence", "gauge",
                           "The highest source_sequence backend acknowledged.",
                           static_cast<double>(spool_->acknowledged()));
    AppendPrometheusMetric(
        &out, "strongroom_audit_spool_last_acknowledged_timestamp_seconds", "gauge",
        "When backend last acknowledged a batch (0: never in this run).",
        last_ack_ == absl::InfinitePast() ? 0 : absl::ToDoubleSeconds(last_ack_ - absl::UnixEpoch()));
    AppendPrometheusMetric(&out, "strongroom_audit_spool_refused_total", "counter",
                           "Records backend refused as invalid, replaced by a chained note.",
                           static_cast<double>(refused_));
    AppendPrometheusMetric(&out, "strongroom_audit_spool_dropped_total", "counter",
                           "Events not spooled (spool full or unwritable) or refused even as a note.",
                           static_cast<double>(dropped_));
    AppendPrometheusMetric(&out, "strongroom_audit_spool_lost_total", "counter",
                           "Records found missing from the spool at start (a gap record was chained).",
                           static_cast<double>(lost_));
    return out;
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
  absl::Status AppendLocked(v1::AuditRecord r) {
    if (spool_->pending_bytes() >= options_.max_spool_bytes) {
      ++dropped_;
      return absl::UnavailableError(absl::StrCat("the audit spool is full (", spool_->pending_bytes(),
                                                 " bytes; backend unreachable?)"));
    }
    if (absl::Status s = spool_->Append(std::move(r)); !s.ok()) {
      ++dropped_;
      if (spool_error_.ok()) {
        Log(LogLevel::kError, "audit spool append failed; event dropped", {{"error", s.ToString()}});
      }
      spool_error_ = s;
      return absl::UnavailableError(absl::StrCat("audit spool: ", s.message()));
    }
    spool_error_ = absl::OkStatus();
    if (static_cast<int>(spool_->pending().size()) >= options_.max_batch) wake_.notify_one();
    return absl::OkStatus();
  }

  // What the spool found at Open: records it had issued and lost become a chained gap record; recovered
  // frames are logged.
  void ReportOpenFindings() {
    std::lock_guard<std::mutex> lock(mu_);
    if (spool_->recovered() > 0) {
      Log(LogLevel::kWarn, "audit spool: recovered records whose text was not UTF-8, escaped",
          {{"records", absl::StrCat(spool_->recovered())}});
    }
    const AuditSpoolLoss& loss = spool_->lost();
    if (loss.first == 0 && loss.bytes_cut == 0) return;
    lost_ = loss.first == 0 ? 0 : loss.last - loss.first + 1;
    Log(LogLevel::kError, "audit spool lost records; chaining a gap record", {{"reason", loss.reason}});
    (void)AppendLocked(AuditRecordOfEvent(LostRecordsEvent(loss, self_)));
  }

  // Backend refused `request` as invalid: replace the refused record (or, when the answer names none, ship
  // one record at a time until one is named), so the spool moves on. Holds mu_.
  void HandleRefusal(const v1::AppendAuditRequest& request, const absl::Status& status) {
    std::optional<int> index = RefusedIndex(status.message());
    if (!index && request.records_size() > 1) {
      isolate_ = true;
      return;
    }
    const v1::AuditRecord& refused =
        request.records(index.value_or(0) < request.records_size() ? index.value_or(0) : 0);
    const uint64_t sequence = refused.source_sequence();
    const std::string why(status.message());
    ++refused_;
    const bool again = refused.action() == "audit.record_refused";
    absl::Status replaced;
    if (!again) {
      v1::AuditRecord note = RefusalNote(refused, why, /*minimal=*/false, self_);
      replaced = spool_->Replace(sequence, &note);
    } else if (refused.details().count("copy") != 0) {
      v1::AuditRecord note = RefusalNote(refused, why, /*minimal=*/true, self_);
      replaced = spool_->Replace(sequence, &note);
    } else {
      // Even the minimal note is refused: give the number up. Backend chains the gap (audit.source_gap).
      ++dropped_;
      replaced = spool_->Replace(sequence, nullptr);
    }
    Log(LogLevel::kError, "backend refused an audit record; replaced it and moving on",
        {{"source_sequence", absl::StrCat(sequence)}, {"error", why}, {"replace", replaced.ToString()}});
    isolate_ = false;
  }

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
      const int batch = isolate_ ? 1 : options_.max_batch;
      for (const v1::AuditRecord& r : spool_->pending()) {
        if (request.records_size() >= batch) break;
        *request.add_records() = r;
      }
      const bool fresh = spool_->fresh();
      lock.unlock();
      v1::AppendAuditResponse response;
      grpc::ClientContext context;
      context.set_deadline(absl::ToChronoTime(absl::Now() + kCallTimeout));
      const absl::Status status = FromGrpcStatus(stub_->AppendAudit(&context, request, &response));
      lock.lock();
      if (status.code() == absl::StatusCode::kInvalidArgument) {
        HandleRefusal(request, status);
        continue;  // at once: the rest is waiting behind it
      }
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
      isolate_ = false;
      backoff = options_.flush_interval;
      last_ack_ = absl::Now();
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
  const std::string self_;  // this daemon's SPIFFE id: the actor of records the shipper writes itself
  mutable std::mutex mu_;   // guards the spool and the members below
  std::unique_ptr<AuditSpool> spool_;
  const std::unique_ptr<v1::Backend::Stub> stub_;
  std::condition_variable wake_;     // a batch is full, a flush is wanted, or stop
  std::condition_variable shipped_;  // an acknowledgement arrived
  bool stop_ = false;
  bool flush_requested_ = false;
  bool isolate_ = false;      // backend refused a batch without naming the record: ship one at a time
  uint64_t dropped_ = 0;      // events refused: spool full or unwritable, or refused even as a note
  uint64_t refused_ = 0;      // records backend refused, replaced by a note
  uint64_t lost_ = 0;         // records the spool found missing at start
  absl::Status spool_error_;  // the last append's failure (OK once one succeeds again)
  absl::Time last_ack_ = absl::InfinitePast();  // when backend last acknowledged a batch
  std::thread thread_;                          // runs Run()
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
