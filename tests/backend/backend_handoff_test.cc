// The workload hand-off and its failure paths, with backend's peers answering as they do today
// (UNIMPLEMENTED): the readiness deadline, WorkloadReady -> vm-controller ProvisionWorkload, host-agent
// StopWorkload, and the object-level checks on who may report or see what.
#include <string>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "strongroom/v1/backend.pb.h"
#include "tests/backend/backend_stack.h"

namespace strongroom::testing {
namespace {

class BackendHandoffTest : public BackendTest {
 protected:
  std::string Create(int local_job_id) {
    v1::CreateGlobalJobResponse response;
    absl::Status s =
        stack().CallInto("vmc-c1", "CreateGlobalJob", CreateRequestJson(local_job_id), &response);
    EXPECT_TRUE(s.ok()) << s;
    return response.job().ref().global_job_id();
  }

  v1::GetJobTimelineResponse Timeline(const std::string& id) {
    v1::GetJobTimelineResponse response;
    absl::Status s = stack().CallInto("operator", "GetJobTimeline",
                                      absl::StrCat(R"({"job":{"globalJobId":")", id, R"("}})"), &response);
    EXPECT_TRUE(s.ok()) << s;
    return response;
  }

  // The timeline entry of `event`, waiting for it (effects run after the transition).
  v1::TimelineEntry WaitForEvent(const std::string& id, const std::string& event) {
    const absl::Time deadline = absl::Now() + absl::Seconds(20);
    while (absl::Now() < deadline) {
      const v1::GetJobTimelineResponse timeline = Timeline(id);
      for (const v1::TimelineEntry& e : timeline.entries()) {
        if (e.event() == event) return e;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    ADD_FAILURE() << "no " << event << " in the timeline of " << id << ": " << Timeline(id).DebugString();
    return {};
  }

  std::string SlurmState(uint32_t slurm_id) {
    absl::StatusOr<Rig::ExecResult> r = stack().Slurm(
        {"squeue", "--noheader", "--states=all", absl::StrCat("--jobs=", slurm_id), "--format=%T"});
    return r.ok() ? std::string(absl::StripAsciiWhitespace(r->output)) : r.status().ToString();
  }

  std::string ReadyJson(const std::string& id, const v1::Job& job, const std::string& node) {
    return absl::StrCat(
        R"({"workloadId":")", job.workload().workload_id(), R"(","globalJobId":")", id, R"(","node":")", node,
        R"(","addresses":["10.64.0.17"],"identity":{"spiffeId":"spiffe://strongroom.test/workload/)",
        job.workload().workload_id(), R"("},"kind":"WORKLOAD_KIND_CONTAINER","enrollmentTicketSha256":")",
        kTicketSha256, R"("})");
  }
  // host-agent reports only the SHA-256 of the workload's one-time enrollment ticket (docs/IPSEC.md).
  static constexpr char kTicketSha256[] = "5f0c7f3d1e2a4b6c8d9e0f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e";
};

TEST_F(BackendHandoffTest, AWorkloadNotReadyByTheDeadlineIsFailedScancelledAndStopped) {
  ASSERT_TRUE(
      stack().StartBackend(Options([](BackendOptions& o) { o.readiness_deadline_seconds = 3; })).ok());
  const std::string id = Create(401);
  const v1::Job started = WaitForState(id, v1::JOB_STATE_STARTING);
  const v1::Job job = WaitForState(id, v1::JOB_STATE_FAILED, absl::Seconds(15));
  EXPECT_EQ(job.end_reason(), v1::JOB_END_REASON_READY_DEADLINE_EXCEEDED);
  EXPECT_EQ(job.failure().phase(), v1::FAILURE_PHASE_READINESS);
  EXPECT_EQ(job.failure().reason(), "READY_DEADLINE_EXCEEDED");
  // Cleaned up: the global job is scancelled, and host-agent was asked to stop the workload. It answered
  // UNIMPLEMENTED: the attempt and its outcome are recorded.
  EXPECT_EQ(WaitForEvent(id, "global.scancelled").actor().spiffe_id(), BackendStack::kBackendIdentity);
  const v1::TimelineEntry stop = WaitForEvent(id, "workload.stopping");
  EXPECT_TRUE(absl::StrContains(stop.message(), "StopWorkload failed: UNIMPLEMENTED")) << stop.message();
  EXPECT_TRUE(absl::StrContains(stop.message(), started.workload().node())) << stop.message();
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (SlurmState(started.ref().global_slurm_job_id()) != "CANCELLED" && absl::Now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  EXPECT_EQ(SlurmState(started.ref().global_slurm_job_id()), "CANCELLED");
  // The audit chain has the stop attempt with its status code.
  EXPECT_EQ(stack()
                .Sql(absl::StrCat("SELECT status_code FROM audit_records WHERE object = 'job/", id,
                                  "' AND details->>'event' = 'workload.stopping'"))
                .value_or("?"),
            "12");
}

TEST_F(BackendHandoffTest, WorkloadReadyHandsOffToVmControllerAndItsFailureFailsTheJob) {
  ASSERT_TRUE(stack().StartBackend().ok());
  const std::string id = Create(402);
  const v1::Job started = WaitForState(id, v1::JOB_STATE_STARTING);
  const std::string node = started.workload().node();
  v1::WorkloadReadyResponse ready;
  // A malformed ticket hash is refused before anything changes.
  std::string bad = ReadyJson(id, started, node);
  bad.replace(bad.find(kTicketSha256), 64, "not-a-hash");
  CtlOutput refused = stack().Call("ha-" + node, "WorkloadReady", bad);
  EXPECT_EQ(refused.exit_code, 3) << refused.output;
  EXPECT_TRUE(absl::StrContains(refused.output, "enrollment_ticket_sha256")) << refused.output;
  ASSERT_TRUE(stack().CallInto("ha-" + node, "WorkloadReady", ReadyJson(id, started, node), &ready).ok());
  EXPECT_EQ(ready.job_state(), v1::JOB_STATE_PROVISIONING);
  // vm-controller's ProvisionWorkload answers UNIMPLEMENTED today: the hand-off fails, honestly.
  const v1::Job job = WaitForState(id, v1::JOB_STATE_FAILED);
  EXPECT_EQ(job.end_reason(), v1::JOB_END_REASON_PROVISION_FAILED);
  EXPECT_EQ(job.failure().phase(), v1::FAILURE_PHASE_PROVISIONING);
  EXPECT_EQ(job.failure().status_code(), 12);
  EXPECT_TRUE(absl::StrContains(job.failure().message(), "ProvisionWorkload is not implemented"))
      << job.failure().message();
  EXPECT_EQ(job.workload().addresses(0), "10.64.0.17");
  EXPECT_TRUE(job.workload().has_ready_time());
  // Stored (PostgreSQL, migration 0003) for the hand-off's ProvisionWorkload and its retries.
  EXPECT_EQ(job.workload().enrollment_ticket_sha256(), kTicketSha256);
  WaitForEvent(id, "global.scancelled");
  WaitForEvent(id, "workload.stopping");
  // A repeat of the report for the now failed job: refused, and the workload is to be stopped.
  CtlOutput late = stack().Call("ha-" + node, "WorkloadReady", ReadyJson(id, started, node));
  EXPECT_EQ(late.exit_code, 9) << late.output;
  EXPECT_TRUE(absl::StrContains(late.output, "is FAILED: stop the workload")) << late.output;
}

// Reports are bound to where the Global Slurm runs the job, not to what the reporter claims: with both nodes
// taken, a third job stays QUEUED, and a host-agent that claims it on its own node is refused, audited, and
// changes nothing.
TEST_F(BackendHandoffTest, AHostAgentClaimingAQueuedJobOnItsOwnNodeIsRefused) {
  ASSERT_TRUE(stack().StartBackend().ok());
  const std::string first = Create(404), second = Create(405);
  WaitForState(first, v1::JOB_STATE_STARTING);
  WaitForState(second, v1::JOB_STATE_STARTING);
  const std::string queued = Create(406);
  const v1::Job job = WaitFor(
      queued, [](const v1::Job& j) { return j.ref().global_slurm_job_id() != 0; }, absl::Seconds(30));
  ASSERT_EQ(job.state(), v1::JOB_STATE_QUEUED) << job.DebugString();
  ASSERT_EQ(SlurmState(job.ref().global_slurm_job_id()), "PENDING");
  for (const char* node : {"gnode1", "gnode2"}) {
    SCOPED_TRACE(node);
    CtlOutput ready = stack().Call(absl::StrCat("ha-", node), "WorkloadReady", ReadyJson(queued, job, node));
    EXPECT_EQ(ready.exit_code, 7) << ready.output;  // PERMISSION_DENIED
    EXPECT_TRUE(absl::StrContains(ready.output, "is not placed on any node")) << ready.output;
    EXPECT_TRUE(absl::StrContains(ready.output, "PENDING")) << ready.output;
    const std::string workload = job.workload().workload_id();
    CtlOutput failed = stack().Call(
        absl::StrCat("ha-", node), "WorkloadFailed",
        absl::StrCat(
            R"({"workloadId":")", workload, R"(","globalJobId":")", queued, R"(","node":")", node,
            R"(","failure":{"phase":"FAILURE_PHASE_RUNTIME","reason":"FAKE","message":"claimed"}})"));
    EXPECT_EQ(failed.exit_code, 7) << failed.output;
    CtlOutput stopped = stack().Call(
        absl::StrCat("ha-", node), "WorkloadStopped",
        absl::StrCat(R"({"workloadId":")", workload, R"(","globalJobId":")", queued, R"(","node":")", node,
                     R"(","finalState":"WORKLOAD_STATE_STOPPED","scrub":{"clean":true}})"));
    EXPECT_EQ(stopped.exit_code, 7) << stopped.output;
  }
  const v1::Job after = Get(queued);
  EXPECT_EQ(after.state(), v1::JOB_STATE_QUEUED) << after.DebugString();
  EXPECT_TRUE(after.workload().node().empty()) << after.DebugString();
  // Audited: each refusal is a DENIED record naming the host-agent and the job.
  EXPECT_EQ(stack()
                .Sql(absl::StrCat("SELECT count(*) FROM audit_records WHERE object = 'job/", queued,
                                  "' AND outcome = 3 AND actor LIKE 'spiffe://strongroom.test/host-agent/%'"))
                .value_or("?"),
            "6");
  // The running jobs' own nodes still may report for them (and only they).
  const v1::Job running = Get(first);
  const std::string node = running.workload().node();
  const std::string other = node == "gnode1" ? "gnode2" : "gnode1";
  EXPECT_EQ(stack().Call("ha-" + other, "WorkloadReady", ReadyJson(first, running, other)).exit_code, 7);
  EXPECT_EQ(stack().Call("ha-" + node, "WorkloadReady", ReadyJson(first, running, node)).exit_code, 0);
}

TEST_F(BackendHandoffTest, OnlyTheJobsNodeMayReportAndOnlyItsClusterMaySeeIt) {
  ASSERT_TRUE(stack().StartBackend().ok());
  const std::string id = Create(403);
  const v1::Job started = WaitForState(id, v1::JOB_STATE_STARTING);
  const std::string node = started.workload().node();
  const std::string other = node == "gnode1" ? "gnode2" : "gnode1";
  // Another node's host-agent, claiming its own node: the job runs elsewhere.
  CtlOutput wrong_node = stack().Call("ha-" + other, "WorkloadReady", ReadyJson(id, started, other));
  EXPECT_EQ(wrong_node.exit_code, 7) << wrong_node.output;
  EXPECT_TRUE(absl::StrContains(wrong_node.output, "runs on node " + node)) << wrong_node.output;
  // Another node's host-agent, claiming the job's node: its certificate says otherwise.
  CtlOutput impostor = stack().Call("ha-" + other, "WorkloadReady", ReadyJson(id, started, node));
  EXPECT_EQ(impostor.exit_code, 7) << impostor.output;
  EXPECT_TRUE(absl::StrContains(impostor.output, "may not report for node")) << impostor.output;
  // A vm-controller may not report workloads at all (the authorization table).
  CtlOutput role = stack().Call("vmc-c1", "WorkloadReady", ReadyJson(id, started, node));
  EXPECT_EQ(role.exit_code, 7) << role.output;
  // The vm-controller of another cluster cannot see or cancel the job: as if it did not exist.
  CtlOutput foreign =
      stack().Call("vmc-c2", "GetJob", absl::StrCat(R"({"job":{"globalJobId":")", id, R"("}})"));
  EXPECT_EQ(foreign.exit_code, 5) << foreign.output;
  CtlOutput cancel = stack().Call("vmc-c2", "CancelJob",
                                  absl::StrCat(R"({"job":{"globalJobId":")", id, R"("},"reason":"x"})"));
  EXPECT_EQ(cancel.exit_code, 5) << cancel.output;
  v1::ListJobsResponse listed;
  ASSERT_TRUE(stack().CallInto("vmc-c2", "ListJobs", "{}", &listed).ok());
  EXPECT_EQ(listed.jobs_size(), 0);
  ASSERT_TRUE(stack().CallInto("vmc-c1", "ListJobs", "{}", &listed).ok());
  EXPECT_EQ(listed.jobs_size(), 1);
  // The object-level refusals are in the audit chain as DENIED, naming the job (the table's refusal happens
  // before the request is read, so it names no object).
  EXPECT_EQ(stack()
                .Sql(absl::StrCat("SELECT count(*) FROM audit_records WHERE object = 'job/", id,
                                  "' AND outcome = 3"))
                .value_or("?"),
            "2");
  EXPECT_EQ(Get(id).state(), v1::JOB_STATE_STARTING);
}

TEST_F(BackendHandoffTest, ReleaseBeforeTheJobRunsCancelsIt) {
  ASSERT_TRUE(stack().StartBackend().ok());
  const std::string id = Create(404);
  WaitForState(id, v1::JOB_STATE_STARTING);
  v1::ReleaseWorkloadResponse released;
  ASSERT_TRUE(
      stack()
          .CallInto(
              "vmc-c1", "ReleaseWorkload",
              absl::StrCat(
                  R"({"globalJobId":")", id,
                  R"(","localEnd":{"kind":"LOCAL_JOB_END_KIND_CANCELLED_PENDING"},"reason":"scancel while pending"})"),
              &released)
          .ok());
  EXPECT_EQ(released.job().state(), v1::JOB_STATE_CANCELLING);
  const v1::Job job = WaitForState(id, v1::JOB_STATE_CANCELLED);
  EXPECT_EQ(job.end_reason(), v1::JOB_END_REASON_LOCAL_CANCELLED_PENDING);
  EXPECT_EQ(job.local_end().kind(), v1::LOCAL_JOB_END_KIND_CANCELLED_PENDING);
}

}  // namespace
}  // namespace strongroom::testing
