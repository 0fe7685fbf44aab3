// strongroom-e2e-stack: the quickstart's stack owner (deploy/quickstart.sh). Brings the whole stack up
// (tests/e2e/e2e_stack.h), writes a shell-sourceable env file with where everything is, optionally runs two demo
// jobs as an ordinary user (one --exclusive in a container, one sharing its node in a VM) and writes its output and timeline to a report file, then holds the stack until SIGTERM
// or SIGINT and removes everything.
//
//   strongroom-e2e-stack --root DIR --env-file FILE [--nodes N] [--data-path yes|no] [--demo-user USER --report FILE]
//
// --data-path yes (the default): the project uses the secure data path (E2eOptions.data_path: enrollment, the
// controlling VM's charon and nfs-ganesha, IPsec-only allowlists, no munge key on compute hosts).
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "tests/e2e/e2e_jobs.h"
#include "tests/e2e/e2e_stack.h"

namespace strongroom::e2e {
namespace {

int Usage(const std::string& why) {
  std::fprintf(stderr,
               "strongroom-e2e-stack: %s\nusage: strongroom-e2e-stack --root DIR --env-file FILE [--nodes N] "
               "[--data-path yes|no] [--demo-user USER --report FILE]\n",
               why.c_str());
  return 64;
}

std::string DemoScript() {
  return R"SH(#!/bin/bash
echo "Hello from a Strongroom workload."
echo "  started (epoch seconds):     $(date +%s.%N)"
echo "  kernel:                      $(uname -r)"
echo "  hostname (the dynamic node): $(hostname)"
echo "  user:                        $(id -un) (uid $(id -u))"
echo "  uid map (inside -> host):    $(tr -s ' ' </proc/self/uid_map)"
echo "  root filesystem:             $(awk '$5 == "/" { for (i = 7; i <= NF; i++) if ($i == "-") { print $(i + 1); break } }' /proc/self/mountinfo | tail -1)"
echo "  network namespace:           $(readlink /proc/self/ns/net)"
echo "  addresses:                   $(ip -4 -o addr show scope global | awk '{print $2" "$4}')"
probe() { if timeout 3 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null; then echo connected; else echo blocked; fi; }
echo "  egress to Local slurmctld 198.51.100.40:6817 (allowlisted): $(probe 198.51.100.40 6817)"
echo "  egress to backend 198.51.100.10:7443 (not allowlisted):     $(probe 198.51.100.10 7443)"
)SH";
}

// Inserts `line` into `lines` (both "  %+8.3fs ..." rows, one per line) before the first later row.
std::string InOrder(const std::string& lines, const std::string& line) {
  double at = 0;
  if (line.empty() || !absl::SimpleAtod(line.substr(0, line.find('s')), &at)) {
    return lines + line;
  }
  std::string out;
  bool placed = false;
  for (absl::string_view row : absl::StrSplit(lines, '\n', absl::SkipEmpty())) {
    double row_at = 0;
    if (!placed && absl::SimpleAtod(row.substr(0, row.find('s')), &row_at) && row_at > at) {
      out += line;
      placed = true;
    }
    absl::StrAppend(&out, row, "\n");
  }
  return placed ? out : out + line;
}

// Runs one job as `user` and describes it; the text goes to the report. `exclusive`: a whole-node container;
// else the job shares its node and runs in a VM.
std::string RunDemo(E2eStack& stack, const std::string& user, bool exclusive) {
  Jobs jobs(&stack, user);
  absl::StatusOr<SubmittedJob> job = exclusive ? jobs.Submit(DemoScript()) : jobs.SubmitShared(DemoScript(), {"-n1"});
  if (!job.ok()) return "demo job: submit failed: " + job.status().ToString() + "\n";
  std::string report =
      absl::StrCat("Submitted as ", user, exclusive ? ": sbatch --exclusive -A proj1 job.sh" : ": sbatch -n1 -A proj1 job.sh",
                   " -> Local job ", job->local_job_id, exclusive ? " (a whole-node container)" : " (a VM)", "\n");
  absl::StatusOr<v1::LocalJob> done = jobs.WaitLocal(*job, v1::LOCAL_JOB_STATE_COMPLETED, absl::Seconds(300));
  if (!done.ok()) return report + "demo job did not complete: " + done.status().ToString() + "\n";
  absl::StatusOr<v1::Job> global = jobs.WaitGlobalTerminal(done->global_job_id(), absl::Seconds(60));
  absl::StatusOr<v1::GetJobTimelineResponse> timeline = jobs.Timeline(done->global_job_id());
  const std::string output = jobs.Output(*job);
  std::string user_command;  // when the job script itself ran, as it reported
  if (const size_t at = output.find("started (epoch seconds):"); at != std::string::npos) {
    double seconds = 0;
    const size_t value = output.find_first_not_of(' ', at + 24);
    if (absl::SimpleAtod(output.substr(value, output.find('\n', value) - value), &seconds)) {
      user_command = absl::StrFormat("  %+8.3fs  user command running           (the job's own clock)\n",
                                     seconds - absl::ToDoubleSeconds(job->submitted - absl::UnixEpoch()));
    }
  }
  absl::StrAppend(&report, "\n== job output (", job->output_path, ") ==\n", output, "\n== states ==\n",
                  "  Local Slurm job ", job->local_job_id, ": ", jobs.LocalSlurmState(job->local_job_id), "\n",
                  "  global job ", done->global_job_id(), " (Global Slurm job ",
                  global.ok() ? absl::StrCat(global->ref().global_slurm_job_id()) : "?", "): ",
                  global.ok() ? v1::JobState_Name(global->state()) : global.status().ToString(), "\n",
                  "\n== timeline (seconds after sbatch) ==\n",
                  "     0.000s  sbatch on the Local Slurm\n",
                  timeline.ok() ? InOrder(FormatTimeline(*timeline, job->submitted), user_command)
                                : timeline.status().ToString(),
                  "\n");
  std::vector<std::string> left = stack.Leftovers();
  absl::StrAppend(&report, "== leftovers after the job ==\n", left.empty() ? "  none\n" : "");
  for (const std::string& l : left) absl::StrAppend(&report, "  ", l, "\n");
  return report;
}

int Main(int argc, char** argv) {
  E2eOptions options;
  options.root = "";
  options.data_path = true;
  std::string env_file, demo_user, report_file;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--root") {
      options.root = value;
    } else if (flag == "--env-file") {
      env_file = value;
    } else if (flag == "--nodes") {
      if (!absl::SimpleAtoi(value, &options.nodes)) return Usage("--nodes: not a number");
    } else if (flag == "--data-path") {
      if (value != "yes" && value != "no") return Usage("--data-path: yes or no");
      options.data_path = value == "yes";
    } else if (flag == "--demo-user") {
      demo_user = value;
    } else if (flag == "--report") {
      report_file = value;
    } else {
      return Usage("unknown flag " + flag);
    }
  }
  if (argc % 2 != 1 || options.root.empty() || env_file.empty()) return Usage("--root and --env-file are required");
  if (demo_user.empty() != report_file.empty()) return Usage("--demo-user and --report go together");

  // Block the stop signals before any thread starts, then wait for them synchronously.
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);

  absl::StatusOr<std::unique_ptr<E2eStack>> stack = E2eStack::Start(options);
  if (!stack.ok()) {
    std::fprintf(stderr, "strongroom-e2e-stack: %s\n", stack.status().ToString().c_str());
    return 1;
  }
  E2eStack& s = **stack;
  {
    std::ofstream env(env_file + ".tmp");
    env << "SR_STACK_DIR=" << s.dir() << "\nSR_PKI=" << s.PkiDir() << "\nSR_TRUST_DOMAIN=" << E2eStack::kTrustDomain
        << "\nSR_LOCAL_NETNS=" << s.HostNetns("lctl") << "\nSR_LOCAL_SLURM_CONF=" << s.local_slurm_conf()
        << "\nSR_GLOBAL_NETNS=" << s.HostNetns("gctl") << "\nSR_GLOBAL_SLURM_CONF=" << s.global_slurm_conf()
        << "\nSR_CLIENT_NETNS=" << s.HostNetns("client") << "\nSR_SHARE=" << s.share()
        << "\nSR_BACKEND=" << s.HostIp("backend") << ":7443\nSR_VM_CONTROLLER=" << s.HostIp("lctl") << ":7443\n"
        << "SR_DATA_PATH=" << (s.options().data_path ? "yes" : "no") << "\nSR_VM_CHARON_VICI=" << s.dir()
        << "/vm-controller/charon/charon.vici\n";
    env.close();
    std::rename((env_file + ".tmp").c_str(), env_file.c_str());
  }
  std::fprintf(stderr, "strongroom-e2e-stack: up; env in %s\n", env_file.c_str());
  if (!demo_user.empty()) {
    const std::string report =
        RunDemo(s, demo_user, /*exclusive=*/true) + "\n" + RunDemo(s, demo_user, /*exclusive=*/false);
    std::ofstream out(report_file + ".tmp");
    out << report;
    out.close();
    std::rename((report_file + ".tmp").c_str(), report_file.c_str());
  }
  int signal = 0;
  sigwait(&stop, &signal);
  std::fprintf(stderr, "strongroom-e2e-stack: signal %d; removing the stack\n", signal);
  absl::Status down = s.Down();
  if (!down.ok()) {
    std::fprintf(stderr, "strongroom-e2e-stack: teardown: %s\n", down.ToString().c_str());
    return 1;
  }
  return 0;
}

}  // namespace
}  // namespace strongroom::e2e

int main(int argc, char** argv) { return strongroom::e2e::Main(argc, argv); }
