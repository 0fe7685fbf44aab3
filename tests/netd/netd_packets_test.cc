// Acceptance: real packets through br-secure. netd runs as a daemon in the rig, is called with
// strongroomctl over mTLS, and every allowed and blocked case is a real TCP or UDP exchange.
#include <memory>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "strongroom/v1/netd.pb.h"
#include "tests/netd/netd_testbed.h"
#include "tests/netd/netns_probe.h"

namespace strongroom::netd::testing {
namespace {

class NetdPacketsTest : public NetdTestbedTest<> {
 protected:

  // Allocates a port for `workload` in a fresh netns and returns it.
  v1::Port Allocate(const std::string& workload, const std::string& egress,
                    const std::string& ingress = "[]") {
    absl::StatusOr<std::string> netns = bed_->AddWorkloadNetns(workload);
    EXPECT_TRUE(netns.ok()) << netns.status();
    netns_[workload] = netns.ok() ? *netns : "";
    CtlResult r =
        bed_->Ctl(Caller::kHostAgent, "AllocatePort",
                  absl::StrCat("{\"workload_id\":\"", workload, "\",\"netns\":\"", netns_[workload],
                               "\",\"egress_allowlist\":", egress, ",\"ingress_allowlist\":", ingress, "}"));
    EXPECT_EQ(r.exit_code, 0) << r.output;
    v1::AllocatePortResponse response;
    EXPECT_TRUE(google::protobuf::util::JsonStringToMessage(r.json, &response).ok()) << r.output;
    EXPECT_TRUE(response.created());
    EXPECT_EQ(response.port().state(), v1::PORT_STATE_READY) << r.json;
    return response.port();
  }

  CtlResult UpdateEgress(const std::string& workload, const std::string& egress,
                         const std::string& ingress = "[]") {
    return bed_->Ctl(Caller::kHostAgent, "UpdateEgress",
                     absl::StrCat("{\"workload_id\":\"", workload, "\",\"egress_allowlist\":", egress,
                                  ",\"ingress_allowlist\":", ingress, "}"));
  }

  std::string Path(const std::string& workload) { return NetdTestbed::NetnsPath(netns_[workload]); }
  std::string Outside() { return NetdTestbed::NetnsPath(bed_->OutsideNetns()); }

  std::map<std::string, std::string> netns_;  // workload -> netns name
};

const std::string kAllowEcho =
    EgressJson({{"192.0.2.10/32", "PROTOCOL_TCP", kEchoPort}, {"192.0.2.10", "PROTOCOL_UDP", 5353}});

TEST_F(NetdPacketsTest, AllowedConnectSucceedsAndEveryOtherPathIsBlocked) {
  const v1::Port w1 = Allocate("w1", kAllowEcho);
  const v1::Port w2 = Allocate("w2", kAllowEcho);
  ASSERT_NE(w1.attachment().ipv4_address(), w2.attachment().ipv4_address());

  // Allowed: the one TCP destination, with a real echo round trip.
  EXPECT_TRUE(TcpEchoWorks(Path("w1"), kServiceA, kEchoPort));
  EXPECT_TRUE(TcpEchoWorks(Path("w2"), kServiceA, kEchoPort));
  // Blocked: another port on the allowed IP; the allowed port on another IP.
  EXPECT_FALSE(TcpConnects(Path("w1"), kServiceA, kOtherEchoPort));
  EXPECT_FALSE(TcpConnects(Path("w1"), kServiceB, kEchoPort));
  // ...while the outside does serve both (the blocks are netd's, not missing services).
  EXPECT_TRUE(TcpEchoWorks(Outside(), kServiceA, kOtherEchoPort));
  EXPECT_TRUE(TcpEchoWorks(Outside(), kServiceB, kEchoPort));

  // Workload to workload: w2 listens; w1 cannot reach it, neither by ARP nor with a static ARP
  // entry pointing at w2's MAC.
  absl::StatusOr<UniqueFd> listener = TcpListen(Path("w2"), 9000);
  ASSERT_TRUE(listener.ok()) << listener.status();
  EXPECT_TRUE(TcpConnects(Path("w2"), w2.attachment().ipv4_address(), 9000));  // the listener works
  EXPECT_FALSE(TcpConnects(Path("w1"), w2.attachment().ipv4_address(), 9000));
  ASSERT_TRUE(bed_->Ip({"-n", netns_["w1"], "neigh", "replace", w2.attachment().ipv4_address(), "lladdr",
                        w2.attachment().mac(), "dev", "eth0", "nud", "permanent"})
                  .ok());
  EXPECT_FALSE(TcpConnects(Path("w1"), w2.attachment().ipv4_address(), 9000));

  // New inbound connections from outside: blocked (w1 listens on 9000 too).
  absl::StatusOr<UniqueFd> w1_listener = TcpListen(Path("w1"), 9000);
  ASSERT_TRUE(w1_listener.ok()) << w1_listener.status();
  EXPECT_FALSE(
      TcpConnects(Outside(), w1.attachment().ipv4_address(), 9000, absl::Milliseconds(1500), kServiceA));

  // Spoofing, observed at the receiver: a UDP service outside that the rule allows.
  absl::StatusOr<UniqueFd> receiver = UdpBind(Outside(), 5353);
  ASSERT_TRUE(receiver.ok()) << receiver.status();
  ASSERT_TRUE(UdpSend(Path("w1"), kServiceA, 5353, "honest").ok());
  EXPECT_TRUE(UdpReceived(receiver->get(), "honest", absl::Seconds(2)));
  // A spoofed source IP (w2's, and one nobody has) never leaves the bridge.
  ASSERT_TRUE(UdpSend(Path("w1"), kServiceA, 5353, "as-w2", w2.attachment().ipv4_address()).ok());
  ASSERT_TRUE(UdpSend(Path("w1"), kServiceA, 5353, "as-nobody", "203.0.113.200").ok());
  EXPECT_FALSE(UdpReceived(receiver->get(), "as-w2", absl::Milliseconds(800)));
  EXPECT_FALSE(UdpReceived(receiver->get(), "as-nobody", absl::Milliseconds(200)));
  // A spoofed MAC neither.
  ASSERT_TRUE(bed_->Ip({"-n", netns_["w1"], "link", "set", "eth0", "address", "02:53:de:ad:be:ef"}).ok());
  ASSERT_TRUE(UdpSend(Path("w1"), kServiceA, 5353, "spoofed-mac").ok());
  EXPECT_FALSE(UdpReceived(receiver->get(), "spoofed-mac", absl::Milliseconds(800)));
  EXPECT_FALSE(TcpConnects(Path("w1"), kServiceA, kEchoPort));
  // Back to its own MAC, w1 works again (the blocks above were the spoofing, nothing else).
  ASSERT_TRUE(bed_->Ip({"-n", netns_["w1"], "link", "set", "eth0", "address", w1.attachment().mac()}).ok());
  ASSERT_TRUE(UdpSend(Path("w1"), kServiceA, 5353, "honest-again").ok());
  EXPECT_TRUE(UdpReceived(receiver->get(), "honest-again", absl::Seconds(2)));
}

TEST_F(NetdPacketsTest, UpdateEgressTakesEffectAtOnceInBothDirections) {
  const v1::Port w1 = Allocate("w1", EgressJson({{"192.0.2.10/32", "PROTOCOL_TCP", kEchoPort}}));
  ASSERT_TRUE(TcpEchoWorks(Path("w1"), kServiceA, kEchoPort));
  ASSERT_FALSE(TcpConnects(Path("w1"), kServiceB, kEchoPort));
  // An established connection to the destination about to be revoked.
  absl::StatusOr<UniqueFd> established = TcpConnect(Path("w1"), kServiceA, kEchoPort, absl::Seconds(2));
  ASSERT_TRUE(established.ok()) << established.status();
  ASSERT_TRUE(EchoRoundTrip(established->get(), "before\n", absl::Seconds(2)));

  // Swap: B allowed, A revoked. Also let the outside open connections to w1's port 9000.
  CtlResult r = UpdateEgress("w1", EgressJson({{"192.0.2.11/32", "PROTOCOL_TCP", kEchoPort}}),
                             IngressJson({{"192.0.2.10/32", "PROTOCOL_TCP", 9000}}));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  v1::UpdateEgressResponse response;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(r.json, &response).ok()) << r.output;
  EXPECT_EQ(response.port().policy_revision(), 2u);

  // Newly allowed works at once; revoked fails, for new and established connections alike.
  EXPECT_TRUE(TcpEchoWorks(Path("w1"), kServiceB, kEchoPort));
  EXPECT_FALSE(TcpConnects(Path("w1"), kServiceA, kEchoPort));
  EXPECT_FALSE(EchoRoundTrip(established->get(), "after\n", absl::Milliseconds(1500)));
  // Inbound: allowed from the ingress rule's source only.
  absl::StatusOr<UniqueFd> listener = TcpListen(Path("w1"), 9000);
  ASSERT_TRUE(listener.ok()) << listener.status();
  EXPECT_TRUE(TcpConnects(Outside(), w1.attachment().ipv4_address(), 9000, absl::Seconds(2), kServiceA));
  EXPECT_FALSE(
      TcpConnects(Outside(), w1.attachment().ipv4_address(), 9000, absl::Milliseconds(1500), kServiceB));

  // And back: A again, B revoked.
  r = UpdateEgress("w1", EgressJson({{"192.0.2.10/32", "PROTOCOL_TCP", kEchoPort}}));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(TcpEchoWorks(Path("w1"), kServiceA, kEchoPort));
  EXPECT_FALSE(TcpConnects(Path("w1"), kServiceB, kEchoPort));
  EXPECT_FALSE(
      TcpConnects(Outside(), w1.attachment().ipv4_address(), 9000, absl::Milliseconds(1500), kServiceA));
}

}  // namespace
}  // namespace strongroom::netd::testing
