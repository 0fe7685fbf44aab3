// How the audit chain holds any bytes (docs/AUDIT.md, "Any bytes"). PostgreSQL text and jsonb hold only valid
// UTF-8 without NUL, and a protobuf string field must be valid UTF-8 on the wire (or the peer cannot parse
// the message). So every value is made storable before it becomes a record, the same way on every daemon:
//   - a value that is valid UTF-8 without NUL is stored verbatim;
//   - any other value is stored escaped: each NUL byte and each byte that is not part of a valid UTF-8
//   sequence
//     becomes \xHH, and a backslash becomes \\. The record lists the field in details["audit.escaped"], so
//     the original bytes can be recovered exactly (UnescapeAuditBytes);
//   - a value longer than its field's bound is cut at a character (and escape) boundary, and
//     details["audit.truncated"] lists the field with its original length and the SHA-256 of its bytes;
//   - an action that is not ^[A-Za-z0-9_./:>-]{1,128}$ (e.g. a hostile :path of a refused call) becomes
//     "audit.invalid_action", with the storable original in details["audit.action"].
// Pure functions.
#pragma once

#include <cstddef>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "strongroom/v1/common.pb.h"

namespace strongroom {

constexpr size_t kMaxAuditActionBytes = 128;
constexpr size_t kMaxAuditObjectBytes = 256;
constexpr size_t kMaxAuditDetailBytes = 16 * 1024;
// Details a record may carry (backend refuses more from senders), the markers included.
constexpr int kMaxAuditDetails = 32;

// Valid UTF-8 without NUL: what PostgreSQL text and a protobuf string can hold as is.
bool IsStorableAuditText(absl::string_view value);

// `raw` with NUL and invalid UTF-8 bytes as \xHH and "\" as "\\"; valid multi-byte characters are kept.
std::string EscapeAuditBytes(absl::string_view raw);
// The inverse of EscapeAuditBytes; INVALID_ARGUMENT for a malformed escape.
absl::StatusOr<std::string> UnescapeAuditBytes(absl::string_view escaped);

// Whether `action` may stand in the record's action field as is.
bool IsAuditActionText(absl::string_view action);

// Applies the rules above to every text field of `record` (action, object, actor and recorded_by SPIFFE ids,
// detail keys and values) and adds the markers. A record that is already storable and within bounds is left
// unchanged, so applying it twice changes nothing.
void MakeAuditRecordStorable(v1::AuditRecord* record);

}  // namespace strongroom
