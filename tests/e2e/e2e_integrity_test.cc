// Local Slurm job integrity (issue 12), on the whole real path (tests/e2e/e2e_stack.h), as an ordinary user:
//   - every submission shape is either run or refused at submit with a message saying what to do instead;
//   - --hold, --begin and --dependency take no Global node before the local job could run; a dependency that
//   can
//     never be satisfied cancels the job with the reason in its Comment;
//   - no job reaches another job's dynamic node by any means a user has (release, updates of its features,
//     partition, nodelist or reservation, --nodelist, --constraint, an account the enclave refuses);
//   - killing host-agent and netd during a job and restarting them, in both orders, leaves no dynamic node.
// docs/VM_CONTROLLER.md ("Submission shapes", "Pinning") states what each case must do.
#include <sys/stat.h>
#include <unistd.h>

#include <set>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "tests/e2e/e2e_jobs.h"
#include "tests/e2e/e2e_suite.h"

namespace strongroom::e2e {
namespace {

class IntegrityTest : public E2eSuite<IntegrityTest> {
 protected:
  void SetUp() override {
    E2eSuite::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    dir_ = *stack_->UserDir(kUser);
  }

  // sbatch as the user; returns its output (exit code in *exit_code).
  CommandResult Sbatch(std::vector<std::string> args) {
    std::vector<std::string> argv = {"sbatch", "--parsable", "--chdir=" + dir_, "--output=/dev/null"};
    argv.insert(argv.end(), args.begin(), args.end());
    return stack_->Local(kUser, argv);
  }

  // One field of `scontrol show job -o` (values without spaces), "" if absent.
  std::string JobField(uint32_t id, const std::string& key) {
    CommandResult r = stack_->Local("", {"scontrol", "show", "job", "-o", absl::StrCat(id)});
    for (absl::string_view word : absl::StrSplit(r.output, absl::ByAnyChar(" \n"), absl::SkipEmpty())) {
      if (absl::StartsWith(word, key + "=")) return std::string(word.substr(key.size() + 1));
    }
    return "";
  }
  std::string JobRecord(uint32_t id) {
    return stack_->Local("", {"scontrol", "show", "job", "-o", absl::StrCat(id)}).output;
  }

  std::string dir_;
};

TEST_F(IntegrityTest, EveryRefusedShapeIsRefusedAtSubmitWithWhatToDoInstead) {
  const std::string script = dir_ + "/shape.sh";
  ASSERT_EQ(stack_
                ->OnHost("lctl", {"/bin/sh", "-c",
                                  "printf '#!/bin/sh\\nhostname\\n' > " + script + " && chmod 755 " + script})
                .exit_code,
            0);
  const std::string het = dir_ + "/het.sh";
  ASSERT_EQ(stack_
                ->OnHost("lctl",
                         {"/bin/sh", "-c",
                          "printf '#!/bin/sh\\n#SBATCH --exclusive\\n#SBATCH hetjob\\n#SBATCH --exclusive\\n"
                          "hostname\\n' > " +
                              het + " && chmod 755 " + het})
                .exit_code,
            0);
  struct Shape {
    std::vector<std::string> argv;  // as the user, on the login host
    std::string message;            // what the user must read
  };
  const std::vector<Shape> shapes = {
      {{"sbatch", "--exclusive", "--array=1-3", script}, "job arrays are not supported"},
      {{"sbatch", het}, "heterogeneous jobs are not supported: submit each component as its own"},
      {{"srun", "--exclusive", "hostname"}, "srun and salloc outside a batch job cannot run"},
      {{"salloc", "--exclusive", "hostname"},
       "put the commands in a script and submit it with sbatch (srun inside that script works)"},
      {{"sbatch", "--exclusive", "--nodelist=wl-anything", script}, "--nodelist/-w is not allowed"},
      {{"sbatch", "--exclusive", "--constraint=strongroom", script}, "--constraint/-C is not allowed"},
      {{"sbatch", "--exclusive", "--reservation=r1", script}, "--reservation is not allowed"},
      {{"sbatch", "--exclusive", "--partition=wait", script}, "partition \"wait\" is not allowed"},
      {{"sbatch", "--exclusive", "-A", "nosuchproject", script}, "unknown account \"nosuchproject\""},
      {{"sbatch", "--exclusive", "-A", "Proj_X", script}, "account: \"Proj_X\" must match"},
      {{"sbatch", "--exclusive", "--mem=64000", script},
       absl::StrCat("this enclave's nodes have at most ", E2eStack::kGlobalMemoryMb, " MB")},
      {{"sbatch", "--exclusive", "--cpus-per-task=64", script},
       absl::StrCat("this enclave's nodes have at most ", E2eStack::kGlobalCpusPerNode)},
      {{"sbatch", "--exclusive", "--time=3-00:00:00", script},
       absl::StrCat("this enclave allows at most ", E2eStack::kMaxTimeMinutes, " minutes")},
      {{"sbatch", "--exclusive", "--nodes=2", script}, "Multi-node jobs are not supported yet"},
      {{"sbatch", "--exclusive", "--gres=gpu:1", script}, "gres"},
      {{"sbatch", "--exclusive", "--requeue", script}, "--requeue is not supported"},
  };
  // (--gres: this test cluster has no GresTypes, so Slurm itself refuses it before job_submit.lua runs: "Invalid
  // generic resource (gres) specification"; with GRES configured the lua's message says they are unsupported.)
  for (const Shape& shape : shapes) {
    std::vector<std::string> argv = shape.argv;
    if (argv[0] == "sbatch") argv.insert(argv.begin() + 1, {"--chdir=" + dir_, "--output=/dev/null"});
    CommandResult r = stack_->Local(kUser, argv, absl::Seconds(20));
    EXPECT_NE(r.exit_code, 0) << absl::StrJoin(shape.argv, " ") << ": " << r.output;
    EXPECT_TRUE(absl::StrContains(r.output, shape.message))
        << absl::StrJoin(shape.argv, " ") << ": " << r.output;
  }
  CommandResult queue = stack_->Local("", {"squeue", "-h"});
  EXPECT_EQ(absl::StripAsciiWhitespace(queue.output), "") << "a refused job was queued";
}

TEST_F(IntegrityTest, AnEmptyAccountMeansTheDefaultAccountAndTheJobRuns) {
  absl::StatusOr<SubmittedJob> job = jobs_->Submit(ProbeScript(1), /*account=*/"");
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(JobField(job->local_job_id, "Account"), "proj1");
  absl::StatusOr<v1::LocalJob> done =
      jobs_->WaitLocal(*job, v1::LOCAL_JOB_STATE_COMPLETED, absl::Seconds(90));
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_EQ(done->project(), "proj1");
  EXPECT_EQ(JobField(job->local_job_id, "JobState"), "COMPLETED");
  ExpectClean();
}

TEST_F(IntegrityTest, HoldIsHonouredUntilTheUserReleases) {
  absl::StatusOr<SubmittedJob> job = jobs_->Submit(ProbeScript(1), "proj1", {"--hold"});
  ASSERT_TRUE(job.ok()) << job.status();
  absl::StatusOr<v1::LocalJob> held = jobs_->WaitLocal(*job, v1::LOCAL_JOB_STATE_HELD, absl::Seconds(30));
  ASSERT_TRUE(held.ok()) << held.status();
  absl::SleepFor(absl::Seconds(4));  // several polls of vm-controller
  held = jobs_->LocalJob(job->local_job_id);
  ASSERT_TRUE(held.ok()) << held.status();
  EXPECT_EQ(held->state(), v1::LOCAL_JOB_STATE_HELD);
  EXPECT_EQ(held->global_job_id(), "") << "a global job was created for a job its user holds";
  EXPECT_EQ(JobField(job->local_job_id, "Reason"), "JobHeldUser");
  CommandResult release = stack_->Local(kUser, {"scontrol", "release", absl::StrCat(job->local_job_id)});
  absl::StatusOr<v1::LocalJob> done =
      jobs_->WaitLocal(*job, v1::LOCAL_JOB_STATE_COMPLETED, absl::Seconds(90));
  ASSERT_TRUE(done.ok()) << done.status() << " release said: " << release.output;
  ExpectClean();
}

TEST_F(IntegrityTest, BeginAndDependencyTakeNoGlobalNodeBeforeTheJobIsEligible) {
  // --begin in the future: no global job until then; then it runs.
  absl::StatusOr<SubmittedJob> later = jobs_->Submit(ProbeScript(1), "proj1", {"--begin=now+12"});
  ASSERT_TRUE(later.ok()) << later.status();
  // --dependency on a job its user holds: no global job while the dependency is unfulfilled; once the job it
  // depends on is cancelled, Slurm reports it can never be satisfied and the job is cancelled with that
  // reason.
  absl::StatusOr<SubmittedJob> first = jobs_->Submit(ProbeScript(1), "proj1", {"--hold"});
  ASSERT_TRUE(first.ok()) << first.status();
  absl::StatusOr<SubmittedJob> dependent =
      jobs_->Submit(ProbeScript(1), "proj1", {absl::StrCat("--dependency=afterok:", first->local_job_id)});
  ASSERT_TRUE(dependent.ok()) << dependent.status();
  ASSERT_TRUE(jobs_->WaitLocal(*later, v1::LOCAL_JOB_STATE_HELD, absl::Seconds(30)).ok());
  ASSERT_TRUE(jobs_->WaitLocal(*dependent, v1::LOCAL_JOB_STATE_HELD, absl::Seconds(30)).ok());
  absl::SleepFor(absl::Seconds(4));
  for (const SubmittedJob* job : {&*later, &*dependent}) {
    absl::StatusOr<v1::LocalJob> local = jobs_->LocalJob(job->local_job_id);
    ASSERT_TRUE(local.ok()) << local.status();
    EXPECT_EQ(local->global_job_id(), "")
        << "job " << job->local_job_id << " took a Global node before it could run";
  }
  CommandResult global_queue = stack_->Global({"squeue", "-h"});
  EXPECT_EQ(absl::StripAsciiWhitespace(global_queue.output), "") << global_queue.output;

  ASSERT_EQ(stack_->Local(kUser, {"scancel", absl::StrCat(first->local_job_id)}).exit_code, 0);
  absl::StatusOr<v1::LocalJob> never =
      jobs_->WaitLocal(*dependent, v1::LOCAL_JOB_STATE_FAILED, absl::Seconds(60));
  ASSERT_TRUE(never.ok()) << never.status();
  EXPECT_EQ(never->failure().reason(), "DEPENDENCY_NEVER_SATISFIED");
  ASSERT_TRUE(jobs_->WaitLocalSlurmState(dependent->local_job_id, "CANCELLED", absl::Seconds(30)).ok());
  const std::string record = JobRecord(dependent->local_job_id);
  EXPECT_TRUE(absl::StrContains(record, "refused by the enclave: DEPENDENCY_NEVER_SATISFIED")) << record;

  absl::StatusOr<v1::LocalJob> ran =
      jobs_->WaitLocal(*later, v1::LOCAL_JOB_STATE_COMPLETED, absl::Seconds(120));
  ASSERT_TRUE(ran.ok()) << ran.status();
  // Released onto its node only after its begin time.
  EXPECT_GE(ran->released_time().seconds(), absl::ToUnixSeconds(later->submitted) + 11)
      << ran->ShortDebugString();
  ExpectClean();
}

TEST_F(IntegrityTest, AJobTheEnclaveRefusesLaterIsCancelledWithTheReasonVisible) {
  // The project's image exists on no node: the global job fails. The local job must end CANCELLED (never
  // pending and releasable), with the reason in its Comment.
  absl::StatusOr<SubmittedJob> job = jobs_->Submit(ProbeScript(1), E2eOptions::kBrokenProject);
  ASSERT_TRUE(job.ok()) << job.status();
  absl::StatusOr<v1::LocalJob> failed = jobs_->WaitLocal(*job, v1::LOCAL_JOB_STATE_FAILED, absl::Seconds(90));
  ASSERT_TRUE(failed.ok()) << failed.status();
  ASSERT_TRUE(jobs_->WaitLocalSlurmState(job->local_job_id, "CANCELLED", absl::Seconds(30)).ok());
  const std::string record = JobRecord(job->local_job_id);
  EXPECT_TRUE(absl::StrContains(record, "refused by the enclave: GLOBAL_JOB_FAILED")) << record;
  // Also where the user looks first: the job's own output file, written as the user.
  const std::string output = jobs_->Output(*job);
  EXPECT_TRUE(absl::StrContains(output, absl::StrCat("strongroom: job ", job->local_job_id,
                                                     " was refused by the secure enclave: GLOBAL_JOB_FAILED")))
      << output;
  struct stat st;
  ASSERT_EQ(stat(job->output_path.c_str(), &st), 0) << job->output_path;
  EXPECT_EQ(st.st_uid, static_cast<uid_t>(65534)) << "the output file must be the user's, not root's";
  // And the user cannot bring it back.
  CommandResult release = stack_->Local(kUser, {"scontrol", "release", absl::StrCat(job->local_job_id)});
  EXPECT_EQ(JobField(job->local_job_id, "JobState"), "CANCELLED") << release.output;
  ExpectClean();
}

// Every means a user has to get a job onto another job's dynamic node. Against the old glue (job_submit.lua
// before issue 12 and its vm-controller: STRONGROOM_TEST_OLD_JOB_SUBMIT_LUA,
// STRONGROOM_TEST_OLD_VM_CONTROLLER_BIN) this fails: see docs/VM_CONTROLLER.md, "What the old glue allowed".
TEST_F(IntegrityTest, NoJobReachesAnotherJobsNode) {
  // 1. A job the enclave refuses (an account vm-controller refused before issue 12), released by its user:
  //    before, it waited unconstrained in the batch partition and took the next workload's node.
  CommandResult refused = Sbatch({"--exclusive", "-A", "Proj_X", "--wrap", "hostname; sleep 20"});
  uint32_t refused_id = 0;
  if (refused.exit_code == 0) {
    ASSERT_TRUE(absl::SimpleAtoi(absl::StripAsciiWhitespace(refused.output), &refused_id)) << refused.output;
    absl::SleepFor(absl::Seconds(2));
    stack_->Local(kUser, {"scontrol", "release", absl::StrCat(refused_id)});
  }

  // 2. The victim: an ordinary job that runs on its own workload's node.
  absl::StatusOr<SubmittedJob> victim = jobs_->Submit(ProbeScript(25));
  ASSERT_TRUE(victim.ok()) << victim.status();

  // 3. An accepted job of the same user, held by that user, and every update a user can try on it.
  absl::StatusOr<SubmittedJob> attacker = jobs_->Submit(ProbeScript(1), "proj1", {"--hold"});
  ASSERT_TRUE(attacker.ok()) << attacker.status();

  absl::StatusOr<v1::LocalJob> running =
      jobs_->WaitLocal(*victim, v1::LOCAL_JOB_STATE_RUNNING, absl::Seconds(60));
  ASSERT_TRUE(running.ok()) << running.status();
  const std::string node = running->node_name();
  const std::string token = running->local().token();
  ASSERT_TRUE(jobs_->WaitLocalSlurmState(victim->local_job_id, "RUNNING", absl::Seconds(30)).ok());
  EXPECT_EQ(JobField(victim->local_job_id, "NodeList"), node);

  // Submit-time options naming the victim's node or its token.
  CommandResult nodelist = Sbatch({"--exclusive", "-A", "proj1", "--nodelist=" + node, "--wrap", "hostname"});
  EXPECT_NE(nodelist.exit_code, 0) << nodelist.output;
  CommandResult constraint =
      Sbatch({"--exclusive", "-A", "proj1", "--constraint=" + token, "--wrap", "hostname"});
  EXPECT_NE(constraint.exit_code, 0) << constraint.output;

  const std::string attacker_id = absl::StrCat(attacker->local_job_id);
  for (const std::vector<std::string>& update : std::vector<std::vector<std::string>>{
           {"Features=" + token},
           {"Partition=batch"},
           {"Partition=batch", "Features=" + token},
           {"NodeList=" + node},
           {"ReqNodeList=" + node},
           {"Reservation=r1"},
           {"Comment=strongroom:" + token},
       }) {
    std::vector<std::string> argv = {"scontrol", "update", "JobId=" + attacker_id};
    argv.insert(argv.end(), update.begin(), update.end());
    CommandResult r = stack_->Local(kUser, argv);
    const std::string record = JobRecord(attacker->local_job_id);
    EXPECT_FALSE(absl::StrContains(record, "Features=" + token))
        << absl::StrJoin(update, " ") << ": " << record;
    EXPECT_FALSE(absl::StrContains(record, "ReqNodeList=" + node))
        << absl::StrJoin(update, " ") << ": " << record;
    EXPECT_FALSE(absl::StrContains(record, "Comment=strongroom:" + token)) << absl::StrJoin(update, " ");
    EXPECT_NE(JobField(attacker->local_job_id, "Partition"), "batch")
        << absl::StrJoin(update, " ") << " moved the job out of the wait partition: " << r.output;
  }
  // The user's own release is allowed: the job then gets its own workload, never the victim's node.
  stack_->Local(kUser, {"scontrol", "release", attacker_id});

  // While the victim runs, neither the refused job nor the attacker ever runs on its node.
  std::set<std::string> attacker_nodes;
  while (jobs_->LocalSlurmState(victim->local_job_id) == "RUNNING") {
    for (uint32_t id : {refused_id, attacker->local_job_id}) {
      if (id == 0) continue;
      const std::string where = JobField(id, "NodeList");
      EXPECT_NE(where, node) << "job " << id << " runs on job " << victim->local_job_id << "'s node";
      if (!where.empty() && where != "(null)") attacker_nodes.insert(where);
    }
    absl::SleepFor(absl::Milliseconds(200));
  }
  // The refused job never runs at all: every dynamic node is some job's workload.
  if (refused_id != 0) {
    const std::string state = jobs_->LocalSlurmState(refused_id);
    const std::string where = JobField(refused_id, "NodeList");
    EXPECT_TRUE(state == "CANCELLED" || state.empty())
        << "the job the enclave refused is " << state << (where.empty() ? "" : " on node " + where);
    stack_->Local("", {"scancel", absl::StrCat(refused_id)});
  }
  absl::StatusOr<v1::LocalJob> victim_done =
      jobs_->WaitLocal(*victim, v1::LOCAL_JOB_STATE_COMPLETED, absl::Seconds(60));
  ASSERT_TRUE(victim_done.ok()) << victim_done.status();
  absl::StatusOr<v1::LocalJob> attacker_done =
      jobs_->WaitLocal(*attacker, v1::LOCAL_JOB_STATE_COMPLETED, absl::Seconds(90));
  ASSERT_TRUE(attacker_done.ok()) << attacker_done.status();
  EXPECT_NE(attacker_done->node_name(), node);
  EXPECT_EQ(attacker_nodes.count(node), 0u);
  ExpectClean();
}

// host-agent and netd killed while a job runs, restarted in both orders: the job ends and no dynamic node
// (nor anything else) is left.
TEST_F(IntegrityTest, KillingHostAgentAndNetdDuringAJobLeavesNoDynamicNode) {
  for (bool agent_first : {true, false}) {
    SCOPED_TRACE(agent_first ? "restart host-agent, then netd" : "restart netd, then host-agent");
    absl::StatusOr<SubmittedJob> job = jobs_->Submit(ProbeScript(15));
    ASSERT_TRUE(job.ok()) << job.status();
    absl::StatusOr<v1::LocalJob> running =
        jobs_->WaitLocal(*job, v1::LOCAL_JOB_STATE_RUNNING, absl::Seconds(60));
    ASSERT_TRUE(running.ok()) << running.status();
    ASSERT_TRUE(jobs_->WaitLocalSlurmState(job->local_job_id, "RUNNING", absl::Seconds(30)).ok());
    std::string gnode;
    for (const std::string& n : stack_->node_names()) {
      for (const v1::Workload& w : stack_->Workloads(n)) {
        if (w.spec().workload_id() == running->workload_id()) gnode = n;
      }
    }
    ASSERT_FALSE(gnode.empty()) << "no node runs workload " << running->workload_id();
    ASSERT_TRUE(stack_->KillDaemon("host-agent/" + gnode).ok());
    ASSERT_TRUE(stack_->KillDaemon("netd/" + gnode).ok());
    absl::SleepFor(absl::Seconds(2));
    for (const std::string& d : agent_first ? std::vector<std::string>{"host-agent/", "netd/"}
                                            : std::vector<std::string>{"netd/", "host-agent/"}) {
      absl::Status restarted = stack_->RestartDaemon(d + gnode);
      ASSERT_TRUE(restarted.ok()) << restarted;
    }
    // However the job ends (it may complete, or fail with its workload), it ends, and everything is removed.
    const absl::Time deadline = absl::Now() + absl::Seconds(120);
    absl::StatusOr<v1::LocalJob> local = jobs_->LocalJob(job->local_job_id);
    while (absl::Now() < deadline && local.ok() && local->state() != v1::LOCAL_JOB_STATE_COMPLETED &&
           local->state() != v1::LOCAL_JOB_STATE_FAILED && local->state() != v1::LOCAL_JOB_STATE_CANCELLED) {
      absl::SleepFor(absl::Milliseconds(250));
      local = jobs_->LocalJob(job->local_job_id);
    }
    ASSERT_TRUE(local.ok()) << local.status();
    EXPECT_TRUE(local->state() == v1::LOCAL_JOB_STATE_COMPLETED ||
                local->state() == v1::LOCAL_JOB_STATE_FAILED ||
                local->state() == v1::LOCAL_JOB_STATE_CANCELLED)
        << local->ShortDebugString();
    ExpectClean(absl::Seconds(90));
    // Nothing comes back: a slurmd of the stopped workload that registered again would be deleted and stay
    // so.
    absl::SleepFor(absl::Seconds(12));
    EXPECT_EQ(absl::StripAsciiWhitespace(stack_->Local("", {"sinfo", "-h", "-N", "-o", "%N %T"}).output), "");
  }
}

// A stopping workload's slurmd that registers its node again after vm-controller deleted it (seen after host-agent
// and netd were killed and restarted under a job): node reconciliation drains and deletes it. The ghost is a real
// slurmd on the Local controller's host, with the ended job's node name and token, in a private mount namespace
// (tmpfs over /run and /var/spool for the configless slurmd's paths).
TEST_F(IntegrityTest, ANodeThatRegistersAgainAfterItsJobEndedIsDeleted) {
  absl::StatusOr<SubmittedJob> job = jobs_->Submit(ProbeScript(1));
  ASSERT_TRUE(job.ok()) << job.status();
  absl::StatusOr<v1::LocalJob> done = jobs_->WaitLocal(*job, v1::LOCAL_JOB_STATE_COMPLETED, absl::Seconds(90));
  ASSERT_TRUE(done.ok()) << done.status();
  ExpectClean();
  auto registered = [&] {
    return absl::StrContains(stack_->Local("", {"sinfo", "-h", "-N", "-o", "%N"}).output, done->node_name());
  };
  ASSERT_FALSE(registered());
  absl::StatusOr<pid_t> ghost = stack_->SpawnProcess(
      "lctl", "ghost-slurmd",
      {"/usr/bin/unshare", "-m", "--propagation", "private", "/bin/sh", "-c",
       absl::StrCat("mount -t tmpfs none /run && mkdir -p /run/slurm && mount -t tmpfs none /var/spool && "
                    "mkdir -p /var/spool/slurmd && exec /usr/bin/env -i SLURM_CONF=",
                    stack_->local_slurm_conf(), " /usr/sbin/slurmd -D -Z -N ", done->node_name(),
                    " --conf 'CPUs=2 RealMemory=1000 Features=strongroom,", done->local().token(), "'")});
  ASSERT_TRUE(ghost.ok()) << ghost.status();
  absl::Time deadline = absl::Now() + absl::Seconds(20);
  while (!registered() && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(100));
  const bool appeared = registered();
  // Deleted within a reconciliation round (node_reconcile_seconds, 10 s by default) or two.
  deadline = absl::Now() + absl::Seconds(30);
  while (registered() && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(250));
  const bool still_there = registered();
  EXPECT_TRUE(stack_->StopProcess(*ghost).ok());
  ASSERT_TRUE(appeared) << "the ghost slurmd never registered";
  EXPECT_FALSE(still_there) << "node " << done->node_name() << " of ended job " << job->local_job_id
                            << " registered again and was not deleted";
  if (still_there) {  // leave nothing for the next test
    stack_->Local("", {"scontrol", "update", "nodename=" + done->node_name(), "state=down", "reason=test"});
    stack_->Local("", {"scontrol", "delete", "nodename=" + done->node_name()});
  }
  ExpectClean();
}

}  // namespace
}  // namespace strongroom::e2e
