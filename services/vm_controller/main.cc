// vm-controller: runs beside a project's Local slurmctld (DESIGN.md §2). Converts Local Slurm jobs into global jobs,
// pins them to their workload's dynamic node, and cleans up when they end.
#include <filesystem>
#include <memory>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "common/audit_client.h"
#include "common/bounded_file.h"
#include "common/daemon.h"
#include "common/field_rules.h"
#include "common/log.h"
#include "common/status.h"
#include "services/vm_controller/controller.h"
#include "services/vm_controller/enrollment_service.h"
#include "services/vm_controller/service.h"
#include "strongroom/v1/vm_controller.grpc.pb.h"

namespace strongroom::vm_controller {
namespace {

absl::Status Validate(const v1::VmControllerConfig& c, const ConfigSource& source) {
  if (c.cluster_name().empty() || c.cluster_name().size() > 63) return source.Error("cluster_name", "required, an ID");
  if (c.slurm_conf().empty() || c.slurm_conf()[0] != '/') return source.Error("slurm_conf", "required, absolute");
  if (c.state_db().empty() || c.state_db()[0] != '/') return source.Error("state_db", "required, absolute");
  if (absl::Status s = CheckHostPort(c.backend_address()); !s.ok()) return source.Error("backend_address", s.message());
  if (c.slurmctld_addresses().empty() || c.slurmctld_addresses_size() > 4) {
    return source.Error("slurmctld_addresses", "1 to 4 HOST:PORT entries are required");
  }
  for (const std::string& address : c.slurmctld_addresses()) {
    if (absl::Status s = CheckHostPort(address); !s.ok()) return source.Error("slurmctld_addresses", s.message());
  }
  if (!c.munge_socket().empty() && (c.munge_socket()[0] != '/' || absl::StrContains(c.munge_socket(), "..") ||
                                    c.munge_socket().size() > 255)) {
    return source.Error("munge_socket", "an absolute path of at most 255 bytes without \"..\"");
  }
  if (c.has_poll_interval_ms() && (c.poll_interval_ms() < 100 || c.poll_interval_ms() > 60000)) {
    return source.Error("poll_interval_ms", absl::StrCat(c.poll_interval_ms(), " is not in 100..60000"));
  }
  if (c.has_resolve_deadline_seconds() && (c.resolve_deadline_seconds() < 1 || c.resolve_deadline_seconds() > 600)) {
    return source.Error("resolve_deadline_seconds", absl::StrCat(c.resolve_deadline_seconds(), " is not in 1..600"));
  }
  if (c.has_register_deadline_seconds() &&
      (c.register_deadline_seconds() < 1 || c.register_deadline_seconds() > 600)) {
    return source.Error("register_deadline_seconds", absl::StrCat(c.register_deadline_seconds(), " is not in 1..600"));
  }
  if (c.has_slurm_cli_timeout_seconds() &&
      (c.slurm_cli_timeout_seconds() < 1 || c.slurm_cli_timeout_seconds() > 120)) {
    return source.Error("slurm_cli_timeout_seconds", absl::StrCat(c.slurm_cli_timeout_seconds(), " is not in 1..120"));
  }
  for (const auto& [field, value] : {std::pair<const char*, std::string>{"wait_partition", c.wait_partition()},
                                     {"run_partition", c.run_partition()}}) {
    if (!value.empty() && !IsName(value)) return source.Error(field, absl::StrCat("must match ", kNamePattern));
  }
  if (!c.wait_partition().empty() && c.wait_partition() == c.run_partition()) {
    return source.Error("wait_partition", "must differ from run_partition");
  }
  if (c.has_node_reconcile_seconds() && (c.node_reconcile_seconds() < 1 || c.node_reconcile_seconds() > 3600)) {
    return source.Error("node_reconcile_seconds", absl::StrCat(c.node_reconcile_seconds(), " is not in 1..3600"));
  }
  if (c.has_enrollment()) {
    const auto& e = c.enrollment();
    if (!IsName(e.project()))
      return source.Error("enrollment.project", absl::StrCat("must match ", kNamePattern));
    if (e.has_certificate_margin_minutes() &&
        (e.certificate_margin_minutes() < 1 || e.certificate_margin_minutes() > 1440)) {
      return source.Error("enrollment.certificate_margin_minutes", "is not in 1..1440");
    }
    if (!e.munge_key_file().empty() &&
        (e.munge_key_file()[0] != '/' || absl::StrContains(e.munge_key_file(), ".."))) {
      return source.Error("enrollment.munge_key_file", "an absolute path without \"..\"");
    }
    if (!e.ipsec_vici_socket().empty() && (e.ipsec_vici_socket()[0] != '/' || e.ipsec_address().empty())) {
      return source.Error("enrollment.ipsec_vici_socket", "an absolute path, with ipsec_address set");
    }
    if (!e.listen_address().empty()) {
      if (absl::Status s = CheckHostPort(e.listen_address()); !s.ok())
        return source.Error("enrollment.listen_address", s.message());
      if (e.listen_address() == c.server().listen_address())
        return source.Error("enrollment.listen_address", "must differ from server.listen_address");
    }
  }
  return absl::OkStatus();
}

// Audit events of the enrollment authority go to the daemon's sink, which RunDaemon builds after the
// services.
class ForwardingAuditSink : public AuditSink {
 public:
  void Record(const AuditEvent& event) override {
    if (target) target->Record(event);
  }
  std::shared_ptr<AuditSink> target;  // set by make_audit_sink, before the server accepts calls
};

// Everything the daemon owns, alive as long as its services.
struct VmController {
  ForwardingAuditSink enrollment_audit;
  std::unique_ptr<EnrollmentAuthority> enrollment;
  std::unique_ptr<VmTunnels> tunnels;
  std::unique_ptr<LocalJobStore> store;
  std::unique_ptr<LocalSlurm> slurm;
  std::unique_ptr<GlobalJobs> backend;
  std::unique_ptr<Controller> controller;
  std::vector<ExtraListener> extra_listeners;  // the enrollment listener, handed to RunDaemon once
};

}  // namespace
}  // namespace strongroom::vm_controller

int main(int argc, char** argv) {
  using namespace strongroom;
  using namespace strongroom::vm_controller;
  v1::VmControllerConfig config;
  VmController parts;
  DaemonSpec spec;
  spec.name = "vm-controller";
  spec.config = &config;
  spec.server_config = [&config]() -> const v1::ServerConfig& { return config.server(); };
  spec.validate = [&config](const ConfigSource& source) { return Validate(config, source); };
  // vm-controller already talks to backend, so its audit events join backend's hash chain (spooled on disk
  // beside the state DB while backend is unreachable).
  spec.make_audit_sink = [&config, &parts]() -> absl::StatusOr<std::shared_ptr<AuditSink>> {
    AuditShippingOptions options;
    options.backend_address = config.backend_address();
    options.tls = config.server().tls();
    options.trust_domain = config.server().trust_domain();
    options.spool_dir = std::filesystem::path(config.state_db()).parent_path() / "audit-spool";
    absl::StatusOr<std::shared_ptr<AuditShipper>> shipper = MakeShippingAuditSink(options);
    if (!shipper.ok()) return shipper.status();
    parts.enrollment_audit.target = *shipper;
    return std::shared_ptr<AuditSink>(*shipper);
  };
  spec.make_services = [&]() -> absl::StatusOr<std::vector<RegisteredService>> {
    absl::StatusOr<std::unique_ptr<LocalJobStore>> store = LocalJobStore::Open(config.state_db());
    if (!store.ok()) return store.status();
    parts.store = std::move(*store);
    LocalSlurmCliOptions slurm;
    slurm.slurm_conf = config.slurm_conf();
    if (!config.slurm_bin_dir().empty()) slurm.bin_dir = config.slurm_bin_dir();
    if (config.has_slurm_cli_timeout_seconds()) slurm.timeout = absl::Seconds(config.slurm_cli_timeout_seconds());
    parts.slurm = MakeLocalSlurmCli(slurm);
    absl::StatusOr<std::unique_ptr<GlobalJobs>> backend =
        MakeGlobalJobsClient(config.backend_address(), config.server().tls(), config.server().trust_domain());
    if (!backend.ok()) return backend.status();
    parts.backend = std::move(*backend);
    ControllerOptions options;
    options.cluster = config.cluster_name();
    options.slurmctld_addresses.assign(config.slurmctld_addresses().begin(), config.slurmctld_addresses().end());
    options.munge_socket = config.munge_socket();
    if (config.has_poll_interval_ms()) options.poll_interval = absl::Milliseconds(config.poll_interval_ms());
    if (config.has_resolve_deadline_seconds()) options.resolve_deadline = absl::Seconds(config.resolve_deadline_seconds());
    if (config.has_register_deadline_seconds()) {
      options.register_deadline = absl::Seconds(config.register_deadline_seconds());
    }
    if (!config.wait_partition().empty()) options.wait_partition = config.wait_partition();
    if (!config.run_partition().empty()) options.run_partition = config.run_partition();
    if (config.has_node_reconcile_seconds()) options.node_reconcile = absl::Seconds(config.node_reconcile_seconds());
    if (config.has_enrollment()) {
      const auto& e = config.enrollment();
      absl::StatusOr<std::unique_ptr<ProjectCa>> ca = ProjectCa::Create(e.project(), absl::Hours(24 * 30));
      if (!ca.ok()) return ca.status();
      ProjectSecrets secrets{"", e.nfs_server(), e.nfs_export()};
      if (!e.munge_key_file().empty()) {
        absl::StatusOr<std::string> key = ReadBoundedRegularFile(e.munge_key_file(), 64 * 1024);
        if (!key.ok()) return Annotate(key.status(), "enrollment.munge_key_file");
        secrets.munge_key = std::move(*key);
      }
      parts.enrollment = std::make_unique<EnrollmentAuthority>(
          std::move(*ca), config.server().trust_domain(), std::move(secrets),
          absl::Minutes(e.has_certificate_margin_minutes() ? e.certificate_margin_minutes() : 10),
          &parts.enrollment_audit);
      options.enrollment = parts.enrollment.get();
      if (!e.ipsec_vici_socket().empty()) {
        const IpsecBackend backend = ChooseIpsecBackend(ProbeKernelIpsec());
        absl::StatusOr<std::unique_ptr<VmTunnels>> tunnels =
            VmTunnels::Create(parts.enrollment->ca(), e.ipsec_vici_socket(), e.ipsec_address(), backend);
        if (!tunnels.ok()) return Annotate(tunnels.status(), "enrollment.ipsec_vici_socket");
        parts.tunnels = std::move(*tunnels);
        options.tunnels = parts.tunnels.get();
        Log(LogLevel::kInfo, "IPsec responder configured",
            {{"backend", std::string(IpsecBackendName(backend))}});
      }
      Log(LogLevel::kInfo, "enrollment on: a new project CA was created in memory",
          {{"project", e.project()}});
    }
    parts.controller =
        std::make_unique<Controller>(std::move(options), parts.store.get(), parts.slurm.get(), parts.backend.get());
    parts.controller->StartWorker();
    if (parts.enrollment != nullptr && !config.enrollment().listen_address().empty()) {
      // The workload-facing enrollment RPCs, on their own listener (docs/IPSEC.md "Enrollment").
      ExtraListener listener;
      listener.name = "enrollment";
      listener.listen_address = config.enrollment().listen_address();
      listener.services.push_back({v1::WorkloadEnrollment::service_full_name(),
                                   std::make_unique<WorkloadEnrollmentService>(parts.enrollment.get())});
      parts.extra_listeners.push_back(std::move(listener));
    }
    std::vector<RegisteredService> services;
    services.push_back({v1::VmController::service_full_name(),
                        std::make_unique<VmControllerService>(parts.controller.get(), config.cluster_name(),
                                                              parts.enrollment.get())});
    return services;
  };
  spec.take_extra_listeners = [&parts]() { return std::move(parts.extra_listeners); };
  return RunDaemon(argc, argv, std::move(spec));
}
