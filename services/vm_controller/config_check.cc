#include "services/vm_controller/config_check.h"

#include <arpa/inet.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/charon_process.h"
#include "common/field_rules.h"
#include "common/status.h"
#include "services/vm_controller/nfs_export.h"
#include "services/vm_controller/nfs_server.h"

namespace strongroom::vm_controller {
namespace {

bool IsIpv4(const std::string& ip) {
  in_addr a{};
  return inet_pton(AF_INET, ip.c_str(), &a) == 1;
}

// `value` (or `fallback` when empty) must be an absolute path of an executable regular file.
absl::Status CheckExecutable(const std::string& value, absl::string_view fallback, absl::string_view field,
                             const ConfigSource& source) {
  const std::string path = value.empty() ? std::string(fallback) : value;
  if (path[0] != '/') return source.Error(field, absl::StrCat("'", path, "' is not an absolute path"));
  struct stat st {};
  if (stat(path.c_str(), &st) != 0)
    return source.Error(field, absl::StrCat(path, ": no such file", value.empty() ? " (the default)" : ""));
  if (!S_ISREG(st.st_mode) || access(path.c_str(), X_OK) != 0)
    return source.Error(field, absl::StrCat(path, ": not an executable file"));
  return absl::OkStatus();
}

// `max_bytes`: charon's VICI socket lives in its state_dir, and a unix socket path has at most 107 bytes.
absl::Status CheckStateDir(const std::string& dir, size_t max_bytes, absl::string_view field,
                           const ConfigSource& source) {
  if (dir.empty() || dir[0] != '/' || absl::StrContains(dir, "..") || dir.size() > max_bytes)
    return source.Error(
        field, absl::StrCat("required, an absolute path of at most ", max_bytes, " bytes without \"..\""));
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateConfig(const v1::VmControllerConfig& c, const ConfigSource& source) {
  if (c.cluster_name().empty() || c.cluster_name().size() > 63)
    return source.Error("cluster_name", "required, an ID");
  if (c.slurm_conf().empty() || c.slurm_conf()[0] != '/')
    return source.Error("slurm_conf", "required, absolute");
  if (c.state_db().empty() || c.state_db()[0] != '/') return source.Error("state_db", "required, absolute");
  if (absl::Status s = CheckHostPort(c.backend_address()); !s.ok())
    return source.Error("backend_address", s.message());
  if (c.slurmctld_addresses().empty() || c.slurmctld_addresses_size() > 4) {
    return source.Error("slurmctld_addresses", "1 to 4 HOST:PORT entries are required");
  }
  for (const std::string& address : c.slurmctld_addresses()) {
    if (absl::Status s = CheckHostPort(address); !s.ok())
      return source.Error("slurmctld_addresses", s.message());
  }
  if (!c.munge_socket().empty() && (c.munge_socket()[0] != '/' || absl::StrContains(c.munge_socket(), "..") ||
                                    c.munge_socket().size() > 255)) {
    return source.Error("munge_socket", "an absolute path of at most 255 bytes without \"..\"");
  }
  if (c.has_poll_interval_ms() && (c.poll_interval_ms() < 100 || c.poll_interval_ms() > 60000)) {
    return source.Error("poll_interval_ms", absl::StrCat(c.poll_interval_ms(), " is not in 100..60000"));
  }
  if (c.has_resolve_deadline_seconds() &&
      (c.resolve_deadline_seconds() < 1 || c.resolve_deadline_seconds() > 600)) {
    return source.Error("resolve_deadline_seconds",
                        absl::StrCat(c.resolve_deadline_seconds(), " is not in 1..600"));
  }
  if (c.has_register_deadline_seconds() &&
      (c.register_deadline_seconds() < 1 || c.register_deadline_seconds() > 600)) {
    return source.Error("register_deadline_seconds",
                        absl::StrCat(c.register_deadline_seconds(), " is not in 1..600"));
  }
  if (c.has_slurm_cli_timeout_seconds() &&
      (c.slurm_cli_timeout_seconds() < 1 || c.slurm_cli_timeout_seconds() > 120)) {
    return source.Error("slurm_cli_timeout_seconds",
                        absl::StrCat(c.slurm_cli_timeout_seconds(), " is not in 1..120"));
  }
  for (const auto& [field, value] :
       {std::pair<const char*, std::string>{"wait_partition", c.wait_partition()},
        {"run_partition", c.run_partition()}}) {
    if (!value.empty() && !IsName(value))
      return source.Error(field, absl::StrCat("must match ", kNamePattern));
  }
  if (!c.wait_partition().empty() && c.wait_partition() == c.run_partition()) {
    return source.Error("wait_partition", "must differ from run_partition");
  }
  if (c.has_node_reconcile_seconds() &&
      (c.node_reconcile_seconds() < 1 || c.node_reconcile_seconds() > 3600)) {
    return source.Error("node_reconcile_seconds",
                        absl::StrCat(c.node_reconcile_seconds(), " is not in 1..3600"));
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
    if (e.has_ipsec()) {
      if (!e.ipsec_vici_socket().empty() || !e.ipsec_address().empty())
        return source.Error(
            "enrollment.ipsec",
            "vm-controller's own charon excludes ipsec_vici_socket and ipsec_address (a charon "
            "run by someone else)");
      SR_RETURN_IF_ERROR(CheckExecutable(e.ipsec().charon_binary(), kDefaultCharonBinary,
                                         "enrollment.ipsec.charon_binary", source));
      SR_RETURN_IF_ERROR(CheckStateDir(e.ipsec().state_dir(), 90, "enrollment.ipsec.state_dir", source));
      if (!IsIpv4(e.ipsec().address()))
        return source.Error("enrollment.ipsec.address", "required, this VM's IPv4 address on br-secure");
      if (e.ipsec().workload_subnets_size() > 64)
        return source.Error("enrollment.ipsec.workload_subnets", "at most 64");
      for (const std::string& subnet : e.ipsec().workload_subnets()) {
        const size_t slash = subnet.find('/');
        int bits = -1;
        if (slash == std::string::npos || !IsIpv4(subnet.substr(0, slash)) ||
            !absl::SimpleAtoi(subnet.substr(slash + 1), &bits) || bits < 8 || bits > 32)
          return source.Error("enrollment.ipsec.workload_subnets",
                              absl::StrCat("'", subnet, "' is not an IPv4 CIDR a.b.c.d/8..32"));
      }
    }
    if (e.has_nfs()) {
      const auto& n = e.nfs();
      SR_RETURN_IF_ERROR(CheckExecutable(n.ganesha_binary(), kDefaultGaneshaBinary,
                                         "enrollment.nfs.ganesha_binary", source));
      SR_RETURN_IF_ERROR(CheckStateDir(n.state_dir(), 200, "enrollment.nfs.state_dir", source));
      if (n.share_path().empty() || n.share_path()[0] != '/' || absl::StrContains(n.share_path(), "..") ||
          !std::filesystem::is_directory(n.share_path()))
        return source.Error(
            "enrollment.nfs.share_path",
            absl::StrCat("'", n.share_path(),
                         "' is not an absolute path of an existing directory (without \"..\")"));
      if (n.export_path().empty() || n.export_path()[0] != '/' || n.export_path() == "/" ||
          absl::StrContains(n.export_path(), ".."))
        return source.Error("enrollment.nfs.export_path",
                            "required, an absolute NFSv4 pseudo path other than \"/\" (without \"..\")");
      // The configuration ganesha would get (quotes, braces, control characters are refused there).
      NfsServerSettings probe;
      probe.recovery_dir = "/recovery";
      probe.exports.push_back(NfsExport{1, n.share_path(), n.export_path(), {}});
      if (absl::StatusOr<std::string> conf = GaneshaConf(probe); !conf.ok())
        return source.Error("enrollment.nfs", conf.status().message());
      if (!e.nfs_export().empty() && e.nfs_export() != n.export_path())
        return source.Error("enrollment.nfs_export", absl::StrCat("must equal nfs.export_path (\"",
                                                                  n.export_path(), "\") or be empty"));
      if (n.state_dir() == (e.has_ipsec() ? e.ipsec().state_dir() : ""))
        return source.Error("enrollment.nfs.state_dir", "must differ from ipsec.state_dir");
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

}  // namespace strongroom::vm_controller
