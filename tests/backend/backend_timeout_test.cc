// A global job that reaches its time limit on the real Global Slurm is recorded as timed out, with its audit
// record. Its own executable (label "slow"): Slurm's smallest time limit is one minute and slurmctld checks
// time limits every 30 s counted from its start, so the limit fires about 90 s after the rig's slurmctld
// started and the test takes about 95 s (docs/BACKEND.md, "Tests").
#include <string>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "strongroom/v1/backend.pb.h"
#include "tests/backend/backend_stack.h"

namespace strongroom::testing {
namespace {

class BackendTimeoutTest : public BackendTest {
 protected:
  // One field of `scontrol show job`.
  std::string ShowJobField(uint32_t slurm_id, const std::string& field) {
    absl::StatusOr<Rig::ExecResult> r = stack().Slurm({"scontrol", "show", "job", absl::StrCat(slurm_id)});
    if (!r.ok() || r->exit_code != 0) return "";
    for (absl::string_view token : absl::StrSplit(r->output, absl::ByAnyChar(" \n"), absl::SkipEmpty())) {
      if (absl::ConsumePrefix(&token, field + "=")) return std::string(token);
    }
    return "";
  }
};

TEST_F(BackendTimeoutTest, AGlobalJobThatReachesItsTimeLimitIsRecordedAsTimedOutWithItsAuditRecord) {
  // No margin: the local job's 60 s become the global job's one minute, Slurm's smallest limit.
  ASSERT_TRUE(stack()
                  .StartBackend(Options([](BackendOptions& o) {
                    o.time_limit_margin_minutes = 0;
                    o.poll_interval_seconds = 1;
                  }))
                  .ok());
  v1::CreateGlobalJobResponse created;
  ASSERT_TRUE(stack()
                  .CallInto("vmc-c1", "CreateGlobalJob",
                            CreateRequestJson(120, R"("resources":{"timeLimit":"60s"})"), &created)
                  .ok());
  const std::string id = created.job().ref().global_job_id();
  // The placeholder global job script holds the node (and exits on SIGTERM, as the real one does).
  const v1::Job started = WaitForState(id, v1::JOB_STATE_STARTING, absl::Seconds(30));
  ASSERT_EQ(started.state(), v1::JOB_STATE_STARTING) << started.DebugString();
  const uint32_t slurm_id = started.ref().global_slurm_job_id();
  EXPECT_EQ(ShowJobField(slurm_id, "TimeLimit"), "00:01:00");
  const absl::Time start = absl::Now();

  // Slurm ends the job 60 to 90 s after it started (slurmctld enforces limits on a periodic pass); backend
  // notices it within its poll interval.
  const v1::Job job = WaitForState(id, v1::JOB_STATE_FAILED, absl::Seconds(150));
  const absl::Duration after = absl::Now() - start;
  ASSERT_EQ(job.state(), v1::JOB_STATE_FAILED) << job.DebugString();
  EXPECT_EQ(job.end_reason(), v1::JOB_END_REASON_GLOBAL_TIMEOUT);
  EXPECT_EQ(job.failure().reason(), "GLOBAL_JOB_TIMEOUT");
  EXPECT_EQ(job.failure().phase(), v1::FAILURE_PHASE_SCHEDULING);  // the workload never got ready
  EXPECT_TRUE(absl::StrContains(job.failure().message(), "ended TIMEOUT")) << job.failure().message();
  EXPECT_TRUE(job.has_end_time());
  EXPECT_EQ(ShowJobField(slurm_id, "JobState"), "TIMEOUT");
  std::printf("global job %u timed out; backend recorded it %s after the job started\n", slurm_id,
              absl::FormatDuration(after).c_str());

  // The transition is in the audit chain, attributed to backend, and the chain verifies.
  CtlOutput records = stack().Ctl("operator", {"audit", "query", "--object", "job/" + id});
  ASSERT_EQ(records.exit_code, 0) << records.output;
  bool found = false;
  for (absl::string_view line : absl::StrSplit(records.output, '\n', absl::SkipWhitespace())) {
    v1::AuditRecord record;
    if (!google::protobuf::util::JsonStringToMessage(std::string(line), &record).ok()) continue;
    if (record.action() != "job.transition" || record.details().count("to") == 0 ||
        record.details().at("to") != "FAILED") {
      continue;
    }
    found = true;
    EXPECT_EQ(record.details().at("from"), "STARTING");
    EXPECT_TRUE(absl::StrContains(record.details().at("message"), "TIMEOUT")) << line;
    EXPECT_EQ(record.actor().spiffe_id(), BackendStack::kBackendIdentity);
    EXPECT_EQ(record.details().count("reason") ? record.details().at("reason") : "", "GLOBAL_JOB_TIMEOUT")
        << line;
  }
  EXPECT_TRUE(found) << "no job.transition to FAILED for job/" << id << " in:\n" << records.output;
  CtlOutput verify = stack().Ctl("operator", {"audit", "verify"});
  EXPECT_EQ(verify.exit_code, 0) << verify.output;
}

}  // namespace
}  // namespace strongroom::testing
