#include "services/backend/job_decisions.h"

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "services/backend/job_state.h"

namespace strongroom::backend {
namespace {

const absl::Time kNow = absl::FromUnixSeconds(1700000000);

DecisionPolicy Policy() {
  DecisionPolicy p;
  p.backend_actor = "spiffe://td/backend/b";
  p.readiness_deadline = absl::Seconds(60);
  p.peer_retry_window = absl::Seconds(600);
  p.max_submit_attempts = 3;
  return p;
}

JobRecord Job(v1::JobState state, uint32_t slurm_id = 0, const std::string& node = "") {
  JobRecord r;
  r.job.mutable_ref()->set_global_job_id("gj-1");
  r.job.mutable_ref()->set_global_slurm_job_id(slurm_id);
  r.job.set_state(state);
  r.job.mutable_workload()->set_workload_id("wl-1");
  r.job.mutable_workload()->set_node(node);
  r.slurm_state = slurm_id == 0 ? "" : "RUNNING";
  return r;
}

std::vector<v1::JobState> Targets(const Items& items) {
  std::vector<v1::JobState> out;
  for (const TimelineItem& i : items) {
    if (i.to != v1::JOB_STATE_UNSPECIFIED) out.push_back(i.to);
  }
  return out;
}

SqueueRow Row(const std::string& state, const std::string& nodes = "gnode1") {
  SqueueRow row;
  row.job_id = 42;
  row.state = state;
  row.nodes = nodes;
  row.cpus = 8;
  row.start_time = kNow - absl::Seconds(5);
  return row;
}

TEST(JobDecisionsTest, SubmissionRecordsTheIdOrRetriesOrFails) {
  JobRecord r = Job(v1::JOB_STATE_SUBMITTING);
  OnSubmitAttempt(r);
  EXPECT_EQ(Targets(OnSubmitted(r, 42, false, Policy())), std::vector<v1::JobState>{v1::JOB_STATE_QUEUED});
  EXPECT_EQ(r.job.ref().global_slurm_job_id(), 42u);

  r = Job(v1::JOB_STATE_SUBMITTING);
  OnSubmitAttempt(r);
  Items retry =
      OnSubmitFailed(r, absl::UnavailableError("controller down"), kNow, kNow + absl::Seconds(2), Policy());
  EXPECT_TRUE(Targets(retry).empty());
  EXPECT_EQ(retry[0].event, "global.submit_retry");
  EXPECT_EQ(r.effect_after, kNow + absl::Seconds(2));
  OnSubmitAttempt(r);
  OnSubmitAttempt(r);  // the third attempt: no more retries
  Items failed = OnSubmitFailed(r, absl::UnavailableError("controller down"), kNow, kNow, Policy());
  EXPECT_EQ(Targets(failed), std::vector<v1::JobState>{v1::JOB_STATE_FAILED});
  EXPECT_EQ(r.job.failure().reason(), "GLOBAL_SLURM_UNAVAILABLE");
  EXPECT_EQ(r.job.end_reason(), v1::JOB_END_REASON_GLOBAL_SUBMIT_FAILED);

  r = Job(v1::JOB_STATE_SUBMITTING);
  OnSubmitAttempt(r);
  OnSubmitFailed(r, absl::FailedPreconditionError("sbatch refused the job: Invalid account"), kNow, kNow,
                 Policy());
  EXPECT_EQ(r.job.failure().reason(), "SBATCH_REFUSED");
}

TEST(JobDecisionsTest, AnOrphanSearchIsConclusiveOnlyWithinMinJobAgeOfTheJobsCreation) {
  const absl::Time created = kNow - absl::Seconds(500);
  EXPECT_TRUE(OrphanSearchIsConclusive(created, kNow, absl::Seconds(600), absl::Seconds(30)));
  EXPECT_FALSE(OrphanSearchIsConclusive(created, kNow, absl::Seconds(600), absl::Seconds(100)));
  EXPECT_FALSE(OrphanSearchIsConclusive(created, kNow, absl::Seconds(300), absl::Seconds(0)));
  EXPECT_TRUE(OrphanSearchIsConclusive(created - absl::Hours(24 * 365), kNow, absl::InfiniteDuration(),
                                       absl::Seconds(30)));  // MinJobAge=0: never purged

  // Inconclusive: the job fails rather than being submitted a second time.
  JobRecord r = Job(v1::JOB_STATE_SUBMITTING);
  OnSubmitAttempt(r);
  OnSubmitAttempt(r);
  EXPECT_EQ(Targets(OnOrphanSearchInconclusive(r, absl::Seconds(600), kNow, Policy())),
            std::vector<v1::JobState>{v1::JOB_STATE_FAILED});
  EXPECT_EQ(r.job.failure().reason(), "SUBMIT_OUTCOME_UNKNOWN");
  EXPECT_EQ(r.job.failure().phase(), v1::FAILURE_PHASE_SUBMISSION);
  EXPECT_EQ(r.job.end_reason(), v1::JOB_END_REASON_GLOBAL_SUBMIT_FAILED);
  EXPECT_TRUE(absl::StrContains(r.job.failure().message(), "MinJobAge (10m)")) << r.job.failure().message();
  EXPECT_FALSE(r.need_scancel);
  // A job cancelled meanwhile simply ends cancelled.
  r = Job(v1::JOB_STATE_CANCELLING);
  EXPECT_EQ(Targets(OnOrphanSearchInconclusive(r, absl::Seconds(600), kNow, Policy())),
            std::vector<v1::JobState>{v1::JOB_STATE_CANCELLED});
}

TEST(JobDecisionsTest, ASubmissionThatRacedACancelIsScancelled) {
  JobRecord r = Job(v1::JOB_STATE_CANCELLING);
  Items items = OnSubmitted(r, 42, false, Policy());
  EXPECT_TRUE(Targets(items).empty());
  EXPECT_TRUE(r.need_scancel);
  r = Job(v1::JOB_STATE_CANCELLING);
  EXPECT_EQ(Targets(OnNeverSubmitted(r, Policy())), std::vector<v1::JobState>{v1::JOB_STATE_CANCELLED});
}

TEST(JobDecisionsTest, PollingFollowsTheGlobalJob) {
  JobRecord r = Job(v1::JOB_STATE_QUEUED, 42);
  EXPECT_TRUE(OnSlurmObserved(r, Row("PENDING", ""), kNow, Policy()).empty());
  EXPECT_EQ(Targets(OnSlurmObserved(r, Row("RUNNING"), kNow, Policy())),
            std::vector<v1::JobState>{v1::JOB_STATE_STARTING});
  r.job.set_state(v1::JOB_STATE_STARTING);
  EXPECT_EQ(r.job.workload().node(), "gnode1");
  EXPECT_EQ(r.job.allocated_cpus(), 8u);
  EXPECT_TRUE(r.job.has_start_time());
  EXPECT_TRUE(OnSlurmObserved(r, Row("RUNNING"), kNow, Policy()).empty());  // nothing new
}

TEST(JobDecisionsTest, EachWayAGlobalJobEndsIsRecorded) {
  struct Case {
    std::string slurm_state;
    v1::JobState from;
    v1::JobState to;
    v1::JobEndReason end;
    std::string reason;
  };
  for (const Case& c : std::vector<Case>{
           {"CANCELLED", v1::JOB_STATE_STARTING, v1::JOB_STATE_FAILED,
            v1::JOB_END_REASON_GLOBAL_CANCELLED_EXTERNALLY, "GLOBAL_JOB_CANCELLED"},
           {"TIMEOUT", v1::JOB_STATE_RUNNING, v1::JOB_STATE_FAILED, v1::JOB_END_REASON_GLOBAL_TIMEOUT,
            "GLOBAL_JOB_TIMEOUT"},
           {"NODE_FAIL", v1::JOB_STATE_PROVISIONING, v1::JOB_STATE_FAILED, v1::JOB_END_REASON_NODE_FAILED,
            "GLOBAL_JOB_NODE_FAIL"},
           {"FAILED", v1::JOB_STATE_QUEUED, v1::JOB_STATE_FAILED, v1::JOB_END_REASON_WORKLOAD_FAILED,
            "GLOBAL_JOB_FAILED"},
           {"CANCELLED", v1::JOB_STATE_CANCELLING, v1::JOB_STATE_CANCELLED, v1::JOB_END_REASON_UNSPECIFIED,
            ""},
           {"COMPLETED", v1::JOB_STATE_RELEASING, v1::JOB_STATE_COMPLETED, v1::JOB_END_REASON_UNSPECIFIED,
            ""},
       }) {
    SCOPED_TRACE(c.slurm_state + " in " + std::string(JobStateName(c.from)));
    JobRecord r = Job(c.from, 42, "gnode1");
    r.job.mutable_workload()->set_state(v1::WORKLOAD_STATE_RUNNING);
    EXPECT_EQ(Targets(OnSlurmObserved(r, Row(c.slurm_state), kNow, Policy())),
              std::vector<v1::JobState>{c.to});
    EXPECT_EQ(r.job.end_reason(), c.end);
    EXPECT_EQ(r.job.failure().reason(), c.reason);
    EXPECT_FALSE(r.need_scancel);  // it has ended already
    if (c.to == v1::JOB_STATE_FAILED) {
      EXPECT_TRUE(r.need_stop_workload);
    }
  }
}

TEST(JobDecisionsTest, TheReadinessDeadlineFailsAndCleansUp) {
  JobRecord r = Job(v1::JOB_STATE_STARTING, 42, "gnode1");
  *r.job.mutable_start_time() = google::protobuf::Timestamp();
  r.job.mutable_start_time()->set_seconds(absl::ToUnixSeconds(kNow - absl::Seconds(30)));
  EXPECT_TRUE(OnReadinessCheck(r, kNow, Policy()).empty());
  EXPECT_EQ(Targets(OnReadinessCheck(r, kNow + absl::Seconds(31), Policy())),
            std::vector<v1::JobState>{v1::JOB_STATE_FAILED});
  EXPECT_EQ(r.job.end_reason(), v1::JOB_END_REASON_READY_DEADLINE_EXCEEDED);
  EXPECT_TRUE(r.need_scancel);
  EXPECT_TRUE(r.need_stop_workload);
  EXPECT_EQ(StopReasonOf(r), v1::STOP_REASON_READY_DEADLINE);
}

TEST(JobDecisionsTest, WorkloadReadyWalksTheMainPathAndAsksForTheHandOff) {
  JobRecord r = Job(v1::JOB_STATE_QUEUED, 42);
  v1::WorkloadReadyRequest ready;
  ready.set_node("gnode2");
  ready.add_addresses("10.64.0.9");
  ready.set_enrollment_ticket_sha256(std::string(64, 'c'));
  Items items = OnWorkloadReady(r, ready, "spiffe://td/host-agent/gnode2", kNow);
  EXPECT_EQ(Targets(items), (std::vector<v1::JobState>{v1::JOB_STATE_STARTING, v1::JOB_STATE_PROVISIONING}));
  EXPECT_TRUE(r.need_provision);
  EXPECT_EQ(r.job.workload().node(), "gnode2");
  EXPECT_EQ(r.job.workload().enrollment_ticket_sha256(), std::string(64, 'c'));  // forwarded at the hand-off
  r.job.set_state(v1::JOB_STATE_PROVISIONING);
  EXPECT_TRUE(OnWorkloadReady(r, ready, "x", kNow).empty());  // a repeat changes nothing
  // For a cancelled job the workload must go.
  JobRecord cancelled = Job(v1::JOB_STATE_CANCELLED, 42);
  Items refused = OnWorkloadReady(cancelled, ready, "x", kNow);
  EXPECT_TRUE(Targets(refused).empty());
  EXPECT_TRUE(cancelled.need_stop_workload);
}

TEST(JobDecisionsTest, TheHandOffOutcomeDrivesTheState) {
  JobRecord r = Job(v1::JOB_STATE_PROVISIONING, 42, "gnode1");
  r.need_provision = true;
  r.effect_since = kNow;
  v1::ProvisionWorkloadResponse ok;
  ok.set_node_name("sr-1");
  EXPECT_EQ(Targets(OnProvisioned(r, ok, kNow, kNow, Policy())),
            std::vector<v1::JobState>{v1::JOB_STATE_RUNNING});
  EXPECT_FALSE(r.need_provision);

  r = Job(v1::JOB_STATE_PROVISIONING, 42, "gnode1");
  r.need_provision = true;
  r.effect_since = kNow;
  Items retry = OnProvisioned(r, absl::UnavailableError("down"), kNow, kNow + absl::Seconds(1), Policy());
  EXPECT_EQ(retry[0].event, "provision.retry");
  EXPECT_TRUE(r.need_provision);
  Items failed = OnProvisioned(r, absl::UnimplementedError("not built"), kNow, kNow, Policy());
  EXPECT_EQ(Targets(failed), std::vector<v1::JobState>{v1::JOB_STATE_FAILED});
  EXPECT_EQ(r.job.end_reason(), v1::JOB_END_REASON_PROVISION_FAILED);
  EXPECT_EQ(r.job.failure().status_code(), 12);
  EXPECT_TRUE(r.need_scancel);
}

TEST(JobDecisionsTest, AFailedStopAsksForAScancelAndIsRecorded) {
  JobRecord r = Job(v1::JOB_STATE_RELEASING, 42, "gnode1");
  r.need_stop_workload = true;
  Items items = OnStopWorkloadDone(r, absl::UnimplementedError("no"), kNow, kNow, Policy());
  EXPECT_EQ(items[0].event, "workload.stopping");
  EXPECT_EQ(items[0].status_code, 12);
  EXPECT_FALSE(r.need_stop_workload);
  EXPECT_TRUE(r.need_scancel);
}

TEST(JobDecisionsTest, CancelAndReleaseAreIdempotent) {
  JobRecord r = Job(v1::JOB_STATE_QUEUED, 42);
  EXPECT_EQ(Targets(OnCancel(r, "why", v1::JOB_END_REASON_OPERATOR_CANCELLED, "op", kNow)),
            std::vector<v1::JobState>{v1::JOB_STATE_CANCELLING});
  EXPECT_TRUE(r.need_scancel);
  r.job.set_state(v1::JOB_STATE_CANCELLING);
  EXPECT_TRUE(OnCancel(r, "again", v1::JOB_END_REASON_OPERATOR_CANCELLED, "op", kNow).empty());

  JobRecord running = Job(v1::JOB_STATE_RUNNING, 42, "gnode1");
  v1::ReleaseWorkloadRequest release;
  release.mutable_local_end()->set_kind(v1::LOCAL_JOB_END_KIND_COMPLETED);
  EXPECT_EQ(Targets(*OnRelease(running, release, "vmc", kNow)),
            std::vector<v1::JobState>{v1::JOB_STATE_RELEASING});
  EXPECT_EQ(running.job.end_reason(), v1::JOB_END_REASON_LOCAL_COMPLETED);
  EXPECT_TRUE(running.need_stop_workload);
  running.job.set_state(v1::JOB_STATE_RELEASING);  // what JobStore applies
  EXPECT_EQ(StopReasonOf(running), v1::STOP_REASON_JOB_ENDED);
  EXPECT_TRUE(OnRelease(running, release, "vmc", kNow)->empty());
}

TEST(JobDecisionsTest, WorkloadStoppedEndsReleasingJobsAndIsRefusedBeforeTheJobRuns) {
  JobRecord r = Job(v1::JOB_STATE_RELEASING, 42, "gnode1");
  v1::WorkloadStoppedRequest stopped;
  stopped.set_final_state(v1::WORKLOAD_STATE_STOPPED);
  stopped.mutable_scrub()->set_clean(true);
  EXPECT_EQ(Targets(*OnWorkloadStopped(r, stopped, "ha", kNow)),
            std::vector<v1::JobState>{v1::JOB_STATE_COMPLETED});
  JobRecord queued = Job(v1::JOB_STATE_QUEUED, 42);
  absl::StatusOr<Items> refused = OnWorkloadStopped(queued, stopped, "ha", kNow);
  EXPECT_EQ(refused.status().message(), "job gj-1: illegal state transition QUEUED -> COMPLETED");
  JobRecord dirty = Job(v1::JOB_STATE_CANCELLING, 42, "gnode1");
  stopped.mutable_scrub()->set_clean(false);
  stopped.mutable_scrub()->add_leftovers("mount /x: EBUSY");
  Items items = *OnWorkloadStopped(dirty, stopped, "ha", kNow);
  EXPECT_EQ(items[0].event, "workload.scrub_incomplete");
  EXPECT_EQ(items[0].outcome, v1::AUDIT_OUTCOME_FAILURE);
  EXPECT_EQ(Targets(items), std::vector<v1::JobState>{v1::JOB_STATE_CANCELLED});
}

TEST(JobDecisionsTest, EveryTransitionADecisionMakesIsInTheTable) {
  // Drive every decision from every state and check the transitions it proposes are allowed from there.
  for (int s = 1; s <= 10; ++s) {
    const auto state = static_cast<v1::JobState>(s);
    std::vector<Items> proposals;
    auto from = [&] {
      JobRecord r = Job(state, 42, "gnode1");
      r.need_provision = r.need_scancel = r.need_stop_workload = true;
      return r;
    };
    JobRecord r = from();
    proposals.push_back(OnSlurmObserved(r, Row("RUNNING"), kNow, Policy()));
    r = from();
    proposals.push_back(OnSlurmObserved(r, Row("CANCELLED"), kNow, Policy()));
    r = from();
    proposals.push_back(OnSlurmForgot(r, kNow, Policy()));
    r = from();
    proposals.push_back(OnCancel(r, "x", v1::JOB_END_REASON_OPERATOR_CANCELLED, "op", kNow));
    r = from();
    proposals.push_back(OnWorkloadReady(r, v1::WorkloadReadyRequest(), "ha", kNow));
    r = from();
    proposals.push_back(OnWorkloadFailed(r, v1::WorkloadFailedRequest(), "ha", kNow));
    r = from();
    proposals.push_back(OnProvisioned(r, absl::InternalError("x"), kNow, kNow, Policy()));
    for (const Items& items : proposals) {
      v1::JobState current = state;
      for (const TimelineItem& item : items) {
        if (item.to == v1::JOB_STATE_UNSPECIFIED) continue;
        EXPECT_TRUE(TransitionAllowed(current, item.to))
            << JobStateName(current) << " -> " << JobStateName(item.to);
        current = item.to;
      }
    }
  }
}

}  // namespace
}  // namespace strongroom::backend
