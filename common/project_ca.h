// The project's own certificate authority (DESIGN.md §4 "Project trust"), held in memory by vm-controller on
// the controlling VM, separate from the deployment CA that the infrastructure's admins run. It issues
// short-lived certificates for IPsec: one per workload, bound to the workload id, the job and the
// netd-assigned IP. Also the workload's side of enrollment: an EC key generated in memory and a CSR for it.
//
// Thread-safe: issuing touches no shared state (serials are random).
// Every key here lives only in process memory (OpenSSL objects); PEM text of a private key is produced only
// for charon's load-key over its local VICI socket.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace strongroom {

// An EC P-256 private key that never leaves memory unless PrivatePem() is called.
class EcKey {
 public:
  static absl::StatusOr<EcKey> Generate();
  EcKey(EcKey&&) noexcept;
  EcKey& operator=(EcKey&&) noexcept;
  ~EcKey();

  // PKCS#8 PEM (for charon's load-key only).
  absl::StatusOr<std::string> PrivatePem() const;
  // A CSR signed by this key, subject CN=`common_name`, no extensions (the CA decides every SAN).
  absl::StatusOr<std::string> CsrPem(absl::string_view common_name) const;

  void* native() const { return pkey_; }  // EVP_PKEY*

 private:
  explicit EcKey(void* pkey) : pkey_(pkey) {}
  friend class ProjectCa;
  void* pkey_ = nullptr;  // EVP_PKEY*, owned
};

// What a certificate binds. The CA writes these, never the CSR: the subject is
// CN=<workload_id>,OU=<job_id>,O=<project>, the SANs are IP:<ip> (charon's identity) and
// URI:spiffe://<project>.project/workload/<workload_id>.
struct CertBinding {
  std::string project;      // [a-z0-9][a-z0-9-]{0,62}
  std::string workload_id;  // [A-Za-z0-9._-]{1,64}
  std::string job_id;       // [A-Za-z0-9._-]{1,64}
  std::string ip;           // IPv4
  absl::Time not_before;
  absl::Time not_after;
};

class ProjectCa {
 public:
  // A fresh CA for `project` (a new key, self-signed, valid for `validity`).
  static absl::StatusOr<std::unique_ptr<ProjectCa>> Create(absl::string_view project,
                                                           absl::Duration validity);
  ~ProjectCa();

  const std::string& cert_pem() const { return cert_pem_; }
  const std::string& project() const { return project_; }

  // Verifies the CSR's self-signature and issues a certificate for its public key with `binding`. The CSR's
  // subject and extensions are ignored.
  absl::StatusOr<std::string> IssueFromCsr(absl::string_view csr_pem, const CertBinding& binding) const;
  // The same for a key held here (the controlling VM's own IPsec identity).
  absl::StatusOr<std::string> IssueForKey(const EcKey& key, const CertBinding& binding) const;

 private:
  ProjectCa() = default;
  absl::StatusOr<std::string> Issue(void* public_key, const CertBinding& binding) const;

  std::string project_;
  void* key_ = nullptr;   // EVP_PKEY*, owned: the CA key
  void* cert_ = nullptr;  // X509*, owned
  std::string cert_pem_;
};

// Whether `cert_pem` chains to `ca_pem` (signature and validity at `now`). For tests and the enrollment
// checks; charon does its own verification.
absl::Status VerifyIssuedBy(absl::string_view cert_pem, absl::string_view ca_pem, absl::Time now);

// The binding a certificate issued by a ProjectCa carries (O, OU, CN, the IP SAN, validity). It does not
// verify the signature: call VerifyIssuedBy first.
absl::StatusOr<CertBinding> ReadBinding(absl::string_view cert_pem);

}  // namespace strongroom
