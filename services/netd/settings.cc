#include "services/netd/settings.h"

#include <functional>
#include <regex>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace strongroom::netd {
namespace {

using ErrorFn = std::function<absl::Status(absl::string_view field, absl::string_view reason)>;

bool IsOvsName(absl::string_view name) {
  static const std::regex* const kPattern = new std::regex("^[A-Za-z0-9_.-]{1,15}$");
  return std::regex_match(name.begin(), name.end(), *kPattern);
}

bool IsRemote(absl::string_view remote) {
  if (absl::StartsWith(remote, "unix:")) return remote.size() > 5 && remote[5] == '/';
  if (absl::StartsWith(remote, "tcp:")) return CheckHostPort(remote.substr(4)).ok();
  return false;
}

// Reads an optional number field with a default and an inclusive range.
absl::StatusOr<uint32_t> Bounded(bool present, uint32_t value, uint32_t fallback, uint32_t low, uint32_t high,
                                 absl::string_view field, const ErrorFn& error) {
  if (!present) return fallback;
  if (value < low || value > high) return error(field, absl::StrCat(value, " is not in ", low, "..", high));
  return value;
}

absl::StatusOr<NetdSettings> Validate(const v1::NetdConfig& config, const ErrorFn& error) {
  const std::string bridge = config.bridge().empty() ? "br-secure" : config.bridge();
  if (!IsOvsName(bridge)) return error("bridge", "must be 1..15 characters of [A-Za-z0-9_.-]");
  const std::string uplink = config.uplink_port().empty() ? "uplink" : config.uplink_port();
  if (!IsOvsName(uplink)) return error("uplink_port", "must be 1..15 characters of [A-Za-z0-9_.-]");
  if (uplink == bridge) return error("uplink_port", "must not be the bridge's own port");

  const std::string ovsdb =
      config.ovsdb_remote().empty() ? "unix:/var/run/openvswitch/db.sock" : config.ovsdb_remote();
  if (!IsRemote(ovsdb)) return error("ovsdb_remote", "must be \"unix:/ABSOLUTE/PATH\" or \"tcp:IP:PORT\"");
  const std::string openflow = config.openflow_remote().empty()
                                   ? absl::StrCat("unix:/var/run/openvswitch/", bridge, ".mgmt")
                                   : config.openflow_remote();
  if (!IsRemote(openflow))
    return error("openflow_remote", "must be \"unix:/ABSOLUTE/PATH\" or \"tcp:IP:PORT\"");

  absl::StatusOr<Cidr> subnet = ParseCidr(config.subnet().empty() ? "10.64.0.0/16" : config.subnet(), false);
  if (!subnet.ok()) return error("subnet", subnet.status().message());
  if (subnet->prefix_length < 8 || subnet->prefix_length > 30) {
    return error("subnet", absl::StrCat("prefix length ", subnet->prefix_length, " is not in 8..30"));
  }
  Ipv4 gateway = subnet->First() + 1;
  if (!config.gateway().empty()) {
    absl::StatusOr<Ipv4> parsed = ParseIpv4(config.gateway());
    if (!parsed.ok()) return error("gateway", parsed.status().message());
    gateway = *parsed;
  }
  if (!subnet->Contains(gateway) || gateway == subnet->First() || gateway == subnet->Last()) {
    return error("gateway",
                 absl::StrCat(FormatIpv4(gateway), " is not a host address of subnet ", subnet->ToString()));
  }
  std::vector<AddressRange> reserved;
  for (int i = 0; i < config.reserved_size(); ++i) {
    const std::string field = absl::StrCat("reserved[", i, "]");
    absl::StatusOr<AddressRange> range = ParseAddressRange(config.reserved(i));
    if (!range.ok()) return error("reserved", absl::StrCat(field, ": ", range.status().message()));
    if (!subnet->Contains(range->first) || !subnet->Contains(range->last)) {
      return error("reserved", absl::StrCat(field, ": \"", config.reserved(i), "\" is not inside subnet ",
                                            subnet->ToString()));
    }
    reserved.push_back(*range);
  }
  absl::StatusOr<AddressPool> pool = AddressPool::Create(*subnet, gateway, std::move(reserved));
  if (!pool.ok()) return error("reserved", pool.status().message());

  NetdSettings settings;
  settings.ovsdb_remote = ovsdb;
  settings.bridge = bridge;
  settings.openflow_remote = openflow;
  settings.uplink_port = uplink;
  settings.pool = *std::move(pool);
  absl::StatusOr<uint32_t> value = Bounded(config.has_mtu(), config.mtu(), 1500, 576, 9000, "mtu", error);
  if (!value.ok()) return value.status();
  settings.mtu = static_cast<int>(*value);
  value = Bounded(config.has_max_ports(), config.max_ports(), 1024, 1, 65279, "max_ports", error);
  if (!value.ok()) return value.status();
  settings.max_ports = *value;
  value = Bounded(config.has_max_egress_rules(), config.max_egress_rules(), 1024, 0, 1024, "max_egress_rules",
                  error);
  if (!value.ok()) return value.status();
  settings.limits.max_egress_rules = *value;
  value = Bounded(config.has_max_ingress_rules(), config.max_ingress_rules(), 64, 0, 64, "max_ingress_rules",
                  error);
  if (!value.ok()) return value.status();
  settings.limits.max_ingress_rules = *value;
  value = Bounded(config.has_max_flows_per_port(), config.max_flows_per_port(), 16384, 16, 65536,
                  "max_flows_per_port", error);
  if (!value.ok()) return value.status();
  settings.limits.max_flows_per_port = *value;
  value = Bounded(config.has_min_rule_prefix_length(), config.min_rule_prefix_length(), 16, 8, 32,
                  "min_rule_prefix_length", error);
  if (!value.ok()) return value.status();
  settings.limits.min_prefix_length = static_cast<int>(*value);
  settings.limits.workload_subnet = *subnet;
  value = Bounded(config.has_ovs_timeout_ms(), config.ovs_timeout_ms(), 5000, 100, 60000, "ovs_timeout_ms",
                  error);
  if (!value.ok()) return value.status();
  settings.ovs_timeout = absl::Milliseconds(*value);
  value = Bounded(config.has_flow_check_interval_ms(), config.flow_check_interval_ms(), 200, 50, 10000,
                  "flow_check_interval_ms", error);
  if (!value.ok()) return value.status();
  settings.flow_check_interval = absl::Milliseconds(*value);
  if (!config.backend_address().empty()) {
    if (absl::Status s = CheckHostPort(config.backend_address()); !s.ok()) {
      return error("backend_address", s.message());
    }
    const v1::TlsFiles& tls = config.backend_tls();
    if (tls.ca_file().empty() || tls.cert_file().empty() || tls.key_file().empty()) {
      return error("backend_tls", "ca_file, cert_file and key_file are required with backend_address");
    }
    settings.backend_address = config.backend_address();
    settings.backend_tls = tls;
  }
  if (!config.audit_spool_dir().empty()) {
    if (config.audit_spool_dir()[0] != '/' || absl::StrContains(config.audit_spool_dir(), "..")) {
      return error("audit_spool_dir", "must be an absolute path without \"..\"");
    }
    settings.audit_spool_dir = config.audit_spool_dir();
  }
  if (!config.gateway_mac().empty()) {
    static const std::regex* const kMac = new std::regex("^[0-9a-f]{2}(:[0-9a-f]{2}){5}$");
    const std::string mac = absl::AsciiStrToLower(config.gateway_mac());
    if (!std::regex_match(mac, *kMac)) {
      return error("gateway_mac", absl::StrCat("\"", absl::CHexEscape(config.gateway_mac()),
                                               "\" is not a MAC address like 02:00:00:00:00:01"));
    }
    int first_octet = 0;
    (void)absl::SimpleHexAtoi(mac.substr(0, 2), &first_octet);
    if ((first_octet & 1) != 0 || mac == "00:00:00:00:00:00") {
      return error("gateway_mac", absl::StrCat(mac, " is not a unicast address"));
    }
    settings.gateway_mac = mac;
  }
  value = Bounded(config.has_workload_link_group(), config.workload_link_group(), kDefaultWorkloadLinkGroup, 1,
                  2147483647, "workload_link_group", error);
  if (!value.ok()) return value.status();
  settings.workload_link_group = *value;
  return settings;
}

}  // namespace

absl::StatusOr<NetdSettings> SettingsFromConfig(const v1::NetdConfig& config, const ConfigSource& source) {
  return Validate(
      config, [&](absl::string_view field, absl::string_view reason) { return source.Error(field, reason); });
}

absl::StatusOr<NetdSettings> SettingsFromConfig(const v1::NetdConfig& config) {
  return Validate(config, [](absl::string_view field, absl::string_view reason) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": ", reason));
  });
}

}  // namespace strongroom::netd
