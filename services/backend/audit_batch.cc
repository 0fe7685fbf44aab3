// One append to the audit chain, in one transaction (AuditWriter::AppendBatch), and the note that replaces a
// record the database cannot store.
#include <map>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "common/audit_chain.h"
#include "common/audit_text.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/text_format.h"
#include "google/protobuf/util/json_util.h"
#include "services/backend/audit_reader.h"
#include "services/backend/audit_writer_internal.h"
#include "services/backend/job_state.h"
#include "services/backend/proto_time.h"
#include "services/backend/sql_params.h"

namespace strongroom::backend {
namespace {

// pg_advisory_xact_lock key: one chain writer at a time, even across backend processes ("sr-chain").
constexpr int64_t kChainLock = 0x73722d636861696e;
// How much of an unstorable record its note keeps.
constexpr size_t kMaxUnstorableCopy = 8 * 1024;

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

google::protobuf::Timestamp NowMicros() { return TimestampOfMicros(absl::ToUnixMicros(absl::Now())); }

// A record of a job's timeline row, or the note that stands in for it (`poison`).
v1::AuditRecord RecordOfTimelineRow(const pqxx::row& row, bool poison, const std::string& backend) {
  v1::AuditRecord r;
  *r.mutable_time() = TimestampOfMicros(row[2].as<int64_t>());
  if (poison) {
    *r.mutable_actor() = AuditIdentityOf(backend);
    r.set_action("audit.record_unstorable");
    r.set_object(absl::StrCat("job/", row[1].as<std::string>()));
    r.set_outcome(v1::AUDIT_OUTCOME_FAILURE);
    r.set_status_code(13);
    (*r.mutable_details())["timeline_id"] = row[0].as<std::string>();
    (*r.mutable_details())["error"] = "the database refused this timeline row as an audit record";
    MakeAuditRecordStorable(&r);
    return r;
  }
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
    if (!row[3].is_null()) d["from"] = std::string(JobStateName(static_cast<v1::JobState>(row[3].as<int>())));
    d["to"] = std::string(JobStateName(static_cast<v1::JobState>(row[4].as<int>())));
  } else {
    r.set_action("job.event");
    d["event"] = row[5].as<std::string>();
  }
  if (const std::string message = row[9].as<std::string>(); !message.empty()) d["message"] = message;
  MakeAuditRecordStorable(&r);
  return r;
}

}  // namespace

void PrepareBatchStatements(Database& db) {
  db.Prepare("audit_chain_lock", "SELECT pg_advisory_xact_lock($1)");
  // Only statements without a plan to choose are prepared (the queries are planned per batch: see
  // AppendBatch).
  db.Prepare("audit_insert",
             "INSERT INTO audit_records (sequence, time_us, actor, action, object, outcome, status_code, "
             "details, prev_hash, hash, recorded_by, source_sequence, received_us) SELECT * FROM "
             "unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::smallint[], "
             "$7::integer[], $8::jsonb[], $9::bytea[], $10::bytea[], $11::text[], $12::bigint[], "
             "$13::bigint[])");
  db.Prepare("audit_spool_position",
             "INSERT INTO audit_spool_positions (recorded_by, acknowledged) VALUES ($1, $2) ON CONFLICT "
             "(recorded_by) DO UPDATE SET acknowledged = greatest(audit_spool_positions.acknowledged, "
             "excluded.acknowledged)");
}

v1::AuditRecord UnstorableNote(const v1::AuditRecord& record, const absl::Status& why,
                               const std::string& actor) {
  std::string copy;
  google::protobuf::TextFormat::Printer printer;
  printer.SetSingleLineMode(true);
  printer.PrintToString(record, &copy);
  v1::AuditRecord note;
  *note.mutable_time() = record.time();
  *note.mutable_actor() = AuditIdentityOf(actor);
  note.set_action("audit.record_unstorable");
  note.set_outcome(v1::AUDIT_OUTCOME_FAILURE);
  note.set_status_code(13);  // INTERNAL
  // Printable ASCII only (\xHH for anything else), so the note never trips over the bytes its record did.
  (*note.mutable_details())["copy"] = absl::CHexEscape(copy.substr(0, kMaxUnstorableCopy));
  (*note.mutable_details())["error"] = absl::CHexEscape(std::string(why.message()).substr(0, 1024));
  (*note.mutable_details())["action"] = absl::CHexEscape(record.action());
  MakeAuditRecordStorable(&note);
  note.set_source_sequence(record.source_sequence());
  return note;
}

absl::Status AuditWriter::AppendBatch(Batch& units, int sweep_limit, int64_t poison_row,
                                      BatchResult* result) {
  uint64_t dropped_now = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    dropped_now = dropped_ - dropped_reported_;
  }
  std::vector<std::pair<int64_t, uint64_t>> chained_rows;  // (timeline id, sequence)
  std::vector<v1::AuditRecord> appended;
  uint64_t head_sequence = 0, spool_position = 0;
  std::string head_hash;
  absl::Status s = db_->Transact("append to the audit chain", [&](pqxx::transaction_base& t) -> absl::Status {
    chained_rows.clear();
    appended.clear();
    spool_position = 0;
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
    if (sweep_limit > 0) {
      rows = t.exec_params(
          "SELECT id, global_job_id, time_us, from_state, to_state, event, actor, outcome, status_code, "
          "message, details::text FROM job_timeline WHERE audit_sequence IS NULL ORDER BY id LIMIT $1",
          sweep_limit);
    }
    for (const pqxx::row& row : rows) {
      append(RecordOfTimelineRow(row, row[0].as<int64_t>() == poison_row, options_.identity), true);
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
        spool_position = std::max(spool_position, unit->spool_id);
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
    // Where backend's spool stands, with the records it names: a restart replays exactly what is missing.
    if (spool_position > 0) {
      t.exec_prepared("audit_spool_position", options_.identity, static_cast<int64_t>(spool_position));
    }
    head_sequence = sequence;
    head_hash = prev;
    return absl::OkStatus();
  });
  if (!s.ok()) return s;
  for (const auto& unit : units) {
    unit->response.mutable_head()->set_sequence(head_sequence);
    unit->response.mutable_head()->set_hash(head_hash);
    unit->committed = true;
  }
  result->appended += appended.size();
  result->spool_position = std::max(result->spool_position, spool_position);
  result->swept_any = !chained_rows.empty();
  if (sweep_limit > 0 && chained_rows.size() >= static_cast<size_t>(sweep_limit)) result->full_page = true;
  std::lock_guard<std::mutex> lock(mu_);
  dropped_reported_ += dropped_now;
  return absl::OkStatus();
}

}  // namespace strongroom::backend
