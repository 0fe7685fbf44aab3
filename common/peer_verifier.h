// Verifies a peer's X.509 certificate against the deployment CA (and its CRL) and the leaf policy, and
// extracts its SPIFFE identity. The server does this per call (not in the TLS handshake) so that a missing,
// foreign, expired or revoked client certificate is answered with UNAUTHENTICATED and a reason the operator
// can act on, instead of an opaque handshake failure. Clients run the same checks on the server's certificate
// (common/tls.cc).
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

// Which end of a connection a certificate authenticates: the leaf policy differs only in the extendedKeyUsage
// it must allow (clientAuth or serverAuth).
enum class PeerKind { kClient, kServer };

class PeerVerifier {
 public:
  // `ca_file` (and `crl_file`, when not empty) are re-read when their modification time changes (checked at
  // most every `recheck_interval`), so a rotated CA bundle or a newly published CRL needs no restart. Both
  // are read with common/bounded_file.h (regular files of at most kMaxPemFileBytes).
  PeerVerifier(std::string ca_file, std::string trust_domain, std::string crl_file = "",
               absl::Duration recheck_interval = absl::Seconds(1));
  ~PeerVerifier();

  // `leaf_pem` is the peer's certificate; `chain_pem` the full chain it sent (may repeat the leaf, may be
  // empty). UNAUTHENTICATED with the reason on any failure:
  //   - the chain does not verify against the CA (expired, foreign CA, ...);
  //   - the certificate is revoked by the CRL (the reason names its serial), or the CRL itself is stale;
  //   - the leaf policy: CA:FALSE, keyUsage present with digitalSignature and without keyCertSign/cRLSign,
  //   and
  //     an extendedKeyUsage, when present, that allows clientAuth (kClient) or serverAuth (kServer);
  //   - not exactly one SPIFFE URI in this trust domain.
  // UNAVAILABLE when the CA (or configured CRL) file cannot be loaded at all.
  // A successful verification is remembered for the same PEM bytes until the certificate's notAfter, at most
  // kVerifiedTtl, and only while the same CA bundle and CRL are loaded: chain verification (an ECDSA check,
  // OpenSSL's locked decoders) otherwise dominates the CPU cost of a small RPC. Failures are never
  // remembered.
  absl::StatusOr<Identity> Verify(absl::string_view leaf_pem, absl::string_view chain_pem,
                                  PeerKind kind = PeerKind::kClient);

  // Loads the CA bundle and the CRL now; the error a first call would get otherwise.
  absl::Status Load();

 private:
  struct TrustStore;
  absl::StatusOr<std::shared_ptr<TrustStore>> CurrentStore();
  absl::StatusOr<std::shared_ptr<TrustStore>> LoadStore() const;
  absl::StatusOr<Identity> VerifyUncached(absl::string_view leaf_pem, absl::string_view chain_pem,
                                          PeerKind kind, const std::shared_ptr<TrustStore>& store,
                                          absl::Time* not_after);

  static constexpr absl::Duration kVerifiedTtl = absl::Seconds(60);
  static constexpr size_t kMaxVerified = 4096;
  struct Verified {
    Identity identity;
    absl::Time valid_until;
    const TrustStore* store;  // the bundle it was verified against (compared, never dereferenced)
  };

  const std::string ca_file_;
  const std::string trust_domain_;
  const std::string crl_file_;  // "" : no revocation check
  const absl::Duration recheck_interval_;
  absl::Mutex mu_;
  // The parsed CA bundle and CRL; replaced whole when a file changes, shared with in-flight checks.
  std::shared_ptr<TrustStore> store_ ABSL_GUARDED_BY(mu_);
  absl::Time last_check_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  // Modification times of ca_file_ and crl_file_ when store_ was loaded.
  struct timespec loaded_ca_mtime_ ABSL_GUARDED_BY(mu_) = {};
  struct timespec loaded_crl_mtime_ ABSL_GUARDED_BY(mu_) = {};
  // The last reload error logged, so a broken file is logged once per change, not per call.
  std::string last_reload_error_ ABSL_GUARDED_BY(mu_);
  absl::Mutex verified_mu_;
  // kind + leaf PEM + chain PEM -> a recent successful verification of exactly those bytes.
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
