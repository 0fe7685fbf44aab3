#include "common/audit_chain.h"

#include <openssl/evp.h>

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"

namespace strongroom {
namespace {

// Versioned domain separator: a future encoding gets a new tag, never a silent change.
constexpr char kEncodingTag[] = "strongroom.audit.v1";

void PutU32(std::string* out, uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) out->push_back(static_cast<char>((v >> shift) & 0xff));
}
void PutU64(std::string* out, uint64_t v) {
  for (int shift = 56; shift >= 0; shift -= 8) out->push_back(static_cast<char>((v >> shift) & 0xff));
}
void PutBytes(std::string* out, const std::string& bytes) {
  PutU32(out, static_cast<uint32_t>(bytes.size()));
  out->append(bytes);
}
void PutTime(std::string* out, const google::protobuf::Timestamp& t) {
  PutU64(out, static_cast<uint64_t>(t.seconds()));
  PutU32(out, static_cast<uint32_t>(t.nanos()));
}

}  // namespace

bool IsAuditLossAction(const std::string& action) {
  return action == "audit.records_lost" || action == "audit.records_dropped" ||
         action == "audit.source_gap" || action == "audit.record_unstorable" ||
         action == "audit.record_refused";
}

const std::string& AuditGenesisHash() {
  static const auto* const kZero = new std::string(kAuditHashBytes, '\0');
  return *kZero;
}

std::string AuditCanonicalBytes(const v1::AuditRecord& r) {
  std::string out;
  PutBytes(&out, kEncodingTag);
  PutU64(&out, r.sequence());                            // 1
  PutTime(&out, r.time());                               // 2
  PutBytes(&out, r.actor().spiffe_id());                 // 3
  PutBytes(&out, r.action());                            // 4
  PutBytes(&out, r.object());                            // 5
  PutU32(&out, static_cast<uint32_t>(r.outcome()));      // 6
  PutU32(&out, static_cast<uint32_t>(r.status_code()));  // 7
  std::vector<std::pair<std::string, std::string>> details(r.details().begin(), r.details().end());
  std::sort(details.begin(), details.end());
  PutU32(&out, static_cast<uint32_t>(details.size()));  // 8
  for (const auto& [key, value] : details) {
    PutBytes(&out, key);
    PutBytes(&out, value);
  }
  PutBytes(&out, r.prev_hash());                // 9 (10, hash, is what this encodes)
  PutBytes(&out, r.recorded_by().spiffe_id());  // 11
  PutU64(&out, r.source_sequence());            // 12
  PutTime(&out, r.received_time());             // 13
  return out;
}

std::string AuditRecordHash(const v1::AuditRecord& record) {
  const std::string bytes = AuditCanonicalBytes(record);
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  EVP_Digest(bytes.data(), bytes.size(), digest, &length, EVP_sha256(), nullptr);
  return std::string(reinterpret_cast<const char*>(digest), length);
}

std::string HexOf(const std::string& bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string hex;
  hex.reserve(bytes.size() * 2);
  for (unsigned char c : bytes) {
    hex.push_back(kDigits[c >> 4]);
    hex.push_back(kDigits[c & 0xf]);
  }
  return hex;
}

bool BytesOfHex(const std::string& hex, std::string* bytes) {
  if (hex.size() % 2 != 0) return false;
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  bytes->clear();
  for (size_t i = 0; i < hex.size(); i += 2) {
    const int hi = nibble(hex[i]), lo = nibble(hex[i + 1]);
    if (hi < 0 || lo < 0) return false;
    bytes->push_back(static_cast<char>(hi * 16 + lo));
  }
  return true;
}

AuditChainVerifier::AuditChainVerifier(uint64_t first_sequence, std::string prev_hash,
                                       std::vector<v1::AuditAnchor> anchors)
    : expected_sequence_(first_sequence), prev_hash_(std::move(prev_hash)) {
  for (const v1::AuditAnchor& a : anchors) anchors_[a.sequence()] = a.hash();
}

void AuditChainVerifier::Fail(uint64_t sequence, v1::AuditViolation violation, std::string reason) {
  verdict_.ok = false;
  verdict_.first_bad_sequence = sequence;
  verdict_.violation = violation;
  verdict_.reason = std::move(reason);
}

bool AuditChainVerifier::Add(const v1::AuditRecord& r) {
  if (!verdict_.ok) return false;
  ++verdict_.records_checked;
  if (r.sequence() > expected_sequence_) {
    Fail(expected_sequence_, v1::AUDIT_VIOLATION_SEQUENCE_GAP,
         absl::StrCat("record ", expected_sequence_, " is missing (the next stored record is ", r.sequence(),
                      "): a record was deleted"));
    return false;
  }
  if (r.sequence() < expected_sequence_) {
    Fail(r.sequence(), v1::AUDIT_VIOLATION_SEQUENCE_DISORDER,
         absl::StrCat("record ", r.sequence(), " appears where ", expected_sequence_,
                      " was expected: records are duplicated or out of order"));
    return false;
  }
  if (r.prev_hash() != prev_hash_) {
    Fail(r.sequence(), v1::AUDIT_VIOLATION_CHAIN_BROKEN,
         absl::StrCat("record ", r.sequence(), " links to prev_hash ", HexOf(r.prev_hash()),
                      " but the previous record's hash is ", HexOf(prev_hash_),
                      ": a record was deleted, inserted or reordered before it"));
    return false;
  }
  const std::string computed = AuditRecordHash(r);
  if (computed != r.hash()) {
    Fail(r.sequence(), v1::AUDIT_VIOLATION_HASH_MISMATCH,
         absl::StrCat("record ", r.sequence(), " stores hash ", HexOf(r.hash()),
                      " but its content hashes to ", HexOf(computed), ": the record was edited"));
    return false;
  }
  if (anchors_.count(r.sequence()) != 0) seen_at_anchor_[r.sequence()] = r.hash();
  if (IsAuditLossAction(r.action())) {
    ++verdict_.loss_count;
    if (verdict_.losses.size() < kMaxListedLosses) {
      verdict_.losses.push_back({r.sequence(), r.action(), r.recorded_by().spiffe_id()});
    }
  }
  prev_hash_ = r.hash();
  verdict_.last_sequence = r.sequence();
  verdict_.last_hash = r.hash();
  ++expected_sequence_;
  return true;
}

void FillVerifyAuditResponse(const AuditVerdict& v, v1::VerifyAuditResponse* response) {
  response->set_ok(v.ok);
  response->set_records_checked(v.records_checked);
  response->set_first_bad_sequence(v.first_bad_sequence);
  response->set_violation(v.violation);
  response->set_reason(v.reason);
  response->set_loss_count(v.loss_count);
  for (const AuditLossRecord& loss : v.losses) {
    v1::AuditLossRecord* out = response->add_losses();
    out->set_sequence(loss.sequence);
    out->set_action(loss.action);
    out->set_recorded_by(loss.recorded_by);
  }
}

AuditVerdict AuditChainVerifier::Finish() {
  if (!verdict_.ok) return verdict_;
  for (const auto& [sequence, hash] : anchors_) {
    if (sequence >= expected_sequence_) {
      Fail(expected_sequence_, v1::AUDIT_VIOLATION_TRUNCATED,
           absl::StrCat("the chain ends at ", expected_sequence_ - 1, " but an anchor holds record ",
                        sequence, ": records from ", expected_sequence_, " on were removed"));
      return verdict_;
    }
    auto seen = seen_at_anchor_.find(sequence);
    if (seen != seen_at_anchor_.end() && seen->second != hash) {
      Fail(sequence, v1::AUDIT_VIOLATION_ANCHOR_MISMATCH,
           absl::StrCat("record ", sequence, " has hash ", HexOf(seen->second), " but the anchor says ",
                        HexOf(hash), ": the chain was rewritten"));
      return verdict_;
    }
  }
  return verdict_;
}

}  // namespace strongroom
