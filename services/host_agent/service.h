// The thin gRPC adapter of strongroom.v1.HostAgent over WorkloadManager: identity and per-object
// authorization (a global-job caller must be this node's), request limits, status mapping (common/status.h
// ToGrpcStatus).
#pragma once

#include <memory>

#include "services/host_agent/manager.h"
#include "strongroom/v1/host_agent.grpc.pb.h"

namespace strongroom::host_agent {

class HostAgentService final : public v1::HostAgent::Service {
 public:
  explicit HostAgentService(std::shared_ptr<WorkloadManager> manager) : manager_(std::move(manager)) {}

  grpc::Status StartWorkload(grpc::ServerContext* context, const v1::StartWorkloadRequest* request,
                             v1::StartWorkloadResponse* response) override;
  grpc::Status StopWorkload(grpc::ServerContext* context, const v1::StopWorkloadRequest* request,
                            v1::StopWorkloadResponse* response) override;
  grpc::Status GetWorkload(grpc::ServerContext* context, const v1::GetWorkloadRequest* request,
                           v1::GetWorkloadResponse* response) override;
  grpc::Status ListWorkloads(grpc::ServerContext* context, const v1::ListWorkloadsRequest* request,
                             v1::ListWorkloadsResponse* response) override;
  grpc::Status WatchWorkload(grpc::ServerContext* context, const v1::WatchWorkloadRequest* request,
                             grpc::ServerWriter<v1::WatchWorkloadResponse>* writer) override;

 private:
  // The caller's SPIFFE id, after the per-object check: a global-job caller must be this node's client.
  absl::StatusOr<std::string> Caller(const grpc::ServerContext& context);
  const std::shared_ptr<WorkloadManager> manager_;  // all domain logic
};

}  // namespace strongroom::host_agent
