// The audit chain cannot be stopped by input and cannot fail quietly (NIST 800-171 3.3.4), against real
// PostgreSQL and the real backend daemon over mTLS:
//   - hostile bytes in every field of every audited RPC reach the chain (escaped), which verifies;
//   - a record the database refuses becomes a chained note and the others go on;
//   - a stopped database stalls the chain loudly (health, metrics, repeated ERROR, audited calls refused) and
//     everything recovers when it returns;
//   - records pending when backend is killed are appended after its restart, and records its spool lost leave
//     a chained gap record;
//   - a sender's spool moves past a record backend refuses, and a truncated one leaves a gap record;
//   - sequence arguments outside the chain's range are INVALID_ARGUMENT.
#include <chrono>
#include <filesystem>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/audit_text.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "strongroom/v1/backend.pb.h"
#include "tests/backend/backend_stack.h"

namespace strongroom::testing {
namespace {

constexpr int kInvalidArgument = 3;
constexpr int kUnavailable = 14;
constexpr const char* kNetd = "spiffe://strongroom.test/netd/gnode1";

class BackendAuditResilienceTest : public BackendTest {
 protected:
  std::string Sql(const std::string& sql) {
    absl::StatusOr<std::string> out = stack().Sql(sql);
    EXPECT_TRUE(out.ok()) << out.status();
    return out.value_or("");
  }
  uint64_t Head() {
    uint64_t head = 0;
    (void)absl::SimpleAtoi(Sql("SELECT coalesce(max(sequence), 0) FROM audit_records"), &head);
    return head;
  }

  // The chain's records matching `args` of `audit query`, parsed.
  std::vector<v1::AuditRecord> Query(std::vector<std::string> args) {
    args.insert(args.begin(), {"audit", "query", "--limit", "100000"});
    CtlOutput r = stack().Ctl("operator", args);
    EXPECT_EQ(r.exit_code, 0) << r.output;
    std::vector<v1::AuditRecord> records;
    for (absl::string_view line : absl::StrSplit(r.output, '\n', absl::SkipEmpty())) {
      v1::AuditRecord record;
      if (google::protobuf::util::JsonStringToMessage(std::string(line), &record).ok()) {
        records.push_back(std::move(record));
      }
    }
    return records;
  }

  // `audit verify` both ways: the chain is intact.
  void ExpectVerifies() {
    CtlOutput client = stack().Ctl("operator", {"audit", "verify"}, absl::Seconds(120));
    EXPECT_EQ(client.exit_code, 0) << client.output;
    EXPECT_TRUE(absl::StrContains(client.output, "\"ok\":true")) << client.output;
    CtlOutput server = stack().Ctl("operator", {"audit", "verify", "--server"}, absl::Seconds(120));
    EXPECT_EQ(server.exit_code, 0) << server.output;
  }

  // Waits until `done` holds, polling every 200 ms; false on timeout.
  bool Eventually(const std::function<bool()>& done, absl::Duration timeout) {
    const absl::Time deadline = absl::Now() + timeout;
    while (absl::Now() < deadline) {
      if (done()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    return done();
  }

  std::string Health() {
    return stack().Ctl("operator", {"--timeout", "3", "health", "strongroom.v1.Backend"}).output;
  }

  absl::StatusOr<Rig::ExecResult> ShipProbe(int count, int flush_seconds, int poison = 0) {
    const std::string cert = stack().CertPrefix("netd-gnode1");
    return stack().RunOnClient(
        {SR_SHIP_PROBE_BIN, "--backend", absl::StrCat(BackendStack::kBackendIp, ":7443"), "--trust-domain",
         BackendStack::kTrustDomain, "--ca", stack().dir() + "/pki/ca.pem", "--cert", cert + ".pem", "--key",
         cert + ".key", "--spool", stack().dir() + "/netd-spool", "--count", absl::StrCat(count),
         "--flush-timeout", absl::StrCat(flush_seconds), "--poison", absl::StrCat(poison)},
        absl::Seconds(90));
  }
};

TEST_F(BackendAuditResilienceTest, HostileBytesInEveryFieldOfEveryRpcReachTheChainEscapedAndItVerifies) {
  ASSERT_TRUE(stack().StartBackend().ok());
  const uint64_t before = Head();
  const std::string pki = stack().dir() + "/pki/";
  absl::StatusOr<Rig::ExecResult> probe =
      stack().RunOnClient({SR_HOSTILE_CLIENT_BIN, "--target", absl::StrCat(BackendStack::kBackendIp, ":7443"),
                           "--trust-domain", BackendStack::kTrustDomain, "--ca", pki + "ca.pem", "--as",
                           "operator=" + pki + "operator", "--as", "vm-controller=" + pki + "vmc-c1", "--as",
                           "host-agent=" + pki + "ha-gnode1", "--as", "netd=" + pki + "netd-gnode1"},
                          absl::Seconds(240));
  ASSERT_TRUE(probe.ok()) << probe.status();
  // Every call got an answer, none UNAVAILABLE (the chain never stalled).
  EXPECT_EQ(probe->exit_code, 0) << probe->output.substr(0, 4000);
  std::map<std::string, int> calls_by_kind;
  int calls = 0;
  for (absl::string_view line : absl::StrSplit(probe->output, '\n', absl::SkipEmpty())) {
    if (!absl::StartsWith(line, "{\"method\"")) continue;
    ++calls;
    if (absl::StrContains(line, "\"field\":\"(method)\""))
      std::printf("hostile path: %s\n", std::string(line).c_str());
    for (const char* kind : {"nul", "invalid-utf8", "64k", "quotes"}) {
      if (absl::StrContains(line, absl::StrCat("\"value\":\"", kind, "\""))) ++calls_by_kind[kind];
    }
  }
  std::printf("hostile calls: %d (nul %d, invalid-utf8 %d, 64k %d, quotes %d)\n", calls, calls_by_kind["nul"],
              calls_by_kind["invalid-utf8"], calls_by_kind["64k"], calls_by_kind["quotes"]);
  ASSERT_GT(calls, 200);
  // Each call is a record (its refusal or its answer), committed before the answer.
  EXPECT_GE(Head() - before, static_cast<uint64_t>(calls));
  ExpectVerifies();

  // The escaped copies. A NUL in a job id (the issue's case):
  bool nul_object = false, quoted_object = false, long_object = false, hostile_path = false,
       invalid_path = false, nul_detail = false;
  for (const v1::AuditRecord& r : Query({"--object", "job/"})) {
    const auto escaped = r.details().find("audit.escaped");
    if (r.object() == "job/sr\\x00hostile") {
      nul_object = true;
      EXPECT_TRUE(escaped != r.details().end() && absl::StrContains(escaped->second, "object"))
          << r.DebugString();
      EXPECT_EQ(*UnescapeAuditBytes(r.object()), std::string("job/sr\0hostile", 14));
    }
    if (r.object() == "job/sr'\"{}[]\\hostile;--") quoted_object = true;  // verbatim: nothing to escape
    if (absl::StartsWith(r.object(), "job/hhhh")) {
      long_object = true;
      EXPECT_LE(r.object().size(), kMaxAuditObjectBytes);
      EXPECT_TRUE(absl::StrContains(r.details().at("audit.truncated"), "object=65540:")) << r.DebugString();
    }
  }
  // A hostile :path reaches authorization (and is refused: no such method); the record keeps it. gRPC itself
  // refuses some bytes in a header before any of our code sees the call (the probe prints what each got).
  for (const v1::AuditRecord& r : Query({"--action", "audit.invalid_action"})) {
    std::printf("hostile path recorded: %s\n", r.details().at("audit.action").c_str());
    if (r.details().at("audit.action") == "/strongroom.v1.Backend/sr'\"{}[]\\hostile;--") hostile_path = true;
    if (r.details().at("audit.action") == "/strongroom.v1.Backend/sr\\xff\\xfe\\xc3(hostile") {
      invalid_path = true;
      EXPECT_TRUE(absl::StrContains(r.details().at("audit.escaped"), "details.audit.action"))
          << r.DebugString();
    }
  }
  // A NUL in a record another service appends is refused with INVALID_ARGUMENT (its sender replaces it);
  // in a field backend only quotes back, the error detail holds it escaped.
  for (const v1::AuditRecord& r : Query({"--action", "/strongroom.v1.Backend/CancelJob"})) {
    if (r.details().count("error") != 0 && absl::StrContains(r.details().at("error"), "sr\\x00hostile")) {
      nul_detail = true;
    }
  }
  EXPECT_TRUE(nul_object) << "no record holds the NUL job id escaped";
  EXPECT_TRUE(quoted_object) << "no record holds the quote/brace/backslash job id verbatim";
  EXPECT_TRUE(long_object) << "no record holds the 64 KiB job id cut with its length and digest";
  EXPECT_TRUE(hostile_path) << "no record names the hostile method path";
  EXPECT_TRUE(invalid_path) << "no record holds the invalid UTF-8 method path escaped";
  EXPECT_TRUE(nul_detail) << "no error detail quotes the NUL value";
  // And backend is healthy, with nothing left pending.
  EXPECT_TRUE(absl::StrContains(Health(), "\"SERVING\"")) << Health();
  EXPECT_TRUE(Eventually([&] { return stack().MetricValue("strongroom_audit_pending_records") == 0; },
                         absl::Seconds(10)));
  EXPECT_EQ(stack().MetricValue("strongroom_audit_unstorable_records_total"), 0);
}

TEST_F(BackendAuditResilienceTest, ARecordTheDatabaseRefusesBecomesANoteAndTheRestGoesOn) {
  ASSERT_TRUE(stack().StartBackend().ok());
  v1::CreateGlobalJobResponse created;
  ASSERT_TRUE(stack().CallInto("vmc-c1", "CreateGlobalJob", CreateRequestJson(801), &created).ok());
  const std::string job = created.job().ref().global_job_id();
  // What no escaping can prevent: the database refuses these rows (a constraint a DBA added, a limit).
  Sql("ALTER TABLE audit_records ADD CONSTRAINT sr_test_poison CHECK (object <> 'job/poison-1' AND NOT "
      "(action = 'job.event' AND details->>'event' = 'global.scancelled'))");
  CtlOutput poisoned = stack().Call("operator", "GetJob", R"({"job":{"globalJobId":"poison-1"}})");
  EXPECT_EQ(poisoned.exit_code, 5) << poisoned.output;  // NOT_FOUND: answered, its record stood in for
  for (int i = 0; i < 5; ++i) EXPECT_EQ(stack().Call("operator", "ListJobs", "{}").exit_code, 0);
  // A sender's record the database refuses: a note under the sender's own number.
  CtlOutput append = stack().Call(
      "netd-gnode1", "AppendAudit",
      R"({"records":[{"time":"2026-01-01T00:00:00Z","actor":{"spiffeId":"spiffe://strongroom.test/operator/x"},)"
      R"("action":"netd.poke","object":"job/poison-1","outcome":"AUDIT_OUTCOME_SUCCESS","sourceSequence":"7"},)"
      R"({"time":"2026-01-01T00:00:01Z","actor":{"spiffeId":"spiffe://strongroom.test/operator/x"},)"
      R"("action":"netd.poke","object":"port/fine","outcome":"AUDIT_OUTCOME_SUCCESS","sourceSequence":"8"}]})");
  EXPECT_EQ(append.exit_code, 0) << append.output;
  EXPECT_TRUE(absl::StrContains(append.output, "\"acknowledgedSourceSequence\":\"8\"")) << append.output;
  // A timeline row the database refuses as a record.
  CtlOutput cancel =
      stack().Call("operator", "CancelJob",
                   absl::StrCat(R"({"job":{"globalJobId":")", job, R"("},"reason":"poison row"})"));
  EXPECT_EQ(cancel.exit_code, 0) << cancel.output;
  WaitForState(job, v1::JOB_STATE_CANCELLED);

  std::vector<v1::AuditRecord> notes;
  ASSERT_TRUE(Eventually(
      [&] {
        notes = Query({"--action", "audit.record_unstorable"});
        return notes.size() >= 3;
      },
      absl::Seconds(20)));
  bool own = false, sender = false, timeline = false;
  for (const v1::AuditRecord& n : notes) {
    if (n.recorded_by().spiffe_id() == BackendStack::kBackendIdentity && n.details().count("copy") != 0 &&
        absl::StrContains(n.details().at("copy"), "poison-1")) {
      own = true;
    }
    if (n.recorded_by().spiffe_id() == kNetd && n.source_sequence() == 7) sender = true;
    if (n.details().count("timeline_id") != 0 && n.object() == "job/" + job) timeline = true;
    EXPECT_EQ(n.actor().spiffe_id(), BackendStack::kBackendIdentity);
    EXPECT_TRUE(absl::StrContains(n.details().at("error"), "sr_test_poison") ||
                n.details().count("timeline_id"))
        << n.DebugString();
  }
  EXPECT_TRUE(own) << "backend's own refused record has no note";
  EXPECT_TRUE(sender) << "netd's refused record has no note under its source_sequence";
  EXPECT_TRUE(timeline) << "the refused timeline row has no note";
  // The others went on: netd's next record, the ListJobs calls, the job's other transitions.
  EXPECT_EQ(Sql(absl::StrCat("SELECT count(*) FROM audit_records WHERE recorded_by = '", kNetd,
                             "' AND source_sequence = 8 AND object = 'port/fine'")),
            "1");
  EXPECT_GE(Query({"--action", "/strongroom.v1.Backend/ListJobs"}).size(), 5u);
  EXPECT_EQ(Sql("SELECT count(*) FROM job_timeline WHERE audit_sequence IS NULL"), "0");
  EXPECT_GE(stack().MetricValue("strongroom_audit_unstorable_records_total"), 3);
  EXPECT_EQ(stack().MetricValue("strongroom_audit_stalled"), 0);
  ExpectVerifies();
}

TEST_F(BackendAuditResilienceTest, StoppingPostgresStallsLoudlyAndEverythingRecovers) {
  ASSERT_TRUE(
      stack().StartBackend(Options([](BackendOptions& o) { o.audit_config = "stall_seconds: 2"; })).ok());
  ASSERT_TRUE(absl::StrContains(Health(), "\"SERVING\"")) << Health();
  EXPECT_EQ(stack().MetricValue("strongroom_audit_stalled"), 0);
  ASSERT_TRUE(stack().db().Stop().ok());
  const absl::Time stopped = absl::Now();
  // Calls made while it is down are answered UNAVAILABLE; their records wait.
  for (int i = 0; i < 5; ++i) EXPECT_EQ(stack().Call("operator", "ListJobs", "{}").exit_code, kUnavailable);
  // Health goes NOT_SERVING within a few seconds.
  ASSERT_TRUE(Eventually([&] { return absl::StrContains(Health(), "NOT_SERVING"); }, absl::Seconds(15)));
  std::printf("NOT_SERVING %s after the database stopped\n",
              absl::FormatDuration(absl::Now() - stopped).c_str());
  EXPECT_EQ(stack().MetricValue("strongroom_audit_stalled"), 1);
  const double pending = stack().MetricValue("strongroom_audit_pending_records");
  const double age = stack().MetricValue("strongroom_audit_oldest_pending_seconds");
  EXPECT_GE(pending, 5);
  EXPECT_GT(age, 0);
  // Audited calls fail closed, naming why, before any handler runs.
  CtlOutput refused = stack().Call("operator", "ListJobs", "{}");
  EXPECT_EQ(refused.exit_code, kUnavailable) << refused.output;
  EXPECT_TRUE(
      absl::StrContains(refused.output, "audited calls are refused while the audit log cannot record them"))
      << refused.output;
  EXPECT_TRUE(absl::StrContains(refused.output, "records pending")) << refused.output;
  CtlOutput create = stack().Call("vmc-c1", "CreateGlobalJob", CreateRequestJson(802));
  EXPECT_EQ(create.exit_code, kUnavailable) << create.output;
  CtlOutput verify = stack().Ctl("operator", {"audit", "verify", "--server"});
  EXPECT_EQ(verify.exit_code, kUnavailable) << verify.output;
  // The lag keeps rising and the ERROR line repeats.
  std::this_thread::sleep_for(std::chrono::seconds(2));
  EXPECT_GT(stack().MetricValue("strongroom_audit_pending_records"), pending);
  EXPECT_GT(stack().MetricValue("strongroom_audit_oldest_pending_seconds"), age);
  auto stall_lines = [&] {
    int n = 0;
    for (absl::string_view line : absl::StrSplit(stack().BackendLog(), '\n')) {
      if (absl::StrContains(line, "AUDIT CHAIN STALLED") && absl::StrContains(line, "\"level\":\"error\""))
        ++n;
    }
    return n;
  };
  EXPECT_TRUE(Eventually([&] { return stall_lines() >= 2; }, absl::Seconds(25))) << stall_lines();

  // Back: everything recovers without a restart, and the records of the refused calls are in the chain.
  ASSERT_TRUE(stack().db().Restart().ok());
  ASSERT_TRUE(Eventually([&] { return absl::StrContains(Health(), "\"SERVING\""); }, absl::Seconds(30)));
  EXPECT_TRUE(Eventually([&] { return stack().MetricValue("strongroom_audit_pending_records") == 0; },
                         absl::Seconds(20)));
  EXPECT_EQ(stack().MetricValue("strongroom_audit_stalled"), 0);
  EXPECT_EQ(stack().Call("operator", "ListJobs", "{}").exit_code, 0);
  EXPECT_EQ(stack().Call("vmc-c1", "CreateGlobalJob", CreateRequestJson(802)).exit_code, 0);
  int refusals = 0;
  for (const v1::AuditRecord& r :
       Query({"--action", "/strongroom.v1.Backend/ListJobs", "--outcome", "FAILURE"})) {
    if (r.status_code() == kUnavailable) ++refusals;
  }
  EXPECT_GE(refusals, 6);
  CtlOutput lag = stack().Ctl("operator", {"audit", "verify"});
  EXPECT_EQ(lag.exit_code, 0) << lag.output;
  EXPECT_TRUE(absl::StrContains(lag.output, "\"lag\":{\"pending_records\":0")) << lag.output;
  ExpectVerifies();
}

// stall_seconds is long here: the calls must reach their handlers (a refused call's record names no object).
TEST_F(BackendAuditResilienceTest, AKilledBackendAppendsTheRecordsItHadPendingAfterItsRestart) {
  ASSERT_TRUE(
      stack().StartBackend(Options([](BackendOptions& o) { o.audit_config = "stall_seconds: 120"; })).ok());
  ASSERT_TRUE(stack().db().Stop().ok());
  constexpr int kCalls = 20;
  for (int i = 0; i < kCalls; ++i)
    stack().Call("operator", "GetJob", R"({"job":{"globalJobId":"gj-pending"}})");
  std::this_thread::sleep_for(std::chrono::seconds(3));
  ASSERT_TRUE(stack().KillBackend().ok());
  ASSERT_TRUE(stack().db().Restart().ok());
  ASSERT_TRUE(stack().StartBackend().ok());
  std::vector<v1::AuditRecord> replayed;
  EXPECT_TRUE(Eventually(
      [&] {
        replayed = Query({"--object", "job/gj-pending"});
        return replayed.size() >= static_cast<size_t>(kCalls);
      },
      absl::Seconds(20)))
      << replayed.size();
  EXPECT_EQ(Query({"--action", "audit.records_lost"}).size(), 0u);
  ExpectVerifies();
}

TEST_F(BackendAuditResilienceTest, AKilledBackendWhoseSpoolLostRecordsChainsAGapRecord) {
  ASSERT_TRUE(
      stack().StartBackend(Options([](BackendOptions& o) { o.audit_config = "stall_seconds: 120"; })).ok());
  ASSERT_TRUE(stack().db().Stop().ok());
  constexpr int kCalls = 20;
  for (int i = 0; i < kCalls; ++i) stack().Call("operator", "GetJob", R"({"job":{"globalJobId":"gj-lost"}})");
  std::this_thread::sleep_for(std::chrono::seconds(3));  // the spool's issued mark is synced
  ASSERT_TRUE(stack().KillBackend().ok());
  // What a disk problem or a host crash does: the spool no longer holds what backend had accepted.
  std::filesystem::resize_file(stack().AuditSpoolDir() + "/records.spool", 0);
  ASSERT_TRUE(stack().db().Restart().ok());
  ASSERT_TRUE(stack().StartBackend().ok());
  std::vector<v1::AuditRecord> gaps;
  ASSERT_TRUE(Eventually(
      [&] {
        gaps = Query({"--action", "audit.records_lost"});
        return !gaps.empty();
      },
      absl::Seconds(20)));
  ASSERT_EQ(gaps.size(), 1u);
  uint64_t count = 0;
  ASSERT_TRUE(absl::SimpleAtoi(gaps[0].details().at("count"), &count)) << gaps[0].DebugString();
  EXPECT_GE(count, static_cast<uint64_t>(kCalls));
  EXPECT_EQ(gaps[0].recorded_by().spiffe_id(), BackendStack::kBackendIdentity);
  EXPECT_EQ(gaps[0].status_code(), 15);  // DATA_LOSS
  EXPECT_TRUE(Query({"--object", "job/gj-lost"}).empty());
  // verify shows it: the chain is intact and names the records that say something was lost.
  CtlOutput verify = stack().Ctl("operator", {"audit", "verify"});
  EXPECT_EQ(verify.exit_code, 0) << verify.output;
  EXPECT_TRUE(absl::StrContains(verify.output, absl::StrCat("{\"sequence\":", gaps[0].sequence(),
                                                            ",\"action\":\"audit.records_lost\"")))
      << verify.output;
  ExpectVerifies();
}

TEST_F(BackendAuditResilienceTest, ARecordBackendRefusesAtTheHeadOfASpoolDoesNotStopTheRecordsBehindIt) {
  ASSERT_TRUE(stack().StartBackend().ok());
  absl::StatusOr<Rig::ExecResult> probe = ShipProbe(/*count=*/50, /*flush_seconds=*/30, /*poison=*/2);
  ASSERT_TRUE(probe.ok()) << probe.status();
  EXPECT_EQ(probe->exit_code, 0) << probe->output;
  EXPECT_TRUE(absl::StrContains(probe->output, "\"acknowledged\":52,\"pending\":0")) << probe->output;
  // The two refused records are chained notes with their escaped copies, under their own numbers 1 and 2.
  std::vector<v1::AuditRecord> notes = Query({"--action", "audit.record_refused"});
  ASSERT_EQ(notes.size(), 2u);
  for (const v1::AuditRecord& n : notes) {
    EXPECT_EQ(n.recorded_by().spiffe_id(), kNetd);
    EXPECT_LE(n.source_sequence(), 2u);
    EXPECT_TRUE(absl::StrContains(n.details().at("refused"), "records[")) << n.DebugString();
    EXPECT_TRUE(absl::StrContains(n.details().at("copy"), "poison")) << n.DebugString();
  }
  EXPECT_EQ(Sql(absl::StrCat("SELECT count(*) || '/' || max(source_sequence) FROM audit_records WHERE "
                             "recorded_by = '",
                             kNetd, "' AND action = '/strongroom.v1.Netd/AllocatePort'")),
            "50/52");
  EXPECT_EQ(Sql("SELECT count(*) FROM audit_records WHERE action = 'audit.source_gap'"), "0");
  ExpectVerifies();
}

TEST_F(BackendAuditResilienceTest, ATruncatedSenderSpoolLeavesAGapRecord) {
  ASSERT_TRUE(stack().StartBackend().ok());
  ASSERT_TRUE(stack().StopBackend().ok());
  absl::StatusOr<Rig::ExecResult> offline = ShipProbe(30, 2);
  ASSERT_TRUE(offline.ok()) << offline.status();
  EXPECT_EQ(offline->exit_code, 3) << offline->output;  // pending: backend is down
  std::filesystem::resize_file(stack().dir() + "/netd-spool/records.spool", 0);
  ASSERT_TRUE(stack().StartBackend().ok());
  absl::StatusOr<Rig::ExecResult> resumed = ShipProbe(1, 30);
  ASSERT_TRUE(resumed.ok() && resumed->exit_code == 0) << (resumed.ok() ? resumed->output : "");
  std::vector<v1::AuditRecord> lost = Query({"--action", "audit.records_lost"});
  ASSERT_EQ(lost.size(), 1u);
  EXPECT_EQ(lost[0].recorded_by().spiffe_id(), kNetd);
  EXPECT_EQ(lost[0].details().at("first"), "1");
  EXPECT_EQ(lost[0].details().at("last"), "30");
  // backend sees the jump in netd's numbering too.
  EXPECT_EQ(Query({"--action", "audit.source_gap"}).size(), 1u);
  ExpectVerifies();
}

TEST_F(BackendAuditResilienceTest, SequenceArgumentsOutsideTheChainAreInvalidArgument) {
  ASSERT_TRUE(stack().StartBackend().ok());
  const uint64_t head = Head();
  for (
      const auto& [method, json] : std::vector<std::pair<std::string, std::string>>{
          {"QueryAudit", R"({"fromSequence":"9223372036854775808"})"},
          {"QueryAudit", R"({"fromSequence":"18446744073709551615"})"},
          {"VerifyAudit", R"({"toSequence":"9223372036854775808"})"},
          {"VerifyAudit", R"({"fromSequence":"18446744073709551615"})"},
          {"VerifyAudit", absl::StrCat(R"({"toSequence":")", head + 1000, R"("})")},
          {"VerifyAudit", absl::StrCat(R"({"fromSequence":")", head + 1000, R"("})")},
          {"VerifyAudit",
           R"({"anchors":[{"sequence":"9223372036854775808","hash":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}]})"}}) {
    CtlOutput r = stack().Call("operator", method, json);
    EXPECT_EQ(r.exit_code, kInvalidArgument) << method << " " << json << ": " << r.output;
    EXPECT_TRUE(absl::StrContains(r.output, "sequence")) << r.output;
  }
  // The largest valid start is fine: nothing after it.
  CtlOutput last = stack().Call("operator", "QueryAudit", R"({"fromSequence":"9223372036854775807"})");
  EXPECT_EQ(last.exit_code, 0) << last.output;
  EXPECT_TRUE(absl::StrContains(last.output, "\"records\":[]")) << last.output;
}

}  // namespace
}  // namespace strongroom::testing
