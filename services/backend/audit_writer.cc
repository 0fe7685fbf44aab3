#include "services/backend/audit_writer.h"

#include <algorithm>
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "common/audit_chain.h"
#include "common/log.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "services/backend/audit_reader.h"
#include "services/backend/job_state.h"
#include "services/backend/proto_time.h"
#include "services/backend/sql_params.h"

namespace strongroom::backend {
namespace {

// pg_advisory_xact_lock key: one chain writer at a time, even across backend processes ("sr-chain").
constexpr int64_t kChainLock = 0x73722d636861696e;
constexpr size_t kMaxDetailValue = 1024;
constexpr absl::Duration kMaxBackoff = absl::Seconds(2);

// A PostgreSQL array literal built element by element: each element double-quoted, with '"' and '\'
// escaped, so any text (JSON, SQL-ish strings) goes through verbatim.
class PgArray {
 public:
  void Add(absl::string_view value) {
    text_.push_back(text_.empty() ? '{' : ',');
    text_.push_back('"');
    for (char c : value) {
      if (c == '"' || c == '\\') text_.push_back('\\');
      text_.push_back(c);
    }
    text_.push_back('"');
  }
  // bytea in hex form ("\x..."), its backslash escaped for the array.
  void AddBytes(absl::string_view raw) {
    static constexpr char kDigits[] = "0123456789abcdef";
    text_.push_back(text_.empty() ? '{' : ',');
    text_.append("\"\\\\x");
    for (unsigned char c : raw) {
      text_.push_back(kDigits[c >> 4]);
      text_.push_back(kDigits[c & 0xf]);
    }
    text_.push_back('"');
  }
  std::string Take() {
    if (text_.empty()) return "{}";
    text_.push_back('}');
    return std::move(text_);
  }

 private:
  std::string text_;
};

// At most `max` bytes of `text`, cut at a UTF-8 character boundary: a cut character would be invalid UTF-8,
// which PostgreSQL refuses, failing (and retrying forever) the whole batch.
std::string TruncateUtf8(const std::string& text, size_t max) {
  if (text.size() <= max) return text;
  size_t end = max;
  while (end > 0 && (static_cast<unsigned char>(text[end]) & 0xC0) == 0x80) --end;
  return text.substr(0, end);
}

google::protobuf::Timestamp NowMicros() { return TimestampOfMicros(absl::ToUnixMicros(absl::Now())); }

class ChainAuditSink : public AuditSink {
 public:
  explicit ChainAuditSink(std::shared_ptr<AuditWriter> writer) : writer_(std::move(writer)) {}
  void Record(const AuditEvent& event) override { writer_->RecordLocal(event); }

 private:
  const std::shared_ptr<AuditWriter>
      writer_;  // shared with BackendService; kept alive by whichever goes last
};

}  // namespace

struct AuditWriter::Unit {
  bool remote = false;
  std::string recorded_by;               // remote: the sender's verified identity
  std::vector<v1::AuditRecord> records;  // drafts: the sender's fields only
  bool done = false;                     // committed (guarded by the writer's mu_)
  std::condition_variable changed;       // done, or the writer became unhealthy or stopped (with mu_)
  v1::AppendAuditResponse response;      // remote: the outcome
};

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

void AuditWriter::Start() {
  db_->Prepare("audit_chain_lock", "SELECT pg_advisory_xact_lock($1)");
  // Only statements without a plan to choose are prepared (the queries are planned per batch: see
  // AppendBatch).
  db_->Prepare("audit_insert",
               "INSERT INTO audit_records (sequence, time_us, actor, action, object, outcome, status_code, "
               "details, prev_hash, hash, recorded_by, source_sequence, received_us) SELECT * FROM "
               "unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::smallint[], "
               "$7::integer[], $8::jsonb[], $9::bytea[], $10::bytea[], $11::text[], $12::bigint[], "
               "$13::bigint[])");
  thread_ = std::thread([this] { Run(); });
}

void AuditWriter::Kick() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    kicked_ = true;
  }
  wake_.notify_one();
}

void AuditWriter::RecordLocal(const AuditEvent& event) {
  auto unit = std::make_shared<Unit>();
  v1::AuditRecord& r = unit->records.emplace_back();
  *r.mutable_time() = TimestampOfMicros(absl::ToUnixMicros(event.time));
  *r.mutable_actor() = AuditIdentityOf(event.actor);
  r.set_action(event.action);
  r.set_object(TruncateUtf8(event.object, 256));
  r.set_outcome(AuditOutcomeOfCode(event.outcome));
  r.set_status_code(AuditStatusCodeOf(event.outcome));
  for (const auto& [key, value] : event.details)
    (*r.mutable_details())[key] = TruncateUtf8(value, kMaxDetailValue);
  if (!event.detail.empty()) (*r.mutable_details())["error"] = TruncateUtf8(event.detail, kMaxDetailValue);

  std::unique_lock<std::mutex> lock(mu_);
  if (stop_) return;
  if (queued_records_ >= static_cast<size_t>(options_.max_queued)) {
    ++dropped_;
    return;
  }
  queue_.push_back(unit);
  ++queued_records_;
  wake_.notify_one();
  if (!healthy_) return;
  unit->changed.wait_for(lock, absl::ToChronoMilliseconds(options_.local_wait),
                         [&] { return unit->done || !healthy_ || stop_; });
}

absl::StatusOr<v1::AppendAuditResponse> AuditWriter::AppendRemote(const std::string& recorded_by,
                                                                  std::vector<v1::AuditRecord> records,
                                                                  absl::Time deadline) {
  auto unit = std::make_shared<Unit>();
  unit->remote = true;
  unit->recorded_by = recorded_by;
  unit->records = std::move(records);
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

void AuditWriter::Run() {
  absl::Duration backoff = absl::Milliseconds(100);
  absl::Time last_sweep = absl::InfinitePast();
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
    std::vector<std::shared_ptr<Unit>> batch;
    size_t records = 0;
    for (const auto& unit : queue_) {
      if (!batch.empty() && records + unit->records.size() > static_cast<size_t>(options_.max_batch)) break;
      batch.push_back(unit);
      records += unit->records.size();
    }
    kicked_ = false;
    if (batch.empty() && !sweep && dropped_ == dropped_reported_ && !stopping) continue;  // nothing to do
    lock.unlock();
    const absl::Status status = AppendBatch(batch, sweep);
    lock.lock();
    if (status.ok()) {
      if (sweep) last_sweep = now;
      for (size_t i = 0; i < batch.size(); ++i) {
        queue_.front()->done = true;
        queue_.front()->changed.notify_all();
        queued_records_ -= queue_.front()->records.size();
        queue_.pop_front();
      }
      if (!healthy_)
        Log(LogLevel::kInfo, "audit chain writer recovered", {{"queued", absl::StrCat(queue_.size())}});
      healthy_ = true;
      backoff = absl::Milliseconds(100);
    } else {
      if (healthy_)
        Log(LogLevel::kError, "audit chain append failed; retrying", {{"error", status.ToString()}});
      healthy_ = false;
      kicked_ = true;  // timeline rows may be waiting too
      WakeAllWaiters();
    }
    if (stopping) {
      WakeAllWaiters();  // whatever the last batch did not hold
      break;
    }
    if (!status.ok()) {
      wake_.wait_for(lock, absl::ToChronoMilliseconds(backoff), [&] { return stop_; });
      backoff = std::min(backoff * 2, kMaxBackoff);
    }
  }
}

absl::Status AuditWriter::AppendBatch(std::vector<std::shared_ptr<Unit>>& units, bool sweep) {
  uint64_t dropped_now = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    dropped_now = dropped_ - dropped_reported_;
  }
  std::vector<std::pair<int64_t, uint64_t>> chained_rows;  // (timeline id, sequence)
  std::vector<v1::AuditRecord> appended;
  uint64_t head_sequence = 0;
  std::string head_hash;
  absl::Status s = db_->Transact("append to the audit chain", [&](pqxx::transaction_base& t) -> absl::Status {
    chained_rows.clear();
    appended.clear();
    // The lock first, in its own statement: a READ COMMITTED statement reads the snapshot taken when it
    // started, so a head read in the same statement could miss another writer's commit it waited for.
    t.exec_prepared("audit_chain_lock", kChainLock);
    uint64_t sequence = 0;
    std::string prev = AuditGenesisHash();
    // The head and backend's own last source_sequence, in one round trip. Not a prepared statement: a generic
    // plan made while the table was small scanned every record of the sender for the max once the table had
    // grown (until an ANALYZE replaced it); planned each time, it is one index probe.
    const pqxx::result head = t.exec_params(
        "SELECT h.sequence, h.hash, (SELECT coalesce(max(source_sequence), 0) FROM audit_records WHERE "
        "recorded_by = $1) FROM (SELECT 1) one LEFT JOIN (SELECT sequence, hash FROM audit_records ORDER BY "
        "sequence DESC LIMIT 1) h ON true",
        options_.identity);
    const uint64_t own_last = head[0][2].as<uint64_t>();
    if (!head[0][0].is_null()) {
      sequence = head[0][0].as<uint64_t>();
      prev = pqxx::binarystring(head[0][1]).str();
    }
    auto last_source_sequence = [&](const std::string& who) {
      pqxx::result r = t.exec_params(
          "SELECT coalesce(max(source_sequence), 0) FROM audit_records WHERE recorded_by = $1", who);
      return r[0][0].as<uint64_t>();
    };
    uint64_t own = own_last;
    const google::protobuf::Timestamp received = NowMicros();
    auto append = [&](v1::AuditRecord r, bool own_record) {
      r.set_sequence(++sequence);
      r.set_prev_hash(prev);
      *r.mutable_received_time() = received;
      if (own_record) {
        *r.mutable_recorded_by() = AuditIdentityOf(options_.identity);
        r.set_source_sequence(++own);
      }
      r.set_hash(AuditRecordHash(r));
      prev = r.hash();
      appended.push_back(std::move(r));
    };

    // 1. Committed timeline rows first: they happened before anything still queued was reported.
    pqxx::result rows;
    if (sweep) {
      rows = t.exec_params(
          "SELECT id, global_job_id, time_us, from_state, to_state, event, actor, outcome, status_code, "
          "message, details::text FROM job_timeline WHERE audit_sequence IS NULL ORDER BY id LIMIT $1",
          options_.max_batch);
    }
    for (const pqxx::row& row : rows) {
      v1::AuditRecord r;
      *r.mutable_time() = TimestampOfMicros(row[2].as<int64_t>());
      *r.mutable_actor() = AuditIdentityOf(row[6].as<std::string>());
      r.set_object(absl::StrCat("job/", row[1].as<std::string>()));
      r.set_outcome(static_cast<v1::AuditOutcome>(row[7].as<int>()));
      r.set_status_code(row[8].as<int>());
      google::protobuf::Struct details;
      (void)google::protobuf::util::JsonStringToMessage(row[10].as<std::string>(), &details);
      for (const auto& [key, value] : details.fields()) (*r.mutable_details())[key] = value.string_value();
      auto& d = *r.mutable_details();
      if (!row[4].is_null()) {
        r.set_action("job.transition");
        if (!row[3].is_null())
          d["from"] = std::string(JobStateName(static_cast<v1::JobState>(row[3].as<int>())));
        d["to"] = std::string(JobStateName(static_cast<v1::JobState>(row[4].as<int>())));
      } else {
        r.set_action("job.event");
        d["event"] = row[5].as<std::string>();
      }
      if (const std::string message = row[9].as<std::string>(); !message.empty()) d["message"] = message;
      append(std::move(r), true);
      chained_rows.emplace_back(row[0].as<int64_t>(), sequence);
    }
    // 2. A loss while the queue was full is itself a record.
    if (dropped_now > 0) {
      v1::AuditRecord r;
      *r.mutable_time() = received;
      *r.mutable_actor() = AuditIdentityOf(options_.identity);
      r.set_action("audit.records_dropped");
      r.set_outcome(v1::AUDIT_OUTCOME_FAILURE);
      (*r.mutable_details())["count"] = absl::StrCat(dropped_now);
      append(std::move(r), true);
    }
    // 3. Queued events, in arrival order.
    std::map<std::string, uint64_t> last_by_sender;
    for (const auto& unit : units) {
      if (!unit->remote) {
        append(unit->records.front(), true);
        continue;
      }
      auto known = last_by_sender.find(unit->recorded_by);
      uint64_t last = known != last_by_sender.end() ? known->second : last_source_sequence(unit->recorded_by);
      uint32_t added = 0, duplicates = 0;
      for (v1::AuditRecord r : unit->records) {
        if (r.source_sequence() <= last) {
          ++duplicates;
          continue;
        }
        if (r.source_sequence() > last + 1) {
          v1::AuditRecord gap;
          *gap.mutable_time() = received;
          *gap.mutable_actor() = AuditIdentityOf(unit->recorded_by);
          gap.set_action("audit.source_gap");
          gap.set_outcome(v1::AUDIT_OUTCOME_FAILURE);
          (*gap.mutable_details())["expected"] = absl::StrCat(last + 1);
          (*gap.mutable_details())["received"] = absl::StrCat(r.source_sequence());
          append(std::move(gap), true);
        }
        last = r.source_sequence();
        *r.mutable_recorded_by() = AuditIdentityOf(unit->recorded_by);
        r.clear_hash();
        append(std::move(r), false);
        ++added;
      }
      last_by_sender[unit->recorded_by] = last;
      unit->response.set_appended(added);
      unit->response.set_duplicates(duplicates);
      unit->response.set_acknowledged_source_sequence(last);
    }

    if (!appended.empty()) {
      // One prepared INSERT of 13 arrays, whatever the batch size: no statement text to build, parse and
      // plan per batch.
      std::vector<PgArray> columns(13);
      for (const v1::AuditRecord& r : appended) {
        columns[0].Add(absl::StrCat(r.sequence()));
        columns[1].Add(absl::StrCat(MicrosOfTimestamp(r.time())));
        columns[2].Add(r.actor().spiffe_id());
        columns[3].Add(r.action());
        columns[4].Add(r.object());
        columns[5].Add(absl::StrCat(static_cast<int>(r.outcome())));
        columns[6].Add(absl::StrCat(r.status_code()));
        columns[7].Add(AuditDetailsJson(r));
        columns[8].AddBytes(r.prev_hash());
        columns[9].AddBytes(r.hash());
        columns[10].Add(r.recorded_by().spiffe_id());
        columns[11].Add(absl::StrCat(r.source_sequence()));
        columns[12].Add(absl::StrCat(MicrosOfTimestamp(r.received_time())));
      }
      SqlParams p;
      for (PgArray& column : columns) p.Text(column.Take());
      t.exec_prepared("audit_insert", p.Dynamic());
    }
    if (!chained_rows.empty()) {
      std::vector<std::string> ids, sequences;
      for (const auto& [id, seq] : chained_rows) {
        ids.push_back(absl::StrCat(id));
        sequences.push_back(absl::StrCat(seq));
      }
      t.exec_params(
          "UPDATE job_timeline t SET audit_sequence = u.seq FROM unnest($1::bigint[], $2::bigint[]) AS u(id, "
          "seq) "
          "WHERE t.id = u.id",
          absl::StrCat("{", absl::StrJoin(ids, ","), "}"),
          absl::StrCat("{", absl::StrJoin(sequences, ","), "}"));
    }
    head_sequence = sequence;
    head_hash = prev;
    return absl::OkStatus();
  });
  if (!s.ok()) return s;
  for (const auto& unit : units) {
    unit->response.mutable_head()->set_sequence(head_sequence);
    unit->response.mutable_head()->set_hash(head_hash);
  }
  std::lock_guard<std::mutex> lock(mu_);
  dropped_reported_ += dropped_now;
  // A full page of timeline rows means more may wait.
  if (chained_rows.size() >= static_cast<size_t>(options_.max_batch)) kicked_ = true;
  return absl::OkStatus();
}

std::shared_ptr<AuditSink> MakeChainAuditSink(std::shared_ptr<AuditWriter> writer) {
  return std::make_shared<ChainAuditSink>(std::move(writer));
}

}  // namespace strongroom::backend
