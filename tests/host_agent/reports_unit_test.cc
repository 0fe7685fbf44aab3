// The report outbox (services/host_agent/reports.h) with a fake backend: which reports a transition causes,
// order per workload, backoff while backend is unreachable, drops of permanent refusals (logged and audited),
// and survival across a restart (a new Outbox over the same DB). The real backend: backend_report_test.cc.
#include <unistd.h>

#include <deque>
#include <filesystem>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "services/host_agent/reports.h"
#include "services/host_agent/store.h"
#include "strongroom/v1/backend.pb.h"
#include "tests/host_agent/test_env.h"

namespace strongroom::host_agent {
namespace {

// Answers from a script (then OK) and records what reached it.
class FakeBackend : public ReportSender {
 public:
  absl::Status Send(const OutboxEntry& e) override {
    absl::MutexLock lock(&mu_);
    ++calls_;
    absl::Status answer = absl::OkStatus();
    if (!script_.empty()) {
      answer = script_.front();
      script_.pop_front();
    } else if (down_) {
      answer = absl::UnavailableError("connection refused");
    }
    if (answer.ok() || IsPermanentReportError(answer.code())) seen_.push_back(e.workload_id + ":" + e.kind);
    return answer;
  }
  void Script(std::vector<absl::Status> answers) {
    absl::MutexLock lock(&mu_);
    script_.insert(script_.end(), answers.begin(), answers.end());
  }
  void SetDown(bool down) {
    absl::MutexLock lock(&mu_);
    down_ = down;
  }
  std::vector<std::string> seen() {
    absl::MutexLock lock(&mu_);
    return seen_;
  }
  int calls() {
    absl::MutexLock lock(&mu_);
    return calls_;
  }

 private:
  absl::Mutex mu_;
  std::deque<absl::Status> script_;
  std::vector<std::string> seen_;
  bool down_ = false;
  int calls_ = 0;
};

class RecordingAudit : public AuditSink {
 public:
  void Record(const AuditEvent& e) override {
    absl::MutexLock lock(&mu_);
    events.push_back(e);
  }
  std::vector<AuditEvent> Events() {
    absl::MutexLock lock(&mu_);
    return events;
  }

 private:
  absl::Mutex mu_;
  std::vector<AuditEvent> events;
};

v1::Workload WithJob(const std::string& id, v1::WorkloadState state) {
  v1::Workload w;
  w.mutable_spec()->set_workload_id(id);
  w.mutable_spec()->set_kind(v1::WORKLOAD_KIND_CONTAINER);
  w.mutable_spec()->mutable_job()->set_global_job_id("gj-" + id);
  w.set_state(state);
  return w;
}

OutboxOptions Fast() {
  OutboxOptions o;
  o.agent_id = "spiffe://strongroom.test/host-agent/node-a";
  o.initial_backoff = absl::Milliseconds(20);
  o.max_backoff = absl::Milliseconds(100);
  o.rescan = absl::Milliseconds(50);
  return o;
}

class OutboxTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::MakeTempDir("sr-ha-outbox");
    auto store = Store::Open(dir_ + "/workloads.db");
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
  }
  void TearDown() override {
    store_.reset();
    std::filesystem::remove_all(dir_);
  }
  // Commits `w` with the reports its transition from `from` causes, as WorkloadManager does.
  void Commit(const v1::Workload& w, v1::WorkloadState from) {
    TrackedWorkload tw;
    tw.record = w;
    ASSERT_TRUE(store_->Put(tw, ReportsFor(w, from, {"node-a", "strongroom.test"})).ok());
  }
  size_t Pending() { return store_->PendingReports()->size(); }

  std::string dir_;
  std::unique_ptr<Store> store_;
};

TEST(Reports, WhatEachTransitionSends) {
  const ReportContext ctx{"node-a", "strongroom.test"};
  v1::Workload w = WithJob("wl-1", v1::WORKLOAD_STATE_RUNNING);
  w.mutable_network()->set_ipv4_address("10.64.0.17");
  w.set_enrollment_ticket_sha256(std::string(64, 'a'));
  std::vector<OutboxEntry> r = ReportsFor(w, v1::WORKLOAD_STATE_STARTING, ctx);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].kind, kReportReady);
  v1::WorkloadReadyRequest ready;
  ASSERT_TRUE(ready.ParseFromString(r[0].payload));
  EXPECT_EQ(ready.workload_id(), "wl-1");
  EXPECT_EQ(ready.global_job_id(), "gj-wl-1");
  EXPECT_EQ(ready.node(), "node-a");
  ASSERT_EQ(ready.addresses_size(), 1);
  EXPECT_EQ(ready.addresses(0), "10.64.0.17");
  EXPECT_EQ(ready.identity().spiffe_id(), "spiffe://strongroom.test/workload/wl-1");
  EXPECT_EQ(ready.kind(), v1::WORKLOAD_KIND_CONTAINER);
  // Only the ticket's hash is reported (the ticket is in the workload's bundle alone).
  EXPECT_EQ(ready.enrollment_ticket_sha256(), std::string(64, 'a'));

  v1::Workload failed = WithJob("wl-2", v1::WORKLOAD_STATE_FAILED);
  failed.mutable_failure()->set_phase(v1::FAILURE_PHASE_SCRATCH);
  failed.mutable_failure()->set_reason("SCRATCH_SETUP");
  failed.mutable_scrub()->set_clean(true);
  r = ReportsFor(failed, v1::WORKLOAD_STATE_STARTING, ctx);
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0].kind, kReportFailed);
  EXPECT_EQ(r[1].kind, kReportStopped);
  v1::WorkloadStoppedRequest stopped;
  ASSERT_TRUE(stopped.ParseFromString(r[1].payload));
  EXPECT_EQ(stopped.final_state(), v1::WORKLOAD_STATE_FAILED);
  EXPECT_TRUE(stopped.scrub().clean());
  EXPECT_EQ(stopped.failure().reason(), "SCRATCH_SETUP");

  r = ReportsFor(WithJob("wl-3", v1::WORKLOAD_STATE_STOPPED), v1::WORKLOAD_STATE_STOPPING, ctx);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].kind, kReportStopped);

  // Nothing for intermediate states, repeats, or a workload without a job.
  EXPECT_TRUE(
      ReportsFor(WithJob("wl-4", v1::WORKLOAD_STATE_STOPPING), v1::WORKLOAD_STATE_RUNNING, ctx).empty());
  EXPECT_TRUE(
      ReportsFor(WithJob("wl-5", v1::WORKLOAD_STATE_RUNNING), v1::WORKLOAD_STATE_RUNNING, ctx).empty());
  v1::Workload standalone = WithJob("wl-6", v1::WORKLOAD_STATE_RUNNING);
  standalone.mutable_spec()->clear_job();
  EXPECT_TRUE(ReportsFor(standalone, v1::WORKLOAD_STATE_STARTING, ctx).empty());
}

TEST(Reports, PermanentErrorsAreTheFourRefusals) {
  for (absl::StatusCode c : {absl::StatusCode::kNotFound, absl::StatusCode::kFailedPrecondition,
                             absl::StatusCode::kInvalidArgument, absl::StatusCode::kPermissionDenied}) {
    EXPECT_TRUE(IsPermanentReportError(c)) << absl::StatusCodeToString(c);
  }
  for (absl::StatusCode c :
       {absl::StatusCode::kUnavailable, absl::StatusCode::kDeadlineExceeded, absl::StatusCode::kInternal,
        absl::StatusCode::kUnauthenticated, absl::StatusCode::kResourceExhausted}) {
    EXPECT_FALSE(IsPermanentReportError(c)) << absl::StatusCodeToString(c);
  }
}

TEST_F(OutboxTest, DeliversInOrderPerWorkloadAndEmptiesTheOutbox) {
  Commit(WithJob("wl-a", v1::WORKLOAD_STATE_RUNNING), v1::WORKLOAD_STATE_STARTING);
  Commit(WithJob("wl-b", v1::WORKLOAD_STATE_RUNNING), v1::WORKLOAD_STATE_STARTING);
  Commit(WithJob("wl-a", v1::WORKLOAD_STATE_STOPPED), v1::WORKLOAD_STATE_STOPPING);
  auto backend = std::make_unique<FakeBackend>();
  FakeBackend* fake = backend.get();
  auto audit = std::make_shared<RecordingAudit>();
  Outbox outbox(store_.get(), std::move(backend), audit, Fast());
  outbox.Start();
  ASSERT_TRUE(outbox.WaitEmpty(absl::Seconds(10)));
  EXPECT_EQ(fake->seen(), (std::vector<std::string>{"wl-a:ready", "wl-b:ready", "wl-a:stopped"}));
  EXPECT_EQ(outbox.delivered(), 3u);
  EXPECT_EQ(Pending(), 0u);
  EXPECT_TRUE(audit->Events().empty());
}

TEST_F(OutboxTest, RetriesWithBackoffWhileUnreachableKeepingOrder) {
  auto backend = std::make_unique<FakeBackend>();
  FakeBackend* fake = backend.get();
  fake->SetDown(true);
  Outbox outbox(store_.get(), std::move(backend), std::make_shared<RecordingAudit>(), Fast());
  outbox.Start();
  Commit(WithJob("wl-a", v1::WORKLOAD_STATE_RUNNING), v1::WORKLOAD_STATE_STARTING);
  Commit(WithJob("wl-a", v1::WORKLOAD_STATE_STOPPED), v1::WORKLOAD_STATE_STOPPING);
  outbox.Kick();
  absl::SleepFor(absl::Milliseconds(600));
  const int calls = fake->calls();
  EXPECT_GE(calls, 3) << "retried";
  EXPECT_LE(calls, 40) << "backed off rather than spinning";
  EXPECT_EQ(Pending(), 2u);
  EXPECT_TRUE(fake->seen().empty()) << "the later report never overtakes the one waiting";
  fake->SetDown(false);
  ASSERT_TRUE(outbox.WaitEmpty(absl::Seconds(10)));
  EXPECT_EQ(fake->seen(), (std::vector<std::string>{"wl-a:ready", "wl-a:stopped"}));
}

TEST_F(OutboxTest, DropsPermanentRefusalsWithAnAuditEventAndGoesOn) {
  v1::Workload failed = WithJob("wl-x", v1::WORKLOAD_STATE_FAILED);
  failed.mutable_failure()->set_phase(v1::FAILURE_PHASE_IMAGE);
  failed.mutable_failure()->set_reason("IMAGE_MOUNT");
  Commit(failed, v1::WORKLOAD_STATE_STARTING);  // failed + stopped
  auto backend = std::make_unique<FakeBackend>();
  FakeBackend* fake = backend.get();
  fake->Script({absl::NotFoundError("no job gj-wl-x"), absl::UnavailableError("blip"),
                absl::PermissionDeniedError("not your node")});
  auto audit = std::make_shared<RecordingAudit>();
  Outbox outbox(store_.get(), std::move(backend), audit, Fast());
  outbox.Start();
  ASSERT_TRUE(outbox.WaitEmpty(absl::Seconds(10)));
  EXPECT_EQ(fake->seen(), (std::vector<std::string>{"wl-x:failed", "wl-x:stopped"}));
  EXPECT_EQ(outbox.dropped(), 2u);
  EXPECT_EQ(outbox.delivered(), 0u);
  std::vector<AuditEvent> events = audit->Events();
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0].action, "host-agent.report_dropped");
  EXPECT_EQ(events[0].object, "workload/wl-x");
  EXPECT_EQ(events[0].outcome, "NOT_FOUND");
  EXPECT_EQ(events[1].outcome, "PERMISSION_DENIED");
}

TEST_F(OutboxTest, SurvivesARestart) {
  Commit(WithJob("wl-r", v1::WORKLOAD_STATE_RUNNING), v1::WORKLOAD_STATE_STARTING);
  {
    auto backend = std::make_unique<FakeBackend>();
    backend->SetDown(true);
    Outbox outbox(store_.get(), std::move(backend), std::make_shared<RecordingAudit>(), Fast());
    outbox.Start();
    absl::SleepFor(absl::Milliseconds(100));
  }  // "crash": the report is still in the DB
  store_.reset();
  auto reopened = Store::Open(dir_ + "/workloads.db");
  ASSERT_TRUE(reopened.ok());
  store_ = std::move(*reopened);
  ASSERT_EQ(Pending(), 1u);
  auto backend = std::make_unique<FakeBackend>();
  FakeBackend* fake = backend.get();
  Outbox outbox(store_.get(), std::move(backend), std::make_shared<RecordingAudit>(), Fast());
  outbox.Start();
  ASSERT_TRUE(outbox.WaitEmpty(absl::Seconds(10)));
  EXPECT_EQ(fake->seen(), std::vector<std::string>{"wl-r:ready"});
}

}  // namespace
}  // namespace strongroom::host_agent
