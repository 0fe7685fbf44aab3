// The netd daemon: DESIGN.md §2. RPC behaviour arrives with its own issue; until then every
// RPC of strongroom.v1.Netd answers UNIMPLEMENTED with a message naming it.
#include "common/daemon.h"
#include "strongroom/v1/netd.grpc.pb.h"

namespace {

class NetdService final : public strongroom::v1::Netd::Service {};

}  // namespace

int main(int argc, char** argv) {
  strongroom::v1::NetdConfig config;
  strongroom::DaemonSpec spec;
  spec.name = "netd";
  spec.config = &config;
  spec.server_config = [&config]() -> const strongroom::v1::ServerConfig& { return config.server(); };
  spec.make_services = [] {
    std::vector<strongroom::RegisteredService> services;
    services.push_back({strongroom::v1::Netd::service_full_name(), std::make_unique<NetdService>()});
    return absl::StatusOr<std::vector<strongroom::RegisteredService>>(std::move(services));
  };
  return strongroom::RunDaemon(argc, argv, std::move(spec));
}
