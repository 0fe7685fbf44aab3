// netd_bench: what a port costs, at 1, 100 and 1,000 existing ports, against the CLI anchor.
// Built with the tests (build-netd/tests/bench/netd_bench), never run by ctest: it takes minutes
// and needs root. Run it on a quiet machine:
//
//   build-netd/tests/bench/netd_bench [--samples N] [--sizes 1,100,1000]
//
// Setup: the netd test bed (tests/netd/netd_testbed.h) without the netd daemon; PortManager runs
// in this process with the real adapters (the same code as the daemon, minus gRPC), on a thread
// inside the node namespace where ovs-vswitchd runs. Workload addresses come from 198.18.0.0/20
// (RFC 2544's benchmarking range: 1,000 ports do not fit in the /24 test ranges); they exist only
// inside the bench's own namespaces.
//
// Measured per sample (a probe workload allocated then released in its own netns):
//   allocate       AllocatePort's work: veth + netns setup, OVSDB port applied by ovs-vswitchd,
//                  then what is left to wait for of the flows (sent before the veth, applied
//                  meanwhile) and the barrier after which ovs-vswitchd forwards the new port's
//                  packets; then "first packet": until a UDP datagram from the workload reaches
//                  the outside (traffic flowing).
//   release        ReleasePort's work.
//   anchor         the same port + flows with the CLI: ovs-vsctl add-port (waits for
//                  ovs-vswitchd, prints the ofport) + ovs-ofctl --bundle add-flows (same flows);
//                  removal with ovs-ofctl --bundle del-flows + ovs-vsctl del-port. On a second
//                  bridge of the same ovs-vswitchd (so it pays for the same ports), because netd
//                  rightly removes any flow in br-secure it did not install.
//   veth setup     netd's netlink path vs the 6 `ip`/`ethtool` processes it replaces.
//   floor          before the samples of each size, at rest: one OpenFlow round trip, and one
//                  workload's flows sent and applied in one round trip (no port, no link change),
//                  i.e. what ovs-vswitchd alone needs; no allocation by any client can be faster.
#include <fcntl.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <exception>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "google/protobuf/text_format.h"
#include "services/netd/flow_plan.h"
#include "services/netd/netlink/host_stack_guard.h"
#include "services/netd/netlink/workload_links.h"
#include "services/netd/ovs/ovs_clients.h"
#include "services/netd/port_manager.h"
#include "tests/netd/netd_testbed.h"
#include "tests/netd/netns_probe.h"

namespace strongroom::netd::bench {
namespace {

using ::strongroom::netd::testing::NetdTestbed;

constexpr char kGatewayCidr[] = "198.18.0.1/20";
constexpr char kService[] = "192.0.2.10";
constexpr int kUdpPort = 5353;
// An OpenFlow port number no port has: the floor's flows are real flows that match nothing.
constexpr uint16_t kFloorOfport = 65000;

// A failed step: the benchmark stops, but unwinds so the test bed (its rig, namespaces and
// daemons) is torn down.
struct BenchFailure {
  std::string message;
};

template <typename T>
T Must(absl::StatusOr<T> value, const char* what) {
  if (!value.ok()) throw BenchFailure{absl::StrCat(what, ": ", value.status().ToString())};
  return *std::move(value);
}
void Must(const absl::Status& status, const char* what) {
  if (!status.ok()) throw BenchFailure{absl::StrCat(what, ": ", status.ToString())};
}

double Ms(absl::Duration d) { return absl::ToDoubleMilliseconds(d); }

struct Series {
  std::string name;
  std::vector<double> ms;
  double Percentile(double p) const {
    if (ms.empty()) return 0;
    std::vector<double> sorted = ms;
    std::sort(sorted.begin(), sorted.end());
    const size_t index = std::min(sorted.size() - 1, static_cast<size_t>(p * (sorted.size() - 1) + 0.5));
    return sorted[index];
  }
};

// Runs a command, aborting the benchmark if it fails.
std::string Run(const std::vector<std::string>& argv) {
  absl::StatusOr<Rig::ExecResult> r = RunWithTimeout(argv, absl::Seconds(60));
  if (!r.ok() || r->exit_code != 0) {
    throw BenchFailure{absl::StrCat(argv[0], " failed: ", r.ok() ? r->output : r.status().ToString())};
  }
  return r->output;
}

// ovs-appctl against the bed's ovs-vswitchd (diagnostics only).
absl::StatusOr<std::string> Appctl(NetdTestbed& bed, std::vector<std::string> args) {
  args.insert(args.begin(), {"/usr/bin/ovs-appctl", "-t", bed.ovs_dir() + "/ovs-vswitchd.ctl"});
  absl::StatusOr<Rig::ExecResult> r = RunWithTimeout(args, absl::Seconds(10));
  if (!r.ok()) return r.status();
  return r->output;
}

// Runs `body` on a thread inside `netns_path`; netd's adapters act in their thread's namespace.
void InNetns(const std::string& netns_path, const std::function<void()>& body) {
  std::exception_ptr failure;
  std::thread worker([&] {
    try {
      const int fd = open(netns_path.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0 || setns(fd, CLONE_NEWNET) != 0) throw BenchFailure{"cannot enter " + netns_path};
      close(fd);
      body();
    } catch (...) {
      failure = std::current_exception();
    }
  });
  worker.join();
  if (failure) std::rethrow_exception(failure);
}

NetdSettings BenchSettings(NetdTestbed& bed) {
  v1::NetdConfig config;
  const std::string text =
      absl::StrCat("ovsdb_remote: \"", bed.OvsdbRemote(), "\" openflow_remote: \"", bed.OpenFlowTarget(),
                   "\" bridge: \"br-secure\" uplink_port: \"uplink\" subnet: \"198.18.0.0/20\" "
                   "gateway: \"198.18.0.1\" max_ports: 4096");
  if (!google::protobuf::TextFormat::ParseFromString(text, &config)) throw BenchFailure{"bad settings"};
  return Must(SettingsFromConfig(config), "settings");
}

Policy BenchPolicy() {
  Policy policy;
  policy.egress.push_back({*ParseCidr("192.0.2.10/32", false), Protocol::kTcp, 8080, 8080, ""});
  policy.egress.push_back({*ParseCidr("192.0.2.10/32", false), Protocol::kUdp, kUdpPort, kUdpPort, ""});
  return policy;
}

struct Options {
  int samples = 30;
  std::vector<int> sizes = {1, 100, 1000};
};

Options ParseOptions(int argc, char** argv) {
  Options options;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--samples" && i + 1 < argc) {
      options.samples = std::max(3, std::atoi(argv[++i]));
    } else if (arg == "--sizes" && i + 1 < argc) {
      options.sizes.clear();
      for (absl::string_view size : absl::StrSplit(argv[++i], ',')) {
        int n = 0;
        if (absl::SimpleAtoi(size, &n) && n >= 1) options.sizes.push_back(n);
      }
    } else {
      std::fprintf(stderr, "usage: netd_bench [--samples N] [--sizes 1,100,1000]\n");
      std::exit(2);
    }
  }
  return options;
}

void Print(int existing, const std::vector<Series>& series) {
  for (const Series& s : series) {
    std::printf("| %5d | %-38s | %8.2f | %8.2f |\n", existing, s.name.c_str(), s.Percentile(0.5),
                s.Percentile(0.99));
  }
  std::fflush(stdout);
}

void Measure(const Options& options, NetdTestbed* bed);

int Main(int argc, char** argv) {
  const Options options = ParseOptions(argc, argv);
  InitOpenvSwitch();
  absl::StatusOr<std::unique_ptr<NetdTestbed>> bed = NetdTestbed::Start(/*start_netd=*/false);
  if (!bed.ok()) {
    std::fprintf(stderr, "netd_bench: test bed: %s\n", bed.status().ToString().c_str());
    return 1;
  }
  try {
    Measure(options, bed->get());
  } catch (const BenchFailure& failure) {
    std::fprintf(stderr, "netd_bench: %s\n", failure.message.c_str());
    return 1;  // the test bed's destructor tears everything down
  }
  return 0;
}

void Measure(const Options& options, NetdTestbed* bed) {
  const std::string node = NetdTestbed::NetnsPath(bed->NodeNetns());
  const std::string outside = NetdTestbed::NetnsPath(bed->OutsideNetns());
  Must(bed->Ip({"-n", bed->OutsideNetns(), "addr", "add", kGatewayCidr, "dev", "gw0"}).status(), "gateway");
  testing::UniqueFd receiver = Must(testing::UdpBind(outside, kUdpPort), "udp receiver");
  const std::string probe_ns = Must(bed->AddWorkloadNetns("probe"), "probe netns");
  const NetdSettings settings = BenchSettings(*bed);
  Must(bed->Vsctl({"add-br", "br-anchor", "--", "set", "bridge", "br-anchor",
                   absl::StrCat("datapath_type=", NetdTestbed::DatapathType()),
                   "fail-mode=secure"})
           .status(),
       "anchor bridge");
  const std::string anchor_target = "unix:" + bed->ovs_dir() + "/br-anchor.mgmt";

  std::printf("br-secure datapath_type=%s\n\n", NetdTestbed::DatapathType().c_str());
  std::printf("| existing ports | operation | p50 ms | p99 ms |\n|---|---|---|---|\n");
  InNetns(node, [&] {
    PortManager manager(settings, std::make_unique<ShimOvsDatabase>(settings.ovsdb_remote),
                        std::make_unique<ShimOpenFlowSwitch>(settings.openflow_remote),
                        std::make_unique<ShimOpenFlowSwitch>(settings.openflow_remote),
                        std::make_unique<NetlinkWorkloadLinks>(settings.ovs_timeout, settings.workload_link_group),
                        std::make_unique<NftablesHostStackGuard>(settings.workload_link_group, settings.ovs_timeout),
                        nullptr);
    Must(manager.Reconcile(), "first reconcile");
    manager.StartBackground();  // as in the daemon: the drift check runs during the measurement
    int fillers = 0;
    int probe_round = 0;
    for (int existing : options.sizes) {
      // Grow to `existing` ports (the probe makes existing + 1 while it is allocated).
      while (fillers < existing) {
        const std::string name = absl::StrCat("f", fillers);
        const std::string netns = Must(bed->AddWorkloadNetns(name), "filler netns");
        Must(manager.Allocate({name, netns, "eth0", name, BenchPolicy(), "bench"}).status(), "filler");
        ++fillers;
      }
      Series allocate{"allocate, total", {}}, without_link{"allocate, excluding veth/netns", {}},
          ovsdb{"  of which OVSDB port applied", {}}, flows{"  of which flows + barrier, left to wait", {}},
          own{"  of which netd's own work", {}}, first_packet{"allocate until first packet arrives", {}},
          release{"release, total", {}}, release_ovsdb{"  of which OVSDB port removed", {}},
          release_link{"  of which veth deleted", {}},
          release_flows{"  of which flows + conntrack, left to wait", {}},
          anchor_add{"anchor add: ovs-vsctl + ovs-ofctl --bundle", {}},
          anchor_del{"anchor del: ovs-ofctl + ovs-vsctl", {}}, netlink{"veth+netns setup: netlink", {}},
          cli{"veth+netns setup: 6 ip/ethtool processes", {}},
          floor_barrier{"floor at rest: one OpenFlow round trip", {}},
          floor_flows{"floor at rest: one workload's flows applied", {}};
      // Before each allocation, ovs-vswitchd finishes the work the previous sample left it (the
      // release and the CLI steps change links, and it reconfigures all ports for each change):
      // two barriers, untimed, so an iteration that began with a link change has ended too.
      ShimOpenFlowSwitch settle(settings.openflow_remote);
      // The floor under any allocation, whoever makes it: what ovs-vswitchd alone takes, with this
      // many ports on the bridge and nothing else going on (the link changes of the growth have
      // settled), to answer one OpenFlow round trip and to apply one workload's flows (no port, no
      // link change; one round trip, as netd sends them). An allocation cannot be faster than that.
      // On the anchor bridge, whose flows netd leaves alone; the datapath, and so the polling of
      // every port, is shared by all bridges of the ovs-vswitchd.
      ShimOpenFlowSwitch floor_switch(anchor_target);
      absl::SleepFor(absl::Seconds(3));
      for (int i = 0; i < options.samples; ++i) {
        Must(floor_switch.Barrier(settings.ovs_timeout), "settle");
        const absl::Time barrier_start = absl::Now();
        Must(floor_switch.Barrier(settings.ovs_timeout), "floor barrier");
        floor_barrier.ms.push_back(Ms(absl::Now() - barrier_start));
        const uint64_t floor_cookie = 0xf1000000 + i;
        std::vector<OpenFlowSwitch::FlowMod> floor_mods;
        for (const std::string& flow :
             WorkloadFlows({1, *ParseIpv4("198.18.0.1"), ""},
                           {floor_cookie, kFloorOfport, kFloorOfport, *ParseIpv4("198.18.15.251"),
                            MacForIpv4(*ParseIpv4("198.18.15.251"))},
                           BenchPolicy())) {
          floor_mods.push_back({OpenFlowSwitch::FlowMod::Command::kAdd, flow});
        }
        const absl::Time floor_start = absl::Now();
        Must(floor_switch.SendBundle(floor_mods, std::nullopt, std::nullopt, settings.ovs_timeout), "floor flows");
        Must(floor_switch.AwaitBundle(settings.ovs_timeout), "floor flows applied");
        floor_flows.ms.push_back(Ms(absl::Now() - floor_start));
        Must(floor_switch.ApplyBundle({{OpenFlowSwitch::FlowMod::Command::kDelete, MatchCookie(floor_cookie)}},
                                std::nullopt, settings.ovs_timeout),
             "floor flows removal");
        absl::SleepFor(absl::Milliseconds(100));
      }
      for (int i = 0; i < options.samples; ++i) {
        Must(settle.Barrier(settings.ovs_timeout), "settle");
        Must(settle.Barrier(settings.ovs_timeout), "settle");
        const std::string id = absl::StrCat("probe-", probe_round++);
        AllocateTimings timings;
        const absl::Time start = absl::Now();
        AllocateResult result =
            Must(manager.Allocate({id, probe_ns, "eth0", id, BenchPolicy(), "bench"}, &timings), "allocate");
        const absl::Time allocated = absl::Now();
        // Traffic flowing: a datagram from the new workload reaches the outside.
        const std::string payload = id;
        absl::Time arrived = absl::InfinitePast();
        for (int attempt = 0; attempt < 200 && arrived == absl::InfinitePast(); ++attempt) {
          Must(testing::UdpSend(NetdTestbed::NetnsPath(probe_ns), kService, kUdpPort, payload), "udp send");
          if (testing::UdpReceived(receiver.get(), payload, absl::Milliseconds(5))) arrived = absl::Now();
        }
        if (arrived == absl::InfinitePast()) {
          // What the switch and the workload looked like, to tell a netd bug from a lost packet.
          std::string state = absl::StrCat("no traffic from ", id, " (ofport ", result.port.ofport, ", ",
                                           FormatIpv4(result.port.record.address), ")\n");
          for (const auto& [what, output] : std::vector<std::pair<std::string, absl::StatusOr<std::string>>>{
                   {"flows", bed->Ofctl("dump-flows")},
                   {"ports", bed->Vsctl({"--columns=name,ofport,ofport_request,error", "list", "Interface"})},
                   {"workload", bed->Ip({"-n", probe_ns, "-s", "addr"})},
                   {"neighbours", bed->Ip({"-n", probe_ns, "neigh"})},
                   {"routes", bed->Ip({"-n", probe_ns, "route"})},
                   {"host end",
                    bed->Ip({"-n", bed->NodeNetns(), "-s", "link", "show", result.port.record.port_name})},
                   {"datapath flows", Appctl(*bed, {"dpctl/dump-flows", "-m"})},
                   {"datapath ports", Appctl(*bed, {"dpctl/show"})}}) {
            absl::StrAppend(&state, "---- ", what, "\n", output.ok() ? *output : output.status().ToString(),
                            "\n");
          }
          throw BenchFailure{state};
        }
        allocate.ms.push_back(Ms(allocated - start));
        without_link.ms.push_back(Ms(timings.ovsdb + timings.flows));
        ovsdb.ms.push_back(Ms(timings.ovsdb));
        flows.ms.push_back(Ms(timings.flows));
        own.ms.push_back(Ms((allocated - start) - timings.link - timings.ovsdb - timings.flows));
        first_packet.ms.push_back(Ms(arrived - start));
        const absl::Time release_start = absl::Now();
        ReleaseTimings released;
        Must(manager.Release(id, 0, &released).status(), "release");
        release.ms.push_back(Ms(absl::Now() - release_start));
        release_ovsdb.ms.push_back(Ms(released.ovsdb));
        release_link.ms.push_back(Ms(released.link));
        release_flows.ms.push_back(Ms(released.flows));

        // The anchor: the same port and flows through the CLI (veth made beforehand, untimed).
        const std::string veth = absl::StrCat("anc", i);
        Run({"/usr/sbin/ip", "link", "add", veth, "type", "veth", "peer", "name", veth + "p"});
        Run({"/usr/sbin/ip", "link", "set", veth, "up"});
        const absl::Time anchor_start = absl::Now();
        const std::string ofport_text =
            Run({"/usr/bin/ovs-vsctl", "--db=" + settings.ovsdb_remote, "--", "add-port", "br-anchor", veth,
                 "--", "get", "Interface", veth, "ofport"});
        int64_t ofport = 0;
        absl::SimpleAtoi(absl::StripAsciiWhitespace(ofport_text), &ofport);
        const uint64_t cookie = 0xa000 + probe_round;
        const std::string flow_file = bed->ovs_dir() + "/anchor.flows";
        {
          std::ofstream out(flow_file);
          for (const std::string& flow :
               WorkloadFlows({1, *ParseIpv4("198.18.0.1"), ""},
                             {cookie, ofport, static_cast<uint16_t>(ofport), *ParseIpv4("198.18.15.250"),
                              MacForIpv4(*ParseIpv4("198.18.15.250"))},
                             BenchPolicy())) {
            out << flow << "\n";
          }
        }
        Run({"/usr/bin/ovs-ofctl", "-O", "OpenFlow14", "--bundle", "add-flows", anchor_target, flow_file});
        anchor_add.ms.push_back(Ms(absl::Now() - anchor_start));
        const absl::Time anchor_del_start = absl::Now();
        Run({"/usr/bin/ovs-ofctl", "-O", "OpenFlow14", "--bundle", "del-flows", anchor_target,
             MatchCookie(cookie)});
        Run({"/usr/bin/ovs-vsctl", "--db=" + settings.ovsdb_remote, "del-port", "br-anchor", veth});
        anchor_del.ms.push_back(Ms(absl::Now() - anchor_del_start));
        Run({"/usr/sbin/ip", "link", "del", veth});

        // veth + netns setup alone: netlink (netd) vs the CLI it replaces.
        NetlinkWorkloadLinks links(settings.ovs_timeout, settings.workload_link_group);
        const absl::Time netlink_start = absl::Now();
        Must(links.Create({"srbench000000", probe_ns, "eth0", "02:53:c6:12:0f:fa",
                           *ParseIpv4("198.18.15.250"), 20, *ParseIpv4("198.18.0.1"), 1500, "bench"},
                          settings.ovs_timeout),
             "netlink setup");
        netlink.ms.push_back(Ms(absl::Now() - netlink_start));
        Must(links.Delete("srbench000000"), "netlink teardown");
        const absl::Time cli_start = absl::Now();
        Run({"/usr/sbin/ip", "link", "add", "srbench000001", "type", "veth", "peer", "name", "eth0", "netns",
             probe_ns});
        Run({"/usr/sbin/ip", "link", "set", "srbench000001", "up"});
        Run({"/usr/sbin/ip", "-n", probe_ns, "addr", "add", "198.18.15.250/20", "dev", "eth0"});
        Run({"/usr/sbin/ip", "-n", probe_ns, "link", "set", "eth0", "up"});
        Run({"/usr/sbin/ip", "-n", probe_ns, "route", "add", "default", "via", "198.18.0.1"});
        Run({"/usr/sbin/ip", "netns", "exec", probe_ns, "/usr/sbin/ethtool", "-K", "eth0", "tx", "off"});
        cli.ms.push_back(Ms(absl::Now() - cli_start));
        Run({"/usr/sbin/ip", "link", "del", "srbench000001"});
      }
      Print(existing, {allocate, without_link, ovsdb, flows, own, first_packet, release, release_ovsdb,
                       release_link, release_flows, anchor_add, anchor_del, netlink, cli, floor_barrier,
                       floor_flows});
    }
  });
}

}  // namespace
}  // namespace strongroom::netd::bench

int main(int argc, char** argv) { return strongroom::netd::bench::Main(argc, argv); }
