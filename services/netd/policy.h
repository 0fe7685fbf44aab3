// A workload's network policy: the egress and ingress allowlists, validated and normalised.
// Pure logic; the gRPC adapter converts the API's EgressRule/IngressRule into RuleInput.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "services/netd/ipv4.h"

namespace strongroom::netd {

enum class Protocol { kTcp, kUdp };

// "tcp" / "udp": also the keyword OpenFlow matches use.
absl::string_view ProtocolName(Protocol protocol);

// One normalised rule. For egress, `peer` is the destination and the ports are the destination
// ports. For ingress, `peer` is the allowed source and the ports are the workload's own
// (destination) ports.
struct Rule {
  Cidr peer;
  Protocol protocol = Protocol::kTcp;
  uint16_t port_first = 0;
  uint16_t port_last = 0;
  std::string description;

  friend bool operator==(const Rule& a, const Rule& b) {
    return a.peer == b.peer && a.protocol == b.protocol && a.port_first == b.port_first &&
           a.port_last == b.port_last && a.description == b.description;
  }
  friend bool operator!=(const Rule& a, const Rule& b) { return !(a == b); }
};

struct Policy {
  std::vector<Rule> egress;
  std::vector<Rule> ingress;

  friend bool operator==(const Policy& a, const Policy& b) {
    return a.egress == b.egress && a.ingress == b.ingress;
  }
  friend bool operator!=(const Policy& a, const Policy& b) { return !(a == b); }
};

// A rule as the API carries it, before validation.
struct RuleInput {
  std::string cidr;
  int protocol = 0;  // strongroom.v1.Protocol numbering: 0 unspecified, 1 TCP, 2 UDP
  uint32_t port_start = 0;
  uint32_t port_end = 0;  // 0 means port_start
  std::string description;
};

// The limits a policy must respect (NetdConfig; docs/NETD.md "Limits").
struct PolicyLimits {
  size_t max_egress_rules = 1024;
  size_t max_ingress_rules = 64;
  int min_prefix_length = 16;
  // A port range expands to up to 16 masked matches per flow, so the flow count, not the rule
  // count, is what bounds the bundle size and the switch's table.
  size_t max_flows_per_port = 16384;
  // Rules may not reach into the workload subnet: there is no workload-to-workload path.
  Cidr workload_subnet;
};

// Longest description kept (SHORT TEXT in common.proto).
inline constexpr size_t kMaxDescriptionBytes = 256;

// Validates both lists and returns the normalised policy (bare addresses become /32, port_end
// filled in). INVALID_ARGUMENT names the offending field, e.g.
// "egress_allowlist[3].port_start: 0 is not in 1..65535".
absl::StatusOr<Policy> ValidatePolicy(const std::vector<RuleInput>& egress,
                                      const std::vector<RuleInput>& ingress, const PolicyLimits& limits);

// Checks only the list sizes. Called before converting a request's rules, so a request with
// 10,000 rules is refused without materialising them.
absl::Status CheckRuleCounts(size_t egress, size_t ingress, const PolicyLimits& limits);

}  // namespace strongroom::netd
