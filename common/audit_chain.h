// The audit chain's canonical encoding, record hash and verifier (docs/AUDIT.md). Pure code,
// shared by backend (which appends and verifies server-side) and strongroomctl (which verifies
// the records it fetched itself, so an operator need not trust backend's verifier).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "strongroom/v1/backend.pb.h"
#include "strongroom/v1/common.pb.h"

namespace strongroom {

constexpr size_t kAuditHashBytes = 32;

// prev_hash of the record at sequence 1.
const std::string& AuditGenesisHash();

// The bytes the hash covers: every field of the record except `hash`, length-prefixed, in
// field-number order, details sorted by key (see docs/AUDIT.md for the exact layout).
std::string AuditCanonicalBytes(const v1::AuditRecord& record);

// SHA-256 over AuditCanonicalBytes (32 raw bytes).
std::string AuditRecordHash(const v1::AuditRecord& record);

// Lower-case hex, for messages and anchors.
std::string HexOf(const std::string& bytes);
// Parses lower- or upper-case hex; false if it is not hex of an even length.
bool BytesOfHex(const std::string& hex, std::string* bytes);

// A record in the chain that says records were lost or replaced: audit.records_lost, audit.records_dropped,
// audit.source_gap, audit.record_unstorable, audit.record_refused. The chain verifies with them (they are
// records like any other); a verifier lists them so that an operator sees what the chain itself says is
// missing.
struct AuditLossRecord {
  uint64_t sequence = 0;
  std::string action;
  std::string recorded_by;
};
bool IsAuditLossAction(const std::string& action);

struct AuditVerdict {
  bool ok = true;
  uint64_t records_checked = 0;
  uint64_t first_bad_sequence = 0;
  v1::AuditViolation violation = v1::AUDIT_VIOLATION_UNSPECIFIED;
  std::string reason;
  uint64_t last_sequence = 0;           // the last record seen (0: none)
  std::string last_hash;                // its stored hash
  std::vector<AuditLossRecord> losses;  // loss records among the checked ones (at most kMaxListedLosses)
  uint64_t loss_count = 0;              // all of them
};
constexpr size_t kMaxListedLosses = 1000;

// The verdict's fields in a VerifyAuditResponse (ok, counts, the violation, the losses); head and lag are the
// caller's.
void FillVerifyAuditResponse(const AuditVerdict& verdict, v1::VerifyAuditResponse* response);

// Checks records fed in stored order (ascending sequence as the store returns them). Stops at
// the first violation. Checks, per record: the sequence is the expected one (a gap means a
// deleted record; a repeat or a step back means reordering), prev_hash equals the previous
// record's stored hash (a broken link means deletion, insertion or reordering), and the hash
// matches the content (a mismatch means an edit). At the end, anchors kept outside the system
// detect truncation and a rewritten tail.
class AuditChainVerifier {
 public:
  // `first_sequence` is the first record expected. `prev_hash` is the stored hash of the
  // record before it (AuditGenesisHash() when first_sequence is 1).
  AuditChainVerifier(uint64_t first_sequence, std::string prev_hash, std::vector<v1::AuditAnchor> anchors);

  // Returns false once a violation was found; later records are ignored.
  bool Add(const v1::AuditRecord& record);

  // The verdict. Call after the last stored record was added: an anchor beyond it is
  // TRUNCATED, one whose record has another hash is ANCHOR_MISMATCH. Anchors before the first
  // checked record cannot be checked and are ignored.
  AuditVerdict Finish();

 private:
  void Fail(uint64_t sequence, v1::AuditViolation violation, std::string reason);

  uint64_t expected_sequence_;                      // the next sequence that must come
  std::string prev_hash_;                           // stored hash of the previous record
  std::map<uint64_t, std::string> anchors_;         // sequence -> hash that must be found there
  std::map<uint64_t, std::string> seen_at_anchor_;  // hashes found at anchored sequences
  AuditVerdict verdict_;
};

}  // namespace strongroom
