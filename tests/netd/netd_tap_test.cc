// Acceptance of VM tap ports against real OVS and the kernel: AllocatePort with target tap makes
// a persistent tap in netd's (the node's) namespace with every per-device guard a veth's host end
// has, on br-secure with the same flows; reconcile repairs the guards and removes the tap of a
// port deleted behind netd's back; a netd restart keeps it; ReleasePort deletes it. Traffic
// through a tap is the egress test's (NetdEgressTest.NothingButTheAllowlistLeavesAVmsTapByAnyPath).
#include <signal.h>

#include <algorithm>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "strongroom/v1/netd.pb.h"
#include "tests/netd/netd_testbed.h"

namespace strongroom::netd::testing {
namespace {

constexpr int kOk = 0;
constexpr int kInvalidArgument = 3;
constexpr char kGroup[] = "21330";

class NetdTapTest : public NetdTestbedTest<> {
 protected:

  v1::Port AllocateTap(const std::string& workload) {
    CtlResult r =
        bed_->Ctl(Caller::kHostAgent, "AllocatePort",
                  absl::StrCat("{\"workload_id\":\"", workload, "\",\"tap\":{},\"egress_allowlist\":",
                               EgressJson({{"192.0.2.10/32", "PROTOCOL_TCP", kEchoPort}}), "}"));
    EXPECT_EQ(r.exit_code, kOk) << r.output;
    v1::AllocatePortResponse response;
    EXPECT_TRUE(google::protobuf::util::JsonStringToMessage(r.json, &response).ok()) << r.output;
    return response.port();
  }

  std::string Link(const std::string& name) {
    absl::StatusOr<std::string> link = bed_->Ip({"-n", bed_->NodeNetns(), "-d", "link", "show", name});
    return link.ok() ? *link : "";
  }
  std::string Sysctl(const std::string& family, const std::string& link, const std::string& key) {
    absl::StatusOr<std::string> value =
        bed_->Ip({"netns", "exec", bed_->NodeNetns(), "/usr/sbin/sysctl", "-n",
                  absl::StrCat("net.", family, ".conf.", link, ".", key)});
    return value.ok() ? std::string(absl::StripAsciiWhitespace(*value)) : value.status().ToString();
  }
  // Every per-device guard of a veth's host end, on the tap.
  void ExpectGuarded(const std::string& tap) {
    const std::string link = Link(tap);
    EXPECT_TRUE(absl::StrContains(link, "tun type tap")) << link;
    EXPECT_TRUE(absl::StrContains(link, "persist on")) << link;
    EXPECT_TRUE(absl::StrContains(link, "NOARP")) << link;
    EXPECT_TRUE(absl::StrContains(link, "PROMISC")) << link;
    EXPECT_TRUE(absl::StrContains(link, absl::StrCat("group ", kGroup))) << link;
    EXPECT_TRUE(absl::StrContains(link, "alias strongroom-netd workload")) << link;
    EXPECT_EQ(Sysctl("ipv4", tap, "forwarding"), "0");
    EXPECT_EQ(Sysctl("ipv4", tap, "rp_filter"), "1");
    EXPECT_EQ(Sysctl("ipv4", tap, "arp_ignore"), "8");
    EXPECT_EQ(Sysctl("ipv6", tap, "disable_ipv6"), "1");
    absl::StatusOr<std::string> addresses = bed_->Ip({"-n", bed_->NodeNetns(), "addr", "show", "dev", tap});
    EXPECT_TRUE(addresses.ok() && !absl::StrContains(*addresses, "inet")) << addresses.value_or("");
  }
  // Polls `done` for up to 30 s (reconcile's link listing runs every 5th check, 100 ms apart here).
  bool Eventually(const std::function<bool()>& done) {
    for (const absl::Time deadline = absl::Now() + absl::Seconds(30); absl::Now() < deadline;) {
      if (done()) return true;
      absl::SleepFor(absl::Milliseconds(100));
    }
    return done();
  }

};

TEST_F(NetdTapTest, ATapIsMadeGuardedOnTheBridgeAndReleasedCompletely) {
  const size_t base_flows = *bed_->CountFlows();
  // Bad input first: a tap has no interface name inside a netns; nothing is made.
  CtlResult bad = bed_->Ctl(Caller::kHostAgent, "AllocatePort",
                            R"({"workload_id":"vm1","tap":{},"interface_name":"eth0"})");
  EXPECT_EQ(bad.exit_code, kInvalidArgument) << bad.output;
  EXPECT_TRUE(absl::StrContains(bad.output, "interface_name: must be empty for a tap")) << bad.output;
  EXPECT_TRUE(bed_->Links(bed_->NodeNetns(), "sr")->empty());

  const v1::Port port = AllocateTap("vm1");
  const std::string tap = port.attachment().port_name();
  EXPECT_TRUE(port.tap());
  EXPECT_EQ(port.netns(), "");
  EXPECT_EQ(port.attachment().interface_name(), "");
  EXPECT_EQ(port.state(), v1::PORT_STATE_READY);
  ExpectGuarded(tap);
  const std::vector<std::string> ports = *bed_->BridgePorts();
  EXPECT_NE(std::find(ports.begin(), ports.end(), tap), ports.end());
  EXPECT_GT(*bed_->CountFlows(absl::StrCat("cookie=", port.cookie(), "/-1")), 10u);
  // The port record says what it is (OVSDB is netd's only store).
  absl::StatusOr<std::string> target = bed_->Vsctl({"get", "Port", tap, "external_ids:strongroom-target"});
  ASSERT_TRUE(target.ok()) << target.status();
  EXPECT_EQ(absl::StripAsciiWhitespace(*target), "tap");

  // Idempotent; a veth request for the same workload is another request.
  CtlResult again = bed_->Ctl(Caller::kHostAgent, "AllocatePort",
                              absl::StrCat("{\"workload_id\":\"vm1\",\"tap\":{},\"egress_allowlist\":",
                                           EgressJson({{"192.0.2.10/32", "PROTOCOL_TCP", kEchoPort}}), "}"));
  EXPECT_EQ(again.exit_code, kOk) << again.output;
  EXPECT_TRUE(absl::StrContains(again.json, "\"created\":false")) << again.json;

  // Guards turned off behind netd's back are put back by reconcile.
  for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
           {"-n", bed_->NodeNetns(), "link", "set", tap, "arp", "on", "group", "0"},
           {"-n", bed_->NodeNetns(), "addr", "add", "198.18.0.1/24", "dev", tap},
           {"netns", "exec", bed_->NodeNetns(), "/usr/sbin/sysctl", "-qw", "net.ipv4.ip_forward=1"},
           {"netns", "exec", bed_->NodeNetns(), "/usr/sbin/sysctl", "-qw",
            absl::StrCat("net.ipv6.conf.", tap, ".disable_ipv6=0")}}) {
    ASSERT_TRUE(bed_->Ip(args).ok()) << args.back();
  }
  EXPECT_TRUE(Eventually([&] {
    const std::string link = Link(tap);
    return absl::StrContains(link, "NOARP") && absl::StrContains(link, absl::StrCat("group ", kGroup)) &&
           Sysctl("ipv4", tap, "forwarding") == "0" && Sysctl("ipv6", tap, "disable_ipv6") == "1" &&
           !absl::StrContains(*bed_->Ip({"-n", bed_->NodeNetns(), "addr", "show", "dev", tap}), "198.18.0.1");
  })) << Link(tap)
      << bed_->NetdLog();
  ExpectGuarded(tap);
  EXPECT_TRUE(absl::StrContains(bed_->NetdLog(), "veth_guard_restored")) << bed_->NetdLog();

  // kill -9 and restart: the tap and its port stay, read back as a tap (a running VM keeps its NIC).
  ASSERT_TRUE(bed_->KillNetd(SIGKILL).ok());
  ASSERT_TRUE(bed_->StartNetd().ok()) << bed_->NetdLog();
  CtlResult get = bed_->Ctl(Caller::kOperator, "GetPort", R"({"workload_id":"vm1"})");
  ASSERT_EQ(get.exit_code, kOk) << get.output;
  v1::GetPortResponse read;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(get.json, &read).ok()) << get.json;
  EXPECT_TRUE(read.port().tap());
  EXPECT_EQ(read.port().attachment().port_name(), tap);
  EXPECT_EQ(read.port().attachment().ipv4_address(), port.attachment().ipv4_address());
  ExpectGuarded(tap);

  // Release deletes the tap, the port and its flows.
  CtlResult released = bed_->Ctl(Caller::kHostAgent, "ReleasePort", R"({"workload_id":"vm1"})");
  ASSERT_EQ(released.exit_code, kOk) << released.output;
  EXPECT_TRUE(absl::StrContains(released.json, "\"released\":true")) << released.json;
  EXPECT_TRUE(bed_->Links(bed_->NodeNetns(), "sr")->empty());
  EXPECT_TRUE(Eventually([&] { return *bed_->CountFlows() == base_flows; }));
  const std::vector<std::string> after = *bed_->BridgePorts();
  EXPECT_EQ(std::find(after.begin(), after.end(), tap), after.end());
}

TEST_F(NetdTapTest, ATapWhosePortRowVanishedIsDeletedByReconcile) {
  const v1::Port port = AllocateTap("vm2");
  const std::string tap = port.attachment().port_name();
  ASSERT_FALSE(Link(tap).empty());
  // Someone deletes the row: OVSDB is the record, so the allocation is over.
  ASSERT_TRUE(bed_->Vsctl({"del-port", kBridge, tap}).ok());
  EXPECT_TRUE(Eventually([&] { return bed_->Links(bed_->NodeNetns(), "sr")->empty(); })) << bed_->NetdLog();
  CtlResult get = bed_->Ctl(Caller::kOperator, "GetPort", R"({"workload_id":"vm2"})");
  EXPECT_EQ(get.exit_code, 5) << get.output;
}

}  // namespace
}  // namespace strongroom::netd::testing
