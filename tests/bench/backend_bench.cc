// backend_bench: backend's throughput and latency, in the same rig as its integration tests (real PostgreSQL
// with synchronous_commit on, real mTLS, a real Global Slurm). Not a ctest test: run it by hand
// (docs/PERFORMANCE.md).
//
//   1. durable CreateGlobalJob over mTLS, with Slurm stubbed out (tests/bench/noop-slurm): the control plane
//   alone;
//   2. GetJob reads (8, 32 and 64 callers) and ListJobs (a page of 10, 32 callers); the anchor for reads: the
//      gRPC health check of a peer daemon built on the same bootstrap (mTLS, authorization, observer; no
//      database), i.e. the floor of one RPC round trip on this machine with this load generator;
//   3. CreateGlobalJob with the real sbatch, and the time until every job has its Global Slurm id;
//   4. the anchor: raw sbatch submissions per second against the same Global Slurm, from the same host.
// Every RPC is answered only once its audit record is committed, so each figure includes the audit chain.
//
//   backend_bench [--creates N] [--reads N] [--slurm-creates N] [--sbatch N] [--concurrency C]
//                 [--reads-only 1] [--backend-bin PATH] [--load-bin PATH]
// --reads-only skips the create, real-sbatch and sbatch-anchor phases; --backend-bin and --load-bin compare
// other builds of backend and of the load generator in the same rig.
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <string>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "tests/backend/backend_stack.h"

namespace strongroom::testing {
namespace {

struct Flags {
  int creates = 3000;
  int reads = 20000;
  int slurm_creates = 400;
  int sbatch = 200;
  int concurrency = 32;
  int reads_only = 0;
  std::string backend_bin;  // empty: this build's
  std::string load_bin;     // empty: this build's
};

const Flags* flags = nullptr;  // for Load()

// `method` is a Backend method, or a full "service/method" sent with an empty request to the peer on "vmc".
std::string Load(BackendStack& stack, const std::string& method, const std::string& request, int count,
                 int concurrency, int first) {
  const bool to_peer = absl::StrContains(method, "/");
  const std::string cert = stack.CertPrefix(method == "CreateGlobalJob" ? "vmc-c1" : "operator");
  std::vector<std::string> argv = {flags->load_bin.empty() ? SR_LOAD_BIN : flags->load_bin,
                                   "--target",
                                   to_peer ? absl::StrCat(stack.rig().Ip("vmc"), ":7443")
                                           : absl::StrCat(BackendStack::kBackendIp, ":7443"),
                                   "--trust-domain",
                                   BackendStack::kTrustDomain,
                                   "--ca",
                                   stack.dir() + "/pki/ca.pem",
                                   "--cert",
                                   cert + ".pem",
                                   "--key",
                                   cert + ".key",
                                   "--method",
                                   to_peer ? method : "strongroom.v1.Backend/" + method,
                                   "--request",
                                   request,
                                   "--count",
                                   absl::StrCat(count),
                                   "--concurrency",
                                   absl::StrCat(concurrency),
                                   "--channels",
                                   "4",
                                   "--first",
                                   absl::StrCat(first)};
  if (to_peer) argv.insert(argv.end(), {"--server-role", "vm-controller", "--empty-request"});
  absl::StatusOr<Rig::ExecResult> r = stack.RunOnClient(argv, absl::Minutes(20));
  if (!r.ok()) return absl::StrCat("{\"error\":\"", r.status().message(), "\"}");
  std::string line = r->output;
  while (!line.empty() && line.back() == '\n') line.pop_back();
  if (size_t nl = line.rfind('\n'); nl != std::string::npos) line = line.substr(nl + 1);
  return line;
}

// CPU seconds (user + system) used so far by `pid` (all its threads).
double CpuSeconds(pid_t pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/stat"));
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const size_t paren = stat.rfind(')');
  if (paren == std::string::npos) return 0;
  std::vector<std::string> f = absl::StrSplit(stat.substr(paren + 2), ' ');
  double utime = 0, stime = 0;
  if (f.size() < 13 || !absl::SimpleAtod(f[11], &utime) || !absl::SimpleAtod(f[12], &stime)) return 0;
  return (utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

// CPU seconds of the PostgreSQL instance: the postmaster and every process it forked.
double PostgresCpuSeconds(BackendStack& stack) {
  std::ifstream pidfile(stack.db().dir() + "/data/postmaster.pid");
  pid_t postmaster = 0;
  pidfile >> postmaster;
  double total = CpuSeconds(postmaster);
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    pid_t pid = 0;
    if (!absl::SimpleAtoi(entry.path().filename().string(), &pid)) continue;
    std::ifstream in(entry.path() / "stat");
    std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const size_t paren = stat.rfind(')');
    if (paren == std::string::npos) continue;
    std::vector<std::string> f = absl::StrSplit(stat.substr(paren + 2), ' ');
    if (f.size() > 1 && f[1] == absl::StrCat(postmaster)) total += CpuSeconds(pid);
  }
  return total;
}

// Context switches (voluntary and not) of all of `pid`'s threads so far.
double ContextSwitches(pid_t pid) {
  double total = 0;
  std::error_code ignored;
  for (const auto& task :
       std::filesystem::directory_iterator(absl::StrCat("/proc/", pid, "/task"), ignored)) {
    std::ifstream in(task.path() / "status");
    std::string line;
    while (std::getline(in, line)) {
      double n = 0;
      if ((absl::StartsWith(line, "voluntary_ctxt_switches:") ||
           absl::StartsWith(line, "nonvoluntary_ctxt_switches:")) &&
          absl::SimpleAtod(absl::StripAsciiWhitespace(line.substr(line.find(':') + 1)), &n)) {
        total += n;
      }
    }
  }
  return total;
}

// Runs `load` and adds the CPU microseconds per request that backend and PostgreSQL spent on it, and
// backend's context switches per request (threads that exited during the load are not counted).
std::string Measured(BackendStack& stack, int count, const std::function<std::string()>& load) {
  const double backend0 = CpuSeconds(stack.backend_pid()), pg0 = PostgresCpuSeconds(stack);
  const double switches0 = ContextSwitches(stack.backend_pid());
  std::string result = load();
  const double backend_us = (CpuSeconds(stack.backend_pid()) - backend0) * 1e6 / count;
  const double pg_us = (PostgresCpuSeconds(stack) - pg0) * 1e6 / count;
  const double switches = (ContextSwitches(stack.backend_pid()) - switches0) / count;
  if (!result.empty() && result.back() == '}') result.pop_back();
  return absl::StrCat(result, ",\"backend_cpu_us_per_call\":", static_cast<int>(backend_us),
                      ",\"postgres_cpu_us_per_call\":", static_cast<int>(pg_us),
                      ",\"backend_context_switches_per_call\":", absl::SixDigits(switches), "}");
}

std::string CreateTemplate() {
  return R"({"local":{"localCluster":"c1","localJobId":{i},"token":"sr-bench-{i}"},"user":{"name":"alice","uid":1000},)"
         R"("project":"proj1","exclusive":true,"slurmctldAddresses":["10.20.0.2:6817"]})";
}

// Seconds until no job is left without its Global Slurm id (SUBMITTING), or -1 on timeout.
double SecondsUntilSubmitted(BackendStack& stack, absl::Time since, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    absl::StatusOr<std::string> left = stack.Sql("SELECT count(*) FROM jobs WHERE state = 1");
    if (left.ok() && *left == "0") return absl::ToDoubleSeconds(absl::Now() - since);
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return -1;
}

// The figures as one JSON object on a line of its own, for scripts comparing runs.
void PrintJson(const std::map<std::string, std::string>& results) {
  std::printf("\nJSON: {");
  bool first = true;
  for (const auto& [name, value] : results) {
    std::printf("%s\"%s\":%s", first ? "" : ",", name.c_str(), value.c_str());
    first = false;
  }
  std::printf("}\n");
}

int Run(const Flags& f) {
  if (geteuid() != 0) {
    std::fprintf(stderr, "backend_bench: must run as root (the rig)\n");
    return 2;
  }
  absl::StatusOr<std::unique_ptr<BackendStack>> started = BackendStack::Start();
  if (!started.ok()) {
    std::fprintf(stderr, "backend_bench: %s\n", started.status().ToString().c_str());
    return 1;
  }
  BackendStack& stack = **started;
  std::map<std::string, std::string> results;
  std::printf("cores: %u\n", std::thread::hardware_concurrency());

  // 1 + 2: the control plane alone.
  BackendOptions noop;
  noop.slurm_bin_dir = SR_NOOP_SLURM_DIR;
  noop.poll_interval_seconds = 3600;
  noop.backend_bin = f.backend_bin;
  if (absl::StatusOr<pid_t> pid = stack.StartBackend(noop); !pid.ok()) {
    std::fprintf(stderr, "backend_bench: %s\n", pid.status().ToString().c_str());
    return 1;
  }
  std::printf("backend pid: %d\n", stack.backend_pid());
  std::fflush(stdout);
  Load(stack, "CreateGlobalJob", CreateTemplate(), 200, f.concurrency, 1000000);  // warm-up
  const absl::Time create_start = absl::Now();
  if (!f.reads_only) {
    // Throughput at high concurrency; latency at a moderate one (8 callers), where queueing does not
    // dominate.
    results["create_noop_slurm_c8"] = Measured(stack, f.creates / 2, [&] {
      return Load(stack, "CreateGlobalJob", CreateTemplate(), f.creates / 2, 8, 3000000);
    });
    std::printf("create (no-op sbatch, 8 callers): %s\n", results["create_noop_slurm_c8"].c_str());
    results["create_noop_slurm"] = Measured(stack, f.creates, [&] {
      return Load(stack, "CreateGlobalJob", CreateTemplate(), f.creates, f.concurrency, 1);
    });
    results["create_noop_slurm_all_submitted_s"] =
        absl::StrCat(SecondsUntilSubmitted(stack, create_start, absl::Minutes(5)));
    std::printf("create (no-op sbatch): %s\n", results["create_noop_slurm"].c_str());
  }
  absl::StatusOr<std::string> some = stack.Sql("SELECT global_job_id FROM jobs LIMIT 1");
  const std::string get = absl::StrCat(R"({"job":{"globalJobId":")", some.value_or("gj-x"), R"("}})");
  results["get_c8"] =
      Measured(stack, f.reads / 2, [&] { return Load(stack, "GetJob", get, f.reads / 2, 8, 0); });
  std::printf("get (8 callers): %s\n", results["get_c8"].c_str());
  results["get_c32"] =
      Measured(stack, f.reads, [&] { return Load(stack, "GetJob", get, f.reads, f.concurrency, 0); });
  std::printf("get (%d callers): %s\n", f.concurrency, results["get_c32"].c_str());
  results["get"] =
      Measured(stack, f.reads, [&] { return Load(stack, "GetJob", get, f.reads, 2 * f.concurrency, 0); });
  std::printf("get (%d callers): %s\n", 2 * f.concurrency, results["get"].c_str());
  const std::string list = R"({"project":"proj1","page":{"pageSize":10}})";
  results["list10_c32"] = Measured(
      stack, f.reads / 2, [&] { return Load(stack, "ListJobs", list, f.reads / 2, f.concurrency, 0); });
  std::printf("list, pages of 10 (%d callers): %s\n", f.concurrency, results["list10_c32"].c_str());
  // The anchor for reads: one mTLS round trip through the same daemon bootstrap, without the database.
  for (int callers : {f.concurrency, 2 * f.concurrency}) {
    const std::string key = absl::StrCat("anchor_health_rpc_c", callers);
    results[key] = Load(stack, "grpc.health.v1.Health/Check", "{}", f.reads, callers, 0);
    std::printf("anchor: peer daemon health check (%d callers): %s\n", callers, results[key].c_str());
  }
  if (f.reads_only) {
    (void)stack.StopBackend();
    PrintJson(results);
    return 0;
  }

  // 3: real sbatch.
  if (absl::Status s = stack.StopBackend(); !s.ok()) return 1;
  (void)stack.Sql(
      "SET session_replication_role = replica; DELETE FROM job_timeline; DELETE FROM workloads; DELETE FROM "
      "jobs");
  BackendOptions real;
  real.backend_bin = f.backend_bin;
  if (absl::StatusOr<pid_t> pid = stack.StartBackend(real); !pid.ok()) return 1;
  const absl::Time slurm_start = absl::Now();
  results["create_real_sbatch"] =
      Load(stack, "CreateGlobalJob", CreateTemplate(), f.slurm_creates, f.concurrency, 2000000);
  const double submitted = SecondsUntilSubmitted(stack, slurm_start, absl::Minutes(10));
  results["create_real_sbatch_all_submitted_s"] = absl::StrCat(submitted);
  std::printf("create (real sbatch): %s; all %d submitted after %.2f s (%.1f submissions/s end to end)\n",
              results["create_real_sbatch"].c_str(), f.slurm_creates, submitted, f.slurm_creates / submitted);
  (void)stack.StopBackend();

  // 4: the anchor, from the backend host like backend's own sbatch (one at a time, and 4 in parallel).
  for (int parallel : {1, 4}) {
    const std::string script = absl::StrCat(
        "start=$(date +%s.%N); for p in $(seq 1 ", parallel, "); do (for i in $(seq 1 ", f.sbatch / parallel,
        "); do SLURM_CONF=$1 sbatch --parsable --exclusive --account=anchor --job-name=anchor "
        "--output=/dev/null "
        "--wrap=true >/dev/null || exit 1; done) & done; wait; end=$(date +%s.%N); echo \"$start $end\"");
    absl::StatusOr<Rig::ExecResult> r = stack.rig().Exec(
        "backend", {"/bin/bash", "-c", script, "anchor", stack.slurm().conf()}, absl::Minutes(10));
    double t0 = 0, t1 = 0;
    if (r.ok() && sscanf(r->output.c_str(), "%lf %lf", &t0, &t1) == 2 && t1 > t0) {
      const double per_second = (f.sbatch / parallel) * parallel / (t1 - t0);
      results[absl::StrCat("raw_sbatch_x", parallel)] = absl::StrCat(per_second);
      std::printf("raw sbatch, %d in parallel: %d submissions in %.2f s = %.1f/s\n", parallel,
                  (f.sbatch / parallel) * parallel, t1 - t0, per_second);
    } else {
      std::printf("raw sbatch x%d failed: %s\n", parallel,
                  r.ok() ? r->output.c_str() : r.status().ToString().c_str());
    }
  }
  (void)stack.Slurm({"scancel", "--user=root"});
  PrintJson(results);
  return 0;
}

}  // namespace
}  // namespace strongroom::testing

int main(int argc, char** argv) {
  strongroom::testing::Flags f;
  strongroom::testing::flags = &f;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--backend-bin" || flag == "--load-bin") {
      (flag == "--backend-bin" ? f.backend_bin : f.load_bin) = argv[i + 1];
      continue;
    }
    int* target = flag == "--creates"         ? &f.creates
                  : flag == "--reads"         ? &f.reads
                  : flag == "--slurm-creates" ? &f.slurm_creates
                  : flag == "--sbatch"        ? &f.sbatch
                  : flag == "--concurrency"   ? &f.concurrency
                  : flag == "--reads-only"    ? &f.reads_only
                                              : nullptr;
    if (target == nullptr || !absl::SimpleAtoi(argv[i + 1], target)) {
      std::fprintf(stderr,
                   "usage: backend_bench [--creates N] [--reads N] [--slurm-creates N] [--sbatch N] "
                   "[--concurrency C] [--reads-only 1] [--backend-bin PATH] [--load-bin PATH]\n");
      return 64;
    }
  }
  return strongroom::testing::Run(f);
}
