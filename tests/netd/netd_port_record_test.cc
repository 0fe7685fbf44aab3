#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "services/netd/port_record.h"

namespace strongroom::netd {
namespace {

PortRecord Sample() {
  PortRecord record;
  record.workload_id = "wl-17";
  record.port_name = PortNameForWorkload("wl-17");
  record.netns = "/proc/1234/ns/net";
  record.interface_name = "eth0";
  record.address = *ParseIpv4("203.0.113.10");
  record.prefix_length = 24;
  record.gateway = *ParseIpv4("203.0.113.1");
  record.mac = MacForIpv4(record.address);
  record.mtu = 1500;
  record.generation = 42;
  record.owner_label = "project-a/gj-01hf3k";
  record.requested_by = "spiffe://strongroom.test/host-agent/node1";
  record.policy_revision = 3;
  record.policy.egress.push_back({*ParseCidr("192.0.2.10/32", false), Protocol::kTcp, 443, 443,
                                  "licence server; 50% off, ✓ \"quoted\""});
  record.policy.egress.push_back({*ParseCidr("198.51.100.0/24", false), Protocol::kUdp, 5000, 5010, ""});
  record.policy.ingress.push_back(
      {*ParseCidr("192.0.2.20/32", false), Protocol::kTcp, 6818, 6818, "slurmctld"});
  record.created_time = absl::FromUnixMicros(1700000000123456);
  record.updated_time = absl::FromUnixMicros(1700000100000000);
  return record;
}

TEST(NetdPortRecordTest, ATapPortRoundTripsAndOldRecordsAreVeths) {
  PortRecord record = Sample();
  record.tap = true;
  record.netns = "";
  record.interface_name = "";
  ExternalIds ids = EncodePortExternalIds(record);
  EXPECT_EQ(ids.at("strongroom-target"), "tap");
  absl::StatusOr<PortRecord> decoded = DecodePortExternalIds(record.port_name, ids);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_TRUE(decoded->tap);
  EXPECT_EQ(decoded->netns, "");
  // A record written before taps existed has no target: a veth.
  ids = EncodePortExternalIds(Sample());
  EXPECT_EQ(ids.at("strongroom-target"), "veth");
  ids.erase("strongroom-target");
  decoded = DecodePortExternalIds(record.port_name, ids);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_FALSE(decoded->tap);
  ids["strongroom-target"] = "vhost";
  EXPECT_EQ(DecodePortExternalIds(record.port_name, ids).status().code(), absl::StatusCode::kDataLoss);
}

TEST(NetdPortRecordTest, RoundTripsThroughExternalIds) {
  const PortRecord record = Sample();
  const ExternalIds ids = EncodePortExternalIds(record);
  EXPECT_EQ(ids.at("owner"), "strongroom-netd");
  EXPECT_TRUE(IsOwnedByNetd(ids));
  absl::StatusOr<PortRecord> decoded = DecodePortExternalIds(record.port_name, ids);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(decoded->workload_id, record.workload_id);
  EXPECT_EQ(decoded->netns, record.netns);
  EXPECT_EQ(decoded->address, record.address);
  EXPECT_EQ(decoded->prefix_length, 24);
  EXPECT_EQ(decoded->mac, record.mac);
  EXPECT_EQ(decoded->generation, 42u);
  EXPECT_EQ(decoded->Cookie(), record.Cookie());
  EXPECT_EQ(decoded->policy, record.policy);
  EXPECT_EQ(decoded->policy_revision, 3u);
  EXPECT_EQ(decoded->owner_label, record.owner_label);
  EXPECT_EQ(decoded->requested_by, record.requested_by);
  EXPECT_EQ(decoded->created_time, record.created_time);
  EXPECT_EQ(decoded->updated_time, record.updated_time);
  // Operators read these with ovs-vsctl: keep them legible.
  EXPECT_EQ(ids.at("strongroom-ip"), "203.0.113.10/24");
  EXPECT_EQ(ids.at("strongroom-ingress"), "tcp 192.0.2.20/32 6818-6818 slurmctld");
  const ExternalIds iface = EncodeInterfaceExternalIds(record);
  EXPECT_EQ(iface.at("iface-id"), "wl-17");
  EXPECT_EQ(iface.at("attached-mac"), record.mac);
}

TEST(NetdPortRecordTest, DamagedRecordsAreDataLossButKeepTheirAddress) {
  ExternalIds ids = EncodePortExternalIds(Sample());
  ids.erase("strongroom-generation");
  absl::StatusOr<PortRecord> decoded = DecodePortExternalIds("srx", ids);
  EXPECT_EQ(decoded.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(decoded.status().message().find("strongroom-generation is missing"), std::string::npos);
  EXPECT_EQ(FormatIpv4(*RecordedAddress(ids)), "203.0.113.10");

  ids = EncodePortExternalIds(Sample());
  ids["strongroom-egress"] = "tcp 192.0.2.10/32 0-5 x";
  EXPECT_EQ(DecodePortExternalIds("srx", ids).status().code(), absl::StatusCode::kDataLoss);
  ids = EncodePortExternalIds(Sample());
  ids["owner"] = "someone-else";
  EXPECT_FALSE(IsOwnedByNetd(ids));
  EXPECT_FALSE(DecodePortExternalIds("srx", ids).ok());
  EXPECT_FALSE(DecodeRules("tcp 192.0.2.10/32 80-80").ok());
  EXPECT_FALSE(DecodeRules("icmp 192.0.2.10/32 80-80 ").ok());
  EXPECT_FALSE(DecodeRules("tcp 192.0.2.10/32 80-80 %4").ok());
  EXPECT_TRUE(DecodeRules("")->empty());
}

TEST(NetdPortRecordTest, PortNamesAreStableAndFitIfnamsiz) {
  const std::string name = PortNameForWorkload("wl-17");
  EXPECT_EQ(name, PortNameForWorkload("wl-17"));
  EXPECT_NE(name, PortNameForWorkload("wl-18"));
  EXPECT_EQ(name.size(), 14u);
  EXPECT_EQ(name.substr(0, 2), "sr");
  EXPECT_EQ(name.find_first_not_of("0123456789abcdef", 2), std::string::npos);
}

}  // namespace
}  // namespace strongroom::netd
