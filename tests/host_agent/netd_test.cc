// host-agent with the real netd attached: the netd engineer's test bed (tests/netd/netd_testbed.h: real
// ovsdb-server + ovs-vswitchd in the userspace datapath, br-secure, an "outside" namespace with echo
// services, netd over mTLS) plus the host-agent daemon on the same rig host ("node"), driven with
// strongroomctl from the client host as backend would. The workload gets its br-secure port before its
// process starts; its egress allowlist holds (real packets from inside the container); the port is released
// at stop and nothing is left.
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "common/subprocess.h"
#include "strongroom/v1/host_agent.pb.h"
#include "tests/host_agent/ctl_call.h"
#include "tests/host_agent/test_env.h"
#include "tests/netd/netd_testbed.h"

namespace strongroom::host_agent::testing {
namespace {

using netd::testing::NetdTestbed;

constexpr char kAgentIp[] = "198.51.100.13";  // the node host, where netd runs too
constexpr int kAgentPort = 7444;

std::string NetScript() {
  return absl::StrCat("#!/bin/sh\ntrap 'exit 0' TERM\n", "ip -o -4 addr show dev eth0 > /net 2>&1\n",
                      "echo hello | nc -w 3 ", netd::testing::kServiceA, " ", netd::testing::kEchoPort,
                      " > /allowed 2>&1; echo \"rc=$?\" >> /allowed\n", "echo hello | nc -w 3 ",
                      netd::testing::kServiceA, " ", netd::testing::kOtherEchoPort,
                      " > /blocked 2>&1; echo \"rc=$?\" >> /blocked\n",
                      "echo ready > /probe\nsleep 100000 &\nwait\n");
}

class NetdAttachedTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(geteuid(), 0u);
    auto tb = NetdTestbed::Start();
    ASSERT_TRUE(tb.ok()) << tb.status();
    tb_ = std::move(*tb);
    dir_ = MakeTempDir("sr-ha-netd");
    std::filesystem::create_directories(dir_ + "/images");
    ASSERT_TRUE(BuildBusyboxImage(dir_ + "/images", "nettest", NetScript()).ok());
    pki_ = tb_->rig().state_dir() + "/pki";
    auto issued = strongroom::Run({SR_PKI_TOOL, "issue", pki_, "--role", "host-agent", "--instance",
                                   netd::testing::kNodeName, "--out", pki_ + "/host-agent-server"},
                                  absl::Seconds(30));
    ASSERT_TRUE(issued.ok() && issued->exit_code == 0);
    const std::string netd_address = tb_->NetdAddress();
    const std::string config = dir_ + "/agent.textproto";
    std::ofstream(config) << "server {\n  listen_address: \"" << kAgentIp << ":" << kAgentPort << "\"\n"
                          << "  tls { ca_file: \"" << pki_ << "/ca.pem\" cert_file: \"" << pki_
                          << "/host-agent-server.pem\" key_file: \"" << pki_ << "/host-agent-server.key\" }\n"
                          << "  trust_domain: \"strongroom.test\"\n  instance: \"" << netd::testing::kNodeName
                          << "\"\n  drain_seconds: 0\n  cert_refresh_seconds: 1\n}\n"
                          << "state_dir: \"" << dir_ << "/state\"\nimage_root: \"" << dir_ << "/images\"\n"
                          << "allow_unencrypted_scratch: true\nscratch_default_bytes: 134217728\n"
                          << "netd_address: \"" << netd_address << "\"\n"
                          << "netd_tls { ca_file: \"" << pki_ << "/ca.pem\" cert_file: \"" << pki_
                          << "/host-agent.pem\" key_file: \"" << pki_ << "/host-agent.key\" }\n";
    auto pid = tb_->rig().Spawn("node", dir_ + "/agent.log", {SR_HOST_AGENT_BIN, "--config", config});
    ASSERT_TRUE(pid.ok()) << pid.status();
    agent_pid_ = *pid;
    for (int i = 0; i < 100; ++i) {
      if (Call("ListWorkloads", "{}").first == 0) return;
      absl::SleepFor(absl::Milliseconds(100));
    }
    FAIL() << "host-agent did not serve: " << ReadFile(dir_ + "/agent.log");
  }

  void TearDown() override {
    if (HasFailure()) {
      std::fprintf(stderr, "---- host-agent ----\n%s\n", ReadFile(dir_ + "/agent.log").c_str());
      if (tb_) tb_->DumpLogs();
    }
    if (tb_ && agent_pid_ > 0) {
      (void)Call("StopWorkload", (std::string("{\"workload_id\":\"") + Id("wl-netd-1") + std::string("\"}")));
      (void)tb_->rig().Stop(agent_pid_);
    }
    tb_.reset();
    RemoveTree(dir_);
  }

  // strongroomctl on the client host, as backend. Returns (exit code, the response JSON or the output).
  std::pair<int, std::string> Call(const std::string& method, const std::string& json) {
    return host_agent::testing::CallHostAgentAsBackend(tb_->rig(), SR_CTL_BIN, absl::StrCat(kAgentIp, ":", kAgentPort),
                                                       pki_, method, json, absl::Seconds(90));
  }

  std::unique_ptr<NetdTestbed> tb_;
  std::string dir_, pki_;
  pid_t agent_pid_ = 0;
};

TEST_F(NetdAttachedTest, PortBeforeProcessAllowlistHoldsReleasedAtStop) {
  const std::string spec = absl::StrCat(
      "{\"spec\":{\"workload_id\":\"", Id("wl-netd-1"),
      "\",\"kind\":\"WORKLOAD_KIND_CONTAINER\",\"image\":{\"name\":\"nettest\"},",
      "\"whole_node\":true,\"egress_allowlist\":[{\"destination_cidr\":\"", netd::testing::kServiceA,
      "\",\"protocol\":\"PROTOCOL_TCP\",\"port_start\":", netd::testing::kEchoPort, "}]}}");
  auto [code, body] = Call("StartWorkload", spec);
  ASSERT_EQ(code, 0) << body;
  v1::StartWorkloadResponse started;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(body, &started).ok()) << body;
  const v1::NetworkAttachment& net = started.workload().network();
  EXPECT_TRUE(absl::StartsWith(net.ipv4_address(), "203.0.113.")) << body;
  EXPECT_FALSE(net.port_name().empty());
  EXPECT_EQ(started.workload().netns(), (std::string("/run/netns/sr-") + Id("wl-netd-1")));

  const std::string upper =
      dir_ + (std::string("/state/workloads/") + Id("wl-netd-1") + std::string("/scratch/upper"));
  for (int i = 0; i < 200 && ReadFile(upper + "/probe").empty(); ++i) absl::SleepFor(absl::Milliseconds(50));
  // The port existed before the process: its first command already saw eth0 with netd's address.
  EXPECT_TRUE(absl::StrContains(ReadFile(upper + "/net"), net.ipv4_address())) << ReadFile(upper + "/net");
  EXPECT_TRUE(absl::StrContains(ReadFile(upper + "/allowed"), "hello")) << ReadFile(upper + "/allowed");
  EXPECT_TRUE(absl::StrContains(ReadFile(upper + "/allowed"), "rc=0")) << ReadFile(upper + "/allowed");
  EXPECT_FALSE(absl::StrContains(ReadFile(upper + "/blocked"), "hello")) << ReadFile(upper + "/blocked");
  EXPECT_FALSE(absl::StrContains(ReadFile(upper + "/blocked"), "rc=0")) << ReadFile(upper + "/blocked");
  auto ports = tb_->BridgePorts();
  ASSERT_TRUE(ports.ok());
  EXPECT_NE(std::find(ports->begin(), ports->end(), net.port_name()), ports->end());

  auto [stop_code, stop_body] =
      Call("StopWorkload", (std::string("{\"workload_id\":\"") + Id("wl-netd-1") +
                            std::string("\",\"reason\":\"STOP_REASON_JOB_ENDED\"}")));
  ASSERT_EQ(stop_code, 0) << stop_body;
  v1::StopWorkloadResponse stopped;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(stop_body, &stopped).ok()) << stop_body;
  EXPECT_EQ(stopped.workload().state(), v1::WORKLOAD_STATE_STOPPED);
  EXPECT_TRUE(stopped.workload().scrub().network_released());
  EXPECT_TRUE(stopped.workload().scrub().clean()) << stop_body;
  ports = tb_->BridgePorts();
  ASSERT_TRUE(ports.ok());
  EXPECT_EQ(std::find(ports->begin(), ports->end(), net.port_name()), ports->end())
      << "port left on br-secure";
  auto list = tb_->Ctl(netd::testing::Caller::kHostAgent, "ListPorts", "{}");
  EXPECT_EQ(list.exit_code, 0) << list.output;
  EXPECT_FALSE(absl::StrContains(list.output, Id("wl-netd-1"))) << list.output;
  EXPECT_EQ(Leftovers(dir_ + "/state", Id("wl-netd-1"), dir_ + "/state/runtime"), std::vector<std::string>{});
}

}  // namespace
}  // namespace strongroom::host_agent::testing
