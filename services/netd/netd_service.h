// The gRPC edge of netd: converts strongroom.v1.Netd requests into PortManager calls and back.
// Authorization by role happened before a handler runs (common/authz.cc); here only the
// per-node rule is added: a host-agent may call netd only on its own node (reads included).
#pragma once

#include <memory>
#include <string>

#include "services/netd/port_manager.h"
#include "services/netd/settings.h"
#include "strongroom/v1/netd.grpc.pb.h"

namespace strongroom::netd {

class NetdService final : public v1::Netd::Service {
 public:
  // `node_instance` is this netd's certificate instance, i.e. the node name.
  NetdService(std::shared_ptr<PortManager> manager, PolicyLimits limits, std::string node_instance);

  grpc::Status AllocatePort(grpc::ServerContext* context, const v1::AllocatePortRequest* request,
                            v1::AllocatePortResponse* response) override;
  grpc::Status UpdateEgress(grpc::ServerContext* context, const v1::UpdateEgressRequest* request,
                            v1::UpdateEgressResponse* response) override;
  grpc::Status ReleasePort(grpc::ServerContext* context, const v1::ReleasePortRequest* request,
                           v1::ReleasePortResponse* response) override;
  grpc::Status GetPort(grpc::ServerContext* context, const v1::GetPortRequest* request,
                       v1::GetPortResponse* response) override;
  grpc::Status ListPorts(grpc::ServerContext* context, const v1::ListPortsRequest* request,
                         v1::ListPortsResponse* response) override;

 private:
  // PERMISSION_DENIED unless the caller is not a host-agent, or is this node's host-agent.
  absl::Status CheckSameNode(const grpc::ServerContext& context, std::string* caller_spiffe_id) const;

  const std::shared_ptr<PortManager> manager_;
  const PolicyLimits limits_;
  const std::string node_instance_;
};

// The API's rule messages as the domain's inputs (exposed for tests).
absl::StatusOr<Policy> PolicyFromRequest(const google::protobuf::RepeatedPtrField<v1::EgressRule>& egress,
                                         const google::protobuf::RepeatedPtrField<v1::IngressRule>& ingress,
                                         const PolicyLimits& limits);
void PortToProto(const PortStatus& status, v1::Port* port);

}  // namespace strongroom::netd
