// host_agent_bench: StartWorkload and StopWorkload latency of host-agent's domain layer with the real runtime
// (runc), real scratch (loop + ext4, dm-crypt where the kernel has it), real overlayfs and, with --netd, the
// real netd + OVS test bed. Not a ctest test (docs/PERFORMANCE.md "## host-agent" says how to run it).
//
//   host_agent_bench [--runs N] [--encryption none|luks2|plain] [--scratch-mib M] [--netd]
//
// Per run: Start (until the entrypoint has exec'd) and Stop (SIGTERM honoured by the entrypoint, full scrub),
// with host-agent's own breakdown (scratch, overlay, network, runtime). In the same run, the anchor: a bare
// `runc run --detach` + `runc kill` + `runc delete` of the same rootfs with the same OCI config (user
// namespace, capabilities, seccomp) but no scratch, overlay or netd port. Prints p50/p99 of every column. The
// dm-crypt path: run it inside the qemu guest, e.g.
//   tests/guest/run-guest.sh -- build/tests/host_agent/host_agent_bench --encryption luks2 --runs 30
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "services/host_agent/manager.h"
#include "services/host_agent/container/oci_config.h"
#include "common/subprocess.h"
#include "tests/host_agent/test_env.h"
#ifdef SR_BENCH_WITH_NETD
#include "tests/netd/netd_testbed.h"
#endif

namespace strongroom::host_agent {
namespace {

class NullAudit : public AuditSink {
 public:
  void Record(const AuditEvent&) override {}
};

struct Options {
  int runs = 30;
  v1::ScratchEncryption encryption = v1::SCRATCH_ENCRYPTION_NONE;
  uint64_t scratch_mib = 1024;
  bool netd = false;
  std::string netd_address, pki;  // --inner mode (inside the test bed's node netns)
};

const char* kEntrypoint = "#!/bin/sh\ntrap 'exit 0' TERM\nsleep 100000 &\nwait\n";

double Ms(absl::Duration d) { return absl::ToDoubleMilliseconds(d); }

void Report(const std::string& name, std::vector<double> v) {
  if (v.empty()) return;
  std::sort(v.begin(), v.end());
  auto pct = [&](double p) {
    return v[std::min(v.size() - 1, static_cast<size_t>(p * (v.size() - 1) + 0.5))];
  };
  std::printf("  %-28s p50 %8.1f ms   p99 %8.1f ms   (min %.1f, max %.1f, n=%zu)\n", name.c_str(), pct(0.5),
              pct(0.99), v.front(), v.back(), v.size());
}

// The bare-runc anchor: same rootfs, same config (minus the overlay, scratch and netd port).
std::map<std::string, std::vector<double>> Anchor(const std::string& dir, int runs) {
  std::map<std::string, std::vector<double>> out;
  const std::string bundle = dir + "/anchor";
  std::filesystem::create_directories(bundle);
  ContainerParams p;
  p.id = "anchor";
  p.rootfs = dir + "/images/busybox";
  p.args = {"/usr/libexec/strongroom/entrypoint"};
  p.env = {"PATH=/bin"};
  p.hostname = "anchor";
  p.uid_base = testing::kUidBase;
  p.uid_count = 65536;
  std::ofstream(bundle + "/config.json") << BuildOciConfig(p);
  const std::string root = dir + "/anchor-runc";
  for (int i = 0; i < runs; ++i) {
    const std::string id = absl::StrCat("sr-bench-anchor-", i);
    const absl::Time t0 = absl::Now();
    auto child = Spawn({"/usr/sbin/runc", "--root", root, "run", "--detach", "--bundle", bundle, id},
                       dir + "/anchor.log");
    if (!child.ok() || WaitChild(*child) != 0) {
      std::fprintf(stderr, "anchor runc run failed: %s\n", testing::ReadFile(dir + "/anchor.log").c_str());
      break;
    }
    const absl::Time t1 = absl::Now();
    (void)Run({"/usr/sbin/runc", "--root", root, "kill", id, "KILL"}, absl::Seconds(10));
    (void)Run({"/usr/sbin/runc", "--root", root, "delete", "--force", id}, absl::Seconds(10));
    const absl::Time t2 = absl::Now();
    out["anchor runc run --detach"].push_back(Ms(t1 - t0));
    out["anchor runc kill+delete"].push_back(Ms(t2 - t1));
  }
  return out;
}

int Bench(const Options& opt) {
  const std::string dir = testing::MakeTempDir("sr-ha-bench");
  std::filesystem::create_directories(dir + "/images");
  if (!testing::BuildBusyboxImage(dir + "/images", "busybox", kEntrypoint).ok()) {
    testing::RemoveTree(dir);
    return 1;
  }
  ManagerOptions o;
  o.node = "bench";
  o.agent_id = "spiffe://strongroom.test/host-agent/bench";
  o.state_dir = dir + "/state";
  o.image_root = dir + "/images";
  o.allow_unencrypted_scratch = opt.encryption == v1::SCRATCH_ENCRYPTION_NONE;
  o.scratch_default_bytes = opt.scratch_mib << 20;
  o.default_grace = absl::Seconds(5);
  std::filesystem::create_directories(o.state_dir + "/runtime");
  std::unique_ptr<NetworkProvider> network = MakeLoopbackOnlyNetwork();
  if (!opt.netd_address.empty()) {
    v1::TlsFiles tls;
    tls.set_ca_file(opt.pki + "/ca.pem");
    tls.set_cert_file(opt.pki + "/host-agent.pem");
    tls.set_key_file(opt.pki + "/host-agent.key");
    auto n = MakeNetdNetwork(opt.netd_address, tls, "strongroom.test", "node1");
    if (!n.ok()) {
      std::fprintf(stderr, "%s\n", n.status().ToString().c_str());
      testing::RemoveTree(dir);
      return 1;
    }
    network = std::move(*n);
  }
  auto m = WorkloadManager::Create(o, MakeOciRuntime("runc", "/usr/sbin/runc", o.state_dir + "/runtime"),
                                   std::move(network), std::make_shared<NullAudit>());
  if (!m.ok()) {
    testing::RemoveTree(dir);
    return 1;
  }
  // On any failure: stop what runs through the manager, then remove the temp dir (nothing is left behind).
  auto fail = [&](const std::string& what) {
    std::fprintf(stderr, "%s\n", what.c_str());
    for (const v1::Workload& w : (*m)->List()) {
      (void)(*m)->Stop(w.spec().workload_id(), v1::STOP_REASON_OPERATOR, "", absl::Seconds(1), "bench");
    }
    m->reset();
    testing::RemoveTree(dir);
    return 1;
  };
  std::map<std::string, std::vector<double>> r;
  for (int i = 0; i < opt.runs; ++i) {
    v1::WorkloadSpec spec;
    spec.set_workload_id(absl::StrCat("wl-bench-", i));
    spec.set_kind(v1::WORKLOAD_KIND_CONTAINER);
    spec.mutable_image()->set_name("busybox");
    spec.set_whole_node(true);
    spec.mutable_scratch()->set_encryption(opt.encryption);
    if (opt.netd) {
      auto* rule = spec.add_egress_allowlist();
      rule->set_destination_cidr("192.0.2.10");
      rule->set_protocol(v1::PROTOCOL_TCP);
      rule->set_port_start(8080);
    }
    const absl::Time t0 = absl::Now();
    auto started = (*m)->Start(spec, "bench");
    const absl::Time t1 = absl::Now();
    if (!started.ok()) return fail(absl::StrCat("start ", i, ": ", started.status().ToString()));
    StepTimings s = (*m)->last_start_timings();
    auto stopped = (*m)->Stop(spec.workload_id(), v1::STOP_REASON_JOB_ENDED, "", absl::Seconds(5), "bench");
    const absl::Time t2 = absl::Now();
    if (!stopped.ok() || !stopped->scrub().clean()) {
      return fail(absl::StrCat("stop ", i, ": ",
                               stopped.ok() ? stopped->DebugString() : stopped.status().ToString()));
    }
    StepTimings e = (*m)->last_stop_timings();
    r["start total"].push_back(Ms(t1 - t0));
    r["start: scratch"].push_back(Ms(s.scratch));
    r["start: overlay"].push_back(Ms(s.overlay));
    r["start: netns + netd"].push_back(Ms(s.network));
    r["start: runtime"].push_back(Ms(s.runtime));
    r["stop total"].push_back(Ms(t2 - t1));
    r["stop: processes + runtime"].push_back(Ms(e.runtime));
    r["stop: netd release"].push_back(Ms(e.network));
    r["stop: overlay unmount"].push_back(Ms(e.overlay));
    r["stop: scratch destroy"].push_back(Ms(e.scratch));
  }
  auto anchor = Anchor(dir, opt.runs);
  std::printf("host-agent bench: %d runs, scratch %llu MiB %s, network %s, runtime runc\n", opt.runs,
              static_cast<unsigned long long>(opt.scratch_mib),
              v1::ScratchEncryption_Name(opt.encryption).c_str(),
              opt.netd ? "netd (real OVS)" : "loopback-only netns");
  for (const char* k : {"start total", "start: scratch", "start: overlay", "start: netns + netd",
                        "start: runtime", "stop total", "stop: processes + runtime", "stop: netd release",
                        "stop: overlay unmount", "stop: scratch destroy"}) {
    Report(k, r[k]);
  }
  for (auto& [k, v] : anchor) Report(k, v);
  m->reset();
  testing::RemoveTree(dir);
  return 0;
}

}  // namespace
}  // namespace strongroom::host_agent

int main(int argc, char** argv) {
  using namespace strongroom::host_agent;
  Options opt;
  bool inner = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&] { return i + 1 < argc ? std::string(argv[++i]) : std::string(); };
    if (a == "--runs")
      opt.runs = std::atoi(next().c_str());
    else if (a == "--scratch-mib")
      opt.scratch_mib = std::strtoull(next().c_str(), nullptr, 10);
    else if (a == "--netd")
      opt.netd = true;
    else if (a == "--inner")
      inner = true;
    else if (a == "--netd-address")
      opt.netd_address = next();
    else if (a == "--pki")
      opt.pki = next();
    else if (a == "--encryption") {
      const std::string e = next();
      opt.encryption = e == "luks2"   ? strongroom::v1::SCRATCH_ENCRYPTION_LUKS2_NO_KEYSLOT
                       : e == "plain" ? strongroom::v1::SCRATCH_ENCRYPTION_PLAIN_DMCRYPT
                                      : strongroom::v1::SCRATCH_ENCRYPTION_NONE;
    } else {
      std::fprintf(stderr,
                   "usage: host_agent_bench [--runs N] [--encryption none|luks2|plain] [--scratch-mib M] "
                   "[--netd]\n");
      return 2;
    }
  }
  if (opt.netd && !inner) {
#ifdef SR_BENCH_WITH_NETD
    // Run the loop inside the test bed's node netns (where netd is reachable), as host-agent would be
    // deployed.
    auto tb = strongroom::netd::testing::NetdTestbed::Start();
    if (!tb.ok()) {
      std::fprintf(stderr, "netd test bed: %s\n", tb.status().ToString().c_str());
      return 1;
    }
    const std::string address = strongroom::netd::testing::NetdTestbed::NetdAddress();
    std::vector<std::string> args = {std::filesystem::canonical("/proc/self/exe").string(),
                                     "--inner",
                                     "--netd",
                                     "--netd-address",
                                     address,
                                     "--pki",
                                     (*tb)->rig().state_dir() + "/pki",
                                     "--runs",
                                     std::to_string(opt.runs),
                                     "--scratch-mib",
                                     std::to_string(opt.scratch_mib)};
    auto r = (*tb)->rig().Exec("node", args, absl::Minutes(30));
    if (!r.ok()) {
      std::fprintf(stderr, "%s\n", r.status().ToString().c_str());
      return 1;
    }
    std::printf("%s", r->output.c_str());
    if (r->exit_code != 0) (*tb)->DumpLogs();
    return r->exit_code;
#else
    std::fprintf(stderr, "built without the netd test bed\n");
    return 2;
#endif
  }
  return Bench(opt);
}
