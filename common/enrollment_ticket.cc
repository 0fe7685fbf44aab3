#include "common/enrollment_ticket.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include "absl/status/status.h"

namespace strongroom {
namespace {

std::string Hex(const unsigned char* data, size_t size) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out(2 * size, '0');
  for (size_t i = 0; i < size; ++i) {
    out[2 * i] = kDigits[data[i] >> 4];
    out[2 * i + 1] = kDigits[data[i] & 0xf];
  }
  return out;
}

}  // namespace

absl::StatusOr<std::string> GenerateEnrollmentTicket() {
  unsigned char bytes[kEnrollmentTicketBytes];
  if (RAND_bytes(bytes, sizeof(bytes)) != 1)
    return absl::InternalError("RAND_bytes failed: no enrollment ticket");
  std::string ticket = Hex(bytes, sizeof(bytes));
  OPENSSL_cleanse(bytes, sizeof(bytes));
  return ticket;
}

bool IsHex64(absl::string_view s) {
  if (s.size() != kEnrollmentTicketHexChars) return false;
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

std::string EnrollmentTicketSha256(absl::string_view ticket) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(ticket.data()), ticket.size(), digest);
  return Hex(digest, sizeof(digest));
}

bool EnrollmentTicketMatches(absl::string_view ticket, absl::string_view sha256_hex) {
  if (!IsHex64(ticket) || !IsHex64(sha256_hex)) return false;
  const std::string actual = EnrollmentTicketSha256(ticket);
  return CRYPTO_memcmp(actual.data(), sha256_hex.data(), actual.size()) == 0;
}

}  // namespace strongroom
