// The gRPC face of vm-controller: checks the caller's instance where the role alone is not enough, then hands
// each call to the Controller and maps its absl::Status at the edge.
#pragma once

#include "services/vm_controller/controller.h"
#include "strongroom/v1/vm_controller.grpc.pb.h"

namespace strongroom::vm_controller {

// The IPv4 address in a gRPC peer string ("ipv4:192.0.2.10:41234", "ipv6:[::ffff:192.0.2.10]:41234"), or "".
std::string PeerIpv4(const std::string& peer);

class VmControllerService final : public v1::VmController::Service {
 public:
  // `enrollment` may be null (EnrollWorkload is then FAILED_PRECONDITION); not owned.
  VmControllerService(Controller* controller, std::string cluster, EnrollmentAuthority* enrollment = nullptr)
      : controller_(controller), cluster_(std::move(cluster)), enrollment_(enrollment) {}

  grpc::Status ConvertLocalJob(grpc::ServerContext* context, const v1::ConvertLocalJobRequest* request,
                               v1::ConvertLocalJobResponse* response) override;
  grpc::Status LocalJobEnded(grpc::ServerContext* context, const v1::LocalJobEndedRequest* request,
                             v1::LocalJobEndedResponse* response) override;
  grpc::Status ProvisionWorkload(grpc::ServerContext* context, const v1::ProvisionWorkloadRequest* request,
                                 v1::ProvisionWorkloadResponse* response) override;
  grpc::Status GetLocalJob(grpc::ServerContext* context, const v1::GetLocalJobRequest* request,
                           v1::GetLocalJobResponse* response) override;
  grpc::Status ListLocalJobs(grpc::ServerContext* context, const v1::ListLocalJobsRequest* request,
                             v1::ListLocalJobsResponse* response) override;
  grpc::Status EnrollWorkload(grpc::ServerContext* context, const v1::EnrollWorkloadRequest* request,
                              v1::EnrollWorkloadResponse* response) override;

 private:
  // A submit hook may only speak for its own cluster: its certificate instance is the cluster name.
  absl::Status CheckHookInstance(const grpc::ServerContext& context) const;

  Controller* const controller_;
  const std::string cluster_;
  EnrollmentAuthority* const enrollment_;  // the project's CA and enrollment state; null when not configured
};

}  // namespace strongroom::vm_controller
