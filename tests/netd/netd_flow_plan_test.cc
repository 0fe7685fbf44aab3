// The flow table's structure: every flow parses with OVS's own parser, and the security
// properties hold by construction (checked on the generated text, independent of packets).
#include <map>
#include <optional>
#include <regex>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "services/netd/flow_plan.h"
#include "services/netd/ovs/ovs_clients.h"

namespace strongroom::netd {
namespace {

constexpr int64_t kUplink = 1;

Policy SamplePolicy() {
  Policy policy;
  policy.egress.push_back({*ParseCidr("192.0.2.10/32", false), Protocol::kTcp, 8080, 8080, ""});
  policy.egress.push_back({*ParseCidr("198.51.100.0/24", false), Protocol::kUdp, 1000, 1999, ""});
  policy.ingress.push_back({*ParseCidr("192.0.2.20/32", false), Protocol::kTcp, 6818, 6818, ""});
  return policy;
}

constexpr char kGateway[] = "203.0.113.1";
constexpr char kGatewayMac[] = "02:00:00:00:00:01";

std::vector<std::string> Flows(int64_t ofport, const char* ip, uint64_t generation, const Policy& policy,
                               const std::string& gateway_mac = "") {
  const Ipv4 address = *ParseIpv4(ip);
  return WorkloadFlows(
      {kUplink, *ParseIpv4(kGateway), gateway_mac},
      {CookieForGeneration(generation), ofport, static_cast<uint16_t>(ofport), address, MacForIpv4(address)},
      policy);
}

// The value of `field=` in a flow's match (before "actions="), or "".
std::string Field(const std::string& flow, const std::string& field) {
  const std::string match = flow.substr(0, flow.find("actions="));
  for (absl::string_view part : absl::StrSplit(match, ',')) {
    if (absl::StartsWith(part, field + "=")) return std::string(part.substr(field.size() + 1));
  }
  return "";
}

std::string Actions(const std::string& flow) { return flow.substr(flow.find("actions=") + 8); }

// Where a flow's actions send the packet ("" if nowhere), with its max_len if it has one.
struct Output {
  std::string port;
  int max_len = 0;
};
std::optional<Output> OutputOf(const std::string& flow) {
  std::smatch m;
  const std::string actions = Actions(flow);
  static const std::regex plain("output:(\\d+)");
  static const std::regex truncated("output\\(port=(\\d+),max_len=(\\d+)\\)");
  if (std::regex_search(actions, m, truncated)) return Output{m[1], std::stoi(m[2])};
  if (std::regex_search(actions, m, plain)) return Output{m[1], 0};
  return std::nullopt;
}

bool Contains(const std::string& flow, absl::string_view keyword) {
  const std::string match = flow.substr(0, flow.find("actions="));
  for (absl::string_view part : absl::StrSplit(match, ',')) {
    if (part == keyword) return true;
  }
  return false;
}

TEST(NetdFlowPlanTest, PortRangesBecomeExactMaskCovers) {
  for (auto [first, last] : std::vector<std::pair<int, int>>{{1, 65535},
                                                             {80, 80},
                                                             {1000, 1999},
                                                             {1024, 2047},
                                                             {6000, 6010},
                                                             {65535, 65535},
                                                             {1, 1},
                                                             {3, 1030}}) {
    std::vector<PortMask> masks = PortRangeMasks(static_cast<uint16_t>(first), static_cast<uint16_t>(last));
    EXPECT_LE(masks.size(), 32u);
    for (int port = 0; port <= 65535; ++port) {
      int covering = 0;
      for (const PortMask& m : masks) covering += (port & m.mask) == m.value;
      ASSERT_EQ(covering, (port >= first && port <= last) ? 1 : 0)
          << first << "-" << last << " port " << port;
    }
  }
  EXPECT_EQ(PortRangeMasks(1, 65535).size(), 16u);
  EXPECT_EQ(PortRangeMasks(1024, 2047).size(), 1u);
}

TEST(NetdFlowPlanTest, EveryFlowParsesWithOvsOwnParser) {
  std::vector<std::string> flows = BaseFlows();
  for (std::string& flow : Flows(7, "203.0.113.10", 5, SamplePolicy())) flows.push_back(std::move(flow));
  for (const std::string& flow : flows) {
    absl::Status parsed = ParseFlowMod({OpenFlowSwitch::FlowMod::Command::kAdd, flow});
    EXPECT_TRUE(parsed.ok()) << flow << ": " << parsed;
  }
  EXPECT_TRUE(
      ParseFlowMod({OpenFlowSwitch::FlowMod::Command::kDelete, MatchCookie(CookieForGeneration(5))}).ok());
  EXPECT_TRUE(ParseFlowMod({OpenFlowSwitch::FlowMod::Command::kDelete, ""}).ok());
  EXPECT_FALSE(
      ParseFlowMod({OpenFlowSwitch::FlowMod::Command::kAdd, "table=0,ip,actions=output:nowhere"}).ok());
}

TEST(NetdFlowPlanTest, CountMatchesAndEveryFlowCarriesTheWorkloadCookie) {
  const Policy policy = SamplePolicy();
  std::vector<std::string> flows = Flows(7, "203.0.113.10", 5, policy);
  EXPECT_EQ(flows.size(), CountWorkloadFlows(policy));
  const std::string cookie = absl::StrCat("cookie=0x", absl::Hex(CookieForGeneration(5)), ",");
  for (const std::string& flow : flows) EXPECT_TRUE(absl::StartsWith(flow, cookie)) << flow;
  EXPECT_EQ(CookieForGeneration(5) & kCookieTagMask, kCookieTag);
  for (const std::string& flow : BaseFlows()) {
    EXPECT_TRUE(absl::StartsWith(flow, absl::StrCat("cookie=0x", absl::Hex(kBaseCookie), ","))) << flow;
  }
}

TEST(NetdFlowPlanTest, NoPathBetweenWorkloadsAndEverythingIsPinned) {
  // Two workloads on the same bridge, as the switch would hold them.
  std::vector<std::string> flows = Flows(7, "203.0.113.10", 5, SamplePolicy());
  for (std::string& flow : Flows(8, "203.0.113.11", 6, SamplePolicy())) flows.push_back(std::move(flow));
  const std::set<std::string> workload_ports = {"7", "8"};
  const std::map<std::string, std::string> ip_of = {{"7", "203.0.113.10"}, {"8", "203.0.113.11"}};
  for (const std::string& flow : flows) {
    const std::string in_port = Field(flow, "in_port");
    const std::string actions = Actions(flow);
    ASSERT_FALSE(in_port.empty()) << "every flow is per in_port: " << flow;
    for (const char* forbidden : {"NORMAL", "FLOOD", "ALL", "IN_PORT", "LOCAL", "CONTROLLER", "mod_"}) {
      EXPECT_FALSE(absl::StrContains(actions, forbidden)) << flow;
    }
    if (std::optional<Output> output = OutputOf(flow)) {
      const std::string to = output->port;
      if (workload_ports.count(in_port)) {
        // From a workload: only ever to the uplink.
        EXPECT_EQ(to, absl::StrCat(kUplink)) << flow;
      } else {
        // From the uplink: only to the workload whose address the flow matches.
        ASSERT_TRUE(workload_ports.count(to)) << flow;
        const std::string dst =
            Field(flow, "nw_dst").empty() ? Field(flow, "arp_tpa") : Field(flow, "nw_dst");
        EXPECT_EQ(dst, ip_of.at(to)) << flow;
      }
    }
    if (workload_ports.count(in_port) && Field(flow, "table") == "0" && Actions(flow) != "drop") {
      // Anti-spoofing: table 0 admits a workload's packets only with its own MAC and IP.
      EXPECT_EQ(Field(flow, "dl_src"), MacForIpv4(*ParseIpv4(ip_of.at(in_port)))) << flow;
      EXPECT_EQ(Field(flow, "nw_src").empty() ? Field(flow, "arp_spa") : Field(flow, "nw_src"),
                ip_of.at(in_port))
          << flow;
    }
    if (Field(flow, "table") != "0" && Actions(flow) != "drop") {
      // Tables 1 and 2 pass only tracked packets, and never invalid ones.
      const std::string state = Field(flow, "ct_state");
      EXPECT_TRUE(absl::StrContains(state, "+trk")) << flow;
      EXPECT_FALSE(absl::StrContains(state, "+inv")) << flow;
    }
    if (absl::StrContains(actions, "ct(commit")) {
      EXPECT_TRUE(absl::StrContains(Field(flow, "ct_state"), "+new"))
          << "only new connections are committed: " << flow;
    }
  }
}

TEST(NetdFlowPlanTest, BaseFlowsDropEverythingByDefault) {
  std::vector<std::string> base = BaseFlows();
  EXPECT_EQ(base.size(), 6u);
  for (const std::string& flow : base) EXPECT_EQ(Actions(flow), "drop") << flow;
}

TEST(NetdFlowPlanTest, OnlyUntaggedFramesEnterTheAllowFlows) {
  for (const std::string& gateway_mac : {std::string(), std::string(kGatewayMac)}) {
    for (const std::string& flow : Flows(7, "203.0.113.10", 5, SamplePolicy(), gateway_mac)) {
      if (Field(flow, "table") != "0" || Actions(flow) == "drop") continue;
      // Every table-0 flow that forwards or hands to conntrack (the only way into tables 1 and 2)
      // requires the frame to carry no 802.1Q/802.1ad header at all.
      EXPECT_EQ(Field(flow, "vlan_tci"), "0x0000") << flow;
    }
  }
}

TEST(NetdFlowPlanTest, ArpLeavesOnlyInItsExactShapeAndCutToItsLength) {
  for (const std::string& gateway_mac : {std::string(), std::string(kGatewayMac)}) {
    size_t arp_out = 0;
    for (const std::string& flow : Flows(7, "203.0.113.10", 5, SamplePolicy(), gateway_mac)) {
      if (Field(flow, "in_port") != "7" || !Contains(flow, "arp") || Actions(flow) == "drop") continue;
      ++arp_out;
      const std::string op = Field(flow, "arp_op");
      EXPECT_TRUE(op == "1" || op == "2") << flow;
      EXPECT_EQ(Field(flow, "arp_tpa"), kGateway) << flow;
      EXPECT_EQ(Field(flow, "arp_spa"), "203.0.113.10") << flow;
      EXPECT_EQ(Field(flow, "arp_sha"), MacForIpv4(*ParseIpv4("203.0.113.10"))) << flow;
      if (op == "1") {
        EXPECT_EQ(Field(flow, "arp_tha"), "00:00:00:00:00:00") << flow;
      } else if (!gateway_mac.empty()) {
        EXPECT_EQ(Field(flow, "arp_tha"), gateway_mac) << flow;
      }
      const std::string dst = Field(flow, "dl_dst");
      const std::string unicast = gateway_mac.empty() ? "00:00:00:00:00:00/01:00:00:00:00:00" : gateway_mac;
      EXPECT_TRUE((dst == "ff:ff:ff:ff:ff:ff" && op == "1") || dst == unicast) << flow;
      std::optional<Output> output = OutputOf(flow);
      ASSERT_TRUE(output) << flow;
      EXPECT_EQ(output->port, "1") << flow;
      EXPECT_EQ(output->max_len, kArpFrameBytes) << flow;
    }
    EXPECT_EQ(arp_out, 3u);
  }
}

TEST(NetdFlowPlanTest, WorkloadFramesGoOnlyToTheGatewayMacWhenItIsKnown) {
  for (const std::string& flow : Flows(7, "203.0.113.10", 5, SamplePolicy(), kGatewayMac)) {
    if (Field(flow, "table") != "0" || Field(flow, "in_port") != "7" || Actions(flow) == "drop") continue;
    const std::string dst = Field(flow, "dl_dst");
    EXPECT_TRUE(dst == kGatewayMac || (dst == "ff:ff:ff:ff:ff:ff" && Field(flow, "arp_op") == "1")) << flow;
  }
}

TEST(NetdFlowPlanTest, AWorkloadSendsNoIcmpErrorsAndReceivesOnlyBoundedOnes) {
  for (const std::string& flow : Flows(7, "203.0.113.10", 5, SamplePolicy())) {
    if (!absl::StrContains(Field(flow, "ct_state"), "+rel")) continue;
    // Related traffic flows only towards the workload...
    EXPECT_EQ(Field(flow, "in_port"), "1") << flow;
    EXPECT_TRUE(Contains(flow, "icmp")) << flow;
    const std::string type = Field(flow, "icmp_type");
    EXPECT_TRUE(type == "3" || type == "11" || type == "12") << flow;
    std::optional<Output> output = OutputOf(flow);
    ASSERT_TRUE(output) << flow;
    EXPECT_EQ(output->max_len, kIcmpErrorFrameBytes) << flow;
  }
}

TEST(NetdFlowPlanTest, EveryDropReasonHasExactlyOneFlowPerWorkload) {
  std::map<DropReason, int> seen;
  for (const std::string& flow : Flows(7, "203.0.113.10", 5, SamplePolicy())) {
    const int table = std::stoi(Field(flow, "table"));
    const int priority = std::stoi(Field(flow, "priority"));
    std::optional<DropReason> reason = DropReasonOfFlow(table, priority);
    if (Actions(flow) == "drop") {
      ASSERT_TRUE(reason) << "a drop flow without a reason: " << flow;
      ++seen[*reason];
    } else {
      EXPECT_FALSE(reason) << "a forwarding flow counted as a drop: " << flow;
    }
  }
  for (DropReason reason : kAllDropReasons) EXPECT_EQ(seen[reason], 1) << DropReasonName(reason);
  // The base flows are not any workload's.
  for (const std::string& flow : BaseFlows()) {
    EXPECT_FALSE(DropReasonOfFlow(std::stoi(Field(flow, "table")), std::stoi(Field(flow, "priority")))) << flow;
  }
}

}  // namespace
}  // namespace strongroom::netd
