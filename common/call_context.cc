#include "common/call_context.h"

#include "common/peer_verifier.h"
#include "grpc/grpc_security_constants.h"

namespace strongroom {

absl::StatusOr<Identity> CallerIdentity(const grpc::ServerContextBase& context) {
  std::shared_ptr<const grpc::AuthContext> auth = context.auth_context();
  if (auth == nullptr) return absl::UnauthenticatedError("call has no TLS context");
  std::vector<grpc::string_ref> pem = auth->FindPropertyValues(GRPC_X509_PEM_CERT_PROPERTY_NAME);
  if (pem.empty()) return absl::UnauthenticatedError("no client certificate presented");
  return IdentityFromCertificatePem(absl::string_view(pem[0].data(), pem[0].size()));
}

}  // namespace strongroom
