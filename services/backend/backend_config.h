// BackendConfig: validation with FILE:LINE errors, and the settings with every default resolved, so the rest
// of backend never looks at `has_...()`.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "common/config.h"
#include "strongroom/v1/config.pb.h"

namespace strongroom::backend {

struct ProjectPolicy {
  std::string name;
  std::vector<std::string> local_clusters;
  std::string default_image;
  std::vector<std::string> egress_ceiling;   // CIDRs
  std::vector<std::string> ingress_ceiling;  // CIDRs
  bool ipsec_data_path = false;              // default allowlist: IKE/ESP-in-UDP + enrollment only
};

// BackendConfig.vm_memory_overhead_mb's default.
inline constexpr uint32_t kDefaultVmMemoryOverheadMb = 384;

struct BackendSettings {
  // Who this backend is, "spiffe://<td>/backend/<instance>": recorded_by of its own audit records.
  std::string identity;
  std::string trust_domain;

  std::string db_conninfo;
  int db_pool_size = 8;
  absl::Duration db_startup_timeout = absl::Seconds(30);
  int db_statement_timeout_ms = 10000;

  std::string slurm_conf;  // empty: Slurm's default
  std::string slurm_bin_dir = "/usr/bin";
  std::string job_script;
  std::string partition;
  absl::Duration slurm_command_timeout = absl::Seconds(30);
  absl::Duration poll_interval = absl::Seconds(5);
  absl::Duration time_limit_margin = absl::Minutes(5);
  int max_submit_attempts = 5;
  int submit_concurrency = 4;
  std::string job_output = "/dev/null";

  std::map<std::string, std::string> vm_controllers;  // cluster -> HOST:PORT
  // cluster -> its enrollment listener's HOST:PORT (vm_controllers[].enrollment_address).
  std::map<std::string, std::string> vm_controller_enrollment;
  std::map<std::string, std::string> host_agents;     // node -> HOST:PORT
  uint32_t host_agent_port = 0;
  v1::TlsFiles client_tls;

  absl::Duration readiness_deadline = absl::Seconds(300);
  absl::Duration provision_timeout = absl::Seconds(120);
  absl::Duration peer_retry_window = absl::Seconds(600);

  std::map<std::string, ProjectPolicy> projects;

  // Added to a VM workload's job memory for its guest OS (BackendConfig.vm_memory_overhead_mb).
  uint32_t vm_memory_overhead_mb = kDefaultVmMemoryOverheadMb;

  absl::Duration audit_rpc_record_wait = absl::Milliseconds(5000);
  int audit_max_batch = 2000;
  int audit_max_queued = 200000;
  absl::Duration audit_stall_after = absl::Seconds(5);
  std::string audit_spool_dir;

  std::string fault_stop_at;

  // "HOST:PORT" of the node's host-agent, or "" when none is configured.
  std::string HostAgentAddress(const std::string& node) const;
};

// Checks everything beyond ServerConfig; errors are "FILE:LINE: field: reason".
absl::Status ValidateBackendConfig(const v1::BackendConfig& config, const ConfigSource& source);

// The settings of a validated config.
BackendSettings ResolveSettings(const v1::BackendConfig& config);

}  // namespace strongroom::backend
