#include "common/project_ca.h"

#include <arpa/inet.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace strongroom {
namespace {

EVP_PKEY* Pk(void* p) { return static_cast<EVP_PKEY*>(p); }

std::string OpensslError(absl::string_view what) {
  unsigned long e = ERR_get_error();
  char buf[256] = {0};
  if (e != 0) ERR_error_string_n(e, buf, sizeof(buf));
  ERR_clear_error();
  return absl::StrCat(what, ": ", e != 0 ? buf : "unknown OpenSSL error");
}

std::string BioText(BIO* bio) {
  char* data = nullptr;
  long len = BIO_get_mem_data(bio, &data);
  return std::string(data, static_cast<size_t>(len));
}

bool Simple(absl::string_view s, bool lower_only) {
  if (s.empty() || s.size() > 64) return false;
  for (char c : s) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
              (!lower_only && ((c >= 'A' && c <= 'Z') || c == '.' || c == '_'));
    if (!ok) return false;
  }
  return true;
}

absl::Status AddName(X509_NAME* name, const char* field, const std::string& value) {
  if (X509_NAME_add_entry_by_txt(name, field, MBSTRING_UTF8,
                                 reinterpret_cast<const unsigned char*>(value.c_str()), -1, -1, 0) != 1)
    return absl::InternalError(OpensslError(absl::StrCat("X509 name ", field)));
  return absl::OkStatus();
}

absl::Status AddExt(X509* cert, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str());
  if (ext == nullptr) return absl::InternalError(OpensslError(absl::StrCat("extension ", value)));
  int ok = X509_add_ext(cert, ext, -1);
  X509_EXTENSION_free(ext);
  return ok == 1 ? absl::OkStatus() : absl::InternalError(OpensslError("X509_add_ext"));
}

absl::Status SetValidity(X509* cert, absl::Time not_before, absl::Time not_after) {
  if (ASN1_TIME_set(X509_getm_notBefore(cert), absl::ToTimeT(not_before)) == nullptr ||
      ASN1_TIME_set(X509_getm_notAfter(cert), absl::ToTimeT(not_after)) == nullptr)
    return absl::InternalError(OpensslError("validity"));
  return absl::OkStatus();
}

// A random positive 127-bit serial (RFC 5280: unique per CA, at most 20 octets).
absl::Status RandomSerial(X509* cert) {
  unsigned char bytes[16];
  if (RAND_bytes(bytes, sizeof(bytes)) != 1) return absl::InternalError(OpensslError("RAND_bytes"));
  bytes[0] &= 0x7f;
  BIGNUM* bn = BN_bin2bn(bytes, sizeof(bytes), nullptr);
  bool ok = bn != nullptr && BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert)) != nullptr;
  BN_free(bn);
  return ok ? absl::OkStatus() : absl::InternalError(OpensslError("serial"));
}

absl::StatusOr<std::string> CertPem(X509* cert) {
  BIO* bio = BIO_new(BIO_s_mem());
  if (bio == nullptr || PEM_write_bio_X509(bio, cert) != 1) {
    BIO_free(bio);
    return absl::InternalError(OpensslError("PEM_write_bio_X509"));
  }
  std::string pem = BioText(bio);
  BIO_free(bio);
  return pem;
}

X509* ParseCert(absl::string_view pem) {
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  if (bio == nullptr) return nullptr;
  X509* x = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  ERR_clear_error();
  return x;
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------------

absl::StatusOr<EcKey> EcKey::Generate() {
  EVP_PKEY* pkey = EVP_EC_gen("P-256");
  if (pkey == nullptr) return absl::InternalError(OpensslError("EVP_EC_gen"));
  return EcKey(pkey);
}

EcKey::EcKey(EcKey&& o) noexcept : pkey_(std::exchange(o.pkey_, nullptr)) {}
EcKey& EcKey::operator=(EcKey&& o) noexcept {
  if (this != &o) {
    EVP_PKEY_free(Pk(pkey_));
    pkey_ = std::exchange(o.pkey_, nullptr);
  }
  return *this;
}
EcKey::~EcKey() { EVP_PKEY_free(Pk(pkey_)); }

absl::StatusOr<std::string> EcKey::PrivatePem() const {
  BIO* bio = BIO_new(BIO_s_secmem());
  if (bio == nullptr) bio = BIO_new(BIO_s_mem());
  if (bio == nullptr ||
      PEM_write_bio_PrivateKey(bio, Pk(pkey_), nullptr, nullptr, 0, nullptr, nullptr) != 1) {
    BIO_free(bio);
    return absl::InternalError(OpensslError("PEM_write_bio_PrivateKey"));
  }
  std::string pem = BioText(bio);
  BIO_free(bio);
  return pem;
}

absl::StatusOr<std::string> EcKey::CsrPem(absl::string_view common_name) const {
  X509_REQ* req = X509_REQ_new();
  absl::Status s = AddName(X509_REQ_get_subject_name(req), "CN", std::string(common_name));
  if (s.ok() &&
      (X509_REQ_set_pubkey(req, Pk(pkey_)) != 1 || X509_REQ_sign(req, Pk(pkey_), EVP_sha256()) <= 0))
    s = absl::InternalError(OpensslError("CSR"));
  std::string pem;
  if (s.ok()) {
    BIO* bio = BIO_new(BIO_s_mem());
    if (PEM_write_bio_X509_REQ(bio, req) == 1)
      pem = BioText(bio);
    else
      s = absl::InternalError(OpensslError("PEM_write_bio_X509_REQ"));
    BIO_free(bio);
  }
  X509_REQ_free(req);
  if (!s.ok()) return s;
  return pem;
}

// ---------------------------------------------------------------------------------------------------------------

ProjectCa::~ProjectCa() {
  EVP_PKEY_free(Pk(key_));
  X509_free(static_cast<X509*>(cert_));
}

absl::StatusOr<std::unique_ptr<ProjectCa>> ProjectCa::Create(absl::string_view project,
                                                             absl::Duration validity) {
  if (!Simple(project, true))
    return absl::InvalidArgumentError(absl::StrCat("project CA: bad project '", project, "'"));
  std::unique_ptr<ProjectCa> ca(new ProjectCa());
  ca->project_ = std::string(project);
  SR_ASSIGN_OR_RETURN(EcKey key, EcKey::Generate());
  ca->key_ = std::exchange(key.pkey_, nullptr);
  X509* cert = X509_new();
  ca->cert_ = cert;
  X509_set_version(cert, 2);
  SR_RETURN_IF_ERROR(RandomSerial(cert));
  X509_NAME* name = X509_get_subject_name(cert);
  SR_RETURN_IF_ERROR(AddName(name, "O", ca->project_));
  SR_RETURN_IF_ERROR(AddName(name, "CN", absl::StrCat("Strongroom project CA ", ca->project_)));
  X509_set_issuer_name(cert, name);
  absl::Time now = absl::Now();
  SR_RETURN_IF_ERROR(SetValidity(cert, now - absl::Minutes(5), now + validity));
  X509_set_pubkey(cert, Pk(ca->key_));
  SR_RETURN_IF_ERROR(AddExt(cert, cert, NID_basic_constraints, "critical,CA:TRUE,pathlen:0"));
  SR_RETURN_IF_ERROR(AddExt(cert, cert, NID_key_usage, "critical,keyCertSign,cRLSign"));
  SR_RETURN_IF_ERROR(AddExt(cert, cert, NID_subject_key_identifier, "hash"));
  if (X509_sign(cert, Pk(ca->key_), EVP_sha256()) <= 0)
    return absl::InternalError(OpensslError("CA self-sign"));
  SR_ASSIGN_OR_RETURN(ca->cert_pem_, CertPem(cert));
  return ca;
}

absl::StatusOr<std::string> ProjectCa::Issue(void* public_key, const CertBinding& b) const {
  if (b.project != project_)
    return absl::PermissionDeniedError(
        absl::StrCat("project CA ", project_, ": not issuing for project ", b.project));
  if (!Simple(b.workload_id, false) || !Simple(b.job_id, false))
    return absl::InvalidArgumentError("project CA: bad workload or job id");
  unsigned char addr[4];
  if (inet_pton(AF_INET, b.ip.c_str(), addr) != 1)
    return absl::InvalidArgumentError(absl::StrCat("project CA: bad IP ", b.ip));
  if (b.not_after <= b.not_before) return absl::InvalidArgumentError("project CA: empty validity");
  X509* ca_cert = static_cast<X509*>(cert_);
  X509* cert = X509_new();
  absl::Status s = [&]() -> absl::Status {
    X509_set_version(cert, 2);
    SR_RETURN_IF_ERROR(RandomSerial(cert));
    X509_NAME* name = X509_get_subject_name(cert);
    SR_RETURN_IF_ERROR(AddName(name, "O", b.project));
    SR_RETURN_IF_ERROR(AddName(name, "OU", b.job_id));
    SR_RETURN_IF_ERROR(AddName(name, "CN", b.workload_id));
    X509_set_issuer_name(cert, X509_get_subject_name(ca_cert));
    SR_RETURN_IF_ERROR(SetValidity(cert, b.not_before, b.not_after));
    if (X509_set_pubkey(cert, Pk(public_key)) != 1) return absl::InternalError(OpensslError("set_pubkey"));
    SR_RETURN_IF_ERROR(AddExt(cert, ca_cert, NID_basic_constraints, "critical,CA:FALSE"));
    SR_RETURN_IF_ERROR(AddExt(cert, ca_cert, NID_key_usage, "critical,digitalSignature"));
    SR_RETURN_IF_ERROR(AddExt(cert, ca_cert, NID_authority_key_identifier, "keyid"));
    SR_RETURN_IF_ERROR(
        AddExt(cert, ca_cert, NID_subject_alt_name,
               absl::StrCat("IP:", b.ip, ",URI:spiffe://", b.project, ".project/workload/", b.workload_id)));
    if (X509_sign(cert, Pk(key_), EVP_sha256()) <= 0) return absl::InternalError(OpensslError("sign"));
    return absl::OkStatus();
  }();
  absl::StatusOr<std::string> pem = s.ok() ? CertPem(cert) : absl::StatusOr<std::string>(s);
  X509_free(cert);
  return pem;
}

absl::StatusOr<std::string> ProjectCa::IssueFromCsr(absl::string_view csr_pem,
                                                    const CertBinding& binding) const {
  BIO* bio = BIO_new_mem_buf(csr_pem.data(), static_cast<int>(csr_pem.size()));
  X509_REQ* req = bio ? PEM_read_bio_X509_REQ(bio, nullptr, nullptr, nullptr) : nullptr;
  BIO_free(bio);
  if (req == nullptr) {
    ERR_clear_error();
    return absl::InvalidArgumentError("project CA: the CSR is not a PEM certificate request");
  }
  EVP_PKEY* pub = X509_REQ_get0_pubkey(req);
  absl::StatusOr<std::string> out;
  if (pub == nullptr || X509_REQ_verify(req, pub) != 1) {
    ERR_clear_error();
    out = absl::InvalidArgumentError("project CA: the CSR's signature does not verify");
  } else if (EVP_PKEY_get_base_id(pub) != EVP_PKEY_EC || EVP_PKEY_get_bits(pub) < 256) {
    out = absl::InvalidArgumentError("project CA: the CSR's key is not EC P-256 or larger");
  } else {
    out = Issue(pub, binding);
  }
  X509_REQ_free(req);
  return out;
}

absl::StatusOr<std::string> ProjectCa::IssueForKey(const EcKey& key, const CertBinding& binding) const {
  return Issue(key.native(), binding);
}

absl::Status VerifyIssuedBy(absl::string_view cert_pem, absl::string_view ca_pem, absl::Time now) {
  X509* cert = ParseCert(cert_pem);
  X509* ca = ParseCert(ca_pem);
  absl::Status s;
  if (cert == nullptr || ca == nullptr) {
    s = absl::InvalidArgumentError("certificate or CA is not PEM");
  } else {
    X509_STORE* store = X509_STORE_new();
    X509_STORE_add_cert(store, ca);
    X509_STORE_CTX* ctx = X509_STORE_CTX_new();
    X509_STORE_CTX_init(ctx, store, cert, nullptr);
    X509_STORE_CTX_set_time(ctx, 0, absl::ToTimeT(now));
    if (X509_verify_cert(ctx) != 1)
      s = absl::PermissionDeniedError(
          absl::StrCat("certificate does not chain to the CA: ",
                       X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx))));
    X509_STORE_CTX_free(ctx);
    X509_STORE_free(store);
  }
  X509_free(cert);
  X509_free(ca);
  ERR_clear_error();
  return s;
}

namespace {

std::string NameField(X509_NAME* name, int nid) {
  char buf[256] = {0};
  int n = X509_NAME_get_text_by_NID(name, nid, buf, sizeof(buf));
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
}

absl::Time Asn1Time(const ASN1_TIME* t) {
  struct tm tm {};
  if (ASN1_TIME_to_tm(t, &tm) != 1) return absl::InfinitePast();
  return absl::FromTimeT(timegm(&tm));
}

}  // namespace

absl::StatusOr<CertBinding> ReadBinding(absl::string_view cert_pem) {
  X509* cert = ParseCert(cert_pem);
  if (cert == nullptr) return absl::InvalidArgumentError("certificate is not PEM");
  CertBinding b;
  X509_NAME* subject = X509_get_subject_name(cert);
  b.project = NameField(subject, NID_organizationName);
  b.job_id = NameField(subject, NID_organizationalUnitName);
  b.workload_id = NameField(subject, NID_commonName);
  b.not_before = Asn1Time(X509_get0_notBefore(cert));
  b.not_after = Asn1Time(X509_get0_notAfter(cert));
  auto* sans = static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
  for (int i = 0; sans != nullptr && i < sk_GENERAL_NAME_num(sans); ++i) {
    const GENERAL_NAME* gn = sk_GENERAL_NAME_value(sans, i);
    if (gn->type == GEN_IPADD && ASN1_STRING_length(gn->d.iPAddress) == 4) {
      char text[INET_ADDRSTRLEN] = {0};
      inet_ntop(AF_INET, ASN1_STRING_get0_data(gn->d.iPAddress), text, sizeof(text));
      b.ip = text;
      break;
    }
  }
  GENERAL_NAMES_free(sans);
  X509_free(cert);
  ERR_clear_error();
  return b;
}

}  // namespace strongroom
