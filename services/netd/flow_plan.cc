#include "services/netd/flow_plan.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace strongroom::netd {
namespace {

constexpr int kTableClassify = 0;
constexpr int kTableFromWorkload = 1;
constexpr int kTableToWorkload = 2;

constexpr int kPriorityInvalid = 1000;  // drop conntrack-invalid packets before any allow
constexpr int kPriorityAllow = 100;
constexpr int kPriorityRelated = 90;  // ICMP errors for a tracked connection
constexpr int kPriorityMiss = 0;

// Flows per rule and port mask: egress has new + established out (table 1) and replies in
// (table 2); ingress has new + established in (table 2) and replies out (table 1).
constexpr size_t kFlowsPerMask = 3;
// Table 0: workload IP, workload ARP, uplink IP, uplink ARP. Tables 1 and 2: related ICMP.
constexpr size_t kFixedFlowsPerWorkload = 6;

std::string Hex(uint64_t value) { return absl::StrFormat("0x%x", value); }

std::string PortMatch(absl::string_view field, const PortMask& m) {
  if (m.mask == 0xffff) return absl::StrCat(field, "=", m.value);
  return absl::StrFormat("%s=0x%x/0x%x", field, m.value, m.mask);
}

}  // namespace

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

  std::vector<std::string> flows;
  flows.reserve(CountWorkloadFlows(policy));
  auto add = [&](int table, int priority, absl::string_view match, absl::string_view actions) {
    flows.push_back(absl::StrCat(head, table, ",priority=", priority, ",", match, ",actions=", actions));
  };

  // Table 0: anti-spoofing (MAC and IP pinned) and dispatch into conntrack.
  add(kTableClassify, kPriorityAllow,
      absl::StrCat("in_port=", workload_port, ",dl_src=", spec.mac, ",ip,nw_src=", ip),
      absl::StrCat("ct(zone=", zone, ",table=", kTableFromWorkload, ")"));
  add(kTableClassify, kPriorityAllow,
      absl::StrCat("in_port=", workload_port, ",dl_src=", spec.mac, ",arp,arp_spa=", ip,
                   ",arp_sha=", spec.mac, ",arp_tpa=", gateway),
      to_uplink);
  add(kTableClassify, kPriorityAllow, absl::StrCat("in_port=", uplink_port, ",ip,nw_dst=", ip),
      absl::StrCat("ct(zone=", zone, ",table=", kTableToWorkload, ")"));
  add(kTableClassify, kPriorityAllow, absl::StrCat("in_port=", uplink_port, ",arp,arp_tpa=", ip),
      to_workload);

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
  // ICMP errors (unreachable, fragmentation needed) that conntrack ties to a tracked connection.
  add(kTableFromWorkload, kPriorityRelated, absl::StrCat("ct_state=+rel+trk,", from_workload("icmp")),
      to_uplink);
  add(kTableToWorkload, kPriorityRelated, absl::StrCat("ct_state=+rel+trk,", from_uplink("icmp")),
      to_workload);
  return flows;
}

}  // namespace strongroom::netd
