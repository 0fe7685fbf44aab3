// Stands in for vm-controller and host-agent in backend's integration tests, as they were when backend was
// built: a real daemon (common/daemon.h: mTLS, the authorization table, audit) serving the generated
// VmController and HostAgent services with no method overridden, so every RPC answers UNIMPLEMENTED ("... is
// not implemented by this ... build"). backend must treat that as the failure path it is. When those daemons
// land, the tests can run them instead; backend's behaviour does not depend on which error comes back.
#include "common/daemon.h"
#include "strongroom/v1/config.pb.h"
#include "strongroom/v1/host_agent.grpc.pb.h"
#include "strongroom/v1/vm_controller.grpc.pb.h"

int main(int argc, char** argv) {
  using namespace strongroom;
  // Only `server` is read; BackendConfig is merely a message that has one.
  v1::BackendConfig config;
  DaemonSpec spec;
  spec.name = "unimplemented-peer";
  spec.config = &config;
  spec.server_config = [&config]() -> const v1::ServerConfig& { return config.server(); };
  spec.make_services = []() -> absl::StatusOr<std::vector<RegisteredService>> {
    std::vector<RegisteredService> services;
    services.push_back(
        {v1::VmController::service_full_name(), std::make_unique<v1::VmController::Service>()});
    services.push_back({v1::HostAgent::service_full_name(), std::make_unique<v1::HostAgent::Service>()});
    return services;
  };
  return RunDaemon(argc, argv, std::move(spec));
}
