// The host-agent daemon (DESIGN.md §2, docs/HOST_AGENT.md): StartWorkload/StopWorkload of whole-node
// containers with encrypted scratch on a Global Slurm compute node. Domain logic lives in manager.h; this
// file only wires it.
#include <sys/prctl.h>

#include "common/audit.h"
#include "common/daemon.h"
#include "common/log.h"
#include "services/host_agent/agent_config.h"
#include "services/host_agent/service.h"

int main(int argc, char** argv) {
  strongroom::v1::HostAgentConfig config;
  strongroom::DaemonSpec spec;
  spec.name = "host-agent";
  spec.config = &config;
  spec.server_config = [&config]() -> const strongroom::v1::ServerConfig& { return config.server(); };
  spec.validate = [&config](const strongroom::ConfigSource& source) {
    return strongroom::host_agent::ValidateConfig(config, source);
  };
  spec.make_services = [&config]() -> absl::StatusOr<std::vector<strongroom::RegisteredService>> {
    auto manager = strongroom::host_agent::BuildManager(config, strongroom::MakeLogAuditSink());
    if (!manager.ok()) return manager.status();
    std::vector<strongroom::RegisteredService> services;
    services.push_back({strongroom::v1::HostAgent::service_full_name(),
                        std::make_unique<strongroom::host_agent::HostAgentService>(*manager)});
    return services;
  };
  return strongroom::RunDaemon(argc, argv, std::move(spec));
}
