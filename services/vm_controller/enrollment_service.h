// The gRPC face of enrollment on vm-controller's enrollment listener (docs/IPSEC.md "Enrollment"): the
// workload-facing strongroom.v1.WorkloadEnrollment, kept apart from the main VmController service. The
// listener's TLS handshake requests a client certificate without verifying it (callers have no deployment
// identity); each handler authenticates its caller itself, as the authorization table says (common/authz.cc):
//   EnrollWorkload      the one-time enrollment ticket (EnrollmentAuthority::Enroll)
//   GetProjectSecrets   the peer's certificate, against the project CA and the source address
//                       (EnrollmentAuthority::Secrets)
#pragma once

#include "services/vm_controller/enrollment.h"
#include "strongroom/v1/vm_controller.grpc.pb.h"

namespace strongroom::vm_controller {

// One EnrollWorkload for both listeners: `caller_spiffe_id` is the mTLS identity on the main listener and ""
// on the enrollment listener (the ticket alone authenticates there). `peer` is grpc's peer string.
grpc::Status ServeEnrollment(EnrollmentAuthority& enrollment, const std::string& caller_spiffe_id,
                             const std::string& peer, const v1::EnrollWorkloadRequest& request,
                             v1::EnrollWorkloadResponse* response);

class WorkloadEnrollmentService final : public v1::WorkloadEnrollment::Service {
 public:
  explicit WorkloadEnrollmentService(EnrollmentAuthority* enrollment) : enrollment_(enrollment) {}

  grpc::Status EnrollWorkload(grpc::ServerContext* context, const v1::EnrollWorkloadRequest* request,
                              v1::EnrollWorkloadResponse* response) override;
  grpc::Status GetProjectSecrets(grpc::ServerContext* context, const v1::GetProjectSecretsRequest* request,
                                 v1::GetProjectSecretsResponse* response) override;

 private:
  EnrollmentAuthority* const enrollment_;  // not owned; the project CA and the enrollment state
};

}  // namespace strongroom::vm_controller
