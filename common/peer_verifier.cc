#include "common/peer_verifier.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>

#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/bounded_file.h"
#include "common/log.h"

namespace strongroom {
namespace {

struct X509Deleter {
  void operator()(X509* x) const { X509_free(x); }
};
using X509Ptr = std::unique_ptr<X509, X509Deleter>;

std::vector<X509Ptr> ParsePemCertificates(absl::string_view pem) {
  std::vector<X509Ptr> certs;
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  if (bio == nullptr) return certs;
  while (X509* cert = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr)) {
    certs.emplace_back(cert);
  }
  ERR_clear_error();  // the loop ends on a "no start line" error by design
  BIO_free(bio);
  return certs;
}

std::string Asn1TimeText(const ASN1_TIME* t) {
  BIO* bio = BIO_new(BIO_s_mem());
  ASN1_TIME_print(bio, t);
  char* data = nullptr;
  long len = BIO_get_mem_data(bio, &data);
  std::string text(data, static_cast<size_t>(len));
  BIO_free(bio);
  return text;
}

absl::StatusOr<Identity> SpiffeIdentityOf(X509* cert) {
  auto* names = static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
  std::vector<std::string> uris;
  for (int i = 0; names != nullptr && i < sk_GENERAL_NAME_num(names); ++i) {
    const GENERAL_NAME* name = sk_GENERAL_NAME_value(names, i);
    if (name->type != GEN_URI) continue;
    const ASN1_IA5STRING* uri = name->d.uniformResourceIdentifier;
    uris.emplace_back(reinterpret_cast<const char*>(ASN1_STRING_get0_data(uri)),
                      static_cast<size_t>(ASN1_STRING_length(uri)));
  }
  GENERAL_NAMES_free(names);
  if (uris.size() != 1) {
    return absl::UnauthenticatedError(absl::StrCat(
        "certificate must carry exactly one SAN URI spiffe://<trust-domain>/<role>/<instance>, found ",
        uris.size()));
  }
  absl::StatusOr<Identity> identity = ParseSpiffeId(uris[0]);
  if (!identity.ok()) return absl::UnauthenticatedError(identity.status().message());
  return identity;
}

X509_STORE_CTX* NewVerifyContext(X509_STORE* store, X509* leaf, STACK_OF(X509) * untrusted) {
  X509_STORE_CTX* ctx = X509_STORE_CTX_new();
  X509_STORE_CTX_init(ctx, store, leaf, untrusted);
  return ctx;
}

}  // namespace

struct PeerVerifier::TrustStore {
  ~TrustStore() {
    X509_STORE_free(store);
    X509_CRL_free(crl);
  }
  X509_STORE* store = nullptr;
  X509_CRL* crl = nullptr;  // the loaded CRL (also in `store`), for messages; null without crl_file
};

PeerVerifier::PeerVerifier(std::string ca_file, std::string trust_domain, std::string crl_file,
                           absl::Duration recheck_interval)
    : ca_file_(std::move(ca_file)),
      trust_domain_(std::move(trust_domain)),
      crl_file_(std::move(crl_file)),
      recheck_interval_(recheck_interval) {}

PeerVerifier::~PeerVerifier() = default;

absl::StatusOr<std::shared_ptr<PeerVerifier::TrustStore>> PeerVerifier::LoadStore() const {
  absl::StatusOr<std::string> ca_pem = ReadBoundedRegularFile(ca_file_, kMaxPemFileBytes);
  if (!ca_pem.ok()) return absl::FailedPreconditionError(absl::StrCat("CA file ", ca_pem.status().message()));
  std::vector<X509Ptr> cas = ParsePemCertificates(*ca_pem);
  if (cas.empty())
    return absl::FailedPreconditionError(absl::StrCat("CA file ", ca_file_, " holds no PEM certificate"));
  auto fresh = std::make_shared<TrustStore>();
  fresh->store = X509_STORE_new();
  for (const X509Ptr& ca : cas) X509_STORE_add_cert(fresh->store, ca.get());
  if (!crl_file_.empty()) {
    absl::StatusOr<std::string> crl_pem = ReadBoundedRegularFile(crl_file_, kMaxPemFileBytes);
    if (!crl_pem.ok()) {
      return absl::FailedPreconditionError(absl::StrCat("CRL file ", crl_pem.status().message()));
    }
    BIO* bio = BIO_new_mem_buf(crl_pem->data(), static_cast<int>(crl_pem->size()));
    fresh->crl = bio == nullptr ? nullptr : PEM_read_bio_X509_CRL(bio, nullptr, nullptr, nullptr);
    BIO_free(bio);
    ERR_clear_error();
    if (fresh->crl == nullptr) {
      return absl::FailedPreconditionError(absl::StrCat("CRL file ", crl_file_, " holds no PEM CRL"));
    }
    X509_STORE_add_crl(fresh->store, fresh->crl);
    // The leaf's revocation is checked; the CA itself is the trust anchor, which only replacing ca_file
    // revokes.
    X509_STORE_set_flags(fresh->store, X509_V_FLAG_CRL_CHECK);
  }
  return fresh;
}

absl::Status PeerVerifier::Load() { return CurrentStore().status(); }

absl::StatusOr<std::shared_ptr<PeerVerifier::TrustStore>> PeerVerifier::CurrentStore() {
  absl::MutexLock lock(&mu_);
  const absl::Time now = absl::Now();
  if (store_ != nullptr && now - last_check_ < recheck_interval_) return store_;
  last_check_ = now;
  struct stat ca {
  }, crl{};
  const bool ca_seen = ::stat(ca_file_.c_str(), &ca) == 0;
  const bool crl_seen = crl_file_.empty() || ::stat(crl_file_.c_str(), &crl) == 0;
  auto same = [](const struct timespec& a, const struct timespec& b) {
    return a.tv_sec == b.tv_sec && a.tv_nsec == b.tv_nsec;
  };
  if (store_ != nullptr && (!ca_seen || !crl_seen))
    return store_;  // keep the last good set during a rotation
  if (store_ != nullptr && same(ca.st_mtim, loaded_ca_mtime_) && same(crl.st_mtim, loaded_crl_mtime_)) {
    return store_;
  }
  absl::StatusOr<std::shared_ptr<TrustStore>> fresh = LoadStore();
  if (!fresh.ok()) {
    if (store_ == nullptr) return fresh.status();
    if (last_reload_error_ != fresh.status().message()) {
      last_reload_error_ = std::string(fresh.status().message());
      Log(LogLevel::kError, "cannot reload the CA bundle or CRL; keeping the previous one",
          {{"error", last_reload_error_}});
    }
    return store_;
  }
  if (store_ != nullptr) {
    Log(LogLevel::kInfo, "reloaded the CA bundle and CRL", {{"ca_file", ca_file_}, {"crl_file", crl_file_}});
  }
  last_reload_error_.clear();
  store_ = std::move(*fresh);
  loaded_ca_mtime_ = ca.st_mtim;
  loaded_crl_mtime_ = crl.st_mtim;
  return store_;
}

absl::StatusOr<Identity> PeerVerifier::Verify(absl::string_view leaf_pem, absl::string_view chain_pem,
                                              PeerKind kind) {
  const char* const who = kind == PeerKind::kClient ? "client" : "server";
  if (leaf_pem.empty()) return absl::UnauthenticatedError(absl::StrCat("no ", who, " certificate presented"));
  absl::StatusOr<std::shared_ptr<TrustStore>> store = CurrentStore();
  if (!store.ok()) return absl::UnavailableError(store.status().message());
  const std::string key = absl::StrCat(kind == PeerKind::kClient ? "c|" : "s|", leaf_pem, "|", chain_pem);
  const absl::Time now = absl::Now();
  {
    absl::MutexLock lock(&verified_mu_);
    auto it = verified_.find(key);
    if (it != verified_.end() && it->second.store == store->get() && now < it->second.valid_until) {
      return it->second.identity;
    }
  }
  absl::Time not_after = absl::InfinitePast();
  absl::StatusOr<Identity> identity = VerifyUncached(leaf_pem, chain_pem, kind, *store, &not_after);
  if (identity.ok()) {
    absl::MutexLock lock(&verified_mu_);
    if (verified_.size() >= kMaxVerified) verified_.clear();
    verified_[key] = Verified{*identity, std::min(not_after, now + kVerifiedTtl), store->get()};
  }
  return identity;
}

namespace {

// Why `leaf` may not act as a TLS leaf of `kind`, or "" when it may.
std::string LeafPolicyViolation(X509* leaf, PeerKind kind) {
  const uint32_t flags = X509_get_extension_flags(leaf);
  if ((flags & EXFLAG_CA) != 0)
    return "it is a CA certificate (basicConstraints CA:TRUE); a leaf must be CA:FALSE";
  const uint32_t usage = X509_get_key_usage(leaf);
  if ((flags & EXFLAG_KUSAGE) == 0) return "it has no keyUsage; a leaf must carry digitalSignature";
  if ((usage & KU_DIGITAL_SIGNATURE) == 0) return "its keyUsage lacks digitalSignature";
  if ((usage & (KU_KEY_CERT_SIGN | KU_CRL_SIGN)) != 0) {
    return "its keyUsage allows signing certificates or CRLs (keyCertSign/cRLSign); a leaf must not";
  }
  if ((flags & EXFLAG_XKUSAGE) != 0) {
    const uint32_t eku = X509_get_extended_key_usage(leaf);
    const uint32_t needed = kind == PeerKind::kClient ? XKU_SSL_CLIENT : XKU_SSL_SERVER;
    if ((eku & needed) == 0) {
      return absl::StrCat("its extendedKeyUsage does not allow ",
                          kind == PeerKind::kClient ? "clientAuth" : "serverAuth");
    }
  }
  return "";
}

std::string SerialHex(X509* cert) {
  BIGNUM* serial = ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), nullptr);
  char* hex = BN_bn2hex(serial);
  std::string text = hex == nullptr ? "?" : hex;
  OPENSSL_free(hex);
  BN_free(serial);
  return text;
}

}  // namespace

absl::StatusOr<Identity> PeerVerifier::VerifyUncached(absl::string_view leaf_pem, absl::string_view chain_pem,
                                                      PeerKind kind, const std::shared_ptr<TrustStore>& trust,
                                                      absl::Time* not_after) {
  const char* const who = kind == PeerKind::kClient ? "client" : "server";
  std::vector<X509Ptr> leaf = ParsePemCertificates(leaf_pem);
  if (leaf.empty()) return absl::UnauthenticatedError(absl::StrCat(who, " certificate is not valid PEM"));

  std::vector<X509Ptr> chain = ParsePemCertificates(chain_pem);
  STACK_OF(X509)* untrusted = sk_X509_new_null();
  for (const X509Ptr& cert : chain) {
    if (X509_cmp(cert.get(), leaf[0].get()) != 0) sk_X509_push(untrusted, cert.get());
  }
  X509_STORE_CTX* ctx = NewVerifyContext(trust->store, leaf[0].get(), untrusted);
  X509_STORE_CTX_set_purpose(ctx,
                             kind == PeerKind::kClient ? X509_PURPOSE_SSL_CLIENT : X509_PURPOSE_SSL_SERVER);
  const bool verified = X509_verify_cert(ctx) == 1;
  const int error = X509_STORE_CTX_get_error(ctx);
  X509_STORE_CTX_free(ctx);
  sk_X509_free(untrusted);  // the certificates stay owned by `chain`
  ERR_clear_error();
  if (!verified) {
    std::string reason = X509_verify_cert_error_string(error);
    if (error == X509_V_ERR_CERT_HAS_EXPIRED) {
      absl::StrAppend(&reason, " (notAfter ", Asn1TimeText(X509_get0_notAfter(leaf[0].get())), ")");
    } else if (error == X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY ||
               error == X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT ||
               error == X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN) {
      absl::StrAppend(&reason, " (not issued by this deployment's CA)");
    } else if (error == X509_V_ERR_CERT_REVOKED) {
      absl::StrAppend(&reason, " (serial ", SerialHex(leaf[0].get()), ")");
      X509_REVOKED* revoked = nullptr;
      if (trust->crl != nullptr && X509_CRL_get0_by_cert(trust->crl, &revoked, leaf[0].get()) == 1) {
        absl::StrAppend(&reason, " at ", Asn1TimeText(X509_REVOKED_get0_revocationDate(revoked)));
      }
    } else if (error == X509_V_ERR_CRL_HAS_EXPIRED && trust->crl != nullptr) {
      absl::StrAppend(&reason, " (", crl_file_, " nextUpdate ",
                      Asn1TimeText(X509_CRL_get0_nextUpdate(trust->crl)),
                      "; publish a fresh one with strongroom-pki crl)");
    } else if (error == X509_V_ERR_UNABLE_TO_GET_CRL) {
      absl::StrAppend(&reason, " (", crl_file_, " holds no CRL of this certificate's CA)");
    }
    return absl::UnauthenticatedError(absl::StrCat(who, " certificate rejected: ", reason));
  }
  if (std::string violation = LeafPolicyViolation(leaf[0].get(), kind); !violation.empty()) {
    return absl::UnauthenticatedError(
        absl::StrCat(who, " certificate rejected (serial ", SerialHex(leaf[0].get()), "): ", violation));
  }
  absl::StatusOr<Identity> identity = SpiffeIdentityOf(leaf[0].get());
  if (!identity.ok()) return identity.status();
  struct tm tm {};
  if (ASN1_TIME_to_tm(X509_get0_notAfter(leaf[0].get()), &tm) == 1)
    *not_after = absl::FromTM(tm, absl::UTCTimeZone());
  if (identity->trust_domain != trust_domain_) {
    return absl::UnauthenticatedError(
        absl::StrCat("peer ", identity->SpiffeId(), " is not in trust domain ", trust_domain_));
  }
  return identity;
}

absl::StatusOr<Identity> IdentityFromCertificatePem(absl::string_view pem) {
  static absl::Mutex mu(absl::kConstInit);
  static auto* const known = new std::map<std::string, Identity, std::less<>>();
  {
    absl::MutexLock lock(&mu);
    if (auto it = known->find(pem); it != known->end()) return it->second;
  }
  std::vector<X509Ptr> certs = ParsePemCertificates(pem);
  if (certs.empty()) return absl::UnauthenticatedError("no certificate");
  absl::StatusOr<Identity> identity = SpiffeIdentityOf(certs[0].get());
  if (identity.ok()) {
    absl::MutexLock lock(&mu);
    if (known->size() >= 4096) known->clear();
    known->emplace(std::string(pem), *identity);
  }
  return identity;
}

absl::StatusOr<CertificateSummary> SummarizeCertificatePem(absl::string_view pem) {
  std::vector<X509Ptr> certs = ParsePemCertificates(pem);
  if (certs.empty()) return absl::InvalidArgumentError("no PEM certificate");
  CertificateSummary summary;
  if (absl::StatusOr<Identity> id = SpiffeIdentityOf(certs[0].get()); id.ok()) {
    summary.spiffe_id = id->SpiffeId();
  }
  summary.serial_hex = SerialHex(certs[0].get());
  summary.not_after = Asn1TimeText(X509_get0_notAfter(certs[0].get()));
  return summary;
}

}  // namespace strongroom
