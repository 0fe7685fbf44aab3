// PortManager's domain logic against fakes: idempotency, IPAM across restarts, all-or-nothing
// mutations, and every kind of drift reconcile repairs.
#include <algorithm>
#include <iterator>
#include <map>

#include "absl/strings/match.h"

#include "google/protobuf/text_format.h"
#include "gtest/gtest.h"
#include "services/netd/flow_plan.h"
#include "services/netd/port_manager.h"
#include "tests/netd/unit_fake_backends.h"

namespace strongroom::netd::testing {
namespace {

constexpr char kDefaultPool[] =
    "subnet: \"203.0.113.0/24\" gateway: \"203.0.113.1\" reserved: \"203.0.113.2-203.0.113.9\"";

NetdSettings TestSettings(const std::string& config_text) {
  v1::NetdConfig config;
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(config_text, &config)) << config_text;
  return *SettingsFromConfig(config);
}

Policy AllowEcho() {
  Policy policy;
  policy.egress.push_back({*ParseCidr("192.0.2.10/32", false), Protocol::kTcp, 8080, 8080, "echo"});
  return policy;
}

class NetdPortManagerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    world_->AddForeignPort("uplink");
    for (const char* ns : {"ns1", "ns2", "ns3"}) world_->netns.insert(ns);
    Restart();
  }

  // A fresh PortManager over the same world: what a netd restart is.
  void Restart(const std::string& config_text = kDefaultPool) {
    manager_.reset();
    manager_ = std::make_unique<PortManager>(
        TestSettings(config_text), std::make_unique<FakeDatabase>(world_),
        std::make_unique<FakeSwitch>(world_), nullptr, std::make_unique<FakeLinks>(world_),
        std::make_unique<FakeGuard>(world_), nullptr);
  }

  AllocateRequest Request(const std::string& workload, const std::string& netns,
                          Policy policy = AllowEcho()) {
    return {
        workload, netns, "eth0", workload, std::move(policy), "spiffe://strongroom.test/host-agent/node1"};
  }

  std::shared_ptr<FakeWorld> world_ = std::make_shared<FakeWorld>();
  std::unique_ptr<PortManager> manager_;
};

TEST_F(NetdPortManagerTest, AllocateCreatesVethPortAndFlowsInOneBundle) {
  absl::StatusOr<AllocateResult> result = manager_->Allocate(Request("w1", "ns1"));
  ASSERT_TRUE(result.ok()) << result.status();
  const PortStatus& port = result->port;
  EXPECT_TRUE(result->created);
  EXPECT_TRUE(port.ready) << port.status_message;
  EXPECT_EQ(FormatIpv4(port.record.address), "203.0.113.10");
  EXPECT_EQ(port.record.mac, "02:53:cb:00:71:0a");
  EXPECT_EQ(port.record.generation, 1u);
  EXPECT_EQ(port.record.port_name, PortNameForWorkload("w1"));
  EXPECT_EQ(world_->links.at(port.record.port_name).peer_name, "eth0");
  EXPECT_TRUE(IsOwnedByNetd(world_->ports.at(port.record.port_name).external_ids));
  ASSERT_EQ(world_->bundles.size(), 1u);
  EXPECT_EQ(world_->bundles[0].front().command, OpenFlowSwitch::FlowMod::Command::kDelete);
  EXPECT_EQ(world_->FlowsWithCookie(port.record.Cookie()), CountWorkloadFlows(AllowEcho()));
  EXPECT_EQ(world_->flushed_zones, std::vector<uint16_t>{static_cast<uint16_t>(port.ofport)});
}

TEST_F(NetdPortManagerTest, ATapPortGetsTheSameFlowsAndNoNetns) {
  AllocateRequest request = Request("vm1", "");
  request.interface_name = "";
  request.tap = true;
  absl::StatusOr<AllocateResult> result = manager_->Allocate(request);
  ASSERT_TRUE(result.ok()) << result.status();
  const PortStatus& port = result->port;
  EXPECT_TRUE(port.record.tap);
  EXPECT_TRUE(port.ready) << port.status_message;
  EXPECT_TRUE(world_->links.at(port.record.port_name).tap);
  EXPECT_EQ(world_->FlowsWithCookie(port.record.Cookie()), CountWorkloadFlows(AllowEcho()));
  // Idempotent as a tap, and a veth request for the same workload is a different request.
  absl::StatusOr<AllocateResult> again = manager_->Allocate(request);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_FALSE(again->created);
  EXPECT_EQ(manager_->Allocate(Request("vm1", "ns1")).status().code(), absl::StatusCode::kAlreadyExists);
  // A restarted netd reads it back as a tap.
  Restart();
  absl::StatusOr<PortStatus> read = manager_->Get("vm1");
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_TRUE(read->record.tap);
  absl::StatusOr<std::optional<PortStatus>> released = manager_->Release("vm1", 0);
  ASSERT_TRUE(released.ok()) << released.status();
  EXPECT_EQ(world_->links.count(port.record.port_name), 0u);
  EXPECT_EQ(world_->FlowsWithCookie(port.record.Cookie()), 0u);
}

TEST_F(NetdPortManagerTest, OfportsAreRequestedRoundRobinInNetdsRangeAndFlowsSentAhead) {
  absl::StatusOr<AllocateResult> w1 = manager_->Allocate(Request("w1", "ns1"));
  ASSERT_TRUE(w1.ok()) << w1.status();
  EXPECT_EQ(w1->port.ofport, kFirstRequestedOfport);
  EXPECT_EQ(world_->sent_bundles, 1) << "the flows go out with the port, not after it";
  EXPECT_EQ(world_->bridge_external_ids.at(kLastOfportKey), absl::StrCat(kFirstRequestedOfport));
  absl::StatusOr<AllocateResult> w2 = manager_->Allocate(Request("w2", "ns2"));
  ASSERT_TRUE(w2.ok());
  EXPECT_EQ(w2->port.ofport, kFirstRequestedOfport + 1);
  // A released number is not reused at once, a taken one is skipped, and a restart resumes.
  ASSERT_TRUE(manager_->Release("w1", 0).ok());
  world_->AddForeignPort("foreign");
  world_->ports.at("foreign").ofport = kFirstRequestedOfport + 2;
  Restart();
  absl::StatusOr<AllocateResult> w3 = manager_->Allocate(Request("w3", "ns3"));
  ASSERT_TRUE(w3.ok());
  EXPECT_EQ(w3->port.ofport, kFirstRequestedOfport + 3);
  EXPECT_TRUE(w3->port.ready) << w3->port.status_message;
  EXPECT_EQ(world_->FlowsWithCookie(w3->port.record.Cookie()), CountWorkloadFlows(AllowEcho()));
}

TEST_F(NetdPortManagerTest, AnUnhonouredOfportRequestGetsItsFlowsReplaced) {
  world_->honour_ofport_request = false;
  absl::StatusOr<AllocateResult> w1 = manager_->Allocate(Request("w1", "ns1"));
  ASSERT_TRUE(w1.ok()) << w1.status();
  EXPECT_NE(w1->port.ofport, kFirstRequestedOfport);
  EXPECT_TRUE(w1->port.ready) << w1->port.status_message;
  const uint64_t cookie = w1->port.record.Cookie();
  EXPECT_EQ(world_->FlowsWithCookie(cookie), CountWorkloadFlows(AllowEcho()));
  for (const auto& [flow_cookie, text] : world_->flows) {
    EXPECT_EQ(text.find(absl::StrCat("in_port=", kFirstRequestedOfport)), std::string::npos) << text;
    EXPECT_EQ(text.find(absl::StrCat("output:", kFirstRequestedOfport)), std::string::npos) << text;
  }
  EXPECT_NE(std::find(world_->flushed_zones.begin(), world_->flushed_zones.end(),
                      static_cast<uint16_t>(w1->port.ofport)),
            world_->flushed_zones.end());
}

TEST_F(NetdPortManagerTest, AllocateIsIdempotentOnTheWorkloadId) {
  absl::StatusOr<AllocateResult> first = manager_->Allocate(Request("w1", "ns1"));
  ASSERT_TRUE(first.ok());
  absl::StatusOr<AllocateResult> again = manager_->Allocate(Request("w1", "ns1"));
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(again->created);
  EXPECT_EQ(again->port.record.address, first->port.record.address);
  EXPECT_EQ(world_->bundles.size(), 1u);

  absl::StatusOr<AllocateResult> other_netns = manager_->Allocate(Request("w1", "ns2"));
  EXPECT_EQ(other_netns.status().code(), absl::StatusCode::kAlreadyExists);
  Policy different = AllowEcho();
  different.egress[0].port_first = different.egress[0].port_last = 8081;
  EXPECT_EQ(manager_->Allocate(Request("w1", "ns1", different)).status().code(),
            absl::StatusCode::kAlreadyExists);
}

TEST_F(NetdPortManagerTest, FailuresChangeNothing) {
  const auto ports_before = world_->ports.size();
  absl::StatusOr<AllocateResult> missing = manager_->Allocate(Request("w1", "nope"));
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(missing.status().message().find("netns \"nope\" does not exist"), std::string::npos);

  world_->fail_bundles = 1;  // the flows are refused: port and veth must go again
  absl::StatusOr<AllocateResult> rejected = manager_->Allocate(Request("w1", "ns1"));
  EXPECT_FALSE(rejected.ok());
  EXPECT_NE(rejected.status().message().find("rolled back"), std::string::npos);

  world_->fail_add_ports = 1;
  EXPECT_FALSE(manager_->Allocate(Request("w1", "ns1")).ok());
  EXPECT_EQ(world_->ports.size(), ports_before);
  EXPECT_TRUE(world_->links.empty());
  EXPECT_TRUE(world_->flows.empty());

  world_->ovsdb_up = false;
  EXPECT_EQ(manager_->Allocate(Request("w1", "ns1")).status().code(), absl::StatusCode::kUnavailable);
  world_->ovsdb_up = true;
  world_->bridge_exists = false;
  world_->Touch();
  EXPECT_EQ(manager_->Allocate(Request("w1", "ns1")).status().code(), absl::StatusCode::kFailedPrecondition);
  world_->bridge_exists = true;
  world_->Touch();

  // Nothing is held by the failures: the first successful allocation is the only port.
  absl::StatusOr<AllocateResult> ok = manager_->Allocate(Request("w1", "ns1"));
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(world_->ports.size(), ports_before + 1);
  EXPECT_EQ(world_->links.size(), 1u);
}

TEST_F(NetdPortManagerTest, PoolExhaustionAndPortLimit) {
  Restart("subnet: \"203.0.113.0/29\" gateway: \"203.0.113.1\" max_ports: 10");
  // .2 to .6: five addresses.
  for (int i = 0; i < 5; ++i) {
    world_->netns.insert("n" + std::to_string(i));
    ASSERT_TRUE(manager_->Allocate(Request("w" + std::to_string(i), "n" + std::to_string(i))).ok());
  }
  world_->netns.insert("n5");
  EXPECT_EQ(manager_->Allocate(Request("w5", "n5")).status().code(), absl::StatusCode::kResourceExhausted);

  Restart(std::string(kDefaultPool) + " max_ports: 5");
  EXPECT_EQ(manager_->Allocate(Request("w5", "n5")).status().code(), absl::StatusCode::kResourceExhausted);
}

TEST_F(NetdPortManagerTest, RestartKeepsAddressesAndNeverRepeatsAGeneration) {
  ASSERT_TRUE(manager_->Allocate(Request("w1", "ns1")).ok());
  ASSERT_TRUE(manager_->Allocate(Request("w2", "ns2")).ok());
  Restart();
  absl::StatusOr<PortStatus> w1 = manager_->Get("w1");
  ASSERT_TRUE(w1.ok());
  EXPECT_EQ(FormatIpv4(w1->record.address), "203.0.113.10");
  absl::StatusOr<AllocateResult> w3 = manager_->Allocate(Request("w3", "ns3"));
  ASSERT_TRUE(w3.ok());
  EXPECT_EQ(FormatIpv4(w3->port.record.address), "203.0.113.12");
  EXPECT_EQ(w3->port.record.generation, 3u);

  // Release the newest, restart: neither its generation nor (yet) its address is handed out
  // again; both cursors live in the bridge's record.
  ASSERT_TRUE(manager_->Release("w3", 0).ok());
  Restart();
  absl::StatusOr<AllocateResult> w3_again = manager_->Allocate(Request("w3", "ns3"));
  ASSERT_TRUE(w3_again.ok());
  EXPECT_EQ(w3_again->port.record.generation, 4u);
  EXPECT_EQ(FormatIpv4(w3_again->port.record.address), "203.0.113.13");
}

TEST_F(NetdPortManagerTest, UpdatePolicyReplacesFlowsAtomicallyOrNotAtAll) {
  absl::StatusOr<AllocateResult> w1 = manager_->Allocate(Request("w1", "ns1"));
  ASSERT_TRUE(w1.ok());
  Policy wider = AllowEcho();
  wider.egress.push_back({*ParseCidr("192.0.2.11/32", false), Protocol::kUdp, 53, 53, ""});
  absl::StatusOr<PortStatus> updated = manager_->UpdatePolicy("w1", wider, 0);
  ASSERT_TRUE(updated.ok()) << updated.status();
  EXPECT_EQ(updated->record.policy_revision, 2u);
  EXPECT_EQ(world_->FlowsWithCookie(w1->port.record.Cookie()), CountWorkloadFlows(wider));
  // One bundle: delete the old flows and add the new ones together.
  EXPECT_EQ(world_->bundles.back().front().command, OpenFlowSwitch::FlowMod::Command::kDelete);
  EXPECT_EQ(world_->bundles.back().size(), CountWorkloadFlows(wider) + 1);

  world_->fail_bundles = 1;
  EXPECT_FALSE(manager_->UpdatePolicy("w1", AllowEcho(), 0).ok());
  absl::StatusOr<PortStatus> after = manager_->Get("w1");
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->record.policy, wider) << "the old policy stays recorded and in force";
  EXPECT_EQ(world_->FlowsWithCookie(w1->port.record.Cookie()), CountWorkloadFlows(wider));

  EXPECT_EQ(manager_->UpdatePolicy("nobody", wider, 0).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(manager_->UpdatePolicy("w1", wider, 99).status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(NetdPortManagerTest, ReleaseRemovesEverythingAndIsIdempotent) {
  absl::StatusOr<AllocateResult> w1 = manager_->Allocate(Request("w1", "ns1"));
  ASSERT_TRUE(w1.ok());
  EXPECT_EQ(manager_->Release("w1", 99).status().code(), absl::StatusCode::kFailedPrecondition);
  absl::StatusOr<std::optional<PortStatus>> released = manager_->Release("w1", w1->port.record.generation);
  ASSERT_TRUE(released.ok());
  ASSERT_TRUE(released->has_value());
  EXPECT_EQ((*released)->record.workload_id, "w1");
  EXPECT_EQ(world_->ports.count(w1->port.record.port_name), 0u);
  EXPECT_TRUE(world_->links.empty());
  EXPECT_EQ(world_->FlowsWithCookie(w1->port.record.Cookie()), 0u);
  EXPECT_EQ(world_->flushed_zones.back(), static_cast<uint16_t>(w1->port.ofport));
  absl::StatusOr<std::optional<PortStatus>> again = manager_->Release("w1", 0);
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(again->has_value());
  EXPECT_EQ(manager_->Get("w1").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(NetdPortManagerTest, VswitchdRestartIsDetectedAndTheTableRestored) {
  ASSERT_TRUE(manager_->Allocate(Request("w1", "ns1")).ok());
  ASSERT_TRUE(manager_->Allocate(Request("w2", "ns2")).ok());
  ASSERT_TRUE(manager_->Reconcile().ok());
  const auto flows = world_->flows;
  const uint64_t pushes = manager_->full_pushes();
  EXPECT_TRUE(manager_->CheckOnce().ok());
  EXPECT_EQ(manager_->full_pushes(), pushes) << "no drift, no push";

  world_->vswitchd_up = false;  // down: flows gone, ports degrade
  world_->flows.clear();
  EXPECT_FALSE(manager_->CheckOnce().ok());
  EXPECT_FALSE(manager_->Get("w1")->ready);
  world_->vswitchd_up = true;  // back, with an empty table
  EXPECT_TRUE(manager_->CheckOnce().ok());
  EXPECT_EQ(manager_->full_pushes(), pushes + 1);
  EXPECT_EQ(world_->flows, flows);
  EXPECT_TRUE(manager_->Get("w1")->ready);

  world_->flows.erase(world_->flows.begin());  // someone deletes a flow behind netd's back
  EXPECT_TRUE(manager_->CheckOnce().ok());
  EXPECT_EQ(world_->flows, flows);
}

TEST_F(NetdPortManagerTest, ReconcileRemovesBrokenVanishedAndOrphanedButNeverForeign) {
  world_->AddForeignPort("foreign0", {{"owner", "someone-else"}});
  absl::StatusOr<AllocateResult> w1 = manager_->Allocate(Request("w1", "ns1"));
  absl::StatusOr<AllocateResult> w2 = manager_->Allocate(Request("w2", "ns2"));
  absl::StatusOr<AllocateResult> w3 = manager_->Allocate(Request("w3", "ns3"));
  ASSERT_TRUE(w1.ok() && w2.ok() && w3.ok());
  ASSERT_TRUE(manager_->Reconcile().ok());

  // w1's netns was deleted: its veth is gone (ovs-vswitchd reports the interface in error).
  world_->links.erase(w1->port.record.port_name);
  world_->ports.at(w1->port.record.port_name).error = "could not open network device (No such device)";
  world_->ports.at(w1->port.record.port_name).ofport = -1;
  world_->Touch();
  // w2's port row was deleted behind netd's back.
  world_->ports.erase(w2->port.record.port_name);
  world_->Touch();
  // A veth netd made but never recorded (netd died mid-allocation).
  world_->links["sr0123456789ab"] = {};
  // And someone set the bridge to standalone.
  world_->fail_mode = "standalone";
  world_->Touch();

  ASSERT_TRUE(manager_->Reconcile().ok());
  EXPECT_EQ(world_->ports.count(w1->port.record.port_name), 0u);
  EXPECT_EQ(world_->links.count(w2->port.record.port_name), 0u) << "a vanished port's veth goes too";
  EXPECT_EQ(world_->FlowsWithCookie(w2->port.record.Cookie()), 0u);
  EXPECT_EQ(world_->links.count("sr0123456789ab"), 0u);
  EXPECT_EQ(world_->fail_mode, "secure");
  EXPECT_EQ(world_->ports.count("foreign0"), 1u);
  EXPECT_EQ(world_->ports.count("uplink"), 1u);
  absl::StatusOr<std::vector<PortStatus>> list = manager_->List();
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 1u);
  EXPECT_EQ((*list)[0].record.workload_id, "w3");
  EXPECT_TRUE((*list)[0].ready);
  // The freed addresses are free again: OVSDB, the only record, no longer holds them.
  for (const auto& [name, port] : world_->ports) {
    if (!IsOwnedByNetd(port.external_ids)) continue;
    EXPECT_EQ(*RecordedAddress(port.external_ids), w3->port.record.address) << name;
  }
}

TEST_F(NetdPortManagerTest, InterfaceErrorWithTheVethPresentWaitsOutTheGracePeriod) {
  absl::StatusOr<AllocateResult> w1 = manager_->Allocate(Request("w1", "ns1"));
  ASSERT_TRUE(w1.ok());
  world_->ports.at(w1->port.record.port_name).error = "transient";
  world_->Touch();
  ASSERT_TRUE(manager_->Reconcile().ok());
  EXPECT_EQ(world_->ports.count(w1->port.record.port_name), 1u) << "removed during a transient error";
  absl::StatusOr<PortStatus> degraded = manager_->Get("w1");
  ASSERT_TRUE(degraded.ok());
  EXPECT_FALSE(degraded->ready);
  EXPECT_EQ(degraded->status_message, "interface error: transient");
}

}  // namespace
}  // namespace strongroom::netd::testing

namespace strongroom::netd::testing {
namespace {

TEST_F(NetdPortManagerTest, NoPortIsMadeWhileTheNodeStackGuardCannotBePutInPlace) {
  std::vector<std::pair<bool, std::string>> health;
  manager_->SetServingObserver([&](bool serving, const std::string& reason) { health.emplace_back(serving, reason); });
  ASSERT_TRUE(manager_->Allocate(Request("w1", "ns1")).ok());
  world_->guard_unavailable = true;
  absl::StatusOr<AllocateResult> refused = manager_->Allocate(Request("w2", "ns2"));
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(refused.status().message(), "node's own network stack")) << refused.status();
  EXPECT_EQ(world_->links.size(), 1u) << "nothing of w2 was made";
  absl::StatusOr<PortStatus> w1 = manager_->Get("w1");
  ASSERT_TRUE(w1.ok());
  EXPECT_FALSE(w1->ready);
  EXPECT_TRUE(absl::StrContains(w1->status_message, "node stack guard is not in place")) << w1->status_message;
  ASSERT_FALSE(health.empty());
  EXPECT_FALSE(health.back().first);
  EXPECT_TRUE(absl::StrContains(health.back().second, "no nf_tables")) << health.back().second;
  EXPECT_TRUE(absl::StrContains(manager_->RenderMetrics(), "strongroom_netd_node_stack_guard_ok 0"));

  world_->guard_unavailable = false;  // back: the next check serves again
  (void)manager_->CheckOnce();
  EXPECT_TRUE(health.back().first);
  EXPECT_TRUE(manager_->Get("w1")->ready);
  EXPECT_TRUE(manager_->Allocate(Request("w2", "ns2")).ok());
}

TEST_F(NetdPortManagerTest, ABrokenGuardIsRepairedAndCounted) {
  ASSERT_TRUE(manager_->Reconcile().ok());
  world_->guard_broken = true;  // e.g. `nft flush ruleset` on the node
  (void)manager_->CheckOnce();
  EXPECT_EQ(world_->guard_repairs, 1);
  EXPECT_TRUE(absl::StrContains(manager_->RenderMetrics(), "strongroom_netd_node_stack_guard_repairs_total 1"));
  EXPECT_TRUE(absl::StrContains(manager_->RenderMetrics(), "strongroom_netd_node_stack_guard_ok 1"));
}

TEST_F(NetdPortManagerTest, AVethWhosePerDeviceGuardsWereTurnedOffGetsThemBackOrIsCutOff) {
  absl::StatusOr<AllocateResult> w1 = manager_->Allocate(Request("w1", "ns1"));
  absl::StatusOr<AllocateResult> w2 = manager_->Allocate(Request("w2", "ns2"));
  ASSERT_TRUE(w1.ok() && w2.ok());
  world_->exposed[w1->port.record.port_name] = "IPv4 forwarding is on";
  world_->exposed[w2->port.record.port_name] = "it has 1 address";
  world_->cannot_isolate.insert(w2->port.record.port_name);
  ASSERT_TRUE(manager_->Reconcile().ok());
  EXPECT_EQ(world_->exposed.count(w1->port.record.port_name), 0u) << "w1's guards are back";
  EXPECT_TRUE(manager_->Get("w1")->ready);
  EXPECT_EQ(manager_->Get("w2").status().code(), absl::StatusCode::kNotFound)
      << "a port that would stay exposed is removed";
  EXPECT_EQ(world_->links.count(w2->port.record.port_name), 0u);
}

TEST_F(NetdPortManagerTest, AnInconsistentListingDoesNotMakeALiveVethLookGone) {
  absl::StatusOr<AllocateResult> w1 = manager_->Allocate(Request("w1", "ns1"));
  ASSERT_TRUE(w1.ok());
  world_->unlisted.insert(w1->port.record.port_name);  // the dump skipped it while links churned
  ASSERT_TRUE(manager_->Reconcile().ok());
  EXPECT_TRUE(manager_->Get("w1")->ready) << "Exists() confirmed it";
  world_->links.erase(w1->port.record.port_name);  // now really gone
  ASSERT_TRUE(manager_->Reconcile().ok());
  EXPECT_EQ(manager_->Get("w1").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(NetdPortManagerTest, DropCountersComeFromTheWorkloadsDropFlows) {
  absl::StatusOr<AllocateResult> w1 = manager_->Allocate(Request("w1", "ns1"));
  ASSERT_TRUE(w1.ok());
  const uint64_t cookie = w1->port.record.Cookie();
  for (const auto& [flow_cookie, text] : world_->flows) {
    if (flow_cookie != cookie) continue;
    if (absl::StrContains(text, "vlan_tci=0x1000/0x1000")) world_->flow_packets[{flow_cookie, text}] = 7;
    if (absl::StrContains(text, "table=1,priority=1,")) world_->flow_packets[{flow_cookie, text}] = 2;
    if (absl::StrContains(text, "priority=100,")) world_->flow_packets[{flow_cookie, text}] = 1000;  // forwarded
  }
  absl::StatusOr<PortStatus> port = manager_->Get("w1");
  ASSERT_TRUE(port.ok());
  ASSERT_EQ(port->drops.size(), std::size(kAllDropReasons));
  std::map<DropReason, uint64_t> packets;
  for (const DropCount& drop : port->drops) packets[drop.reason] = drop.packets;
  EXPECT_EQ(packets[DropReason::kVlanTagged], 7u);
  EXPECT_EQ(packets[DropReason::kEgressNotAllowed], 2u);
  EXPECT_EQ(packets[DropReason::kSpoofed], 0u);
  absl::StatusOr<std::vector<PortStatus>> list = manager_->List();
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 1u);
  EXPECT_EQ((*list)[0].drops.size(), std::size(kAllDropReasons));
  manager_->RefreshMetrics();
  const std::string metrics = manager_->RenderMetrics();
  EXPECT_TRUE(absl::StrContains(metrics,
                                "strongroom_netd_port_dropped_packets_total{workload=\"w1\",reason=\"vlan_tagged\"} 7"))
      << metrics;
  EXPECT_TRUE(absl::StrContains(
      metrics, "strongroom_netd_node_stack_dropped_packets_total{chain=\"inet from_workload_ports\"} 3"))
      << metrics;
}

}  // namespace
}  // namespace strongroom::netd::testing
