#include <unistd.h>

#include <cstdio>
#include <fstream>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "services/netd/settings.h"

namespace strongroom::netd {
namespace {

TEST(NetdSettingsTest, DefaultsMakeAWorkingConfiguration) {
  absl::StatusOr<NetdSettings> settings = SettingsFromConfig(v1::NetdConfig());
  ASSERT_TRUE(settings.ok()) << settings.status();
  EXPECT_EQ(settings->bridge, "br-secure");
  EXPECT_EQ(settings->ovsdb_remote, "unix:/var/run/openvswitch/db.sock");
  EXPECT_EQ(settings->openflow_remote, "unix:/var/run/openvswitch/br-secure.mgmt");
  EXPECT_EQ(settings->uplink_port, "uplink");
  EXPECT_EQ(settings->pool.subnet().ToString(), "10.64.0.0/16");
  EXPECT_EQ(FormatIpv4(settings->pool.gateway()), "10.64.0.1");
  EXPECT_EQ(settings->mtu, 1500);
  EXPECT_EQ(settings->limits.max_egress_rules, 1024u);
  EXPECT_EQ(settings->limits.max_ingress_rules, 64u);
  EXPECT_EQ(settings->limits.min_prefix_length, 16);
  EXPECT_EQ(settings->limits.workload_subnet.ToString(), "10.64.0.0/16");
  EXPECT_EQ(settings->flow_check_interval, absl::Milliseconds(200));
  EXPECT_TRUE(settings->backend_address.empty()) << "audit to the JSON log only";
}

std::string Error(const std::string& text) {
  v1::NetdConfig config;
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(text, &config)) << text;
  absl::StatusOr<NetdSettings> settings = SettingsFromConfig(config);
  EXPECT_FALSE(settings.ok()) << text;
  return std::string(settings.status().message());
}

TEST(NetdSettingsTest, EveryFieldIsChecked) {
  EXPECT_EQ(Error("subnet: \"10.0.0.0/33\""),
            "subnet: \"10.0.0.0/33\" is not an IPv4 CIDR (a.b.c.d/n, n 0..32)");
  EXPECT_EQ(Error("subnet: \"10.0.0.0/31\""), "subnet: prefix length 31 is not in 8..30");
  EXPECT_EQ(Error("subnet: \"10.0.0.0/24\" gateway: \"10.0.1.1\""),
            "gateway: 10.0.1.1 is not a host address of subnet 10.0.0.0/24");
  EXPECT_EQ(Error("subnet: \"10.0.0.0/24\" reserved: \"10.0.1.0/30\""),
            "reserved: reserved[0]: \"10.0.1.0/30\" is not inside subnet 10.0.0.0/24");
  EXPECT_EQ(Error("subnet: \"10.0.0.0/24\" reserved: \"10.0.0.9-10.0.0.2\""),
            "reserved: reserved[0]: \"10.0.0.9-10.0.0.2\" is not a range a.b.c.d-e.f.g.h with the first "
            "address not "
            "after the last");
  EXPECT_EQ(Error("bridge: \"a-bridge-name-too-long\""),
            "bridge: must be 1..15 characters of [A-Za-z0-9_.-]");
  EXPECT_EQ(Error("uplink_port: \"br-secure\""), "uplink_port: must not be the bridge's own port");
  EXPECT_EQ(Error("ovsdb_remote: \"db.sock\""),
            "ovsdb_remote: must be \"unix:/ABSOLUTE/PATH\" or \"tcp:IP:PORT\"");
  EXPECT_EQ(Error("openflow_remote: \"tcp:1.2.3.4:0\""),
            "openflow_remote: must be \"unix:/ABSOLUTE/PATH\" or \"tcp:IP:PORT\"");
  EXPECT_EQ(Error("mtu: 100"), "mtu: 100 is not in 576..9000");
  EXPECT_EQ(Error("max_ports: 0"), "max_ports: 0 is not in 1..65279");
  EXPECT_EQ(Error("max_egress_rules: 1025"), "max_egress_rules: 1025 is not in 0..1024");
  EXPECT_EQ(Error("max_ingress_rules: 65"), "max_ingress_rules: 65 is not in 0..64");
  EXPECT_EQ(Error("max_flows_per_port: 8"), "max_flows_per_port: 8 is not in 16..65536");
  EXPECT_EQ(Error("min_rule_prefix_length: 4"), "min_rule_prefix_length: 4 is not in 8..32");
  EXPECT_EQ(Error("ovs_timeout_ms: 50"), "ovs_timeout_ms: 50 is not in 100..60000");
  EXPECT_EQ(Error("flow_check_interval_ms: 20000"), "flow_check_interval_ms: 20000 is not in 50..10000");
  EXPECT_TRUE(absl::StartsWith(Error("backend_address: \"backend\""), "backend_address: "));
  EXPECT_EQ(Error("backend_address: \"198.51.100.10:7443\" backend_tls { ca_file: \"/ca.pem\" }"),
            "backend_tls: ca_file, cert_file and key_file are required with backend_address");
  EXPECT_EQ(Error("audit_spool_dir: \"spool\""), "audit_spool_dir: must be an absolute path without \"..\"");
  EXPECT_EQ(Error("gateway_mac: \"02:00:00:00:00\""),
            "gateway_mac: \"02:00:00:00:00\" is not a MAC address like 02:00:00:00:00:01");
  EXPECT_EQ(Error("gateway_mac: \"02:00:00:00:00:01\\n\""),
            "gateway_mac: \"02:00:00:00:00:01\\n\" is not a MAC address like 02:00:00:00:00:01");
  EXPECT_EQ(Error("gateway_mac: \"ff:ff:ff:ff:ff:ff\""), "gateway_mac: ff:ff:ff:ff:ff:ff is not a unicast address");
  EXPECT_EQ(Error("gateway_mac: \"01:00:5e:00:00:01\""), "gateway_mac: 01:00:5e:00:00:01 is not a unicast address");
  EXPECT_EQ(Error("workload_link_group: 0"), "workload_link_group: 0 is not in 1..2147483647");
}

TEST(NetdSettingsTest, TheGatewayMacIsNormalisedAndTheGroupDefaulted) {
  v1::NetdConfig config;
  config.set_gateway_mac("02:AB:00:00:00:01");
  absl::StatusOr<NetdSettings> settings = SettingsFromConfig(config);
  ASSERT_TRUE(settings.ok()) << settings.status();
  EXPECT_EQ(settings->gateway_mac, "02:ab:00:00:00:01");
  EXPECT_EQ(settings->workload_link_group, 21330u);
}

TEST(NetdSettingsTest, ErrorsNameTheFileAndLine) {
  char path[] = "/tmp/netd-settings-XXXXXX";
  const int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  close(fd);
  std::ofstream(path) << "bridge: \"br-secure\"\n\nsubnet: \"203.0.113.0/24\"\ngateway: \"198.51.100.1\"\n";
  v1::NetdConfig config;
  absl::StatusOr<std::unique_ptr<ConfigSource>> source = LoadTextprotoFile(path, &config);
  ASSERT_TRUE(source.ok()) << source.status();
  absl::StatusOr<NetdSettings> settings = SettingsFromConfig(config, **source);
  std::remove(path);
  EXPECT_EQ(settings.status().message(),
            std::string(path) + ":4: gateway: 198.51.100.1 is not a host address of subnet 203.0.113.0/24");
}

}  // namespace
}  // namespace strongroom::netd
