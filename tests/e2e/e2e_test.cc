// The whole path, everything real (tests/e2e/e2e_stack.h): a researcher's `sbatch --exclusive` on the Local Slurm
// runs in a whole-node container on a Global Slurm node, and afterwards nothing is left anywhere.
//
// One stack serves every test of this binary (ctest runs the binary once), so the later tests also prove that
// earlier jobs left nothing behind that disturbs the next.
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "tests/e2e/e2e_jobs.h"

namespace strongroom::e2e {
namespace {

// The user jobs run as: an ordinary, non-root account every Debian system has.
constexpr const char* kUser = "nobody";

class EndToEndTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (geteuid() != 0) return;
    absl::StatusOr<std::unique_ptr<E2eStack>> stack = E2eStack::Start(E2eOptions{});
    if (!stack.ok()) {
      start_error_ = new std::string(stack.status().ToString());
      return;
    }
    stack_ = stack->release();
  }
  static void TearDownTestSuite() {
    delete stack_;
    stack_ = nullptr;
  }
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "the end-to-end stack needs root (namespaces, OVS, runc, Slurm)";
    ASSERT_EQ(start_error_, nullptr) << *start_error_;
    jobs_ = std::make_unique<Jobs>(stack_, kUser);
  }
  void TearDown() override {
    if (HasFailure() && stack_ != nullptr) stack_->DumpLogs();
  }

  void ExpectClean() {
    // Teardown is asynchronous after the local job ends (dynamic node deletion, StopWorkload, scrub).
    std::vector<std::string> left;
    const absl::Time deadline = absl::Now() + absl::Seconds(30);
    do {
      left = stack_->Leftovers();
      if (left.empty()) break;
      absl::SleepFor(absl::Milliseconds(250));
    } while (absl::Now() < deadline);
    EXPECT_EQ(left, std::vector<std::string>{});
  }

  static E2eStack* stack_;
  static std::string* start_error_;
  std::unique_ptr<Jobs> jobs_;
};

E2eStack* EndToEndTest::stack_ = nullptr;
std::string* EndToEndTest::start_error_ = nullptr;

std::map<std::string, std::string> KeyValues(const std::string& text) {
  std::map<std::string, std::string> out;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    const size_t eq = line.find('=');
    if (eq != absl::string_view::npos) out[std::string(line.substr(0, eq))] = std::string(line.substr(eq + 1));
  }
  return out;
}

TEST_F(EndToEndTest, ExclusiveJobRunsInAWholeNodeContainerAndLeavesNothing) {
  absl::StatusOr<SubmittedJob> job = jobs_->Submit(ProbeScript(/*sleep_seconds=*/4));
  ASSERT_TRUE(job.ok()) << job.status();

  // While it runs: the Global Slurm shows the exclusive global job under the project account.
  absl::StatusOr<v1::LocalJob> running = jobs_->WaitLocal(*job, v1::LOCAL_JOB_STATE_RUNNING, absl::Seconds(60));
  ASSERT_TRUE(running.ok()) << running.status();
  absl::StatusOr<v1::Job> global = jobs_->GlobalJob(running->global_job_id());
  ASSERT_TRUE(global.ok()) << global.status();
  const std::string global_id = absl::StrCat(global->ref().global_slurm_job_id());
  CommandResult squeue = stack_->Global({"squeue", "-h", "-j", global_id, "-o", "%i|%a|%T|%N"});
  EXPECT_TRUE(absl::StrContains(squeue.output, absl::StrCat(global_id, "|proj1|RUNNING|gnode"))) << squeue.output;
  CommandResult show = stack_->Global({"scontrol", "show", "job", global_id});
  EXPECT_TRUE(absl::StrContains(show.output, "OverSubscribe=NO")) << show.output;

  absl::StatusOr<v1::LocalJob> done = jobs_->WaitLocal(*job, v1::LOCAL_JOB_STATE_COMPLETED, absl::Seconds(90));
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_EQ(jobs_->LocalSlurmState(job->local_job_id), "COMPLETED");
  absl::StatusOr<v1::Job> finished = jobs_->WaitGlobal(running->global_job_id(), v1::JOB_STATE_COMPLETED,
                                                       absl::Seconds(60));
  ASSERT_TRUE(finished.ok()) << finished.status();
  EXPECT_TRUE(absl::StrContains(stack_->Global({"scontrol", "show", "job", global_id}).output,
                                "JobState=COMPLETED"));

  // The output came back through the project share and shows where the job ran.
  const std::map<std::string, std::string> out = KeyValues(jobs_->Output(*job));
  ASSERT_FALSE(out.empty()) << "no job output in " << job->output_path;
  EXPECT_EQ(out.at("hostname"), running->node_name());
  EXPECT_NE(out.at("netns"), OwnNetns());
  EXPECT_EQ(out.at("uid_map"), "0 100000 65536");
  EXPECT_EQ(out.at("root_fs"), "overlay");
  EXPECT_EQ(out.at("user"), "nobody:65534");
  // Egress: the allowlisted Local slurmctld answers, anything else is dropped by br-secure.
  EXPECT_EQ(out.at("allowlisted"), "connected");
  EXPECT_EQ(out.at("other"), "blocked");

  ExpectClean();

  // The audit chain verifies and tells the whole story of this job.
  CommandResult verify = stack_->Ctl("backend", {"audit", "verify"});
  EXPECT_EQ(verify.exit_code, 0) << verify.output;
  absl::StatusOr<v1::GetJobTimelineResponse> timeline = jobs_->Timeline(running->global_job_id());
  ASSERT_TRUE(timeline.ok()) << timeline.status();
  // backend's record: each state, entered in order, and the scrub.
  std::vector<std::string> story;
  for (const v1::TimelineEntry& e : timeline->entries()) {
    story.push_back(e.event().empty() ? v1::JobState_Name(e.to_state()) : e.event());
  }
  std::vector<std::string> expected = {"JOB_STATE_SUBMITTING",   "JOB_STATE_QUEUED",  "JOB_STATE_STARTING",
                                       "JOB_STATE_PROVISIONING", "JOB_STATE_RUNNING", "JOB_STATE_RELEASING",
                                       "workload.scrubbed",      "JOB_STATE_COMPLETED"};
  size_t next = 0;
  for (const std::string& step : story) {
    if (next < expected.size() && step == expected[next]) ++next;
  }
  EXPECT_EQ(next, expected.size()) << "the timeline lacks " << (next < expected.size() ? expected[next] : "")
                                   << ":\n" << timeline->DebugString();
  // Every service's part of the story is in backend's one hash chain.
  CommandResult audit = stack_->Ctl("backend", {"audit", "query", "--limit", "10000"});
  std::set<std::string> actors;
  for (absl::string_view line : absl::StrSplit(audit.output, '\n', absl::SkipEmpty())) {
    if (!absl::StrContains(line, running->global_job_id()) && !absl::StrContains(line, running->workload_id())) {
      continue;
    }
    for (const char* role : {"vm-controller", "host-agent", "netd", "backend"}) {
      if (absl::StrContains(line, absl::StrCat("/", role, "/"))) actors.insert(role);
    }
  }
  for (const char* role : {"vm-controller", "host-agent", "netd", "backend"}) {
    EXPECT_TRUE(actors.count(role)) << role << " has no audit record of this job";
  }
}

TEST_F(EndToEndTest, ScancelWhilePendingAndWhileRunningLeavesEverythingClean) {
  // Pending: cancelled before its workload is ready (the epilog never runs for it; vm-controller polls).
  absl::StatusOr<SubmittedJob> pending = jobs_->Submit(ProbeScript(60));
  ASSERT_TRUE(pending.ok()) << pending.status();
  CommandResult cancel = stack_->Local(kUser, {"scancel", absl::StrCat(pending->local_job_id)});
  EXPECT_EQ(cancel.exit_code, 0) << cancel.output;
  absl::StatusOr<v1::LocalJob> cancelled =
      jobs_->WaitLocal(*pending, v1::LOCAL_JOB_STATE_CANCELLED, absl::Seconds(60));
  ASSERT_TRUE(cancelled.ok()) << cancelled.status();
  if (!cancelled->global_job_id().empty()) {
    EXPECT_TRUE(jobs_->WaitGlobalTerminal(cancelled->global_job_id(), absl::Seconds(60)).ok());
  }
  ExpectClean();

  // Running: the container is stopped and scrubbed.
  absl::StatusOr<SubmittedJob> running_job = jobs_->Submit(ProbeScript(120));
  ASSERT_TRUE(running_job.ok()) << running_job.status();
  absl::StatusOr<v1::LocalJob> running =
      jobs_->WaitLocal(*running_job, v1::LOCAL_JOB_STATE_RUNNING, absl::Seconds(60));
  ASSERT_TRUE(running.ok()) << running.status();
  ASSERT_TRUE(jobs_->WaitLocalSlurmState(running_job->local_job_id, "RUNNING", absl::Seconds(30)).ok());
  cancel = stack_->Local(kUser, {"scancel", absl::StrCat(running_job->local_job_id)});
  EXPECT_EQ(cancel.exit_code, 0) << cancel.output;
  absl::StatusOr<v1::LocalJob> ended =
      jobs_->WaitLocal(*running_job, v1::LOCAL_JOB_STATE_CANCELLED, absl::Seconds(60));
  ASSERT_TRUE(ended.ok()) << ended.status();
  EXPECT_TRUE(jobs_->WaitGlobalTerminal(running->global_job_id(), absl::Seconds(60)).ok());
  ExpectClean();
}

TEST_F(EndToEndTest, GlobalJobCancelledOnTheGlobalSlurmEndsEverything) {
  // The Global Slurm's admin cancels the global job under a running local job: the workload stops, backend ends
  // the job, vm-controller cancels the local job, and nothing is left.
  absl::StatusOr<SubmittedJob> job = jobs_->Submit(ProbeScript(120));
  ASSERT_TRUE(job.ok()) << job.status();
  absl::StatusOr<v1::LocalJob> running = jobs_->WaitLocal(*job, v1::LOCAL_JOB_STATE_RUNNING, absl::Seconds(60));
  ASSERT_TRUE(running.ok()) << running.status();
  ASSERT_TRUE(jobs_->WaitLocalSlurmState(job->local_job_id, "RUNNING", absl::Seconds(30)).ok());
  absl::StatusOr<v1::Job> global = jobs_->GlobalJob(running->global_job_id());
  ASSERT_TRUE(global.ok()) << global.status();
  CommandResult cancel = stack_->Global({"scancel", absl::StrCat(global->ref().global_slurm_job_id())});
  EXPECT_EQ(cancel.exit_code, 0) << cancel.output;
  absl::StatusOr<v1::Job> ended = jobs_->WaitGlobalTerminal(running->global_job_id(), absl::Seconds(60));
  // Terminal either way: the workload cancels its local job as it stops, so the release may reach backend
  // before its squeue poll sees the cancel (COMPLETED, reason LOCAL_CANCELLED) or after (FAILED).
  ASSERT_TRUE(ended.ok()) << ended.status();
  absl::StatusOr<v1::LocalJob> local = jobs_->WaitLocal(*job, v1::LOCAL_JOB_STATE_CANCELLED, absl::Seconds(60));
  if (!local.ok()) local = jobs_->WaitLocal(*job, v1::LOCAL_JOB_STATE_FAILED, absl::Seconds(1));
  ASSERT_TRUE(local.ok()) << local.status();
  const std::string slurm_state = jobs_->LocalSlurmState(job->local_job_id);
  EXPECT_TRUE(slurm_state == "CANCELLED" || slurm_state == "FAILED" || slurm_state == "NODE_FAIL") << slurm_state;
  ExpectClean();
}

TEST_F(EndToEndTest, AWorkloadThatCannotStartFailsTheJobEverywhere) {
  // The project's image exists on no node: StartWorkload is refused, the global job fails, backend records why,
  // and vm-controller cancels the held local job instead of leaving it pending forever.
  absl::StatusOr<SubmittedJob> job = jobs_->Submit(ProbeScript(1), E2eOptions::kBrokenProject);
  ASSERT_TRUE(job.ok()) << job.status();
  absl::StatusOr<v1::LocalJob> failed = jobs_->WaitLocal(*job, v1::LOCAL_JOB_STATE_FAILED, absl::Seconds(90));
  ASSERT_TRUE(failed.ok()) << failed.status();
  EXPECT_EQ(failed->failure().reason(), "GLOBAL_JOB_FAILED") << failed->ShortDebugString();
  absl::StatusOr<v1::Job> global = jobs_->GlobalJob(failed->global_job_id());
  ASSERT_TRUE(global.ok()) << global.status();
  EXPECT_EQ(global->state(), v1::JOB_STATE_FAILED);
  EXPECT_FALSE(global->failure().message().empty()) << global->ShortDebugString();
  const std::string slurm_state = jobs_->LocalSlurmState(job->local_job_id);
  EXPECT_TRUE(slurm_state == "CANCELLED" || slurm_state.empty()) << slurm_state;
  ExpectClean();
}

TEST_F(EndToEndTest, FiveJobsOnTwoNodesAllCompleteWithoutCrossTalk) {
  std::vector<SubmittedJob> submitted;
  for (int i = 0; i < 5; ++i) {
    absl::StatusOr<SubmittedJob> job = jobs_->Submit(ProbeScript(2));
    ASSERT_TRUE(job.ok()) << job.status();
    submitted.push_back(*job);
  }
  std::set<std::string> hosts;
  for (const SubmittedJob& job : submitted) {
    absl::StatusOr<v1::LocalJob> done = jobs_->WaitLocal(job, v1::LOCAL_JOB_STATE_COMPLETED, absl::Seconds(180));
    ASSERT_TRUE(done.ok()) << done.status();
    const std::string text = jobs_->Output(job);
    const std::map<std::string, std::string> out = KeyValues(text);
    ASSERT_TRUE(out.count("job")) << text;
    // Each output holds exactly its own job, run on its own dynamic node.
    EXPECT_EQ(out.at("job"), absl::StrCat(job.local_job_id));
    EXPECT_EQ(out.at("hostname"), done->node_name());
    EXPECT_EQ(out.at("other"), "blocked");
    hosts.insert(done->node_name());
  }
  EXPECT_EQ(hosts.size(), 5u);
  ExpectClean();
}

TEST_F(EndToEndTest, NonExclusiveAndRootJobsAreRefusedAtSubmit) {
  absl::StatusOr<std::string> dir = stack_->UserDir(kUser);
  ASSERT_TRUE(dir.ok());
  CommandResult shared = stack_->Local(kUser, {"sbatch", "-A", "proj1", "--chdir=" + *dir, "--wrap", "hostname"});
  EXPECT_NE(shared.exit_code, 0);
  EXPECT_TRUE(absl::StrContains(shared.output, "only --exclusive jobs")) << shared.output;
  CommandResult root = stack_->Local("", {"sbatch", "--exclusive", "-A", "proj1", "--wrap", "hostname"});
  EXPECT_NE(root.exit_code, 0);
  EXPECT_TRUE(absl::StrContains(root.output, "root")) << root.output;
  CommandResult queue = stack_->Local("", {"squeue", "-h"});
  EXPECT_EQ(absl::StripAsciiWhitespace(queue.output), "") << "a refused job was queued";
}

}  // namespace
}  // namespace strongroom::e2e
