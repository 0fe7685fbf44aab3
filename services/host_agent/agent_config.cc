#include "services/host_agent/agent_config.h"

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/status.h"
#include "services/host_agent/container/apptainer.h"
#include "services/host_agent/network.h"

namespace strongroom::host_agent {
namespace {

constexpr uint32_t kDefaultUidBase = 100000;
constexpr uint32_t kDefaultUidCount = 65536;

std::string RuntimeBinary(const v1::HostAgentConfig& c) {
  if (!c.runtime_binary().empty()) return c.runtime_binary();
  if (c.runtime() == "crun") return "/usr/bin/crun";
  if (c.runtime() == "apptainer") return "/usr/bin/apptainer";
  return "/usr/sbin/runc";
}

}  // namespace

absl::Status ValidateConfig(const v1::HostAgentConfig& c, const ConfigSource& source) {
  auto absolute = [&](const std::string& path, const char* field, bool required) -> absl::Status {
    if (path.empty()) return required ? source.Error(field, "required") : absl::OkStatus();
    if (path[0] != '/' || path.find("/../") != std::string::npos)
      return source.Error(field, "must be an absolute path");
    return absl::OkStatus();
  };
  SR_RETURN_IF_ERROR(absolute(c.state_dir(), "state_dir", true));
  SR_RETURN_IF_ERROR(absolute(c.image_root(), "image_root", true));
  SR_RETURN_IF_ERROR(absolute(c.runtime_binary(), "runtime_binary", false));
  SR_RETURN_IF_ERROR(absolute(c.mkfs_binary(), "mkfs_binary", false));
  if (!c.runtime().empty() && c.runtime() != "runc" && c.runtime() != "crun" && c.runtime() != "apptainer") {
    return source.Error("runtime", absl::StrCat("\"", c.runtime(), "\" is not one of runc, crun, apptainer"));
  }
  if (c.has_uid_base() && (c.uid_base() == 0 || c.uid_base() > 4294901759u)) {
    return source.Error("uid_base",
                        absl::StrCat(c.uid_base(), " is not in 1..4294901759 (never 0: host root)"));
  }
  if (c.has_uid_count() && (c.uid_count() < 65536 || c.uid_count() > 16777216)) {
    return source.Error("uid_count", absl::StrCat(c.uid_count(),
                                                  " is not in 65536..16777216 (container uid 65534, nobody, "
                                                  "must map)"));
  }
  if (c.has_scratch_default_bytes() && (c.scratch_default_bytes() < (uint64_t{1} << 26))) {
    return source.Error("scratch_default_bytes", "must be at least 64 MiB");
  }
  if (c.has_scratch_max_bytes() && c.scratch_max_bytes() < (uint64_t{1} << 26)) {
    return source.Error("scratch_max_bytes", "must be at least 64 MiB");
  }
  if (!c.netd_address().empty()) {
    SR_RETURN_IF_ERROR(CheckHostPort(c.netd_address()).ok()
                           ? absl::OkStatus()
                           : source.Error("netd_address", "must be HOST:PORT"));
    if (c.netd_tls().ca_file().empty() || c.netd_tls().cert_file().empty() ||
        c.netd_tls().key_file().empty()) {
      return source.Error("netd_tls", "ca_file, cert_file and key_file are required with netd_address");
    }
  }
  if (!c.backend_address().empty()) {
    SR_RETURN_IF_ERROR(CheckHostPort(c.backend_address()).ok()
                           ? absl::OkStatus()
                           : source.Error("backend_address", "must be HOST:PORT"));
    if (c.backend_tls().ca_file().empty() || c.backend_tls().cert_file().empty() ||
        c.backend_tls().key_file().empty()) {
      return source.Error("backend_tls", "ca_file, cert_file and key_file are required with backend_address");
    }
  }
  SR_RETURN_IF_ERROR(absolute(c.local_cluster_secrets_dir(), "local_cluster_secrets_dir", false));
  std::set<std::string> projects;
  for (const v1::HostAgentConfig::ProjectShare& share : c.project_shares()) {
    if (share.project().empty() || share.project().size() > 64 ||
        share.project().find_first_not_of(
            "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") != std::string::npos) {
      return source.Error("project_shares", absl::StrCat("project \"", share.project(), "\" is not a NAME"));
    }
    if (!projects.insert(share.project()).second) {
      return source.Error("project_shares", absl::StrCat("project ", share.project(), " appears twice"));
    }
    SR_RETURN_IF_ERROR(absolute(share.host_path(), "project_shares", true));
    struct stat st;
    if (stat(share.host_path().c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
      return source.Error("project_shares", absl::StrCat(share.host_path(), " is not an existing directory"));
    }
    if (share.host_path() == "/" || absl::StartsWith(share.host_path(), "/proc") ||
        absl::StartsWith(share.host_path(), "/sys") || absl::StartsWith(share.host_path(), "/dev") ||
        absl::StartsWith(share.host_path(), "/run/")) {
      return source.Error("project_shares", absl::StrCat(share.host_path(), " may not be shared"));
    }
  }
  if (!c.reconcile_policy().empty() && c.reconcile_policy() != "adopt" && c.reconcile_policy() != "cleanup") {
    return source.Error("reconcile_policy",
                        absl::StrCat("\"", c.reconcile_policy(), "\" is not adopt or cleanup"));
  }
  if (c.has_stop_grace_seconds() && c.stop_grace_seconds() > 300) {
    return source.Error("stop_grace_seconds", absl::StrCat(c.stop_grace_seconds(), " is not in 0..300"));
  }
  if (c.has_start_retry_window_seconds() && c.start_retry_window_seconds() > 3600) {
    return source.Error("start_retry_window_seconds",
                        absl::StrCat(c.start_retry_window_seconds(), " is not in 0..3600"));
  }
  if (!c.vm_domain_type().empty() && c.vm_domain_type() != "kvm" && c.vm_domain_type() != "qemu") {
    return source.Error("vm_domain_type", absl::StrCat("\"", c.vm_domain_type(), "\" is neither kvm nor qemu"));
  }
  if (!c.vm_libvirt_uri().empty() && !absl::StartsWith(c.vm_libvirt_uri(), "qemu:///")) {
    return source.Error("vm_libvirt_uri", "must be a local qemu:/// URI");
  }
  if (c.has_vm_writable_disk_bytes() && c.vm_writable_disk_bytes() < (uint64_t{16} << 20)) {
    return source.Error("vm_writable_disk_bytes", "must be at least 16 MiB");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<WorkloadManager>> BuildManager(const v1::HostAgentConfig& c,
                                                              std::shared_ptr<AuditSink> audit) {
  ManagerOptions o;
  o.node = c.server().instance();
  o.agent_id = absl::StrCat("spiffe://", c.server().trust_domain(), "/host-agent/", c.server().instance());
  o.trust_domain = c.server().trust_domain();
  o.deployment_ca_file = c.server().tls().ca_file();
  o.local_cluster_secrets_dir = c.local_cluster_secrets_dir();
  for (const v1::HostAgentConfig::ProjectShare& share : c.project_shares()) {
    o.project_shares[share.project()] = share.host_path();
  }
  o.state_dir = c.state_dir();
  o.image_root = c.image_root();
  o.uid_base = c.has_uid_base() ? c.uid_base() : kDefaultUidBase;
  o.uid_count = c.has_uid_count() ? c.uid_count() : kDefaultUidCount;
  if (c.has_scratch_default_bytes()) o.scratch_default_bytes = c.scratch_default_bytes();
  if (c.has_scratch_max_bytes()) o.scratch_max_bytes = c.scratch_max_bytes();
  o.allow_unencrypted_scratch = c.allow_unencrypted_scratch();
  if (!c.mkfs_binary().empty()) o.mkfs_binary = c.mkfs_binary();
  o.adopt_on_restart = c.reconcile_policy() != "cleanup";
  o.fault_crash_at = c.fault_crash_at();
  if (c.has_stop_grace_seconds()) o.default_grace = absl::Seconds(c.stop_grace_seconds());
  if (c.has_start_retry_window_seconds())
    o.start_retry_window = absl::Seconds(c.start_retry_window_seconds());
  o.vm_libvirt_uri = c.vm_libvirt_uri();
  if (!c.vm_domain_type().empty()) o.vm_domain_type = c.vm_domain_type();
  if (c.has_vm_writable_disk_bytes()) o.vm_writable_disk_bytes = c.vm_writable_disk_bytes();

  std::unique_ptr<Runtime> runtime;
  if (c.runtime() == "apptainer") {
    ApptainerParams a;
    a.binary = RuntimeBinary(c);
    runtime = MakeApptainerRuntime(a);
  } else {
    const std::string root = c.state_dir() + "/runtime";
    std::error_code ec;
    std::filesystem::create_directories(root, ec);
    runtime = MakeOciRuntime(c.runtime().empty() ? "runc" : c.runtime(), RuntimeBinary(c), root);
  }
  if (access(RuntimeBinary(c).c_str(), X_OK) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("runtime binary ", RuntimeBinary(c), " is not executable"));
  }
  std::unique_ptr<NetworkProvider> network;
  if (c.netd_address().empty()) {
    Log(LogLevel::kWarn,
        "DEVELOPMENT MODE: no netd_address configured; workloads get a loopback-only network namespace");
    network = MakeLoopbackOnlyNetwork();
  } else {
    SR_ASSIGN_OR_RETURN(network, MakeNetdNetwork(c.netd_address(), c.netd_tls(), c.server().trust_domain(),
                                                 c.server().instance()));
  }
  if (!c.local_cluster_secrets_dir().empty()) {
    Log(LogLevel::kWarn,
        "!!! local_cluster_secrets_dir is set: DEVELOPMENT ONLY; munge keys are read from this compute host "
        "(production: from vm-controller over the enrolled channel, issue 14) !!!");
  }
  if (c.project_shares_size() > 0) {
    Log(LogLevel::kWarn,
        "!!! project_shares is set: DEVELOPMENT ONLY; project data is bound from this compute host "
        "(production: NFS through the workload's IPsec tunnel, issue 14) !!!");
  }
  if (c.allow_unencrypted_scratch()) {
    Log(LogLevel::kWarn,
        "!!! allow_unencrypted_scratch is set: DEVELOPMENT ONLY; scratch may be unencrypted !!!");
  }
  std::unique_ptr<ReportSender> reports;
  if (c.backend_address().empty()) {
    Log(LogLevel::kInfo, "no backend_address configured: workloads are not reported to backend");
  } else {
    SR_ASSIGN_OR_RETURN(reports, MakeBackendReportSender(c.backend_address(), c.backend_tls(),
                                                         c.server().trust_domain(), absl::Seconds(10)));
  }
  SR_ASSIGN_OR_RETURN(std::unique_ptr<WorkloadManager> m,
                      WorkloadManager::Create(std::move(o), std::move(runtime), std::move(network),
                                              std::move(audit), std::move(reports)));
  SR_RETURN_IF_ERROR(m->Reconcile());
  return std::shared_ptr<WorkloadManager>(std::move(m));
}

}  // namespace strongroom::host_agent
