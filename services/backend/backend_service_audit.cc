// The audit and usage RPCs of BackendService (the job RPCs are in backend_service.cc).
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/audit.h"
#include "common/status.h"
#include "services/backend/backend_service.h"
#include "services/backend/page_token.h"
#include "services/backend/proto_time.h"
#include "services/backend/usage.h"
#include "services/backend/validation.h"

namespace strongroom::backend {
namespace {

constexpr int kMaxAppendRecords = 1000;
constexpr int kMaxAnchors = 100;
// An AppendAudit waits at most this long for its commit, even under a longer client deadline.
constexpr absl::Duration kMaxAppendWait = absl::Seconds(30);

}  // namespace

absl::StatusOr<v1::AppendAuditResponse> BackendService::AppendAudit(const Identity& caller,
                                                                    const v1::AppendAuditRequest& request,
                                                                    absl::Time deadline) {
  const std::string sender = caller.SpiffeId();
  if (sender == settings_.identity) {
    // backend's own records are numbered by its chain writer; an AppendAudit as itself would collide with
    // them.
    return absl::PermissionDeniedError(
        absl::StrCat(sender, " is this backend; its records are appended locally"));
  }
  if (request.records_size() < 1 || request.records_size() > kMaxAppendRecords) {
    return absl::InvalidArgumentError(absl::StrCat("records: ", request.records_size(), " given; 1 to ",
                                                   kMaxAppendRecords, " are allowed"));
  }
  std::vector<v1::AuditRecord> records;
  records.reserve(request.records_size());
  uint64_t previous = 0;
  for (int i = 0; i < request.records_size(); ++i) {
    const v1::AuditRecord& in = request.records(i);
    const std::string field = absl::StrCat("records[", i, "]");
    SR_RETURN_IF_ERROR(ValidateSenderRecord(in, field));
    if (in.source_sequence() <= previous) {
      return absl::InvalidArgumentError(absl::StrCat(field, ".source_sequence: ", in.source_sequence(),
                                                     " does not increase (previous ", previous, ")"));
    }
    previous = in.source_sequence();
    // Only the sender's fields; what backend assigns is set by the chain writer. Time is kept to the
    // microsecond the database stores, so the hash computed now is the hash recomputed later.
    v1::AuditRecord& r = records.emplace_back();
    *r.mutable_time() = TimestampOfMicros(MicrosOfTimestamp(in.time()));
    *r.mutable_actor() = AuditIdentityOf(in.actor().spiffe_id());
    r.set_action(in.action());
    r.set_object(in.object());
    r.set_outcome(in.outcome());
    r.set_status_code(in.status_code());
    *r.mutable_details() = in.details();
    r.set_source_sequence(in.source_sequence());
  }
  return audit_writer_->AppendRemote(sender, std::move(records),
                                     std::min(deadline, absl::Now() + kMaxAppendWait));
}

absl::StatusOr<v1::QueryAuditResponse> BackendService::QueryAudit(const Identity& caller,
                                                                  const v1::QueryAuditRequest& request) {
  SR_RETURN_IF_ERROR(CheckText("actor", request.actor(), 512));
  SR_RETURN_IF_ERROR(CheckText("object", request.object(), 256));
  if (!request.action().empty() && !IsAuditAction(request.action())) {
    return InvalidField("action", request.action(), "must match ^[A-Za-z0-9_./:>-]{1,128}$");
  }
  SR_RETURN_IF_ERROR(ValidateTimeRange(request.time(), "time", false));
  SR_RETURN_IF_ERROR(ValidateAuditSequence("from_sequence", request.from_sequence()));
  for (int o : request.outcomes()) {
    if (!v1::AuditOutcome_IsValid(o) || o == v1::AUDIT_OUTCOME_UNSPECIFIED) {
      return InvalidField("outcomes", absl::StrCat(o), "is not SUCCESS, FAILURE or DENIED");
    }
  }
  v1::QueryAuditRequest fingerprinted = request;
  fingerprinted.clear_page();
  uint64_t after = 0;
  if (!request.page().page_token().empty()) {
    SR_ASSIGN_OR_RETURN(std::vector<std::string> parts,
                        DecodePageToken(request.page().page_token(), fingerprinted, 1));
    if (!absl::SimpleAtoi(parts[0], &after) || !ValidateAuditSequence("page.page_token", after).ok()) {
      return absl::InvalidArgumentError("page.page_token: malformed");
    }
  }
  const int limit = PageSize(request.page());
  SR_ASSIGN_OR_RETURN(std::vector<v1::AuditRecord> records, audit_reader_->Query(request, after, limit + 1));
  v1::QueryAuditResponse response;
  *response.mutable_lag() = audit_writer_->Lag();
  for (int i = 0; i < static_cast<int>(records.size()) && i < limit; ++i)
    *response.add_records() = std::move(records[i]);
  if (static_cast<int>(records.size()) > limit) {
    response.mutable_page()->set_next_page_token(
        EncodePageToken(fingerprinted, {absl::StrCat(response.records(limit - 1).sequence())}));
  }
  return response;
}

absl::StatusOr<v1::VerifyAuditResponse> BackendService::VerifyAudit(const Identity& caller,
                                                                    const v1::VerifyAuditRequest& request) {
  if (request.anchors_size() > kMaxAnchors) {
    return absl::InvalidArgumentError(
        absl::StrCat("anchors: ", request.anchors_size(), " given; at most ", kMaxAnchors, " allowed"));
  }
  SR_RETURN_IF_ERROR(ValidateAuditSequence("from_sequence", request.from_sequence()));
  SR_RETURN_IF_ERROR(ValidateAuditSequence("to_sequence", request.to_sequence()));
  for (int i = 0; i < request.anchors_size(); ++i) {
    SR_RETURN_IF_ERROR(
        ValidateAuditSequence(absl::StrCat("anchors[", i, "].sequence"), request.anchors(i).sequence()));
    if (request.anchors(i).sequence() < 1) {
      return absl::InvalidArgumentError(absl::StrCat("anchors[", i, "].sequence: must be at least 1"));
    }
    if (request.anchors(i).hash().size() != 32) {
      return absl::InvalidArgumentError(absl::StrCat(
          "anchors[", i, "].hash: ", request.anchors(i).hash().size(), " bytes; a SHA-256 hash has 32"));
    }
  }
  if (request.to_sequence() != 0 && request.to_sequence() < request.from_sequence()) {
    return absl::InvalidArgumentError(absl::StrCat("to_sequence ", request.to_sequence(),
                                                   " is before from_sequence ", request.from_sequence()));
  }
  SR_ASSIGN_OR_RETURN(v1::VerifyAuditResponse response, audit_reader_->Verify(request));
  *response.mutable_lag() = audit_writer_->Lag();
  return response;
}

absl::StatusOr<v1::UsageReportResponse> BackendService::UsageReport(const Identity& caller,
                                                                    const v1::UsageReportRequest& request) {
  if (!IsName(request.project())) {
    return InvalidField("project", request.project(), "must match ^[a-z0-9][a-z0-9_-]{0,62}$");
  }
  SR_RETURN_IF_ERROR(ValidateTimeRange(request.window(), "window", /*both_required=*/true));
  const absl::Time from = TimeOfTimestamp(request.window().start());
  const absl::Time to = TimeOfTimestamp(request.window().end());
  SR_ASSIGN_OR_RETURN(std::vector<RunRecord> runs, store_->Runs(request.project(), from, to));
  return ComputeUsage(request.project(), from, to, absl::Now(), runs);
}

}  // namespace strongroom::backend
