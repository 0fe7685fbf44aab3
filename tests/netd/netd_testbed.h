// A netd test bed in the rig: real ovsdb-server + ovs-vswitchd (userspace datapath), br-secure
// with an uplink to an "outside" namespace that runs echo services, netd itself, and a client
// host that calls netd with strongroomctl over mTLS.
//
//   client (198.51.100.20) --rig bridge-- node (198.51.100.13): ovsdb-server, ovs-vswitchd, netd
//                                            br-secure --uplink/gw0-- outside: gw0 203.0.113.1/24,
//                                                                     services 192.0.2.10, .11 on lo,
//                                                                     echo servers on TCP 8080, 8081
//   workload namespaces (sr<rig id>-<name>, created bare) get their eth0 from netd, in
//   203.0.113.0/24 (203.0.113.2-9 reserved).
//
// Everything lives in the rig: its namespaces (workload ones included, by their name prefix),
// its processes and its state directory, so the rig's teardown leaves nothing behind, and
// ovs-vswitchd's tap devices stay inside the node namespace.
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "tests/rig/rig.h"

namespace strongroom::netd::testing {

// The certificate strongroomctl presents.
enum class Caller {
  kHostAgent,           // host-agent of this node (instance = netd's node name)
  kOtherNodeHostAgent,  // host-agent of another node
  kOperator,
  kBackend,
  kNetd,
};

struct CtlResult {
  int exit_code = -1;  // the gRPC status code, or -1 if strongroomctl did not run
  std::string output;
  // The response JSON (stdout's JSON line) when exit_code is 0.
  std::string json;
};

inline constexpr char kNodeName[] = "node1";
inline constexpr char kBridge[] = "br-secure";
inline constexpr char kGateway[] = "203.0.113.1";
inline constexpr char kGatewayMac[] = "02:00:00:00:00:01";  // gw0's, and netd's gateway_mac
inline constexpr char kServiceA[] = "192.0.2.10";
inline constexpr char kServiceB[] = "192.0.2.11";
inline constexpr int kEchoPort = 8080;
inline constexpr int kOtherEchoPort = 8081;

class NetdTestbed {
 public:
  // Starts the rig, OVS, the uplink and outside services, the PKI and (unless told not to) netd.
  static absl::StatusOr<std::unique_ptr<NetdTestbed>> Start(bool start_netd = true);
  ~NetdTestbed();

  // ---- OVS -----------------------------------------------------------------------------------
  const std::string& ovs_dir() const { return ovs_dir_; }
  std::string OvsdbRemote() const { return "unix:" + ovs_dir_ + "/db.sock"; }
  std::string OpenFlowTarget() const { return "unix:" + ovs_dir_ + "/" + kBridge + ".mgmt"; }
  // ovs-vsctl against this bed's database (stdout on success).
  absl::StatusOr<std::string> Vsctl(const std::vector<std::string>& args);
  // ovs-ofctl -O OpenFlow14 COMMAND <bridge target> ARGS...
  absl::StatusOr<std::string> Ofctl(const std::string& command, const std::vector<std::string>& args = {});
  // Flows in the bridge whose dump matches `match` (ovs-ofctl syntax, e.g. "cookie=0x1/-1").
  absl::StatusOr<size_t> CountFlows(const std::string& match = "");
  // The bridge's ports, sorted.
  absl::StatusOr<std::vector<std::string>> BridgePorts();
  absl::Status StopVswitchd();   // SIGTERM, then SIGKILL (its process group)
  absl::Status StartVswitchd();  // returns once the bridge's management socket answers
  absl::Status StopOvsdb();
  absl::Status StartOvsdb();

  // ---- netd ----------------------------------------------------------------------------------
  // Returns once it answers health over mTLS. The binary is this build's netd, or the one
  // STRONGROOM_NETD_TESTBED_NETD names (given only the config fields netd had before the node
  // stack guard): how a test is shown to fail against an older netd.
  absl::Status StartNetd();
  absl::Status KillNetd(int signal);  // and waits until it is gone
  std::string NetdLog() const;
  // netd's Prometheus text (GET /metrics), fetched from the client host.
  absl::StatusOr<std::string> Metrics();
  std::string NetdConfigPath() const { return state_ + "/netd.textproto"; }
  // netd's gRPC address, "IP:PORT".
  static std::string NetdAddress();
  CtlResult Ctl(Caller caller, const std::string& method, const std::string& json);

  // ---- namespaces ----------------------------------------------------------------------------
  // Creates a bare workload netns (only lo, up) and returns its name.
  absl::StatusOr<std::string> AddWorkloadNetns(const std::string& short_name);
  static std::string NetnsPath(const std::string& name) { return "/run/netns/" + name; }
  std::string NodeNetns() const { return rig_->Netns("node"); }
  // br-secure's datapath: "netdev" (userspace, this host has no openvswitch module) unless
  // STRONGROOM_NETD_TESTBED_DATAPATH says otherwise ("system" in the qemu guest, tests/guest).
  static std::string DatapathType();
  // The netd binary StartNetd runs.
  static std::string NetdBinary();
  std::string OutsideNetns() const { return rig_->Netns("outside"); }
  std::string ClientNetns() const { return rig_->Netns("client"); }
  std::string SwitchNetns() const { return rig_->Netns("sw"); }
  // Runs /usr/sbin/ip ARGS (e.g. {"-n", ns, "link", "show"}); stdout on success.
  absl::StatusOr<std::string> Ip(const std::vector<std::string>& args);
  // Links of a namespace whose name starts with `prefix`.
  absl::StatusOr<std::vector<std::string>> Links(const std::string& netns, const std::string& prefix);

  Rig& rig() { return *rig_; }
  void DumpLogs() const;

 private:
  NetdTestbed() = default;
  absl::Status Setup(bool start_netd);
  absl::Status WriteNetdConfig();
  absl::Status Pki(const std::vector<std::string>& args);
  absl::StatusOr<pid_t> SpawnOvs(const std::string& binary, const std::vector<std::string>& args);

  std::unique_ptr<Rig> rig_;
  std::string state_;    // rig state dir: PKI, configs, logs (removed with the rig)
  std::string ovs_dir_;  // OVS_RUNDIR/DBDIR/LOGDIR
  pid_t ovsdb_pid_ = 0;
  pid_t vswitchd_pid_ = 0;
  pid_t netd_pid_ = 0;
  std::vector<pid_t> services_;  // the echo servers in the outside namespace
};

// JSON for a list of rules: {"destination_cidr": ..., "protocol": "PROTOCOL_TCP", "port_start": ...}.
struct RuleSpec {
  std::string cidr;
  std::string protocol;  // "PROTOCOL_TCP" / "PROTOCOL_UDP" / anything (bad input tests)
  int port_start = 0;
  int port_end = 0;
};
std::string EgressJson(const std::vector<RuleSpec>& rules);
std::string IngressJson(const std::vector<RuleSpec>& rules);

// The fixture of netd's test-bed suites: a fresh test bed per test (`start_netd`: with the daemon or only its
// OVS), its logs dumped after a failed test.
template <bool start_netd = true>
class NetdTestbedTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<NetdTestbed>> bed = NetdTestbed::Start(start_netd);
    ASSERT_TRUE(bed.ok()) << bed.status();
    bed_ = *std::move(bed);
  }
  void TearDown() override {
    if (HasFailure() && bed_) bed_->DumpLogs();
    bed_.reset();
  }
  std::unique_ptr<NetdTestbed> bed_;
};

}  // namespace strongroom::netd::testing
