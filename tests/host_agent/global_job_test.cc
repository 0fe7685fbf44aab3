// deploy/slurm/global-job.sh and strongroom-global-job against the real host-agent daemon, as Global Slurm
// would run them: the job's exit status reflects the workload's, SIGTERM (scancel, time limit) stops the
// workload, and a stop by backend ends the job normally. Slurm itself is not needed for this contract (issue
// 6 runs the whole path).
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>

#include <fstream>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "common/subprocess.h"
#include "tests/host_agent/daemon_fixture.h"
#include "tests/host_agent/test_env.h"

namespace strongroom::host_agent::testing {
namespace {

class GlobalJobTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(geteuid(), 0u);
    auto d = AgentDaemon::Create();
    ASSERT_TRUE(d.ok()) << d.status();
    agent_ = std::move(*d);
    ASSERT_TRUE(agent_->Start().ok()) << agent_->log();
    const std::string pki = agent_->dir() + "/pki";
    conf_ = agent_->dir() + "/global-job.conf";
    std::ofstream(conf_) << "SR_AGENT=127.0.0.1:" << agent_->port() << "\nSR_TRUST_DOMAIN=strongroom.test\n"
                         << "SR_CA=" << pki << "/ca.pem\nSR_CERT=" << pki << "/global-job-node-a.pem\n"
                         << "SR_KEY=" << pki << "/global-job-node-a.key\nSR_NODE=node-a\nSR_STOP_GRACE=5\n"
                         << "SR_CLIENT="
                         << (std::getenv("STRONGROOM_TEST_OLD_GLOBAL_JOB_BIN") != nullptr
                                 ? std::getenv(
                                       "STRONGROOM_TEST_OLD_GLOBAL_JOB_BIN")  // "fails without the fix"
                                 : SR_GLOBAL_JOB_BIN)
                         << "\n";
  }
  void TearDown() override {
    if (HasFailure())
      std::fprintf(stderr, "%s\n--- job output ---\n%s\n", agent_->log().c_str(), Output().c_str());
    agent_.reset();
  }

  // Starts the script like slurmstepd would, with the environment backend exports.
  pid_t StartJob(const v1::WorkloadSpec& spec) {
    setenv("STRONGROOM_GLOBAL_JOB_CONF", conf_.c_str(), 1);
    setenv("SR_WORKLOAD_SPEC", absl::Base64Escape(spec.SerializeAsString()).c_str(), 1);
    setenv("SR_WORKLOAD_ID", spec.workload_id().c_str(), 1);
    auto pid = Spawn({SR_GLOBAL_JOB_SH}, agent_->dir() + "/job.out");
    EXPECT_TRUE(pid.ok()) << pid.status();
    return pid.ok() ? *pid : 0;
  }
  int WaitJob(pid_t pid) { return WaitChild(pid); }
  std::string Output() { return ReadFile(agent_->dir() + "/job.out"); }
  v1::Workload Get(const std::string& id) {
    grpc::ClientContext ctx;
    v1::GetWorkloadRequest req;
    req.set_workload_id(id);
    v1::GetWorkloadResponse resp;
    (void)agent_->Stub("operator")->GetWorkload(&ctx, req, &resp);
    return resp.workload();
  }
  void WaitRunning(const std::string& id) {
    for (int i = 0; i < 300 && Get(id).state() != v1::WORKLOAD_STATE_RUNNING; ++i)
      absl::SleepFor(absl::Milliseconds(20));
    ASSERT_EQ(Get(id).state(), v1::WORKLOAD_STATE_RUNNING) << Output();
  }

  std::unique_ptr<AgentDaemon> agent_;
  std::string conf_;
};

TEST_F(GlobalJobTest, ExitStatusReflectsTheWorkload) {
  v1::WorkloadSpec spec = ProbeSpec(Id("wl-gj-exit3"));
  spec.mutable_image()->set_name("exit3");
  const pid_t job = StartJob(spec);
  EXPECT_EQ(WaitJob(job), 3) << Output();
  EXPECT_EQ(Get(Id("wl-gj-exit3")).state(), v1::WORKLOAD_STATE_FAILED);
  EXPECT_EQ(Leftovers(agent_->state_dir(), Id("wl-gj-exit3"), agent_->runc_root()),
            std::vector<std::string>{});
}

TEST_F(GlobalJobTest, SigtermStopsTheWorkload) {
  const pid_t job = StartJob(ProbeSpec(Id("wl-gj-term")));
  WaitRunning(Id("wl-gj-term"));
  ASSERT_EQ(kill(job, SIGTERM), 0);
  EXPECT_EQ(WaitJob(job), 128 + SIGTERM) << Output();
  v1::Workload w = Get(Id("wl-gj-term"));
  EXPECT_EQ(w.state(), v1::WORKLOAD_STATE_STOPPED) << w.DebugString();
  EXPECT_EQ(w.stop_reason(), v1::STOP_REASON_JOB_CANCELLED);
  EXPECT_EQ(Leftovers(agent_->state_dir(), Id("wl-gj-term"), agent_->runc_root()),
            std::vector<std::string>{});
}

TEST_F(GlobalJobTest, StopByBackendEndsTheJobNormally) {
  const pid_t job = StartJob(ProbeSpec(Id("wl-gj-backend")));
  WaitRunning(Id("wl-gj-backend"));
  grpc::ClientContext ctx;
  v1::StopWorkloadRequest req;
  req.set_workload_id(Id("wl-gj-backend"));
  req.set_reason(v1::STOP_REASON_JOB_ENDED);
  v1::StopWorkloadResponse resp;
  ASSERT_TRUE(agent_->Stub("backend")->StopWorkload(&ctx, req, &resp).ok());
  EXPECT_EQ(WaitJob(job), 0) << Output();
  EXPECT_EQ(Leftovers(agent_->state_dir(), Id("wl-gj-backend"), agent_->runc_root()),
            std::vector<std::string>{});
}

// The host-agent dies while StartWorkload runs (kill -9 at a fault point) and comes back: the global job's
// client retries the idempotent start across the restart, and the job runs and ends normally instead of
// failing.
TEST_F(GlobalJobTest, AHostAgentKilledDuringStartWorkloadStillRunsTheJob) {
  agent_->Kill9();
  ASSERT_TRUE(agent_->Start("fault_crash_at: \"start.after_network\"\n").ok());
  const std::string id = Id("wl-gj-restart");
  const pid_t job = StartJob(ProbeSpec(id));
  ASSERT_TRUE(agent_->WaitForDeath(30)) << "the fault point was not reached\n" << Output();
  absl::SleepFor(absl::Seconds(1));  // the agent's restart takes a while (systemd restarts it in production)
  ASSERT_TRUE(agent_->Start().ok());
  WaitRunning(id);
  EXPECT_TRUE(absl::StrContains(Output(), "retrying")) << Output();
  EXPECT_FALSE(Get(id).adopted());  // started again from scratch, not adopted half-done
  grpc::ClientContext ctx;
  v1::StopWorkloadRequest req;
  req.set_workload_id(id);
  req.set_reason(v1::STOP_REASON_JOB_ENDED);
  v1::StopWorkloadResponse resp;
  ASSERT_TRUE(agent_->Stub("backend")->StopWorkload(&ctx, req, &resp).ok());
  EXPECT_EQ(WaitJob(job), 0) << Output();
  EXPECT_EQ(Leftovers(agent_->state_dir(), id, agent_->runc_root()), std::vector<std::string>{});
}

}  // namespace
}  // namespace strongroom::host_agent::testing
