#include "services/vm_controller/enrollment_service.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/status.h"
#include "grpc/grpc_security_constants.h"
#include "services/vm_controller/service.h"

namespace strongroom::vm_controller {
namespace {

constexpr size_t kMaxCsrBytes = 8192;

// The client certificate the peer presented in the handshake (not verified there), or "".
std::string PeerCertificatePem(const grpc::ServerContext& context) {
  std::shared_ptr<const grpc::AuthContext> auth = context.auth_context();
  if (auth == nullptr) return "";
  std::vector<grpc::string_ref> pem = auth->FindPropertyValues(GRPC_X509_PEM_CERT_PROPERTY_NAME);
  if (pem.empty()) return "";
  return std::string(pem[0].data(), pem[0].size());
}

}  // namespace

grpc::Status ServeEnrollment(EnrollmentAuthority& enrollment, const std::string& caller_spiffe_id,
                             const std::string& peer, const v1::EnrollWorkloadRequest& request,
                             v1::EnrollWorkloadResponse* response) {
  if (request.csr_pem().size() > kMaxCsrBytes) {
    return ToGrpcStatus(absl::InvalidArgumentError("EnrollWorkload: csr_pem is larger than 8 KiB"));
  }
  EnrollRequest r{caller_spiffe_id,         PeerIpv4(peer),     request.workload_id(),
                  request.global_job_id(),  request.project(),  request.csr_pem(),
                  request.enrollment_ticket()};
  absl::StatusOr<Enrollment> e = enrollment.Enroll(r, absl::Now());
  if (!e.ok())
    return ToGrpcStatus(Annotate(e.status(), absl::StrCat("EnrollWorkload(", request.workload_id(), ")")));
  response->set_certificate_pem(e->certificate_pem);
  response->set_project_ca_pem(e->project_ca_pem);
  response->mutable_not_after()->set_seconds(absl::ToUnixSeconds(e->not_after));
  return grpc::Status::OK;
}

grpc::Status WorkloadEnrollmentService::EnrollWorkload(grpc::ServerContext* context,
                                                       const v1::EnrollWorkloadRequest* request,
                                                       v1::EnrollWorkloadResponse* response) {
  // No caller identity: on this listener the ticket alone authenticates (EnrollmentAuthority::Enroll).
  return ServeEnrollment(*enrollment_, "", context->peer(), *request, response);
}

grpc::Status WorkloadEnrollmentService::GetProjectSecrets(grpc::ServerContext* context,
                                                          const v1::GetProjectSecretsRequest*,
                                                          v1::GetProjectSecretsResponse* response) {
  // Secrets() refuses (and audits) a missing certificate too: it is not a project certificate.
  absl::StatusOr<ProjectSecrets> secrets =
      enrollment_->Secrets(PeerCertificatePem(*context), PeerIpv4(context->peer()), absl::Now());
  if (!secrets.ok()) return ToGrpcStatus(Annotate(secrets.status(), "GetProjectSecrets"));
  response->set_munge_key(secrets->munge_key);
  response->set_nfs_server(secrets->nfs_server);
  response->set_nfs_export(secrets->nfs_export);
  response->set_ipsec_address(secrets->ipsec_address);
  response->set_nfs_mount_point(secrets->nfs_mount_point);
  return grpc::Status::OK;
}

}  // namespace strongroom::vm_controller
