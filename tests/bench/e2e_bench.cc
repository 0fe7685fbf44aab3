// The end-to-end benchmark: N sequential exclusive jobs through the whole stack (tests/e2e/e2e_stack.h), each
// measured from just before `sbatch` on the Local Slurm to (a) the user's command running inside the container
// and (b) everything scrubbed, with a per-step breakdown from backend's timeline. The anchor, in the same run: the
// same trivial job submitted straight to the Global Slurm (a static node, no container, no provisioning).
//
//   build/tests/bench/e2e_bench [--jobs 20] [--nodes 2]
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "tests/e2e/e2e_jobs.h"
#include "tests/e2e/e2e_stack.h"

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

int Main(int argc, char** argv) {
  int jobs_count = 20;
  E2eOptions options;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--jobs" && absl::SimpleAtoi(argv[i + 1], &jobs_count)) continue;
    if (flag == "--nodes" && absl::SimpleAtoi(argv[i + 1], &options.nodes)) continue;
    std::fprintf(stderr, "usage: e2e_bench [--jobs N] [--nodes N]\n");
    return 64;
  }
  absl::StatusOr<std::unique_ptr<E2eStack>> stack = E2eStack::Start(options);
  if (!stack.ok()) {
    std::fprintf(stderr, "e2e_bench: %s\n", stack.status().ToString().c_str());
    return 1;
  }
  E2eStack& s = **stack;
  Jobs jobs(&s, kUser);
  const std::string script = "#!/bin/bash\necho \"running_at=$(date +%s.%N)\"\n";
  Series to_running, full_cycle;
  std::map<std::string, Series> steps;
  int failed = 0;
  for (int i = 0; i < jobs_count; ++i) {
    absl::StatusOr<SubmittedJob> job = jobs.Submit(script);
    absl::StatusOr<v1::LocalJob> done =
        job.ok() ? jobs.WaitLocal(*job, v1::LOCAL_JOB_STATE_COMPLETED, absl::Seconds(120)) : job.status();
    absl::StatusOr<v1::Job> global =
        done.ok() ? jobs.WaitGlobal(done->global_job_id(), v1::JOB_STATE_COMPLETED, absl::Seconds(60)) : done.status();
    absl::StatusOr<v1::GetJobTimelineResponse> timeline =
        global.ok() ? jobs.Timeline(done->global_job_id()) : global.status();
    std::optional<absl::Time> running = job.ok() ? RunningAt(jobs.Output(*job)) : std::nullopt;
    if (!timeline.ok() || !running.has_value()) {
      std::fprintf(stderr, "job %d failed: %s\n", i, timeline.status().ToString().c_str());
      ++failed;
      continue;
    }
    to_running.Add(*running - job->submitted);
    for (const char* step : kSteps) {
      if (std::optional<absl::Duration> d = EventOffset(*timeline, step, job->submitted)) steps[step].Add(*d);
    }
    std::optional<absl::Duration> scrubbed = EventOffset(*timeline, "workload.scrubbed", job->submitted);
    std::optional<absl::Duration> completed = EventOffset(*timeline, "COMPLETED", job->submitted);
    full_cycle.Add(std::max(scrubbed.value_or(absl::ZeroDuration()), completed.value_or(absl::ZeroDuration())));
    std::fprintf(stderr, "job %d: running after %.0f ms\n", i, absl::ToDoubleMilliseconds(*running - job->submitted));
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

  std::printf("\nend-to-end: %d sequential exclusive jobs on %d global nodes (%d failed)\n\n", jobs_count,
              options.nodes, failed);
  std::printf("| %-44s | %9s | %9s | %3s |\n|---|---|---|---|\n", "measure (from sbatch)", "p50 ms", "p99 ms", "n");
  Print("**submit -> user command running**", to_running);
  Print("**full cycle (submit -> scrubbed, COMPLETED)**", full_cycle);
  for (const char* step : kSteps) Print(absl::StrCat("  timeline: ", step), steps[step]);
  Print("anchor: Global sbatch -> command running", anchor_running);
  Print("anchor: Global sbatch -> job gone from squeue", anchor_done);
  return failed == 0 ? 0 : 1;
}

}  // namespace
}  // namespace strongroom::e2e

int main(int argc, char** argv) { return strongroom::e2e::Main(argc, argv); }
