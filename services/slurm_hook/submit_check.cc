// strongroom-submit-check: the Local Slurm's synchronous submit decision. job_submit.lua runs it for every
// job and refuses the job at submit when it exits 1, showing the user the line it printed. It applies the
// field rules every service uses (common/field_rules.h) plus the site's limits from strongroom-hook.conf
// (what the enclave's nodes can meet), and picks the account: the one given, else the user's default Slurm
// account, else the site's default. No network, no config file, statically linked: the fork+exec is the whole
// cost on the submit path (docs/PERFORMANCE.md, "sbatch with the submit check").
//
//   strongroom-submit-check --uid N [--account A] [--default-account A] --accounts A[,A...]
//       [--cpus N] [--mem-per-node-mb M] [--mem-per-cpu-mb M] [--time-min T]
//       [--max-cpus N] [--max-memory-mb M] [--max-time-min T] [--exclusive 0|1] [--vm-memory-overhead-mb M]
//
// --exclusive 0 (the job is not whole-node exclusive: it runs in a secure VM) adds the VM's memory overhead
// (--vm-memory-overhead-mb, default kDefaultVmMemoryOverheadMb: backend's vm_memory_overhead_mb) to the job's
// memory before comparing it with --max-memory-mb, as backend does when it sizes the VM's Global job.
//
// Values are Slurm's job_desc fields as job_submit.lua sees them; Slurm's "not set" markers (NO_VAL,
// NO_VAL64, INFINITE) and empty strings mean not set. Exit 0 and "account=<name>" on stdout: accepted. Exit 1
// and one line for the user (control characters escaped): refused. Exit 2: usage error.
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/field_rules.h"

namespace strongroom {
namespace {

constexpr uint64_t kNoVal = 4294967294u;  // NO_VAL; INFINITE is one more
constexpr uint64_t kNoVal64 = 0xfffffffffffffffeull;
// What backend adds for a VM's guest OS unless configured otherwise (BackendConfig.vm_memory_overhead_mb).
constexpr uint64_t kDefaultVmMemoryOverheadMb = 384;

struct Flags {
  std::map<std::string, std::string> values;
  std::string Get(const std::string& name) const {
    auto it = values.find(name);
    return it == values.end() ? "" : it->second;
  }
  // Empty or a Slurm "not set" marker: nullopt-like 0 with set=false.
  bool Number(const std::string& name, uint64_t* out, std::string* error) const {
    *out = 0;
    std::string text = Get(name);
    if (text.empty()) return false;
    // Lua prints large numbers as doubles ("1.8446744073709552e+19"): anything that big is a marker.
    double d = 0;
    if (!absl::SimpleAtoi(text, out)) {
      if (absl::SimpleAtod(text, &d) && d >= 4294967294.0) return false;
      *error = absl::StrCat("--", name, ": \"", QuoteValue(text), "\" is not a number");
      return false;
    }
    return !(*out == kNoVal || *out == kNoVal + 1 || *out >= kNoVal64);
  }
};

int Refuse(const std::string& message) {
  // Every value in a message was checked against its pattern or quoted by QuoteValue (field_rules.h).
  std::printf("%s\n", message.c_str());
  return 1;
}

std::string Plain(const absl::Status& s) { return std::string(s.message()); }

int Check(const Flags& flags) {
  std::string error;
  uint64_t uid = 0, cpus = 0, mem_node = 0, mem_cpu = 0, minutes = 0, max_cpus = 0, max_mem = 0,
           max_minutes = 0, exclusive = 1, overhead_mb = kDefaultVmMemoryOverheadMb;
  const bool has_uid = flags.Number("uid", &uid, &error);
  const bool has_cpus = flags.Number("cpus", &cpus, &error);
  const bool has_mem_node = flags.Number("mem-per-node-mb", &mem_node, &error);
  const bool has_mem_cpu = flags.Number("mem-per-cpu-mb", &mem_cpu, &error);
  const bool has_minutes = flags.Number("time-min", &minutes, &error);
  const bool has_max_cpus = flags.Number("max-cpus", &max_cpus, &error);
  const bool has_max_mem = flags.Number("max-memory-mb", &max_mem, &error);
  const bool has_max_minutes = flags.Number("max-time-min", &max_minutes, &error);
  if (!flags.Number("exclusive", &exclusive, &error) && error.empty()) exclusive = 1;
  if (!flags.Number("vm-memory-overhead-mb", &overhead_mb, &error) && error.empty()) {
    overhead_mb = kDefaultVmMemoryOverheadMb;
  }
  if (error.empty() && exclusive > 1) error = "--exclusive: must be 0 or 1";
  if (error.empty() && overhead_mb > (kMaxMemoryBytes >> 20)) error = "--vm-memory-overhead-mb: too large";
  if (!error.empty()) {
    std::fprintf(stderr, "strongroom-submit-check: %s\n", error.c_str());
    return 2;
  }
  if (!has_uid) return Refuse("strongroom: the job has no submitting uid");
  if (absl::Status s = CheckUid("uid", uid); !s.ok()) {
    return Refuse(uid == 0 ? "strongroom: jobs of root are not run in secure workloads"
                           : absl::StrCat("strongroom: ", Plain(s)));
  }

  // The account: the one given (-A), else the user's default Slurm account, else the site's default.
  std::vector<std::string> allowed = absl::StrSplit(flags.Get("accounts"), ',', absl::SkipWhitespace());
  std::string account = flags.Get("account");
  const bool given = !account.empty();
  if (!given) account = flags.Get("default-account");
  if (account.empty()) account = flags.Get("site-default-account");
  if (account.empty()) {
    return Refuse(
        absl::StrCat("strongroom: this job names no account (-A) and you have no default account. "
                     "Resubmit with -A <project>; this cluster's projects: ",
                     absl::StrJoin(allowed, ", ")));
  }
  if (absl::Status s = CheckProject("account", account, /*allow_empty=*/false); !s.ok()) {
    return Refuse(absl::StrCat("strongroom: ", Plain(s)));
  }
  bool known = false;
  for (const std::string& a : allowed) known = known || a == account;
  if (!known) {
    return Refuse(absl::StrCat("strongroom: unknown account \"", account, "\"",
                               given ? "" : " (your default)", ": this cluster's projects are ",
                               absl::StrJoin(allowed, ", "), ". Resubmit with -A <one of them>"));
  }

  // Resources: first the rule every service applies, then what this enclave's nodes can meet.
  if (has_cpus) {
    if (absl::Status s = CheckCpus("cpus", cpus); !s.ok())
      return Refuse(absl::StrCat("strongroom: ", Plain(s)));
    if (has_max_cpus && cpus > max_cpus) {
      return Refuse(absl::StrCat("strongroom: this job asks for ", cpus,
                                 " CPUs on its node; this enclave's nodes ", "have at most ", max_cpus,
                                 ". Resubmit with at most ", max_cpus, " CPUs (-n/-c)"));
    }
  }
  uint64_t mem_mb = has_mem_node ? mem_node : 0;
  if (!has_mem_node && has_mem_cpu) mem_mb = mem_cpu * (has_cpus && cpus > 0 ? cpus : 1);
  if (has_mem_node || has_mem_cpu) {
    const uint64_t bytes = mem_mb > (kMaxMemoryBytes >> 20) ? kMaxMemoryBytes + 1 : mem_mb << 20;
    if (absl::Status s = CheckMemoryBytes("memory", bytes); !s.ok() || (has_max_mem && mem_mb > max_mem)) {
      return Refuse(absl::StrCat("strongroom: this job asks for ", mem_mb, " MB of memory on its node",
                                 has_max_mem ? absl::StrCat("; this enclave's nodes have at most ", max_mem,
                                                            " MB. Resubmit with --mem=", max_mem, "M or less")
                                             : absl::StrCat(": ", Plain(s))));
    }
  }
  // A non-exclusive job runs in a VM whose guest OS needs overhead_mb besides the job's own memory; the VM's
  // Global job asks for both, on one node.
  if (exclusive == 0 && has_max_mem && mem_mb + overhead_mb > max_mem) {
    const uint64_t room = max_mem > overhead_mb ? max_mem - overhead_mb : 0;
    return Refuse(absl::StrCat("strongroom: this job asks for ", mem_mb,
                               " MB of memory; a job without --exclusive runs in a secure VM that needs ",
                               overhead_mb, " MB more, and this enclave's nodes have at most ", max_mem,
                               " MB. Resubmit with --mem=", room,
                               "M or less, or with --exclusive (the whole node)"));
  }
  if (has_minutes) {
    const int64_t seconds = static_cast<int64_t>(minutes) * 60;
    absl::Status s = CheckTimeLimitSeconds("time", seconds);
    if (!s.ok() || (has_max_minutes && minutes > max_minutes)) {
      return Refuse(absl::StrCat(
          "strongroom: this job asks for a time limit of ", minutes, " minutes",
          has_max_minutes ? absl::StrCat("; this enclave allows at most ", max_minutes,
                                         " minutes. Resubmit with --time=", max_minutes, " or less")
                          : absl::StrCat(": ", Plain(s))));
    }
  }
  std::printf("account=%s\n", account.c_str());
  return 0;
}

}  // namespace
}  // namespace strongroom

int main(int argc, char** argv) {
  strongroom::Flags flags;
  for (int i = 1; i < argc; i += 2) {
    const std::string name = argv[i];
    if (name.rfind("--", 0) != 0 || i + 1 >= argc) {
      std::fprintf(stderr, "strongroom-submit-check: expected --flag value, got \"%s\"\n",
                   strongroom::QuoteValue(name).c_str());
      return 2;
    }
    flags.values[name.substr(2)] = argv[i + 1];
  }
  return strongroom::Check(flags);
}
