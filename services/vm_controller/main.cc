// vm-controller: runs beside a project's Local slurmctld (DESIGN.md §2). Converts Local Slurm jobs into
// global jobs, pins them to their workload's dynamic node, and cleans up when they end.
#include <filesystem>
#include <memory>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "common/audit_client.h"
#include "common/bounded_file.h"
#include "common/charon_process.h"
#include "common/daemon.h"
#include "common/field_rules.h"
#include "common/log.h"
#include "common/status.h"
#include "services/vm_controller/config_check.h"
#include "services/vm_controller/controller.h"
#include "services/vm_controller/controlling_vm.h"
#include "services/vm_controller/enrollment_service.h"
#include "services/vm_controller/nfs_server.h"
#include "services/vm_controller/service.h"
#include "strongroom/v1/vm_controller.grpc.pb.h"

namespace strongroom::vm_controller {
namespace {

// Audit events of the enrollment authority go to the daemon's sink, which RunDaemon builds after the
// services.
class ForwardingAuditSink : public AuditSink {
 public:
  void Record(const AuditEvent& event) override {
    std::shared_ptr<AuditSink> t;
    {
      absl::MutexLock lock(&mu_);
      t = target_;
    }
    if (t) t->Record(event);
  }
  void SetTarget(std::shared_ptr<AuditSink> target) {
    absl::MutexLock lock(&mu_);
    target_ = std::move(target);
  }

 private:
  absl::Mutex mu_;  // the controlling VM's watcher threads record while make_audit_sink sets the target
  std::shared_ptr<AuditSink> target_ ABSL_GUARDED_BY(mu_);  // set by make_audit_sink, before calls are served
};

// Everything the daemon owns, alive as long as its services.
struct VmController {
  ForwardingAuditSink enrollment_audit;
  std::unique_ptr<EnrollmentAuthority> enrollment;
  // charon and nfs-ganesha; destroyed (stopped) after the controller whose worker uses them.
  std::unique_ptr<ControllingVm> controlling_vm;
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
  spec.validate = [&config](const ConfigSource& source) { return ValidateConfig(config, source); };
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
    parts.enrollment_audit.SetTarget(*shipper);
    return std::shared_ptr<AuditSink>(*shipper);
  };
  spec.make_services = [&]() -> absl::StatusOr<std::vector<RegisteredService>> {
    absl::StatusOr<std::unique_ptr<LocalJobStore>> store = LocalJobStore::Open(config.state_db());
    if (!store.ok()) return store.status();
    parts.store = std::move(*store);
    LocalSlurmCliOptions slurm;
    slurm.slurm_conf = config.slurm_conf();
    if (!config.slurm_bin_dir().empty()) slurm.bin_dir = config.slurm_bin_dir();
    if (config.has_slurm_cli_timeout_seconds())
      slurm.timeout = absl::Seconds(config.slurm_cli_timeout_seconds());
    parts.slurm = MakeLocalSlurmCli(slurm);
    absl::StatusOr<std::unique_ptr<GlobalJobs>> backend =
        MakeGlobalJobsClient(config.backend_address(), config.server().tls(), config.server().trust_domain());
    if (!backend.ok()) return backend.status();
    parts.backend = std::move(*backend);
    ControllerOptions options;
    options.cluster = config.cluster_name();
    options.slurmctld_addresses.assign(config.slurmctld_addresses().begin(),
                                       config.slurmctld_addresses().end());
    options.munge_socket = config.munge_socket();
    if (config.has_poll_interval_ms()) options.poll_interval = absl::Milliseconds(config.poll_interval_ms());
    if (config.has_resolve_deadline_seconds())
      options.resolve_deadline = absl::Seconds(config.resolve_deadline_seconds());
    if (config.has_register_deadline_seconds()) {
      options.register_deadline = absl::Seconds(config.register_deadline_seconds());
    }
    if (!config.wait_partition().empty()) options.wait_partition = config.wait_partition();
    if (!config.run_partition().empty()) options.run_partition = config.run_partition();
    if (config.has_node_reconcile_seconds())
      options.node_reconcile = absl::Seconds(config.node_reconcile_seconds());
    if (config.has_enrollment()) {
      const auto& e = config.enrollment();
      absl::StatusOr<std::unique_ptr<ProjectCa>> ca = ProjectCa::Create(e.project(), absl::Hours(24 * 30));
      if (!ca.ok()) return ca.status();
      ProjectSecrets secrets{"", e.nfs_server(), e.nfs_export()};
      if (secrets.nfs_export.empty() && e.has_nfs()) secrets.nfs_export = e.nfs().export_path();
      if (secrets.nfs_server.empty() && e.has_ipsec()) secrets.nfs_server = e.ipsec().address();
      secrets.ipsec_address = e.has_ipsec() ? e.ipsec().address() : e.ipsec_address();
      if (e.has_nfs()) secrets.nfs_mount_point = e.nfs().share_path();
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
      if (!e.ipsec_vici_socket().empty() || e.has_ipsec() || e.has_nfs()) {
        ControllingVmOptions vm;
        vm.ipsec_backend = ChooseIpsecBackend(ProbeKernelIpsec());
        vm.charon_context =
            e.has_ipsec() ? "enrollment.ipsec (vm-controller's charon)" : "enrollment.ipsec_vici_socket";
        vm.ganesha_context = "enrollment.nfs (vm-controller's nfs-ganesha)";
        if (e.has_ipsec()) {
          vm.charon_binary = e.ipsec().charon_binary().empty() ? std::string(kDefaultCharonBinary)
                                                               : e.ipsec().charon_binary();
          vm.charon_dir = e.ipsec().state_dir();
          vm.ipsec_address = e.ipsec().address();
          vm.workload_subnets.assign(e.ipsec().workload_subnets().begin(), e.ipsec().workload_subnets().end());
          if (const size_t colon = e.listen_address().rfind(':'); colon != std::string::npos)
            (void)absl::SimpleAtoi(e.listen_address().substr(colon + 1), &vm.enrollment_port);
        } else {
          vm.external_vici_socket = e.ipsec_vici_socket();
          vm.ipsec_address = e.ipsec_address();
        }
        if (e.has_nfs()) {
          vm.ganesha_binary = e.nfs().ganesha_binary().empty() ? std::string(kDefaultGaneshaBinary)
                                                               : e.nfs().ganesha_binary();
          vm.ganesha_dir = e.nfs().state_dir();
          vm.share_path = e.nfs().share_path();
          vm.export_path = e.nfs().export_path();
        }
        absl::StatusOr<std::unique_ptr<ControllingVm>> started =
            ControllingVm::Start(vm, parts.enrollment->ca(), &parts.enrollment_audit);
        if (!started.ok()) return started.status();
        parts.controlling_vm = std::move(*started);
        options.data_path = parts.controlling_vm.get();
        Log(LogLevel::kInfo, "controlling VM's data path configured",
            {{"ipsec_backend", std::string(IpsecBackendName(vm.ipsec_backend))},
             {"charon_pid", absl::StrCat(parts.controlling_vm->charon_pid())},
             {"ganesha_pid", absl::StrCat(parts.controlling_vm->ganesha_pid())}});
      }
      Log(LogLevel::kInfo, "enrollment on: a new project CA was created in memory",
          {{"project", e.project()}});
    }
    parts.controller = std::make_unique<Controller>(std::move(options), parts.store.get(), parts.slurm.get(),
                                                    parts.backend.get());
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
