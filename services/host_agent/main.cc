// The host-agent daemon (DESIGN.md §2, docs/HOST_AGENT.md): StartWorkload/StopWorkload of whole-node
// containers with encrypted scratch on a Global Slurm compute node. Domain logic lives in manager.h; this
// file only wires it.
#include <sys/prctl.h>

#include <filesystem>

#include "common/audit.h"
#include "common/audit_client.h"
#include "common/daemon.h"
#include "common/log.h"
#include "services/host_agent/agent_config.h"
#include "services/host_agent/service.h"

int main(int argc, char** argv) {
  using namespace strongroom;
  v1::HostAgentConfig config;
  // One audit sink for the manager's events and the RPC/authorization events: with backend_address set, they
  // join backend's hash chain through a disk spool beside the tracking DB (as vm-controller's do); without
  // it, the JSON log.
  std::shared_ptr<AuditSink> audit;
  auto make_audit = [&config, &audit]() -> absl::StatusOr<std::shared_ptr<AuditSink>> {
    if (audit != nullptr) return audit;
    if (config.backend_address().empty()) {
      audit = MakeLogAuditSink();
      return audit;
    }
    std::error_code ec;
    std::filesystem::create_directories(config.state_dir(), ec);  // the spool lives below it
    AuditShippingOptions options;
    options.backend_address = config.backend_address();
    options.tls = config.backend_tls();
    options.trust_domain = config.server().trust_domain();
    options.spool_dir = config.state_dir() + "/audit-spool";
    absl::StatusOr<std::shared_ptr<AuditShipper>> shipper = MakeShippingAuditSink(options);
    if (!shipper.ok()) return shipper.status();
    audit = *shipper;
    return audit;
  };
  DaemonSpec spec;
  spec.name = "host-agent";
  spec.config = &config;
  spec.server_config = [&config]() -> const v1::ServerConfig& { return config.server(); };
  spec.validate = [&config](const ConfigSource& source) {
    return host_agent::ValidateConfig(config, source);
  };
  spec.make_audit_sink = make_audit;
  spec.make_services = [&config, &make_audit]() -> absl::StatusOr<std::vector<RegisteredService>> {
    absl::StatusOr<std::shared_ptr<AuditSink>> sink = make_audit();
    if (!sink.ok()) return sink.status();
    auto manager = host_agent::BuildManager(config, *sink);
    if (!manager.ok()) return manager.status();
    std::vector<RegisteredService> services;
    services.push_back(
        {v1::HostAgent::service_full_name(), std::make_unique<host_agent::HostAgentService>(*manager)});
    return services;
  };
  return RunDaemon(argc, argv, std::move(spec));
}
