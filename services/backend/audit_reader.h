// Reading the audit chain: QueryAudit (filters, pagination) and VerifyAudit (recomputes the chain
// server-side; strongroomctl can do the same client-side with the records QueryAudit returns).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "services/backend/db.h"
#include "strongroom/v1/backend.pb.h"

namespace strongroom::backend {

// The columns of audit_records, in the order AuditRecordOfRow reads them.
extern const char kAuditColumns[];
v1::AuditRecord AuditRecordOfRow(const pqxx::row& row);
// details as stored (jsonb object of strings).
std::string AuditDetailsJson(const v1::AuditRecord& record);

class AuditReader {
 public:
  explicit AuditReader(Database* db) : db_(db) {}

  // Records matching every set filter of `request`, in sequence order, after `after_sequence`; up to `limit`.
  absl::StatusOr<std::vector<v1::AuditRecord>> Query(const v1::QueryAuditRequest& request,
                                                     uint64_t after_sequence, int limit);

  // Recomputes the chain over [from, to] (0: 1 and the head) with AuditChainVerifier, in pages.
  absl::StatusOr<v1::VerifyAuditResponse> Verify(const v1::VerifyAuditRequest& request);

  // The last record's (sequence, hash); sequence 0 and the genesis hash for an empty chain.
  absl::StatusOr<v1::AuditAnchor> Head();

 private:
  Database* const db_;  // not owned
};

}  // namespace strongroom::backend
