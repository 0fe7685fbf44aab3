// The host-agent daemon over mTLS: per-RPC and per-object authorization, WatchWorkload, and crash tests. The
// crash tests use the fault-injection hook (config fault_crash_at: the agent SIGKILLs itself at a named
// point; the points are listed in docs/HOST_AGENT.md) or kill -9 from here, restart the agent on the same
// state dir and check that reconciliation leaves every workload terminal (or re-adopted) and nothing behind.
#include <signal.h>

#include <chrono>

#include "absl/strings/match.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "tests/host_agent/daemon_fixture.h"
#include "tests/host_agent/test_env.h"

namespace strongroom::host_agent::testing {
namespace {

class DaemonTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(geteuid(), 0u) << "needs root; CI runs as root";
    auto d = AgentDaemon::Create();
    ASSERT_TRUE(d.ok()) << d.status();
    agent_ = std::move(*d);
  }
  void TearDown() override {
    if (HasFailure() && agent_ != nullptr)
      std::fprintf(stderr, "---- agent log ----\n%s\n", agent_->log().c_str());
    agent_.reset();
  }

  grpc::Status Start(const std::string& client, const v1::WorkloadSpec& spec,
                     v1::StartWorkloadResponse* out) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    v1::StartWorkloadRequest req;
    *req.mutable_spec() = spec;
    return agent_->Stub(client)->StartWorkload(&ctx, req, out);
  }
  grpc::Status Stop(const std::string& client, const std::string& id, v1::StopWorkloadResponse* out) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    v1::StopWorkloadRequest req;
    req.set_workload_id(id);
    req.set_reason(v1::STOP_REASON_JOB_ENDED);
    req.mutable_grace_period()->set_seconds(5);
    return agent_->Stub(client)->StopWorkload(&ctx, req, out);
  }
  v1::Workload Get(const std::string& id) {
    grpc::ClientContext ctx;
    v1::GetWorkloadRequest req;
    req.set_workload_id(id);
    v1::GetWorkloadResponse resp;
    grpc::Status s = agent_->Stub("operator")->GetWorkload(&ctx, req, &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return resp.workload();
  }
  void ExpectNothingLeft(const std::string& id) {
    EXPECT_EQ(Leftovers(agent_->state_dir(), id, agent_->runc_root()), std::vector<std::string>{});
  }

  std::unique_ptr<AgentDaemon> agent_;
};

TEST_F(DaemonTest, AuthorizationWatchAndLifecycleOverMtls) {
  ASSERT_TRUE(agent_->Start().ok());
  v1::StartWorkloadResponse started;
  // operator may read but not mutate (refused by the authorization table before the handler).
  grpc::Status denied = Start("operator", ProbeSpec(Id("wl-d-1")), &started);
  EXPECT_EQ(denied.error_code(), grpc::StatusCode::PERMISSION_DENIED) << denied.error_message();
  // A global-job client of another node is refused by the per-object check.
  denied = Start("global-job-node-b", ProbeSpec(Id("wl-d-1")), &started);
  EXPECT_EQ(denied.error_code(), grpc::StatusCode::PERMISSION_DENIED) << denied.error_message();
  EXPECT_TRUE(absl::StrContains(denied.error_message(), "not to this node")) << denied.error_message();
  // This node's global-job client may.
  grpc::Status ok = Start("global-job-node-a", ProbeSpec(Id("wl-d-1")), &started);
  ASSERT_TRUE(ok.ok()) << ok.error_message();
  EXPECT_EQ(started.workload().state(), v1::WORKLOAD_STATE_RUNNING);
  EXPECT_TRUE(started.created());
  grpc::Status vm = [&] {
    v1::WorkloadSpec spec = ProbeSpec(Id("wl-d-vm"));
    spec.set_kind(v1::WORKLOAD_KIND_VM);
    v1::StartWorkloadResponse r;
    return Start("backend", spec, &r);
  }();
  // This agent has no vm_libvirt_uri: a VM is refused, naming why (the VM path: vm_host_agent_test).
  EXPECT_EQ(vm.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_TRUE(absl::StrContains(vm.error_message(), "vm_libvirt_uri")) << vm.error_message();

  // Watch from the global job's point of view: the first message is the RUNNING snapshot, the last is
  // terminal.
  auto stub = agent_->Stub("global-job-node-a");
  grpc::ClientContext watch_ctx;
  v1::WatchWorkloadRequest watch_req;
  watch_req.set_workload_id(Id("wl-d-1"));
  auto reader = stub->WatchWorkload(&watch_ctx, watch_req);
  v1::WatchWorkloadResponse msg;
  ASSERT_TRUE(reader->Read(&msg));
  EXPECT_EQ(msg.workload().state(), v1::WORKLOAD_STATE_RUNNING);
  v1::StopWorkloadResponse stopped;
  ASSERT_TRUE(Stop("backend", Id("wl-d-1"), &stopped).ok());
  v1::WorkloadState last = msg.workload().state();
  while (reader->Read(&msg)) last = msg.workload().state();
  EXPECT_TRUE(reader->Finish().ok());
  EXPECT_EQ(last, v1::WORKLOAD_STATE_STOPPED);
  EXPECT_TRUE(stopped.workload().scrub().clean()) << stopped.workload().DebugString();

  grpc::ClientContext list_ctx;
  v1::ListWorkloadsRequest list_req;
  list_req.add_states(v1::WORKLOAD_STATE_STOPPED);
  v1::ListWorkloadsResponse list;
  ASSERT_TRUE(agent_->Stub("operator")->ListWorkloads(&list_ctx, list_req, &list).ok());
  ASSERT_EQ(list.workloads_size(), 1);
  EXPECT_EQ(list.workloads(0).spec().workload_id(), Id("wl-d-1"));
  ExpectNothingLeft(Id("wl-d-1"));
}

// (a) kill -9 mid-start, at each step, with no retry window: after restart the workload is FAILED (phase
// RECONCILE) and nothing is left.
TEST_F(DaemonTest, CrashMidStartIsCleanedUpOnRestart) {
  int n = 0;
  for (const char* point :
       {"start.after_scratch", "start.after_overlay", "start.after_network", "start.after_runtime"}) {
    SCOPED_TRACE(point);
    const std::string id = absl::StrCat(Id("wl-crash-start-"), n++);
    ASSERT_TRUE(agent_->Start(absl::StrCat("fault_crash_at: \"", point, "\"\n")).ok());
    v1::StartWorkloadResponse r;
    grpc::Status s = Start("backend", ProbeSpec(id), &r);
    EXPECT_FALSE(s.ok());
    ASSERT_TRUE(agent_->WaitForDeath(30)) << "the fault point was not reached";
    ASSERT_TRUE(agent_->Start("start_retry_window_seconds: 0\n").ok());
    v1::Workload w = Get(id);
    EXPECT_EQ(w.state(), v1::WORKLOAD_STATE_FAILED) << w.DebugString();
    EXPECT_EQ(w.failure().phase(), v1::FAILURE_PHASE_RECONCILE);
    EXPECT_EQ(w.failure().reason(), "AGENT_RESTARTED_DURING_START");
    EXPECT_TRUE(w.scrub().clean()) << w.DebugString();
    ExpectNothingLeft(id);
    agent_->Kill9();
  }
  EXPECT_TRUE(absl::StrContains(agent_->log(), "reconcile: cleaning up workload"));
}

// A data-path container (issue 14): crashed at each start step from the creation of its user and network
// namespaces on, the restart removes the userns bind, the TUN node and the netns with everything else;
// crashed while running, it is re-adopted (its userns bind and TUN node found) and stops cleanly. The share
// is the development one (this host has no NFS client).
TEST_F(DaemonTest, DataPathCrashMidStartIsCleanedUpAndARunningOneIsAdopted) {
  const std::string share = MakeTempDir("sr-ha-dp-share");
  const std::string shares =
      absl::StrCat("project_shares { project: \"proj1\" host_path: \"", share, "\" }\n");
  auto spec = [](const std::string& id) {
    v1::WorkloadSpec s = ProbeSpec(id);
    s.mutable_job()->set_project("proj1");
    v1::ProvisioningBundle* p = s.mutable_provisioning();
    p->set_local_cluster("c1");
    p->add_slurmctld_addresses("192.0.2.1:6817");
    p->set_enrollment_address("192.0.2.1:7443");
    p->set_ipsec_data_path(true);
    return s;
  };
  int n = 0;
  for (const char* point : {"start.after_namespaces", "start.after_network", "start.after_runtime"}) {
    SCOPED_TRACE(point);
    const std::string id = absl::StrCat(Id("wl-dp-crash-"), n++);
    ASSERT_TRUE(agent_->Start(absl::StrCat(shares, "fault_crash_at: \"", point, "\"\n")).ok());
    v1::StartWorkloadResponse r;
    EXPECT_FALSE(Start("backend", spec(id), &r).ok());
    ASSERT_TRUE(agent_->WaitForDeath(30)) << "the fault point was not reached";
    ASSERT_TRUE(agent_->Start(shares + "start_retry_window_seconds: 0\n").ok());
    v1::Workload w = Get(id);
    EXPECT_EQ(w.state(), v1::WORKLOAD_STATE_FAILED) << w.DebugString();
    EXPECT_EQ(w.failure().reason(), "AGENT_RESTARTED_DURING_START");
    EXPECT_TRUE(w.scrub().clean()) << w.DebugString();
    ExpectNothingLeft(id);
    agent_->Kill9();
  }
  const std::string id = Id("wl-dp-adopt");
  ASSERT_TRUE(agent_->Start(shares).ok());
  v1::StartWorkloadResponse r;
  grpc::Status s = Start("backend", spec(id), &r);
  ASSERT_TRUE(s.ok()) << s.error_message();
  agent_->Kill9();
  ASSERT_TRUE(agent_->Start(shares).ok());
  v1::Workload w = Get(id);
  EXPECT_EQ(w.state(), v1::WORKLOAD_STATE_RUNNING) << w.DebugString();
  EXPECT_TRUE(w.adopted()) << w.DebugString();
  v1::StopWorkloadResponse stopped;
  ASSERT_TRUE(Stop("backend", id, &stopped).ok());
  EXPECT_TRUE(stopped.workload().scrub().clean()) << stopped.workload().DebugString();
  ExpectNothingLeft(id);
  RemoveTree(share);
}

// (a') the same crashes with the default retry window: the restarted agent cleans the half-done start up and
// keeps it STARTING, the retried StartWorkload (what the global job's client sends) starts it from scratch,
// and a start nobody retries is FAILED once the window ends.
TEST_F(DaemonTest, CrashMidStartIsResumedByTheRetriedStartOrFailsAfterTheWindow) {
  int n = 0;
  for (const char* point : {"start.after_scratch", "start.after_network", "start.after_runtime"}) {
    SCOPED_TRACE(point);
    const std::string id = absl::StrCat(Id("wl-resume-"), n++);
    ASSERT_TRUE(agent_->Start(absl::StrCat("fault_crash_at: \"", point, "\"\n")).ok());
    v1::StartWorkloadResponse r;
    EXPECT_FALSE(Start("backend", ProbeSpec(id), &r).ok());
    ASSERT_TRUE(agent_->WaitForDeath(30)) << "the fault point was not reached";
    ASSERT_TRUE(agent_->Start().ok());
    v1::Workload w = Get(id);
    EXPECT_EQ(w.state(), v1::WORKLOAD_STATE_STARTING) << w.DebugString();
    ExpectNothingLeft(id);  // cleaned up: the retry begins again from nothing
    grpc::Status retried = Start("global-job-node-a", ProbeSpec(id), &r);
    ASSERT_TRUE(retried.ok()) << retried.error_message() << "\n" << agent_->log();
    EXPECT_EQ(r.workload().state(), v1::WORKLOAD_STATE_RUNNING) << r.workload().DebugString();
    v1::StopWorkloadResponse stopped;
    ASSERT_TRUE(Stop("backend", id, &stopped).ok());
    EXPECT_TRUE(stopped.workload().scrub().clean()) << stopped.workload().DebugString();
    ExpectNothingLeft(id);
    agent_->Kill9();
  }
  EXPECT_TRUE(absl::StrContains(agent_->log(), "resuming a start the agent's restart interrupted"));
  // Nobody retries: FAILED when the window ends, and reported like any failure.
  const std::string id = Id("wl-resume-expired");
  ASSERT_TRUE(agent_->Start("fault_crash_at: \"start.after_overlay\"\n").ok());
  v1::StartWorkloadResponse r;
  EXPECT_FALSE(Start("backend", ProbeSpec(id), &r).ok());
  ASSERT_TRUE(agent_->WaitForDeath(30));
  ASSERT_TRUE(agent_->Start("start_retry_window_seconds: 1\n").ok());
  v1::Workload w;
  for (int i = 0; i < 50; ++i) {
    w = Get(id);
    if (w.state() == v1::WORKLOAD_STATE_FAILED) break;
    absl::SleepFor(absl::Milliseconds(100));
  }
  EXPECT_EQ(w.state(), v1::WORKLOAD_STATE_FAILED) << w.DebugString();
  EXPECT_EQ(w.failure().reason(), "AGENT_RESTARTED_DURING_START");
  EXPECT_TRUE(absl::StrContains(w.failure().message(), "no StartWorkload retried it")) << w.DebugString();
  ExpectNothingLeft(id);
}

// (b) kill -9 with a workload running: the restarted agent re-adopts it (policy adopt) and can stop it
// cleanly; with policy cleanup it is stopped and scrubbed at restart.
TEST_F(DaemonTest, CrashWhileRunningAdoptsOrCleansUpPerPolicy) {
  ASSERT_TRUE(agent_->Start().ok());
  v1::StartWorkloadResponse r;
  ASSERT_TRUE(Start("backend", ProbeSpec(Id("wl-crash-run")), &r).ok());
  const int pid = r.workload().pid();
  agent_->Kill9();
  ASSERT_EQ(kill(pid, 0), 0) << "the container died with the agent";
  ASSERT_TRUE(agent_->Start().ok());
  v1::Workload w = Get(Id("wl-crash-run"));
  EXPECT_EQ(w.state(), v1::WORKLOAD_STATE_RUNNING) << w.DebugString();
  EXPECT_TRUE(w.adopted());
  EXPECT_EQ(w.pid(), pid);
  EXPECT_TRUE(absl::StrContains(agent_->log(), "reconcile: re-adopted running workload"));
  v1::StopWorkloadResponse stopped;
  ASSERT_TRUE(Stop("backend", Id("wl-crash-run"), &stopped).ok());
  EXPECT_EQ(stopped.workload().state(), v1::WORKLOAD_STATE_STOPPED) << stopped.workload().DebugString();
  EXPECT_TRUE(stopped.workload().scrub().clean());
  ExpectNothingLeft(Id("wl-crash-run"));

  ASSERT_TRUE(Start("backend", ProbeSpec(Id("wl-crash-run-2")), &r).ok());
  agent_->Kill9();
  ASSERT_TRUE(agent_->Start("reconcile_policy: \"cleanup\"\n").ok());
  w = Get(Id("wl-crash-run-2"));
  EXPECT_EQ(w.state(), v1::WORKLOAD_STATE_FAILED) << w.DebugString();
  EXPECT_EQ(w.failure().phase(), v1::FAILURE_PHASE_RECONCILE);
  EXPECT_TRUE(w.scrub().clean()) << w.DebugString();
  ExpectNothingLeft(Id("wl-crash-run-2"));
}

// (c) kill -9 mid-stop: the restarted agent completes the stop.
TEST_F(DaemonTest, CrashMidStopCompletesAfterRestart) {
  int n = 0;
  for (const char* point : {"stop.after_mark", "stop.after_kill", "stop.after_network"}) {
    SCOPED_TRACE(point);
    const std::string id = absl::StrCat(Id("wl-crash-stop-"), n++);
    ASSERT_TRUE(agent_->Start(absl::StrCat("fault_crash_at: \"", point, "\"\n")).ok());
    v1::StartWorkloadResponse r;
    ASSERT_TRUE(Start("backend", ProbeSpec(id), &r).ok());
    v1::StopWorkloadResponse stopped;
    EXPECT_FALSE(Stop("backend", id, &stopped).ok());
    ASSERT_TRUE(agent_->WaitForDeath(30));
    ASSERT_TRUE(agent_->Start().ok());
    v1::Workload w = Get(id);
    EXPECT_EQ(w.state(), v1::WORKLOAD_STATE_STOPPED) << w.DebugString();
    EXPECT_EQ(w.stop_reason(), v1::STOP_REASON_JOB_ENDED);
    EXPECT_TRUE(w.scrub().clean()) << w.DebugString();
    ExpectNothingLeft(id);
    agent_->Kill9();
  }
  EXPECT_TRUE(absl::StrContains(agent_->log(), "reconcile: completing an interrupted stop"));
}

}  // namespace
}  // namespace strongroom::host_agent::testing
