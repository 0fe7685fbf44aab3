#include "services/netd/flow_plan.h"

#include <iterator>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace strongroom::netd {
namespace {

constexpr int kTableClassify = 0;
constexpr int kTableFromWorkload = 1;
constexpr int kTableToWorkload = 2;

constexpr int kPriorityTagged = 300;    // tagged frames, before any allow
constexpr int kPriorityInvalid = 1000;  // drop conntrack-invalid packets before any allow
constexpr int kPriorityAllow = 100;
constexpr int kPriorityRelated = 90;  // ICMP errors for a tracked connection
constexpr int kPriorityMiss = 0;

// The per-workload drop flows. Each reason has its own (table, priority), so a flow-statistics
// reply tells the reason from those two numbers alone. Below every allow flow of its table.
struct DropFlow {
  DropReason reason;
  int table;
  int priority;
};
constexpr DropFlow kDropFlows[] = {
    {DropReason::kVlanTagged, kTableClassify, kPriorityTagged},
    {DropReason::kArpNotAllowed, kTableClassify, 52},
    {DropReason::kSpoofed, kTableClassify, 51},
    {DropReason::kIpv6, kTableClassify, 50},
    {DropReason::kOtherProtocol, kTableClassify, 10},
    {DropReason::kEgressInvalid, kTableFromWorkload, kPriorityInvalid + 1},
    {DropReason::kEgressNotAllowed, kTableFromWorkload, 1},
    {DropReason::kIngressInvalid, kTableToWorkload, kPriorityInvalid + 1},
    {DropReason::kIngressNotAllowed, kTableToWorkload, 1},
};

// The ICMP errors a workload may receive (conntrack relates them to one of its connections):
// destination unreachable (including "fragmentation needed", which path MTU discovery needs),
// time exceeded, parameter problem.
constexpr int kDeliveredIcmpErrors[] = {3, 11, 12};

// Flows per rule and port mask: egress has new + established out (table 1) and replies in
// (table 2); ingress has new + established in (table 2) and replies out (table 1).
constexpr size_t kFlowsPerMask = 3;
// Table 0: workload IPv4, three ARP shapes out, uplink IPv4, two ARP shapes in. Table 2: the
// delivered ICMP errors. Plus the drop flows.
constexpr size_t kFixedFlowsPerWorkload = 7 + std::size(kDeliveredIcmpErrors) + std::size(kDropFlows);

constexpr char kUntagged[] = "vlan_tci=0x0000";
constexpr char kTagged[] = "vlan_tci=0x1000/0x1000";
constexpr char kBroadcast[] = "ff:ff:ff:ff:ff:ff";
constexpr char kAnyUnicast[] = "00:00:00:00:00:00/01:00:00:00:00:00";

std::string Hex(uint64_t value) { return absl::StrFormat("0x%x", value); }

std::string PortMatch(absl::string_view field, const PortMask& m) {
  if (m.mask == 0xffff) return absl::StrCat(field, "=", m.value);
  return absl::StrFormat("%s=0x%x/0x%x", field, m.value, m.mask);
}

}  // namespace

absl::string_view DropReasonName(DropReason reason) {
  switch (reason) {
    case DropReason::kVlanTagged:
      return "vlan_tagged";
    case DropReason::kArpNotAllowed:
      return "arp_not_allowed";
    case DropReason::kSpoofed:
      return "spoofed";
    case DropReason::kIpv6:
      return "ipv6";
    case DropReason::kOtherProtocol:
      return "other_protocol";
    case DropReason::kEgressNotAllowed:
      return "egress_not_allowed";
    case DropReason::kEgressInvalid:
      return "egress_invalid";
    case DropReason::kIngressNotAllowed:
      return "ingress_not_allowed";
    case DropReason::kIngressInvalid:
      return "ingress_invalid";
  }
  return "unknown";
}

std::optional<DropReason> DropReasonOfFlow(int table, int priority) {
  for (const DropFlow& drop : kDropFlows) {
    if (drop.table == table && drop.priority == priority) return drop.reason;
  }
  return std::nullopt;
}

uint64_t CookieForGeneration(uint64_t generation) { return kCookieTag | (generation & kMaxGeneration); }

std::vector<PortMask> PortRangeMasks(uint16_t first, uint16_t last) {
  std::vector<PortMask> masks;
  uint32_t low = first;
  const uint32_t high = last;
  while (low <= high) {
    // The largest aligned block starting at `low` that does not pass `high`.
    uint32_t size = low == 0 ? 0x10000 : (low & -low);
    while (low + size - 1 > high) size >>= 1;
    masks.push_back({static_cast<uint16_t>(low), static_cast<uint16_t>(0x10000 - size)});
    low += size;
  }
  return masks;
}

std::string MatchCookie(uint64_t cookie) { return absl::StrCat("cookie=", Hex(cookie), "/-1"); }

std::vector<std::string> BaseFlows() {
  const std::string cookie = absl::StrCat("cookie=", Hex(kBaseCookie));
  std::vector<std::string> flows;
  for (int table : {kTableClassify, kTableFromWorkload, kTableToWorkload}) {
    flows.push_back(absl::StrCat(cookie, ",table=", table, ",priority=", kPriorityMiss, ",actions=drop"));
  }
  // Tagged frames from anywhere (a workload's own are counted by its drop flow, above this one).
  flows.push_back(absl::StrCat(cookie, ",table=", kTableClassify, ",priority=", kPriorityTagged - 1, ",",
                               kTagged, ",actions=drop"));
  for (int table : {kTableFromWorkload, kTableToWorkload}) {
    flows.push_back(absl::StrCat(cookie, ",table=", table, ",priority=", kPriorityInvalid,
                                 ",ct_state=+inv+trk,actions=drop"));
  }
  return flows;
}

size_t CountWorkloadFlows(const Policy& policy) {
  size_t flows = kFixedFlowsPerWorkload;
  for (const std::vector<Rule>* rules : {&policy.egress, &policy.ingress}) {
    for (const Rule& rule : *rules)
      flows += kFlowsPerMask * PortRangeMasks(rule.port_first, rule.port_last).size();
  }
  return flows;
}

std::vector<std::string> WorkloadFlows(const UplinkSpec& uplink, const WorkloadFlowSpec& spec,
                                       const Policy& policy) {
  const std::string ip = FormatIpv4(spec.address);
  const std::string gateway = FormatIpv4(uplink.gateway);
  const std::string head = absl::StrCat("cookie=", Hex(spec.cookie), ",table=");
  const std::string workload_port = absl::StrCat(spec.ofport);
  const std::string uplink_port = absl::StrCat(uplink.ofport);
  const std::string zone = absl::StrCat(spec.conntrack_zone);
  const std::string to_uplink = absl::StrCat("output:", uplink_port);
  const std::string to_workload = absl::StrCat("output:", workload_port);
  const std::string commit = absl::StrCat("ct(commit,zone=", zone, "),");
  // Where a workload's unicast frames may be addressed.
  const std::string next_hop = uplink.gateway_mac.empty() ? kAnyUnicast : uplink.gateway_mac;

  std::vector<std::string> flows;
  flows.reserve(CountWorkloadFlows(policy));
  auto add = [&](int table, int priority, absl::string_view match, absl::string_view actions) {
    flows.push_back(absl::StrCat(head, table, ",priority=", priority, ",", match, ",actions=", actions));
  };

  // Table 0: untagged frames only, anti-spoofing (MAC and IP pinned), dispatch into conntrack.
  const std::string from_workload_untagged =
      absl::StrCat("in_port=", workload_port, ",", kUntagged, ",dl_src=", spec.mac);
  add(kTableClassify, kPriorityAllow,
      absl::StrCat(from_workload_untagged, ",dl_dst=", next_hop, ",ip,nw_src=", ip),
      absl::StrCat("ct(zone=", zone, ",table=", kTableFromWorkload, ")"));
  // ARP: who-has the gateway (broadcast, or unicast when refreshing its entry) and is-at replies
  // to the gateway, always with the workload's own sender addresses. Cut to the ARP message, so
  // no byte after it leaves.
  const std::string arp_out = absl::StrCat("output(port=", uplink_port, ",max_len=", kArpFrameBytes, ")");
  const std::string arp_sender = absl::StrCat("arp_spa=", ip, ",arp_sha=", spec.mac, ",arp_tpa=", gateway);
  for (const std::string& destination : {std::string(kBroadcast), next_hop}) {
    add(kTableClassify, kPriorityAllow,
        absl::StrCat(from_workload_untagged, ",dl_dst=", destination, ",arp,arp_op=1,", arp_sender,
                     ",arp_tha=00:00:00:00:00:00"),
        arp_out);
  }
  add(kTableClassify, kPriorityAllow,
      absl::StrCat(from_workload_untagged, ",dl_dst=", next_hop, ",arp,arp_op=2,", arp_sender,
                   uplink.gateway_mac.empty() ? "" : absl::StrCat(",arp_tha=", uplink.gateway_mac)),
      arp_out);
  const std::string from_uplink_untagged = absl::StrCat("in_port=", uplink_port, ",", kUntagged);
  add(kTableClassify, kPriorityAllow, absl::StrCat(from_uplink_untagged, ",ip,nw_dst=", ip),
      absl::StrCat("ct(zone=", zone, ",table=", kTableToWorkload, ")"));
  add(kTableClassify, kPriorityAllow, absl::StrCat(from_uplink_untagged, ",arp,arp_op=1,arp_tpa=", ip),
      to_workload);
  add(kTableClassify, kPriorityAllow,
      absl::StrCat(from_uplink_untagged, ",arp,arp_op=2,arp_tpa=", ip, ",arp_tha=", spec.mac), to_workload);

  // Protocol keywords come before the fields they are a prerequisite of, as ovs-ofctl prints them.
  auto from_workload = [&](absl::string_view protocol) {
    return absl::StrCat("in_port=", workload_port, ",", protocol);
  };
  auto from_uplink = [&](absl::string_view protocol) {
    return absl::StrCat("in_port=", uplink_port, ",", protocol, ",nw_dst=", ip);
  };
  for (const Rule& rule : policy.egress) {
    const std::string peer = rule.peer.ToString();
    const absl::string_view protocol = ProtocolName(rule.protocol);
    for (const PortMask& mask : PortRangeMasks(rule.port_first, rule.port_last)) {
      const std::string out =
          absl::StrCat(from_workload(protocol), ",nw_dst=", peer, ",", PortMatch("tp_dst", mask));
      add(kTableFromWorkload, kPriorityAllow, absl::StrCat("ct_state=+new+trk,", out), commit + to_uplink);
      add(kTableFromWorkload, kPriorityAllow, absl::StrCat("ct_state=+est-rpl+trk,", out), to_uplink);
      add(kTableToWorkload, kPriorityAllow,
          absl::StrCat("ct_state=+est+rpl+trk,", from_uplink(protocol), ",nw_src=", peer, ",",
                       PortMatch("tp_src", mask)),
          to_workload);
    }
  }
  for (const Rule& rule : policy.ingress) {
    const std::string peer = rule.peer.ToString();
    const absl::string_view protocol = ProtocolName(rule.protocol);
    for (const PortMask& mask : PortRangeMasks(rule.port_first, rule.port_last)) {
      const std::string in =
          absl::StrCat(from_uplink(protocol), ",nw_src=", peer, ",", PortMatch("tp_dst", mask));
      add(kTableToWorkload, kPriorityAllow, absl::StrCat("ct_state=+new+trk,", in), commit + to_workload);
      add(kTableToWorkload, kPriorityAllow, absl::StrCat("ct_state=+est-rpl+trk,", in), to_workload);
      add(kTableFromWorkload, kPriorityAllow,
          absl::StrCat("ct_state=+est+rpl+trk,", from_workload(protocol), ",nw_dst=", peer, ",",
                       PortMatch("tp_src", mask)),
          to_uplink);
    }
  }
  for (int type : kDeliveredIcmpErrors) {
    add(kTableToWorkload, kPriorityRelated,
        absl::StrCat("ct_state=+rel+trk,", from_uplink("icmp"), ",icmp_type=", type),
        absl::StrCat("output(port=", workload_port, ",max_len=", kIcmpErrorFrameBytes, ")"));
  }

  // Everything else this workload sends, or is sent, is dropped here and counted by reason.
  for (const DropFlow& drop : kDropFlows) {
    std::string match;
    switch (drop.reason) {
      case DropReason::kVlanTagged:
        match = absl::StrCat("in_port=", workload_port, ",", kTagged);
        break;
      case DropReason::kArpNotAllowed:
        match = from_workload("arp");
        break;
      case DropReason::kSpoofed:
        match = from_workload("ip");
        break;
      case DropReason::kIpv6:
        match = from_workload("ipv6");
        break;
      case DropReason::kOtherProtocol:
        match = absl::StrCat("in_port=", workload_port);
        break;
      case DropReason::kEgressInvalid:
        match = absl::StrCat("ct_state=+inv+trk,", from_workload("ip"));
        break;
      case DropReason::kEgressNotAllowed:
        match = from_workload("ip");
        break;
      case DropReason::kIngressInvalid:
        match = absl::StrCat("ct_state=+inv+trk,", from_uplink("ip"));
        break;
      case DropReason::kIngressNotAllowed:
        match = from_uplink("ip");
        break;
    }
    add(drop.table, drop.priority, match, "drop");
  }
  return flows;
}

}  // namespace strongroom::netd
