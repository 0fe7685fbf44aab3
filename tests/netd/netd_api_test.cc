// Acceptance: the API's contract over mTLS. Bad input is refused with a precise status and no
// state change anywhere (OVSDB, flows, veths); only host-agent mutates, operator reads;
// idempotency; listing.
#include <memory>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "strongroom/v1/netd.pb.h"
#include "tests/netd/netd_testbed.h"

namespace strongroom::netd::testing {
namespace {

constexpr int kOk = 0;
constexpr int kInvalidArgument = 3;
constexpr int kNotFound = 5;
constexpr int kAlreadyExists = 6;
constexpr int kPermissionDenied = 7;
constexpr int kFailedPrecondition = 9;

class NetdApiTest : public NetdTestbedTest<> {
 protected:

  std::string AllocateJson(const std::string& workload, const std::string& netns, const std::string& egress) {
    return absl::StrCat("{\"workload_id\":\"", workload, "\",\"netns\":\"", netns,
                        "\",\"egress_allowlist\":", egress, "}");
  }

  // Everything that would show a half-applied change.
  struct Snapshot {
    std::string ports_json;
    std::vector<std::string> bridge_ports;
    size_t flows = 0;
    std::vector<std::string> node_veths;
    bool operator==(const Snapshot& o) const {
      return ports_json == o.ports_json && bridge_ports == o.bridge_ports && flows == o.flows &&
             node_veths == o.node_veths;
    }
  };
  Snapshot Take() {
    Snapshot s;
    CtlResult list = bed_->Ctl(Caller::kOperator, "ListPorts", "{}");
    EXPECT_EQ(list.exit_code, kOk) << list.output;
    // Without the drop counters: the workloads' own stacks send IPv6 neighbour discovery, which
    // their drop flows count meanwhile.
    v1::ListPortsResponse response;
    EXPECT_TRUE(google::protobuf::util::JsonStringToMessage(list.json, &response).ok()) << list.json;
    for (v1::Port& port : *response.mutable_ports()) port.clear_dropped();
    EXPECT_TRUE(google::protobuf::util::MessageToJsonString(response, &s.ports_json).ok());
    s.bridge_ports = *bed_->BridgePorts();
    s.flows = *bed_->CountFlows();
    s.node_veths = *bed_->Links(bed_->NodeNetns(), "sr");
    return s;
  }

};

const std::string kEcho = EgressJson({{"192.0.2.10/32", "PROTOCOL_TCP", kEchoPort}});

TEST_F(NetdApiTest, BadInputIsRefusedPreciselyAndChangesNothing) {
  absl::StatusOr<std::string> netns = bed_->AddWorkloadNetns("w1");
  ASSERT_TRUE(netns.ok());
  ASSERT_EQ(bed_->Ctl(Caller::kHostAgent, "AllocatePort", AllocateJson("existing", *netns, kEcho)).exit_code,
            kOk);
  absl::StatusOr<std::string> netns2 = bed_->AddWorkloadNetns("w2");
  ASSERT_TRUE(netns2.ok());
  const Snapshot before = Take();

  struct Case {
    std::string name;
    std::string json;
    int code;
    std::string message;
  };
  std::vector<std::string> well_formed(
      1025, R"({"destination_cidr":"192.0.2.10","protocol":"PROTOCOL_TCP","port_start":443})");
  std::vector<std::string> tiny(10000, "{}");  // only the count matters: it is checked first
  const std::vector<Case> cases = {
      {"malformed CIDR", AllocateJson("w2", *netns2, EgressJson({{"192.0.2.300/24", "PROTOCOL_TCP", 80}})),
       kInvalidArgument, "egress_allowlist[0].destination_cidr: \"192.0.2.300/24\" is not an IPv4 CIDR"},
      {"host bits", AllocateJson("w2", *netns2, EgressJson({{"192.0.2.1/24", "PROTOCOL_TCP", 80}})),
       kInvalidArgument, "has host bits set"},
      {"port 0", AllocateJson("w2", *netns2, EgressJson({{"192.0.2.10", "PROTOCOL_TCP", 0}})),
       kInvalidArgument, "egress_allowlist[0].port_start: 0 is not in 1..65535"},
      {"port 70000", AllocateJson("w2", *netns2, EgressJson({{"192.0.2.10", "PROTOCOL_UDP", 70000}})),
       kInvalidArgument, "egress_allowlist[0].port_start: 70000 is not in 1..65535"},
      {"10,000 entries", AllocateJson("w2", *netns2, absl::StrCat("[", absl::StrJoin(tiny, ","), "]")),
       kInvalidArgument, "egress_allowlist: 10000 rules is more than the limit of 1024"},
      {"1,025 entries", AllocateJson("w2", *netns2, absl::StrCat("[", absl::StrJoin(well_formed, ","), "]")),
       kInvalidArgument, "egress_allowlist: 1025 rules is more than the limit of 1024"},
      {"ingress overlapping the workload subnet",
       absl::StrCat("{\"workload_id\":\"w2\",\"netns\":\"", *netns2,
                    "\",\"ingress_allowlist\":", IngressJson({{"203.0.113.0/24", "PROTOCOL_TCP", 22}}), "}"),
       kInvalidArgument, "overlaps the workload subnet"},
      {"empty workload id", AllocateJson("", *netns2, kEcho), kInvalidArgument, "workload_id: required"},
      {"bad workload id", AllocateJson("../etc", *netns2, kEcho), kInvalidArgument, "is not an ID"},
      {"netns missing", AllocateJson("w2", "no-such-netns", kEcho), kFailedPrecondition,
       "netns \"no-such-netns\" does not exist (/run/netns/no-such-netns)"},
      {"netns path traversal", AllocateJson("w2", "/run/netns/../../etc/passwd", kEcho), kInvalidArgument,
       "is neither a netns name"},
      // Refused as the host's netns, or earlier where PID 1's namespace cannot even be opened (here).
      {"the host's netns", AllocateJson("w2", "/proc/1/ns/net", kEcho), kFailedPrecondition,
       "netns \"/proc/1/ns/net\""},
      {"bad interface name",
       absl::StrCat("{\"workload_id\":\"w2\",\"netns\":\"", *netns2, "\",\"interface_name\":\"Eth0;rm\"}"),
       kInvalidArgument, "interface_name"},
      {"interface already in the netns",
       absl::StrCat("{\"workload_id\":\"w2\",\"netns\":\"", *netns2, "\",\"interface_name\":\"lo\"}"),
       kFailedPrecondition, "interface lo already exists in netns"},
      {"same workload, different policy", AllocateJson("existing", *netns, "[]"), kAlreadyExists,
       "use UpdateEgress"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    CtlResult r = bed_->Ctl(Caller::kHostAgent, "AllocatePort", c.json);
    EXPECT_EQ(r.exit_code, c.code) << r.output.substr(0, 600);
    EXPECT_TRUE(absl::StrContains(r.output, c.message)) << r.output.substr(0, 600);
    EXPECT_TRUE(absl::StrContains(r.output, "netd: AllocatePort")) << r.output.substr(0, 600);
  }
  CtlResult update =
      bed_->Ctl(Caller::kHostAgent, "UpdateEgress",
                R"({"workload_id":"existing","egress_allowlist":[{"destination_cidr":"bad"}]})");
  EXPECT_EQ(update.exit_code, kInvalidArgument) << update.output;
  EXPECT_EQ(bed_->Ctl(Caller::kHostAgent, "UpdateEgress", R"({"workload_id":"nobody"})").exit_code,
            kNotFound);
  EXPECT_EQ(bed_->Ctl(Caller::kHostAgent, "ReleasePort", R"({"workload_id":""})").exit_code,
            kInvalidArgument);
  EXPECT_EQ(
      bed_->Ctl(Caller::kHostAgent, "ReleasePort", R"({"workload_id":"existing","expected_generation":99})")
          .exit_code,
      kFailedPrecondition);
  EXPECT_EQ(bed_->Ctl(Caller::kOperator, "GetPort", R"({"workload_id":"nobody"})").exit_code, kNotFound);
  EXPECT_EQ(bed_->Ctl(Caller::kOperator, "ListPorts", R"({"page":{"page_token":"forged"}})").exit_code,
            kInvalidArgument);

  EXPECT_TRUE(Take() == before) << "a refused request changed something";

  // The bridge itself missing is an operator-visible FAILED_PRECONDITION too.
  ASSERT_TRUE(bed_->Vsctl({"del-br", kBridge}).ok());
  CtlResult no_bridge = bed_->Ctl(Caller::kHostAgent, "AllocatePort", AllocateJson("w2", *netns2, kEcho));
  EXPECT_EQ(no_bridge.exit_code, kFailedPrecondition) << no_bridge.output;
  EXPECT_TRUE(absl::StrContains(no_bridge.output, "bridge br-secure does not exist")) << no_bridge.output;
}

TEST_F(NetdApiTest, OnlyThisNodesHostAgentMutatesAndOperatorsRead) {
  absl::StatusOr<std::string> netns = bed_->AddWorkloadNetns("w1");
  ASSERT_TRUE(netns.ok());
  const std::string allocate = AllocateJson("w1", *netns, kEcho);
  for (Caller caller : {Caller::kOperator, Caller::kBackend, Caller::kNetd}) {
    CtlResult r = bed_->Ctl(caller, "AllocatePort", allocate);
    EXPECT_EQ(r.exit_code, kPermissionDenied) << r.output;
    EXPECT_TRUE(absl::StrContains(r.output, "may not call /strongroom.v1.Netd/AllocatePort")) << r.output;
  }
  CtlResult other_node = bed_->Ctl(Caller::kOtherNodeHostAgent, "AllocatePort", allocate);
  EXPECT_EQ(other_node.exit_code, kPermissionDenied) << other_node.output;
  EXPECT_TRUE(absl::StrContains(other_node.output, "host-agent node2 may manage ports only on its own node"))
      << other_node.output;

  CtlResult allocated = bed_->Ctl(Caller::kHostAgent, "AllocatePort", allocate);
  ASSERT_EQ(allocated.exit_code, kOk) << allocated.output;
  for (Caller caller : {Caller::kOperator, Caller::kOtherNodeHostAgent}) {
    EXPECT_EQ(bed_->Ctl(caller, "UpdateEgress", R"({"workload_id":"w1"})").exit_code, kPermissionDenied);
    EXPECT_EQ(bed_->Ctl(caller, "ReleasePort", R"({"workload_id":"w1"})").exit_code, kPermissionDenied);
  }
  CtlResult get = bed_->Ctl(Caller::kOperator, "GetPort", R"({"workload_id":"w1"})");
  EXPECT_EQ(get.exit_code, kOk) << get.output;
  EXPECT_EQ(bed_->Ctl(Caller::kOperator, "ListPorts", "{}").exit_code, kOk);
  EXPECT_EQ(bed_->Ctl(Caller::kHostAgent, "ListPorts", "{}").exit_code, kOk);
  EXPECT_EQ(bed_->Ctl(Caller::kOtherNodeHostAgent, "ListPorts", "{}").exit_code, kPermissionDenied);
  EXPECT_EQ(bed_->Ctl(Caller::kOtherNodeHostAgent, "GetPort", R"({"workload_id":"w1"})").exit_code,
            kPermissionDenied);
  EXPECT_EQ(bed_->Ctl(Caller::kBackend, "ListPorts", "{}").exit_code, kPermissionDenied);
  // Still there: none of the refused calls did anything.
  v1::GetPortResponse response;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(get.json, &response).ok());
  EXPECT_EQ(response.port().requested_by().spiffe_id(), "spiffe://strongroom.test/host-agent/node1");
  EXPECT_EQ(response.port().requested_by().role(), v1::ROLE_HOST_AGENT);
}

TEST_F(NetdApiTest, IdempotentAllocateAndReleaseAndPagedListing) {
  std::vector<v1::Port> ports;
  for (int i = 0; i < 3; ++i) {
    const std::string workload = absl::StrCat("w", i);
    absl::StatusOr<std::string> netns = bed_->AddWorkloadNetns(workload);
    ASSERT_TRUE(netns.ok());
    CtlResult first = bed_->Ctl(Caller::kHostAgent, "AllocatePort", AllocateJson(workload, *netns, kEcho));
    ASSERT_EQ(first.exit_code, kOk) << first.output;
    CtlResult again = bed_->Ctl(Caller::kHostAgent, "AllocatePort", AllocateJson(workload, *netns, kEcho));
    ASSERT_EQ(again.exit_code, kOk) << again.output;
    v1::AllocatePortResponse a, b;
    ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(first.json, &a).ok());
    ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(again.json, &b).ok());
    EXPECT_TRUE(a.created());
    EXPECT_FALSE(b.created());
    EXPECT_EQ(a.port().attachment().ipv4_address(), b.port().attachment().ipv4_address());
    EXPECT_EQ(a.port().attachment().generation(), b.port().attachment().generation());
    EXPECT_EQ(a.port().egress_allowlist(0).destination_cidr(), "192.0.2.10/32");
    EXPECT_EQ(a.port().egress_allowlist(0).port_end(), static_cast<uint32_t>(kEchoPort));
    ports.push_back(a.port());
  }
  // Two pages of two.
  CtlResult page1 = bed_->Ctl(Caller::kOperator, "ListPorts", R"({"page":{"page_size":2}})");
  ASSERT_EQ(page1.exit_code, kOk) << page1.output;
  v1::ListPortsResponse list1;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(page1.json, &list1).ok());
  ASSERT_EQ(list1.ports_size(), 2);
  EXPECT_EQ(list1.ports(0).workload_id(), "w0");
  ASSERT_FALSE(list1.page().next_page_token().empty());
  CtlResult page2 = bed_->Ctl(
      Caller::kOperator, "ListPorts",
      absl::StrCat(R"({"page":{"page_size":2,"page_token":")", list1.page().next_page_token(), "\"}}"));
  ASSERT_EQ(page2.exit_code, kOk) << page2.output;
  v1::ListPortsResponse list2;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(page2.json, &list2).ok());
  ASSERT_EQ(list2.ports_size(), 1);
  EXPECT_EQ(list2.ports(0).workload_id(), "w2");
  EXPECT_TRUE(list2.page().next_page_token().empty());
  CtlResult degraded_only =
      bed_->Ctl(Caller::kOperator, "ListPorts", R"({"states":["PORT_STATE_DEGRADED"]})");
  ASSERT_EQ(degraded_only.exit_code, kOk);
  EXPECT_FALSE(absl::StrContains(degraded_only.json, "workloadId")) << degraded_only.json;

  // Release: removed once, then released=false; a stale generation is refused.
  const std::string port_name = ports[1].attachment().port_name();
  CtlResult released = bed_->Ctl(Caller::kHostAgent, "ReleasePort", R"({"workload_id":"w1"})");
  ASSERT_EQ(released.exit_code, kOk) << released.output;
  EXPECT_TRUE(absl::StrContains(released.json, "\"released\":true")) << released.json;
  CtlResult again = bed_->Ctl(Caller::kHostAgent, "ReleasePort", R"({"workload_id":"w1"})");
  ASSERT_EQ(again.exit_code, kOk) << again.output;
  EXPECT_FALSE(absl::StrContains(again.json, "\"released\":true")) << again.json;
  std::vector<std::string> bridge_ports = *bed_->BridgePorts();
  EXPECT_EQ(std::count(bridge_ports.begin(), bridge_ports.end(), port_name), 0);
  EXPECT_TRUE(bed_->Links(bed_->NodeNetns(), port_name)->empty()) << "the veth is gone";
  EXPECT_EQ(*bed_->CountFlows(absl::StrCat("cookie=", ports[1].cookie(), "/-1")), 0u);
}

}  // namespace
}  // namespace strongroom::netd::testing
