// The end-to-end benchmark: N sequential exclusive jobs through the whole stack (tests/e2e/e2e_stack.h), each
// measured from just before `sbatch` on the Local Slurm to (a) the user's command running inside the container
// and (b) everything scrubbed, with a per-step breakdown from backend's timeline. The anchor, in the same run: the
// same trivial job submitted straight to the Global Slurm (a static node, no container, no provisioning).
// With --vm-jobs M, also M sequential jobs that share their node (plain `sbatch -n1`: a VM, qemu TCG here), and
// their anchors: a bare qemu direct-kernel boot of the same VM image to userspace (the VM initramfs's root ready),
// and the same bare qemu running the workload's entrypoint until its slurmd registered (BareQemuSlurmd).
//
// With --data-path-jobs K, then K sequential exclusive jobs on a second stack whose project has the secure data path
// (issue 14: enrollment, IKE to the controlling VM's charon, then slurmd through the tunnel), in the same run; the
// table's "data path adds" rows are the difference to the plaintext container jobs' medians / p99s.
//
//   build/tests/bench/e2e_bench [--jobs 20] [--vm-jobs 0] [--data-path-jobs 0] [--nodes 2]
#include <signal.h>

#include <algorithm>
#include <filesystem>
#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/subprocess.h"
#include "services/host_agent/vm/vm_driver.h"
#include "tests/e2e/e2e_jobs.h"
#include "tests/e2e/e2e_stack.h"
#include "tests/rig/files.h"

namespace strongroom::e2e {
namespace {

constexpr const char* kUser = "nobody";
// backend's timeline, in order: the global job queued, started (the node is ours), the workload ready, slurmd
// registered and the local job released, the local job ended, the workload stopped and scrubbed, all done.
const char* const kSteps[] = {"QUEUED",  "STARTING",          "PROVISIONING",      "RUNNING",
                              "RELEASING", "workload.stopping", "workload.scrubbed", "COMPLETED"};

struct Series {
  std::vector<double> ms;
  void Add(absl::Duration d) { ms.push_back(absl::ToDoubleMilliseconds(d)); }
  double Pct(double p) const {
    if (ms.empty()) return 0;
    std::vector<double> v = ms;
    std::sort(v.begin(), v.end());
    return v[std::min(v.size() - 1, static_cast<size_t>(p * (v.size() - 1) + 0.5))];
  }
};

void Print(const std::string& name, const Series& s) {
  std::printf("| %-44s | %9.0f | %9.0f | %3zu |\n", name.c_str(), s.Pct(0.5), s.Pct(0.99), s.ms.size());
}

std::optional<absl::Time> RunningAt(const std::string& output) {
  const size_t at = output.find("running_at=");
  double seconds = 0;
  if (at == std::string::npos ||
      !absl::SimpleAtod(output.substr(at + 11, output.find('\n', at) - at - 11), &seconds)) {
    return std::nullopt;
  }
  return absl::FromUnixNanos(static_cast<int64_t>(seconds * 1e9));
}

// When the workload's host-agent accepted its StartWorkload.
std::optional<absl::Time> AgentAccepted(E2eStack& s, const v1::JobWorkload& workload) {
  if (workload.node().empty()) return std::nullopt;
  CommandResult r = s.Ctl("host-agent/" + workload.node(),
                          {"call", "strongroom.v1.HostAgent/GetWorkload",
                           absl::StrCat(R"({"workloadId":")", workload.workload_id(), R"("})")});
  v1::GetWorkloadResponse response;
  if (r.exit_code != 0 || !ParseCtlJson(r.output, &response).ok() || !response.workload().has_created_time())
    return std::nullopt;
  return absl::FromUnixSeconds(response.workload().created_time().seconds()) +
         absl::Nanoseconds(response.workload().created_time().nanos());
}

// One job series: N sequential jobs, submit -> running, the full cycle, and backend's timeline steps.
struct JobSeries {
  Series to_running, full_cycle, provisioned;  // provisioned: global job started -> slurmd registered, job released
  // host-agent accepted StartWorkload (its record's created_time) -> slurmd registered, job released. backend's
  // STARTING is when its poll of the Global Slurm saw the job run, or, if the workload was ready first, that
  // WorkloadReady: it can miss host-agent's own start.
  Series agent_to_registered;
  std::map<std::string, Series> steps;
  int failed = 0;
};

// Appends `count` sequential jobs to `r`.
void RunJobs(E2eStack& stack, Jobs& jobs, int count, bool exclusive, JobSeries& r) {
  const std::string script = "#!/bin/bash\necho \"running_at=$(date +%s.%N)\"\n";
  const absl::Duration start_timeout = exclusive ? absl::Seconds(120) : absl::Seconds(300);
  for (int i = 0; i < count; ++i) {
    absl::StatusOr<SubmittedJob> job = exclusive ? jobs.Submit(script) : jobs.SubmitShared(script, {"-n1"});
    // Until the job has run, watch only its output file: a status call is a process with a TLS handshake,
    // and ten a second of them would take CPU from the VM's emulated CPU that its anchors do not lose.
    for (const absl::Time deadline = absl::Now() + start_timeout;
         job.ok() && absl::Now() < deadline && !RunningAt(ReadFileOrEmpty(job->output_path)).has_value();) {
      absl::SleepFor(absl::Milliseconds(20));
    }
    absl::StatusOr<v1::LocalJob> done =
        job.ok() ? jobs.WaitLocal(*job, v1::LOCAL_JOB_STATE_COMPLETED, start_timeout) : job.status();
    absl::StatusOr<v1::Job> global =
        done.ok() ? jobs.WaitGlobal(done->global_job_id(), v1::JOB_STATE_COMPLETED, absl::Seconds(60)) : done.status();
    absl::StatusOr<v1::GetJobTimelineResponse> timeline =
        global.ok() ? jobs.Timeline(done->global_job_id()) : global.status();
    std::optional<absl::Time> running = job.ok() ? RunningAt(jobs.Output(*job)) : std::nullopt;
    if (!timeline.ok() || !running.has_value()) {
      std::fprintf(stderr, "job %d failed: %s\n", i, timeline.status().ToString().c_str());
      ++r.failed;
      continue;
    }
    r.to_running.Add(*running - job->submitted);
    for (const char* step : kSteps) {
      if (std::optional<absl::Duration> d = EventOffset(*timeline, step, job->submitted)) r.steps[step].Add(*d);
    }
    std::optional<absl::Duration> started = EventOffset(*timeline, "STARTING", job->submitted);
    std::optional<absl::Duration> registered = EventOffset(*timeline, "RUNNING", job->submitted);
    if (started && registered) r.provisioned.Add(*registered - *started);
    if (std::optional<absl::Time> accepted = AgentAccepted(stack, global->workload()); accepted && registered)
      r.agent_to_registered.Add(job->submitted + *registered - *accepted);
    std::optional<absl::Duration> scrubbed = EventOffset(*timeline, "workload.scrubbed", job->submitted);
    std::optional<absl::Duration> completed = EventOffset(*timeline, "COMPLETED", job->submitted);
    r.full_cycle.Add(std::max(scrubbed.value_or(absl::ZeroDuration()), completed.value_or(absl::ZeroDuration())));
    std::fprintf(stderr, "%s job: running after %.0f ms\n", exclusive ? "container" : "VM",
                 absl::ToDoubleMilliseconds(*running - job->submitted));
  }
}

void PrintSeries(const char* kind, const JobSeries& r) {
  if (r.to_running.ms.empty()) return;
  Print(absl::StrCat("**", kind, ": submit -> user command running**"), r.to_running);
  Print(absl::StrCat("**", kind, ": full cycle (submit -> scrubbed)**"), r.full_cycle);
  Print(absl::StrCat(kind, ": global job started -> slurmd registered"), r.provisioned);
  Print(absl::StrCat("**", kind, ": StartWorkload accepted -> slurmd registered**"), r.agent_to_registered);
  for (const char* step : kSteps) {
    auto it = r.steps.find(step);
    Print(absl::StrCat("  ", kind, " timeline: ", step), it == r.steps.end() ? Series{} : it->second);
  }
}

// The VM anchor: qemu (TCG) boots the image's kernel and initramfs straight, with the same disks a workload's VM
// gets (the squashfs root, a fresh writable disk, a config disk; no libvirt, netd, NIC or bundle), until the
// initramfs prints that the root is ready (it then execs the entrypoint).
absl::StatusOr<absl::Duration> BareQemuBoot(const std::string& image_root, const std::string& dir) {
  std::filesystem::create_directories(dir);
  const std::string image = image_root + "/strongroom-workload";
  {
    std::ofstream disk(dir + "/disk.img");
    disk.close();
    std::filesystem::resize_file(dir + "/disk.img", E2eStack::kVmWritableDiskBytes);
    std::ofstream(dir + "/config.img", std::ios::binary) << host_agent::vm::ConfigDiskImage(
        {{"network.env", "SR_HOSTNAME='bare'\nSR_IP='203.0.113.99/28'\nSR_GW='203.0.113.97'\n"
                         "SR_ENTRYPOINT='/usr/libexec/strongroom/entrypoint'\n"}});
  }
  std::filesystem::remove(dir + "/console.log");
  const absl::Time t0 = absl::Now();
  absl::StatusOr<pid_t> qemu = Spawn(
      {"/usr/bin/qemu-system-x86_64", "-accel", "tcg", "-cpu", "max", "-m", "512", "-smp", "1", "-nodefaults",
       "-no-user-config", "-display", "none", "-no-reboot", "-serial", "file:" + dir + "/console.log", "-kernel",
       image + ".vmlinux", "-initrd", image + ".initrd", "-append", "console=ttyS0 panic=-1 loglevel=3 no_timer_check", "-drive",
       "file=" + image + ".squashfs,if=virtio,format=raw,readonly=on", "-drive",
       "file=" + dir + "/disk.img,if=virtio,format=raw,cache=none,aio=native", "-drive",
       "file=" + dir + "/config.img,if=virtio,format=raw,readonly=on", "-device", "virtio-rng-pci"},
      dir + "/qemu.log");
  if (!qemu.ok()) return qemu.status();
  absl::StatusOr<absl::Duration> result = absl::DeadlineExceededError("the bare VM did not reach userspace in 180 s");
  for (const absl::Time deadline = t0 + absl::Seconds(180); absl::Now() < deadline;) {
    if (absl::StrContains(ReadFileOrEmpty(dir + "/console.log"), "STRONGROOM-VM-ROOT")) {
      result = absl::Now() - t0;
      break;
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
  kill(*qemu, SIGKILL);
  (void)WaitChild(*qemu);
  return result;
}

// The second VM anchor: the same bare qemu, with the same bundle, munge key (9p, as development mode gives it) and
// entrypoint a workload's VM gets (its job user, its project share), on the Local controller's host with qemu's own user-mode NIC instead of netd's
// tap, until its slurmd has registered with the Local Slurm: everything the guest does in the VM path, none of
// host-agent, netd, libvirt or the Global job.
absl::StatusOr<absl::Duration> BareQemuSlurmd(E2eStack& s, int index) {
  const std::string dir = absl::StrCat(s.dir(), "/bare-slurmd-", index);
  const std::string node = absl::StrCat("bare-", index);
  std::filesystem::create_directories(dir);
  const std::string image = s.image_root() + "/strongroom-workload";
  {
    std::ofstream disk(dir + "/disk.img");
    disk.close();
    std::filesystem::resize_file(dir + "/disk.img", E2eStack::kVmWritableDiskBytes);
    const std::string bundle = absl::StrCat(
        "{\"localCluster\":\"", E2eStack::kLocalCluster, "\",\"slurmctldAddresses\":[\"", s.HostIp("lctl"),
        ":6817\"],\"nodeName\":\"", node, "\",\"features\":[\"strongroom\",\"", node, "\"],\"mungeSocket\":\"",
        s.dir(), "/local-slurm/munge/munge.sock\"}");
    std::ofstream(dir + "/config.img", std::ios::binary) << host_agent::vm::ConfigDiskImage(
        {{"network.env", absl::StrCat("SR_HOSTNAME='", node, "'\nSR_IP='10.0.2.15/24'\nSR_GW='10.0.2.2'\n",
                                      "SR_ENTRYPOINT='/usr/libexec/strongroom/entrypoint'\n")},
         // As a workload's VM gets them: the job's user (`nobody`, whose uid the image has) and the project
         // share (9p, development mode).
         {"workload.env", absl::StrCat("STRONGROOM_WORKLOAD_ID='", node, "'\nSTRONGROOM_NODE='bare'\n",
                                       "STRONGROOM_PROVISIONING='/run/strongroom/provisioning.json'\n",
                                       "SR_SLURM_AUTH_FILE='munge-key'\nSTRONGROOM_JOB_USER='", kUser,
                                       "'\nSTRONGROOM_JOB_UID='65534'\nSTRONGROOM_JOB_GID='65534'\n",
                                       "STRONGROOM_PROJECT_SHARE='", s.share(), "'\n")},
         {"provisioning.json", bundle}});
  }
  const absl::Time t0 = absl::Now();
  absl::StatusOr<pid_t> qemu = s.SpawnProcess(
      "lctl", "bare-slurmd-qemu-" + std::to_string(index),
      {"/usr/bin/qemu-system-x86_64", "-accel", "tcg", "-cpu", "max", "-m", "484", "-smp", "1", "-nodefaults",
       "-no-user-config", "-display", "none", "-no-reboot", "-serial", "file:" + dir + "/console.log", "-kernel",
       image + ".vmlinux", "-initrd", image + ".initrd", "-append", "console=ttyS0 panic=-1 loglevel=3 no_timer_check", "-drive",
       "file=" + image + ".squashfs,if=virtio,format=raw,readonly=on", "-drive",
       "file=" + dir + "/disk.img,if=virtio,format=raw,cache=none,aio=native", "-drive",
       "file=" + dir + "/config.img,if=virtio,format=raw,readonly=on", "-device", "virtio-rng-pci", "-netdev",
       "user,id=n0", "-device", "virtio-net-pci,netdev=n0", "-virtfs",
       absl::StrCat("local,path=", s.dir(), "/secrets/", E2eStack::kLocalCluster,
                    ",mount_tag=sr_slurm_auth,security_model=passthrough,readonly=on"),
       "-virtfs", absl::StrCat("local,path=", s.share(), ",mount_tag=sr_project_share,security_model=passthrough")});
  if (!qemu.ok()) return qemu.status();
  absl::StatusOr<absl::Duration> result =
      absl::DeadlineExceededError("the bare VM's slurmd did not register in 240 s; console: " + dir + "/console.log");
  for (const absl::Time deadline = t0 + absl::Seconds(240); absl::Now() < deadline;) {
    if (absl::StrContains(s.Local("", {"scontrol", "show", "node", node}).output, "NodeName=" + node)) {
      result = absl::Now() - t0;
      break;
    }
    absl::SleepFor(absl::Milliseconds(50));
  }
  (void)s.StopProcess(*qemu);
  (void)s.Local("", {"scontrol", "delete", "nodename=" + node});
  // Where its guest's time went (the entrypoint stamps its lines with the uptime).
  std::fprintf(stderr, "bare qemu slurmd %d console:\n%s\n", index, ReadFileOrEmpty(dir + "/console.log").c_str());
  return result;
}

int Main(int argc, char** argv) {
  int jobs_count = 20, vm_jobs = 0, data_path_jobs = 0;
  E2eOptions options;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--jobs" && absl::SimpleAtoi(argv[i + 1], &jobs_count)) continue;
    if (flag == "--vm-jobs" && absl::SimpleAtoi(argv[i + 1], &vm_jobs)) continue;
    if (flag == "--nodes" && absl::SimpleAtoi(argv[i + 1], &options.nodes)) continue;
    if (flag == "--data-path-jobs" && absl::SimpleAtoi(argv[i + 1], &data_path_jobs)) continue;
    std::fprintf(stderr, "usage: e2e_bench [--jobs N] [--vm-jobs M] [--data-path-jobs K] [--nodes N]\n");
    return 64;
  }
  absl::StatusOr<std::unique_ptr<E2eStack>> stack = E2eStack::Start(options);
  if (!stack.ok()) {
    std::fprintf(stderr, "e2e_bench: %s\n", stack.status().ToString().c_str());
    return 1;
  }
  E2eStack& s = **stack;
  Jobs jobs(&s, kUser);
  JobSeries containers, vms;
  RunJobs(s, jobs, jobs_count, /*exclusive=*/true, containers);
  // Each VM job, then its two anchors: one round shares one load of the machine (a 2-core host: a compile
  // elsewhere slows TCG by half), so the differences within a round mean something.
  Series bare_qemu, bare_slurmd, paired_delta;
  for (int i = 0; i < vm_jobs; ++i) {
    const size_t before = vms.agent_to_registered.ms.size();
    RunJobs(s, jobs, 1, /*exclusive=*/false, vms);
    absl::StatusOr<absl::Duration> registered = BareQemuSlurmd(s, i);
    if (registered.ok()) {
      bare_slurmd.Add(*registered);
      if (vms.agent_to_registered.ms.size() > before)
        paired_delta.ms.push_back(vms.agent_to_registered.ms.back() - absl::ToDoubleMilliseconds(*registered));
    } else {
      std::fprintf(stderr, "bare qemu slurmd %d: %s\n", i, registered.status().ToString().c_str());
    }
    absl::StatusOr<absl::Duration> boot = BareQemuBoot(s.image_root(), s.dir() + "/bare-qemu");
    if (boot.ok()) {
      bare_qemu.Add(*boot);
    } else {
      std::fprintf(stderr, "bare qemu boot %d: %s\n", i, boot.status().ToString().c_str());
    }
  }

  // The anchor: the same command straight on the Global Slurm.
  Series anchor_running, anchor_done;
  const std::string out_dir = s.dir() + "/logs";
  for (int i = 0; i < jobs_count; ++i) {
    const absl::Time t0 = absl::Now();
    CommandResult r = s.Global({"sbatch", "--parsable", "--exclusive", "--output=" + out_dir + "/anchor-%j.out",
                                "--wrap", "echo running_at=$(date +%s.%N)"});
    const std::string id = r.output.substr(0, r.output.find_first_of(";\n"));
    absl::Time finished = t0;
    for (int k = 0; k < 600; ++k) {
      CommandResult q = s.Global({"squeue", "-h", "-j", id});
      if (r.exit_code != 0 || q.output.find(id) == std::string::npos) {
        finished = absl::Now();
        break;
      }
      absl::SleepFor(absl::Milliseconds(20));
    }
    std::ifstream in(out_dir + "/anchor-" + id + ".out");
    std::stringstream text;
    text << in.rdbuf();
    if (std::optional<absl::Time> running = RunningAt(text.str())) {
      anchor_running.Add(*running - t0);
      anchor_done.Add(finished - t0);
    }
  }

  // The data path: its own stack (the project's policy differs), started after the first is down.
  JobSeries data_path;
  if (data_path_jobs > 0) {
    stack->reset();
    E2eOptions dp = options;
    dp.data_path = true;
    absl::StatusOr<std::unique_ptr<E2eStack>> dp_stack = E2eStack::Start(dp);
    if (!dp_stack.ok()) {
      std::fprintf(stderr, "e2e_bench: data-path stack: %s\n", dp_stack.status().ToString().c_str());
      return 1;
    }
    Jobs dp_jobs(dp_stack->get(), kUser);
    RunJobs(**dp_stack, dp_jobs, data_path_jobs, /*exclusive=*/true, data_path);
  }

  std::printf("\nend-to-end: %d sequential exclusive jobs, %d sequential shared (VM) jobs and %d data-path jobs on %d "
              "global nodes (%d, %d and %d failed)\n\n",
              jobs_count, vm_jobs, data_path_jobs, options.nodes, containers.failed, vms.failed, data_path.failed);
  std::printf("| %-44s | %9s | %9s | %3s |\n|---|---|---|---|\n", "measure (from sbatch)", "p50 ms", "p99 ms", "n");
  PrintSeries("container", containers);
  if (vm_jobs > 0) PrintSeries("VM", vms);
  if (data_path_jobs > 0) {
    PrintSeries("container, data path", data_path);
    // The goal's figure: what enrollment, IKE and the share add to provisioning, and to submit -> running.
    auto delta = [](const Series& a, const Series& b, double p) { return a.Pct(p) - b.Pct(p); };
    std::printf("| %-44s | %9.0f | %9.0f | %3s |\n", "**data path adds: StartWorkload -> registered**",
                delta(data_path.agent_to_registered, containers.agent_to_registered, 0.5),
                delta(data_path.agent_to_registered, containers.agent_to_registered, 0.99), "");
    std::printf("| %-44s | %9.0f | %9.0f | %3s |\n", "data path adds: submit -> user command running",
                delta(data_path.to_running, containers.to_running, 0.5),
                delta(data_path.to_running, containers.to_running, 0.99), "");
  }
  Print("anchor: Global sbatch -> command running", anchor_running);
  Print("anchor: Global sbatch -> job gone from squeue", anchor_done);
  if (vm_jobs > 0) {
    Print("anchor: bare qemu boot -> userspace (TCG)", bare_qemu);
    Print("anchor: bare qemu boot -> its slurmd registered", bare_slurmd);
    // The goal's figure: what the VM path adds over anchor (b), round by round.
    Print("VM path minus anchor (b), same round", paired_delta);
  }
  return containers.failed == 0 && vms.failed == 0 && data_path.failed == 0 ? 0 : 1;
}

}  // namespace
}  // namespace strongroom::e2e

int main(int argc, char** argv) { return strongroom::e2e::Main(argc, argv); }
