// The audit chain against real PostgreSQL: every RPC is a record, tampering of any kind is detected and named
// by `strongroomctl audit verify` (client-side and --server), other services append with AppendAudit,
// forensics queries and the usage report work.
#include <fstream>
#include <string>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "strongroom/v1/backend.pb.h"
#include "tests/backend/backend_stack.h"

namespace strongroom::testing {
namespace {

constexpr int kVerificationFailed = 65;

class BackendAuditTest : public BackendTest {
 protected:
  // Some records to tamper with: 12 RPCs.
  void MakeRecords() {
    for (int i = 0; i < 12; ++i) {
      CtlOutput r = stack().Call("operator", "ListJobs", "{}");
      ASSERT_EQ(r.exit_code, 0) << r.output;
    }
  }

  std::string Sql(const std::string& sql) {
    absl::StatusOr<std::string> out = stack().Sql(sql);
    EXPECT_TRUE(out.ok()) << out.status();
    return out.value_or("");
  }

  // As a superuser who switched the append-only triggers off, the way an attacker with database access would.
  void Tamper(const std::string& sql) { Sql("SET session_replication_role = replica; " + sql); }

  CtlOutput Verify(std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"audit", "verify"};
    args.insert(args.end(), extra.begin(), extra.end());
    return stack().Ctl("operator", args);
  }

  void ExpectDetected(const CtlOutput& r, uint64_t sequence, const std::string& violation) {
    EXPECT_EQ(r.exit_code, kVerificationFailed) << r.output;
    EXPECT_TRUE(absl::StrContains(r.output, absl::StrCat("\"first_bad_sequence\":", sequence))) << r.output;
    EXPECT_TRUE(absl::StrContains(r.output, absl::StrCat("\"violation\":\"", violation, "\""))) << r.output;
  }
};

TEST_F(BackendAuditTest, AnIntactChainVerifiesBothWays) {
  ASSERT_TRUE(stack().StartBackend().ok());
  MakeRecords();
  CtlOutput client = Verify();
  EXPECT_EQ(client.exit_code, 0) << client.output;
  EXPECT_TRUE(absl::StrContains(client.output, "\"ok\":true")) << client.output;
  CtlOutput server = Verify({"--server"});
  EXPECT_EQ(server.exit_code, 0) << server.output;
  EXPECT_TRUE(absl::StrContains(server.output, "\"verified_by\":\"backend\"")) << server.output;
}

TEST_F(BackendAuditTest, AnEditedRecordIsDetectedAndNamed) {
  ASSERT_TRUE(stack().StartBackend().ok());
  MakeRecords();
  // The append-only trigger refuses a plain UPDATE, naming the operation.
  absl::StatusOr<std::string> refused =
      stack().Sql("UPDATE audit_records SET object = 'x' WHERE sequence = 5");
  ASSERT_FALSE(refused.ok());
  EXPECT_TRUE(absl::StrContains(refused.status().message(), "append-only: UPDATE refused"))
      << refused.status();
  Tamper("UPDATE audit_records SET object = 'job/forged' WHERE sequence = 5");
  ExpectDetected(Verify(), 5, "HASH_MISMATCH");
  ExpectDetected(Verify({"--server"}), 5, "HASH_MISMATCH");
}

TEST_F(BackendAuditTest, ADeletedRecordIsDetectedAndNamed) {
  ASSERT_TRUE(stack().StartBackend().ok());
  MakeRecords();
  absl::StatusOr<std::string> refused = stack().Sql("DELETE FROM audit_records WHERE sequence = 7");
  ASSERT_FALSE(refused.ok());
  Tamper("DELETE FROM audit_records WHERE sequence = 7");
  ExpectDetected(Verify(), 7, "SEQUENCE_GAP");
  ExpectDetected(Verify({"--server"}), 7, "SEQUENCE_GAP");
  // Renumbering the rest to close the gap does not help: the links break instead.
  Tamper("UPDATE audit_records SET sequence = sequence - 1 WHERE sequence = 8");
  ExpectDetected(Verify(), 7, "CHAIN_BROKEN");
}

TEST_F(BackendAuditTest, ReorderedRecordsAreDetectedAndNamed) {
  ASSERT_TRUE(stack().StartBackend().ok());
  MakeRecords();
  Tamper(
      "UPDATE audit_records SET sequence = 1000000 WHERE sequence = 4; "
      "UPDATE audit_records SET sequence = 4 WHERE sequence = 6; "
      "UPDATE audit_records SET sequence = 6 WHERE sequence = 1000000");
  ExpectDetected(Verify(), 4, "CHAIN_BROKEN");
  ExpectDetected(Verify({"--server"}), 4, "CHAIN_BROKEN");
}

TEST_F(BackendAuditTest, ATruncatedChainIsDetectedWithAnAnchorKeptOutside) {
  ASSERT_TRUE(stack().StartBackend().ok());
  MakeRecords();
  const std::string anchors = stack().dir() + "/anchors";
  CtlOutput saved = Verify({"--save-anchor", anchors});
  ASSERT_EQ(saved.exit_code, 0) << saved.output;
  uint64_t head = 0;
  ASSERT_TRUE(absl::SimpleAtoi(Sql("SELECT max(sequence) FROM audit_records"), &head));
  // Anchored at the head the verify saw; remove the last three records before it.
  std::string line;
  {
    std::ifstream in(anchors);
    std::getline(in, line);
  }
  uint64_t anchored = 0;
  ASSERT_TRUE(absl::SimpleAtoi(line.substr(0, line.find(':')), &anchored)) << line;
  Tamper(absl::StrCat("DELETE FROM audit_records WHERE sequence > ", anchored - 3));
  // Without the anchor a cut tail looks like a shorter chain; with it, the cut is named.
  ExpectDetected(Verify({"--anchors-file", anchors}), anchored - 2, "TRUNCATED");
  // backend kept appending meanwhile (each verify is an RPC), so by now the anchored position may hold a new
  // record: either way the server-side check refuses the chain.
  CtlOutput server = Verify({"--server", "--anchors-file", anchors});
  EXPECT_EQ(server.exit_code, kVerificationFailed) << server.output;
  EXPECT_TRUE(absl::StrContains(server.output, "TRUNCATED") ||
              absl::StrContains(server.output, "ANCHOR_MISMATCH"))
      << server.output;
}

TEST_F(BackendAuditTest, AThousandRpcsGiveAThousandRecordsWithNoGaps) {
  ASSERT_TRUE(stack().StartBackend().ok());
  const std::string before = Sql("SELECT coalesce(max(sequence), 0) FROM audit_records");
  const std::string operator_cert = stack().CertPrefix("operator");
  absl::StatusOr<Rig::ExecResult> load = stack().RunOnClient(
      {SR_LOAD_BIN, "--target", absl::StrCat(BackendStack::kBackendIp, ":7443"), "--trust-domain",
       BackendStack::kTrustDomain, "--ca", stack().dir() + "/pki/ca.pem", "--cert", operator_cert + ".pem",
       "--key", operator_cert + ".key", "--method", "strongroom.v1.Backend/ListJobs", "--request", "{}",
       "--count", "1000", "--concurrency", "16"},
      absl::Seconds(120));
  ASSERT_TRUE(load.ok()) << load.status();
  ASSERT_EQ(load->exit_code, 0) << load->output;
  // No waiting: each RPC was answered only after its record was committed.
  EXPECT_EQ(Sql(absl::StrCat("SELECT count(*) FROM audit_records WHERE sequence > ", before,
                             " AND action = '/strongroom.v1.Backend/ListJobs' AND actor = "
                             "'spiffe://strongroom.test/operator/alice' AND outcome = 1")),
            "1000");
  // Gapless from 1 to the head, and the chain verifies.
  EXPECT_EQ(Sql("SELECT count(*) = max(sequence) AND min(sequence) = 1 FROM audit_records"), "t");
  CtlOutput verified = Verify();
  EXPECT_EQ(verified.exit_code, 0) << verified.output;
  std::printf("load: %s\n", load->output.c_str());
}

TEST_F(BackendAuditTest, RecordsNameTheCallerMethodObjectAndOutcomeAndAreQueryable) {
  ASSERT_TRUE(stack().StartBackend().ok());
  v1::CreateGlobalJobResponse created;
  ASSERT_TRUE(stack().CallInto("vmc-c1", "CreateGlobalJob", CreateRequestJson(301), &created).ok());
  const std::string id = created.job().ref().global_job_id();
  ASSERT_EQ(
      stack().Call("operator", "GetJob", absl::StrCat(R"({"job":{"globalJobId":")", id, R"("}})")).exit_code,
      0);
  // A refusal by the authorization table is a record too.
  EXPECT_EQ(stack().Call("operator", "CreateGlobalJob", CreateRequestJson(302)).exit_code, 7);

  CtlOutput by_object = stack().Ctl("operator", {"audit", "query", "--object", "job/" + id});
  ASSERT_EQ(by_object.exit_code, 0) << by_object.output;
  EXPECT_TRUE(absl::StrContains(by_object.output, "\"action\":\"/strongroom.v1.Backend/GetJob\""))
      << by_object.output;
  EXPECT_TRUE(
      absl::StrContains(by_object.output, "\"spiffeId\":\"spiffe://strongroom.test/operator/alice\""));
  EXPECT_TRUE(absl::StrContains(by_object.output, "\"action\":\"job.transition\"")) << by_object.output;
  EXPECT_TRUE(absl::StrContains(by_object.output, "\"to\":\"SUBMITTING\"")) << by_object.output;

  CtlOutput denied =
      stack().Ctl("operator", {"audit", "query", "--actor", "spiffe://strongroom.test/operator/", "--outcome",
                               "DENIED", "--from", "now-1h", "--to", "now+1h"});
  ASSERT_EQ(denied.exit_code, 0) << denied.output;
  EXPECT_TRUE(absl::StrContains(denied.output, "\"action\":\"/strongroom.v1.Backend/CreateGlobalJob\""))
      << denied.output;
  EXPECT_TRUE(absl::StrContains(denied.output, "\"statusCode\":7")) << denied.output;
  EXPECT_TRUE(absl::StrContains(denied.output, "may not call")) << denied.output;
  // A window that ended before everything holds nothing.
  CtlOutput past = stack().Ctl("operator", {"audit", "query", "--to", "@1000000000"});
  EXPECT_EQ(past.exit_code, 0) << past.output;
  EXPECT_FALSE(absl::StrContains(past.output, "\"sequence\"")) << past.output;
}

TEST_F(BackendAuditTest, OtherServicesAppendIdempotentlyAndGapsAreRecorded) {
  ASSERT_TRUE(stack().StartBackend().ok());
  auto record = [](int seq, const std::string& object) {
    return absl::StrCat(
        R"({"time":"2026-01-02T03:04:05.123456789Z","actor":{"spiffeId":"spiffe://strongroom.test/host-agent/gnode1"},)",
        R"("action":"/strongroom.v1.Netd/AllocatePort","object":")", object,
        R"(","outcome":"AUDIT_OUTCOME_SUCCESS","details":{"note":"x'); DELETE FROM audit_records; --"},)",
        R"("sourceSequence":")", seq, R"("})");
  };
  const std::string sqlish = "port/'; DROP TABLE audit_records; --";
  v1::AppendAuditResponse response;
  ASSERT_TRUE(stack()
                  .CallInto("netd-gnode1", "AppendAudit",
                            absl::StrCat(R"({"records":[)", record(1, "port/wl-1"), ",", record(2, sqlish),
                                         ",", record(3, "port/wl-3"), "]}"),
                            &response)
                  .ok());
  EXPECT_EQ(response.appended(), 3u);
  EXPECT_EQ(response.acknowledged_source_sequence(), 3u);
  // A retry of the same batch appends nothing.
  ASSERT_TRUE(stack()
                  .CallInto("netd-gnode1", "AppendAudit",
                            absl::StrCat(R"({"records":[)", record(1, "port/wl-1"), ",", record(2, sqlish),
                                         ",", record(3, "port/wl-3"), "]}"),
                            &response)
                  .ok());
  EXPECT_EQ(response.appended(), 0u);
  EXPECT_EQ(response.duplicates(), 3u);
  // A malformed record refuses the whole batch, naming it.
  CtlOutput bad =
      stack().Call("netd-gnode1", "AppendAudit",
                   absl::StrCat(R"({"records":[)", record(4, "port/wl-4"), R"(,{"sourceSequence":"5"}]})"));
  EXPECT_EQ(bad.exit_code, 3) << bad.output;
  EXPECT_TRUE(absl::StrContains(bad.output, "records[1].time: required")) << bad.output;
  EXPECT_EQ(Sql("SELECT count(*) FROM audit_records WHERE object = 'port/wl-4'"), "0");
  // Skipping 4 and 5: the gap is itself a record.
  ASSERT_TRUE(stack()
                  .CallInto("netd-gnode1", "AppendAudit",
                            absl::StrCat(R"({"records":[)", record(6, "port/wl-6"), "]}"), &response)
                  .ok());
  EXPECT_EQ(Sql("SELECT details->>'expected', details->>'received' FROM audit_records WHERE action = "
                "'audit.source_gap'"),
            "4|6");
  // Stored verbatim, attributed to the verified sender, and the chain still verifies.
  EXPECT_EQ(
      Sql(absl::StrCat("SELECT count(*) FROM audit_records WHERE object = $$", sqlish,
                       "$$ AND details->>'note' = $$x'); DELETE FROM audit_records; --$$ AND recorded_by = "
                       "'spiffe://strongroom.test/netd/gnode1' AND source_sequence = 2")),
      "1");
  EXPECT_EQ(Verify().exit_code, 0);
  // backend's own identity may not append as a remote service (its records are numbered locally).
  CtlOutput self =
      stack().Call("backend", "AppendAudit", absl::StrCat(R"({"records":[)", record(1, "x"), "]}"));
  EXPECT_EQ(self.exit_code, 7) << self.output;
}

TEST_F(BackendAuditTest, UsageReportCountsJobsNodeHoursAndCoreHours) {
  ASSERT_TRUE(stack().StartBackend().ok());
  v1::CreateGlobalJobResponse created;
  ASSERT_TRUE(stack().CallInto("vmc-c1", "CreateGlobalJob", CreateRequestJson(303), &created).ok());
  const std::string id = created.job().ref().global_job_id();
  ASSERT_EQ(WaitForState(id, v1::JOB_STATE_STARTING).state(), v1::JOB_STATE_STARTING);
  std::this_thread::sleep_for(std::chrono::seconds(2));
  ASSERT_EQ(stack()
                .Call("operator", "CancelJob",
                      absl::StrCat(R"({"job":{"globalJobId":")", id, R"("},"reason":"done"})"))
                .exit_code,
            0);
  const v1::Job cancelled = WaitForState(id, v1::JOB_STATE_CANCELLED);
  ASSERT_EQ(cancelled.state(), v1::JOB_STATE_CANCELLED);
  CtlOutput report = stack().Ctl(
      "operator", {"report", "usage", "--project", "proj1", "--from", "now-1h", "--to", "now+1h"});
  ASSERT_EQ(report.exit_code, 0) << report.output;
  v1::UsageReportResponse usage;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(report.output, &usage).ok()) << report.output;
  EXPECT_EQ(usage.total().jobs(), 1u);
  EXPECT_EQ(usage.total().jobs_cancelled(), 1u);
  const double seconds =
      absl::ToDoubleSeconds(absl::Seconds(cancelled.end_time().seconds() - cancelled.start_time().seconds()) +
                            absl::Nanoseconds(cancelled.end_time().nanos() - cancelled.start_time().nanos()));
  EXPECT_GT(seconds, 1.5);
  EXPECT_NEAR(usage.total().node_hours(), seconds / 3600, 1e-6);
  EXPECT_NEAR(usage.total().core_hours(), 8 * seconds / 3600, 1e-6);  // exclusive: the node's 8 CPUs
  ASSERT_EQ(usage.per_user_size(), 1);
  EXPECT_EQ(usage.per_user(0).user(), "alice");
  // Another project has nothing.
  CtlOutput other = stack().Ctl(
      "operator", {"report", "usage", "--project", "proj2", "--from", "now-1h", "--to", "now+1h"});
  EXPECT_TRUE(absl::StrContains(other.output, "\"jobs\":\"0\"")) << other.output;
}

TEST_F(BackendAuditTest, ADaemonShipsItsRecordsThroughItsSpoolAcrossABackendOutage) {
  ASSERT_TRUE(stack().StartBackend().ok());
  const std::string spool = stack().dir() + "/netd-spool";
  auto probe = [&](int count, int flush_seconds) {
    const std::string cert = stack().CertPrefix("netd-gnode1");
    return stack().RunOnClient(
        {SR_SHIP_PROBE_BIN, "--backend", absl::StrCat(BackendStack::kBackendIp, ":7443"), "--trust-domain",
         BackendStack::kTrustDomain, "--ca", stack().dir() + "/pki/ca.pem", "--cert", cert + ".pem", "--key",
         cert + ".key", "--spool", spool, "--count", absl::StrCat(count), "--flush-timeout",
         absl::StrCat(flush_seconds)},
        absl::Seconds(60));
  };
  absl::StatusOr<Rig::ExecResult> first = probe(1000, 30);
  ASSERT_TRUE(first.ok() && first->exit_code == 0)
      << (first.ok() ? first->output : first.status().ToString());
  EXPECT_TRUE(absl::StrContains(first->output, "\"acknowledged\":1000,\"pending\":0")) << first->output;
  // backend down: the daemon's records wait in its spool.
  ASSERT_TRUE(stack().StopBackend().ok());
  absl::StatusOr<Rig::ExecResult> offline = probe(500, 2);
  ASSERT_TRUE(offline.ok()) << offline.status();
  EXPECT_EQ(offline->exit_code, 3) << offline->output;
  EXPECT_TRUE(absl::StrContains(offline->output, "\"pending\":500")) << offline->output;
  // backend back: the next start of the daemon ships what its spool holds.
  ASSERT_TRUE(stack().StartBackend().ok());
  absl::StatusOr<Rig::ExecResult> resumed = probe(0, 30);
  ASSERT_TRUE(resumed.ok() && resumed->exit_code == 0)
      << (resumed.ok() ? resumed->output : resumed.status().ToString());
  EXPECT_TRUE(absl::StrContains(resumed->output, "\"acknowledged\":1500,\"pending\":0")) << resumed->output;
  // Exactly 1500 records from netd, numbered 1..1500 without a gap, and the chain verifies.
  EXPECT_EQ(
      Sql("SELECT count(*) || '/' || min(source_sequence) || '/' || max(source_sequence) FROM audit_records "
          "WHERE recorded_by = 'spiffe://strongroom.test/netd/gnode1'"),
      "1500/1/1500");
  EXPECT_EQ(Sql("SELECT count(*) FROM audit_records WHERE action = 'audit.source_gap'"), "0");
  EXPECT_EQ(Verify().exit_code, 0);
}

}  // namespace
}  // namespace strongroom::testing
