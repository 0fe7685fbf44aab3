// The netd daemon (DESIGN.md §2): owns br-secure on this node. Bootstrap only; the behaviour is
// in port_manager.* (domain), netd_service.* (gRPC edge), ovs/ and netlink/ (adapters).
#include <memory>

#include "common/audit.h"
#include "common/audit_client.h"
#include "common/daemon.h"
#include "common/status.h"
#include "common/log.h"
#include "services/netd/netd_service.h"
#include "services/netd/netlink/host_stack_guard.h"
#include "services/netd/netlink/workload_links.h"
#include "services/netd/ovs/ovs_clients.h"
#include "services/netd/settings.h"

int main(int argc, char** argv) {
  // Before any thread exists: libopenvswitch's signal plumbing insists on it.
  strongroom::netd::InitOpenvSwitch();

  strongroom::v1::NetdConfig config;
  strongroom::netd::NetdSettings settings;
  // One audit sink for reconcile's events and the RPC/authorization events: with backend_address set, they
  // join backend's hash chain through a disk spool (as vm-controller's and host-agent's do); without it, the
  // JSON log.
  std::shared_ptr<strongroom::AuditSink> audit;
  auto make_audit = [&config, &settings, &audit]() -> absl::StatusOr<std::shared_ptr<strongroom::AuditSink>> {
    if (audit != nullptr) return audit;
    if (settings.backend_address.empty()) {
      audit = strongroom::MakeLogAuditSink();
      return audit;
    }
    strongroom::AuditShippingOptions options;
    options.backend_address = settings.backend_address;
    options.tls = settings.backend_tls;
    options.trust_domain = config.server().trust_domain();
    options.spool_dir = settings.audit_spool_dir;
    absl::StatusOr<std::shared_ptr<strongroom::AuditShipper>> shipper =
        strongroom::MakeShippingAuditSink(options);
    if (!shipper.ok()) return shipper.status();
    audit = *shipper;
    return audit;
  };
  strongroom::DaemonSpec spec;
  spec.name = "netd";
  // Locals, not spec's members: spec is moved into RunDaemon, and make_services runs there.
  auto health = std::make_shared<strongroom::ServiceHealth>();
  spec.health = health;
  std::shared_ptr<strongroom::netd::PortManager> manager;
  spec.make_audit_sink = make_audit;
  spec.config = &config;
  spec.server_config = [&config]() -> const strongroom::v1::ServerConfig& { return config.server(); };
  spec.validate = [&](const strongroom::ConfigSource& source) -> absl::Status {
    absl::StatusOr<strongroom::netd::NetdSettings> validated =
        strongroom::netd::SettingsFromConfig(config, source);
    if (!validated.ok()) return validated.status();
    settings = *std::move(validated);
    return absl::OkStatus();
  };
  spec.make_services = [&]() -> absl::StatusOr<std::vector<strongroom::RegisteredService>> {
    using namespace strongroom::netd;
    absl::StatusOr<std::shared_ptr<strongroom::AuditSink>> sink = make_audit();
    if (!sink.ok()) return sink.status();
    // The node's stack must never see workload frames (host_isolation.h). A kernel that cannot
    // enforce that (no nf_tables) is no place for workloads: netd refuses to start. Any other
    // failure is retried, with netd NOT_SERVING and every allocation refused meanwhile.
    auto guard = std::make_unique<NftablesHostStackGuard>(settings.workload_link_group, settings.ovs_timeout);
    if (absl::StatusOr<std::string> guarded = guard->Ensure();
        !guarded.ok() && absl::IsFailedPrecondition(guarded.status())) {
      return strongroom::Annotate(guarded.status(), "netd cannot keep the node's stack away from workload ports");
    }
    // Serving does not wait for OVS: RPCs answer UNAVAILABLE until it is reachable, and the
    // background reconcile retries every flow_check_interval.
    manager = std::make_shared<PortManager>(
        settings, std::make_unique<ShimOvsDatabase>(settings.ovsdb_remote),
        std::make_unique<ShimOpenFlowSwitch>(settings.openflow_remote),
        std::make_unique<ShimOpenFlowSwitch>(settings.openflow_remote),
        std::make_unique<NetlinkWorkloadLinks>(settings.ovs_timeout, settings.workload_link_group), std::move(guard),
        *sink);
    manager->SetServingObserver([health](bool serving, const std::string& reason) {
      health->Set(strongroom::v1::Netd::service_full_name(), "node stack guard", serving, reason);
    });
    if (settings.gateway_mac.empty()) {
      strongroom::Log(strongroom::LogLevel::kWarn,
                      "gateway_mac is not set: workload frames may be addressed to any unicast MAC on the uplink; "
                      "set it where the uplink is a switched segment",
                      {});
    }
    manager->StartBackground();
    std::vector<strongroom::RegisteredService> services;
    services.push_back({strongroom::v1::Netd::service_full_name(),
                        std::make_unique<NetdService>(manager, settings.limits, config.server().instance())});
    return services;
  };
  spec.render_metrics = [&manager]() { return manager ? manager->RenderMetrics() : std::string(); };
  return strongroom::RunDaemon(argc, argv, std::move(spec));
}
