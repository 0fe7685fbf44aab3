// netd's configuration after validation: NetdConfig's fields with defaults applied and
// addresses parsed. Errors name the file, line and field (common/config.h).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/config.h"
#include "services/netd/address_pool.h"
#include "services/netd/policy.h"
#include "strongroom/v1/config.pb.h"

namespace strongroom::netd {

// 0x5352, "SR".
inline constexpr uint32_t kDefaultWorkloadLinkGroup = 21330;

struct NetdSettings {
  std::string ovsdb_remote;
  std::string bridge;
  std::string openflow_remote;
  std::string uplink_port;
  // The workload subnet, gateway and reserved ranges.
  AddressPool pool;
  int mtu = 1500;
  size_t max_ports = 1024;
  PolicyLimits limits;
  absl::Duration ovs_timeout = absl::Seconds(5);
  absl::Duration flow_check_interval = absl::Milliseconds(200);
  // Audit shipping to backend; an empty address means the JSON log only.
  std::string backend_address;
  v1::TlsFiles backend_tls;
  std::string audit_spool_dir = "/var/lib/strongroom/netd/audit-spool";
  // The uplink gateway's MAC ("" unknown): workload frames may be addressed only to it.
  std::string gateway_mac;
  // The device group of the node-side veth ends (the node stack guard drops by it).
  uint32_t workload_link_group = kDefaultWorkloadLinkGroup;
};

// Validates `config` (the fields after `server`) and applies defaults. INVALID_ARGUMENT
// "FILE:LINE: field: reason" from `source`.
absl::StatusOr<NetdSettings> SettingsFromConfig(const v1::NetdConfig& config, const ConfigSource& source);

// The same without a file (tests, the benchmark): errors read "field: reason".
absl::StatusOr<NetdSettings> SettingsFromConfig(const v1::NetdConfig& config);

}  // namespace strongroom::netd
