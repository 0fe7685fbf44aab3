// host-agent's reports and audit shipping against the REAL backend (tests/backend/backend_stack.h: backend
// with its PostgreSQL and a Global Slurm in the rig). The real host-agent runs as rig host "ha" with the
// certificate of node gnode1, and reaches backend over mTLS. Proves: a report made while backend is down
// waits in the outbox and is delivered once backend comes up; backend's permanent refusal (NOT_FOUND: no such
// job) is dropped, logged and audited; the agent's audit events (the drop, workload transitions) land in
// backend's hash chain.
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "tests/backend/backend_stack.h"
#include "tests/host_agent/test_env.h"

namespace strongroom::host_agent::testing {
namespace {

constexpr const char* kAgentIp = "198.51.100.30";
constexpr const char* kAgentId = "spiffe://strongroom.test/host-agent/gnode1";

class BackendReportTest : public strongroom::testing::BackendTest {
 protected:
  void SetUp() override {
    BackendTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    dir_ = MakeTempDir("sr-ha-backend");
    ASSERT_FALSE(dir_.empty());
    std::filesystem::create_directories(dir_ + "/images");
    ASSERT_TRUE(BuildBusyboxImage(dir_ + "/images", "busybox", ProbeScript()).ok());
    ASSERT_TRUE(stack().rig().AddHost("ha", absl::StrCat(kAgentIp, "/24")).ok());
  }

  void TearDown() override {
    if (agent_pid_ > 0) {
      // Whatever a failed test left running is stopped through the agent.
      for (const std::string& id : started_) {
        (void)Agent("backend", "StopWorkload",
                    absl::StrCat(R"({"workloadId":")", id, R"(","gracePeriod":"1s"})"));
      }
      (void)stack().rig().Stop(agent_pid_);
    }
    if (HasFailure()) std::fprintf(stderr, "---- host-agent log ----\n%s\n", AgentLog().c_str());
    RemoveTree(dir_);
    BackendTest::TearDown();
  }

  absl::Status StartAgent() {
    const std::string pki = stack().dir() + "/pki";
    const std::string config = dir_ + "/agent.textproto";
    std::ofstream(config) << "server {\n  listen_address: \"" << kAgentIp << ":7443\"\n"
                          << "  tls { ca_file: \"" << pki << "/ca.pem\" cert_file: \"" << pki
                          << "/ha-gnode1.pem\" key_file: \"" << pki << "/ha-gnode1.key\" }\n"
                          << "  trust_domain: \"strongroom.test\"\n  instance: \"gnode1\"\n"
                          << "  drain_seconds: 0\n  shutdown_grace_seconds: 2\n}\n"
                          << "state_dir: \"" << dir_ << "/state\"\n"
                          << "image_root: \"" << dir_ << "/images\"\n"
                          << "allow_unencrypted_scratch: true\n"
                          << "scratch_default_bytes: 268435456\n"
                          << "stop_grace_seconds: 2\n"
                          << "backend_address: \"" << strongroom::testing::BackendStack::kBackendIp
                          << ":7443\"\n"
                          << "backend_tls { ca_file: \"" << pki << "/ca.pem\" cert_file: \"" << pki
                          << "/ha-gnode1.pem\" key_file: \"" << pki << "/ha-gnode1.key\" }\n";
    absl::StatusOr<pid_t> pid = stack().rig().Spawn(
        "ha", dir_ + "/agent.log",
        {std::getenv("STRONGROOM_TEST_OLD_HOST_AGENT_BIN") != nullptr
             ? std::getenv("STRONGROOM_TEST_OLD_HOST_AGENT_BIN")  // "fails without the fix"
             : SR_HOST_AGENT_BIN,
         "--config", config});
    if (!pid.ok()) return pid.status();
    agent_pid_ = *pid;
    const absl::Time deadline = absl::Now() + absl::Seconds(60);
    while (absl::Now() < deadline) {
      if (Agent("operator", "ListWorkloads", "{}").exit_code == 0) return absl::OkStatus();
      absl::SleepFor(absl::Milliseconds(200));
    }
    return absl::DeadlineExceededError("host-agent did not serve; log:\n" + AgentLog());
  }

  // strongroomctl on the client host against the agent, as `who` (a certificate of the stack's PKI).
  strongroom::testing::CtlOutput Agent(const std::string& who, const std::string& method,
                                       const std::string& json) {
    const std::string prefix = stack().CertPrefix(who);
    absl::StatusOr<Rig::ExecResult> r = stack().RunOnClient(
        {SR_CTL_BIN, "--target", absl::StrCat(kAgentIp, ":7443"), "--trust-domain", "strongroom.test", "--ca",
         stack().dir() + "/pki/ca.pem", "--cert", prefix + ".pem", "--key", prefix + ".key", "--server-role",
         "host-agent", "call", "strongroom.v1.HostAgent/" + method, json},
        absl::Seconds(60));
    if (!r.ok()) return {-1, r.status().ToString()};
    return {r->exit_code, r->output};
  }

  std::string AgentLog() const { return ReadFile(dir_ + "/agent.log"); }

  bool WaitForAgentLog(const std::string& needle, absl::Duration timeout) {
    const absl::Time deadline = absl::Now() + timeout;
    while (absl::Now() < deadline) {
      if (absl::StrContains(AgentLog(), needle)) return true;
      absl::SleepFor(absl::Milliseconds(100));
    }
    return false;
  }

  // backend's audit chain: records whose actor is this agent (its reports, its own events), and every record
  // about the workload (the transitions the agent shipped; their actor is whoever asked for them).
  std::string AuditOf(const std::string& workload_id) {
    return stack().Ctl("operator", {"audit", "query", "--actor", kAgentId, "--limit", "1000"}).output +
           stack().Ctl("operator", {"audit", "query", "--object", "workload/" + workload_id, "--limit", "1000"})
               .output;
  }

  std::string dir_;
  pid_t agent_pid_ = 0;
  std::vector<std::string> started_;
};

TEST_F(BackendReportTest, ReportMadeWhileBackendIsDownIsDeliveredAndItsRefusalDroppedAndAudited) {
  ASSERT_TRUE(StartAgent().ok()) << AgentLog();
  const std::string id = Id("wl-rep");
  started_.push_back(id);
  // A workload for a job backend does not know: backend (once up) refuses its reports with NOT_FOUND.
  strongroom::testing::CtlOutput started =
      Agent("backend", "StartWorkload",
            absl::StrCat(R"({"spec":{"workloadId":")", id,
                         R"(","kind":"WORKLOAD_KIND_CONTAINER","image":{"name":"busybox"},"wholeNode":true,)",
                         R"("job":{"globalJobId":"gj-unknown-1","project":"proj1"}}})"));
  ASSERT_EQ(started.exit_code, 0) << started.output;
  ASSERT_TRUE(absl::StrContains(started.output, "WORKLOAD_STATE_RUNNING")) << started.output;

  // backend is not running yet: the ready report waits and is retried.
  ASSERT_TRUE(WaitForAgentLog("report to backend failed; will retry", absl::Seconds(20)));
  EXPECT_FALSE(absl::StrContains(AgentLog(), "report refused by backend"));

  ASSERT_TRUE(stack().StartBackend().ok()) << stack().BackendLog();
  // Delivered over mTLS once backend is up (the backoff is at most 30 s); NOT_FOUND is final: dropped.
  ASSERT_TRUE(WaitForAgentLog("report refused by backend for good; dropped", absl::Seconds(60)));
  EXPECT_TRUE(absl::StrContains(AgentLog(), "NOT_FOUND")) << AgentLog();

  // Stopping sends the stopped report, refused the same way.
  strongroom::testing::CtlOutput stopped =
      Agent("backend", "StopWorkload", absl::StrCat(R"({"workloadId":")", id, R"(","gracePeriod":"2s"})"));
  ASSERT_EQ(stopped.exit_code, 0) << stopped.output;
  EXPECT_TRUE(absl::StrContains(stopped.output, "WORKLOAD_STATE_STOPPED")) << stopped.output;

  // backend's chain holds its own records of the reports (caller = this agent) and the agent's shipped
  // events: the transitions and both drops.
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  std::string audit;
  while (absl::Now() < deadline) {
    audit = AuditOf(id);
    if (absl::StrContains(audit, "WorkloadStopped") && absl::StrContains(audit, "to=STOPPED") &&
        absl::StrContains(audit, "report_dropped")) {
      break;
    }
    absl::SleepFor(absl::Milliseconds(500));
  }
  EXPECT_TRUE(absl::StrContains(audit, "WorkloadReady")) << audit;
  EXPECT_TRUE(absl::StrContains(audit, "WorkloadStopped")) << audit;
  EXPECT_TRUE(absl::StrContains(audit, "host-agent.report_dropped")) << audit;
  EXPECT_TRUE(absl::StrContains(audit, "workload.transition")) << audit;
  EXPECT_TRUE(absl::StrContains(audit, "to=STOPPED")) << audit;
  // The chain still verifies with the shipped records in it.
  strongroom::testing::CtlOutput verified = stack().Ctl("operator", {"audit", "verify"});
  EXPECT_EQ(verified.exit_code, 0) << verified.output;
  EXPECT_EQ(Leftovers(dir_ + "/state", id, dir_ + "/state/runtime"), std::vector<std::string>{});
}

// A daemon that ships its records: hostile bytes in every field of every unary host-agent RPC are made
// storable before they are spooled, so backend takes every record (none refused, nothing stuck in the spool)
// and its chain holds the escaped copies and verifies.
TEST_F(BackendReportTest, HostileBytesInEveryAgentRpcReachBackendsChainThroughTheSpool) {
  ASSERT_TRUE(stack().StartBackend().ok()) << stack().BackendLog();
  ASSERT_TRUE(StartAgent().ok()) << AgentLog();
  absl::StatusOr<Rig::ExecResult> probe = stack().RunOnClient(
      {SR_HOSTILE_CLIENT_BIN, "--target", absl::StrCat(kAgentIp, ":7443"), "--trust-domain",
       "strongroom.test", "--ca", stack().dir() + "/pki/ca.pem", "--service", "strongroom.v1.HostAgent",
       "--server-role", "host-agent", "--as", "backend=" + stack().CertPrefix("backend"), "--as",
       "operator=" + stack().CertPrefix("operator")},
      absl::Seconds(240));
  ASSERT_TRUE(probe.ok()) << probe.status();
  EXPECT_EQ(probe->exit_code, 0) << probe->output.substr(0, 4000);
  int calls = 0;
  for (absl::string_view line : absl::StrSplit(probe->output, '\n', absl::SkipEmpty())) {
    if (absl::StartsWith(line, "{\"method\"")) ++calls;
  }
  ASSERT_GT(calls, 40);
  // Every call's record reaches the chain through the agent's spool, none refused.
  const std::string count_sql =
      absl::StrCat("SELECT count(*) FROM audit_records WHERE recorded_by = '", kAgentId,
                   "' AND (action LIKE '/strongroom.v1.%' OR action = 'audit.invalid_action')");
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  int shipped = 0;
  while (absl::Now() < deadline) {
    (void)absl::SimpleAtoi(stack().Sql(count_sql).value_or("0"), &shipped);
    if (shipped >= calls) break;
    absl::SleepFor(absl::Milliseconds(500));
  }
  EXPECT_GE(shipped, calls);
  EXPECT_EQ(stack()
                .Sql("SELECT count(*) FROM audit_records WHERE action IN ('audit.record_refused', "
                     "'audit.record_unstorable', 'audit.source_gap', 'audit.records_lost')")
                .value_or("?"),
            "0");
  // The escaped copy of a NUL in a workload id, and the quote/brace/backslash one verbatim.
  EXPECT_EQ(stack()
                .Sql(absl::StrCat("SELECT count(*) > 0 FROM audit_records WHERE recorded_by = '", kAgentId,
                                  "' AND object = 'workload/sr\\x00hostile' AND details ? 'audit.escaped'"))
                .value_or("?"),
            "t");
  EXPECT_EQ(stack()
                .Sql(absl::StrCat("SELECT count(*) > 0 FROM audit_records WHERE recorded_by = '", kAgentId,
                                  "' AND object = 'workload/sr''\"{}[]\\hostile;--'"))
                .value_or("?"),
            "t");
  strongroom::testing::CtlOutput verified = stack().Ctl("operator", {"audit", "verify"});
  EXPECT_EQ(verified.exit_code, 0) << verified.output;
}

}  // namespace
}  // namespace strongroom::host_agent::testing
