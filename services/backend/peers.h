// backend's clients of other daemons, over mTLS with backend's client certificate: vm-controller
// ProvisionWorkload (the hand-off) and host-agent StopWorkload (cleanup). The server must prove the expected
// role and instance: a vm-controller's instance is its cluster, a host-agent's its node.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/identity.h"
#include "grpcpp/channel.h"
#include "services/backend/backend_config.h"
#include "strongroom/v1/host_agent.pb.h"
#include "strongroom/v1/vm_controller.pb.h"

namespace strongroom::backend {

class Peers {
 public:
  explicit Peers(const BackendSettings& settings) : settings_(settings) {}
  virtual ~Peers() = default;

  // FAILED_PRECONDITION when no vm-controller is configured for `cluster`; else the call's status.
  virtual absl::StatusOr<v1::ProvisionWorkloadResponse> Provision(const std::string& cluster,
                                                                  const v1::ProvisionWorkloadRequest& request,
                                                                  absl::Duration timeout);
  // FAILED_PRECONDITION when no host-agent address is known for `node`; else the call's status.
  virtual absl::Status StopWorkload(const std::string& node, const v1::StopWorkloadRequest& request,
                                    absl::Duration timeout);

 private:
  absl::StatusOr<std::shared_ptr<grpc::Channel>> ChannelTo(const std::string& address, Role role,
                                                           const std::string& instance);

  const BackendSettings& settings_;                                 // outlives the peers
  std::mutex mu_;                                                   // guards channels_
  std::map<std::string, std::shared_ptr<grpc::Channel>> channels_;  // "role/instance@address" -> channel
};

}  // namespace strongroom::backend
