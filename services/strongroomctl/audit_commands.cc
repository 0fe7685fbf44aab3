// `audit verify` and `audit query`: the operator's and the auditor's view of backend's hash-chained audit
// log. verify fetches the records with QueryAudit and recomputes the chain here (common/audit_chain.h), so a
// compromised backend cannot vouch for itself; --server asks backend's VerifyAudit instead.
#include <cstdio>
#include <fstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/audit_chain.h"
#include "google/protobuf/util/time_util.h"
#include "services/strongroomctl/ctl.h"
#include "strongroom/v1/backend.grpc.pb.h"

namespace strongroom::ctl {
namespace {

constexpr uint32_t kPage = 1000;

absl::StatusOr<v1::AuditAnchor> ParseAnchor(absl::string_view text) {
  text = absl::StripAsciiWhitespace(text);
  std::vector<std::string> parts = absl::StrSplit(text, absl::ByAnyChar(": "), absl::SkipEmpty());
  v1::AuditAnchor anchor;
  uint64_t sequence = 0;
  std::string hash;
  if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &sequence) || sequence == 0 ||
      !BytesOfHex(parts[1], &hash) || hash.size() != kAuditHashBytes) {
    return absl::InvalidArgumentError(absl::StrCat("anchor \"", text, "\" is not SEQUENCE:SHA256HEX"));
  }
  anchor.set_sequence(sequence);
  anchor.set_hash(hash);
  return anchor;
}

google::protobuf::Timestamp ToTimestamp(absl::Time t) {
  return google::protobuf::util::TimeUtil::MicrosecondsToTimestamp(absl::ToUnixMicros(t));
}

// `s` as a JSON string literal (the reason and the lag's error may quote anything).
std::string JsonString(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out.push_back('\\');
      out.push_back(static_cast<char>(c));
    } else if (c < 0x20) {
      absl::StrAppend(&out, absl::StrFormat("\\u%04x", c));
    } else {
      out.push_back(static_cast<char>(c));
    }
  }
  return out + "\"";
}

void PrintVerdict(const v1::VerifyAuditResponse& v, bool server) {
  absl::string_view violation_name = v1::AuditViolation_Name(v.violation());
  absl::ConsumePrefix(&violation_name, "AUDIT_VIOLATION_");
  std::string out = absl::StrCat(
      "{\"ok\":", v.ok() ? "true" : "false", ",\"verified_by\":\"", server ? "backend" : "strongroomctl",
      "\",\"records_checked\":", v.records_checked(), ",\"head\":{\"sequence\":", v.head().sequence(),
      ",\"hash\":\"", HexOf(v.head().hash()), "\"}");
  if (!v.ok()) {
    absl::StrAppend(&out, ",\"first_bad_sequence\":", v.first_bad_sequence(), ",\"violation\":\"",
                    violation_name, "\",\"reason\":", JsonString(v.reason()));
  }
  // How far the chain lags what backend accepted, and what the chain itself says was lost.
  const v1::AuditLag& lag = v.lag();
  absl::StrAppend(
      &out, ",\"lag\":{\"pending_records\":", lag.pending_records(), ",\"oldest_pending_seconds\":",
      absl::StrFormat("%.3f", lag.oldest_pending().seconds() + lag.oldest_pending().nanos() / 1e9),
      ",\"stalled\":", lag.stalled() ? "true" : "false", ",\"dropped_records\":", lag.dropped_records());
  if (!lag.last_error().empty()) absl::StrAppend(&out, ",\"last_error\":", JsonString(lag.last_error()));
  absl::StrAppend(&out, "},\"loss_count\":", v.loss_count(), ",\"losses\":[");
  for (int i = 0; i < v.losses_size(); ++i) {
    absl::StrAppend(&out, i == 0 ? "" : ",", "{\"sequence\":", v.losses(i).sequence(),
                    ",\"action\":", JsonString(v.losses(i).action()),
                    ",\"recorded_by\":", JsonString(v.losses(i).recorded_by()), "}");
  }
  std::printf("%s]}\n", out.c_str());
}

int Verify(const Flags& flags, v1::Backend::Stub& stub, const CommandOptions& o) {
  std::vector<v1::AuditAnchor> anchors;
  for (const std::string& text :
       o.values.count("--anchor") ? o.values.at("--anchor") : std::vector<std::string>()) {
    absl::StatusOr<v1::AuditAnchor> anchor = ParseAnchor(text);
    if (!anchor.ok()) return UsageError(std::string(anchor.status().message()));
    anchors.push_back(*anchor);
  }
  if (const std::string file = o.Get("--anchors-file"); !file.empty()) {
    std::ifstream in(file);
    if (!in) return UsageError("--anchors-file: cannot read " + file);
    for (std::string line; std::getline(in, line);) {
      if (absl::StripAsciiWhitespace(line).empty() || line[0] == '#') continue;
      absl::StatusOr<v1::AuditAnchor> anchor = ParseAnchor(line);
      if (!anchor.ok()) return UsageError(absl::StrCat(file, ": ", anchor.status().message()));
      anchors.push_back(*anchor);
    }
  }
  uint64_t from = 1, to = 0;
  if (!o.Get("--from").empty() && (!absl::SimpleAtoi(o.Get("--from"), &from) || from == 0)) {
    return UsageError("--from: a sequence number (from 1)");
  }
  if (!o.Get("--to").empty() && !absl::SimpleAtoi(o.Get("--to"), &to))
    return UsageError("--to: a sequence number");

  v1::VerifyAuditResponse verdict;
  const bool server = o.switches.count("--server") != 0;
  if (server) {
    v1::VerifyAuditRequest request;
    request.set_from_sequence(from);
    request.set_to_sequence(to);
    for (const auto& a : anchors) *request.add_anchors() = a;
    grpc::Status status = stub.VerifyAudit(NewContext(flags).get(), request, &verdict);
    if (!status.ok()) return PrintStatusAndExit(status);
  } else {
    // The record before `from` is fetched too: its stored hash starts the check.
    v1::QueryAuditRequest request;
    request.set_from_sequence(from > 1 ? from - 1 : 1);
    request.mutable_page()->set_page_size(kPage);
    std::string prev = AuditGenesisHash();
    bool first_page = true;
    std::unique_ptr<AuditChainVerifier> verifier;
    while (true) {
      v1::QueryAuditResponse page;
      grpc::Status status = stub.QueryAudit(NewContext(flags).get(), request, &page);
      if (!status.ok()) return PrintStatusAndExit(status);
      *verdict.mutable_lag() = page.lag();  // the last page's: the freshest
      int start = 0;
      if (first_page && from > 1) {
        if (page.records_size() == 0 || page.records(0).sequence() != from - 1) {
          return PrintStatusAndExit(absl::FailedPreconditionError(
              absl::StrCat("cannot start at ", from, ": record ", from - 1, " is missing")));
        }
        prev = page.records(0).hash();
        start = 1;
      }
      if (first_page) verifier = std::make_unique<AuditChainVerifier>(from, prev, anchors);
      first_page = false;
      bool stop = false;
      for (int i = start; i < page.records_size() && !stop; ++i) {
        const v1::AuditRecord& r = page.records(i);
        if (to != 0 && r.sequence() > to) {
          stop = true;
          break;
        }
        stop = !verifier->Add(r);
        verdict.mutable_head()->set_sequence(r.sequence());
        verdict.mutable_head()->set_hash(r.hash());
      }
      if (stop || page.page().next_page_token().empty()) break;
      request.mutable_page()->set_page_token(page.page().next_page_token());
    }
    FillVerifyAuditResponse(verifier->Finish(), &verdict);
  }
  PrintVerdict(verdict, server);
  if (!verdict.ok()) return kVerificationFailedExit;
  const uint64_t head_sequence = verdict.head().sequence();
  const std::string head_hash = verdict.head().hash();
  if (const std::string file = o.Get("--save-anchor"); !file.empty() && head_sequence > 0) {
    std::ofstream out(file, std::ios::app);
    out << head_sequence << ":" << HexOf(head_hash) << "\n";
    if (!out) return PrintStatusAndExit(absl::InternalError("cannot append the anchor to " + file));
  }
  return 0;
}

int Query(const Flags& flags, v1::Backend::Stub& stub, const CommandOptions& o) {
  v1::QueryAuditRequest request;
  request.set_actor(o.Get("--actor"));
  request.set_object(o.Get("--object"));
  request.set_action(o.Get("--action"));
  for (const char* bound : {"--from", "--to"}) {
    if (o.Get(bound).empty()) continue;
    absl::StatusOr<absl::Time> t = ParseTimeArgument(o.Get(bound));
    if (!t.ok()) return UsageError(absl::StrCat(bound, ": ", t.status().message()));
    *(std::string(bound) == "--from" ? request.mutable_time()->mutable_start()
                                     : request.mutable_time()->mutable_end()) = ToTimestamp(*t);
  }
  for (const std::string& name :
       o.values.count("--outcome") ? o.values.at("--outcome") : std::vector<std::string>()) {
    v1::AuditOutcome outcome;
    if (!v1::AuditOutcome_Parse("AUDIT_OUTCOME_" + name, &outcome))
      return UsageError("--outcome: SUCCESS, FAILURE or DENIED");
    request.add_outcomes(outcome);
  }
  int64_t limit = 1000;
  if (!o.Get("--limit").empty() && (!absl::SimpleAtoi(o.Get("--limit"), &limit) || limit < 1)) {
    return UsageError("--limit: a positive number");
  }
  request.mutable_page()->set_page_size(static_cast<uint32_t>(std::min<int64_t>(limit, kPage)));
  int64_t printed = 0;
  while (printed < limit) {
    v1::QueryAuditResponse page;
    grpc::Status status = stub.QueryAudit(NewContext(flags).get(), request, &page);
    if (!status.ok()) return PrintStatusAndExit(status);
    for (const v1::AuditRecord& r : page.records()) {
      if (printed++ >= limit) break;
      PrintJson(r);
    }
    if (page.page().next_page_token().empty()) break;
    request.mutable_page()->set_page_token(page.page().next_page_token());
  }
  return 0;
}

}  // namespace

int AuditCommand(const Flags& flags, const std::vector<std::string>& args) {
  if (args.empty() || (args[0] != "verify" && args[0] != "query"))
    return UsageError("audit verify|query ...");
  std::string error;
  const std::vector<std::string> rest(args.begin() + 1, args.end());
  const CommandOptions o =
      args[0] == "verify"
          ? ParseCommandOptions(rest, {"--from", "--to", "--anchor", "--anchors-file", "--save-anchor"},
                                {"--server"}, &error)
          : ParseCommandOptions(rest,
                                {"--actor", "--object", "--action", "--from", "--to", "--outcome", "--limit"},
                                {}, &error);
  if (!error.empty()) return UsageError(absl::StrCat("audit ", args[0], ": ", error));
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = OpenChannel(flags, Role::kBackend);
  if (!channel.ok()) return UsageError(std::string(channel.status().message()));
  std::unique_ptr<v1::Backend::Stub> stub = v1::Backend::NewStub(*channel);
  return args[0] == "verify" ? Verify(flags, *stub, o) : Query(flags, *stub, o);
}

}  // namespace strongroom::ctl
