// What counts as a veth the node's own stack could handle frames of (host_isolation.h).
#include "gtest/gtest.h"
#include "services/netd/host_isolation.h"

namespace strongroom::netd {
namespace {

VethFacts Guarded() {
  VethFacts facts;
  facts.group = 21330;
  facts.noarp = true;
  facts.has_ipv4 = true;
  facts.ipv4_forwarding = kVethIpv4Forwarding;
  facts.ipv4_rp_filter = kVethRpFilter;
  facts.ipv4_arp_ignore = kVethArpIgnore;
  facts.has_ipv6 = true;
  facts.ipv6_disabled = true;
  return facts;
}

TEST(NetdHostIsolationTest, AGuardedVethIsNotExposed) {
  EXPECT_EQ(VethExposure(Guarded(), 21330), "");
  VethFacts no_ipv6 = Guarded();  // a kernel without IPv6 has nothing to turn off
  no_ipv6.has_ipv6 = false;
  no_ipv6.ipv6_disabled = false;
  EXPECT_EQ(VethExposure(no_ipv6, 21330), "");
}

TEST(NetdHostIsolationTest, EveryMissingGuardIsNamed) {
  VethFacts facts = Guarded();
  facts.group = 0;
  facts.noarp = false;
  facts.ipv4_forwarding = 1;
  facts.ipv4_rp_filter = 2;
  facts.ipv4_arp_ignore = 0;
  facts.ipv6_disabled = false;
  facts.addresses = 2;
  EXPECT_EQ(VethExposure(facts, 21330),
            "its interface group is 0, not netd's 21330, ARP is on, IPv4 forwarding is on, rp_filter is 2, not 1, "
            "arp_ignore is 0, not 8, IPv6 is on, it has 2 addresses");
  VethFacts one = Guarded();
  one.addresses = 1;
  EXPECT_EQ(VethExposure(one, 21330), "it has 1 address");
}

}  // namespace
}  // namespace strongroom::netd
