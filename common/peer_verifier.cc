#include "common/peer_verifier.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>

#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

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

}  // namespace

struct PeerVerifier::TrustStore {
  ~TrustStore() { X509_STORE_free(store); }
  X509_STORE* store = nullptr;
};

PeerVerifier::PeerVerifier(std::string ca_file, std::string trust_domain, absl::Duration recheck_interval)
    : ca_file_(std::move(ca_file)),
      trust_domain_(std::move(trust_domain)),
      recheck_interval_(recheck_interval) {}

PeerVerifier::~PeerVerifier() = default;

absl::StatusOr<std::shared_ptr<PeerVerifier::TrustStore>> PeerVerifier::CurrentStore() {
  absl::MutexLock lock(&mu_);
  const absl::Time now = absl::Now();
  if (store_ != nullptr && now - last_check_ < recheck_interval_) return store_;
  last_check_ = now;
  struct stat st {};
  if (::stat(ca_file_.c_str(), &st) != 0) {
    if (store_ != nullptr) return store_;  // keep the last good bundle during a rotation
    return absl::FailedPreconditionError(absl::StrCat("CA file ", ca_file_, " is not readable"));
  }
  if (store_ != nullptr && st.st_mtim.tv_sec == loaded_mtime_.tv_sec &&
      st.st_mtim.tv_nsec == loaded_mtime_.tv_nsec) {
    return store_;
  }
  auto fresh = std::make_shared<TrustStore>();
  fresh->store = X509_STORE_new();
  if (X509_STORE_load_file(fresh->store, ca_file_.c_str()) != 1) {
    ERR_clear_error();
    if (store_ != nullptr) return store_;
    return absl::FailedPreconditionError(absl::StrCat("CA file ", ca_file_, " holds no PEM certificate"));
  }
  store_ = std::move(fresh);
  loaded_mtime_ = st.st_mtim;
  return store_;
}

absl::StatusOr<Identity> PeerVerifier::Verify(absl::string_view leaf_pem, absl::string_view chain_pem) {
  if (leaf_pem.empty()) return absl::UnauthenticatedError("no client certificate presented");
  absl::StatusOr<std::shared_ptr<TrustStore>> store = CurrentStore();
  if (!store.ok()) return absl::UnavailableError(store.status().message());
  const std::string key = absl::StrCat(leaf_pem, "|", chain_pem);
  const absl::Time now = absl::Now();
  {
    absl::MutexLock lock(&verified_mu_);
    auto it = verified_.find(key);
    if (it != verified_.end() && it->second.store == store->get() && now < it->second.valid_until) {
      return it->second.identity;
    }
  }
  absl::Time not_after = absl::InfinitePast();
  absl::StatusOr<Identity> identity = VerifyUncached(leaf_pem, chain_pem, *store, &not_after);
  if (identity.ok()) {
    absl::MutexLock lock(&verified_mu_);
    if (verified_.size() >= kMaxVerified) verified_.clear();
    verified_[key] = Verified{*identity, std::min(not_after, now + kVerifiedTtl), store->get()};
  }
  return identity;
}

absl::StatusOr<Identity> PeerVerifier::VerifyUncached(absl::string_view leaf_pem, absl::string_view chain_pem,
                                                      const std::shared_ptr<TrustStore>& trust,
                                                      absl::Time* not_after) {
  std::vector<X509Ptr> leaf = ParsePemCertificates(leaf_pem);
  if (leaf.empty()) return absl::UnauthenticatedError("client certificate is not valid PEM");

  std::vector<X509Ptr> chain = ParsePemCertificates(chain_pem);
  STACK_OF(X509)* untrusted = sk_X509_new_null();
  for (const X509Ptr& cert : chain) {
    if (X509_cmp(cert.get(), leaf[0].get()) != 0) sk_X509_push(untrusted, cert.get());
  }
  X509_STORE_CTX* ctx = X509_STORE_CTX_new();
  X509_STORE_CTX_init(ctx, trust->store, leaf[0].get(), untrusted);
  X509_STORE_CTX_set_purpose(ctx, X509_PURPOSE_SSL_CLIENT);
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
    }
    return absl::UnauthenticatedError(absl::StrCat("client certificate rejected: ", reason));
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
  BIGNUM* serial = ASN1_INTEGER_to_BN(X509_get0_serialNumber(certs[0].get()), nullptr);
  char* hex = BN_bn2hex(serial);
  summary.serial_hex = hex;
  OPENSSL_free(hex);
  BN_free(serial);
  summary.not_after = Asn1TimeText(X509_get0_notAfter(certs[0].get()));
  return summary;
}

}  // namespace strongroom
