// deploy/slurm/job_submit.lua in a real Local Slurm (tests/rig/slurm_cluster.h, JobSubmitPlugins=lua) with
// the real strongroom-submit-check: which shapes it accepts (whole-node --exclusive for a container; no
// --exclusive,
// --exclusive=user and =mcs for a VM, issue 15), what it tells the hook (--exclusive 1|0), and which shapes
// it refuses, with the message the user reads. The hook is a stand-in that records its arguments.
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "services/vm_controller/slurm_records.h"
#include "tests/rig/slurm_cluster.h"

namespace strongroom::vm_controller {
namespace {

constexpr const char* kControllerIp = "198.51.100.40";
constexpr const char* kClientIp = "198.51.100.41";
constexpr const char* kRigRoot = "/tmp/strongroom-submit-lua";

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

class SubmitLuaTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (geteuid() != 0) return;
    // Its own rig root, traversable (0711) like the state directory: nobody's scontrol reads the Local
    // slurm.conf below it (the update refusals).
    std::filesystem::create_directories(kRigRoot);
    ASSERT_EQ(chmod(kRigRoot, 0711), 0);
    absl::StatusOr<std::unique_ptr<Rig>> rig = Rig::Create(SR_RIG_SH, kRigRoot);
    ASSERT_TRUE(rig.ok()) << rig.status();
    rig_ = rig->release();
    ASSERT_EQ(chmod(rig_->state_dir().c_str(), 0711), 0);
    ASSERT_TRUE(rig_->AddHost("client", absl::StrCat(kClientIp, "/24")).ok());
    const std::string dir = rig_->state_dir() + "/local";
    SlurmClusterOptions options;
    options.cluster_name = "local";
    options.controller_host = "lctl";
    options.controller_ip = kControllerIp;
    options.dynamic_nodes = true;
    options.files = {{"job_submit.lua", SR_SOURCE_DIR "/deploy/slurm/job_submit.lua"}};
    options.extra_config = {"JobSubmitPlugins=lua", "JobRequeue=0",
                            "PartitionName=wait MaxTime=INFINITE State=UP"};
    absl::StatusOr<std::unique_ptr<SlurmCluster>> cluster = SlurmCluster::Start(rig_, dir, options);
    ASSERT_TRUE(cluster.ok()) << cluster.status();
    cluster_ = cluster->release();
    // The hook stand-in: one line of arguments per job.
    hook_log_ = rig_->state_dir() + "/hook.log";
    const std::string hook = rig_->state_dir() + "/hook.sh";
    std::ofstream(hook) << "#!/bin/sh\necho \"$*\" >> " << hook_log_ << "\n";
    std::filesystem::permissions(hook, std::filesystem::perms::owner_all);
    std::ofstream(dir + "/strongroom-hook.conf")
        << "hook=" << hook << "\nconfig=/nonexistent.textproto\ncheck=" << SR_SUBMIT_CHECK_BIN
        << "\naccounts=proj1\ndefault_account=proj1\nmax_cpus=8\nmax_memory_mb=4000\nmax_time_minutes=1440\n";
    const std::string script = rig_->state_dir() + "/job.sh";
    std::ofstream(script) << "#!/bin/sh\nhostname\n";
    std::filesystem::permissions(script, std::filesystem::perms::all);
    const std::string het = rig_->state_dir() + "/het.sh";
    std::ofstream(het) << "#!/bin/sh\n#SBATCH -n1\n#SBATCH hetjob\n#SBATCH -n1\nhostname\n";
    std::filesystem::permissions(het, std::filesystem::perms::all);
  }
  static void TearDownTestSuite() {
    delete cluster_;
    delete rig_;
  }
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "a real Slurm cluster in the rig needs root";
    ASSERT_NE(cluster_, nullptr);
  }

  // sbatch as nobody (the rig's slurm.conf is root's only: root submits on the user's behalf, which the lua
  // sees as job_desc.user_id 65534).
  Rig::ExecResult Sbatch(std::vector<std::string> args, bool as_root = false) {
    std::vector<std::string> argv = {"sbatch", "--parsable", "--output=/dev/null", "--chdir=/tmp"};
    if (!as_root) argv.insert(argv.begin() + 1, {"--uid=65534", "--gid=65534"});
    argv.insert(argv.end(), args.begin(), args.end());
    absl::StatusOr<Rig::ExecResult> r = cluster_->Command("client", argv);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : Rig::ExecResult{-1, ""};
  }

  // The job as vm-controller reads it (scontrol show job -o, slurm_records.h).
  SlurmJob Show(uint32_t id) {
    absl::StatusOr<Rig::ExecResult> r =
        cluster_->Command("client", {"scontrol", "show", "job", "-o", absl::StrCat(id)});
    EXPECT_TRUE(r.ok() && r->exit_code == 0) << (r.ok() ? r->output : r.status().ToString());
    absl::StatusOr<SlurmJob> job = ParseScontrolJob(r.ok() ? r->output : "");
    EXPECT_TRUE(job.ok()) << job.status();
    return job.ok() ? *job : SlurmJob{};
  }

  // The hook's arguments for the job tagged `comment` (waits: the lua starts it in the background).
  std::string HookArgs(const std::string& comment) {
    const std::string token = comment.substr(comment.find(':') + 1, 36);
    const absl::Time deadline = absl::Now() + absl::Seconds(10);
    while (absl::Now() < deadline) {
      std::istringstream lines(ReadFile(hook_log_));
      for (std::string line; std::getline(lines, line);) {
        if (absl::StrContains(line, "--token " + token)) return line;
      }
      absl::SleepFor(absl::Milliseconds(50));
    }
    return "";
  }

  // Submits, expects acceptance into the wait partition, returns the job as Slurm records it and the hook's
  // arguments, then cancels it.
  std::pair<SlurmJob, std::string> Accepted(const std::vector<std::string>& args, bool cancel = true) {
    Rig::ExecResult r = Sbatch(args);
    EXPECT_EQ(r.exit_code, 0) << absl::StrJoin(args, " ") << ": " << r.output;
    uint32_t id = 0;
    if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(r.output), &id)) return {};
    SlurmJob job = Show(id);
    EXPECT_EQ(job.partition, "wait") << absl::StrJoin(args, " ");
    EXPECT_TRUE(absl::StartsWith(job.comment, "strongroom:")) << job.comment;
    EXPECT_EQ(job.account, "proj1");
    std::string hook = HookArgs(job.comment);
    EXPECT_FALSE(hook.empty()) << "the hook was not started for " << absl::StrJoin(args, " ");
    if (cancel) (void)cluster_->Command("client", {"scancel", absl::StrCat(id)});
    return {job, hook};
  }

  void Refused(const std::vector<std::string>& args, const std::string& message, bool as_root = false) {
    Rig::ExecResult r = Sbatch(args, as_root);
    EXPECT_NE(r.exit_code, 0) << absl::StrJoin(args, " ") << ": " << r.output;
    EXPECT_TRUE(absl::StrContains(r.output, message)) << absl::StrJoin(args, " ") << ": " << r.output;
  }

  // scontrol as the job's user (nobody) on the client host.
  Rig::ExecResult AsUser(const std::vector<std::string>& args) {
    std::vector<std::string> argv = {"/usr/sbin/runuser",
                                     "-u",
                                     "nobody",
                                     "--",
                                     "/usr/bin/env",
                                     "-i",
                                     "PATH=/usr/bin:/bin",
                                     "SLURM_CONF=" + cluster_->conf()};
    argv.insert(argv.end(), args.begin(), args.end());
    absl::StatusOr<Rig::ExecResult> r = rig_->Exec("client", argv, absl::Seconds(20));
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : Rig::ExecResult{-1, ""};
  }

  static std::string Script() { return rig_->state_dir() + "/job.sh"; }

  static Rig* rig_;
  static SlurmCluster* cluster_;
  static std::string hook_log_;
};

Rig* SubmitLuaTest::rig_ = nullptr;
SlurmCluster* SubmitLuaTest::cluster_ = nullptr;
std::string SubmitLuaTest::hook_log_;

TEST_F(SubmitLuaTest, ANonExclusiveSingleNodeJobIsAcceptedForAVm) {
  auto [job, hook] = Accepted({"-n1", "-c", "2", "--mem=1000M", "--time=10", Script()});
  EXPECT_FALSE(job.exclusive);  // OverSubscribe=OK: what vm-controller reads
  EXPECT_EQ(job.num_cpus, 2u);
  EXPECT_EQ(job.memory_bytes_per_node, uint64_t{1000} << 20);
  EXPECT_TRUE(absl::StrContains(hook, "--exclusive 0")) << hook;
  EXPECT_TRUE(absl::StrContains(hook, "--cpus 2")) << hook;
  // Not even -n: a one-CPU VM.
  auto [bare, bare_hook] = Accepted({Script()});
  EXPECT_FALSE(bare.exclusive);
  EXPECT_TRUE(absl::StrContains(bare_hook, "--exclusive 0")) << bare_hook;
}

TEST_F(SubmitLuaTest, WholeNodeExclusiveIsAContainerAndUserOrMcsExclusiveAVm) {
  auto [exclusive, exclusive_hook] = Accepted({"--exclusive", Script()});
  EXPECT_TRUE(exclusive.exclusive);  // OverSubscribe=NO
  EXPECT_TRUE(absl::StrContains(exclusive_hook, "--exclusive 1")) << exclusive_hook;
  // --exclusive=user / =mcs let the node be shared (with the same user's or MCS label's jobs): not the whole
  // node, so a VM, and the Local Slurm's record agrees (OverSubscribe=USER / MCS).
  for (const char* flag : {"--exclusive=user", "--exclusive=mcs", "--oversubscribe"}) {
    auto [job, hook] = Accepted({flag, "-n1", Script()});
    EXPECT_FALSE(job.exclusive) << flag;
    EXPECT_TRUE(absl::StrContains(hook, "--exclusive 0")) << flag << ": " << hook;
  }
}

// slurm_job_modify: the user can change neither kind (OverSubscribe, i.e. --exclusive) nor size of either
// kind.
TEST_F(SubmitLuaTest, TheUserCannotChangeExclusivityOrSizeOfEitherKind) {
  for (bool exclusive : {false, true}) {
    std::vector<std::string> args = {"-n1", "--mem=500M", Script()};
    if (exclusive) args.insert(args.begin(), "--exclusive");
    auto [job, hook] = Accepted(args, /*cancel=*/false);
    ASSERT_NE(job.job_id, 0u);
    const std::string id = absl::StrCat("jobid=", job.job_id);
    for (const std::string& change :
         {std::string(exclusive ? "OverSubscribe=YES" : "OverSubscribe=NO"), std::string("NumCPUs=4"),
          std::string("MinMemoryNode=2000"), std::string("NumNodes=2")}) {
      Rig::ExecResult r = AsUser({"/usr/bin/scontrol", "update", id, change});
      EXPECT_NE(r.exit_code, 0) << change << " (exclusive " << exclusive << "): " << r.output;
      // The lua's refusal, as Slurm shows a job_modify error to scontrol (docs/VM_CONTROLLER.md, "Pinning");
      // any other change of a job in the node-less wait partition fails with "Requested partition
      // configuration not available now" instead, so this message proves the lua refused it.
      EXPECT_TRUE(absl::StrContains(r.output, "Unspecified error")) << change << ": " << r.output;
    }
    const SlurmJob after = Show(job.job_id);
    EXPECT_EQ(after.exclusive, exclusive);
    EXPECT_EQ(after.num_cpus, 1u);
    EXPECT_EQ(after.memory_bytes_per_node, uint64_t{500} << 20);
    (void)cluster_->Command("client", {"scancel", absl::StrCat(job.job_id)});
  }
}

TEST_F(SubmitLuaTest, EveryOtherShapeIsStillRefused) {
  const std::string script = Script();
  Refused({"-N", "2", script}, "Multi-node jobs are not supported yet");
  Refused({"--exclusive", "-N", "2", script}, "Multi-node jobs are not supported yet");
  Refused({"--array=1-3", script}, "job arrays are not supported");
  Refused({rig_->state_dir() + "/het.sh"}, "heterogeneous jobs are not supported: submit each component");
  Refused({"--nodelist=wl-x", script}, "--nodelist/-w is not allowed");
  Refused({"--constraint=strongroom", script}, "--constraint/-C is not allowed");
  Refused({"--reservation=r1", script}, "--reservation is not allowed");
  Refused({"--partition=wait", script}, "partition \"wait\" is not allowed");
  Refused({"--requeue", script}, "--requeue is not supported");
  Refused({"-A", "nosuchproject", script}, "unknown account \"nosuchproject\"");
  Refused({"-c", "64", script}, "this enclave's nodes have at most 8");
  Refused({"--time=3-00:00:00", script}, "this enclave allows at most 1440 minutes");
  Refused({"--mem=64000", "--exclusive", script}, "this enclave's nodes have at most 4000 MB");
  // A VM needs 384 MB for its guest OS besides the job's memory; the whole node does not.
  Refused({"--mem=3700", script},
          "a job without --exclusive runs in a secure VM that needs 384 MB more, and this enclave's nodes "
          "have at "
          "most 4000 MB. Resubmit with --mem=3616M or less, or with --exclusive");
  Refused({script}, "jobs of root are not run in secure workloads", /*as_root=*/true);
  auto [big, hook] = Accepted({"--mem=3700", "--exclusive", script});
  EXPECT_TRUE(big.exclusive);
  // salloc outside a batch job (as root on the user's behalf, as sbatch above).
  absl::StatusOr<Rig::ExecResult> salloc = cluster_->Command(
      "client", {"salloc", "--uid=65534", "--gid=65534", "-n1", "/bin/true"}, absl::Seconds(20));
  ASSERT_TRUE(salloc.ok()) << salloc.status();
  EXPECT_NE(salloc->exit_code, 0);
  EXPECT_TRUE(absl::StrContains(salloc->output, "submit it with sbatch (srun inside that script works)"))
      << salloc->output;
  absl::StatusOr<Rig::ExecResult> queue =
      cluster_->Command("client", {"squeue", "-h", "-t", "PENDING,RUNNING"});
  ASSERT_TRUE(queue.ok());
  EXPECT_EQ(absl::StripAsciiWhitespace(queue->output), "") << "a refused job was queued";
}

}  // namespace
}  // namespace strongroom::vm_controller
