// Jobs that share a node run in VMs (issue 15), on the same stack as the container jobs (e2e_end_to_end.h): a
// researcher's plain `sbatch -n1` on the Local Slurm becomes a non-exclusive Global job whose workload is a VM
// (libvirt, qemu TCG here) on the node's br-secure, whose slurmd joins the Local Slurm like a container's.
//   - the job's output shows it ran in a VM: its own kernel, the VM's hostname, its br-secure address; the
//     allowlisted controller answers and another host does not;
//   - two such jobs at once on one node run in two VMs that cannot reach each other (a witness on each VM's tap
//     counts what the switch delivered from the other);
//   - an --exclusive job (container) and a shared one (VM) run at the same time; while the VM runs, host-agent is
//     killed with SIGKILL and restarted: it adopts the VM, and the job completes;
//   - the VM's disk file on the host holds no byte of the plaintext the job wrote, and host-agent's state and logs
//     and libvirt's files hold no key material (no munge key bytes, no long hex key);
//   - nothing is left afterwards (no domain, qemu, tap, disk file).
#include <sys/utsname.h>
#include <unistd.h>

#include <filesystem>
#include <functional>
#include <fstream>
#include <regex>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "tests/e2e/e2e_end_to_end.h"
#include "tests/e2e/e2e_jobs.h"
#include "tests/rig/files.h"

namespace strongroom::e2e {
namespace {

// A VM boots and starts slurmd under TCG before its job runs.
constexpr absl::Duration kVmJobStart = absl::Seconds(240);
constexpr char kMarker[] = "SR-E2E-VM-PLAINTEXT-7c41d2";

std::string HostKernel() {
  struct utsname u;
  uname(&u);
  return u.release;
}

// Where a live workload is: its node and host-agent's record of it.
struct Placement {
  std::string node;
  v1::Workload workload;
};

std::optional<Placement> FindWorkload(E2eStack* stack, const std::string& workload_id) {
  for (const std::string& node : stack->node_names()) {
    for (const v1::Workload& w : stack->Workloads(node)) {
      if (w.spec().workload_id() == workload_id) return Placement{node, w};
    }
  }
  return std::nullopt;
}

// A job that prints the probe lines, then runs `body` (bash), then waits until `release` exists (at most 300 s).
std::string GatedScript(const std::string& body, const std::string& release) {
  std::string probe = ProbeScript(0);
  probe = probe.substr(0, probe.rfind("sleep "));
  return absl::StrCat(probe, body, "\nfor i in $(seq 3000); do [ -e ", release, " ] && break; sleep 0.1; done\n",
                      "echo released=1\n");
}

std::string ReadAll(const std::string& path) { return ReadFileOrEmpty(path); }

// Polls `read` until what it returns contains `text` or `timeout` passes; true if it did.
bool WaitForText(const std::function<std::string()>& read, const std::string& text, absl::Duration timeout) {
  for (const absl::Time deadline = absl::Now() + timeout; absl::Now() < deadline;) {
    if (absl::StrContains(read(), text)) return true;
    absl::SleepFor(absl::Milliseconds(100));
  }
  return absl::StrContains(read(), text);
}

// Every regular file under `dir` (recursively), with its contents.
std::vector<std::pair<std::string, std::string>> FilesUnder(const std::string& dir) {
  std::vector<std::pair<std::string, std::string>> out;
  std::error_code ec;
  for (auto it = std::filesystem::recursive_directory_iterator(
           dir, std::filesystem::directory_options::skip_permission_denied, ec);
       it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
    if (ec) break;
    if (it->is_regular_file(ec) && !it->is_symlink(ec)) out.emplace_back(it->path().string(), ReadAll(it->path()));
  }
  return out;
}

TEST_F(EndToEndTest, AJobThatSharesItsNodeRunsInAVmOfItsOwn) {
  absl::StatusOr<SubmittedJob> job = jobs_->SubmitShared(ProbeScript(/*sleep_seconds=*/2), {"-n1"});
  ASSERT_TRUE(job.ok()) << job.status();
  absl::StatusOr<v1::LocalJob> running = jobs_->WaitLocal(*job, v1::LOCAL_JOB_STATE_RUNNING, kVmJobStart);
  ASSERT_TRUE(running.ok()) << running.status();
  absl::StatusOr<v1::Job> global = jobs_->GlobalJob(running->global_job_id());
  ASSERT_TRUE(global.ok()) << global.status();
  EXPECT_EQ(global->workload().kind(), v1::WORKLOAD_KIND_VM);
  // Not a whole node on the Global Slurm: the node stays shareable.
  CommandResult show = stack_->Global({"scontrol", "show", "job", absl::StrCat(global->ref().global_slurm_job_id())});
  EXPECT_FALSE(absl::StrContains(show.output, "OverSubscribe=NO")) << show.output;
  std::optional<Placement> at = FindWorkload(stack_, running->workload_id());
  ASSERT_TRUE(at.has_value()) << "no host-agent has workload " << running->workload_id();
  EXPECT_EQ(at->workload.spec().kind(), v1::WORKLOAD_KIND_VM);
  EXPECT_FALSE(at->workload.spec().whole_node());
  // Sized to its Global allocation: the job's CPU and memory (the Local default, 100 MB a CPU) plus the guest
  // OS's overhead (backend's vm_memory_overhead_mb, 384 by default), which is what the Global job holds.
  EXPECT_EQ(at->workload.spec().resources().cpus(), 1u);
  EXPECT_EQ(at->workload.spec().resources().memory_bytes(), uint64_t{100 + 384} << 20);
  EXPECT_TRUE(absl::StrContains(show.output, "MinMemoryNode=484M")) << show.output;
  EXPECT_TRUE(absl::StrContains(show.output, "NumCPUs=1 ")) << show.output;
  const std::string vm_address = at->workload.network().ipv4_address();

  absl::StatusOr<v1::LocalJob> done = jobs_->WaitLocal(*job, v1::LOCAL_JOB_STATE_COMPLETED, absl::Seconds(120));
  ASSERT_TRUE(done.ok()) << done.status();
  const std::map<std::string, std::string> out = KeyValues(jobs_->Output(*job));
  ASSERT_FALSE(out.empty()) << "no job output in " << job->output_path;
  // Its own kernel (Debian's, booted by qemu), the VM's hostname, its br-secure address; no user namespace (the
  // VM is the boundary).
  EXPECT_NE(out.at("kernel"), HostKernel());
  EXPECT_EQ(out.at("hostname"), running->node_name());
  EXPECT_EQ(out.at("address"), vm_address);
  EXPECT_EQ(out.at("uid_map"), "0 0 4294967295");
  EXPECT_EQ(out.at("user"), "nobody:65534");
  EXPECT_EQ(out.at("allowlisted"), "connected");
  EXPECT_EQ(out.at("other"), "blocked");
  ExpectClean();
}

TEST_F(EndToEndTest, TwoSharedJobsOnOneNodeRunInTwoVmsThatCannotReachEachOther) {
  absl::StatusOr<std::string> dir = stack_->UserDir(kUser);
  ASSERT_TRUE(dir.ok());
  const std::string tag = absl::StrCat(getpid(), "-", absl::ToUnixMicros(absl::Now()));
  const std::string peers = absl::StrCat(*dir, "/peers-", tag), release = absl::StrCat(*dir, "/release-", tag);
  // Each job waits for the test to name the other VM's address, then tries it: slurmd's port (a listener is
  // there), ssh, and UDP.
  const std::string body = absl::StrCat(
      "for i in $(seq 2400); do [ -s ", peers, " ] && break; sleep 0.1; done\n",
      "me=$(ip -4 -o addr show scope global | awk '{ sub(\"/.*\", \"\", $4); print $4; exit }')\n",
      "for ip in $(cat ", peers, "); do [ \"$ip\" = \"$me\" ] && continue\n",
      "  for port in 6818 22; do\n",
      "    if timeout 3 bash -c \"exec 3<>/dev/tcp/$ip/$port\" 2>/dev/null; then echo peer_tcp_$port=connected; "
      "else echo peer_tcp_$port=blocked; fi\n",
      "  done\n",
      "  for n in 1 2 3; do echo SR-PEER-PROBE >/dev/udp/$ip/7000; done 2>/dev/null\n",
      "done\necho probed=1\n");
  absl::StatusOr<SubmittedJob> a = jobs_->SubmitShared(GatedScript(body, release), {"-n1"});
  ASSERT_TRUE(a.ok()) << a.status();
  absl::StatusOr<SubmittedJob> b = jobs_->SubmitShared(GatedScript(body, release), {"-n1"});
  ASSERT_TRUE(b.ok()) << b.status();
  absl::StatusOr<v1::LocalJob> ra = jobs_->WaitLocal(*a, v1::LOCAL_JOB_STATE_RUNNING, kVmJobStart);
  ASSERT_TRUE(ra.ok()) << ra.status();
  absl::StatusOr<v1::LocalJob> rb = jobs_->WaitLocal(*b, v1::LOCAL_JOB_STATE_RUNNING, kVmJobStart);
  ASSERT_TRUE(rb.ok()) << rb.status();
  std::optional<Placement> pa = FindWorkload(stack_, ra->workload_id());
  std::optional<Placement> pb = FindWorkload(stack_, rb->workload_id());
  ASSERT_TRUE(pa.has_value() && pb.has_value());
  EXPECT_EQ(pa->node, pb->node) << "the Global Slurm put the two shared jobs on different nodes";
  EXPECT_NE(pa->workload.network().port_name(), pb->workload.network().port_name());
  const std::string ip_a = pa->workload.network().ipv4_address(), ip_b = pb->workload.network().ipv4_address();

  // A witness on each VM's tap: what the switch delivers to that VM from the other one.
  const std::string stop = absl::StrCat(stack_->dir(), "/witness-stop-", tag);
  std::vector<std::pair<pid_t, std::string>> witnesses;
  for (const auto& [p, from] : {std::pair{&*pa, ip_b}, std::pair{&*pb, ip_a}}) {
    const std::string log = absl::StrCat("witness-", p->workload.network().port_name(), "-", tag);
    absl::StatusOr<pid_t> pid = stack_->SpawnProcess(
        p->node, log, {SR_SOURCE_DIR "/tests/e2e/tap_witness.py", p->workload.network().port_name(), from, stop});
    ASSERT_TRUE(pid.ok()) << pid.status();
    witnesses.emplace_back(*pid, stack_->dir() + "/logs/" + log + ".log");
  }
  for (const auto& [pid, log] : witnesses) {
    ASSERT_TRUE(WaitForText([&] { return ReadAll(log); }, "ready", absl::Seconds(20))) << ReadAll(log);
  }
  {
    std::ofstream(peers + ".tmp") << ip_a << "\n" << ip_b << "\n";
    std::filesystem::rename(peers + ".tmp", peers);
  }
  for (const SubmittedJob* j : {&*a, &*b}) {
    (void)WaitForText([&] { return jobs_->Output(*j); }, "probed=1", absl::Seconds(60));
  }
  std::ofstream(stop) << "stop\n";
  std::ofstream(release) << "go\n";
  for (const auto& [pid, log] : witnesses) {
    (void)WaitForText([&] { return ReadAll(log); }, "from_src=", absl::Seconds(10));
    EXPECT_TRUE(absl::StrContains(ReadAll(log), "from_src=0\n")) << "a VM received packets from the other: " << ReadAll(log);
    (void)stack_->StopProcess(pid);
  }
  for (const SubmittedJob* j : {&*a, &*b}) {
    absl::StatusOr<v1::LocalJob> done = jobs_->WaitLocal(*j, v1::LOCAL_JOB_STATE_COMPLETED, absl::Seconds(120));
    ASSERT_TRUE(done.ok()) << done.status();
    const std::map<std::string, std::string> out = KeyValues(jobs_->Output(*j));
    EXPECT_EQ(out.count("probed"), 1u) << jobs_->Output(*j);
    EXPECT_EQ(out.count("peer_tcp_6818") ? out.at("peer_tcp_6818") : "", "blocked");
    EXPECT_EQ(out.count("peer_tcp_22") ? out.at("peer_tcp_22") : "", "blocked");
    // Each still reaches its own allowlist.
    EXPECT_EQ(out.at("allowlisted"), "connected");
  }
  ExpectClean();
}

TEST_F(EndToEndTest, AContainerAndAVmRunAtOnceTheVmSurvivesAnAgentCrashAndItsDiskHoldsOnlyCiphertext) {
  absl::StatusOr<std::string> dir = stack_->UserDir(kUser);
  ASSERT_TRUE(dir.ok());
  const std::string tag = absl::StrCat(getpid(), "-", absl::ToUnixMicros(absl::Now()));
  const std::string release = absl::StrCat(*dir, "/release-", tag);
  // The VM's job writes the marker to its root file system (the overlay on the guest-encrypted disk) and flushes
  // it to the disk.
  const std::string write_marker = absl::StrCat("for i in $(seq 20000); do echo ", kMarker,
                                                "; done > /var/tmp/job-data\nsync\necho wrote=$(wc -c </var/tmp/job-data)\n");
  absl::StatusOr<SubmittedJob> container = jobs_->Submit(GatedScript("", release));
  ASSERT_TRUE(container.ok()) << container.status();
  absl::StatusOr<SubmittedJob> vm = jobs_->SubmitShared(GatedScript(write_marker, release), {"-n1"});
  ASSERT_TRUE(vm.ok()) << vm.status();
  absl::StatusOr<v1::LocalJob> rc = jobs_->WaitLocal(*container, v1::LOCAL_JOB_STATE_RUNNING, kVmJobStart);
  ASSERT_TRUE(rc.ok()) << rc.status();
  absl::StatusOr<v1::LocalJob> rv = jobs_->WaitLocal(*vm, v1::LOCAL_JOB_STATE_RUNNING, kVmJobStart);
  ASSERT_TRUE(rv.ok()) << rv.status();
  std::optional<Placement> pc = FindWorkload(stack_, rc->workload_id());
  std::optional<Placement> pv = FindWorkload(stack_, rv->workload_id());
  ASSERT_TRUE(pc.has_value() && pv.has_value());
  EXPECT_EQ(pc->workload.spec().kind(), v1::WORKLOAD_KIND_CONTAINER);
  EXPECT_EQ(pv->workload.spec().kind(), v1::WORKLOAD_KIND_VM);
  EXPECT_NE(pc->node, pv->node) << "an exclusive job shares its node";
  // Both run at the same time (each waits for the release file). The Local Slurm starts a released job on its
  // next scheduling pass.
  EXPECT_TRUE(jobs_->WaitLocalSlurmState(container->local_job_id, "RUNNING", absl::Seconds(30)).ok());
  EXPECT_TRUE(jobs_->WaitLocalSlurmState(vm->local_job_id, "RUNNING", absl::Seconds(30)).ok());
  EXPECT_EQ(jobs_->LocalSlurmState(container->local_job_id), "RUNNING");

  ASSERT_TRUE(WaitForText([&] { return jobs_->Output(*vm); }, "wrote=", absl::Seconds(60))) << jobs_->Output(*vm);
  // The host's view, while the VM runs: its disk file, host-agent's state and log, libvirt's files.
  const std::string agent_state = absl::StrCat(stack_->dir(), "/", pv->node, "/host-agent");
  const std::string disk = absl::StrCat(agent_state, "/workloads/", rv->workload_id(), "/disk.img");
  ASSERT_TRUE(std::filesystem::exists(disk)) << disk;
  const std::string munge_key = ReadAll(absl::StrCat(stack_->dir(), "/secrets/", E2eStack::kLocalCluster, "/munge-key"));
  ASSERT_GE(munge_key.size(), 32u);
  std::vector<std::pair<std::string, std::string>> files = FilesUnder(agent_state);
  for (auto& f : FilesUnder(stack_->LibvirtDir(pv->node))) files.push_back(std::move(f));
  files.emplace_back("host-agent log", ReadAll(absl::StrCat(stack_->dir(), "/logs/", pv->node, "-host-agent.log")));
  files.emplace_back("libvirtd log", ReadAll(absl::StrCat(stack_->dir(), "/logs/", pv->node, "-libvirtd.log")));
  static const std::regex* const kLongHex = new std::regex("[0-9a-fA-F]{128,}");
  bool saw_disk = false;
  for (const auto& [path, bytes] : files) {
    EXPECT_FALSE(absl::StrContains(bytes, kMarker)) << path << " holds the job's plaintext";
    EXPECT_FALSE(absl::StrContains(bytes, munge_key)) << path << " holds the Local munge key";
    if (path == disk) {
      saw_disk = true;
      continue;  // ciphertext: any byte pattern
    }
    std::smatch hex;
    EXPECT_FALSE(std::regex_search(bytes, hex, *kLongHex)) << path << " holds a long hex string: " << hex.str();
  }
  EXPECT_TRUE(saw_disk);

  // host-agent dies while the VM runs; the restarted agent adopts the VM (the same domain), and the job goes on.
  const std::string domain_before = pv->workload.runtime_id();
  ASSERT_TRUE(stack_->KillDaemon("host-agent/" + pv->node).ok());
  ASSERT_TRUE(stack_->RestartDaemon("host-agent/" + pv->node).ok());
  std::optional<Placement> adopted = FindWorkload(stack_, rv->workload_id());
  ASSERT_TRUE(adopted.has_value());
  EXPECT_EQ(adopted->workload.state(), v1::WORKLOAD_STATE_RUNNING);
  EXPECT_EQ(adopted->workload.runtime_id(), domain_before);

  std::ofstream(release) << "go\n";
  for (const SubmittedJob* j : {&*container, &*vm}) {
    absl::StatusOr<v1::LocalJob> done = jobs_->WaitLocal(*j, v1::LOCAL_JOB_STATE_COMPLETED, absl::Seconds(120));
    ASSERT_TRUE(done.ok()) << done.status();
    EXPECT_TRUE(absl::StrContains(jobs_->Output(*j), "released=1")) << jobs_->Output(*j);
  }
  ExpectClean();
  EXPECT_FALSE(std::filesystem::exists(disk)) << "the VM's disk file was left";
}

}  // namespace
}  // namespace strongroom::e2e
