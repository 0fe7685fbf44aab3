// The secure data path end to end (issue 14, docs/IPSEC.md): a researcher's `sbatch --exclusive` on a project with
// ipsec_data_path. The workload enrolls with vm-controller (one-time ticket), brings up IKEv2 to the controlling
// VM's charon (vm-controller runs it; kernel-libipsec on both ends, this kernel has no ESP), takes the Local munge
// key over the enrolled channel (no compute host has it), and only then starts slurmd, whose traffic to slurmctld
// goes through the tunnel. The share is host-agent's development-mode bind: this kernel has no NFS client (the NFS
// mount through the tunnel is covered in the qemu guest, ctest -R ipsec_guest_kernel_datapath).
//
// Tried as an attacker would look at it: everything the node's switch and uplink carried between the node's
// workloads and the controlling VM is captured (every interface of the node's netns), and the compute host's
// files, logs and backend's database are scanned for the secrets afterwards.
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/ipsec_session.h"
#include "common/subprocess.h"
#include "common/vici.h"
#include "gtest/gtest.h"
#include "tests/e2e/e2e_end_to_end.h"
#include "tests/e2e/e2e_jobs.h"
#include "tests/e2e/e2e_suite.h"
#include "tests/ipsec/datapath_rig.h"
#include "tests/rig/files.h"

namespace strongroom::e2e {
namespace {

class DataPathTest : public E2eSuite<DataPathTest> {
 public:
  static E2eOptions StackOptions() {
    E2eOptions o;
    o.nodes = 1;
    o.data_path = true;
    return o;
  }

 protected:
  // capture.py on every interface of gnode1's netns (the workloads' veths, br-secure's uplink, the node's own
  // link), counting what passes between the node's workload subnet and the controlling VM.
  struct Capture {
    pid_t pid = 0;
    std::string log, stop;
  };
  // `a`: the capture's A side (default: the node's workload subnet); `ifaces`: only these interfaces.
  absl::StatusOr<Capture> StartCapture(const std::string& name, const std::string& a = E2eStack::NodeSubnet(0),
                                       const std::string& ifaces = "") {
    Capture c;
    c.log = stack_->dir() + "/logs/" + name + ".log";
    c.stop = stack_->dir() + "/" + name + ".stop";
    std::filesystem::remove(c.stop);
    std::vector<std::string> argv = {"/usr/bin/python3", SR_CAPTURE, a, E2eStack::ControllingVmIp(), c.stop};
    if (!ifaces.empty()) argv.push_back(ifaces);
    absl::StatusOr<pid_t> pid = stack_->SpawnProcess("gnode1", name, argv);
    if (!pid.ok()) return pid.status();
    c.pid = *pid;
    for (const absl::Time deadline = absl::Now() + absl::Seconds(20); absl::Now() < deadline;) {
      if (absl::StrContains(ReadFileOrEmpty(c.log), "capturing")) return c;
      absl::SleepFor(absl::Milliseconds(50));
    }
    (void)stack_->StopProcess(c.pid);
    return absl::DeadlineExceededError("capture.py did not start: " + ReadFileOrEmpty(c.log));
  }
  absl::StatusOr<CaptureCounts> FinishCapture(const Capture& c) {
    std::ofstream(c.stop).close();
    absl::StatusOr<CaptureCounts> counts = absl::InternalError("no counts");
    for (const absl::Time deadline = absl::Now() + absl::Seconds(20); absl::Now() < deadline;) {
      counts = ParseCaptureLine(ReadFileOrEmpty(c.log));
      if (counts.ok()) break;
      absl::SleepFor(absl::Milliseconds(50));
    }
    (void)stack_->StopProcess(c.pid);
    std::filesystem::remove(c.stop);
    return counts;
  }

  // slurmd registered, was given the job and reported it done, all through the tunnel: IKE and ESP-in-UDP only,
  // besides the enrollment listener's TLS; not one plaintext packet to or from Slurm or NFS ports.
  void ExpectOnlyTunnelAndEnrollment(const Capture& capture) {
    absl::StatusOr<CaptureCounts> seen = FinishCapture(capture);
    ASSERT_TRUE(seen.ok()) << seen.status();
    std::fprintf(stderr, "uplink capture, workload subnet <-> controlling VM: %s\n", seen->line.c_str());
    EXPECT_GT(seen->ike_esp, 0) << seen->line;
    EXPECT_EQ(seen->sensitive, 0) << seen->line;
    EXPECT_EQ(seen->raw_esp, 0) << seen->line;
    EXPECT_EQ(seen->dropped, 0) << seen->line;
    const std::string enrollment = E2eStack::EnrollmentAddress();
    const std::string enrollment_port = enrollment.substr(enrollment.rfind(':') + 1);
    const std::string others = seen->line.substr(seen->line.find("others=") + 7);
    for (absl::string_view kind : absl::StrSplit(others, ',', absl::SkipEmpty())) {
      if (kind == "-") continue;
      EXPECT_TRUE(absl::StartsWith(kind, absl::StrCat("tcp/", enrollment_port, "/")))
          << "plaintext other than enrollment between workload and controlling VM: " << kind << " in "
          << seen->line;
    }
  }

  // What the controlling VM's charon still holds (its VICI socket; vm-controller's own charon).
  absl::StatusOr<CharonHoldings> VmCharonHoldings() {
    absl::StatusOr<ViciClient> vici =
        ViciClient::Connect(stack_->dir() + "/vm-controller/charon/charon.vici", absl::Seconds(5));
    if (!vici.ok()) return vici.status();
    return GetHoldings(*vici);
  }
};

std::string RandomMarker() {
  std::random_device rd;
  return absl::StrCat("sr-project-data-", rd(), "-", rd());
}

// Every regular file below `root` (symlinks not followed) that contains `needle`.
std::vector<std::string> FilesContaining(const std::string& root, const std::string& needle) {
  std::vector<std::string> hits;
  std::error_code ec;
  for (auto it = std::filesystem::recursive_directory_iterator(
           root, std::filesystem::directory_options::skip_permission_denied, ec);
       !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
    if (!it->is_regular_file(ec) || it->is_symlink(ec)) continue;
    if (it->file_size(ec) > (uint64_t{512} << 20)) continue;
    if (absl::StrContains(ReadFileOrEmpty(it->path().string()), needle)) hits.push_back(it->path().string());
  }
  return hits;
}

TEST_F(DataPathTest, AnExclusiveJobReachesItsControllingVmOnlyThroughTheTunnel) {
  absl::StatusOr<Capture> capture = StartCapture("uplink-capture");
  ASSERT_TRUE(capture.ok()) << capture.status();

  absl::StatusOr<SubmittedJob> job = jobs_->Submit(ProbeScript(/*sleep_seconds=*/3));
  ASSERT_TRUE(job.ok()) << job.status();
  absl::StatusOr<v1::LocalJob> running = jobs_->WaitLocal(*job, v1::LOCAL_JOB_STATE_RUNNING, absl::Seconds(90));
  ASSERT_TRUE(running.ok()) << running.status();
  // While it runs, the controlling VM's charon has the workload's tunnel up.
  absl::StatusOr<CharonHoldings> during = VmCharonHoldings();
  ASSERT_TRUE(during.ok()) << during.status();
  EXPECT_GE(during->sas, 1u);
  absl::StatusOr<v1::LocalJob> done = jobs_->WaitLocal(*job, v1::LOCAL_JOB_STATE_COMPLETED, absl::Seconds(90));
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_EQ(jobs_->LocalSlurmState(job->local_job_id), "COMPLETED");

  ExpectOnlyTunnelAndEnrollment(*capture);

  // The job ran where it should, as its user, and its output reached the user; its own connect to slurmctld
  // went through the tunnel (the capture has no plaintext 6817).
  const std::map<std::string, std::string> out = KeyValues(jobs_->Output(*job));
  ASSERT_FALSE(out.empty()) << "no job output in " << job->output_path;
  EXPECT_EQ(out.at("hostname"), running->node_name());
  EXPECT_EQ(out.at("user"), "nobody:65534");
  EXPECT_EQ(out.at("allowlisted"), "connected");
  EXPECT_EQ(out.at("other"), "blocked");

  ExpectClean();
  // Nothing is left on the controlling VM for the ended workload: no connection, no SA.
  absl::StatusOr<CharonHoldings> after = VmCharonHoldings();
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(after->connections, 0u);
  EXPECT_EQ(after->sas, 0u);
}

TEST_F(DataPathTest, AJobThatSharesItsNodeRunsInAVmThatAlsoUsesOnlyTheTunnel) {
  // The VM's own kernel (Debian's, qemu TCG) runs charon with kernel ESP; the same entrypoint enrolls.
  absl::StatusOr<Capture> capture = StartCapture("uplink-capture-vm");
  ASSERT_TRUE(capture.ok()) << capture.status();
  absl::StatusOr<SubmittedJob> job = jobs_->SubmitShared(ProbeScript(/*sleep_seconds=*/2), {"-n1"});
  ASSERT_TRUE(job.ok()) << job.status();
  absl::StatusOr<v1::LocalJob> done = jobs_->WaitLocal(*job, v1::LOCAL_JOB_STATE_COMPLETED, absl::Seconds(300));
  ASSERT_TRUE(done.ok()) << done.status();
  ExpectOnlyTunnelAndEnrollment(*capture);
  const std::map<std::string, std::string> out = KeyValues(jobs_->Output(*job));
  ASSERT_FALSE(out.empty()) << "no job output in " << job->output_path;
  EXPECT_NE(out.at("kernel"), ReadFileOrEmpty("/proc/sys/kernel/osrelease").substr(0, out.at("kernel").size()));
  EXPECT_EQ(out.at("allowlisted"), "connected");
  EXPECT_EQ(out.at("other"), "blocked");
  ExpectClean(absl::Seconds(120));
  absl::StatusOr<CharonHoldings> after = VmCharonHoldings();
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(after->connections, 0u);
  EXPECT_EQ(after->sas, 0u);
}

TEST_F(DataPathTest, AWorkloadRootThatRemovesItsGuardsAndSpoofsGetsNoPlaintextPastTheSwitch) {
  // Container root holds CAP_NET_ADMIN in its own netns (for the tunnel): a compromised workload can drop the
  // plaintext guard and the tunnel's routes, take another address and send plaintext Slurm to the controlling
  // VM. netd's switch must stop all of it: nothing beyond the workload's own veth (the uplink, the node's links).
  absl::StatusOr<SubmittedJob> job = jobs_->Submit(ProbeScript(/*sleep_seconds=*/30));
  ASSERT_TRUE(job.ok()) << job.status();
  absl::StatusOr<v1::LocalJob> running = jobs_->WaitLocal(*job, v1::LOCAL_JOB_STATE_RUNNING, absl::Seconds(90));
  ASSERT_TRUE(running.ok()) << running.status();
  absl::StatusOr<Capture> sent = StartCapture("attack-sent", "0.0.0.0/0");
  ASSERT_TRUE(sent.ok()) << sent.status();
  absl::StatusOr<Capture> beyond = StartCapture("attack-beyond", "0.0.0.0/0", "uplink,gw0,eth0");
  ASSERT_TRUE(beyond.ok()) << beyond.status();
  const std::string attack =
      "ip rule del pref 230; ip rule del pref 220; ip route flush table 220; "
      "for i in 1 2; do timeout 2 bash -c 'exec 3<>/dev/tcp/198.51.100.40/6817'; done; "
      "ip addr add 203.0.113.9/28 dev eth0; ip route replace 198.51.100.40 dev eth0 src 203.0.113.9; "
      "timeout 2 bash -c 'exec 3<>/dev/tcp/198.51.100.40/6817'; "
      "ip link set eth0 address 02:00:00:00:99:99; timeout 2 bash -c 'exec 3<>/dev/tcp/198.51.100.40/2049'; true";
  const std::string runc_root = stack_->dir() + "/gnode1/host-agent/runtime";
  absl::StatusOr<RunResult> exec = ::strongroom::Run(
      {"/usr/sbin/runc", "--root", runc_root, "exec", running->workload_id(), "/bin/bash", "-c", attack},
      absl::Seconds(30));
  ASSERT_TRUE(exec.ok()) << exec.status();
  absl::StatusOr<CaptureCounts> at_veth = FinishCapture(*sent);
  absl::StatusOr<CaptureCounts> past_switch = FinishCapture(*beyond);
  ASSERT_TRUE(at_veth.ok()) << at_veth.status();
  ASSERT_TRUE(past_switch.ok()) << past_switch.status();
  std::fprintf(stderr, "attack: sent %s\nattack: past the switch %s\nrunc exec: %s\n", at_veth->line.c_str(),
               past_switch->line.c_str(), exec->output.c_str());
  EXPECT_GT(at_veth->sensitive, 0) << "the attack sent nothing: " << exec->output;  // it did leave the workload
  EXPECT_EQ(past_switch->sensitive, 0) << past_switch->line;
  CommandResult cancel = stack_->Local(kUser, {"scancel", absl::StrCat(job->local_job_id)});
  EXPECT_EQ(cancel.exit_code, 0) << cancel.output;
  absl::StatusOr<v1::LocalJob> ended = jobs_->WaitLocal(*job, v1::LOCAL_JOB_STATE_CANCELLED, absl::Seconds(90));
  EXPECT_TRUE(ended.ok()) << ended.status();
  ExpectClean();
}

TEST_F(DataPathTest, AfterAJobTheComputeHostHoldsNoMungeKeyWorkloadKeyOrProjectData) {
  const std::string marker = RandomMarker();
  // The job writes project data into the share (its working directory) and its output.
  absl::StatusOr<SubmittedJob> job = jobs_->Submit(
      absl::StrCat("#!/bin/bash\necho \"data=", marker, "\"\necho ", marker, " > data-$SLURM_JOB_ID.txt\nsleep 1\n"));
  ASSERT_TRUE(job.ok()) << job.status();
  absl::StatusOr<v1::LocalJob> done = jobs_->WaitLocal(*job, v1::LOCAL_JOB_STATE_COMPLETED, absl::Seconds(120));
  ASSERT_TRUE(done.ok()) << done.status();
  ASSERT_TRUE(absl::StrContains(jobs_->Output(*job), marker)) << jobs_->Output(*job);
  ExpectClean();

  const std::string munge_key = ReadFileOrEmpty(stack_->dir() + "/local-slurm/munge/munge.key");
  ASSERT_GE(munge_key.size(), 32u);
  // The compute host: its node directory (host-agent's state and database, netd, OVS, libvirt) and its daemons'
  // logs; backend's logs, audit spool, database and audit chain.
  std::vector<std::string> roots = {stack_->dir() + "/gnode1", stack_->dir() + "/backend-audit-spool"};
  std::vector<std::string> logs;
  for (const auto& e : std::filesystem::directory_iterator(stack_->dir() + "/logs")) {
    const std::string name = e.path().filename();
    if (absl::StartsWith(name, "gnode1-") || absl::StartsWith(name, "backend") ||
        absl::StartsWith(name, "global-job-"))
      logs.push_back(e.path());
  }
  const std::string dump = stack_->dir() + "/backend-db.dump";
  CommandResult dumped = stack_->DumpBackendDatabase(dump);
  ASSERT_EQ(dumped.exit_code, 0) << dumped.output;
  CommandResult audit = stack_->Ctl("backend", {"audit", "query", "--limit", "100000"});
  ASSERT_EQ(audit.exit_code, 0) << audit.output;
  std::ofstream(stack_->dir() + "/backend-audit.txt") << audit.output;
  logs.push_back(dump);
  logs.push_back(stack_->dir() + "/backend-audit.txt");

  for (const auto& [what, needle] : std::vector<std::pair<std::string, std::string>>{
           {"the munge key", munge_key.substr(0, 32)},
           {"a private key (PEM)", "PRIVATE KEY-----"},
           {"the project's data", marker}}) {
    for (const std::string& root : roots) {
      EXPECT_EQ(FilesContaining(root, needle), std::vector<std::string>{}) << what << " under " << root;
    }
    for (const std::string& log : logs) {
      EXPECT_FALSE(absl::StrContains(ReadFileOrEmpty(log), needle)) << what << " in " << log;
    }
  }
  std::filesystem::remove(dump);
  std::filesystem::remove(stack_->dir() + "/backend-audit.txt");
}

TEST_F(DataPathTest, AWorkloadWhoseTunnelCannotComeUpFailsTheJobEverywhereAndLeavesNothing) {
  // The controlling VM drops IKE (UDP 500 and 4500): enrollment works (TCP), the tunnel cannot come up.
  const std::vector<std::vector<std::string>> block = {
      {"/usr/sbin/nft", "add", "table", "inet", "sr_e2e_block"},
      {"/usr/sbin/nft", "add", "chain", "inet", "sr_e2e_block", "in", "{ type filter hook input priority 0 ; }"},
      {"/usr/sbin/nft", "add", "rule", "inet", "sr_e2e_block", "in", "udp", "dport", "{ 500, 4500 }", "drop"}};
  for (const auto& argv : block) {
    CommandResult r = stack_->OnHost("lctl", argv);
    ASSERT_EQ(r.exit_code, 0) << r.output;
  }
  absl::StatusOr<SubmittedJob> job = jobs_->Submit(ProbeScript(1));
  absl::StatusOr<v1::LocalJob> failed = absl::InternalError("not submitted");
  if (job.ok()) failed = jobs_->WaitLocal(*job, v1::LOCAL_JOB_STATE_FAILED, absl::Seconds(150));
  CommandResult unblock = stack_->OnHost("lctl", {"/usr/sbin/nft", "delete", "table", "inet", "sr_e2e_block"});
  EXPECT_EQ(unblock.exit_code, 0) << unblock.output;
  ASSERT_TRUE(job.ok()) << job.status();
  ASSERT_TRUE(failed.ok()) << failed.status();
  // Everywhere, with the reason: backend's job, vm-controller's local job, the Local Slurm job.
  absl::StatusOr<v1::Job> global = jobs_->GlobalJob(failed->global_job_id());
  ASSERT_TRUE(global.ok()) << global.status();
  EXPECT_EQ(global->state(), v1::JOB_STATE_FAILED);
  EXPECT_TRUE(absl::StrContains(absl::AsciiStrToLower(global->failure().ShortDebugString()), "tunnel"))
      << global->ShortDebugString();
  EXPECT_TRUE(absl::StrContains(absl::AsciiStrToLower(failed->failure().ShortDebugString()), "tunnel"))
      << failed->ShortDebugString();
  const std::string slurm_state = jobs_->LocalSlurmState(job->local_job_id);
  EXPECT_TRUE(slurm_state == "CANCELLED" || slurm_state == "FAILED" || slurm_state.empty()) << slurm_state;
  ExpectClean();
  absl::StatusOr<CharonHoldings> after = VmCharonHoldings();
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(after->connections, 0u);
  EXPECT_EQ(after->sas, 0u);

  // And the next job, with IKE allowed again, runs.
  absl::StatusOr<SubmittedJob> next = jobs_->Submit(ProbeScript(1));
  ASSERT_TRUE(next.ok()) << next.status();
  absl::StatusOr<v1::LocalJob> ok = jobs_->WaitLocal(*next, v1::LOCAL_JOB_STATE_COMPLETED, absl::Seconds(120));
  EXPECT_TRUE(ok.ok()) << ok.status();
  ExpectClean();
}

}  // namespace
}  // namespace strongroom::e2e
