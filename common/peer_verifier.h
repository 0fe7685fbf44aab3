// Verifies a peer's X.509 certificate against the deployment CA and extracts its SPIFFE
// identity. The server does this per call (not in the TLS handshake) so that a missing,
// foreign or expired client certificate is answered with UNAUTHENTICATED and a reason the
// operator can act on, instead of an opaque handshake failure.
#pragma once

#include <sys/types.h>

#include <map>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/identity.h"

namespace strongroom {

class PeerVerifier {
 public:
  // `ca_file` is re-read when its modification time changes (checked at most every
  // `recheck_interval`), so a rotated CA bundle needs no restart.
  PeerVerifier(std::string ca_file, std::string trust_domain,
               absl::Duration recheck_interval = absl::Seconds(1));
  ~PeerVerifier();

  // `leaf_pem` is the peer's certificate; `chain_pem` the full chain it sent (may repeat
  // the leaf, may be empty). UNAUTHENTICATED with the reason on any failure.
  // A successful verification is remembered for the same PEM bytes until the certificate's
  // notAfter, at most kVerifiedTtl, and only while the same CA bundle is loaded: chain
  // verification (an ECDSA check, OpenSSL's locked decoders) otherwise dominates the CPU
  // cost of a small RPC. Failures are never remembered.
  absl::StatusOr<Identity> Verify(absl::string_view leaf_pem, absl::string_view chain_pem);

 private:
  struct TrustStore;
  absl::StatusOr<std::shared_ptr<TrustStore>> CurrentStore();
  absl::StatusOr<Identity> VerifyUncached(absl::string_view leaf_pem, absl::string_view chain_pem,
                                          const std::shared_ptr<TrustStore>& store, absl::Time* not_after);

  static constexpr absl::Duration kVerifiedTtl = absl::Seconds(60);
  static constexpr size_t kMaxVerified = 4096;
  struct Verified {
    Identity identity;
    absl::Time valid_until;
    const TrustStore* store;  // the bundle it was verified against (compared, never dereferenced)
  };

  const std::string ca_file_;
  const std::string trust_domain_;
  const absl::Duration recheck_interval_;
  absl::Mutex mu_;
  // The parsed CA bundle; replaced whole when the file changes, shared with in-flight checks.
  std::shared_ptr<TrustStore> store_ ABSL_GUARDED_BY(mu_);
  absl::Time last_check_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  // Modification time of ca_file_ when store_ was loaded.
  struct timespec loaded_mtime_ ABSL_GUARDED_BY(mu_) = {};
  absl::Mutex verified_mu_;
  // leaf PEM + chain PEM -> a recent successful verification of exactly those bytes.
  std::map<std::string, Verified> verified_ ABSL_GUARDED_BY(verified_mu_);
};

// The single spiffe:// URI SAN of a PEM certificate, parsed. No verification: use only on
// a certificate that was already verified (e.g. in a handler after the authz processor).
// Results are memoized per PEM (a bounded map): handlers and the RPC observer ask per call.
absl::StatusOr<Identity> IdentityFromCertificatePem(absl::string_view pem);

// What an operator needs to tell two certificates apart.
struct CertificateSummary {
  std::string spiffe_id;
  std::string serial_hex;
  std::string not_after;
};
absl::StatusOr<CertificateSummary> SummarizeCertificatePem(absl::string_view pem);

}  // namespace strongroom
