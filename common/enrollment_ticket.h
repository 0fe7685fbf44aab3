// The one-time enrollment ticket (issue 14, docs/IPSEC.md "Enrollment"): the bootstrap credential of a
// workload. host-agent generates 32 random bytes per workload at StartWorkload and puts them (hex) into the
// workload's provisioning inputs only; it reports only their SHA-256 (WorkloadReady), backend forwards the
// hash (ProvisionWorkload), and vm-controller accepts EnrollWorkload only with the ticket of that hash. A
// ticket is a secret: never log, audit or store it.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace strongroom {

inline constexpr size_t kEnrollmentTicketBytes = 32;
// Also the length of a SHA-256 in hex.
inline constexpr size_t kEnrollmentTicketHexChars = 2 * kEnrollmentTicketBytes;

// 32 bytes from OpenSSL's RAND_bytes, as 64 lower-case hex characters. INTERNAL if the RNG fails.
absl::StatusOr<std::string> GenerateEnrollmentTicket();

// Exactly 64 lower-case hex characters (a ticket or its SHA-256).
bool IsHex64(absl::string_view s);

// SHA-256 of the ticket's text, as 64 lower-case hex characters.
std::string EnrollmentTicketSha256(absl::string_view ticket);

// Whether `ticket` is a well-formed ticket whose SHA-256 equals `sha256_hex` (compared in constant time).
bool EnrollmentTicketMatches(absl::string_view ticket, absl::string_view sha256_hex);

}  // namespace strongroom
