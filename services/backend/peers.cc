#include "services/backend/peers.h"

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "common/tls.h"
#include "strongroom/v1/host_agent.grpc.pb.h"
#include "strongroom/v1/vm_controller.grpc.pb.h"

namespace strongroom::backend {

absl::StatusOr<std::shared_ptr<grpc::Channel>> Peers::ChannelTo(const std::string& address, Role role,
                                                                const std::string& instance) {
  const std::string key = absl::StrCat(RoleName(role), "/", instance, "@", address);
  std::lock_guard<std::mutex> lock(mu_);
  if (auto it = channels_.find(key); it != channels_.end()) return it->second;
  SR_ASSIGN_OR_RETURN(
      std::shared_ptr<grpc::Channel> channel,
      MakeSecureChannel(address, settings_.client_tls, {settings_.trust_domain, role, instance}));
  channels_[key] = channel;
  return channel;
}

absl::StatusOr<v1::ProvisionWorkloadResponse> Peers::Provision(const std::string& cluster,
                                                               const v1::ProvisionWorkloadRequest& request,
                                                               absl::Duration timeout) {
  auto address = settings_.vm_controllers.find(cluster);
  if (address == settings_.vm_controllers.end()) {
    return absl::FailedPreconditionError(
        absl::StrCat("no vm-controller is configured for cluster ", cluster));
  }
  SR_ASSIGN_OR_RETURN(std::shared_ptr<grpc::Channel> channel,
                      ChannelTo(address->second, Role::kVmController, cluster));
  auto stub = v1::VmController::NewStub(channel);
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  v1::ProvisionWorkloadResponse response;
  SR_RETURN_IF_ERROR(FromGrpcStatus(stub->ProvisionWorkload(&context, request, &response)));
  return response;
}

absl::Status Peers::StopWorkload(const std::string& node, const v1::StopWorkloadRequest& request,
                                 absl::Duration timeout) {
  const std::string address = settings_.HostAgentAddress(node);
  if (address.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("no host-agent address is known for node \"", node, "\""));
  }
  SR_ASSIGN_OR_RETURN(std::shared_ptr<grpc::Channel> channel, ChannelTo(address, Role::kHostAgent, node));
  auto stub = v1::HostAgent::NewStub(channel);
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  v1::StopWorkloadResponse response;
  return FromGrpcStatus(stub->StopWorkload(&context, request, &response));
}

}  // namespace strongroom::backend
