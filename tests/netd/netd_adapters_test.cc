// The adapters against the real things: the C shim (through its C++ owners) against a real
// ovsdb-server and ovs-vswitchd, and the netlink code against the kernel. netd itself is not
// running here.
#include <fcntl.h>
#include <sched.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <fstream>
#include <functional>
#include <memory>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "services/netd/flow_plan.h"
#include "services/netd/netlink/host_stack_guard.h"
#include "services/netd/netlink/workload_links.h"
#include "services/netd/ovs/ovs_clients.h"
#include "tests/netd/netd_testbed.h"

namespace strongroom::netd::testing {
namespace {

using Command = OpenFlowSwitch::FlowMod::Command;
constexpr absl::Duration kTimeout = absl::Seconds(3);
constexpr uint32_t kGroup = 21330;

// A sysctl of a link in the node's netns, e.g. Sysctl(bed, "ipv4", "sr..", "forwarding").
std::string Sysctl(NetdTestbed& bed, const std::string& family, const std::string& link, const std::string& key) {
  absl::StatusOr<std::string> value = bed.Ip({"netns", "exec", bed.NodeNetns(), "/usr/sbin/sysctl", "-n",
                                              absl::StrCat("net.", family, ".conf.", link, ".", key)});
  return value.ok() ? std::string(absl::StripAsciiWhitespace(*value)) : value.status().ToString();
}

// Runs `body` on a thread inside the namespace at `path` (netd's adapters act in the namespace
// of the thread that calls them, as netd does in its own).
void InNetns(const std::string& path, const std::function<void()>& body) {
  std::thread worker([&] {
    const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    ASSERT_GE(fd, 0) << path;
    ASSERT_EQ(setns(fd, CLONE_NEWNET), 0) << path;
    close(fd);
    body();
  });
  worker.join();
}

class NetdAdaptersTest : public NetdTestbedTest</*start_netd=*/false> {
 protected:
  static void SetUpTestSuite() { InitOpenvSwitch(); }
};

TEST_F(NetdAdaptersTest, OvsdbAddReadUpdateDeletePort) {
  ShimOvsDatabase db(bed_->OvsdbRemote());
  ASSERT_TRUE(db.Sync(kTimeout).ok());
  ASSERT_TRUE(
      bed_->Ip({"-n", bed_->NodeNetns(), "link", "add", "srtest0", "type", "veth", "peer", "name", "srtest1"})
          .ok());
  ASSERT_TRUE(bed_->Ip({"-n", bed_->NodeNetns(), "link", "set", "srtest0", "up"}).ok());

  bool committed = false;
  absl::StatusOr<int64_t> ofport = db.AddPort({kBridge,
                                               "srtest0",
                                               {{"owner", "strongroom-netd"}, {"k", "v w"}},
                                               {{"owner", "strongroom-netd"}},
                                               {{"strongroom-netd-generation", "7"}}},
                                              kTimeout, &committed);
  ASSERT_TRUE(ofport.ok()) << ofport.status();
  EXPECT_TRUE(committed);
  EXPECT_GT(*ofport, 0);
  EXPECT_EQ(*bed_->Vsctl({"get", "Interface", "srtest0", "ofport"}), absl::StrCat(*ofport, "\n"));
  EXPECT_EQ(*bed_->Vsctl({"get", "Port", "srtest0", "external_ids:k"}), "\"v w\"\n");
  EXPECT_EQ(*bed_->Vsctl({"get", "Bridge", kBridge, "external_ids:strongroom-netd-generation"}), "\"7\"\n");

  ASSERT_TRUE(db.UpdatePortExternalIds("srtest0", {{"k", "changed"}, {"new", "1"}}, kTimeout).ok());
  ASSERT_TRUE(db.Sync(kTimeout).ok());
  OvsDatabase::BridgeRow bridge;
  std::map<std::string, int64_t> seen;
  std::map<std::string, std::string> ids;
  ASSERT_TRUE(db.ReadBridge(kBridge, &bridge, [&](const OvsDatabase::PortRow& row) {
                  seen[std::string(row.name)] = row.ofport;
                  if (row.name == "srtest0") {
                    for (const auto& [k, v] : *row.external_ids) ids[std::string(k)] = std::string(v);
                  }
                }).ok());
  EXPECT_EQ(bridge.fail_mode, "secure");
  EXPECT_EQ(bridge.datapath_type, NetdTestbed::DatapathType());
  EXPECT_EQ(seen.at("srtest0"), *ofport);
  EXPECT_GT(seen.at("uplink"), 0);
  EXPECT_EQ(ids.at("k"), "changed");
  EXPECT_EQ(ids.at("new"), "1");

  ASSERT_TRUE(db.DeletePort(kBridge, "srtest0", true, kTimeout, &committed).ok());
  EXPECT_EQ(*bed_->BridgePorts(), std::vector<std::string>{"uplink"});
  EXPECT_EQ(db.DeletePort(kBridge, "srtest0", true, kTimeout, &committed).code(),
            absl::StatusCode::kNotFound);

  // A requested OpenFlow port number is honoured when free (netd sends flows for it in advance),
  // and deleting without waiting for ovs-vswitchd commits at once.
  ofport =
      db.AddPort({kBridge, "srtest0", {{"owner", "strongroom-netd"}}, {}, {}, 40000}, kTimeout, &committed);
  ASSERT_TRUE(ofport.ok()) << ofport.status();
  EXPECT_EQ(*ofport, 40000);
  ASSERT_TRUE(db.DeletePort(kBridge, "srtest0", false, kTimeout, &committed).ok());
  EXPECT_TRUE(committed);
  EXPECT_EQ(*bed_->BridgePorts(), std::vector<std::string>{"uplink"});
  EXPECT_EQ(db.ReadBridge("no-such-br", &bridge, [](const OvsDatabase::PortRow&) {}).code(),
            absl::StatusCode::kNotFound);

  // ovsdb-server gone: UNAVAILABLE, and within the deadline.
  ASSERT_TRUE(bed_->StopOvsdb().ok());
  const absl::Time start = absl::Now();
  absl::Status down = absl::OkStatus();
  for (int i = 0; i < 50 && down.ok(); ++i) {
    down = db.Sync(absl::Milliseconds(300));
    if (down.ok()) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(down.code(), absl::StatusCode::kUnavailable) << down;
  EXPECT_LT(absl::Now() - start, absl::Seconds(3));
  EXPECT_TRUE(absl::StrContains(down.message(), "ovsdb-server at unix:")) << down;
}

TEST_F(NetdAdaptersTest, OpenFlowBundlesAreAtomicAndCountable) {
  ShimOpenFlowSwitch of(bed_->OpenFlowTarget());
  const uint64_t cookie = CookieForGeneration(77);
  const std::string head = absl::StrCat("cookie=", cookie, ",table=0,priority=");
  ASSERT_TRUE(of.ApplyBundle({{Command::kAdd, head + "10,in_port=1,ip,actions=drop"},
                              {Command::kAdd, head + "11,in_port=1,arp,actions=drop"}},
                             std::nullopt, kTimeout)
                  .ok());
  EXPECT_EQ(*of.CountFlows(cookie, ~uint64_t{0}, kTimeout), 2u);
  EXPECT_EQ(*bed_->CountFlows(absl::StrCat("cookie=", cookie, "/-1")), 2u);

  // A flow the switch refuses (a meter that does not exist) rolls the whole bundle back.
  absl::Status rejected = of.ApplyBundle({{Command::kDelete, MatchCookie(cookie)},
                                          {Command::kAdd, head + "12,in_port=1,ipv6,actions=drop"},
                                          {Command::kAdd, head + "13,in_port=1,actions=meter:9,output:2"}},
                                         5, kTimeout);
  EXPECT_FALSE(rejected.ok());
  EXPECT_TRUE(absl::StrContains(rejected.message(), "nothing was applied")) << rejected;
  EXPECT_EQ(*of.CountFlows(cookie, ~uint64_t{0}, kTimeout), 2u) << "half a bundle was applied";
  // A flow OVS cannot parse is refused before anything is sent.
  EXPECT_EQ(
      of.ApplyBundle({{Command::kAdd, "table=0,actions=output:nowhere"}}, std::nullopt, kTimeout).code(),
      absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(of.FlushConntrackZone(5, kTimeout).ok());

  // Replace semantics in one bundle.
  ASSERT_TRUE(of.ApplyBundle(
                    {{Command::kDelete, MatchCookie(cookie)}, {Command::kAdd, head + "14,ipv6,actions=drop"}},
                    std::nullopt, kTimeout)
                  .ok());
  EXPECT_EQ(*of.CountFlows(cookie, ~uint64_t{0}, kTimeout), 1u);

  // The unconfirmed bundle in two halves: applied, with its conntrack flushes, in one exchange.
  ASSERT_TRUE(of.SendBundle({{Command::kDelete, MatchCookie(cookie)},
                             {Command::kAdd, head + "15,in_port=40001,ip,actions=ct(zone=40001,table=1)"},
                             {Command::kAdd, head + "16,in_port=1,ip,actions=output:40001"}},
                            40001, 40001, kTimeout)
                  .ok());
  ASSERT_TRUE(of.AwaitBundle(kTimeout).ok());
  EXPECT_EQ(*of.CountFlows(cookie, ~uint64_t{0}, kTimeout), 2u);
  // A flow the switch refuses when committing (a meter that does not exist): OVS refuses the
  // whole commit (OFPBFC_MSG_FAILED), so nothing is applied, as with ApplyBundle.
  ASSERT_TRUE(of.SendBundle({{Command::kAdd, head + "17,in_port=1,arp,actions=drop"},
                             {Command::kAdd, head + "18,in_port=1,actions=meter:9,output:2"}},
                            std::nullopt, std::nullopt, kTimeout)
                  .ok());
  absl::Status refused = of.AwaitBundle(kTimeout);
  EXPECT_FALSE(refused.ok());
  EXPECT_TRUE(absl::StrContains(refused.message(), "nothing was applied")) << refused;
  EXPECT_EQ(*of.CountFlows(cookie, ~uint64_t{0}, kTimeout), 2u);
  // A flow the switch refuses when it arrives (a tunnel metadata field with no TLV mapping): that
  // message is not in the bundle, the others are committed, and the error says so.
  ASSERT_TRUE(of.SendBundle({{Command::kAdd, head + "17,in_port=1,arp,actions=drop"},
                             {Command::kAdd, head + "19,tun_metadata0=1,actions=drop"}},
                            std::nullopt, std::nullopt, kTimeout)
                  .ok());
  absl::Status partial = of.AwaitBundle(kTimeout);
  EXPECT_FALSE(partial.ok());
  EXPECT_TRUE(absl::StrContains(partial.message(), "the others were applied")) << partial;
  EXPECT_EQ(*of.CountFlows(cookie, ~uint64_t{0}, kTimeout), 3u);
  // The connection is usable afterwards.
  ASSERT_TRUE(of.ApplyBundle({{Command::kDelete, MatchCookie(cookie)}}, std::nullopt, kTimeout).ok());
  EXPECT_EQ(*of.CountFlows(cookie, ~uint64_t{0}, kTimeout), 0u);
  ASSERT_TRUE(of.ApplyBundle({{Command::kAdd, head + "14,ipv6,actions=drop"}}, std::nullopt, kTimeout).ok());

  // ovs-vswitchd restarts: the connection is re-made, and the flows are gone (netd's problem).
  ASSERT_TRUE(bed_->StopVswitchd().ok());
  EXPECT_EQ(of.CountFlows(cookie, ~uint64_t{0}, kTimeout).status().code(), absl::StatusCode::kUnavailable);
  ASSERT_TRUE(bed_->StartVswitchd().ok());
  absl::StatusOr<uint64_t> count = absl::UnavailableError("not yet");
  for (int i = 0; i < 100 && !count.ok(); ++i) {
    count = of.CountFlows(cookie, ~uint64_t{0}, kTimeout);
    if (!count.ok()) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_TRUE(count.ok()) << count.status();
  EXPECT_EQ(*count, 0u);
}

TEST_F(NetdAdaptersTest, NetlinkCreatesAConfiguredVethAndRemovesItCompletely) {
  absl::StatusOr<std::string> netns = bed_->AddWorkloadNetns("w1");
  ASSERT_TRUE(netns.ok());
  const std::string node = NetdTestbed::NetnsPath(bed_->NodeNetns());
  InNetns(node, [&] {
    NetlinkWorkloadLinks links(kTimeout, kGroup);
    EXPECT_TRUE(links.CheckNetns(*netns).ok());
    EXPECT_TRUE(absl::StrContains(links.CheckNetns("missing").message(), "does not exist"));
    EXPECT_TRUE(absl::StrContains(links.CheckNetns(node).message(), "netd's own network namespace"));
    WorkloadLinks::LinkSpec spec{
        "sr0123456789ab",          *netns, "eth0", "02:53:cb:00:71:0a", *ParseIpv4("203.0.113.10"), 24,
        *ParseIpv4("203.0.113.1"), 1400,   "w1"};
    ASSERT_TRUE(links.Create(spec, kTimeout).ok());
    absl::StatusOr<WorkloadLinks::OwnedLinks> owned = links.ListOwned();
    ASSERT_TRUE(owned.ok()) << owned.status();
    ASSERT_EQ(owned->links.size(), 1u);
    EXPECT_EQ(owned->links[0].name, "sr0123456789ab");
    EXPECT_EQ(owned->links[0].exposure, "") << "every per-device guard in place";
    EXPECT_TRUE(*links.Exists("sr0123456789ab"));

    // The same name again in that netns: refused, and nothing new left behind.
    spec.host_name = "sr0123456789ac";
    absl::Status again = links.Create(spec, kTimeout);
    EXPECT_EQ(again.code(), absl::StatusCode::kFailedPrecondition) << again;
    EXPECT_FALSE(*links.Exists("sr0123456789ac"));
  });

  // Configured as a workload needs it, checked with the standard tools.
  const std::string addresses = *bed_->Ip({"-n", *netns, "-o", "addr", "show", "dev", "eth0"});
  EXPECT_TRUE(absl::StrContains(addresses, "inet 203.0.113.10/24 brd 203.0.113.255")) << addresses;
  const std::string link = *bed_->Ip({"-n", *netns, "-o", "link", "show", "dev", "eth0"});
  EXPECT_TRUE(absl::StrContains(link, "link/ether 02:53:cb:00:71:0a")) << link;
  EXPECT_TRUE(absl::StrContains(link, "mtu 1400")) << link;
  EXPECT_TRUE(absl::StrContains(link, ",UP")) << link;
  EXPECT_EQ(*bed_->Ip({"-n", *netns, "route", "show", "default"}),
            "default via 203.0.113.1 dev eth0 proto static \n");
  const std::string offload = *bed_->Ip({"netns", "exec", *netns, "/usr/sbin/ethtool", "-k", "eth0"});
  EXPECT_TRUE(absl::StrContains(offload, "tx-checksumming: off")) << offload;
  const std::string host = *bed_->Ip({"-n", bed_->NodeNetns(), "-d", "link", "show", "sr0123456789ab"});
  EXPECT_TRUE(absl::StrContains(host, "alias strongroom-netd workload w1")) << host;
  EXPECT_TRUE(absl::StrContains(host, "state UP")) << host;
  // Promiscuous already (ovs-vswitchd's own change would be one more link event) and without
  // IPv6 (whose routes ovs-vswitchd re-reads on every link change).
  EXPECT_TRUE(absl::StrContains(host, "PROMISC")) << host;
  const std::string host_addresses =
      *bed_->Ip({"-n", bed_->NodeNetns(), "addr", "show", "dev", "sr0123456789ab"});
  EXPECT_FALSE(absl::StrContains(host_addresses, "inet")) << host_addresses;
  // The node's own stack keeps its hands off it: no ARP, netd's group (the nftables guard drops
  // by it), no IPv4 forwarding, strict reverse-path filter, no ARP answers, no IPv6.
  EXPECT_TRUE(absl::StrContains(host, "NOARP")) << host;
  EXPECT_TRUE(absl::StrContains(host, absl::StrCat("group ", kGroup))) << host;
  EXPECT_EQ(Sysctl(*bed_, "ipv4", "sr0123456789ab", "forwarding"), "0");
  EXPECT_EQ(Sysctl(*bed_, "ipv4", "sr0123456789ab", "rp_filter"), "1");
  EXPECT_EQ(Sysctl(*bed_, "ipv4", "sr0123456789ab", "arp_ignore"), "8");
  EXPECT_EQ(Sysctl(*bed_, "ipv6", "sr0123456789ab", "disable_ipv6"), "1");
  // ... and the peer in the workload is an ordinary interface.
  EXPECT_FALSE(absl::StrContains(link, "NOARP")) << link;

  // Someone turns the guards off one by one (as a global `sysctl net.ipv4.ip_forward=1` does for
  // forwarding): the listing names each, and Isolate puts them all back.
  for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
           {"-n", bed_->NodeNetns(), "link", "set", "sr0123456789ab", "arp", "on", "group", "0"},
           {"-n", bed_->NodeNetns(), "addr", "add", "198.18.0.1/24", "dev", "sr0123456789ab"},
           {"netns", "exec", bed_->NodeNetns(), "/usr/sbin/sysctl", "-qw", "net.ipv4.ip_forward=1"},
           {"netns", "exec", bed_->NodeNetns(), "/usr/sbin/sysctl", "-qw", "net.ipv6.conf.sr0123456789ab.disable_ipv6=0"},
       }) {
    ASSERT_TRUE(bed_->Ip(args).ok()) << absl::StrJoin(args, " ");
  }
  InNetns(node, [&] {
    NetlinkWorkloadLinks links(kTimeout, kGroup);
    absl::StatusOr<WorkloadLinks::OwnedLinks> owned = links.ListOwned();
    ASSERT_TRUE(owned.ok() && owned->links.size() == 1u);
    const std::string exposure = owned->links[0].exposure;
    for (const char* gap : {"group is 0", "ARP is on", "IPv4 forwarding is on", "IPv6 is on", "address"}) {
      EXPECT_TRUE(absl::StrContains(exposure, gap)) << gap << " in: " << exposure;
    }
    ASSERT_TRUE(links.Isolate("sr0123456789ab").ok());
    owned = links.ListOwned();
    ASSERT_TRUE(owned.ok() && owned->links.size() == 1u);
    EXPECT_EQ(owned->links[0].exposure, "");
  });
  EXPECT_FALSE(absl::StrContains(*bed_->Ip({"-n", bed_->NodeNetns(), "addr", "show", "dev", "sr0123456789ab"}),
                                 "198.18.0.1"));

  InNetns(node, [&] {
    NetlinkWorkloadLinks links(kTimeout, kGroup);
    EXPECT_TRUE(links.Delete("sr0123456789ab").ok());
    EXPECT_TRUE(links.Delete("sr0123456789ab").ok()) << "idempotent";
    EXPECT_TRUE(links.ListOwned()->links.empty());
  });
  EXPECT_TRUE(bed_->Links(*netns, "eth")->empty()) << "the peer went with the host end";
}

// netd lists its veths while links come and go (ovs-vswitchd's, other workloads'). The kernel
// marks such a dump inconsistent, and however much churn there is the listing never fails and
// never makes a live veth look gone: an inconsistent listing says so, and an absence is then
// confirmed by name, as reconcile does (the drift check used to fail with "the list kept changing
// during 5 dumps in a row" while other suites ran).
TEST_F(NetdAdaptersTest, ListingOwnedVethsSurvivesLinksComingAndGoing) {
  absl::StatusOr<std::string> netns = bed_->AddWorkloadNetns("w1");
  ASSERT_TRUE(netns.ok());
  const std::string node = NetdTestbed::NetnsPath(bed_->NodeNetns());
  // A longer list makes each dump span several messages, so changes land in the middle of it.
  const std::string batch_path = bed_->ovs_dir() + "/churn.ip";
  {
    std::ofstream batch(batch_path);
    for (int i = 0; i < 150; ++i) batch << "link add chq" << i << " type veth peer name chr" << i << "\n";
  }
  ASSERT_TRUE(bed_->Ip({"-n", bed_->NodeNetns(), "-batch", batch_path}).ok());
  {
    std::ofstream churn(batch_path);
    for (int i = 0; i < 20; ++i) churn << "link add chx" << i << " type veth peer name chy" << i << "\n";
    for (int i = 0; i < 20; ++i) churn << "link del chx" << i << "\n";
  }
  std::atomic<bool> stop{false};
  std::thread churner([&] {
    // 40 link changes, then a pause: busy, but not a storm no dump could ever finish in.
    while (!stop) {
      bed_->Ip({"-n", bed_->NodeNetns(), "-batch", batch_path}).IgnoreError();
      absl::SleepFor(absl::Milliseconds(20));
    }
  });
  int failures = 0;
  int listings = 0;
  int inconsistent = 0;
  std::string first_failure;
  InNetns(node, [&] {
    NetlinkWorkloadLinks links(kTimeout, kGroup);
    ASSERT_TRUE(links.Create({"sr0123456789ab", *netns, "eth0", "02:53:cb:00:71:0a", *ParseIpv4("203.0.113.10"),
                              24, *ParseIpv4("203.0.113.1"), 1400, "w1"},
                             kTimeout)
                    .ok());
    const absl::Time end = absl::Now() + absl::Seconds(3);
    while (absl::Now() < end) {
      absl::StatusOr<WorkloadLinks::OwnedLinks> owned = links.ListOwned();
      if (!owned.ok()) {
        if (failures++ == 0) first_failure = owned.status().ToString();
        continue;
      }
      ++listings;
      if (!owned->complete) ++inconsistent;
      bool listed = false;
      for (const WorkloadLinks::OwnedLink& link : owned->links) {
        listed |= link.name == "sr0123456789ab";
        if (link.name != "sr0123456789ab" && failures++ == 0) first_failure = "listed " + link.name;
      }
      // Reconcile's rule: a veth a consistent listing lacks is gone; one an inconsistent listing
      // lacks is looked up.
      const bool looks_gone = !listed && (owned->complete || !*links.Exists("sr0123456789ab"));
      if (looks_gone && failures++ == 0) first_failure = owned->complete ? "missing from a consistent listing"
                                                                         : "missing, and Exists said so too";
    }
    stop = true;
    EXPECT_TRUE(links.Delete("sr0123456789ab").ok());
  });
  stop = true;
  churner.join();
  EXPECT_EQ(failures, 0) << "first: " << first_failure;  // the chq veths go with the node's netns
  EXPECT_GT(listings, 0);
  std::fprintf(stderr, "%d listings, %d of them inconsistent\n", listings, inconsistent);
}

// The node stack guard against the real nf_tables: made, verified, and put back whatever is done
// to it (a flush, a rule slipped in before the drop, a dormant table, a changed chain).
TEST_F(NetdAdaptersTest, TheNodeStackGuardIsMadeCheckedAndPutBack) {
  const std::string node = NetdTestbed::NetnsPath(bed_->NodeNetns());
  auto nft = [&](const std::vector<std::string>& args) {
    std::vector<std::string> argv = {"netns", "exec", bed_->NodeNetns(), "/usr/sbin/nft"};
    argv.insert(argv.end(), args.begin(), args.end());
    return bed_->Ip(argv);
  };
  InNetns(node, [&] {
    NftablesHostStackGuard guard(kGroup, kTimeout);
    absl::StatusOr<std::string> made = guard.Ensure();
    ASSERT_TRUE(made.ok()) << made.status();
    EXPECT_TRUE(absl::StrContains(*made, "table inet strongroom_netd is missing")) << *made;
    absl::StatusOr<std::string> again = guard.Ensure();
    ASSERT_TRUE(again.ok()) << again.status();
    EXPECT_EQ(*again, "") << "nothing changed, nothing to repair";
  });
  const std::string listed = *nft({"list", "ruleset"});
  for (const char* expected : {"table inet strongroom_netd", "table arp strongroom_netd",
                               "type filter hook prerouting priority -500; policy accept;",
                               "type filter hook postrouting priority -500; policy accept;",
                               "type filter hook input priority -500; policy accept;",
                               "type filter hook output priority -500; policy accept;",
                               "iifgroup 21330 counter packets 0 bytes 0 drop",
                               "oifgroup 21330 counter packets 0 bytes 0 drop"}) {
    EXPECT_TRUE(absl::StrContains(listed, expected)) << expected << " in:\n" << listed;
  }

  const std::vector<std::pair<std::string, std::vector<std::string>>> tamperings = {
      {"missing", {"flush", "ruleset"}},
      {"holds 2 rules", {"insert", "rule", "inet", "strongroom_netd", "from_workload_ports", "accept"}},
      {"dormant", {"add", "table", "arp", "strongroom_netd", "{", "flags", "dormant", ";", "}"}},
      {"is not netd's", {"add", "chain", "inet", "strongroom_netd", "extra"}},
      {"chain to_workload_ports is missing", {"delete", "chain", "arp", "strongroom_netd", "to_workload_ports"}},
  };
  for (const auto& [expected, args] : tamperings) {
    ASSERT_TRUE(nft(args).ok()) << absl::StrJoin(args, " ");
    InNetns(node, [&] {
      NftablesHostStackGuard guard(kGroup, kTimeout);
      absl::StatusOr<std::string> repaired = guard.Ensure();
      ASSERT_TRUE(repaired.ok()) << repaired.status();
      EXPECT_TRUE(absl::StrContains(*repaired, expected)) << expected << " in: " << *repaired;
      EXPECT_EQ(*guard.Ensure(), "");
    });
    EXPECT_EQ(*nft({"list", "ruleset"}), listed) << "after " << absl::StrJoin(args, " ");
  }

  // The watcher puts a flushed ruleset back on its own, within moments.
  InNetns(node, [&] {
    NftablesHostStackGuard guard(kGroup, kTimeout);
    ASSERT_TRUE(guard.Ensure().ok());
    std::atomic<int> repairs{0};
    guard.Watch([&](const absl::StatusOr<std::string>& result) {
      if (result.ok() && !result->empty()) ++repairs;
    });
    ASSERT_TRUE(nft({"flush", "ruleset"}).ok());
    const absl::Time flushed = absl::Now();
    while (repairs == 0 && absl::Now() - flushed < absl::Seconds(5)) absl::SleepFor(absl::Milliseconds(5));
    EXPECT_EQ(repairs, 1);
    std::fprintf(stderr, "ruleset back %.1f ms after the flush\n", absl::ToDoubleMilliseconds(absl::Now() - flushed));
    absl::StatusOr<std::vector<HostStackGuard::ChainCounters>> counters = guard.Counters();
    ASSERT_TRUE(counters.ok()) << counters.status();
    EXPECT_EQ(counters->size(), 4u);
  });
  EXPECT_EQ(*nft({"list", "ruleset"}), listed);
}

}  // namespace
}  // namespace strongroom::netd::testing
