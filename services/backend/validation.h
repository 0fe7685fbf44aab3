// Syntax checks of every request field backend accepts, per the conventions in common.proto (ID, NAME, TOKEN,
// text limits). Each error is INVALID_ARGUMENT naming the field path and quoting the offending value
// (escaped, cut to 64 bytes), e.g. `user.name: "x'; DROP TABLE jobs; --" must match
// ^[a-z_][a-z0-9_.-]{0,31}$`. Pure functions.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/field_rules.h"
#include "strongroom/v1/backend.pb.h"

namespace strongroom::backend {

constexpr size_t kShortText = 256;
constexpr size_t kMessageText = 1024;
// The field rules themselves (patterns, ranges, quoting) live in common/field_rules.h, shared with vm-controller
// and the Local Slurm's submit check.
using ::strongroom::InvalidField;
using ::strongroom::IsId;
using ::strongroom::IsName;
using ::strongroom::IsReasonCode;
using ::strongroom::IsToken;
using ::strongroom::IsUserName;
using ::strongroom::kMaxSlurmJobId;

bool IsAuditAction(absl::string_view s);  // ^[A-Za-z0-9_./:>-]{1,128}$
bool IsDetailKey(absl::string_view s);    // ^[a-z][a-z0-9_.]{0,63}$

// Free text: at most `max_bytes`, no NUL byte (PostgreSQL text cannot hold one), non-empty when `required`.
// Anything else, quotes and SQL included, is accepted and stored verbatim.
absl::Status CheckText(absl::string_view field, absl::string_view text, size_t max_bytes,
                       bool required = false);

// An IPv4 prefix.
struct Ipv4Cidr {
  uint32_t address = 0;  // host byte order, host bits zero
  int prefix = 32;
  bool Contains(const Ipv4Cidr& inner) const;
};
// "a.b.c.d/n" (host bits zero) or a bare "a.b.c.d" (= /32).
absl::StatusOr<Ipv4Cidr> ParseIpv4Cidr(absl::string_view text);
// An allowlist address: a CIDR with prefix 16..32 outside loopback, link-local, multicast, 0.0.0.0/8 and
// broadcast.
absl::Status CheckAllowlistCidr(absl::string_view field, absl::string_view text);
// "host:port": host an IPv4 literal or a DNS name of at most 253 bytes, port 1..65535.
absl::Status CheckHostPort(absl::string_view field, absl::string_view text);

absl::Status ValidateLocalJobKey(const v1::LocalJobKey& key, absl::string_view field, bool require_job_id,
                                 bool require_token);
absl::Status ValidateUser(const v1::UserRef& user, absl::string_view field);
absl::Status ValidateResources(const v1::Resources& resources, absl::string_view field);
absl::Status ValidateEgressRule(const v1::EgressRule& rule, absl::string_view field);
absl::Status ValidateIngressRule(const v1::IngressRule& rule, absl::string_view field);
absl::Status ValidateFailureInfo(const v1::FailureInfo& failure, absl::string_view field);
absl::Status ValidateTimeRange(const v1::TimeRange& range, absl::string_view field, bool both_required);
absl::Status ValidateSelector(const v1::JobSelector& selector, absl::string_view field);

// CreateGlobalJob's syntax: every field's format and range. Policy (project, cluster binding, exclusivity,
// node count, GPUs, workload kind) is checked by job_policy.h.
// Also: workload_kind, when set, must be WorkloadKindFor(exclusive) (INVALID_ARGUMENT naming workload_kind).
absl::Status ValidateCreateRequest(const v1::CreateGlobalJobRequest& request);
// The workload kind of a job: CONTAINER (whole node) when exclusive, VM (the job's own CPUs and memory)
// otherwise.
v1::WorkloadKind WorkloadKindFor(bool exclusive);

// An audit chain position given in a request (`field`, e.g. "from_sequence"): at most 2^63-1, what the
// chain's bigint sequence can hold. INVALID_ARGUMENT naming the field otherwise.
absl::Status ValidateAuditSequence(absl::string_view field, uint64_t sequence);

// One record of AppendAudit from another service: time, actor, action, outcome, source_sequence and the
// limits on object and details. `field` is e.g. "records[3]".
absl::Status ValidateSenderRecord(const v1::AuditRecord& record, absl::string_view field);

}  // namespace strongroom::backend
