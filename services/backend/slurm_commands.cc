#include "services/backend/slurm_commands.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "services/backend/validation.h"

namespace strongroom::backend {
namespace {

// A marker no warning line starts with, then fields separated by '|'. The comment comes last: it is ours, but
// a
// '|' in a foreign job's comment must not shift the other fields.
constexpr char kSqueueFormat[] = "SR|%i|%T|%r|%N|%C|%D|%S|%j|%k";
constexpr int kSqueueFields = 10;

constexpr int64_t kMiB = 1 << 20;

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace

std::string GlobalJobComment(const SubmitSpec& s) {
  return absl::StrCat("strongroom:gj=", s.global_job_id, ";wl=", s.workload_id,
                      ";lc=", s.local.local_cluster(), ";lj=", s.local.local_job_id(),
                      ";tok=", s.local.token());
}

std::string GlobalJobIdOfComment(const std::string& comment) {
  absl::string_view rest = comment;
  if (!absl::ConsumePrefix(&rest, "strongroom:")) return "";
  for (absl::string_view part : absl::StrSplit(rest, ';')) {
    if (absl::ConsumePrefix(&part, "gj=") && IsId(part)) return std::string(part);
  }
  return "";
}

std::vector<std::string> SbatchArgs(const SubmitSpec& s) {
  std::vector<std::string> args = {"--parsable", "--job-name=" + s.global_job_id, "--account=" + s.project,
                                   "--comment=" + GlobalJobComment(s)};
  if (s.exclusive) {
    args.push_back("--exclusive");
    args.push_back("--nodes=1");
    if (s.resources.cpus() > 0) args.push_back(absl::StrCat("--mincpus=", s.resources.cpus()));
    if (s.resources.memory_bytes() > 0) {
      args.push_back(
          absl::StrCat("--mem=", CeilDiv(static_cast<int64_t>(s.resources.memory_bytes()), kMiB), "M"));
    } else {
      args.push_back("--mem=0");  // all of the node's memory: the workload gets the whole node
    }
  } else {
    // A VM: exactly its CPUs (one task of N CPUs: cons_tres allocates N, never the whole node) and its memory
    // (always explicit: Slurm's DefMemPerCPU could be less than the VM needs), so other VMs share the node.
    args.push_back("--nodes=1");
    args.push_back("--ntasks=1");
    args.push_back(absl::StrCat("--cpus-per-task=", std::max<uint32_t>(s.resources.cpus(), 1)));
    args.push_back(absl::StrCat(
        "--mem=", std::max<int64_t>(CeilDiv(static_cast<int64_t>(s.resources.memory_bytes()), kMiB), 1),
        "M"));
  }
  const auto& limit = s.resources.time_limit();
  if (limit.seconds() > 0 || limit.nanos() > 0) {
    const int64_t minutes = CeilDiv(limit.seconds() + (limit.nanos() > 0 ? 1 : 0), 60) +
                            absl::ToInt64Minutes(s.time_limit_margin);
    args.push_back(absl::StrCat("--time=", minutes));
  }
  if (!s.partition.empty()) args.push_back("--partition=" + s.partition);
  // A requeued global job would come back with no workload; backend fails it instead.
  args.push_back("--no-requeue");
  args.push_back("--chdir=/");
  args.push_back("--output=" + s.job_output);
  // Exactly ALL: sbatch runs under `env -i` with PATH, SLURM_CONF and SbatchEnvironment() only, so nothing of
  // backend's environment leaks. Any other --export value (even "ALL,X=1") sets SLURM_GET_USER_ENV, and
  // slurmd then runs a login shell for the job's user before launching it: 0.4-1.4 s on every global job.
  args.push_back("--export=ALL");
  args.push_back(s.job_script);
  return args;
}

std::vector<std::string> SbatchEnvironment(const SubmitSpec& s) {
  return {"SR_GLOBAL_JOB_ID=" + s.global_job_id, "SR_WORKLOAD_ID=" + s.workload_id,
          "SR_WORKLOAD_SPEC=" + s.workload_spec_base64};
}

absl::StatusOr<uint32_t> ParseSbatchJobId(const std::string& output) {
  for (absl::string_view line : absl::StrSplit(output, '\n')) {
    line = absl::StripAsciiWhitespace(line);
    absl::string_view id = line.substr(0, line.find(';'));
    uint32_t job_id = 0;
    if (!id.empty() && absl::SimpleAtoi(id, &job_id) && job_id > 0 && job_id <= kMaxSlurmJobId) return job_id;
  }
  return absl::InternalError(
      absl::StrCat("sbatch printed no job id: \"", absl::StripAsciiWhitespace(output), "\""));
}

bool IsTransientSlurmFailure(const std::string& output) {
  for (const char* sign :
       {"Unable to contact slurm controller", "Socket timed out", "Connection refused",
        "Connection timed out", "Zero Bytes were transmitted", "Resource temporarily unavailable",
        "Slurm temporarily unable", "slurm_persist_conn_open", "Communication connection failure",
        "Munge encode failed", "Unable to contact"}) {
    if (absl::StrContains(output, sign)) return true;
  }
  return false;
}

std::vector<std::string> SqueueJobsArgs(const std::vector<uint32_t>& job_ids) {
  return {"--noheader", "--states=all", absl::StrCat("--jobs=", absl::StrJoin(job_ids, ",")),
          absl::StrCat("--format=", kSqueueFormat)};
}

std::vector<std::string> SqueueByNameArgs(const std::string& global_job_id) {
  return {"--noheader", "--states=all", "--name=" + global_job_id, absl::StrCat("--format=", kSqueueFormat)};
}

std::vector<SqueueRow> ParseSqueue(const std::string& output, const absl::TimeZone& zone) {
  std::vector<SqueueRow> rows;
  for (absl::string_view line : absl::StrSplit(output, '\n')) {
    line = absl::StripTrailingAsciiWhitespace(line);
    if (!absl::StartsWith(line, "SR|")) continue;
    std::vector<std::string> f = absl::StrSplit(line, absl::MaxSplits('|', kSqueueFields - 1));
    if (f.size() != kSqueueFields) continue;
    SqueueRow row;
    if (!absl::SimpleAtoi(f[1], &row.job_id)) continue;
    row.state = f[2];
    row.reason = f[3];
    row.nodes = f[4] == "(null)" ? "" : f[4];
    (void)absl::SimpleAtoi(f[5], &row.cpus);
    (void)absl::SimpleAtoi(f[6], &row.node_count);
    absl::Time start;
    std::string error;
    if (absl::ParseTime("%Y-%m-%dT%H:%M:%S", f[7], zone, &start, &error)) row.start_time = start;
    row.name = f[8];
    row.comment = f[9] == "(null)" ? "" : f[9];
    rows.push_back(std::move(row));
  }
  return rows;
}

std::vector<std::string> ScontrolShowConfigArgs() { return {"show", "config"}; }

absl::StatusOr<absl::Duration> ParseMinJobAge(const std::string& output) {
  for (absl::string_view line : absl::StrSplit(output, '\n')) {
    line = absl::StripAsciiWhitespace(line);
    if (!absl::ConsumePrefix(&line, "MinJobAge")) continue;
    line = absl::StripLeadingAsciiWhitespace(line);
    if (!absl::ConsumePrefix(&line, "=")) continue;
    line = absl::StripAsciiWhitespace(line);
    absl::ConsumeSuffix(&line, "sec");
    line = absl::StripTrailingAsciiWhitespace(line);
    int64_t seconds = 0;
    if (!absl::SimpleAtoi(line, &seconds) || seconds < 0) break;
    return seconds == 0 ? absl::InfiniteDuration() : absl::Seconds(seconds);
  }
  return absl::InternalError("scontrol show config printed no MinJobAge");
}

SlurmStateMeaning InterpretSlurmState(const std::string& state) {
  SlurmStateMeaning m;
  auto ended = [&](v1::JobEndReason reason, const char* failure) {
    m.phase = SlurmStateMeaning::kEnded;
    m.end_reason = reason;
    m.failure_reason = failure;
    return m;
  };
  if (state == "PENDING" || state == "REQUEUED" || state == "REQUEUE_HOLD" || state == "REQUEUE_FED")
    return m;
  if (state == "COMPLETED") return ended(v1::JOB_END_REASON_UNSPECIFIED, "GLOBAL_JOB_ENDED");
  if (state == "CANCELLED")
    return ended(v1::JOB_END_REASON_GLOBAL_CANCELLED_EXTERNALLY, "GLOBAL_JOB_CANCELLED");
  if (state == "TIMEOUT" || state == "DEADLINE")
    return ended(v1::JOB_END_REASON_GLOBAL_TIMEOUT, "GLOBAL_JOB_TIMEOUT");
  if (state == "NODE_FAIL") return ended(v1::JOB_END_REASON_NODE_FAILED, "GLOBAL_JOB_NODE_FAIL");
  if (state == "BOOT_FAIL") return ended(v1::JOB_END_REASON_NODE_FAILED, "GLOBAL_JOB_BOOT_FAIL");
  if (state == "FAILED" || state == "OUT_OF_MEMORY" || state == "PREEMPTED" || state == "SPECIAL_EXIT" ||
      state == "REVOKED") {
    return ended(v1::JOB_END_REASON_UNSPECIFIED, "GLOBAL_JOB_FAILED");
  }
  // RUNNING, CONFIGURING, COMPLETING, SUSPENDED, STOPPED, SIGNALING, STAGE_OUT, RESIZING: on a node.
  m.phase = SlurmStateMeaning::kRunning;
  return m;
}

}  // namespace strongroom::backend
