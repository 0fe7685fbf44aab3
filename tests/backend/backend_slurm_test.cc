// backend against the real Global Slurm: submission with account, exclusivity, resources and comment;
// idempotent creates; cancel; external scancel; node failure; refused submissions; and crash safety around
// sbatch.
#include <sys/stat.h>

#include <fstream>
#include <string>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "strongroom/v1/backend.pb.h"
#include "tests/backend/backend_stack.h"

namespace strongroom::testing {
namespace {

using v1::JobState;

class BackendSlurmTest : public BackendTest {
 protected:
  v1::Job Create(int local_job_id, const std::string& extra = "") {
    v1::CreateGlobalJobResponse response;
    absl::Status s =
        stack().CallInto("vmc-c1", "CreateGlobalJob", CreateRequestJson(local_job_id, extra), &response);
    EXPECT_TRUE(s.ok()) << s;
    return response.job();
  }

  // CreateGlobalJob against a backend that is about to freeze at a fault point: the answer may never come
  // (the process stops before its audit record commits). The job is found in the database instead, as
  // vm-controller's retry would find it.
  std::string CreateBeforeFreezing(int local_job_id) {
    (void)stack().Ctl("vmc-c1", {"--timeout", "3", "call", "strongroom.v1.Backend/CreateGlobalJob",
                                 CreateRequestJson(local_job_id)});
    return stack()
        .Sql(absl::StrCat("SELECT global_job_id FROM jobs WHERE local_cluster = 'c1' AND local_job_id = ",
                          local_job_id))
        .value_or("");
  }

  // After the restart, the caller's retry of the same request returns the same job, not a new one.
  void ExpectRetryReturnsTheSameJob(int local_job_id, const std::string& id) {
    v1::CreateGlobalJobResponse again;
    ASSERT_TRUE(stack().CallInto("vmc-c1", "CreateGlobalJob", CreateRequestJson(local_job_id), &again).ok());
    EXPECT_FALSE(again.created());
    EXPECT_EQ(again.job().ref().global_job_id(), id);
  }

  // `scontrol show job` of a Global Slurm job, as KEY=VALUE pairs.
  std::map<std::string, std::string> ShowJob(uint32_t slurm_id) {
    std::map<std::string, std::string> fields;
    absl::StatusOr<Rig::ExecResult> r = stack().Slurm({"scontrol", "show", "job", absl::StrCat(slurm_id)});
    EXPECT_TRUE(r.ok() && r->exit_code == 0) << (r.ok() ? r->output : r.status().ToString());
    if (!r.ok()) return fields;
    for (absl::string_view token : absl::StrSplit(r->output, absl::ByAnyChar(" \n"), absl::SkipEmpty())) {
      const size_t eq = token.find('=');
      if (eq != absl::string_view::npos)
        fields[std::string(token.substr(0, eq))] = std::string(token.substr(eq + 1));
    }
    return fields;
  }

  // Global Slurm jobs (any state) whose name is `global_job_id`.
  std::vector<std::string> SlurmJobsNamed(const std::string& global_job_id) {
    absl::StatusOr<Rig::ExecResult> r =
        stack().Slurm({"squeue", "--noheader", "--states=all", "--name=" + global_job_id, "--format=%i"});
    EXPECT_TRUE(r.ok() && r->exit_code == 0) << (r.ok() ? r->output : r.status().ToString());
    return r.ok() ? absl::StrSplit(r->output, '\n', absl::SkipWhitespace()) : std::vector<std::string>();
  }
};

TEST_F(BackendSlurmTest, CreateIsVisibleInSqueueWithAccountExclusivityResourcesAndComment) {
  ASSERT_TRUE(stack().StartBackend().ok());
  const v1::Job created =
      Create(101, R"("resources":{"nodes":1,"cpus":2,"memoryBytes":"536870912","timeLimit":"600s"})");
  EXPECT_EQ(created.state(), v1::JOB_STATE_SUBMITTING);
  const v1::Job job = WaitFor(
      created.ref().global_job_id(), [](const v1::Job& j) { return j.ref().global_slurm_job_id() != 0; },
      absl::Seconds(20));
  ASSERT_NE(job.ref().global_slurm_job_id(), 0u) << job.DebugString();
  std::map<std::string, std::string> show = ShowJob(job.ref().global_slurm_job_id());
  EXPECT_EQ(show["Account"], "proj1");
  EXPECT_EQ(show["OverSubscribe"], "NO");  // --exclusive
  EXPECT_EQ(show["MinCPUsNode"], "2");
  EXPECT_EQ(show["MinMemoryNode"], "512M");
  EXPECT_EQ(show["TimeLimit"], "00:15:00");  // 10 min + the default 5 min margin
  EXPECT_EQ(show["JobName"], created.ref().global_job_id());
  EXPECT_EQ(show["Requeue"], "0");
  EXPECT_TRUE(absl::StartsWith(show["Comment"], absl::StrCat("strongroom:gj=", created.ref().global_job_id(),
                                                             ";wl=", created.workload().workload_id(),
                                                             ";lc=c1;lj=101;tok=sr-test-101")))
      << show["Comment"];
  // The placeholder script holds the node: the poll sees it start.
  const v1::Job started = WaitForState(created.ref().global_job_id(), v1::JOB_STATE_STARTING);
  EXPECT_FALSE(started.workload().node().empty());
  EXPECT_EQ(started.allocated_cpus(), 8u);  // the whole node
}

// Issue 15: a non-exclusive job's global job asks for its VM's CPUs and memory (the job's plus the 384 MB
// default overhead) and shares its node; an exclusive one takes a whole node and shares it with nothing. The
// rig's Global Slurm: 2 nodes of 8 CPUs and 4000 MB, cons_tres CR_Core_Memory.
TEST_F(BackendSlurmTest, TwoVmJobsShareOneNodeAndAnExclusiveJobSharesNone) {
  ASSERT_TRUE(stack().StartBackend().ok());
  auto vm_request = [](int local_job_id) {
    std::string json = CreateRequestJson(
        local_job_id, R"("resources":{"nodes":1,"cpus":2,"memoryBytes":"1048576000","timeLimit":"600s"})");
    json.replace(json.find(R"("exclusive":true)"), 16, R"("exclusive":false)");
    return json;
  };
  // First a whole-node job, so the VMs have one node left and must meet on it.
  const std::string whole = Create(131).ref().global_job_id();
  const v1::Job whole_started = WaitForState(whole, v1::JOB_STATE_STARTING);
  EXPECT_EQ(whole_started.workload().kind(), v1::WORKLOAD_KIND_CONTAINER);
  EXPECT_EQ(whole_started.allocated_cpus(), 8u);

  std::vector<v1::Job> vms;
  for (int local_job_id : {132, 133}) {
    v1::CreateGlobalJobResponse response;
    absl::Status s = stack().CallInto("vmc-c1", "CreateGlobalJob", vm_request(local_job_id), &response);
    ASSERT_TRUE(s.ok()) << s;
    EXPECT_EQ(response.job().workload().kind(), v1::WORKLOAD_KIND_VM);
    EXPECT_FALSE(response.job().exclusive());
    vms.push_back(response.job());
  }
  std::vector<v1::Job> running;
  for (const v1::Job& vm : vms)
    running.push_back(WaitForState(vm.ref().global_job_id(), v1::JOB_STATE_STARTING));
  ASSERT_EQ(running.size(), 2u);
  // Both at once, on the same node, which is not the whole-node job's.
  EXPECT_EQ(running[0].workload().node(), running[1].workload().node());
  EXPECT_NE(running[0].workload().node(), whole_started.workload().node());
  for (const v1::Job& vm : running) {
    EXPECT_EQ(vm.allocated_cpus(), 2u);  // exactly the VM's CPUs, not the node's 8
    EXPECT_EQ(vm.workload().kind(), v1::WORKLOAD_KIND_VM);
    std::map<std::string, std::string> show = ShowJob(vm.ref().global_slurm_job_id());
    EXPECT_EQ(show["JobState"], "RUNNING");
    EXPECT_EQ(show["NumCPUs"], "2");
    EXPECT_EQ(show["MinMemoryNode"], "1384M");  // 1000 MB + the VM overhead
    EXPECT_NE(show["OverSubscribe"], "NO");
    // What the host-agent gets: a VM of that size.
    absl::StatusOr<std::string> spec = stack().Sql(absl::StrCat(
        "SELECT spec::text FROM workloads WHERE workload_id = '", vm.workload().workload_id(), "'"));
    ASSERT_TRUE(spec.ok()) << spec.status();
    v1::WorkloadSpec parsed;
    ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(*spec, &parsed).ok()) << *spec;
    EXPECT_EQ(parsed.kind(), v1::WORKLOAD_KIND_VM);
    EXPECT_FALSE(parsed.whole_node());
    EXPECT_EQ(parsed.resources().cpus(), 2u);
    EXPECT_EQ(parsed.resources().memory_bytes(), uint64_t{1384} << 20);
  }
  // The stored kind is what a report must name: a host-agent of the VMs' node reporting a container is
  // refused.
  CtlOutput wrong_kind = stack().Call(
      absl::StrCat("ha-", running[0].workload().node()), "WorkloadReady",
      absl::StrCat(
          R"({"workloadId":")", running[0].workload().workload_id(), R"(","globalJobId":")",
          running[0].ref().global_job_id(), R"(","node":")", running[0].workload().node(),
          R"(","addresses":["10.64.0.17"],"identity":{"spiffeId":"spiffe://strongroom.test/workload/)",
          running[0].workload().workload_id(), R"("},"kind":"WORKLOAD_KIND_CONTAINER"})"));
  EXPECT_EQ(wrong_kind.exit_code, 3) << wrong_kind.output;
  EXPECT_TRUE(absl::StrContains(wrong_kind.output, "does not match the workload's kind WORKLOAD_KIND_VM"))
      << wrong_kind.output;

  // A second whole-node job finds no whole node free (one is exclusive, the other holds the VMs): it waits.
  const std::string second_whole = Create(134).ref().global_job_id();
  const v1::Job queued = WaitFor(
      second_whole, [](const v1::Job& j) { return j.ref().global_slurm_job_id() != 0; }, absl::Seconds(20));
  std::this_thread::sleep_for(std::chrono::seconds(3));
  std::map<std::string, std::string> pending = ShowJob(queued.ref().global_slurm_job_id());
  EXPECT_EQ(pending["JobState"], "PENDING") << "an exclusive job shared a node";
  EXPECT_EQ(pending["OverSubscribe"], "NO");
  // A contradicting kind is refused before anything is recorded.
  std::string contradiction = vm_request(135);
  contradiction.replace(contradiction.size() - 1, 1, R"(,"workloadKind":"WORKLOAD_KIND_CONTAINER"})");
  CtlOutput refused = stack().Call("vmc-c1", "CreateGlobalJob", contradiction);
  EXPECT_EQ(refused.exit_code, 3) << refused.output;
  EXPECT_TRUE(absl::StrContains(refused.output, "workload_kind")) << refused.output;
}

TEST_F(BackendSlurmTest, DuplicateCreatesReturnTheSameJobAndADifferentRequestIsRefused) {
  ASSERT_TRUE(stack().StartBackend().ok());
  v1::CreateGlobalJobResponse first, again;
  ASSERT_TRUE(stack().CallInto("vmc-c1", "CreateGlobalJob", CreateRequestJson(102), &first).ok());
  ASSERT_TRUE(stack().CallInto("vmc-c1", "CreateGlobalJob", CreateRequestJson(102), &again).ok());
  EXPECT_TRUE(first.created());
  EXPECT_FALSE(again.created());
  EXPECT_EQ(again.job().ref().global_job_id(), first.job().ref().global_job_id());
  // Same (cluster, local job id), different request: ALREADY_EXISTS naming the existing job.
  std::string other = CreateRequestJson(102);
  other.replace(other.find("\"alice\""), 7, "\"bob\"");
  CtlOutput conflict = stack().Call("vmc-c1", "CreateGlobalJob", other);
  EXPECT_EQ(conflict.exit_code, 6) << conflict.output;
  EXPECT_TRUE(absl::StrContains(conflict.output, first.job().ref().global_job_id())) << conflict.output;
  const std::string id = first.job().ref().global_job_id();
  WaitFor(
      id, [](const v1::Job& j) { return j.ref().global_slurm_job_id() != 0; }, absl::Seconds(20));
  // A repeat after submission still returns the job and submits nothing.
  ASSERT_TRUE(stack().CallInto("vmc-c1", "CreateGlobalJob", CreateRequestJson(102), &again).ok());
  EXPECT_FALSE(again.created());
  std::this_thread::sleep_for(std::chrono::seconds(2));
  EXPECT_EQ(SlurmJobsNamed(id).size(), 1u);
  EXPECT_EQ(stack().Sql("SELECT count(*) FROM jobs").value_or("?"), "1");
}

TEST_F(BackendSlurmTest, CancelScancelsTheGlobalJobAndEndsCancelled) {
  ASSERT_TRUE(stack().StartBackend().ok());
  const std::string id = Create(103).ref().global_job_id();
  const v1::Job started = WaitForState(id, v1::JOB_STATE_STARTING);
  v1::CancelJobResponse cancelled;
  ASSERT_TRUE(
      stack()
          .CallInto("operator", "CancelJob",
                    absl::StrCat(R"({"job":{"globalJobId":")", id, R"("},"reason":"operator test cancel"})"),
                    &cancelled)
          .ok());
  EXPECT_TRUE(cancelled.job().state() == v1::JOB_STATE_CANCELLING ||
              cancelled.job().state() == v1::JOB_STATE_CANCELLED);
  const v1::Job job = WaitForState(id, v1::JOB_STATE_CANCELLED);
  EXPECT_EQ(job.end_reason(), v1::JOB_END_REASON_OPERATOR_CANCELLED);
  EXPECT_TRUE(job.has_end_time());
  EXPECT_EQ(ShowJob(started.ref().global_slurm_job_id())["JobState"], "CANCELLED");
  // Cancelling again is a no-op that returns the job unchanged.
  ASSERT_TRUE(stack()
                  .CallInto("operator", "CancelJob",
                            absl::StrCat(R"({"job":{"globalJobId":")", id, R"("},"reason":"again"})"),
                            &cancelled)
                  .ok());
  EXPECT_EQ(cancelled.job().state(), v1::JOB_STATE_CANCELLED);
  // The side effects (scancel, the StopWorkload attempt) are recorded as they complete, possibly just after
  // the terminal transition: wait for all of them.
  const std::vector<std::string> expected = {
      "JOB_STATE_SUBMITTING", "JOB_STATE_QUEUED",  "JOB_STATE_STARTING", "JOB_STATE_CANCELLING",
      "global.scancelled",    "workload.stopping", "JOB_STATE_CANCELLED"};
  std::vector<std::string> missing;
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  do {
    v1::GetJobTimelineResponse timeline;
    ASSERT_TRUE(stack()
                    .CallInto("operator", "GetJobTimeline",
                              absl::StrCat(R"({"job":{"globalJobId":")", id, R"("}})"), &timeline)
                    .ok());
    std::vector<std::string> seen;
    for (const auto& e : timeline.entries()) {
      seen.push_back(e.event().empty() ? v1::JobState_Name(e.to_state()) : e.event());
    }
    missing.clear();
    for (const std::string& name : expected) {
      if (std::find(seen.begin(), seen.end(), name) == seen.end()) missing.push_back(name);
    }
    if (!missing.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(200));
  } while (!missing.empty() && absl::Now() < deadline);
  EXPECT_TRUE(missing.empty()) << "missing from the timeline: " << absl::StrJoin(missing, ", ");
}

TEST_F(BackendSlurmTest, AnExternalScancelIsNoticedWithinThePollInterval) {
  ASSERT_TRUE(stack().StartBackend(Options([](BackendOptions& o) { o.poll_interval_seconds = 1; })).ok());
  const std::string id = Create(104).ref().global_job_id();
  const v1::Job started = WaitForState(id, v1::JOB_STATE_STARTING);
  // An admin cancels the global job behind Strongroom's back.
  absl::StatusOr<Rig::ExecResult> scancel =
      stack().Slurm({"scancel", absl::StrCat(started.ref().global_slurm_job_id())});
  ASSERT_TRUE(scancel.ok() && scancel->exit_code == 0);
  const absl::Time cancelled_at = absl::Now();
  const v1::Job job = WaitFor(
      id, [](const v1::Job& j) { return j.state() == v1::JOB_STATE_FAILED; }, absl::Seconds(10));
  const absl::Duration noticed = absl::Now() - cancelled_at;
  ASSERT_EQ(job.state(), v1::JOB_STATE_FAILED) << job.DebugString();
  EXPECT_EQ(job.end_reason(), v1::JOB_END_REASON_GLOBAL_CANCELLED_EXTERNALLY);
  EXPECT_EQ(job.failure().reason(), "GLOBAL_JOB_CANCELLED");
  EXPECT_EQ(job.failure().phase(), v1::FAILURE_PHASE_SCHEDULING);
  // Within the poll interval (1 s), plus Slurm's own cancel, one squeue, and this test's GetJob polling (200
  // ms); measured ~1 s.
  EXPECT_LT(noticed, absl::Seconds(3)) << "noticed after " << absl::FormatDuration(noticed);
  std::printf("external scancel noticed after %s (poll interval 1s)\n",
              absl::FormatDuration(noticed).c_str());
}

TEST_F(BackendSlurmTest, ANodeFailureIsRecorded) {
  ASSERT_TRUE(stack().StartBackend().ok());
  const std::string id = Create(105).ref().global_job_id();
  const v1::Job started = WaitForState(id, v1::JOB_STATE_STARTING);
  absl::StatusOr<Rig::ExecResult> down =
      stack().Slurm({"scontrol", "update", "nodename=" + started.workload().node(), "state=down",
                     "reason=test-node-failure"});
  ASSERT_TRUE(down.ok() && down->exit_code == 0) << (down.ok() ? down->output : down.status().ToString());
  const v1::Job job = WaitForState(id, v1::JOB_STATE_FAILED);
  EXPECT_EQ(job.end_reason(), v1::JOB_END_REASON_NODE_FAILED);
  EXPECT_EQ(job.failure().reason(), "GLOBAL_JOB_NODE_FAIL");
}

TEST_F(BackendSlurmTest, ASubmissionTheGlobalSlurmRefusesFailsTheJob) {
  ASSERT_TRUE(stack().StartBackend().ok());
  // More CPUs than any node has: sbatch refuses at once.
  const std::string id = Create(106, R"("resources":{"cpus":4096})").ref().global_job_id();
  const v1::Job job = WaitForState(id, v1::JOB_STATE_FAILED);
  EXPECT_EQ(job.end_reason(), v1::JOB_END_REASON_GLOBAL_SUBMIT_FAILED);
  EXPECT_EQ(job.failure().phase(), v1::FAILURE_PHASE_SUBMISSION);
  EXPECT_EQ(job.failure().reason(), "SBATCH_REFUSED");
  EXPECT_TRUE(absl::StrContains(job.failure().message(), "Requested node configuration is not available"))
      << job.failure().message();
}

TEST_F(BackendSlurmTest, AGlobalJobThatEndsBeforeItsWorkloadIsReadyFails) {
  // A global job script that fails at once: the job never gets to start a workload.
  const std::string script = stack().dir() + "/failing-global-job.sh";
  {
    std::ofstream out(script);
    out << "#!/bin/sh\necho 'cannot start the workload' >&2\nexit 3\n";
  }
  ::chmod(script.c_str(), 0755);
  ASSERT_TRUE(stack().StartBackend(Options([&](BackendOptions& o) { o.job_script = script; })).ok());
  const std::string id = Create(107).ref().global_job_id();
  const v1::Job job = WaitForState(id, v1::JOB_STATE_FAILED);
  EXPECT_EQ(job.failure().reason(), "GLOBAL_JOB_FAILED");
  EXPECT_EQ(job.failure().phase(), v1::FAILURE_PHASE_SCHEDULING);
  EXPECT_TRUE(absl::StrContains(job.failure().message(), "ended FAILED")) << job.failure().message();
}

TEST_F(BackendSlurmTest, KillNineBetweenTheCommitAndSbatchNeitherLosesNorDuplicatesTheJob) {
  ASSERT_TRUE(stack()
                  .StartBackend(Options(
                      [](BackendOptions& o) { o.fault_stop_at = "submit.after_commit_before_sbatch"; }))
                  .ok());
  const std::string id = CreateBeforeFreezing(108);
  ASSERT_FALSE(id.empty());
  ASSERT_TRUE(stack().WaitForLog("fault point reached", absl::Seconds(20))) << stack().BackendLog();
  ASSERT_TRUE(stack().KillBackend().ok());
  // Committed, attempt counted, nothing in Slurm.
  EXPECT_EQ(stack()
                .Sql(absl::StrCat("SELECT state, submit_attempts, global_slurm_job_id IS NULL FROM jobs "
                                  "WHERE global_job_id = '",
                                  id, "'"))
                .value_or("?"),
            "1|1|t");
  EXPECT_TRUE(SlurmJobsNamed(id).empty());
  ASSERT_TRUE(stack().StartBackend().ok());
  ExpectRetryReturnsTheSameJob(108, id);
  const v1::Job job = WaitFor(
      id, [](const v1::Job& j) { return j.ref().global_slurm_job_id() != 0; }, absl::Seconds(20));
  ASSERT_NE(job.ref().global_slurm_job_id(), 0u);
  EXPECT_EQ(job.submit_attempts(), 2u);
  std::this_thread::sleep_for(std::chrono::seconds(2));
  const std::vector<std::string> named = SlurmJobsNamed(id);
  ASSERT_EQ(named.size(), 1u);
  EXPECT_EQ(named[0], absl::StrCat(job.ref().global_slurm_job_id()));
}

TEST_F(BackendSlurmTest, KillNineBetweenSbatchAndRecordingTheIdAdoptsTheOrphan) {
  ASSERT_TRUE(stack()
                  .StartBackend(Options(
                      [](BackendOptions& o) { o.fault_stop_at = "submit.after_sbatch_before_record"; }))
                  .ok());
  const std::string id = CreateBeforeFreezing(109);
  ASSERT_FALSE(id.empty());
  ASSERT_TRUE(stack().WaitForLog("fault point reached", absl::Seconds(20))) << stack().BackendLog();
  ASSERT_TRUE(stack().KillBackend().ok());
  // Slurm has the job; the database does not know its id.
  const std::vector<std::string> orphan = SlurmJobsNamed(id);
  ASSERT_EQ(orphan.size(), 1u);
  EXPECT_EQ(stack()
                .Sql(absl::StrCat(
                    "SELECT state, global_slurm_job_id IS NULL FROM jobs WHERE global_job_id = '", id, "'"))
                .value_or("?"),
            "1|t");
  ASSERT_TRUE(stack().StartBackend().ok());
  ExpectRetryReturnsTheSameJob(109, id);
  const v1::Job job = WaitFor(
      id, [](const v1::Job& j) { return j.ref().global_slurm_job_id() != 0; }, absl::Seconds(20));
  EXPECT_EQ(absl::StrCat(job.ref().global_slurm_job_id()), orphan[0]);
  std::this_thread::sleep_for(std::chrono::seconds(2));
  EXPECT_EQ(SlurmJobsNamed(id).size(), 1u);
  v1::GetJobTimelineResponse timeline;
  ASSERT_TRUE(stack()
                  .CallInto("operator", "GetJobTimeline",
                            absl::StrCat(R"({"job":{"globalJobId":")", id, R"("}})"), &timeline)
                  .ok());
  bool adopted = false;
  for (const auto& e : timeline.entries()) adopted |= absl::StrContains(e.message(), "adopted");
  EXPECT_TRUE(adopted) << timeline.DebugString();
}

TEST_F(BackendSlurmTest, AnUnknownSubmissionOutcomeOlderThanMinJobAgeFailsTheJobInsteadOfSubmittingAgain) {
  // Killed after counting the attempt: whether sbatch ran is unknown to backend. The rig's Global Slurm keeps
  // ended jobs for MinJobAge = 600 s; the job row is aged by an hour, as if backend had been down that long,
  // so finding no job by name no longer proves that none ran (it may have ended and been forgotten).
  ASSERT_TRUE(stack()
                  .StartBackend(Options(
                      [](BackendOptions& o) { o.fault_stop_at = "submit.after_commit_before_sbatch"; }))
                  .ok());
  const std::string id = CreateBeforeFreezing(111);
  ASSERT_FALSE(id.empty());
  ASSERT_TRUE(stack().WaitForLog("fault point reached", absl::Seconds(20))) << stack().BackendLog();
  ASSERT_TRUE(stack().KillBackend().ok());
  ASSERT_TRUE(
      stack()
          .Sql(absl::StrCat("UPDATE jobs SET created_us = created_us - 3600000000 WHERE global_job_id = '",
                            id, "'"))
          .ok());
  ASSERT_TRUE(stack().StartBackend().ok());
  const v1::Job job = WaitForState(id, v1::JOB_STATE_FAILED);
  EXPECT_EQ(job.end_reason(), v1::JOB_END_REASON_GLOBAL_SUBMIT_FAILED);
  EXPECT_EQ(job.failure().reason(), "SUBMIT_OUTCOME_UNKNOWN");
  EXPECT_EQ(job.failure().phase(), v1::FAILURE_PHASE_SUBMISSION);
  EXPECT_TRUE(absl::StrContains(job.failure().message(), "MinJobAge (10m)")) << job.failure().message();
  std::this_thread::sleep_for(std::chrono::seconds(2));
  EXPECT_TRUE(SlurmJobsNamed(id).empty());  // not submitted a second time
  // backend read MinJobAge from the controller at start and said what it means.
  EXPECT_TRUE(absl::StrContains(stack().BackendLog(), "Global Slurm MinJobAge")) << stack().BackendLog();
  EXPECT_TRUE(absl::StrContains(stack().BackendLog(), "\"min_job_age\":\"10m\"")) << stack().BackendLog();
}

}  // namespace
}  // namespace strongroom::testing
