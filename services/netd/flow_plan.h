// The OpenFlow table of br-secure, as ovs-ofctl-syntax strings (the shim parses them with OVS's
// own parser, and the benchmark's CLI anchor feeds the same strings to ovs-ofctl). Pure logic.
//
// Tables (docs/NETD.md "Flows" has the full listing):
//   0  classify by in_port. A workload port: only its pinned MAC+IP go on, IP traffic through
//      conntrack in the workload's zone into table 1, ARP only to the gateway. The uplink: IP
//      for a workload's address through conntrack in that workload's zone into table 2, ARP for
//      a workload's address straight to its port. Everything else: drop.
//   1  from a workload: new and established connections only to its egress rules; replies only
//      on connections its ingress rules admitted; related ICMP. Out through the uplink only.
//   2  to a workload: replies on connections its egress rules allow; new and established
//      connections only from its ingress rules; related ICMP. Out to that workload's port only.
// Every table ends in a priority-0 drop, and +inv is dropped first. No flow ever outputs from one
// workload port to another, so there is no workload-to-workload path.
//
// Revocation is immediate in both directions: established packets are checked against the rules
// in force, not only the first packet of a connection, so replacing a workload's flows cuts
// connections its new policy no longer allows at the moment the bundle commits.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "services/netd/ipv4.h"
#include "services/netd/policy.h"

namespace strongroom::netd {

// The top 16 bits of every netd cookie are "SR", so netd's flows are recognisable in a dump and
// countable with one cookie mask. The low 48 bits hold the allocation's generation; generation 0
// is the bridge-wide flows (the table-miss drops, which double as the restart sentinel).
inline constexpr uint64_t kCookieTag = 0x5352000000000000ULL;
inline constexpr uint64_t kCookieTagMask = 0xffff000000000000ULL;
inline constexpr uint64_t kBaseCookie = kCookieTag;
inline constexpr uint64_t kMaxGeneration = (uint64_t{1} << 48) - 1;

uint64_t CookieForGeneration(uint64_t generation);

// A value/mask pair matching a block of transport ports.
struct PortMask {
  uint16_t value = 0;
  uint16_t mask = 0;
};

// The fewest masked matches covering exactly [first, last] (at most 16 for 1..65535).
std::vector<PortMask> PortRangeMasks(uint16_t first, uint16_t last);

// Where traffic leaves and enters the bridge.
struct UplinkSpec {
  int64_t ofport = 0;
  Ipv4 gateway = 0;
};

// The identity of one workload's port, as the flows pin it.
struct WorkloadFlowSpec {
  uint64_t cookie = 0;
  int64_t ofport = 0;
  uint16_t conntrack_zone = 0;
  Ipv4 address = 0;
  std::string mac;
};

// The bridge-wide flows (cookie kBaseCookie).
std::vector<std::string> BaseFlows();

// Every flow of one workload (all with spec.cookie).
std::vector<std::string> WorkloadFlows(const UplinkSpec& uplink, const WorkloadFlowSpec& spec,
                                       const Policy& policy);

// How many flows WorkloadFlows returns for `policy`, without building them.
size_t CountWorkloadFlows(const Policy& policy);

// The match of a delete that removes exactly one workload's flows: "cookie=0x.../-1".
std::string MatchCookie(uint64_t cookie);

}  // namespace strongroom::netd
