#include "services/backend/ids.h"

#include <openssl/rand.h>

#include <cstdint>

#include "absl/time/clock.h"

namespace strongroom::backend {
namespace {

constexpr char kBase32[] = "0123456789abcdefghjkmnpqrstvwxyz";  // Crockford's alphabet, lower case

void AppendBase32(uint64_t value, int digits, std::string* out) {
  for (int i = digits - 1; i >= 0; --i) out->push_back(kBase32[(value >> (5 * i)) & 31]);
}

}  // namespace

JobIds NewJobIds() {
  uint64_t random = 0;
  if (RAND_bytes(reinterpret_cast<unsigned char*>(&random), sizeof random) != 1) {
    // The CSPRNG failing is not something to limp on with a guessable id.
    abort();
  }
  std::string suffix;
  AppendBase32(static_cast<uint64_t>(absl::ToUnixMillis(absl::Now())), 10, &suffix);
  AppendBase32(random, 8, &suffix);
  return {"gj-" + suffix, "wl-" + suffix, "sr-" + suffix};
}

}  // namespace strongroom::backend
