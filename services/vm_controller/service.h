// The gRPC face of vm-controller: checks the caller's instance where the role alone is not enough, then hands
// each call to the Controller and maps its absl::Status at the edge.
#pragma once

#include "services/vm_controller/controller.h"
#include "strongroom/v1/vm_controller.grpc.pb.h"

namespace strongroom::vm_controller {

class VmControllerService final : public v1::VmController::Service {
 public:
  VmControllerService(Controller* controller, std::string cluster)
      : controller_(controller), cluster_(std::move(cluster)) {}

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

 private:
  // A submit hook may only speak for its own cluster: its certificate instance is the cluster name.
  absl::Status CheckHookInstance(const grpc::ServerContext& context) const;

  Controller* const controller_;
  const std::string cluster_;
};

}  // namespace strongroom::vm_controller
