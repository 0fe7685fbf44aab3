// vm-controller's Local Slurm adapter against a real Local Slurm with dynamic nodes (tests/rig/slurm_cluster.h):
// find a job by its tag, move it from the wait partition to its dynamic node's feature and partition, release it,
// list and delete the node, refuse a job with its reason in the Comment.
#include "services/vm_controller/local_slurm.h"

#include <fcntl.h>
#include <sched.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "services/vm_controller/controller.h"
#include "tests/rig/slurm_cluster.h"

namespace strongroom::vm_controller {
namespace {

constexpr const char* kControllerIp = "198.51.100.40";
constexpr const char* kClientIp = "198.51.100.41";
constexpr const char* kWorkloadIp = "198.51.100.42";

class LocalSlurmTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (geteuid() != 0) return;
    absl::StatusOr<std::unique_ptr<Rig>> rig = Rig::Create(SR_RIG_SH);
    ASSERT_TRUE(rig.ok()) << rig.status();
    rig_ = rig->release();
    ASSERT_TRUE(rig_->AddHost("client", absl::StrCat(kClientIp, "/24")).ok());
    ASSERT_TRUE(rig_->AddHost("wl", absl::StrCat(kWorkloadIp, "/24")).ok());
    SlurmClusterOptions options;
    options.cluster_name = "local";
    options.controller_host = "lctl";
    options.controller_ip = kControllerIp;
    options.dynamic_nodes = true;
    options.extra_config = {"PartitionName=wait MaxTime=INFINITE State=UP"};  // no nodes: job_submit.lua's hold
    absl::StatusOr<std::unique_ptr<SlurmCluster>> cluster =
        SlurmCluster::Start(rig_, rig_->state_dir() + "/local", options);
    ASSERT_TRUE(cluster.ok()) << cluster.status();
    cluster_ = cluster->release();
    // The adapter runs the Slurm CLIs from this process, so the process joins the client host's network (and
    // leaves it before teardown, which kills whatever is still inside the rig's namespaces).
    own_netns_ = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
    ASSERT_GE(own_netns_, 0);
    const int fd = open(("/run/netns/" + rig_->Netns("client")).c_str(), O_RDONLY | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(setns(fd, CLONE_NEWNET), 0);
    close(fd);
  }
  static void TearDownTestSuite() {
    if (own_netns_ >= 0) {
      setns(own_netns_, CLONE_NEWNET);
      close(own_netns_);
    }
    delete cluster_;
    delete rig_;
  }
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "a real Slurm cluster in the rig needs root";
    ASSERT_NE(cluster_, nullptr);
    LocalSlurmCliOptions options;
    options.slurm_conf = cluster_->conf();
    slurm_ = MakeLocalSlurmCli(options);
  }

  // Submits a held exclusive job tagged like job_submit.lua does; returns its tag.
  std::string Submit(const std::string& token) {
    absl::StatusOr<Rig::ExecResult> r = cluster_->Command(
        "client", {"sbatch", "--exclusive", "--hold", "--partition=wait",
                   "--comment=" + CommentTag(token) + " users note",
                   "--output=/dev/null", "--wrap", "sleep 1"});
    EXPECT_TRUE(r.ok() && r->exit_code == 0) << (r.ok() ? r->output : r.status().ToString());
    return CommentTag(token);
  }

  absl::StatusOr<SlurmJob> WaitForState(uint32_t id, const std::string& state, absl::Duration timeout) {
    const absl::Time deadline = absl::Now() + timeout;
    absl::StatusOr<SlurmJob> job = slurm_->ShowJob(id);
    while (absl::Now() < deadline && (!job.ok() || job->state != state)) {
      absl::SleepFor(absl::Milliseconds(100));
      job = slurm_->ShowJob(id);
    }
    return job;
  }

  static Rig* rig_;
  static SlurmCluster* cluster_;
  static int own_netns_;
  std::unique_ptr<LocalSlurm> slurm_;
};

Rig* LocalSlurmTest::rig_ = nullptr;
SlurmCluster* LocalSlurmTest::cluster_ = nullptr;
int LocalSlurmTest::own_netns_ = -1;

TEST_F(LocalSlurmTest, PinReleaseRunAndDeleteTheDynamicNode) {
  const std::string token = "5e1f0000-0000-4000-8000-00000000000a";
  const std::string tag = Submit(token);
  absl::StatusOr<std::optional<uint32_t>> id = slurm_->FindJobByComment(tag);
  ASSERT_TRUE(id.ok()) << id.status();
  ASSERT_TRUE(id->has_value());
  const uint32_t job_id = **id;
  absl::StatusOr<SlurmJob> job = slurm_->ShowJob(job_id);
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_TRUE(job->exclusive);
  EXPECT_EQ(job->state, "PENDING");
  EXPECT_EQ(job->priority, 0);
  EXPECT_EQ(job->user, "root");
  EXPECT_EQ(job->partition, "wait");
  EXPECT_EQ(EligibilityOf(*job, absl::Now()), Eligibility::kHeld);

  // The workload's slurmd joins as a dynamic node carrying the token feature.
  const std::string node = "wl-a";
  std::filesystem::create_directories(cluster_->conf().substr(0, cluster_->conf().rfind('/')) + "/spool/" + node);
  absl::StatusOr<pid_t> slurmd = rig_->Spawn(
      "wl", rig_->state_dir() + "/slurmd-wl.log",
      {"/usr/bin/env", "-i", "SLURM_CONF=" + cluster_->conf(), "/usr/sbin/slurmd", "-D", "-Z", "-N", node, "--conf",
       absl::StrCat("CPUs=2 RealMemory=1000 Features=dyn,", token, " NodeAddr=", kWorkloadIp)});
  ASSERT_TRUE(slurmd.ok()) << slurmd.status();
  absl::StatusOr<std::optional<std::string>> state;
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  do {
    absl::SleepFor(absl::Milliseconds(100));
    state = slurm_->NodeState(node);
  } while (absl::Now() < deadline && !(state.ok() && state->has_value()));
  ASSERT_TRUE(state.ok() && state->has_value()) << "dynamic node never registered";
  absl::StatusOr<std::vector<SlurmNode>> nodes = slurm_->ListNodes();
  ASSERT_TRUE(nodes.ok()) << nodes.status();
  ASSERT_EQ(nodes->size(), 1u);
  EXPECT_EQ((*nodes)[0].name, node);
  EXPECT_EQ((*nodes)[0].features, "dyn," + token);
  EXPECT_TRUE(absl::StrContains((*nodes)[0].state, "DYNAMIC")) << (*nodes)[0].state;

  absl::Status pinned = slurm_->PinAndRelease(job_id, token, "batch");
  ASSERT_TRUE(pinned.ok()) << pinned;
  absl::StatusOr<SlurmJob> done = WaitForState(job_id, "COMPLETED", absl::Seconds(30));
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_EQ(done->state, "COMPLETED");
  EXPECT_EQ(done->node_list, node);

  absl::Status deleted = slurm_->DeleteNode(node);
  for (int i = 0; i < 100 && !deleted.ok(); ++i) {
    absl::SleepFor(absl::Milliseconds(100));
    deleted = slurm_->DeleteNode(node);
  }
  EXPECT_TRUE(deleted.ok()) << deleted;
  EXPECT_FALSE(slurm_->NodeState(node)->has_value());
  EXPECT_TRUE(rig_->Stop(*slurmd).ok());
}

TEST_F(LocalSlurmTest, RefusedJobIsCancelledWithItsReasonInTheComment) {
  const std::string token = "5e1f0000-0000-4000-8000-00000000000c";
  const std::string tag = Submit(token);
  absl::StatusOr<std::optional<uint32_t>> id = slurm_->FindJobByComment(tag);
  ASSERT_TRUE(id.ok() && id->has_value());
  absl::StatusOr<std::vector<LocalSlurm::QueuedJob>> waiting = slurm_->PendingJobsIn("wait");
  ASSERT_TRUE(waiting.ok()) << waiting.status();
  bool listed = false;
  for (const LocalSlurm::QueuedJob& q : *waiting) {
    if (q.job_id != **id) continue;
    listed = true;
    EXPECT_EQ(q.comment, tag + " users note");
    EXPECT_LT(absl::AbsDuration(absl::Now() - q.submitted), absl::Minutes(1));
  }
  EXPECT_TRUE(listed);
  ASSERT_TRUE(slurm_->RefuseJob(**id, tag + " refused by the enclave: GLOBAL_JOB_REFUSED: no such project").ok());
  absl::StatusOr<SlurmJob> job = WaitForState(**id, "CANCELLED", absl::Seconds(10));
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->comment, tag + " refused by the enclave: GLOBAL_JOB_REFUSED: no such project");
  EXPECT_EQ(slurm_->FindJobByComment(tag).value(), std::optional<uint32_t>(**id));
}

TEST_F(LocalSlurmTest, ARefusedJobsReasonIsAppendedToItsOutputAsItsUser) {
  char pattern[] = "/tmp/strongroom-refused-output-XXXXXX";
  ASSERT_NE(mkdtemp(pattern), nullptr);
  const std::string dir = pattern;
  ASSERT_EQ(chmod(dir.c_str(), 0755), 0);
  ASSERT_EQ(chown(dir.c_str(), 65534, 65534), 0);
  const std::string tag = CommentTag("5e1f0000-0000-4000-8000-00000000000d");
  absl::StatusOr<Rig::ExecResult> r = cluster_->Command(
      // The rig's slurm.conf is root's only; root submits on the user's behalf (sbatch --uid).
      "client", {"sbatch", "--uid=65534", "--gid=65534", "--exclusive", "--hold",
                 "--partition=wait", "--comment=" + tag, "--chdir=" + dir, "--output=" + dir + "/slurm-%j.out",
                 "--wrap", "sleep 1"});
  ASSERT_TRUE(r.ok() && r->exit_code == 0) << (r.ok() ? r->output : r.status().ToString());
  absl::StatusOr<std::optional<uint32_t>> id = slurm_->FindJobByComment(tag);
  ASSERT_TRUE(id.ok() && id->has_value());
  ASSERT_TRUE(slurm_->RefuseJob(**id, tag + " refused by the enclave: NOT_PINNED: moved by someone else").ok());
  ASSERT_TRUE(WaitForState(**id, "CANCELLED", absl::Seconds(10)).ok());
  const std::string output_path = absl::StrCat(dir, "/slurm-", **id, ".out");
  std::ifstream in(output_path);
  std::stringstream text;
  text << in.rdbuf();
  EXPECT_EQ(text.str(), absl::StrCat("strongroom: job ", **id,
                                     " was refused by the secure enclave: NOT_PINNED: moved by someone else\n"));
  struct stat st;
  ASSERT_EQ(stat(output_path.c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 65534u);
  std::filesystem::remove_all(dir);
}

TEST_F(LocalSlurmTest, CancelAPendingJobAndUnknownIds) {
  const std::string tag = Submit("5e1f0000-0000-4000-8000-00000000000b");
  absl::StatusOr<std::optional<uint32_t>> id = slurm_->FindJobByComment(tag);
  ASSERT_TRUE(id.ok() && id->has_value());
  ASSERT_TRUE(slurm_->CancelJob(**id).ok());
  absl::StatusOr<SlurmJob> job = WaitForState(**id, "CANCELLED", absl::Seconds(10));
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_TRUE(job->IsTerminal());
  EXPECT_TRUE(slurm_->CancelJob(**id).ok());  // idempotent
  EXPECT_EQ(slurm_->ShowJob(999999).status().code(), absl::StatusCode::kNotFound);
  EXPECT_FALSE(slurm_->FindJobByComment("strongroom:no-such-token")->has_value());
  EXPECT_FALSE(slurm_->NodeState("never-registered")->has_value());
}

}  // namespace
}  // namespace strongroom::vm_controller
