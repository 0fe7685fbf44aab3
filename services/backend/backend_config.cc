#include "services/backend/backend_config.h"

#include <unistd.h>

#include <set>

#include "absl/strings/str_cat.h"
#include "common/identity.h"
#include "services/backend/validation.h"

namespace strongroom::backend {
namespace {

constexpr const char* kFaultPoints[] = {"submit.after_commit_before_sbatch",
                                        "submit.after_sbatch_before_record"};

// Checks an optional uint32 against [lo, hi].
absl::Status CheckRange(const ConfigSource& source, const std::string& field, bool has, uint32_t value,
                        uint32_t lo, uint32_t hi) {
  if (has && (value < lo || value > hi)) {
    return source.Error(field, absl::StrCat(value, " is not in ", lo, "..", hi));
  }
  return absl::OkStatus();
}

absl::Status CheckPeers(const ConfigSource& source, const char* field,
                        const google::protobuf::RepeatedPtrField<v1::BackendConfig::Peer>& peers,
                        bool cluster) {
  std::set<std::string> seen;
  for (const v1::BackendConfig::Peer& peer : peers) {
    const bool valid = cluster ? IsId(peer.name()) : IsValidInstanceName(peer.name());
    if (!valid)
      return source.Error(absl::StrCat(field, ".name"), absl::StrCat("\"", peer.name(), "\" is not a valid ",
                                                                     cluster ? "cluster ID" : "node name"));
    if (!seen.insert(peer.name()).second) {
      return source.Error(absl::StrCat(field, ".name"),
                          absl::StrCat("\"", peer.name(), "\" is listed twice"));
    }
    if (absl::Status s = ::strongroom::CheckHostPort(peer.address()); !s.ok()) {
      return source.Error(absl::StrCat(field, ".address"),
                          absl::StrCat("\"", peer.address(), "\" ", s.message()));
    }
    if (!peer.enrollment_address().empty()) {
      if (!cluster)
        return source.Error(absl::StrCat(field, ".enrollment_address"), "only vm_controllers have one");
      if (absl::Status s = ::strongroom::CheckHostPort(peer.enrollment_address()); !s.ok()) {
        return source.Error(absl::StrCat(field, ".enrollment_address"),
                            absl::StrCat("\"", peer.enrollment_address(), "\" ", s.message()));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateBackendConfig(const v1::BackendConfig& c, const ConfigSource& source) {
  if (!c.has_database() || c.database().conninfo().empty())
    return source.Error("database.conninfo", "required");
  const auto& db = c.database();
  if (absl::Status s = CheckRange(source, "database.pool_size", db.has_pool_size(), db.pool_size(), 1, 64);
      !s.ok())
    return s;
  if (absl::Status s = CheckRange(source, "database.startup_timeout_seconds",
                                  db.has_startup_timeout_seconds(), db.startup_timeout_seconds(), 1, 600);
      !s.ok()) {
    return s;
  }
  if (absl::Status s = CheckRange(source, "database.statement_timeout_ms", db.has_statement_timeout_ms(),
                                  db.statement_timeout_ms(), 100, 600000);
      !s.ok()) {
    return s;
  }

  const auto& slurm = c.global_slurm();
  if (slurm.job_script().empty()) return source.Error("global_slurm.job_script", "required");
  if (slurm.job_script()[0] != '/' || ::access(slurm.job_script().c_str(), R_OK) != 0) {
    return source.Error("global_slurm.job_script",
                        absl::StrCat(slurm.job_script(), " is not an absolute, readable file"));
  }
  if (!slurm.slurm_conf().empty() && ::access(slurm.slurm_conf().c_str(), R_OK) != 0) {
    return source.Error("global_slurm.slurm_conf", absl::StrCat(slurm.slurm_conf(), " is not readable"));
  }
  if (!slurm.bin_dir().empty()) {
    if (slurm.bin_dir()[0] != '/') return source.Error("global_slurm.bin_dir", "must be an absolute path");
    for (const char* tool : {"sbatch", "scancel", "squeue", "scontrol"}) {
      const std::string path = absl::StrCat(slurm.bin_dir(), "/", tool);
      if (::access(path.c_str(), X_OK) != 0)
        return source.Error("global_slurm.bin_dir", absl::StrCat(path, " is not executable"));
    }
  }
  if (!slurm.partition().empty() && !IsName(slurm.partition())) {
    return source.Error("global_slurm.partition",
                        absl::StrCat("\"", slurm.partition(), "\" is not a valid partition name"));
  }
  struct Range {
    const char* field;
    bool has;
    uint32_t value, lo, hi;
  };
  for (const Range& r :
       {Range{"global_slurm.command_timeout_seconds", slurm.has_command_timeout_seconds(),
              slurm.command_timeout_seconds(), 1, 300},
        {"global_slurm.poll_interval_seconds", slurm.has_poll_interval_seconds(),
         slurm.poll_interval_seconds(), 1, 3600},
        {"global_slurm.time_limit_margin_minutes", slurm.has_time_limit_margin_minutes(),
         slurm.time_limit_margin_minutes(), 0, 1440},
        {"global_slurm.max_submit_attempts", slurm.has_max_submit_attempts(), slurm.max_submit_attempts(), 1,
         100},
        {"global_slurm.submit_concurrency", slurm.has_submit_concurrency(), slurm.submit_concurrency(), 1,
         64},
        {"readiness_deadline_seconds", c.has_readiness_deadline_seconds(), c.readiness_deadline_seconds(), 1,
         86400},
        {"provision_timeout_seconds", c.has_provision_timeout_seconds(), c.provision_timeout_seconds(), 1,
         3600},
        {"peer_retry_window_seconds", c.has_peer_retry_window_seconds(), c.peer_retry_window_seconds(), 1,
         86400},
        {"vm_memory_overhead_mb", c.has_vm_memory_overhead_mb(), c.vm_memory_overhead_mb(), 64, 65536},
        {"audit.rpc_record_wait_ms", c.audit().has_rpc_record_wait_ms(), c.audit().rpc_record_wait_ms(), 0,
         60000},
        {"audit.max_batch", c.audit().has_max_batch(), c.audit().max_batch(), 1, 10000},
        {"audit.max_queued", c.audit().has_max_queued(), c.audit().max_queued(), 1000, 10000000},
        {"audit.stall_seconds", c.audit().has_stall_seconds(), c.audit().stall_seconds(), 1, 300}}) {
    if (absl::Status s = CheckRange(source, r.field, r.has, r.value, r.lo, r.hi); !s.ok()) return s;
  }
  if (c.audit().spool_dir().empty()) return source.Error("audit.spool_dir", "required");
  if (c.audit().spool_dir()[0] != '/' || c.audit().spool_dir().find("/../") != std::string::npos) {
    return source.Error("audit.spool_dir",
                        absl::StrCat("\"", c.audit().spool_dir(), "\" is not an absolute path"));
  }
  if (absl::Status s = CheckPeers(source, "vm_controllers", c.vm_controllers(), true); !s.ok()) return s;
  if (absl::Status s = CheckPeers(source, "host_agents", c.host_agents(), false); !s.ok()) return s;
  if (c.host_agent_port() > 65535)
    return source.Error("host_agent_port", absl::StrCat(c.host_agent_port(), " is not in 0..65535"));
  if (c.has_client_tls()) {
    if (absl::Status s = ValidateTlsFiles(c.client_tls(), source, "client_tls", /*required=*/true); !s.ok()) {
      return s;
    }
  }

  std::set<std::string> projects;
  for (const v1::BackendConfig::Project& p : c.projects()) {
    if (!IsName(p.name()))
      return source.Error("projects.name",
                          absl::StrCat("\"", p.name(), "\" must match ^[a-z0-9][a-z0-9_-]{0,62}$"));
    if (!projects.insert(p.name()).second)
      return source.Error("projects.name", absl::StrCat("\"", p.name(), "\" is listed twice"));
    if (p.local_clusters().empty())
      return source.Error("projects.local_clusters",
                          absl::StrCat("project ", p.name(), ": at least one cluster"));
    for (const std::string& cluster : p.local_clusters()) {
      if (!IsId(cluster))
        return source.Error("projects.local_clusters",
                            absl::StrCat("\"", cluster, "\" is not a valid cluster ID"));
    }
    for (const auto* list : {&p.egress_ceiling(), &p.ingress_ceiling()}) {
      for (const std::string& cidr : *list) {
        if (absl::StatusOr<Ipv4Cidr> parsed = ParseIpv4Cidr(cidr); !parsed.ok()) {
          return source.Error(
              list == &p.egress_ceiling() ? "projects.egress_ceiling" : "projects.ingress_ceiling",
              absl::StrCat("\"", cidr, "\" ", parsed.status().message()));
        }
      }
    }
  }
  if (!c.fault_stop_at().empty()) {
    bool known = false;
    for (const char* point : kFaultPoints) known |= c.fault_stop_at() == point;
    if (!known)
      return source.Error("fault_stop_at",
                          absl::StrCat("\"", c.fault_stop_at(), "\" is not a known fault point"));
  }
  return absl::OkStatus();
}

BackendSettings ResolveSettings(const v1::BackendConfig& c) {
  BackendSettings s;
  s.trust_domain = c.server().trust_domain();
  s.identity = absl::StrCat("spiffe://", s.trust_domain, "/backend/", c.server().instance());
  const auto& db = c.database();
  s.db_conninfo = db.conninfo();
  if (db.has_pool_size()) s.db_pool_size = static_cast<int>(db.pool_size());
  if (db.has_startup_timeout_seconds()) s.db_startup_timeout = absl::Seconds(db.startup_timeout_seconds());
  if (db.has_statement_timeout_ms()) s.db_statement_timeout_ms = static_cast<int>(db.statement_timeout_ms());

  const auto& slurm = c.global_slurm();
  s.slurm_conf = slurm.slurm_conf();
  if (!slurm.bin_dir().empty()) s.slurm_bin_dir = slurm.bin_dir();
  s.job_script = slurm.job_script();
  s.partition = slurm.partition();
  if (slurm.has_command_timeout_seconds())
    s.slurm_command_timeout = absl::Seconds(slurm.command_timeout_seconds());
  if (slurm.has_poll_interval_seconds()) s.poll_interval = absl::Seconds(slurm.poll_interval_seconds());
  if (slurm.has_time_limit_margin_minutes())
    s.time_limit_margin = absl::Minutes(slurm.time_limit_margin_minutes());
  if (slurm.has_max_submit_attempts()) s.max_submit_attempts = static_cast<int>(slurm.max_submit_attempts());
  if (slurm.has_submit_concurrency()) s.submit_concurrency = static_cast<int>(slurm.submit_concurrency());
  if (!slurm.job_output().empty()) s.job_output = slurm.job_output();

  for (const auto& peer : c.vm_controllers()) {
    s.vm_controllers[peer.name()] = peer.address();
    if (!peer.enrollment_address().empty())
      s.vm_controller_enrollment[peer.name()] = peer.enrollment_address();
  }
  for (const auto& peer : c.host_agents()) s.host_agents[peer.name()] = peer.address();
  s.host_agent_port = c.host_agent_port();
  s.client_tls = c.has_client_tls() ? c.client_tls() : c.server().tls();

  if (c.has_readiness_deadline_seconds())
    s.readiness_deadline = absl::Seconds(c.readiness_deadline_seconds());
  if (c.has_provision_timeout_seconds()) s.provision_timeout = absl::Seconds(c.provision_timeout_seconds());
  if (c.has_peer_retry_window_seconds()) s.peer_retry_window = absl::Seconds(c.peer_retry_window_seconds());
  if (c.has_vm_memory_overhead_mb()) s.vm_memory_overhead_mb = c.vm_memory_overhead_mb();

  for (const auto& p : c.projects()) {
    ProjectPolicy& policy = s.projects[p.name()];
    policy.name = p.name();
    policy.local_clusters.assign(p.local_clusters().begin(), p.local_clusters().end());
    policy.default_image = p.default_image();
    policy.egress_ceiling.assign(p.egress_ceiling().begin(), p.egress_ceiling().end());
    policy.ingress_ceiling.assign(p.ingress_ceiling().begin(), p.ingress_ceiling().end());
    policy.ipsec_data_path = p.ipsec_data_path();
  }
  if (c.audit().has_rpc_record_wait_ms())
    s.audit_rpc_record_wait = absl::Milliseconds(c.audit().rpc_record_wait_ms());
  if (c.audit().has_max_batch()) s.audit_max_batch = static_cast<int>(c.audit().max_batch());
  if (c.audit().has_max_queued()) s.audit_max_queued = static_cast<int>(c.audit().max_queued());
  if (c.audit().has_stall_seconds()) s.audit_stall_after = absl::Seconds(c.audit().stall_seconds());
  s.audit_spool_dir = c.audit().spool_dir();
  s.fault_stop_at = c.fault_stop_at();
  return s;
}

std::string BackendSettings::HostAgentAddress(const std::string& node) const {
  if (auto it = host_agents.find(node); it != host_agents.end()) return it->second;
  if (host_agent_port == 0 || node.empty()) return "";
  return absl::StrCat(node, ":", host_agent_port);
}

}  // namespace strongroom::backend
