#include "tests/netd/netd_testbed.h"

#include "tests/rig/files.h"

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"

namespace strongroom::netd::testing {
namespace {

constexpr char kTrustDomain[] = "strongroom.test";
constexpr char kNodeIp[] = "198.51.100.13";
constexpr char kClientIp[] = "198.51.100.20";
constexpr char kOutsideIp[] = "198.51.100.30";
constexpr int kGrpcPort = 7443;
constexpr int kMetricsPort = 9464;
constexpr absl::Duration kCommandTimeout = absl::Seconds(20);

absl::StatusOr<std::string> Run(const std::vector<std::string>& argv,
                                absl::Duration timeout = kCommandTimeout) {
  absl::StatusOr<Rig::ExecResult> r = RunWithTimeout(argv, timeout);
  if (!r.ok()) return r.status();
  if (r->exit_code != 0) {
    return absl::InternalError(
        absl::StrCat(absl::StrJoin(argv, " "), ": exit ", r->exit_code, ": ", r->output));
  }
  return r->output;
}

bool Exists(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0;
}

std::string CredentialPrefix(const std::string& pki, Caller caller) {
  switch (caller) {
    case Caller::kHostAgent:
      return pki + "/host-agent";
    case Caller::kOtherNodeHostAgent:
      return pki + "/host-agent-other";
    case Caller::kOperator:
      return pki + "/operator";
    case Caller::kBackend:
      return pki + "/backend";
    case Caller::kNetd:
      return pki + "/netd-client";
  }
  return "";
}

std::string RulesJson(const std::vector<RuleSpec>& rules, const char* cidr_field) {
  std::vector<std::string> items;
  for (const RuleSpec& r : rules) {
    std::string item = absl::StrCat("{\"", cidr_field, "\":\"", r.cidr, "\",\"protocol\":\"", r.protocol,
                                    "\",\"port_start\":", r.port_start);
    if (r.port_end != 0) absl::StrAppend(&item, ",\"port_end\":", r.port_end);
    items.push_back(item + "}");
  }
  return absl::StrCat("[", absl::StrJoin(items, ","), "]");
}

}  // namespace

std::string EgressJson(const std::vector<RuleSpec>& rules) { return RulesJson(rules, "destination_cidr"); }
std::string IngressJson(const std::vector<RuleSpec>& rules) { return RulesJson(rules, "source_cidr"); }

absl::StatusOr<std::unique_ptr<NetdTestbed>> NetdTestbed::Start(bool start_netd) {
  std::unique_ptr<NetdTestbed> bed(new NetdTestbed());
  absl::StatusOr<std::unique_ptr<Rig>> rig = Rig::Create(SR_RIG_SH);
  if (!rig.ok()) return rig.status();
  bed->rig_ = *std::move(rig);
  // Names the rig in the test's output, so a leftover (after a crash) can be traced to its test.
  std::fprintf(stderr, "netd test bed: rig %s in %s\n", bed->rig_->id().c_str(),
               bed->rig_->state_dir().c_str());
  if (absl::Status s = bed->Setup(start_netd); !s.ok()) {
    bed->DumpLogs();
    return s;
  }
  return bed;
}

NetdTestbed::~NetdTestbed() {
  // Rig::Down stops every process spawned in it (ours included) and deletes every sr<id>-*
  // namespace, the workload ones too; the veths and OVS's tap devices go with them.
  if (!rig_) return;
  absl::Status down = rig_->Down();
  if (!down.ok()) {
    // On a loaded machine a process can outlive rig.sh's SIGKILL wait; a second pass finishes.
    std::this_thread::sleep_for(std::chrono::seconds(2));
    down = rig_->Down();
    if (!down.ok()) std::fprintf(stderr, "netd test bed: teardown failed: %s\n", down.ToString().c_str());
  }
}

absl::Status NetdTestbed::Pki(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {SR_PKI_TOOL};
  argv.insert(argv.end(), args.begin(), args.end());
  return Run(argv, absl::Seconds(30)).status();
}

absl::StatusOr<pid_t> NetdTestbed::SpawnOvs(const std::string& binary, const std::vector<std::string>& args) {
  // OVS_* in the daemon's own environment, or it looks for /var/run/openvswitch (notes/ovs.md).
  std::vector<std::string> argv = {"env",
                                   "OVS_RUNDIR=" + ovs_dir_,
                                   "OVS_DBDIR=" + ovs_dir_,
                                   "OVS_LOGDIR=" + ovs_dir_,
                                   "OVS_SYSCONFDIR=" + ovs_dir_,
                                   binary};
  argv.insert(argv.end(), args.begin(), args.end());
  return rig_->Spawn("node", state_ + "/" + binary + ".out", argv);
}

absl::Status NetdTestbed::StartOvsdb() {
  absl::StatusOr<pid_t> pid =
      SpawnOvs("ovsdb-server",
               {ovs_dir_ + "/conf.db", "--remote=punix:" + ovs_dir_ + "/db.sock",
                "--unixctl=" + ovs_dir_ + "/ovsdb-server.ctl", "--pidfile=" + ovs_dir_ + "/ovsdb-server.pid",
                "--log-file=" + ovs_dir_ + "/ovsdb-server.log", "-vconsole:off"});
  if (!pid.ok()) return pid.status();
  ovsdb_pid_ = *pid;
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (absl::Now() < deadline) {
    if (Exists(ovs_dir_ + "/db.sock") && Vsctl({"--no-wait", "show"}).ok()) return absl::OkStatus();
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return absl::UnavailableError("ovsdb-server did not start: " + ReadFileOrEmpty(ovs_dir_ + "/ovsdb-server.log"));
}

absl::Status NetdTestbed::StopOvsdb() {
  if (ovsdb_pid_ == 0) return absl::OkStatus();
  absl::Status s = rig_->Stop(ovsdb_pid_);
  ovsdb_pid_ = 0;
  return s;
}

namespace {

// ovs-vswitchd 3.1.0 caches its CPU count as 0 until the monotonic clock passes 10 s
// (lib/ovs-thread.c count_cpu_cores), and with the kernel datapath's per-CPU upcall dispatch an
// ovs-vswitchd started that early lost every upcall in the guest, even after it resized its handlers.
// The qemu guest boots in a few seconds, so its first test waits that out; a host that starts OVS
// within 10 s of boot needs the same care (docs/NETD.md "Kernel datapath").
void WaitForTenSecondsOfUptime() {
  for (;;) {
    std::ifstream uptime("/proc/uptime");
    double seconds = 0;
    if (!(uptime >> seconds) || seconds >= 11) return;
    absl::SleepFor(absl::Seconds(11 - seconds));
  }
}

}  // namespace

absl::Status NetdTestbed::StartVswitchd() {
  if (DatapathType() == "system") WaitForTenSecondsOfUptime();
  absl::StatusOr<pid_t> pid = SpawnOvs(
      "ovs-vswitchd", {"unix:" + ovs_dir_ + "/db.sock", "--unixctl=" + ovs_dir_ + "/ovs-vswitchd.ctl",
                       "--pidfile=" + ovs_dir_ + "/ovs-vswitchd.pid",
                       "--log-file=" + ovs_dir_ + "/ovs-vswitchd.log", "-vconsole:off"});
  if (!pid.ok()) return pid.status();
  vswitchd_pid_ = *pid;
  return absl::OkStatus();
}

absl::Status NetdTestbed::StopVswitchd() {
  if (vswitchd_pid_ == 0) return absl::OkStatus();
  absl::Status s = rig_->Stop(vswitchd_pid_);
  vswitchd_pid_ = 0;
  return s;
}

absl::StatusOr<std::string> NetdTestbed::Vsctl(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {"/usr/bin/ovs-vsctl", "--db=" + OvsdbRemote(), "--timeout=15"};
  argv.insert(argv.end(), args.begin(), args.end());
  return Run(argv);
}

absl::StatusOr<std::string> NetdTestbed::Ofctl(const std::string& command,
                                               const std::vector<std::string>& args) {
  std::vector<std::string> argv = {"/usr/bin/ovs-ofctl", "-O",    "OpenFlow14",
                                   "--timeout=15",       command, OpenFlowTarget()};
  argv.insert(argv.end(), args.begin(), args.end());
  return Run(argv);
}

absl::StatusOr<size_t> NetdTestbed::CountFlows(const std::string& match) {
  std::vector<std::string> args = {"--no-stats"};
  if (!match.empty()) args.push_back(match);
  absl::StatusOr<std::string> dump = Ofctl("dump-flows", args);
  if (!dump.ok()) return dump.status();
  size_t flows = 0;
  for (absl::string_view line : absl::StrSplit(*dump, '\n')) {
    if (absl::StrContains(line, "actions=")) ++flows;
  }
  return flows;
}

absl::StatusOr<std::vector<std::string>> NetdTestbed::BridgePorts() {
  absl::StatusOr<std::string> out = Vsctl({"list-ports", kBridge});
  if (!out.ok()) return out.status();
  std::vector<std::string> ports = absl::StrSplit(*out, '\n', absl::SkipWhitespace());
  std::sort(ports.begin(), ports.end());
  return ports;
}

absl::StatusOr<std::string> NetdTestbed::Ip(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {"/usr/sbin/ip"};
  argv.insert(argv.end(), args.begin(), args.end());
  return Run(argv);
}

absl::StatusOr<std::vector<std::string>> NetdTestbed::Links(const std::string& netns,
                                                            const std::string& prefix) {
  absl::StatusOr<std::string> out = Ip({"-n", netns, "-o", "link", "show"});
  if (!out.ok()) return out.status();
  std::vector<std::string> links;
  for (absl::string_view line : absl::StrSplit(*out, '\n', absl::SkipWhitespace())) {
    // "7: srab12cd34ef56@if2: <...>"
    std::vector<absl::string_view> fields = absl::StrSplit(line, absl::ByAnyChar(":@"));
    if (fields.size() < 2) continue;
    std::string name(absl::StripAsciiWhitespace(fields[1]));
    if (absl::StartsWith(name, prefix)) links.push_back(name);
  }
  return links;
}

absl::StatusOr<std::string> NetdTestbed::AddWorkloadNetns(const std::string& short_name) {
  // The rig's prefix, so the rig's teardown deletes it (and kills anything left inside).
  const std::string name = absl::StrCat("sr", rig_->id(), "-", short_name);
  if (absl::Status s = Ip({"netns", "add", name}).status(); !s.ok()) return s;
  // As a container runtime leaves it: loopback up, nothing else.
  if (absl::Status s = Ip({"-n", name, "link", "set", "lo", "up"}).status(); !s.ok()) return s;
  return name;
}

std::string NetdTestbed::DatapathType() {
  const char* chosen = std::getenv("STRONGROOM_NETD_TESTBED_DATAPATH");
  return chosen != nullptr && *chosen != '\0' ? chosen : "netdev";
}

absl::Status NetdTestbed::Setup(bool start_netd) {
  state_ = rig_->state_dir();
  ovs_dir_ = state_ + "/ovs";
  std::filesystem::create_directories(ovs_dir_);
  for (const auto& [host, ip] : {std::pair<const char*, const char*>{"node", kNodeIp},
                                 {"client", kClientIp},
                                 {"outside", kOutsideIp}}) {
    if (absl::Status s = rig_->AddHost(host, absl::StrCat(ip, "/24")); !s.ok()) return s;
  }

  // OVS, as notes/ovs.md measured it, inside the node namespace.
  if (absl::Status s = Run({"/usr/bin/ovsdb-tool", "create", ovs_dir_ + "/conf.db",
                            "/usr/share/openvswitch/vswitch.ovsschema"})
                           .status();
      !s.ok()) {
    return s;
  }
  if (absl::Status s = StartOvsdb(); !s.ok()) return s;
  if (absl::Status s = Vsctl({"--no-wait", "init"}).status(); !s.ok()) return s;
  if (absl::Status s = StartVswitchd(); !s.ok()) return s;
  if (absl::Status s = Vsctl({"add-br", kBridge, "--", "set", "bridge", kBridge,
                              absl::StrCat("datapath_type=", DatapathType()), "fail-mode=secure"})
                           .status();
      !s.ok()) {
    return s;
  }

  // The uplink: a veth from the bridge to the outside namespace, whose end is the gateway.
  const std::string node = NodeNetns();
  const std::string outside = OutsideNetns();
  for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
           {"-n", node, "link", "add", "uplink", "type", "veth", "peer", "name", "gw0", "address", kGatewayMac,
            "netns", outside},
           {"-n", node, "link", "set", "uplink", "up"},
           {"-n", outside, "addr", "add", absl::StrCat(kGateway, "/24"), "dev", "gw0"},
           {"-n", outside, "addr", "add", absl::StrCat(kServiceA, "/32"), "dev", "lo"},
           {"-n", outside, "addr", "add", absl::StrCat(kServiceB, "/32"), "dev", "lo"},
           {"-n", outside, "link", "set", "gw0", "up"},
           // Both ends of a conversation need checksum offload off (notes/ovs.md).
           {"netns", "exec", outside, "/usr/sbin/ethtool", "-K", "gw0", "tx", "off"},
       }) {
    if (absl::Status s = Ip(args).status(); !s.ok()) return s;
  }
  if (absl::Status s = Vsctl({"add-port", kBridge, "uplink"}).status(); !s.ok()) return s;

  // Echo services on two ports (they answer on both service addresses).
  for (int port : {kEchoPort, kOtherEchoPort}) {
    absl::StatusOr<pid_t> pid =
        rig_->Spawn("outside", state_ + "/echo.log",
                    {"/bin/busybox", "nc", "-ll", "-p", absl::StrCat(port), "-e", "/bin/cat"});
    if (!pid.ok()) return pid.status();
    services_.push_back(*pid);
  }

  // PKI: netd's server certificate, and one client certificate per caller kind.
  const std::string pki = state_ + "/pki";
  for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
           {"init-ca", pki, "--trust-domain", kTrustDomain},
           {"issue", pki, "--role", "netd", "--instance", kNodeName, "--out", pki + "/netd-server"},
           {"issue", pki, "--role", "host-agent", "--instance", kNodeName, "--out", pki + "/host-agent"},
           {"issue", pki, "--role", "host-agent", "--instance", "node2", "--out", pki + "/host-agent-other"},
           {"issue", pki, "--role", "operator", "--instance", "alice", "--out", pki + "/operator"},
           {"issue", pki, "--role", "backend", "--instance", "backend", "--out", pki + "/backend"},
           {"issue", pki, "--role", "netd", "--instance", "node2", "--out", pki + "/netd-client"},
       }) {
    if (absl::Status s = Pki(args); !s.ok()) return s;
  }
  if (absl::Status s = WriteNetdConfig(); !s.ok()) return s;
  return start_netd ? StartNetd() : absl::OkStatus();
}

absl::Status NetdTestbed::WriteNetdConfig() {
  const std::string pki = state_ + "/pki";
  std::ofstream out(NetdConfigPath());
  out << "server {\n"
      << "  listen_address: \"" << kNodeIp << ":" << kGrpcPort << "\"\n"
      << "  tls {\n"
      << "    ca_file: \"" << pki << "/ca.pem\"\n"
      << "    cert_file: \"" << pki << "/netd-server.pem\"\n"
      << "    key_file: \"" << pki << "/netd-server.key\"\n"
      << "  }\n"
      << "  trust_domain: \"" << kTrustDomain << "\"\n"
      << "  instance: \"" << kNodeName << "\"\n"
      << "  metrics_listen_address: \"" << kNodeIp << ":" << kMetricsPort << "\"\n"
      << "  drain_seconds: 0\n"
      << "  shutdown_grace_seconds: 2\n"
      << "}\n"
      << "ovsdb_remote: \"" << OvsdbRemote() << "\"\n"
      << "bridge: \"" << kBridge << "\"\n"
      << "openflow_remote: \"" << OpenFlowTarget() << "\"\n"
      << "uplink_port: \"uplink\"\n"
      << "subnet: \"203.0.113.0/24\"\n"
      << "gateway: \"" << kGateway << "\"\n"
      << "reserved: \"203.0.113.2-203.0.113.9\"\n"
      << "ovs_timeout_ms: 3000\n"
      << "flow_check_interval_ms: 100\n";
  if (NetdBinary() == SR_NETD_BIN) out << "gateway_mac: \"" << kGatewayMac << "\"\n";
  return out.good() ? absl::OkStatus() : absl::InternalError("cannot write netd config");
}

std::string NetdTestbed::NetdAddress() { return absl::StrCat(kNodeIp, ":", kGrpcPort); }

std::string NetdTestbed::NetdBinary() {
  const char* chosen = std::getenv("STRONGROOM_NETD_TESTBED_NETD");
  return chosen != nullptr && *chosen != '\0' ? chosen : SR_NETD_BIN;
}

absl::Status NetdTestbed::StartNetd() {
  absl::StatusOr<pid_t> pid =
      rig_->Spawn("node", state_ + "/netd.log", {NetdBinary(), "--config", NetdConfigPath()});
  if (!pid.ok()) return pid.status();
  netd_pid_ = *pid;
  const absl::Time deadline = absl::Now() + absl::Seconds(15);
  while (absl::Now() < deadline) {
    absl::StatusOr<Rig::ExecResult> r = rig_->Exec(
        "client",
        {SR_CTL_BIN, "--target", absl::StrCat(kNodeIp, ":", kGrpcPort), "--trust-domain", kTrustDomain,
         "--ca", state_ + "/pki/ca.pem", "--cert", state_ + "/pki/operator.pem", "--key",
         state_ + "/pki/operator.key", "--server-role", "netd", "--timeout", "2", "health"},
        absl::Seconds(10));
    if (r.ok() && r->exit_code == 0) return absl::OkStatus();
    if (kill(netd_pid_, 0) != 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return absl::UnavailableError("netd did not start serving; log:\n" + NetdLog());
}

absl::Status NetdTestbed::KillNetd(int signal) {
  if (netd_pid_ == 0) return absl::OkStatus();
  const pid_t pid = netd_pid_;
  netd_pid_ = 0;
  if (signal == SIGKILL || signal == SIGTERM) {
    if (absl::Status s = rig_->Kill(pid, signal); !s.ok()) return s;
    const absl::Time deadline = absl::Now() + absl::Seconds(15);
    while (absl::Now() < deadline && !ProcessGone(pid)) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  // Forget the group in the rig (reaps it) so the rig's records stay exact.
  return rig_->Stop(pid);
}

absl::StatusOr<std::string> NetdTestbed::Metrics() {
  absl::StatusOr<Rig::ExecResult> r = rig_->Exec(
      "client",
      {"/bin/bash", "-c",
       "exec 3<>/dev/tcp/$1/$2 && printf 'GET /metrics HTTP/1.0\\r\\n\\r\\n' >&3 && timeout 5 cat <&3", "metrics",
       kNodeIp, absl::StrCat(kMetricsPort)},
      absl::Seconds(10));
  if (!r.ok()) return r.status();
  // `timeout` may end the read after the whole answer arrived (slow under emulation): the answer counts.
  if (!absl::StartsWith(r->output, "HTTP/1.0 200")) return absl::UnavailableError("netd's /metrics: " + r->output);
  return r->output;
}

std::string NetdTestbed::NetdLog() const { return ReadFileOrEmpty(state_ + "/netd.log"); }

CtlResult NetdTestbed::Ctl(Caller caller, const std::string& method, const std::string& json) {
  const std::string prefix = CredentialPrefix(state_ + "/pki", caller);
  absl::StatusOr<Rig::ExecResult> r = rig_->Exec(
      "client",
      {SR_CTL_BIN, "--target", absl::StrCat(kNodeIp, ":", kGrpcPort), "--trust-domain", kTrustDomain, "--ca",
       state_ + "/pki/ca.pem", "--cert", prefix + ".pem", "--key", prefix + ".key", "--server-role", "netd",
       "--timeout", "20", "call", "strongroom.v1.Netd/" + method, json},
      absl::Seconds(30));
  if (!r.ok()) return {-1, r.status().ToString(), ""};
  CtlResult result{r->exit_code, r->output, ""};
  for (absl::string_view line : absl::StrSplit(r->output, '\n')) {
    if (absl::StartsWith(line, "{")) result.json = std::string(line);
  }
  return result;
}

void NetdTestbed::DumpLogs() const {
  for (const std::string& file : {state_ + "/netd.log", ovs_dir_ + "/ovs-vswitchd.log",
                                  ovs_dir_ + "/ovsdb-server.log", state_ + "/echo.log"}) {
    std::fprintf(stderr, "---- %s ----\n%s\n", file.c_str(), ReadFileOrEmpty(file).c_str());
  }
}

}  // namespace strongroom::netd::testing
