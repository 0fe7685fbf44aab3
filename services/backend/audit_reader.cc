#include "services/backend/audit_reader.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/audit.h"
#include "common/audit_chain.h"
#include "common/status.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "services/backend/proto_time.h"
#include "services/backend/sql_params.h"

namespace strongroom::backend {
namespace {

constexpr int kVerifyPage = 5000;

}  // namespace

const char kAuditColumns[] =
    "sequence, time_us, actor, action, object, outcome, status_code, details::text, prev_hash, hash, "
    "recorded_by, "
    "source_sequence, received_us";

v1::AuditRecord AuditRecordOfRow(const pqxx::row& row) {
  v1::AuditRecord r;
  r.set_sequence(row[0].as<uint64_t>());
  *r.mutable_time() = TimestampOfMicros(row[1].as<int64_t>());
  *r.mutable_actor() = AuditIdentityOf(row[2].as<std::string>());
  r.set_action(row[3].as<std::string>());
  r.set_object(row[4].as<std::string>());
  r.set_outcome(static_cast<v1::AuditOutcome>(row[5].as<int>()));
  r.set_status_code(row[6].as<int>());
  google::protobuf::Struct details;
  (void)google::protobuf::util::JsonStringToMessage(row[7].as<std::string>(), &details);
  for (const auto& [key, value] : details.fields()) (*r.mutable_details())[key] = value.string_value();
  r.set_prev_hash(pqxx::binarystring(row[8]).str());
  r.set_hash(pqxx::binarystring(row[9]).str());
  *r.mutable_recorded_by() = AuditIdentityOf(row[10].as<std::string>());
  r.set_source_sequence(row[11].as<uint64_t>());
  *r.mutable_received_time() = TimestampOfMicros(row[12].as<int64_t>());
  return r;
}

namespace {

// `text` as a JSON string literal: '"', '\\' and control characters escaped, everything else (UTF-8) as is.
void AppendJsonString(std::string* out, const std::string& text) {
  static constexpr char kHex[] = "0123456789abcdef";
  out->push_back('"');
  for (unsigned char c : text) {
    switch (c) {
      case '"':
        out->append("\\\"");
        break;
      case '\\':
        out->append("\\\\");
        break;
      case '\n':
        out->append("\\n");
        break;
      case '\t':
        out->append("\\t");
        break;
      case '\r':
        out->append("\\r");
        break;
      default:
        if (c < 0x20) {
          out->append("\\u00");
          out->push_back(kHex[c >> 4]);
          out->push_back(kHex[c & 0xf]);
        } else {
          out->push_back(static_cast<char>(c));
        }
    }
  }
  out->push_back('"');
}

}  // namespace

// Written by hand: this runs for every audit record (every RPC), and protobuf's JSON printer (a Struct
// through the type resolver) was a few percent of backend's CPU per read. jsonb normalises the text anyway.
std::string AuditDetailsJson(const v1::AuditRecord& record) {
  std::string json = "{";
  for (const auto& [key, value] : record.details()) {
    if (json.size() > 1) json.push_back(',');
    AppendJsonString(&json, key);
    json.push_back(':');
    AppendJsonString(&json, value);
  }
  json.push_back('}');
  return json;
}

absl::StatusOr<std::vector<v1::AuditRecord>> AuditReader::Query(const v1::QueryAuditRequest& q,
                                                                uint64_t after_sequence, int limit) {
  std::vector<std::string> outcomes;
  for (int o : q.outcomes()) outcomes.push_back(absl::StrCat(o));
  SqlParams p;
  p.Int(static_cast<int64_t>(std::max<uint64_t>(after_sequence + 1, q.from_sequence())));
  p.Text(q.actor())
      .Text(q.object())
      .Text(q.action())
      .Text(absl::StrCat("{", absl::StrJoin(outcomes, ","), "}"));
  p.OptionalInt(q.time().has_start() ? std::optional<int64_t>(MicrosOfTimestamp(q.time().start()))
                                     : std::nullopt);
  p.OptionalInt(q.time().has_end() ? std::optional<int64_t>(MicrosOfTimestamp(q.time().end()))
                                   : std::nullopt);
  p.Int(limit);
  // A filter ending in "/" matches by prefix, anything else exactly (QueryAuditRequest).
  const std::string sql = absl::StrCat(
      "SELECT ", kAuditColumns, " FROM audit_records WHERE sequence >= $1",
      " AND ($2::text = '' OR actor = $2 OR (right($2, 1) = '/' AND left(actor, length($2)) = $2))",
      " AND ($3::text = '' OR object = $3 OR (right($3, 1) = '/' AND left(object, length($3)) = $3))",
      " AND ($4::text = '' OR action = $4) AND (cardinality($5::smallint[]) = 0 OR outcome = "
      "ANY($5::smallint[]))",
      " AND ($6::bigint IS NULL OR time_us >= $6) AND ($7::bigint IS NULL OR time_us < $7)",
      " ORDER BY sequence LIMIT $8");
  std::vector<v1::AuditRecord> out;
  SR_RETURN_IF_ERROR(db_->Read("QueryAudit", [&](pqxx::transaction_base& t) {
    for (const pqxx::row& row : t.exec_params(sql, p.Dynamic())) out.push_back(AuditRecordOfRow(row));
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<v1::AuditAnchor> AuditReader::Head() {
  v1::AuditAnchor head;
  head.set_hash(AuditGenesisHash());
  SR_RETURN_IF_ERROR(db_->Read("read the audit chain head", [&](pqxx::transaction_base& t) {
    pqxx::result r = t.exec("SELECT sequence, hash FROM audit_records ORDER BY sequence DESC LIMIT 1");
    if (!r.empty()) {
      head.set_sequence(r[0][0].as<uint64_t>());
      head.set_hash(pqxx::binarystring(r[0][1]).str());
    }
    return absl::OkStatus();
  }));
  return head;
}

absl::StatusOr<v1::VerifyAuditResponse> AuditReader::Verify(const v1::VerifyAuditRequest& request) {
  SR_ASSIGN_OR_RETURN(v1::AuditAnchor head, Head());
  const uint64_t from = std::max<uint64_t>(1, request.from_sequence());
  // A range past the head checks nothing: say so instead of answering ok for zero records.
  if (from > head.sequence() && (request.from_sequence() > 1 || request.to_sequence() > 0)) {
    return absl::InvalidArgumentError(absl::StrCat("from_sequence: ", request.from_sequence(),
                                                   " is beyond the chain head ", head.sequence()));
  }
  if (request.to_sequence() > head.sequence()) {
    return absl::InvalidArgumentError(
        absl::StrCat("to_sequence: ", request.to_sequence(), " is beyond the chain head ", head.sequence()));
  }
  uint64_t to = request.to_sequence() == 0 ? head.sequence() : request.to_sequence();
  // An anchor past `to` is still checked, as far as the chain goes (else truncation there would go unseen).
  for (const v1::AuditAnchor& a : request.anchors())
    to = std::max(to, std::min(a.sequence(), head.sequence()));
  // The record before `from` is trusted: its stored hash starts the check.
  std::string prev = AuditGenesisHash();
  if (from > 1) {
    bool found = false;
    SR_RETURN_IF_ERROR(db_->Read("VerifyAudit", [&](pqxx::transaction_base& t) {
      pqxx::result r =
          t.exec_params("SELECT hash FROM audit_records WHERE sequence = $1", static_cast<int64_t>(from - 1));
      if (!r.empty()) {
        prev = pqxx::binarystring(r[0][0]).str();
        found = true;
      }
      return absl::OkStatus();
    }));
    if (!found) {
      return absl::FailedPreconditionError(
          absl::StrCat("from_sequence ", from, ": record ", from - 1,
                       " (whose hash the check starts from) does not exist"));
    }
  }
  std::vector<v1::AuditAnchor> anchors(request.anchors().begin(), request.anchors().end());
  AuditChainVerifier verifier(from, prev, anchors);
  int64_t next = static_cast<int64_t>(from);
  bool more = true;
  while (more) {
    std::vector<v1::AuditRecord> page;
    SR_RETURN_IF_ERROR(db_->Read("VerifyAudit", [&](pqxx::transaction_base& t) {
      // By physical sequence order, so reordering shows; bounded by `to` unless anchors reach further.
      for (const pqxx::row& row : t.exec_params(
               absl::StrCat("SELECT ", kAuditColumns,
                            " FROM audit_records WHERE sequence >= $1 AND sequence <= $2 ORDER BY sequence "
                            "LIMIT $3"),
               next, static_cast<int64_t>(to), kVerifyPage)) {
        page.push_back(AuditRecordOfRow(row));
      }
      return absl::OkStatus();
    }));
    more = static_cast<int>(page.size()) == kVerifyPage;
    for (const v1::AuditRecord& r : page) {
      if (!verifier.Add(r)) {
        more = false;
        break;
      }
      next = static_cast<int64_t>(r.sequence()) + 1;
    }
  }
  v1::VerifyAuditResponse response;
  FillVerifyAuditResponse(verifier.Finish(), &response);
  *response.mutable_head() = head;
  return response;
}

}  // namespace strongroom::backend
