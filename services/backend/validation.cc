#include "services/backend/validation.h"

#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/audit_text.h"
#include "common/status.h"
#include "google/protobuf/util/time_util.h"

namespace strongroom::backend {
namespace {

using google::protobuf::util::TimeUtil;

constexpr int kMaxEgressRules = 1024;
constexpr int kMaxIngressRules = 64;
constexpr size_t kMaxObjectBytes = 256;
constexpr int kMaxDetails = 32;



std::string Field(absl::string_view prefix, absl::string_view name) {
  return prefix.empty() ? std::string(name) : absl::StrCat(prefix, ".", name);
}

absl::Status CheckPortRange(absl::string_view field, uint32_t start, uint32_t end) {
  if (start < 1 || start > 65535)
    return InvalidField(Field(field, "port_start"), absl::StrCat(start), "is not in 1..65535");
  if (end != 0 && (end < start || end > 65535)) {
    return InvalidField(Field(field, "port_end"), absl::StrCat(end),
                        absl::StrCat("is not in ", start, "..65535"));
  }
  return absl::OkStatus();
}

absl::Status CheckTimestamp(absl::string_view field, const google::protobuf::Timestamp& t) {
  if (t.seconds() < TimeUtil::kTimestampMinSeconds || t.seconds() > TimeUtil::kTimestampMaxSeconds ||
      t.nanos() < 0 || t.nanos() > 999999999) {
    return InvalidField(field, absl::StrCat(t.seconds(), "s ", t.nanos(), "ns"), "is not a valid timestamp");
  }
  return absl::OkStatus();
}

}  // namespace

bool IsAuditAction(absl::string_view s) {
  auto ok = [](char c) {
    return IsLowerAscii(c) || (c >= 'A' && c <= 'Z') || IsDigitAscii(c) || c == '_' || c == '.' || c == '/' || c == ':' ||
           c == '>' || c == '-';
  };
  return MatchesShape(s, 1, 128, ok, ok);
}
bool IsDetailKey(absl::string_view s) {
  return MatchesShape(s, 1, 64, IsLowerAscii, [](char c) { return IsLowerAscii(c) || IsDigitAscii(c) || c == '_' || c == '.'; });
}

absl::Status CheckText(absl::string_view field, absl::string_view text, size_t max_bytes, bool required) {
  if (required && text.empty()) return absl::InvalidArgumentError(absl::StrCat(field, ": required"));
  if (text.size() > max_bytes) {
    return InvalidField(field, text,
                        absl::StrCat("is ", text.size(), " bytes; at most ", max_bytes, " allowed"));
  }
  if (text.find('\0') != absl::string_view::npos) return InvalidField(field, text, "contains a NUL byte");
  return absl::OkStatus();
}

bool Ipv4Cidr::Contains(const Ipv4Cidr& inner) const {
  if (inner.prefix < prefix) return false;
  const uint32_t mask = prefix == 0 ? 0 : ~uint32_t{0} << (32 - prefix);
  return (inner.address & mask) == address;
}

absl::StatusOr<Ipv4Cidr> ParseIpv4Cidr(absl::string_view text) {
  std::vector<absl::string_view> parts = absl::StrSplit(text, '/');
  if (parts.size() > 2) return absl::InvalidArgumentError("is not an IPv4 address or CIDR");
  std::vector<absl::string_view> octets = absl::StrSplit(parts[0], '.');
  if (octets.size() != 4) return absl::InvalidArgumentError("is not an IPv4 address or CIDR");
  Ipv4Cidr cidr;
  for (absl::string_view o : octets) {
    uint32_t v = 0;
    if (o.empty() || o.size() > 3 || (o.size() > 1 && o[0] == '0') || !absl::SimpleAtoi(o, &v) || v > 255) {
      return absl::InvalidArgumentError("is not an IPv4 address or CIDR");
    }
    cidr.address = (cidr.address << 8) | v;
  }
  if (parts.size() == 2) {
    if (parts[1].empty() || parts[1].size() > 2 || !absl::SimpleAtoi(parts[1], &cidr.prefix) ||
        cidr.prefix < 0 || cidr.prefix > 32) {
      return absl::InvalidArgumentError("has a prefix length outside 0..32");
    }
  }
  const uint32_t host_mask = cidr.prefix == 32 ? 0 : ~uint32_t{0} >> cidr.prefix;
  if ((cidr.address & host_mask) != 0)
    return absl::InvalidArgumentError("has host bits set below its prefix");
  return cidr;
}

absl::Status CheckAllowlistCidr(absl::string_view field, absl::string_view text) {
  absl::StatusOr<Ipv4Cidr> cidr = ParseIpv4Cidr(text);
  if (!cidr.ok()) return InvalidField(field, text, cidr.status().message());
  if (cidr->prefix < 16) return InvalidField(field, text, "has a prefix shorter than /16");
  struct Refused {
    const char* cidr;
    const char* what;
  };
  for (const Refused& r : {Refused{"0.0.0.0/8", "the 0.0.0.0/8 range"},
                           {"127.0.0.0/8", "loopback"},
                           {"169.254.0.0/16", "link-local"},
                           {"224.0.0.0/4", "multicast"},
                           {"255.255.255.255/32", "broadcast"}}) {
    Ipv4Cidr refused = *ParseIpv4Cidr(r.cidr);
    if (refused.Contains(*cidr) || cidr->Contains(refused))
      return InvalidField(field, text, absl::StrCat("is ", r.what));
  }
  return absl::OkStatus();
}

absl::Status CheckHostPort(absl::string_view field, absl::string_view text) {
  const size_t colon = text.rfind(':');
  if (colon == absl::string_view::npos || colon == 0) return InvalidField(field, text, "must be HOST:PORT");
  uint32_t port = 0;
  absl::string_view host = text.substr(0, colon);
  if (!absl::SimpleAtoi(text.substr(colon + 1), &port) || port < 1 || port > 65535) {
    return InvalidField(field, text, "has a port outside 1..65535");
  }
  if (ParseIpv4Cidr(host).ok()) return absl::OkStatus();
  bool dns = host.size() <= 253;
  for (absl::string_view label : absl::StrSplit(host, '.')) {
    dns = dns && !label.empty() && label.size() <= 63 && label.front() != '-' && label.back() != '-';
    for (char c : label) dns = dns && (IsLowerAscii(c) || (c >= 'A' && c <= 'Z') || IsDigitAscii(c) || c == '-');
  }
  if (!dns) return InvalidField(field, text, "has a host that is neither an IPv4 address nor a DNS name");
  return absl::OkStatus();
}

absl::Status ValidateLocalJobKey(const v1::LocalJobKey& key, absl::string_view field, bool require_job_id,
                                 bool require_token) {
  if (!IsId(key.local_cluster())) {
    return InvalidField(Field(field, "local_cluster"), key.local_cluster(),
                        "must match ^[a-z0-9][a-z0-9-]{0,62}$");
  }
  SR_RETURN_IF_ERROR(CheckSlurmJobId(Field(field, "local_job_id"), key.local_job_id(), require_job_id));
  if (require_token || !key.token().empty()) SR_RETURN_IF_ERROR(CheckToken(Field(field, "token"), key.token()));
  if (key.local_job_id() == 0 && key.token().empty()) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": local_job_id or token is required"));
  }
  return absl::OkStatus();
}

absl::Status ValidateUser(const v1::UserRef& user, absl::string_view field) {
  SR_RETURN_IF_ERROR(CheckUserName(Field(field, "name"), user.name()));
  SR_RETURN_IF_ERROR(CheckUid(Field(field, "uid"), user.uid()));
  return CheckGid(Field(field, "gid"), user.gid());
}

absl::Status ValidateResources(const v1::Resources& r, absl::string_view field) {
  SR_RETURN_IF_ERROR(CheckNodes(Field(field, "nodes"), r.nodes()));
  SR_RETURN_IF_ERROR(CheckCpus(Field(field, "cpus"), r.cpus()));
  SR_RETURN_IF_ERROR(CheckMemoryBytes(Field(field, "memory_bytes"), r.memory_bytes()));
  SR_RETURN_IF_ERROR(CheckGpus(Field(field, "gpus"), r.gpus()));
  if (r.has_time_limit()) {
    SR_RETURN_IF_ERROR(
        CheckTimeLimitSeconds(Field(field, "time_limit"), r.time_limit().seconds(), r.time_limit().nanos()));
  }
  return absl::OkStatus();
}

absl::Status ValidateEgressRule(const v1::EgressRule& rule, absl::string_view field) {
  if (absl::Status s = CheckAllowlistCidr(Field(field, "destination_cidr"), rule.destination_cidr()); !s.ok())
    return s;
  if (rule.protocol() != v1::PROTOCOL_TCP && rule.protocol() != v1::PROTOCOL_UDP) {
    return InvalidField(Field(field, "protocol"), v1::Protocol_Name(rule.protocol()), "must be TCP or UDP");
  }
  if (absl::Status s = CheckPortRange(field, rule.port_start(), rule.port_end()); !s.ok()) return s;
  return CheckText(Field(field, "description"), rule.description(), kShortText);
}

absl::Status ValidateIngressRule(const v1::IngressRule& rule, absl::string_view field) {
  if (absl::Status s = CheckAllowlistCidr(Field(field, "source_cidr"), rule.source_cidr()); !s.ok()) return s;
  if (rule.protocol() != v1::PROTOCOL_TCP && rule.protocol() != v1::PROTOCOL_UDP) {
    return InvalidField(Field(field, "protocol"), v1::Protocol_Name(rule.protocol()), "must be TCP or UDP");
  }
  if (absl::Status s = CheckPortRange(field, rule.port_start(), rule.port_end()); !s.ok()) return s;
  return CheckText(Field(field, "description"), rule.description(), kShortText);
}

absl::Status ValidateFailureInfo(const v1::FailureInfo& failure, absl::string_view field) {
  if (failure.phase() == v1::FAILURE_PHASE_UNSPECIFIED) {
    return absl::InvalidArgumentError(absl::StrCat(field, ".phase: required"));
  }
  if (!IsReasonCode(failure.reason())) {
    return InvalidField(Field(field, "reason"), failure.reason(), "must match ^[A-Z][A-Z0-9_]{0,63}$");
  }
  if (failure.status_code() < 0 || failure.status_code() > 16) {
    return InvalidField(Field(field, "status_code"), absl::StrCat(failure.status_code()), "is not in 0..16");
  }
  if (failure.has_time()) {
    if (absl::Status s = CheckTimestamp(Field(field, "time"), failure.time()); !s.ok()) return s;
  }
  return CheckText(Field(field, "message"), failure.message(), kMessageText);
}

absl::Status ValidateTimeRange(const v1::TimeRange& range, absl::string_view field, bool both_required) {
  if (both_required && (!range.has_start() || !range.has_end())) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": both start and end are required"));
  }
  if (range.has_start()) {
    if (absl::Status s = CheckTimestamp(Field(field, "start"), range.start()); !s.ok()) return s;
  }
  if (range.has_end()) {
    if (absl::Status s = CheckTimestamp(Field(field, "end"), range.end()); !s.ok()) return s;
  }
  if (range.has_start() && range.has_end() && range.start() >= range.end()) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": start ", TimeUtil::ToString(range.start()),
                                                   " is not before end ", TimeUtil::ToString(range.end())));
  }
  return absl::OkStatus();
}

absl::Status ValidateSelector(const v1::JobSelector& selector, absl::string_view field) {
  switch (selector.key_case()) {
    case v1::JobSelector::kGlobalJobId:
      if (!IsId(selector.global_job_id())) {
        return InvalidField(Field(field, "global_job_id"), selector.global_job_id(),
                            "must match ^[a-z0-9][a-z0-9-]{0,62}$");
      }
      return absl::OkStatus();
    case v1::JobSelector::kLocal:
      return ValidateLocalJobKey(selector.local(), Field(field, "local"), false, false);
    case v1::JobSelector::kGlobalSlurmJobId:
      if (selector.global_slurm_job_id() < 1 || selector.global_slurm_job_id() > kMaxSlurmJobId) {
        return InvalidField(Field(field, "global_slurm_job_id"), absl::StrCat(selector.global_slurm_job_id()),
                            absl::StrCat("is not in 1..", kMaxSlurmJobId));
      }
      return absl::OkStatus();
    case v1::JobSelector::KEY_NOT_SET:
      break;
  }
  return absl::InvalidArgumentError(
      absl::StrCat(field, ": exactly one of global_job_id, local or global_slurm_job_id is required"));
}

v1::WorkloadKind WorkloadKindFor(bool exclusive) {
  return exclusive ? v1::WORKLOAD_KIND_CONTAINER : v1::WORKLOAD_KIND_VM;
}

absl::Status ValidateCreateRequest(const v1::CreateGlobalJobRequest& r) {
  if (!r.has_local()) return absl::InvalidArgumentError("local: required");
  if (absl::Status s = ValidateLocalJobKey(r.local(), "local", true, true); !s.ok()) return s;
  if (!r.has_user()) return absl::InvalidArgumentError("user: required");
  if (absl::Status s = ValidateUser(r.user(), "user"); !s.ok()) return s;
  SR_RETURN_IF_ERROR(CheckProject("project", r.project(), /*allow_empty=*/false));
  if (absl::Status s = ValidateResources(r.resources(), "resources"); !s.ok()) return s;
  if (r.workload_kind() != v1::WORKLOAD_KIND_UNSPECIFIED &&
      r.workload_kind() != v1::WORKLOAD_KIND_CONTAINER && r.workload_kind() != v1::WORKLOAD_KIND_VM) {
    return InvalidField("workload_kind", absl::StrCat(r.workload_kind()), "is not a known WorkloadKind");
  }
  // The kind follows exclusive: an explicit kind must agree with it.
  if (r.workload_kind() != v1::WORKLOAD_KIND_UNSPECIFIED &&
      r.workload_kind() != WorkloadKindFor(r.exclusive())) {
    return InvalidField("workload_kind", v1::WorkloadKind_Name(r.workload_kind()),
                        r.exclusive()
                            ? "contradicts exclusive true (a whole-node job runs in a CONTAINER)"
                            : "contradicts exclusive false (a job that does not take the whole node "
                              "runs in a VM)");
  }
  if (r.slurmctld_addresses_size() < 1 || r.slurmctld_addresses_size() > 4) {
    return absl::InvalidArgumentError(
        absl::StrCat("slurmctld_addresses: ", r.slurmctld_addresses_size(), " given; 1 to 4 are required"));
  }
  for (int i = 0; i < r.slurmctld_addresses_size(); ++i) {
    if (absl::Status s =
            CheckHostPort(absl::StrCat("slurmctld_addresses[", i, "]"), r.slurmctld_addresses(i));
        !s.ok()) {
      return s;
    }
  }
  const std::string& munge_socket = r.local_munge_socket();
  if (!munge_socket.empty() && (munge_socket[0] != '/' || munge_socket.size() > 255 ||
                                munge_socket.find("..") != std::string::npos)) {
    return InvalidField("local_munge_socket", munge_socket,
                        "must be an absolute path of at most 255 bytes without \"..\"");
  }
  const std::string& image = r.image().name();
  auto image_char = [](char c) { return IsLowerAscii(c) || IsDigitAscii(c) || c == '.' || c == '_' || c == '-'; };
  if (!image.empty() && !MatchesShape(
                            image, 1, 128, [](char c) { return IsLowerAscii(c) || IsDigitAscii(c); }, image_char)) {
    return InvalidField("image.name", image, "must match ^[a-z0-9][a-z0-9._-]{0,127}$");
  }
  const std::string& digest = r.image().digest();
  if (!digest.empty()) {
    bool ok = digest.size() == 71 && digest.compare(0, 7, "sha256:") == 0;
    for (size_t i = 7; ok && i < digest.size(); ++i)
      ok = IsDigitAscii(digest[i]) || (digest[i] >= 'a' && digest[i] <= 'f');
    if (!ok) return InvalidField("image.digest", digest, "must be \"sha256:\" and 64 lower-case hex digits");
  }
  if (r.egress_allowlist_size() > kMaxEgressRules) {
    return absl::InvalidArgumentError(absl::StrCat("egress_allowlist: ", r.egress_allowlist_size(),
                                                   " rules; at most ", kMaxEgressRules, " allowed"));
  }
  for (int i = 0; i < r.egress_allowlist_size(); ++i) {
    if (absl::Status s = ValidateEgressRule(r.egress_allowlist(i), absl::StrCat("egress_allowlist[", i, "]"));
        !s.ok()) {
      return s;
    }
  }
  if (r.ingress_allowlist_size() > kMaxIngressRules) {
    return absl::InvalidArgumentError(absl::StrCat("ingress_allowlist: ", r.ingress_allowlist_size(),
                                                   " rules; at most ", kMaxIngressRules, " allowed"));
  }
  for (int i = 0; i < r.ingress_allowlist_size(); ++i) {
    if (absl::Status s =
            ValidateIngressRule(r.ingress_allowlist(i), absl::StrCat("ingress_allowlist[", i, "]"));
        !s.ok()) {
      return s;
    }
  }
  const uint64_t scratch = r.scratch().size_bytes();
  if (scratch != 0 && (scratch < (uint64_t{1} << 26) || scratch > (uint64_t{1} << 44))) {
    return InvalidField("scratch.size_bytes", absl::StrCat(scratch), "is not 0 or in 2^26..2^44");
  }
  if (!v1::ScratchEncryption_IsValid(r.scratch().encryption())) {
    return InvalidField("scratch.encryption", absl::StrCat(r.scratch().encryption()), "is not a known mode");
  }
  if (r.has_local_submit_time()) {
    if (absl::Status s = CheckTimestamp("local_submit_time", r.local_submit_time()); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status ValidateAuditSequence(absl::string_view field, uint64_t sequence) {
  constexpr uint64_t kMaxSequence = uint64_t{INT64_MAX};
  if (sequence > kMaxSequence) {
    return InvalidField(field, absl::StrCat(sequence), absl::StrCat("is not in 0..", kMaxSequence));
  }
  return absl::OkStatus();
}

absl::Status ValidateSenderRecord(const v1::AuditRecord& r, absl::string_view field) {
  if (!r.has_time()) return absl::InvalidArgumentError(absl::StrCat(field, ".time: required"));
  if (absl::Status s = CheckTimestamp(Field(field, "time"), r.time()); !s.ok()) return s;
  if (r.actor().spiffe_id().empty())
    return absl::InvalidArgumentError(absl::StrCat(field, ".actor.spiffe_id: required"));
  if (absl::Status s = CheckText(Field(field, "actor.spiffe_id"), r.actor().spiffe_id(), 512); !s.ok())
    return s;
  if (!IsAuditAction(r.action())) {
    return InvalidField(Field(field, "action"), r.action(), "must match ^[A-Za-z0-9_./:>-]{1,128}$");
  }
  if (absl::Status s = CheckText(Field(field, "object"), r.object(), kMaxObjectBytes); !s.ok()) return s;
  if (r.outcome() != v1::AUDIT_OUTCOME_SUCCESS && r.outcome() != v1::AUDIT_OUTCOME_FAILURE &&
      r.outcome() != v1::AUDIT_OUTCOME_DENIED) {
    return InvalidField(Field(field, "outcome"), absl::StrCat(r.outcome()),
                        "must be SUCCESS, FAILURE or DENIED");
  }
  if (r.status_code() < 0 || r.status_code() > 16) {
    return InvalidField(Field(field, "status_code"), absl::StrCat(r.status_code()), "is not in 0..16");
  }
  if (r.details_size() > kMaxDetails) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ".details: ", r.details_size(), " entries; at most ", kMaxDetails, " allowed"));
  }
  for (const auto& [key, value] : r.details()) {
    if (!IsDetailKey(key))
      return InvalidField(Field(field, "details"), key, "is not a key matching ^[a-z][a-z0-9_.]{0,63}$");
    if (absl::Status s = CheckText(absl::StrCat(field, ".details[", key, "]"), value, kMaxAuditDetailBytes);
        !s.ok())
      return s;
  }
  if (r.source_sequence() == 0)
    return absl::InvalidArgumentError(absl::StrCat(field, ".source_sequence: required (from 1)"));
  return absl::OkStatus();
}

}  // namespace strongroom::backend
