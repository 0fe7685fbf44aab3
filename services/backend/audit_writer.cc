// The chain writer's queue, thread, health and recovery. The SQL of one batch is in audit_batch.cc.
#include "services/backend/audit_writer.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/status.h"
#include "services/backend/audit_writer_internal.h"
#include "services/backend/proto_time.h"

namespace strongroom::backend {
namespace {

constexpr absl::Duration kMaxBackoff = absl::Seconds(2);
// How often backend's spool is fdatasync'ed while records wait longer than a commit takes.
constexpr absl::Duration kSpoolSyncInterval = absl::Seconds(1);

class ChainAuditSink : public AuditSink {
 public:
  explicit ChainAuditSink(std::shared_ptr<AuditWriter> writer) : writer_(std::move(writer)) {}
  void Record(const AuditEvent& event) override { (void)writer_->RecordLocal(event); }
  absl::Status RecordDurably(const AuditEvent& event) override { return writer_->RecordLocal(event); }
  absl::Status Health() const override { return writer_->Health(); }
  std::string RenderMetrics() const override { return writer_->RenderMetrics(); }

 private:
  const std::shared_ptr<AuditWriter>
      writer_;  // shared with BackendService; kept alive by whichever goes last
};

google::protobuf::Duration DurationProto(absl::Duration d) {
  google::protobuf::Duration out;
  out.set_seconds(absl::ToInt64Seconds(d));
  out.set_nanos(static_cast<int32_t>(absl::ToInt64Nanoseconds(d - absl::Seconds(out.seconds()))));
  return out;
}

}  // namespace

bool IsDataError(const absl::Status& s) {
  if (s.code() == absl::StatusCode::kFailedPrecondition) return true;  // a CHECK constraint or trigger
  if (s.code() != absl::StatusCode::kInternal) return false;
  // SQLSTATE classes 22 (data exception), 23 (integrity constraint), 54 (program limit exceeded, e.g. an
  // index row too large): the rows, not the database, are the problem.
  for (const char* cls : {"(SQLSTATE 22", "(SQLSTATE 23", "(SQLSTATE 54"}) {
    if (s.message().find(cls) != absl::string_view::npos) return true;
  }
  return false;
}

void AuditWriter::WakeAllWaiters() {
  for (const auto& unit : queue_) unit->changed.notify_all();
}

AuditWriter::AuditWriter(Database* db, Options options) : db_(db), options_(std::move(options)) {}

AuditWriter::~AuditWriter() { Stop(); }

void AuditWriter::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

absl::Status AuditWriter::Start() {
  PrepareBatchStatements(*db_);
  SR_RETURN_IF_ERROR(Recover());
  last_commit_ = absl::Now();
  thread_ = std::thread([this] { Run(); });
  return absl::OkStatus();
}

absl::Status AuditWriter::Recover() {
  uint64_t acknowledged = 0;
  SR_RETURN_IF_ERROR(db_->Read("read backend's audit spool position", [&](pqxx::transaction_base& t) {
    pqxx::result r = t.exec_params("SELECT acknowledged FROM audit_spool_positions WHERE recorded_by = $1",
                                   options_.identity);
    if (!r.empty()) acknowledged = r[0][0].as<uint64_t>();
    return absl::OkStatus();
  }));
  absl::StatusOr<std::unique_ptr<AuditSpool>> spool =
      AuditSpool::OpenAcknowledgedElsewhere(options_.spool_dir, acknowledged);
  if (!spool.ok()) return Annotate(spool.status(), "backend's audit spool");
  std::lock_guard<std::mutex> lock(mu_);
  spool_ = std::move(*spool);
  // What a previous run accepted and the chain lacks: appended first, in order, nobody waiting for them.
  for (const v1::AuditRecord& spooled : spool_->pending()) {
    auto unit = std::make_shared<Unit>();
    unit->spool_id = spooled.source_sequence();
    unit->records.push_back(spooled);
    unit->records.back().clear_source_sequence();
    unit->enqueued = absl::Now();
    queue_.push_back(unit);
    ++queued_records_;
  }
  if (!queue_.empty()) {
    Log(LogLevel::kWarn, "audit: appending records a previous run accepted and did not commit",
        {{"records", absl::StrCat(queue_.size())}});
  }
  const AuditSpoolLoss& loss = spool_->lost();
  if (loss.first != 0 || loss.bytes_cut != 0) {
    Log(LogLevel::kError, "audit: records accepted by a previous run were lost; chaining a gap record",
        {{"reason", loss.reason}});
    auto unit = std::make_shared<Unit>();
    unit->records.push_back(AuditRecordOfEvent(LostRecordsEvent(loss, options_.identity)));
    if (spool_->Append(unit->records.back()).ok()) unit->spool_id = spool_->next_sequence() - 1;
    unit->records.back().clear_source_sequence();
    unit->enqueued = absl::Now();
    queue_.push_back(unit);
    ++queued_records_;
  }
  return absl::OkStatus();
}

void AuditWriter::Kick() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    kicked_ = true;
  }
  wake_.notify_one();
}

absl::Status AuditWriter::RecordLocal(const AuditEvent& event) {
  auto unit = std::make_shared<Unit>();
  unit->records.push_back(AuditRecordOfEvent(event));
  std::unique_lock<std::mutex> lock(mu_);
  if (stop_ || spool_ == nullptr) return absl::UnavailableError("backend's audit chain writer is stopped");
  if (queued_records_ >= static_cast<size_t>(options_.max_queued)) {
    ++dropped_;
    return absl::UnavailableError(
        absl::StrCat("the audit queue is full (", queued_records_,
                     " records); this record was dropped and the loss is recorded"));
  }
  // Spooled before it is queued: a crash from here on loses nothing (Recover replays it).
  if (absl::Status s = spool_->Append(unit->records.back()); s.ok()) {
    unit->spool_id = spool_->next_sequence() - 1;
  } else {
    Log(LogLevel::kError, "audit: cannot spool a record; it is only queued in memory",
        {{"error", s.ToString()}});
  }
  unit->records.back().clear_source_sequence();
  unit->enqueued = absl::Now();
  queue_.push_back(unit);
  ++queued_records_;
  wake_.notify_one();
  if (!healthy_) {
    return absl::UnavailableError(absl::StrCat("the audit chain cannot commit: ", last_error_.message()));
  }
  unit->changed.wait_for(lock, absl::ToChronoMilliseconds(options_.local_wait),
                         [&] { return unit->done || !healthy_ || stop_; });
  if (unit->done) return absl::OkStatus();
  return absl::UnavailableError(
      absl::StrCat("the audit record was not committed within ", absl::FormatDuration(options_.local_wait),
                   ": ", healthy_ ? "the chain writer is behind" : std::string(last_error_.message())));
}

absl::StatusOr<v1::AppendAuditResponse> AuditWriter::AppendRemote(const std::string& recorded_by,
                                                                  std::vector<v1::AuditRecord> records,
                                                                  absl::Time deadline) {
  auto unit = std::make_shared<Unit>();
  unit->remote = true;
  unit->recorded_by = recorded_by;
  unit->records = std::move(records);
  unit->enqueued = absl::Now();
  std::unique_lock<std::mutex> lock(mu_);
  if (queued_records_ + unit->records.size() > static_cast<size_t>(options_.max_queued)) {
    return absl::UnavailableError(
        "the audit chain writer's queue is full (database unreachable?); retry later");
  }
  queued_records_ += unit->records.size();
  queue_.push_back(unit);
  wake_.notify_one();
  const bool done =
      unit->changed.wait_until(lock, absl::ToChronoTime(deadline), [&] { return unit->done || stop_; });
  if (!done || !unit->done) {
    return absl::UnavailableError(healthy_ ? "the audit records were not committed before the call's "
                                             "deadline; retry (duplicates are skipped)"
                                           : "the audit database is unreachable; the records are queued, "
                                             "retry later (duplicates are skipped)");
  }
  return unit->response;
}

absl::Status AuditWriter::HealthLocked(absl::Time now) const {
  const bool waiting = !queue_.empty() || !healthy_;
  if (!waiting || now - last_commit_ < options_.stall_after) return absl::OkStatus();
  std::string why =
      absl::StrCat("the audit chain has not committed for ",
                   absl::FormatDuration(absl::Trunc(now - last_commit_, absl::Milliseconds(100))), " (",
                   queued_records_, " records pending");
  if (!queue_.empty()) {
    absl::StrAppend(
        &why, ", the oldest for ",
        absl::FormatDuration(absl::Trunc(now - queue_.front()->enqueued, absl::Milliseconds(100))));
  }
  absl::StrAppend(&why, ")");
  if (!healthy_) absl::StrAppend(&why, ": ", last_error_.message());
  return absl::UnavailableError(why);
}

absl::Status AuditWriter::Health() const {
  std::lock_guard<std::mutex> lock(mu_);
  return HealthLocked(absl::Now());
}

v1::AuditLag AuditWriter::Lag() const {
  std::lock_guard<std::mutex> lock(mu_);
  const absl::Time now = absl::Now();
  v1::AuditLag lag;
  lag.set_pending_records(queued_records_);
  if (!queue_.empty()) *lag.mutable_oldest_pending() = DurationProto(now - queue_.front()->enqueued);
  if (last_commit_ != absl::InfinitePast()) {
    *lag.mutable_last_commit_time() = TimestampOfMicros(absl::ToUnixMicros(last_commit_));
  }
  lag.set_stalled(!HealthLocked(now).ok());
  if (!healthy_) lag.set_last_error(std::string(last_error_.message()).substr(0, 1024));
  lag.set_dropped_records(dropped_);
  return lag;
}

std::string AuditWriter::RenderMetrics() const {
  std::lock_guard<std::mutex> lock(mu_);
  const absl::Time now = absl::Now();
  std::string out;
  AppendPrometheusMetric(&out, "strongroom_audit_pending_records", "gauge",
                         "Audit records accepted and not yet committed to the chain.",
                         static_cast<double>(queued_records_));
  AppendPrometheusMetric(&out, "strongroom_audit_oldest_pending_seconds", "gauge",
                         "How long the oldest pending audit record has waited (0 when none).",
                         queue_.empty() ? 0 : absl::ToDoubleSeconds(now - queue_.front()->enqueued));
  AppendPrometheusMetric(
      &out, "strongroom_audit_stalled", "gauge",
      "1 while the chain has not committed for audit.stall_seconds (audited calls refused).",
      HealthLocked(now).ok() ? 0 : 1);
  AppendPrometheusMetric(&out, "strongroom_audit_last_commit_timestamp_seconds", "gauge",
                         "When the chain last committed.",
                         absl::ToDoubleSeconds(last_commit_ - absl::UnixEpoch()));
  AppendPrometheusMetric(&out, "strongroom_audit_appended_records_total", "counter",
                         "Records this process appended to the chain.", static_cast<double>(appended_));
  AppendPrometheusMetric(&out, "strongroom_audit_append_failures_total", "counter",
                         "Append attempts that failed (each is retried).", static_cast<double>(failures_));
  AppendPrometheusMetric(&out, "strongroom_audit_unstorable_records_total", "counter",
                         "Records the database refused, replaced by a chained audit.record_unstorable note.",
                         static_cast<double>(unstorable_));
  AppendPrometheusMetric(&out, "strongroom_audit_dropped_records_total", "counter",
                         "Records refused because the queue was full (the loss is chained).",
                         static_cast<double>(dropped_));
  return out;
}

void AuditWriter::Run() {
  absl::Duration backoff = absl::Milliseconds(100);
  absl::Time last_sweep = absl::InfinitePast();
  absl::Time last_sync = absl::Now();
  absl::Time last_stall_log = absl::InfinitePast();
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    wake_.wait_for(lock, absl::ToChronoMilliseconds(options_.sweep_interval),
                   [&] { return stop_ || !queue_.empty() || kicked_; });
    const bool stopping = stop_;
    // Timeline rows are chained when a change kicked the writer (it did so after the rows' commit and before
    // the RPC's own record was queued, so they still precede that record in the chain) and, for rows nobody
    // announced (a crash before the kick), at least every sweep_interval. A batch of RPC records alone skips
    // the query.
    const absl::Time now = absl::Now();
    const bool sweep = kicked_ || stopping || now - last_sweep >= options_.sweep_interval;
    Batch batch;
    size_t records = 0;
    for (const auto& unit : queue_) {
      if (!batch.empty() && records + unit->records.size() > static_cast<size_t>(options_.max_batch)) break;
      batch.push_back(unit);
      records += unit->records.size();
    }
    kicked_ = false;
    if (batch.empty() && !sweep && dropped_ == dropped_reported_ && !stopping) continue;  // nothing to do
    lock.unlock();
    BatchResult result;
    absl::Status status = AppendBatch(batch, sweep ? options_.max_batch : 0, 0, &result);
    if (!status.ok() && IsDataError(status)) {
      Log(LogLevel::kWarn, "audit: the database refused a batch for its data; isolating the record",
          {{"error", status.ToString()}});
      status = Isolate(batch, sweep, &result);
    }
    lock.lock();
    // Committed units leave the queue in order (after an isolation that failed midway, a prefix of them).
    while (!queue_.empty() && queue_.front()->committed) {
      queue_.front()->done = true;
      queue_.front()->changed.notify_all();
      queued_records_ -= queue_.front()->records.size();
      queue_.pop_front();
    }
    appended_ += result.appended;
    unstorable_ += result.unstorable;
    if (result.spool_position > 0) (void)spool_->Acknowledge(result.spool_position);
    if (result.full_page) kicked_ = true;  // more timeline rows may wait
    if (status.ok()) {
      if (sweep) last_sweep = now;
      last_commit_ = absl::Now();
      if (!healthy_)
        Log(LogLevel::kInfo, "audit chain writer recovered", {{"queued", absl::StrCat(queued_records_)}});
      healthy_ = true;
      last_error_ = absl::OkStatus();
      backoff = absl::Milliseconds(100);
    } else {
      ++failures_;
      if (healthy_) {
        Log(LogLevel::kError, "audit chain append failed; retrying", {{"error", status.ToString()}});
        failing_since_ = absl::Now();
      }
      healthy_ = false;
      last_error_ = status;
      kicked_ = true;  // timeline rows may be waiting too
      WakeAllWaiters();
    }
    // The spool only matters for records that wait: sync it while they do, and before each backoff (a host
    // crash loses at most what came since).
    if (!queue_.empty() && (!status.ok() || absl::Now() - last_sync >= kSpoolSyncInterval)) {
      (void)spool_->Sync();
      last_sync = absl::Now();
    }
    if (absl::Status stalled = HealthLocked(absl::Now());
        !stalled.ok() && absl::Now() - last_stall_log >= options_.stall_log_interval) {
      Log(LogLevel::kError, "AUDIT CHAIN STALLED: audited calls are refused until it commits again",
          {{"reason", std::string(stalled.message())}, {"pending", absl::StrCat(queued_records_)}});
      last_stall_log = absl::Now();
    }
    if (stopping) {
      (void)spool_->Sync();
      WakeAllWaiters();  // whatever the last batch did not hold
      break;
    }
    if (!status.ok()) {
      wake_.wait_for(lock, absl::ToChronoMilliseconds(backoff), [&] { return stop_; });
      backoff = std::min(backoff * 2, kMaxBackoff);
    }
  }
}

absl::Status AuditWriter::Isolate(Batch& units, bool sweep, BatchResult* result) {
  for (const auto& unit : units) {
    if (unit->committed) continue;
    Batch one = {unit};
    absl::Status s = AppendBatch(one, 0, 0, result);
    if (s.ok()) continue;
    if (!IsDataError(s)) return s;
    SR_RETURN_IF_ERROR(IsolateUnit(unit, s, result));
  }
  if (!sweep) return absl::OkStatus();
  Batch none;
  absl::Status s = AppendBatch(none, options_.max_batch, 0, result);
  if (s.ok() || !IsDataError(s)) return s;
  return IsolateSweep(result);
}

absl::Status AuditWriter::IsolateUnit(const std::shared_ptr<Unit>& unit, const absl::Status& refused,
                                      BatchResult* result) {
  if (!unit->remote) {
    // One record: replaced by the note saying why, with an escaped copy.
    Log(LogLevel::kError,
        "audit: the database cannot store one of backend's records; chaining a note instead",
        {{"error", refused.ToString()}, {"action", unit->records.front().action()}});
    unit->records.front() = UnstorableNote(unit->records.front(), refused, options_.identity);
    ++result->unstorable;
    Batch one = {unit};
    return AppendBatch(one, 0, 0, result);
  }
  // A sender's batch: record by record, each failing one replaced (under its own source_sequence), so the
  // sender's numbering has no hole.
  v1::AppendAuditResponse total;
  for (v1::AuditRecord& record : unit->records) {
    auto single = std::make_shared<Unit>();
    single->remote = true;
    single->recorded_by = unit->recorded_by;
    single->records = {record};
    Batch one = {single};
    absl::Status s = AppendBatch(one, 0, 0, result);
    if (!s.ok() && IsDataError(s)) {
      Log(LogLevel::kError, "audit: the database cannot store a record of a sender; chaining a note instead",
          {{"error", s.ToString()},
           {"recorded_by", unit->recorded_by},
           {"source_sequence", absl::StrCat(record.source_sequence())}});
      record = UnstorableNote(record, s, options_.identity);
      single->records = {record};
      ++result->unstorable;
      s = AppendBatch(one, 0, 0, result);
    }
    SR_RETURN_IF_ERROR(s);  // the records before this one are in; a retry skips them as duplicates
    total.set_appended(total.appended() + single->response.appended());
    total.set_duplicates(total.duplicates() + single->response.duplicates());
    total.set_acknowledged_source_sequence(single->response.acknowledged_source_sequence());
    *total.mutable_head() = single->response.head();
  }
  unit->response = total;
  unit->committed = true;
  return absl::OkStatus();
}

absl::Status AuditWriter::IsolateSweep(BatchResult* result) {
  // Row by row: the first one that fails alone is chained as a note.
  Batch none;
  for (int i = 0; i < options_.max_batch; ++i) {
    absl::Status s = AppendBatch(none, 1, 0, result);
    if (s.ok()) {
      if (!result->swept_any) return absl::OkStatus();
      continue;
    }
    if (!IsDataError(s)) return s;
    int64_t row = 0;
    SR_RETURN_IF_ERROR(db_->Read("find the unstorable timeline row", [&](pqxx::transaction_base& t) {
      pqxx::result r = t.exec("SELECT id FROM job_timeline WHERE audit_sequence IS NULL ORDER BY id LIMIT 1");
      if (!r.empty()) row = r[0][0].as<int64_t>();
      return absl::OkStatus();
    }));
    if (row == 0) return s;
    Log(LogLevel::kError, "audit: the database cannot store a timeline row as a record; chaining a note",
        {{"error", s.ToString()}, {"timeline_id", absl::StrCat(row)}});
    ++result->unstorable;
    SR_RETURN_IF_ERROR(AppendBatch(none, 1, row, result));
  }
  return absl::OkStatus();
}

std::shared_ptr<AuditSink> MakeChainAuditSink(std::shared_ptr<AuditWriter> writer) {
  return std::make_shared<ChainAuditSink>(std::move(writer));
}

}  // namespace strongroom::backend
