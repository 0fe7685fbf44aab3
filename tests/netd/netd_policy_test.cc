#include "gtest/gtest.h"
#include "services/netd/policy.h"

namespace strongroom::netd {
namespace {

PolicyLimits Limits() {
  PolicyLimits limits;
  limits.workload_subnet = *ParseCidr("203.0.113.0/24", false);
  return limits;
}

RuleInput Tcp(const std::string& cidr, uint32_t port, uint32_t end = 0) { return {cidr, 1, port, end, ""}; }

// The error of an egress list holding just `rule`.
std::string EgressError(const RuleInput& rule, const PolicyLimits& limits = Limits()) {
  absl::StatusOr<Policy> policy = ValidatePolicy({rule}, {}, limits);
  EXPECT_FALSE(policy.ok());
  EXPECT_EQ(policy.status().code(), absl::StatusCode::kInvalidArgument);
  return std::string(policy.status().message());
}

TEST(NetdPolicyTest, NormalisesBareAddressesAndSinglePorts) {
  absl::StatusOr<Policy> policy =
      ValidatePolicy({Tcp("192.0.2.10", 443), {"198.51.100.0/24", 2, 5000, 5010, "licence server"}},
                     {Tcp("192.0.2.20/32", 6818)}, Limits());
  ASSERT_TRUE(policy.ok()) << policy.status();
  ASSERT_EQ(policy->egress.size(), 2u);
  EXPECT_EQ(policy->egress[0].peer.ToString(), "192.0.2.10/32");
  EXPECT_EQ(policy->egress[0].port_first, 443);
  EXPECT_EQ(policy->egress[0].port_last, 443);
  EXPECT_EQ(policy->egress[1].protocol, Protocol::kUdp);
  EXPECT_EQ(policy->egress[1].port_last, 5010);
  EXPECT_EQ(policy->egress[1].description, "licence server");
  EXPECT_EQ(policy->ingress[0].peer.ToString(), "192.0.2.20/32");
  EXPECT_TRUE(ValidatePolicy({}, {}, Limits()).ok());  // empty: nothing allowed at all
}

TEST(NetdPolicyTest, EveryBadFieldIsNamed) {
  EXPECT_EQ(
      EgressError(Tcp("192.0.2.300/32", 80)),
      "egress_allowlist[0].destination_cidr: \"192.0.2.300/32\" is not an IPv4 CIDR (a.b.c.d/n, n 0..32)");
  EXPECT_NE(EgressError(Tcp("192.0.2.1/24", 80)).find("host bits"), std::string::npos);
  EXPECT_NE(EgressError(Tcp("192.0.0.0/8", 80)).find("broader than the allowed minimum /16"),
            std::string::npos);
  EXPECT_NE(EgressError(Tcp("127.0.0.1", 80)).find("loopback"), std::string::npos);
  EXPECT_NE(EgressError(Tcp("169.254.169.254", 80)).find("link-local"), std::string::npos);
  EXPECT_NE(EgressError(Tcp("224.0.0.1", 80)).find("multicast"), std::string::npos);
  EXPECT_NE(EgressError(Tcp("255.255.255.255", 80)).find("broadcast"), std::string::npos);
  EXPECT_NE(EgressError(Tcp("0.0.0.0/16", 80)).find("this network"), std::string::npos);
  EXPECT_NE(EgressError(Tcp("203.0.113.0/25", 80)).find("workload subnet"), std::string::npos);
  EXPECT_EQ(EgressError(Tcp("192.0.2.10", 0)), "egress_allowlist[0].port_start: 0 is not in 1..65535");
  EXPECT_EQ(EgressError(Tcp("192.0.2.10", 70000)),
            "egress_allowlist[0].port_start: 70000 is not in 1..65535");
  EXPECT_EQ(EgressError(Tcp("192.0.2.10", 80, 79)),
            "egress_allowlist[0].port_end: 79 is not in port_start (80)..65535");
  EXPECT_EQ(EgressError(Tcp("192.0.2.10", 80, 65536)),
            "egress_allowlist[0].port_end: 65536 is not in port_start (80)..65535");
  EXPECT_EQ(EgressError({"192.0.2.10", 0, 80, 0, ""}),
            "egress_allowlist[0].protocol: required (PROTOCOL_TCP or PROTOCOL_UDP)");
  EXPECT_NE(EgressError({"192.0.2.10", 9, 80, 0, ""}).find("not a known protocol"), std::string::npos);
  EXPECT_NE(EgressError({"192.0.2.10", 1, 80, 0, std::string(257, 'x')}).find("description"),
            std::string::npos);
  EXPECT_NE(EgressError({"192.0.2.10", 1, 80, 0, "bad \xff utf8"}).find("UTF-8"), std::string::npos);
  EXPECT_NE(EgressError({"192.0.2.10", 1, 80, 0, "overlong \xc0\xaf"}).find("UTF-8"), std::string::npos);
  EXPECT_TRUE(ValidatePolicy({{"192.0.2.10", 1, 80, 0, "ümlaut ✓"}}, {}, Limits()).ok());

  absl::StatusOr<Policy> ingress = ValidatePolicy({}, {Tcp("192.0.2.10", 80), Tcp("nonsense", 80)}, Limits());
  EXPECT_EQ(ingress.status().message(),
            "ingress_allowlist[1].source_cidr: \"nonsense\" is not an IPv4 address or CIDR");
}

TEST(NetdPolicyTest, ConfiguredMinimumPrefixIsHonoured) {
  PolicyLimits limits = Limits();
  limits.min_prefix_length = 8;
  EXPECT_TRUE(ValidatePolicy({Tcp("10.0.0.0/8", 443)}, {}, limits).ok());
}

TEST(NetdPolicyTest, ListAndFlowLimits) {
  std::vector<RuleInput> many(10000, Tcp("192.0.2.10", 443));
  absl::StatusOr<Policy> policy = ValidatePolicy(many, {}, Limits());
  EXPECT_EQ(policy.status().message(), "egress_allowlist: 10000 rules is more than the limit of 1024");
  EXPECT_TRUE(ValidatePolicy(std::vector<RuleInput>(1024, Tcp("192.0.2.10", 443)), {}, Limits()).ok());
  EXPECT_FALSE(ValidatePolicy({}, std::vector<RuleInput>(65, Tcp("192.0.2.10", 22)), Limits()).ok());

  // 1024 rules of the widest range expand far beyond the flow budget.
  absl::StatusOr<Policy> wide =
      ValidatePolicy(std::vector<RuleInput>(1024, Tcp("192.0.2.10", 1, 65535)), {}, Limits());
  EXPECT_EQ(wide.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(wide.status().message().find("OpenFlow flows, more than the limit of 16384"), std::string::npos);
}

}  // namespace
}  // namespace strongroom::netd
