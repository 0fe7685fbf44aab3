// Acceptance of the egress guarantee, tried as an attacker would: from inside a workload, as root
// there (raw frames of every kind, tests/netd/egress_probe.py) and as the job's unprivileged user
// (ordinary sockets, also with the workload's ARP cache pointing the gateway at the node's veth),
// while witnesses on every other host of the rig, the uplink, the rig's switch, another workload
// and the node itself (its interfaces, and raw sockets that see what its own stack delivers)
// record every frame that carries a probe's marker. Nothing but the allowlisted flows may arrive
// anywhere; the node's stack may neither forward, deliver nor answer.
//
// The node is a router here (ip_forward=1, a route to the services), as on a real compute node:
// that is what made the bypass through its own stack possible.
#include <signal.h>
#include <sys/stat.h>

#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "strongroom/v1/netd.pb.h"
#include "tests/netd/netd_testbed.h"
#include "tests/rig/files.h"

namespace strongroom::netd::testing {
namespace {

constexpr char kProbe[] = SR_EGRESS_PROBE;
constexpr char kPython[] = "/usr/bin/python3";
constexpr char kNodeIp[] = "198.51.100.13";
constexpr char kClientIp[] = "198.51.100.20";
constexpr char kOutsideIp[] = "198.51.100.30";
constexpr int kAllowedUdpPort = 5353;
const std::string kAllowed = EgressJson(
    {{"192.0.2.10/32", "PROTOCOL_TCP", kEchoPort}, {"192.0.2.10/32", "PROTOCOL_UDP", kAllowedUdpPort}});

// The analysis (egress_probe.py analyze), parsed.
struct Findings {
  std::vector<std::string> leaks;               // "point: kind (where): probes"
  std::vector<std::string> through;             // "probes of sent  kind": what got through anywhere
  std::map<std::string, int> allowed_by_point;  // allowlisted probes seen per witness
  int sent = 0;
};

class NetdEgressTest : public NetdTestbedTest<> {
 protected:
  void SetUp() override {
    NetdTestbedTest::SetUp();
    if (HasFatalFailure()) return;
    dir_ = bed_->rig().state_dir() + "/egress";
    ASSERT_EQ(mkdir(dir_.c_str(), 0700), 0);
  }

  v1::Port Allocate(const std::string& workload) {
    absl::StatusOr<std::string> netns = bed_->AddWorkloadNetns(workload);
    EXPECT_TRUE(netns.ok()) << netns.status();
    netns_[workload] = netns.ok() ? *netns : "";
    CtlResult r = bed_->Ctl(Caller::kHostAgent, "AllocatePort",
                            absl::StrCat("{\"workload_id\":\"", workload, "\",\"netns\":\"", netns_[workload],
                                         "\",\"egress_allowlist\":", kAllowed, "}"));
    EXPECT_EQ(r.exit_code, 0) << r.output;
    v1::AllocatePortResponse response;
    EXPECT_TRUE(google::protobuf::util::JsonStringToMessage(r.json, &response).ok()) << r.output;
    return response.port();
  }

  // A compute node routes: the precondition of the bypass through its own stack.
  void RouteLikeAComputeNode() {
    const std::string node = bed_->NodeNetns();
    ASSERT_TRUE(bed_->Ip({"netns", "exec", node, "/usr/sbin/sysctl", "-qw", "net.ipv4.ip_forward=1"}).ok());
    ASSERT_TRUE(bed_->Ip({"-n", node, "route", "add", "192.0.2.0/24", "via", kOutsideIp}).ok());
  }

  // A VM's port: a tap from netd, opened by tap_bridge in the node's netns, whose private tap
  // eth0 in a fresh namespace gets netd's MAC, address and route (what the guest would do).
  v1::Port AllocateTap(const std::string& workload) {
    absl::StatusOr<std::string> netns = bed_->AddWorkloadNetns(workload);
    EXPECT_TRUE(netns.ok()) << netns.status();
    netns_[workload] = netns.ok() ? *netns : "";
    CtlResult r = bed_->Ctl(Caller::kHostAgent, "AllocatePort",
                            absl::StrCat("{\"workload_id\":\"", workload, "\",\"tap\":{},\"egress_allowlist\":",
                                         kAllowed, "}"));
    EXPECT_EQ(r.exit_code, 0) << r.output;
    v1::AllocatePortResponse response;
    EXPECT_TRUE(google::protobuf::util::JsonStringToMessage(r.json, &response).ok()) << r.output;
    const v1::NetworkAttachment& a = response.port().attachment();
    const std::string ready = absl::StrCat(dir_, "/", workload, ".tap.ready");
    absl::StatusOr<pid_t> bridge = bed_->rig().Spawn(
        "node", absl::StrCat(dir_, "/", workload, ".tap.log"),
        {SR_TAP_BRIDGE, a.port_name(), NetdTestbed::NetnsPath(netns_[workload]), "eth0", ready});
    EXPECT_TRUE(bridge.ok()) << bridge.status();
    const absl::Time deadline = absl::Now() + absl::Seconds(30);
    struct stat st;
    while (stat(ready.c_str(), &st) != 0 && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(20));
    EXPECT_EQ(stat(ready.c_str(), &st), 0) << ReadFileOrEmpty(absl::StrCat(dir_, "/", workload, ".tap.log"));
    const std::string& ns = netns_[workload];
    for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
             {"-n", ns, "link", "set", "eth0", "address", a.mac(), "mtu", absl::StrCat(a.mtu()), "up"},
             {"-n", ns, "addr", "add", absl::StrCat(a.ipv4_address(), "/", a.prefix_length()), "dev", "eth0"},
             {"-n", ns, "route", "add", "default", "via", a.gateway()}}) {
      absl::StatusOr<std::string> done = bed_->Ip(args);
      EXPECT_TRUE(done.ok()) << absl::StrJoin(args, " ") << ": " << done.status();
    }
    return response.port();
  }

  // The whole matrix from w1 (its netns holds eth0, a veth or the VM stand-in's tap), with w2
  // another workload; then the drop counters, the node stack guard's counters, and release.
  void AttackFrom(const v1::Port& w1, const v1::Port& w2) {
    const std::string node = bed_->NodeNetns();
    const std::string w1_port = w1.attachment().port_name();
    const std::string w2_port = w2.attachment().port_name();
    const std::string node_veth_mac = NodeLinkMac(w1_port);
    ASSERT_FALSE(node_veth_mac.empty());

    // Witnesses everywhere but in w1.
    StartWitness("client", bed_->ClientNetns());
    StartWitness("outside", bed_->OutsideNetns());
    StartWitness("switch", bed_->SwitchNetns());
    StartWitness("w2", netns_["w2"]);
    // On the node: everything but the probes arriving on w1's veth, where OVS reads them; and any
    // frame the node's own stack sends on a workload veth.
    StartWitness("node", node, {"--exclude-received", w1_port, "--own-stack", w1_port, "--own-stack", w2_port});

    const std::string targets = absl::StrCat("[\"", kClientIp, "\",\"", kNodeIp, "\",\"", kOutsideIp, "\",\"", kGateway,
                                             "\",\"", kServiceB, "\",\"", kServiceA, "\",\"",
                                             w2.attachment().ipv4_address(), "\",\"203.0.113.255\"]");
    Probe("w1", "attack",
          absl::StrCat("{\"interface\":\"eth0\",\"ip\":\"", w1.attachment().ipv4_address(), "\",\"mac\":\"",
                       w1.attachment().mac(), "\",\"gateway\":\"", kGateway, "\",\"gateway_mac\":\"",
                       kGatewayMac, "\",\"node_veth_mac\":\"", node_veth_mac, "\",\"other_workload_mac\":\"",
                       w2.attachment().mac(), "\",\"spoof_ip\":\"198.51.100.99\",\"targets\":", targets,
                       ",\"allowed_tcp\":[\"", kServiceA, "\",", kEchoPort, "],\"allowed_udp\":[\"", kServiceA, "\",",
                       kAllowedUdpPort, "]}"));
    const std::string user_plan = absl::StrCat("\"targets\":", targets, ",\"subnet_broadcast\":\"203.0.113.255\"");
    Probe("w1", "user", absl::StrCat("{\"kind\":\"job user's UDP\",\"first_id\":500000,", user_plan, "}"));
    // The state the attack found on one node: the workload's ARP entry for its gateway pointing at
    // the node's veth (the node's stack had answered for it), and then at another workload.
    for (const auto& [mac, first_id] : {std::pair<std::string, int>{node_veth_mac, 600000},
                                        {w2.attachment().mac(), 700000}}) {
      ASSERT_TRUE(bed_->Ip({"-n", netns_["w1"], "neigh", "replace", kGateway, "lladdr", mac, "dev", "eth0", "nud",
                            "permanent"})
                      .ok());
      Probe("w1", "user",
            absl::StrCat("{\"kind\":\"job user's UDP, gateway ARP entry poisoned\",\"first_id\":", first_id, ",",
                         user_plan, "}"));
    }
    absl::SleepFor(absl::Seconds(2));  // stragglers, and OVS's flow statistics catching up
    StopWitnesses();

    Findings findings = Analyze();
    std::fprintf(stderr, "%d probes sent; probes that got through anywhere, per kind:\n", findings.sent);
    for (const std::string& line : findings.through) std::fprintf(stderr, "  %s\n", line.c_str());
    EXPECT_GT(findings.sent, 3000);
    EXPECT_TRUE(findings.leaks.empty()) << absl::StrJoin(findings.leaks, "\n");
    // The allowed path works, and its frames went only where they should.
    EXPECT_GT(findings.allowed_by_point["outside"], 0) << "the allowlisted flows did not arrive";
    for (const char* elsewhere : {"client", "switch", "w2"}) {
      EXPECT_EQ(findings.allowed_by_point[elsewhere], 0) << elsewhere;
    }

    // Operators see what was dropped, by reason. The counters are ovs-vswitchd's flow statistics, which its
    // revalidators bring up to date within about a second (longer under emulation).
    const std::vector<v1::DropReason> expected_reasons = {
        v1::DROP_REASON_VLAN_TAGGED, v1::DROP_REASON_ARP_NOT_ALLOWED, v1::DROP_REASON_SPOOFED,
        v1::DROP_REASON_IPV6,        v1::DROP_REASON_OTHER_PROTOCOL,  v1::DROP_REASON_EGRESS_NOT_ALLOWED};
    std::map<v1::DropReason, uint64_t> dropped;
    std::string port_json;
    for (const absl::Time counted = absl::Now() + absl::Seconds(60);;) {
      CtlResult get = bed_->Ctl(Caller::kOperator, "GetPort", R"({"workload_id":"w1"})");
      ASSERT_EQ(get.exit_code, 0) << get.output;
      v1::GetPortResponse port;
      ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(get.json, &port).ok()) << get.json;
      port_json = get.json;
      for (const v1::DropCounter& counter : port.port().dropped()) dropped[counter.reason()] = counter.packets();
      bool all = true;
      for (v1::DropReason reason : expected_reasons) all &= dropped[reason] > 0;
      if (all || absl::Now() > counted) break;
      absl::SleepFor(absl::Milliseconds(500));
    }
    for (v1::DropReason reason : expected_reasons) {
      EXPECT_GT(dropped[reason], 0u) << v1::DropReason_Name(reason) << " in " << port_json;
    }
    // And so does Prometheus (refreshed about every second).
    std::string metrics;
    const absl::Time deadline = absl::Now() + absl::Seconds(60);
    for (;;) {
      absl::StatusOr<std::string> scraped = bed_->Metrics();
      ASSERT_TRUE(scraped.ok()) << scraped.status();
      metrics = *scraped;
      if (absl::StrContains(metrics, "strongroom_netd_port_dropped_packets_total{workload=\"w1\",reason=\"vlan_tagged\"}") &&
          !absl::StrContains(metrics, "{workload=\"w1\",reason=\"vlan_tagged\"} 0\n")) {
        break;
      }
      ASSERT_LT(absl::Now(), deadline) << metrics;
      absl::SleepFor(absl::Milliseconds(200));
    }
    EXPECT_TRUE(absl::StrContains(metrics, "strongroom_netd_node_stack_guard_ok 1")) << metrics;
    EXPECT_TRUE(absl::StrContains(metrics, "strongroom_service_serving{service=\"strongroom.v1.Netd\",reason=\"\"} 1"))
        << metrics;

    // On the userspace datapath the node's stack got a copy of every probe, and the guard dropped it
    // (ARP never reaches its hook: the kernel drops ARP on a NOARP device before that).
    absl::StatusOr<std::string> guard =
        bed_->Ip({"netns", "exec", node, "/usr/sbin/nft", "list", "table", "inet", "strongroom_netd"});
    ASSERT_TRUE(guard.ok()) << guard.status();
    std::fprintf(stderr, "%s", guard->c_str());
    if (NetdTestbed::DatapathType() == "netdev") {
      EXPECT_FALSE(absl::StrContains(*guard, "iifgroup 21330 counter packets 0 ")) << *guard;
    }

    // After the workloads go, only the base flows remain, and no flow ever matched a tagged frame
    // (the allow flows all require vlan_tci=0; tables 1 and 2 are reached only through them).
    for (const char* workload : {"w1", "w2"}) {
      ASSERT_EQ(bed_->Ctl(Caller::kHostAgent, "ReleasePort", absl::StrCat("{\"workload_id\":\"", workload, "\"}"))
                    .exit_code,
                0);
    }
    absl::StatusOr<std::string> dump = bed_->Ofctl("dump-flows");
    ASSERT_TRUE(dump.ok());
    for (absl::string_view line : absl::StrSplit(*dump, '\n', absl::SkipEmpty())) {
      if (!absl::StrContains(line, "cookie=")) continue;
      EXPECT_TRUE(absl::StrContains(line, "cookie=0x5352000000000000,")) << "not a base flow: " << line;
    }
  }

  // `argv` inside netns `ns` (through `ip netns exec`, which also gives it that namespace's /sys).
  std::vector<std::string> In(const std::string& ns, std::vector<std::string> argv) {
    argv.insert(argv.begin(), {"/usr/sbin/ip", "netns", "exec", ns});
    return argv;
  }

  // Starts a witness in `ns`; returns once it listens.
  void StartWitness(const std::string& point, const std::string& ns, std::vector<std::string> flags = {}) {
    std::vector<std::string> argv = {kPython, kProbe, "capture", Capture(point), dir_ + "/" + point + ".ready"};
    argv.insert(argv.end(), flags.begin(), flags.end());
    absl::StatusOr<pid_t> pid = bed_->rig().Spawn("client", dir_ + "/" + point + ".log", In(ns, argv));
    ASSERT_TRUE(pid.ok()) << pid.status();
    witnesses_.emplace_back(point, *pid);
    const absl::Time deadline = absl::Now() + absl::Seconds(60);
    struct stat st;
    while (stat((dir_ + "/" + point + ".ready").c_str(), &st) != 0) {
      ASSERT_LT(absl::Now(), deadline) << point << " witness did not start: "
                                       << ReadFileOrEmpty(dir_ + "/" + point + ".log");
      absl::SleepFor(absl::Milliseconds(20));
    }
  }
  std::string Capture(const std::string& point) { return dir_ + "/" + point + ".json"; }

  // Stops every witness and waits for its record.
  void StopWitnesses() {
    for (const auto& [point, pid] : witnesses_) ASSERT_TRUE(bed_->rig().Kill(pid, SIGTERM).ok());
    for (const auto& [point, pid] : witnesses_) {
      const absl::Time deadline = absl::Now() + absl::Seconds(30);
      struct stat st;
      while (stat(Capture(point).c_str(), &st) != 0) {
        ASSERT_LT(absl::Now(), deadline) << point << ": " << ReadFileOrEmpty(dir_ + "/" + point + ".log");
        absl::SleepFor(absl::Milliseconds(20));
      }
      ASSERT_TRUE(bed_->rig().Stop(pid).ok());
    }
  }

  // Runs the probe in workload `workload` with a plan, recording its manifest.
  void Probe(const std::string& workload, const std::string& mode, const std::string& plan_json) {
    const std::string name = absl::StrCat(mode, manifests_.size());
    const std::string plan = dir_ + "/" + name + ".plan.json";
    std::ofstream(plan) << plan_json;
    manifests_.push_back(dir_ + "/" + name + ".manifest.json");
    absl::StatusOr<Rig::ExecResult> r = bed_->rig().Exec(
        "client", In(netns_[workload], {kPython, kProbe, mode, plan, manifests_.back()}), absl::Seconds(240));
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_EQ(r->exit_code, 0) << r->output;
    std::fprintf(stderr, "%s: %s", name.c_str(), r->output.c_str());
  }

  Findings Analyze() {
    std::vector<std::string> argv = {kPython, kProbe, "analyze"};
    argv.insert(argv.end(), manifests_.begin(), manifests_.end());
    argv.push_back("--");
    for (const auto& [point, pid] : witnesses_) argv.push_back(Capture(point));
    absl::StatusOr<Rig::ExecResult> r = RunWithTimeout(argv, absl::Seconds(120));
    EXPECT_TRUE(r.ok() && r->exit_code == 0) << (r.ok() ? r->output : r.status().ToString());
    Findings findings;
    if (!r.ok()) return findings;
    for (absl::string_view line : absl::StrSplit(r->output, '\n', absl::SkipEmpty())) {
      std::vector<std::string> fields = absl::StrSplit(line.substr(line.find(' ') + 1), '|');
      int count = 0;
      if (absl::StartsWith(line, "LEAK ") && fields.size() == 3) {
        findings.leaks.push_back(absl::StrCat(fields[0], ": ", fields[1], ": ", fields[2]));
      } else if (absl::StartsWith(line, "THROUGH ") && fields.size() == 3) {
        findings.through.push_back(absl::StrCat(fields[1], " of ", fields[2], "  ", fields[0]));
      } else if (absl::StartsWith(line, "ALLOWED ") && fields.size() == 2 && absl::SimpleAtoi(fields[1], &count)) {
        findings.allowed_by_point[fields[0]] = count;
      } else if (absl::StartsWith(line, "SENT ") && fields.size() == 2 && absl::SimpleAtoi(fields[1], &count)) {
        findings.sent += count;
      }
    }
    return findings;
  }

  std::string NodeLinkMac(const std::string& link) {
    absl::StatusOr<std::string> mac = bed_->Ip({"netns", "exec", bed_->NodeNetns(), "/bin/cat",
                                                absl::StrCat("/sys/class/net/", link, "/address")});
    return mac.ok() ? std::string(absl::StripAsciiWhitespace(*mac)) : "";
  }

  std::string dir_;
  std::map<std::string, std::string> netns_;               // workload -> netns name
  std::vector<std::pair<std::string, pid_t>> witnesses_;    // point -> its PID
  std::vector<std::string> manifests_;                     // what each probe run sent
};

TEST_F(NetdEgressTest, NothingButTheAllowlistLeavesAWorkloadByAnyPath) {
  RouteLikeAComputeNode();
  const v1::Port w1 = Allocate("w1");
  const v1::Port w2 = Allocate("w2");
  AttackFrom(w1, w2);
}

// The same matrix from a VM: w1's port is a tap (AllocatePort with target tap), opened by
// tap_bridge as qemu would open it, and the VM's side is a namespace whose eth0 is tap_bridge's
// private tap, configured as a guest configures its NIC. w2 is a container beside it.
TEST_F(NetdEgressTest, NothingButTheAllowlistLeavesAVmsTapByAnyPath) {
  RouteLikeAComputeNode();
  const v1::Port w1 = AllocateTap("w1");
  ASSERT_TRUE(w1.tap()) << w1.DebugString();
  const v1::Port w2 = Allocate("w2");
  const std::string link = *bed_->Ip({"-n", bed_->NodeNetns(), "-d", "link", "show", w1.attachment().port_name()});
  ASSERT_TRUE(absl::StrContains(link, "tun type tap")) << link;
  AttackFrom(w1, w2);
}

}  // namespace
}  // namespace strongroom::netd::testing
