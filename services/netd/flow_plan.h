// The OpenFlow table of br-secure, as ovs-ofctl-syntax strings (the shim parses them with OVS's
// own parser, and the benchmark's CLI anchor feeds the same strings to ovs-ofctl). Pure logic.
//
// Tables (docs/NETD.md "The flow table" has the full listing):
//   0  classify by in_port, untagged frames only. A workload port: IPv4 only with its pinned MAC
//      and IP (and to the gateway's MAC when it is configured) through conntrack in the workload's
//      zone into table 1; ARP only as a request for the gateway or a reply to it, with the pinned
//      sender, cut to its 42 bytes on the way out. The uplink: IPv4 for a workload's address
//      through conntrack in that workload's zone into table 2, ARP for a workload's address
//      straight to its port.
//   1  from a workload: new and established connections only to its egress rules; replies only
//      on connections its ingress rules admitted. Out through the uplink only. A workload never
//      sends ICMP errors (their quoted bytes are its own choice: a covert channel to an allowed
//      host), so none pass.
//   2  to a workload: replies on connections its egress rules allow; new and established
//      connections only from its ingress rules; ICMP errors (unreachable, time exceeded,
//      parameter problem) that conntrack relates to its connections, at most 576 bytes of IPv4 as
//      RFC 1812 bounds them. Out to that workload's port only.
// Whatever a workload's frame matches nothing else, a drop flow of that workload counts it by
// reason (DropReason); every table also ends in a priority-0 drop, and +inv is dropped first. No
// flow ever outputs from one workload port to another, so there is no workload-to-workload path.
// Tables 1 and 2 are reached only through table 0's untagged flows, so no flow passes a tagged
// frame.
//
// Revocation is immediate in both directions: established packets are checked against the rules
// in force, not only the first packet of a connection, so replacing a workload's flows cuts
// connections its new policy no longer allows at the moment the bundle commits.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
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
  // The gateway's MAC ("02:00:00:00:00:01"), or "" if not configured: then a workload's frames may
  // be addressed to any unicast MAC (the uplink delivers them to whoever has it).
  std::string gateway_mac;
};

// The longest frame a workload's ARP leaves with: Ethernet header and ARP for IPv4 over
// Ethernet, nothing after it (output max_len cuts any trailing bytes).
inline constexpr int kArpFrameBytes = 42;
// The longest ICMP error delivered to a workload: RFC 1812's 576 bytes of IPv4 plus the Ethernet
// header. Longer ones are cut, which makes the workload's stack drop them (truncated).
inline constexpr int kIcmpErrorFrameBytes = 590;

// Why a workload's frame was dropped: each reason is one drop flow per workload, so the flow's
// packet counter is the count (netd.proto DropReason has the same list).
enum class DropReason {
  kVlanTagged,        // an 802.1Q/802.1ad tag, including a priority tag (VLAN 0)
  kArpNotAllowed,     // ARP other than a request for / reply to the gateway with the pinned sender
  kSpoofed,           // IPv4 whose source MAC or IP is not the pinned one, or to another MAC
  kIpv6,              // any IPv6 frame
  kOtherProtocol,     // any other EtherType
  kEgressNotAllowed,  // IPv4 from the workload that no egress rule (or admitted reply) allows
  kEgressInvalid,     // from the workload, conntrack-invalid
  kIngressNotAllowed, // IPv4 to the workload that no rule allows
  kIngressInvalid,    // to the workload, conntrack-invalid
};
inline constexpr DropReason kAllDropReasons[] = {
    DropReason::kVlanTagged,       DropReason::kArpNotAllowed,   DropReason::kSpoofed,
    DropReason::kIpv6,             DropReason::kOtherProtocol,   DropReason::kEgressNotAllowed,
    DropReason::kEgressInvalid,    DropReason::kIngressNotAllowed, DropReason::kIngressInvalid};

// "vlan_tagged", "arp_not_allowed", ...: the Prometheus label and the log's word for it.
absl::string_view DropReasonName(DropReason reason);

// The reason a workload's drop flow counts, from the table and priority a flow-statistics reply
// gives for one of its flows; nullopt for the flows that forward.
std::optional<DropReason> DropReasonOfFlow(int table, int priority);

// The identity of one workload's port, as the flows pin it.
struct WorkloadFlowSpec {
  uint64_t cookie = 0;
  int64_t ofport = 0;
  uint16_t conntrack_zone = 0;
  Ipv4 address = 0;
  std::string mac;
};

// The bridge-wide flows (cookie kBaseCookie): the drops at the end of each table, tagged frames
// from the uplink, conntrack-invalid packets.
std::vector<std::string> BaseFlows();

// Every flow of one workload (all with spec.cookie).
std::vector<std::string> WorkloadFlows(const UplinkSpec& uplink, const WorkloadFlowSpec& spec,
                                       const Policy& policy);

// How many flows WorkloadFlows returns for `policy`, without building them.
size_t CountWorkloadFlows(const Policy& policy);

// The match of a delete that removes exactly one workload's flows: "cookie=0x.../-1".
std::string MatchCookie(uint64_t cookie);

}  // namespace strongroom::netd
