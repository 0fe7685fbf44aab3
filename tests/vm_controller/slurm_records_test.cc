#include "services/vm_controller/slurm_records.h"

#include "gtest/gtest.h"

namespace strongroom::vm_controller {
namespace {

// A held --exclusive job as Slurm 22.05's `scontrol show job -o` prints it.
constexpr const char* kHeldJob =
    "JobId=7 JobName=job.sh UserId=alice(1001) GroupId=alice(1002) MCS_label=N/A Priority=0 Nice=0 Account=proj-a "
    "QOS=normal JobState=PENDING Reason=JobHeldAdmin Dependency=(null) Requeue=0 Restarts=0 BatchFlag=1 Reboot=0 "
    "ExitCode=0:0 RunTime=00:00:00 TimeLimit=01:30:00 TimeMin=N/A SubmitTime=2026-11-22T13:00:00 "
    "AllocNode:Sid=ctl:123 ReqNodeList=(null) ExcNodeList=(null) NodeList=(null) NumNodes=1-1 NumCPUs=2 NumTasks=1 "
    "CPUs/Task=1 ReqB:S:C:T=0:0:*:* TRES=cpu=2,mem=200M,node=1,billing=2 Socks/Node=* MinCPUsNode=1 "
    "MinMemoryCPU=100M MinTmpDiskNode=0 Features=(null) DelayBoot=00:00:00 OverSubscribe=NO Contiguous=0 "
    "Licenses=(null) Network=(null) Command=/home/alice/my job.sh WorkDir=/home/alice "
    "Comment=strongroom:0a1b2c3d-4e5f the user's note StdErr=/home/alice/slurm-7.out Power=";

TEST(ScontrolJob, ParsesAHeldExclusiveJob) {
  absl::StatusOr<SlurmJob> job = ParseScontrolJob(kHeldJob);
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->job_id, 7u);
  EXPECT_EQ(job->state, "PENDING");
  EXPECT_EQ(job->reason, "JobHeldAdmin");
  EXPECT_EQ(job->user, "alice");
  EXPECT_EQ(job->uid, 1001u);
  EXPECT_EQ(job->gid, 1002u);
  EXPECT_EQ(job->account, "proj-a");
  EXPECT_EQ(job->num_nodes, 1u);
  EXPECT_EQ(job->num_cpus, 2u);
  EXPECT_EQ(job->time_limit_seconds, 5400);
  EXPECT_EQ(job->memory_bytes_per_node, 200ull << 20);  // 100M per CPU x 2 CPUs
  EXPECT_TRUE(job->exclusive);
  EXPECT_EQ(job->priority, 0);
  EXPECT_EQ(job->comment, "strongroom:0a1b2c3d-4e5f the user's note");
  EXPECT_TRUE(job->IsPending());
  EXPECT_FALSE(job->IsTerminal());
}

TEST(ScontrolJob, ValuesWithSpacesEndAtTheNextKey) {
  std::map<std::string, std::string> f = ParseKeyValues(kHeldJob);
  EXPECT_EQ(f["Command"], "/home/alice/my job.sh");
  EXPECT_EQ(f["Power"], "");
}

TEST(ScontrolJob, RejectsGarbage) {
  EXPECT_FALSE(ParseScontrolJob("slurm_load_jobs error: Invalid job id specified").ok());
  EXPECT_FALSE(ParseScontrolJob("JobId=5 UserId=nobody").ok());
}

TEST(SlurmDuration, Formats) {
  EXPECT_EQ(*ParseSlurmDuration("UNLIMITED"), 0);
  EXPECT_EQ(*ParseSlurmDuration("05:00"), 300);
  EXPECT_EQ(*ParseSlurmDuration("02:03:04"), 7384);
  EXPECT_EQ(*ParseSlurmDuration("1-00:00:01"), 86401);
  EXPECT_FALSE(ParseSlurmDuration("1:2:3:4").ok());
  EXPECT_FALSE(ParseSlurmDuration("ab:cd").ok());
}

TEST(SlurmMemory, Units) {
  EXPECT_EQ(*ParseSlurmMemory("512"), 512ull << 20);
  EXPECT_EQ(*ParseSlurmMemory("2G"), 2ull << 30);
  EXPECT_EQ(*ParseSlurmMemory("1T"), 1ull << 40);
  EXPECT_FALSE(ParseSlurmMemory("lots").ok());
}

TEST(Squeue, FindsTheJobByItsTag) {
  const char* out = "5|(null)\n6|strongroom:aaaaaaaa-1 note\n7|strongroom:aaaaaaaa-2\n";
  EXPECT_EQ(FindJobIdByComment(out, "strongroom:aaaaaaaa-2"), 7u);
  EXPECT_EQ(FindJobIdByComment(out, "strongroom:aaaaaaaa-1"), 6u);
  EXPECT_FALSE(FindJobIdByComment(out, "strongroom:aaaaaaaa").has_value());
}

TEST(ScontrolNode, State) {
  EXPECT_EQ(*ParseNodeState("NodeName=wl-1 Arch=x86_64 CoresPerSocket=1 State=IDLE+DYNAMIC_NORM ThreadsPerCore=1"),
            "IDLE+DYNAMIC_NORM");
  EXPECT_FALSE(ParseNodeState("Node wl-9 not found").ok());
}

}  // namespace
}  // namespace strongroom::vm_controller
