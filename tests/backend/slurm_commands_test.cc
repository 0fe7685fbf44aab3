#include "services/backend/slurm_commands.h"

#include <algorithm>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "tests/backend/sample_requests.h"

namespace strongroom::backend {
namespace {

SubmitSpec Spec() {
  SubmitSpec s = testing::SampleSubmitSpec();
  s.workload_spec_base64 = "AAAB";
  s.time_limit_margin = absl::Minutes(5);
  return s;
}

bool Has(const std::vector<std::string>& args, const std::string& arg) {
  return std::find(args.begin(), args.end(), arg) != args.end();
}

TEST(SlurmCommandsTest, SbatchCarriesAccountExclusivityResourcesCommentAndNoShell) {
  SubmitSpec s = Spec();
  s.resources.set_cpus(4);
  s.resources.set_memory_bytes((uint64_t{1} << 30) + 1);  // rounded up to whole MiB
  s.resources.mutable_time_limit()->set_seconds(61);      // rounded up to 2 minutes, plus the margin
  s.partition = "global";
  const std::vector<std::string> args = SbatchArgs(s);
  EXPECT_EQ(args.front(), "--parsable");
  EXPECT_EQ(args.back(), "/opt/strongroom/global-job");
  EXPECT_TRUE(Has(args, "--account=proj1"));
  EXPECT_TRUE(Has(args, "--exclusive"));
  EXPECT_TRUE(Has(args, "--job-name=gj-1"));
  EXPECT_TRUE(Has(args, "--mincpus=4"));
  EXPECT_TRUE(Has(args, "--mem=1025M"));
  EXPECT_TRUE(Has(args, "--time=7"));
  EXPECT_TRUE(Has(args, "--partition=global"));
  EXPECT_TRUE(Has(args, "--no-requeue"));
  EXPECT_TRUE(Has(args, "--comment=strongroom:gj=gj-1;wl=wl-1;lc=c1;lj=17;tok=sr-abcdef12"));
  // Exactly ALL (anything else makes slurmd load the user's login environment); the values travel in sbatch's
  // own, otherwise empty environment.
  EXPECT_TRUE(Has(args, "--export=ALL"));
  EXPECT_EQ(
      SbatchEnvironment(Spec()),
      (std::vector<std::string>{"SR_GLOBAL_JOB_ID=gj-1", "SR_WORKLOAD_ID=wl-1", "SR_WORKLOAD_SPEC=AAAB"}));
}

TEST(SlurmCommandsTest, AnExclusiveJobWithoutMemoryGetsTheWholeNode) {
  const std::vector<std::string> args = SbatchArgs(Spec());
  EXPECT_TRUE(Has(args, "--mem=0"));
  EXPECT_FALSE(std::any_of(args.begin(), args.end(),
                           [](const std::string& a) { return absl::StartsWith(a, "--time"); }));
}

TEST(SlurmCommandsTest, TheCommentFindsTheOrphan) {
  EXPECT_EQ(GlobalJobIdOfComment(GlobalJobComment(Spec())), "gj-1");
  EXPECT_EQ(GlobalJobIdOfComment("someone else's job"), "");
  EXPECT_EQ(GlobalJobIdOfComment("strongroom:gj=../x"), "");
}

TEST(SlurmCommandsTest, SbatchOutputAndFailures) {
  EXPECT_EQ(*ParseSbatchJobId("4242\n"), 4242u);
  EXPECT_EQ(*ParseSbatchJobId("sbatch: warning: something\n77;global\n"), 77u);
  EXPECT_FALSE(ParseSbatchJobId("sbatch: error: Batch job submission failed").ok());
  EXPECT_TRUE(IsTransientSlurmFailure(
      "sbatch: error: Batch job submission failed: Unable to contact slurm controller"));
  EXPECT_FALSE(IsTransientSlurmFailure("sbatch: error: Batch job submission failed: Invalid account"));
}

TEST(SlurmCommandsTest, SqueueLinesAreParsedAndWarningsSkipped) {
  const std::string out =
      "squeue: warning: noise\n"
      "SR|12|RUNNING|None|gnode1|8|1|2026-11-22T13:24:35|gj-1|strongroom:gj=gj-1;wl=wl-1\n"
      "SR|13|PENDING|Resources||1|1|N/A|gj-2|strongroom:gj=gj-2|with a pipe\n";
  const std::vector<SqueueRow> rows = ParseSqueue(out, absl::UTCTimeZone());
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0].job_id, 12u);
  EXPECT_EQ(rows[0].state, "RUNNING");
  EXPECT_EQ(rows[0].nodes, "gnode1");
  EXPECT_EQ(rows[0].cpus, 8u);
  ASSERT_TRUE(rows[0].start_time.has_value());
  EXPECT_EQ(absl::FormatTime("%H:%M:%S", *rows[0].start_time, absl::UTCTimeZone()), "13:24:35");
  EXPECT_FALSE(rows[1].start_time.has_value());
  EXPECT_EQ(rows[1].comment, "strongroom:gj=gj-2|with a pipe");
}

TEST(SlurmCommandsTest, SlurmStatesMeanWhatBackendRecords) {
  EXPECT_EQ(InterpretSlurmState("PENDING").phase, SlurmStateMeaning::kPending);
  EXPECT_EQ(InterpretSlurmState("RUNNING").phase, SlurmStateMeaning::kRunning);
  EXPECT_EQ(InterpretSlurmState("COMPLETING").phase, SlurmStateMeaning::kRunning);
  EXPECT_EQ(InterpretSlurmState("CANCELLED").end_reason, v1::JOB_END_REASON_GLOBAL_CANCELLED_EXTERNALLY);
  EXPECT_EQ(InterpretSlurmState("TIMEOUT").end_reason, v1::JOB_END_REASON_GLOBAL_TIMEOUT);
  EXPECT_EQ(InterpretSlurmState("NODE_FAIL").end_reason, v1::JOB_END_REASON_NODE_FAILED);
  EXPECT_EQ(InterpretSlurmState("BOOT_FAIL").failure_reason, "GLOBAL_JOB_BOOT_FAIL");
  EXPECT_EQ(InterpretSlurmState("OUT_OF_MEMORY").failure_reason, "GLOBAL_JOB_FAILED");
}

TEST(SlurmCommandsTest, MinJobAgeIsReadFromTheControllersConfig) {
  EXPECT_EQ(ScontrolShowConfigArgs(), (std::vector<std::string>{"show", "config"}));
  const std::string config =
      "Configuration data as of 2026-11-22T16:00:00\n"
      "MessageTimeout          = 10 sec\n"
      "MinJobAge               = 600 sec\n"
      "MpiDefault              = none\n";
  EXPECT_EQ(ParseMinJobAge(config).value_or(absl::ZeroDuration()), absl::Seconds(600));
  // 0: Slurm never purges ended jobs.
  EXPECT_EQ(ParseMinJobAge("MinJobAge = 0 sec\n").value_or(absl::ZeroDuration()), absl::InfiniteDuration());
  EXPECT_EQ(ParseMinJobAge("MinJobAge=300\n").value_or(absl::ZeroDuration()), absl::Seconds(300));
  EXPECT_FALSE(ParseMinJobAge("").ok());  // e.g. a stub scontrol
  EXPECT_FALSE(ParseMinJobAge("MinJobAgeX = 600 sec\nMinJobAge = soon\n").ok());
}

}  // namespace
}  // namespace strongroom::backend
