#include "gtest/gtest.h"
#include "services/netd/ipv4.h"

namespace strongroom::netd {
namespace {

TEST(NetdIpv4Test, ParsesDottedQuadsStrictly) {
  EXPECT_EQ(*ParseIpv4("192.0.2.10"), 0xc000020au);
  EXPECT_EQ(*ParseIpv4("0.0.0.0"), 0u);
  EXPECT_EQ(*ParseIpv4("255.255.255.255"), 0xffffffffu);
  for (const char* bad : {"", "1.2.3", "1.2.3.4.5", "256.1.1.1", "01.2.3.4", "1.2.3.-4", " 1.2.3.4",
                          "1.2.3.4 ", "1..3.4", "a.b.c.d", "1.2.3.4/32", "+1.2.3.4", "1.2.3.0x4"}) {
    EXPECT_FALSE(ParseIpv4(bad).ok()) << bad;
  }
  EXPECT_EQ(FormatIpv4(0xcb00710au), "203.0.113.10");
}

TEST(NetdIpv4Test, ParsesCidrsAndRefusesHostBits) {
  absl::StatusOr<Cidr> cidr = ParseCidr("198.51.100.0/24", false);
  ASSERT_TRUE(cidr.ok());
  EXPECT_EQ(cidr->ToString(), "198.51.100.0/24");
  EXPECT_EQ(FormatIpv4(cidr->Last()), "198.51.100.255");
  EXPECT_TRUE(cidr->Contains(*ParseIpv4("198.51.100.77")));
  EXPECT_FALSE(cidr->Contains(*ParseIpv4("198.51.101.1")));

  absl::StatusOr<Cidr> host_bits = ParseCidr("198.51.100.1/24", false);
  ASSERT_FALSE(host_bits.ok());
  EXPECT_NE(host_bits.status().message().find("did you mean 198.51.100.0/24"), std::string::npos);

  EXPECT_EQ(ParseCidr("192.0.2.10", true)->ToString(), "192.0.2.10/32");
  EXPECT_FALSE(ParseCidr("192.0.2.10", false).ok());
  EXPECT_EQ(ParseCidr("0.0.0.0/0", false)->Mask(), 0u);
  for (const char* bad :
       {"1.2.3.0/33", "1.2.3.0/", "1.2.3.0/024", "1.2.3.0/-1", "1.2.3/24", "/24", "1.2.3.0/2x"}) {
    EXPECT_FALSE(ParseCidr(bad, true).ok()) << bad;
  }
}

TEST(NetdIpv4Test, OverlapIsSymmetric) {
  const Cidr a = *ParseCidr("10.0.0.0/8", false);
  const Cidr b = *ParseCidr("10.64.0.0/16", false);
  const Cidr c = *ParseCidr("11.0.0.0/8", false);
  EXPECT_TRUE(a.Overlaps(b));
  EXPECT_TRUE(b.Overlaps(a));
  EXPECT_FALSE(a.Overlaps(c));
  EXPECT_FALSE(c.Overlaps(b));
}

TEST(NetdIpv4Test, MacIsLocallyAdministeredAndDerivedFromTheAddress) {
  EXPECT_EQ(MacForIpv4(*ParseIpv4("203.0.113.10")), "02:53:cb:00:71:0a");
  EXPECT_NE(MacForIpv4(*ParseIpv4("203.0.113.10")), MacForIpv4(*ParseIpv4("203.0.113.11")));
}

}  // namespace
}  // namespace strongroom::netd
