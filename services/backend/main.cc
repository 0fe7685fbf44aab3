// The backend daemon: DESIGN.md §2. RPC behaviour arrives with its own issue; until then every
// RPC of strongroom.v1.Backend answers UNIMPLEMENTED with a message naming it.
#include "common/daemon.h"
#include "strongroom/v1/backend.grpc.pb.h"

namespace {

class BackendService final : public strongroom::v1::Backend::Service {};

}  // namespace

int main(int argc, char** argv) {
  strongroom::v1::BackendConfig config;
  strongroom::DaemonSpec spec;
  spec.name = "backend";
  spec.config = &config;
  spec.server_config = [&config]() -> const strongroom::v1::ServerConfig& { return config.server(); };
  spec.make_services = [] {
    std::vector<strongroom::RegisteredService> services;
    services.push_back({strongroom::v1::Backend::service_full_name(), std::make_unique<BackendService>()});
    return absl::StatusOr<std::vector<strongroom::RegisteredService>>(std::move(services));
  };
  return strongroom::RunDaemon(argc, argv, std::move(spec));
}
