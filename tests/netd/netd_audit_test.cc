// netd's audit events reach a real backend (backend_address set): the netd daemon runs on node gnode1 of
// the backend stack (tests/backend/backend_stack.h: a real backend, PostgreSQL and Global Slurm in a rig),
// is called over mTLS, and the records then sit in backend's hash chain, recorded by netd's identity, and the
// chain verifies. netd runs here without OVS (its ovsdb_remote leads nowhere), so its RPCs answer
// UNAVAILABLE: what is tested is the audit path, which is the same for every outcome.
#include <fstream>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "strongroom/v1/backend.pb.h"
#include "tests/backend/backend_stack.h"

namespace strongroom::testing {
namespace {

constexpr int kNetdPort = 7444;  // beside the host-agent stand-in on 7443

class NetdAuditTest : public BackendTest {
 protected:
  // Starts netd on gnode1, shipping its audit events to the stack's backend.
  void StartNetd() {
    const std::string dir = stack().dir();
    const std::string pki = dir + "/pki/";
    const std::string ip = stack().rig().Ip("gnode1");
    const std::string tls = absl::StrCat("{ ca_file: \"", pki, "ca.pem\" cert_file: \"", pki,
                                         "netd-gnode1.pem\" key_file: \"", pki, "netd-gnode1.key\" }");
    const std::string config = dir + "/netd.textproto";
    std::ofstream(config) << "server {\n  listen_address: \"" << ip << ":" << kNetdPort << "\"\n  tls " << tls
                          << "\n  trust_domain: \"" << BackendStack::kTrustDomain
                          << "\"\n  instance: \"gnode1\"\n  metrics_listen_address: \"" << ip
                          << ":9465\"\n  drain_seconds: 0\n  shutdown_grace_seconds: 5\n}\n"
                          << "ovsdb_remote: \"unix:" << dir << "/no-ovs/db.sock\"\n"
                          << "openflow_remote: \"unix:" << dir << "/no-ovs/br-secure.mgmt\"\n"
                          << "backend_address: \"" << BackendStack::kBackendIp << ":7443\"\n"
                          << "backend_tls " << tls << "\n"
                          << "audit_spool_dir: \"" << dir << "/netd-audit-spool\"\n";
    absl::StatusOr<pid_t> pid =
        stack().rig().Spawn("gnode1", dir + "/logs/netd.log", {SR_NETD_BIN, "--config", config});
    ASSERT_TRUE(pid.ok()) << pid.status();
  }

  // strongroomctl on the client host against netd, presenting certificate `who`.
  CtlOutput CallNetd(const std::string& who, const std::string& method, const std::string& json) {
    const std::string prefix = stack().CertPrefix(who);
    absl::StatusOr<Rig::ExecResult> r = stack().rig().Exec(
        "client",
        {SR_CTL_BIN, "--target", absl::StrCat(stack().rig().Ip("gnode1"), ":", kNetdPort), "--trust-domain",
         BackendStack::kTrustDomain, "--ca", stack().dir() + "/pki/ca.pem", "--server-role", "netd", "--cert",
         prefix + ".pem", "--key", prefix + ".key", "call", "strongroom.v1.Netd/" + method, json},
        absl::Seconds(30));
    if (!r.ok()) return {-1, r.status().ToString()};
    return {r->exit_code, r->output};
  }

  // The backend's records of `action`, polled until at least one exists or the deadline passes.
  v1::QueryAuditResponse WaitForRecords(const std::string& action) {
    v1::QueryAuditResponse response;
    const absl::Time deadline = absl::Now() + absl::Seconds(30);
    do {
      response.Clear();
      absl::Status s = stack().CallInto("operator", "QueryAudit",
                                        absl::StrCat(R"({"action":")", action, R"("})"), &response);
      EXPECT_TRUE(s.ok()) << s;
      if (response.records_size() > 0) break;
      absl::SleepFor(absl::Milliseconds(200));
    } while (absl::Now() < deadline);
    return response;
  }
};

TEST_F(NetdAuditTest, RpcAndRefusalRecordsReachBackendsChain) {
  ASSERT_TRUE(stack().StartBackend().ok());
  StartNetd();
  // netd serves at once (it answers UNAVAILABLE while OVS is unreachable); wait until it listens.
  CtlOutput listed;
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  do {
    listed = CallNetd("operator", "ListPorts", "{}");
    // 14 also comes from strongroomctl itself while netd does not listen yet: wait for netd's own answer.
    if (listed.exit_code == 14 && absl::StrContains(listed.output, "ovsdb-server")) break;
    absl::SleepFor(absl::Milliseconds(200));
  } while (absl::Now() < deadline);
  ASSERT_EQ(listed.exit_code, 14) << listed.output;  // UNAVAILABLE: no ovsdb-server
  // A refusal: only host-agent may allocate, and backend is not host-agent.
  CtlOutput denied = CallNetd("backend", "AllocatePort", R"({"workloadId":"w1","netns":"w1"})");
  ASSERT_EQ(denied.exit_code, 7) << denied.output;  // PERMISSION_DENIED

  const std::string netd_identity = absl::StrCat("spiffe://", BackendStack::kTrustDomain, "/netd/gnode1");
  v1::QueryAuditResponse rpc = WaitForRecords("/strongroom.v1.Netd/ListPorts");
  ASSERT_GE(rpc.records_size(), 1) << stack().BackendLog();
  EXPECT_EQ(rpc.records(0).recorded_by().spiffe_id(), netd_identity);
  EXPECT_EQ(rpc.records(0).actor().spiffe_id(),
            absl::StrCat("spiffe://", BackendStack::kTrustDomain, "/operator/alice"));
  EXPECT_EQ(rpc.records(0).status_code(), 14);

  v1::QueryAuditResponse refusal = WaitForRecords("/strongroom.v1.Netd/AllocatePort");
  ASSERT_GE(refusal.records_size(), 1);
  EXPECT_EQ(refusal.records(0).recorded_by().spiffe_id(), netd_identity);
  EXPECT_EQ(refusal.records(0).status_code(), 7);
  EXPECT_EQ(refusal.records(0).outcome(), v1::AUDIT_OUTCOME_DENIED);

  EXPECT_EQ(stack().Ctl("operator", {"audit", "verify"}).exit_code, 0);
}

}  // namespace
}  // namespace strongroom::testing
