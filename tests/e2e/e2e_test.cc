// The whole path, everything real (tests/e2e/e2e_stack.h): a researcher's `sbatch --exclusive` on the Local Slurm
// runs in a whole-node container on a Global Slurm node, and afterwards nothing is left anywhere.
//
// One stack serves every test of this binary (ctest runs the binary once), so the later tests also prove that
// earlier jobs left nothing behind that disturbs the next.
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "tests/e2e/e2e_jobs.h"
#include "tests/e2e/e2e_suite.h"

namespace strongroom::e2e {
namespace {

class EndToEndTest : public E2eSuite<EndToEndTest> {};

std::map<std::string, std::string> KeyValues(const std::string& text) {
  std::map<std::string, std::string> out;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    const size_t eq = line.find('=');
    if (eq != absl::string_view::npos) out[std::string(line.substr(0, eq))] = std::string(line.substr(eq + 1));
  }
  return out;
}

TEST_F(EndToEndTest, ExclusiveJobRunsInAWholeNodeContainerAndLeavesNothing) {
  absl::StatusOr<SubmittedJob> job = jobs_->Submit(ProbeScript(/*sleep_seconds=*/4));
  ASSERT_TRUE(job.ok()) << job.status();

  // While it runs: the Global Slurm shows the exclusive global job under the project account.
  absl::StatusOr<v1::LocalJob> running = jobs_->WaitLocal(*job, v1::LOCAL_JOB_STATE_RUNNING, absl::Seconds(60));
  ASSERT_TRUE(running.ok()) << running.status();
  absl::StatusOr<v1::Job> global = jobs_->GlobalJob(running->global_job_id());
  ASSERT_TRUE(global.ok()) << global.status();
  const std::string global_id = absl::StrCat(global->ref().global_slurm_job_id());
  CommandResult squeue = stack_->Global({"squeue", "-h", "-j", global_id, "-o", "%i|%a|%T|%N"});
  EXPECT_TRUE(absl::StrContains(squeue.output, absl::StrCat(global_id, "|proj1|RUNNING|gnode"))) << squeue.output;
  CommandResult show = stack_->Global({"scontrol", "show", "job", global_id});
  EXPECT_TRUE(absl::StrContains(show.output, "OverSubscribe=NO")) << show.output;

  absl::StatusOr<v1::LocalJob> done = jobs_->WaitLocal(*job, v1::LOCAL_JOB_STATE_COMPLETED, absl::Seconds(90));
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_EQ(jobs_->LocalSlurmState(job->local_job_id), "COMPLETED");
  absl::StatusOr<v1::Job> finished = jobs_->WaitGlobal(running->global_job_id(), v1::JOB_STATE_COMPLETED,
                                                       absl::Seconds(60));
  ASSERT_TRUE(finished.ok()) << finished.status();
  EXPECT_TRUE(absl::StrContains(stack_->Global({"scontrol", "show", "job", global_id}).output,
                                "JobState=COMPLETED"));

  // The output came back through the project share and shows where the job ran.
  const std::map<std::string, std::string> out = KeyValues(jobs_->Output(*job));
  ASSERT_FALSE(out.empty()) << "no job output in " << job->output_path;
  EXPECT_EQ(out.at("hostname"), running->node_name());
  EXPECT_NE(out.at("netns"), OwnNetns());
  EXPECT_EQ(out.at("uid_map"), "0 100000 65536");
  EXPECT_EQ(out.at("root_fs"), "overlay");
  EXPECT_EQ(out.at("user"), "nobody:65534");
  // Egress: the allowlisted Local slurmctld answers, anything else is dropped by br-secure.
  EXPECT_EQ(out.at("allowlisted"), "connected");
  EXPECT_EQ(out.at("other"), "blocked");

  ExpectClean();

  // The audit chain verifies and tells the whole story of this job.
  CommandResult verify = stack_->Ctl("backend", {"audit", "verify"});
  EXPECT_EQ(verify.exit_code, 0) << verify.output;
  absl::StatusOr<v1::GetJobTimelineResponse> timeline = jobs_->Timeline(running->global_job_id());
  ASSERT_TRUE(timeline.ok()) << timeline.status();
  // backend's record: each state, entered in order, and the scrub.
  std::vector<std::string> story;
  for (const v1::TimelineEntry& e : timeline->entries()) {
    story.push_back(e.event().empty() ? v1::JobState_Name(e.to_state()) : e.event());
  }
  std::vector<std::string> expected = {"JOB_STATE_SUBMITTING",   "JOB_STATE_QUEUED",  "JOB_STATE_STARTING",
                                       "JOB_STATE_PROVISIONING", "JOB_STATE_RUNNING", "JOB_STATE_RELEASING",
                                       "workload.scrubbed",      "JOB_STATE_COMPLETED"};
  size_t next = 0;
  for (const std::string& step : story) {
    if (next < expected.size() && step == expected[next]) ++next;
  }
  EXPECT_EQ(next, expected.size()) << "the timeline lacks " << (next < expected.size() ? expected[next] : "")
                                   << ":\n" << timeline->DebugString();
  // Every service's part of the story is in backend's one hash chain.
  CommandResult audit = stack_->Ctl("backend", {"audit", "query", "--limit", "10000"});
  std::set<std::string> actors;
  for (absl::string_view line : absl::StrSplit(audit.output, '\n', absl::SkipEmpty())) {
    if (!absl::StrContains(line, running->global_job_id()) && !absl::StrContains(line, running->workload_id())) {
      continue;
    }
    for (const char* role : {"vm-controller", "host-agent", "netd", "backend"}) {
      if (absl::StrContains(line, absl::StrCat("/", role, "/"))) actors.insert(role);
    }
  }
  for (const char* role : {"vm-controller", "host-agent", "netd", "backend"}) {
    EXPECT_TRUE(actors.count(role)) << role << " has no audit record of this job";
  }
}

TEST_F(EndToEndTest, ScancelWhilePendingAndWhileRunningLeavesEverythingClean) {
  // Pending: cancelled before its workload is ready (the epilog never runs for it; vm-controller polls).
  absl::StatusOr<SubmittedJob> pending = jobs_->Submit(ProbeScript(60));
  ASSERT_TRUE(pending.ok()) << pending.status();
  CommandResult cancel = stack_->Local(kUser, {"scancel", absl::StrCat(pending->local_job_id)});
  EXPECT_EQ(cancel.exit_code, 0) << cancel.output;
  absl::StatusOr<v1::LocalJob> cancelled =
      jobs_->WaitLocal(*pending, v1::LOCAL_JOB_STATE_CANCELLED, absl::Seconds(60));
  ASSERT_TRUE(cancelled.ok()) << cancelled.status();
  if (!cancelled->global_job_id().empty()) {
    EXPECT_TRUE(jobs_->WaitGlobalTerminal(cancelled->global_job_id(), absl::Seconds(60)).ok());
  }
  ExpectClean();

  // Running: the container is stopped and scrubbed.
  absl::StatusOr<SubmittedJob> running_job = jobs_->Submit(ProbeScript(120));
  ASSERT_TRUE(running_job.ok()) << running_job.status();
  absl::StatusOr<v1::LocalJob> running =
      jobs_->WaitLocal(*running_job, v1::LOCAL_JOB_STATE_RUNNING, absl::Seconds(60));
  ASSERT_TRUE(running.ok()) << running.status();
  ASSERT_TRUE(jobs_->WaitLocalSlurmState(running_job->local_job_id, "RUNNING", absl::Seconds(30)).ok());
  cancel = stack_->Local(kUser, {"scancel", absl::StrCat(running_job->local_job_id)});
  EXPECT_EQ(cancel.exit_code, 0) << cancel.output;
  absl::StatusOr<v1::LocalJob> ended =
      jobs_->WaitLocal(*running_job, v1::LOCAL_JOB_STATE_CANCELLED, absl::Seconds(60));
  ASSERT_TRUE(ended.ok()) << ended.status();
  EXPECT_TRUE(jobs_->WaitGlobalTerminal(running->global_job_id(), absl::Seconds(60)).ok());
  ExpectClean();
}

TEST_F(EndToEndTest, GlobalJobCancelledOnTheGlobalSlurmEndsEverything) {
  // The Global Slurm's admin cancels the global job under a running local job: the workload stops, backend ends
  // the job, vm-controller cancels the local job, and nothing is left.
  absl::StatusOr<SubmittedJob> job = jobs_->Submit(ProbeScript(120));
  ASSERT_TRUE(job.ok()) << job.status();
  absl::StatusOr<v1::LocalJob> running = jobs_->WaitLocal(*job, v1::LOCAL_JOB_STATE_RUNNING, absl::Seconds(60));
  ASSERT_TRUE(running.ok()) << running.status();
  ASSERT_TRUE(jobs_->WaitLocalSlurmState(job->local_job_id, "RUNNING", absl::Seconds(30)).ok());
  absl::StatusOr<v1::Job> global = jobs_->GlobalJob(running->global_job_id());
  ASSERT_TRUE(global.ok()) << global.status();
  CommandResult cancel = stack_->Global({"scancel", absl::StrCat(global->ref().global_slurm_job_id())});
  EXPECT_EQ(cancel.exit_code, 0) << cancel.output;
  absl::StatusOr<v1::Job> ended = jobs_->WaitGlobalTerminal(running->global_job_id(), absl::Seconds(60));
  // Terminal either way: the workload cancels its local job as it stops, so the release may reach backend
  // before its squeue poll sees the cancel (COMPLETED, reason LOCAL_CANCELLED) or after (FAILED).
  ASSERT_TRUE(ended.ok()) << ended.status();
  absl::StatusOr<v1::LocalJob> local = jobs_->WaitLocal(*job, v1::LOCAL_JOB_STATE_CANCELLED, absl::Seconds(60));
  if (!local.ok()) local = jobs_->WaitLocal(*job, v1::LOCAL_JOB_STATE_FAILED, absl::Seconds(1));
  ASSERT_TRUE(local.ok()) << local.status();
  const std::string slurm_state = jobs_->LocalSlurmState(job->local_job_id);
  EXPECT_TRUE(slurm_state == "CANCELLED" || slurm_state == "FAILED" || slurm_state == "NODE_FAIL") << slurm_state;
  ExpectClean();
}

TEST_F(EndToEndTest, AWorkloadThatCannotStartFailsTheJobEverywhere) {
  // The project's image exists on no node: StartWorkload is refused, the global job fails, backend records why,
  // and vm-controller cancels the held local job instead of leaving it pending forever.
  absl::StatusOr<SubmittedJob> job = jobs_->Submit(ProbeScript(1), E2eOptions::kBrokenProject);
  ASSERT_TRUE(job.ok()) << job.status();
  absl::StatusOr<v1::LocalJob> failed = jobs_->WaitLocal(*job, v1::LOCAL_JOB_STATE_FAILED, absl::Seconds(90));
  ASSERT_TRUE(failed.ok()) << failed.status();
  EXPECT_EQ(failed->failure().reason(), "GLOBAL_JOB_FAILED") << failed->ShortDebugString();
  absl::StatusOr<v1::Job> global = jobs_->GlobalJob(failed->global_job_id());
  ASSERT_TRUE(global.ok()) << global.status();
  EXPECT_EQ(global->state(), v1::JOB_STATE_FAILED);
  EXPECT_FALSE(global->failure().message().empty()) << global->ShortDebugString();
  const std::string slurm_state = jobs_->LocalSlurmState(job->local_job_id);
  EXPECT_TRUE(slurm_state == "CANCELLED" || slurm_state.empty()) << slurm_state;
  ExpectClean();
}

TEST_F(EndToEndTest, FiveJobsOnTwoNodesAllCompleteWithoutCrossTalk) {
  std::vector<SubmittedJob> submitted;
  for (int i = 0; i < 5; ++i) {
    absl::StatusOr<SubmittedJob> job = jobs_->Submit(ProbeScript(2));
    ASSERT_TRUE(job.ok()) << job.status();
    submitted.push_back(*job);
  }
  std::set<std::string> hosts;
  for (const SubmittedJob& job : submitted) {
    absl::StatusOr<v1::LocalJob> done = jobs_->WaitLocal(job, v1::LOCAL_JOB_STATE_COMPLETED, absl::Seconds(180));
    ASSERT_TRUE(done.ok()) << done.status();
    const std::string text = jobs_->Output(job);
    const std::map<std::string, std::string> out = KeyValues(text);
    ASSERT_TRUE(out.count("job")) << text;
    // Each output holds exactly its own job, run on its own dynamic node.
    EXPECT_EQ(out.at("job"), absl::StrCat(job.local_job_id));
    EXPECT_EQ(out.at("hostname"), done->node_name());
    EXPECT_EQ(out.at("other"), "blocked");
    hosts.insert(done->node_name());
  }
  EXPECT_EQ(hosts.size(), 5u);
  ExpectClean();
}

// (A non-exclusive job is no longer refused: it runs in a VM, issue 15.)
TEST_F(EndToEndTest, RootJobsAreRefusedAtSubmit) {
  CommandResult root = stack_->Local("", {"sbatch", "--exclusive", "-A", "proj1", "--wrap", "hostname"});
  EXPECT_NE(root.exit_code, 0);
  EXPECT_TRUE(absl::StrContains(root.output, "root")) << root.output;
  CommandResult queue = stack_->Local("", {"squeue", "-h"});
  EXPECT_EQ(absl::StripAsciiWhitespace(queue.output), "") << "a refused job was queued";
}

}  // namespace
}  // namespace strongroom::e2e

namespace strongroom::e2e {
namespace {

// The egress guarantee on the real path: a job's own user, inside its real container, sends UDP and TCP with
// markers to every address of the rig (its own node and gateway included), while witnesses on every other host,
// the rig's switch and the compute nodes (every interface, and what their own stacks deliver) record every
// marker that arrives. Nothing may arrive anywhere: the job's allowlist holds only TCP to the Local slurmctld.
// (The report that started this: one such datagram arrived at the backend host, through the node's own stack.)
TEST_F(EndToEndTest, AJobUsersOwnTrafficReachesNoHostOutsideItsAllowlist) {
  const std::string dir = stack_->dir() + "/egress";
  ASSERT_TRUE(std::filesystem::create_directories(dir));
  const std::string stop = dir + "/stop";
  std::vector<std::string> witnesses = {"lctl", "backend", "gctl", "client", "sw"};
  for (const std::string& node : stack_->node_names()) witnesses.push_back(node);
  // Stops and joins the witnesses however the test leaves (an ASSERT returns early).
  struct Witnesses {
    std::string stop;
    std::vector<std::thread> threads;
    void Stop() {
      std::ofstream(stop) << "stop\n";
      for (std::thread& t : threads) {
        if (t.joinable()) t.join();
      }
    }
    ~Witnesses() { Stop(); }
  } witness_threads{stop, {}};
  for (const std::string& host : witnesses) {
    witness_threads.threads.emplace_back([&, host] {
      std::vector<std::string> argv = {"/usr/sbin/ip", "netns", "exec", stack_->HostNetns(host), "/usr/bin/python3",
                                       SR_EGRESS_PROBE, "capture", dir + "/" + host + ".json", dir + "/" + host + ".ready",
                                       "--stop-file", stop};
      // On a compute node the workload's frames arrive on its veth, where OVS reads them: not a witness there.
      if (absl::StartsWith(host, "gnode")) argv.insert(argv.end(), {"--exclude-received", "sr"});
      CommandResult r = stack_->OnHost("client", argv, absl::Seconds(300));
      EXPECT_EQ(r.exit_code, 0) << host << ": " << r.output;
    });
  }
  for (const std::string& host : witnesses) {
    const absl::Time deadline = absl::Now() + absl::Seconds(60);
    while (!std::filesystem::exists(dir + "/" + host + ".ready") && absl::Now() < deadline) {
      absl::SleepFor(absl::Milliseconds(50));
    }
    EXPECT_TRUE(std::filesystem::exists(dir + "/" + host + ".ready")) << host;
  }

  // Every rig address, and the node's own addresses and gateways, on ports that matter.
  std::vector<std::string> targets = {stack_->HostIp("lctl"), stack_->HostIp("backend"), stack_->HostIp("gctl"),
                                      stack_->HostIp("client")};
  for (const std::string& node : stack_->node_names()) targets.push_back(stack_->HostIp(node));
  for (int i = 0; i < static_cast<int>(stack_->node_names().size()); ++i) {
    std::vector<std::string> subnet = absl::StrSplit(E2eStack::NodeSubnet(i), absl::ByAnyChar("./"));
    targets.push_back(absl::StrCat(subnet[0], ".", subnet[1], ".", subnet[2], ".", std::stoi(subnet[3]) + 1));
  }
  const std::vector<int> ports = {9999, 53, 123, 443, 2049, 5432, 6817, 6818, 7443};
  // Blocked TCP connects wait out their timeout, so they all run at once. The script builds each marker at run time: it travels to slurmd inside Slurm's own (allowed) messages, so
  // no marker may appear in its text.
  const int first_id = 800000;
  std::string manifest = "{";
  int id = first_id;
  for (const std::string& target : targets) {
    for (int port : ports) {
      for (const char* proto : {"udp", "tcp"}) {
        // TCP to the Local slurmctld is the allowlist itself; its data may arrive there.
        const bool allowed = std::string(proto) == "tcp" && target == stack_->HostIp("lctl") && port == 6817;
        absl::StrAppend(&manifest, manifest.size() > 1 ? "," : "", "\"", id, "\":{\"kind\":\"job user's ", proto,
                        " in its container\",\"allowed\":", allowed ? "true" : "false", "}");
        ++id;
      }
    }
  }
  manifest += "}";
  const std::string script = absl::StrCat(
      // Waits until the test has put the workload in the state the attack once found on a node (below).
      "#!/bin/bash\ntouch egress-ready\nfor i in $(seq 150); do [ -e egress-go ] && break; sleep 0.2; done\n",
      "id=", first_id, "\nsent=0\nfor t in ", absl::StrJoin(targets, " "), "; do\n  for p in ",
      absl::StrJoin(ports, " "), "; do\n    for proto in udp tcp; do\n      tag=SR\n",
      "      if [ $proto = tcp ] && [ $t = ", stack_->HostIp("lctl"), " ] && [ $p = 6817 ]; then tag+=O; else tag+=L; fi\n",
      "      tag+=K\n      timeout 3 bash -c \"printf '%s%06d' $tag $id >/dev/$proto/$t/$p\" 2>/dev/null &\n",
      "      id=$((id + 1)); sent=$((sent + 1))\n    done\n  done\ndone\nwait\necho sent=$sent\n",
      // Then the test gives the gateway's ARP entry back, so slurmd can report the job's end.
      "touch egress-sent\nfor i in $(seq 150); do [ -e egress-restored ] && break; sleep 0.2; done\n");
  std::ofstream(dir + "/job.manifest.json") << manifest;

  absl::StatusOr<SubmittedJob> job = jobs_->Submit(script);
  ASSERT_TRUE(job.ok()) << job.status();
  absl::StatusOr<v1::LocalJob> running = jobs_->WaitLocal(*job, v1::LOCAL_JOB_STATE_RUNNING, absl::Seconds(90));
  ASSERT_TRUE(running.ok()) << running.status();
  // Only once the script runs: slurmd needs its gateway to start it.
  const std::filesystem::path job_dir = std::filesystem::path(job->output_path).parent_path();
  for (const absl::Time ready_by = absl::Now() + absl::Seconds(60);
       !std::filesystem::exists(job_dir / "egress-ready") && absl::Now() < ready_by;) {
    absl::SleepFor(absl::Milliseconds(100));
  }
  ASSERT_TRUE(std::filesystem::exists(job_dir / "egress-ready")) << "the job script never started";
  // The state the attack found on one node: the workload's ARP entry for its gateway pointing at the node's veth
  // (the node's stack had answered the workload's ARP request for the gateway, which the node owns, faster than
  // the gateway's own answer through OVS). Put there deliberately, so every run tries that path.
  bool poisoned = false;
  std::string poisoned_node;
  std::vector<std::string> restore;  // ip neigh del, in the workload's netns
  for (const std::string& node : stack_->node_names()) {
    for (const v1::Workload& workload : stack_->Workloads(node)) {
      if (workload.spec().workload_id() != running->workload_id()) continue;
      CommandResult link = stack_->OnHost(node, {"/usr/sbin/ip", "-o", "link", "show", workload.network().port_name()});
      const size_t at = link.output.find("link/ether ");
      ASSERT_NE(at, std::string::npos) << link.output;
      const std::string veth_mac = link.output.substr(at + 11, 17);
      CommandResult neigh = stack_->OnHost(
          node, {"/usr/sbin/ip", "netns", "exec", std::string(absl::StripPrefix(workload.netns(), "/run/netns/")),
                 "/usr/sbin/ip", "neigh", "replace", workload.network().gateway(), "lladdr", veth_mac, "dev",
                 workload.network().interface_name(), "nud", "permanent"});
      ASSERT_EQ(neigh.exit_code, 0) << neigh.output;
      poisoned = true;
      poisoned_node = node;
      restore = {"/usr/sbin/ip", "netns", "exec", std::string(absl::StripPrefix(workload.netns(), "/run/netns/")),
                 "/usr/sbin/ip", "neigh", "del", workload.network().gateway(), "dev", workload.network().interface_name()};
    }
  }
  ASSERT_TRUE(poisoned) << "workload " << running->workload_id() << " not found";
  std::ofstream(job_dir / "egress-go") << "go\n";
  for (const absl::Time sent_by = absl::Now() + absl::Seconds(60);
       !std::filesystem::exists(job_dir / "egress-sent") && absl::Now() < sent_by;) {
    absl::SleepFor(absl::Milliseconds(100));
  }
  if (!std::filesystem::exists(job_dir / "egress-sent")) {
    std::string listing;
    for (const auto& entry : std::filesystem::directory_iterator(job_dir)) listing += entry.path().string() + " ";
    ADD_FAILURE() << "the job did not get through its probes; output: " << jobs_->Output(*job) << "; " << listing;
  }
  EXPECT_EQ(stack_->OnHost(poisoned_node, restore).exit_code, 0);
  std::ofstream(job_dir / "egress-restored") << "restored\n";
  absl::StatusOr<v1::LocalJob> done = jobs_->WaitLocal(*job, v1::LOCAL_JOB_STATE_COMPLETED, absl::Seconds(180));
  ASSERT_TRUE(done.ok()) << done.status();
  const std::map<std::string, std::string> out = KeyValues(jobs_->Output(*job));
  EXPECT_EQ(out.count("sent") ? out.at("sent") : "", absl::StrCat(id - first_id)) << jobs_->Output(*job);
  absl::SleepFor(absl::Seconds(2));  // stragglers
  witness_threads.Stop();

  std::vector<std::string> analyze = {"/usr/bin/python3", SR_EGRESS_PROBE, "analyze", dir + "/job.manifest.json", "--"};
  for (const std::string& host : witnesses) analyze.push_back(dir + "/" + host + ".json");
  absl::StatusOr<Rig::ExecResult> findings = RunWithTimeout(analyze, absl::Seconds(60));
  ASSERT_TRUE(findings.ok() && findings->exit_code == 0) << (findings.ok() ? findings->output : "");
  std::vector<std::string> leaks;
  for (absl::string_view line : absl::StrSplit(findings->output, '\n', absl::SkipEmpty())) {
    if (absl::StartsWith(line, "LEAK ")) leaks.emplace_back(line);
  }
  EXPECT_TRUE(leaks.empty()) << absl::StrJoin(leaks, "\n");
  // The allowed path works: slurmd started the job and reported its end (once the gateway's entry was right
  // again; while it pointed at the node's veth, even the allowlisted connection was dropped: not the gateway's MAC).
  ExpectClean();
}

}  // namespace
}  // namespace strongroom::e2e
