#include <random>

#include "gtest/gtest.h"
#include "services/netd/address_pool.h"

namespace strongroom::netd {
namespace {

Ipv4 Ip(const char* text) { return *ParseIpv4(text); }

AddressPool Pool(const char* subnet, const char* gateway, std::vector<const char*> reserved = {}) {
  std::vector<AddressRange> ranges;
  for (const char* r : reserved) ranges.push_back(*ParseAddressRange(r));
  absl::StatusOr<AddressPool> pool = AddressPool::Create(*ParseCidr(subnet, false), Ip(gateway), ranges);
  EXPECT_TRUE(pool.ok()) << pool.status();
  return *pool;
}

TEST(NetdAddressPoolTest, HandsOutAddressesRoundRobinSkippingReservedOnes) {
  AddressPool pool = Pool("203.0.113.0/24", "203.0.113.1", {"203.0.113.2-203.0.113.9", "203.0.113.12"});
  EXPECT_EQ(pool.Capacity(), 256u - 2 - 1 - 8 - 1);
  std::set<Ipv4> used;
  EXPECT_EQ(FormatIpv4(*pool.Pick(used)), "203.0.113.10");
  used.insert(Ip("203.0.113.10"));
  EXPECT_EQ(FormatIpv4(*pool.Pick(used, Ip("203.0.113.10"))), "203.0.113.11");
  used.insert(Ip("203.0.113.11"));
  EXPECT_EQ(FormatIpv4(*pool.Pick(used, Ip("203.0.113.11"))), "203.0.113.13");
  // A released address is not handed out again at once: the pool moves on...
  used.erase(Ip("203.0.113.10"));
  EXPECT_EQ(FormatIpv4(*pool.Pick(used, Ip("203.0.113.13"))), "203.0.113.14");
  // ...and wraps around at the end.
  EXPECT_EQ(FormatIpv4(*pool.Pick(used, Ip("203.0.113.254"))), "203.0.113.10");
  EXPECT_EQ(FormatIpv4(*pool.Pick(used, Ip("198.51.100.7"))), "203.0.113.10")
      << "a foreign cursor starts over";
  EXPECT_FALSE(pool.IsAssignable(Ip("203.0.113.0")));
  EXPECT_FALSE(pool.IsAssignable(Ip("203.0.113.1")));
  EXPECT_FALSE(pool.IsAssignable(Ip("203.0.113.5")));
  EXPECT_FALSE(pool.IsAssignable(Ip("203.0.113.255")));
  EXPECT_FALSE(pool.IsAssignable(Ip("198.51.100.10")));
  EXPECT_TRUE(pool.IsAssignable(Ip("203.0.113.254")));
}

TEST(NetdAddressPoolTest, ExhaustionIsResourceExhausted) {
  AddressPool pool = Pool("192.0.2.0/29", "192.0.2.1");  // .2 to .6
  std::set<Ipv4> used;
  for (int i = 0; i < 5; ++i) {
    absl::StatusOr<Ipv4> address = pool.Pick(used);
    ASSERT_TRUE(address.ok());
    used.insert(*address);
  }
  absl::StatusOr<Ipv4> none = pool.Pick(used);
  EXPECT_EQ(none.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(none.status().message().find("exhausted"), std::string::npos);
}

TEST(NetdAddressPoolTest, NeverAssignsAnAddressInUseOrExcluded) {
  AddressPool pool = Pool("198.51.100.0/24", "198.51.100.254", {"198.51.100.100-198.51.100.149"});
  std::mt19937 random(7);
  std::set<Ipv4> used;
  Ipv4 last = 0;
  for (int step = 0; step < 5000; ++step) {
    if (!used.empty() && random() % 3 == 0) {
      auto it = used.begin();
      std::advance(it, random() % used.size());
      used.erase(it);
      continue;
    }
    absl::StatusOr<Ipv4> address = pool.Pick(used, last);
    if (!address.ok()) {
      ASSERT_EQ(used.size(), pool.Capacity());
      continue;
    }
    last = *address;
    ASSERT_TRUE(pool.IsAssignable(*address)) << FormatIpv4(*address);
    ASSERT_TRUE(used.insert(*address).second) << "double assignment of " << FormatIpv4(*address);
  }
}

TEST(NetdAddressPoolTest, RefusesBadGeometry) {
  EXPECT_FALSE(AddressPool::Create(*ParseCidr("10.0.0.0/31", false), Ip("10.0.0.1"), {}).ok());
  EXPECT_FALSE(AddressPool::Create(*ParseCidr("10.0.0.0/24", false), Ip("10.0.1.1"), {}).ok());
  EXPECT_FALSE(AddressPool::Create(*ParseCidr("10.0.0.0/24", false), Ip("10.0.0.0"), {}).ok());
  EXPECT_FALSE(AddressPool::Create(*ParseCidr("10.0.0.0/24", false), Ip("10.0.0.1"),
                                   {*ParseAddressRange("10.0.1.0/24")})
                   .ok());
  // Everything reserved: nothing to hand out is a configuration error, not a runtime surprise.
  EXPECT_FALSE(AddressPool::Create(*ParseCidr("10.0.0.0/29", false), Ip("10.0.0.1"),
                                   {*ParseAddressRange("10.0.0.2-10.0.0.6")})
                   .ok());
  EXPECT_FALSE(ParseAddressRange("10.0.0.9-10.0.0.2").ok());
  EXPECT_FALSE(ParseAddressRange("10.0.0.1-").ok());
  EXPECT_EQ(ParseAddressRange("10.0.0.8/30")->last, Ip("10.0.0.11"));
}

}  // namespace
}  // namespace strongroom::netd
