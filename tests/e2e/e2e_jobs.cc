#include "tests/e2e/e2e_jobs.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "google/protobuf/util/json_util.h"

namespace strongroom::e2e {
namespace {

bool TerminalLocal(v1::LocalJobState s) {
  return s == v1::LOCAL_JOB_STATE_COMPLETED || s == v1::LOCAL_JOB_STATE_FAILED ||
         s == v1::LOCAL_JOB_STATE_CANCELLED;
}

bool TerminalGlobal(v1::JobState s) {
  return s == v1::JOB_STATE_COMPLETED || s == v1::JOB_STATE_FAILED || s == v1::JOB_STATE_CANCELLED;
}

}  // namespace

std::string ProbeScript(int sleep_seconds) {
  return absl::StrCat(R"SH(#!/bin/bash
echo "job=$SLURM_JOB_ID"
echo "running_at=$(date +%s.%N)"
echo "hostname=$(hostname)"
echo "netns=$(readlink /proc/self/ns/net)"
echo "uid_map=$(tr -s ' ' </proc/self/uid_map | sed 's/^ //; s/ $//')"
echo "root_fs=$(awk '$5 == "/" { for (i = 7; i <= NF; i++) if ($i == "-") { print $(i + 1); break } }' /proc/self/mountinfo | tail -1)"
echo "user=$(id -un):$(id -u)"
echo "kernel=$(uname -r)"
echo "address=$(ip -4 -o addr show scope global | awk '{ sub("/.*", "", $4); print $4; exit }')"
probe() { if timeout 3 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null; then echo connected; else echo blocked; fi; }
echo "allowlisted=$(probe 198.51.100.40 6817)"
echo "other=$(probe 198.51.100.10 7443)"
sleep )SH",
                      sleep_seconds, "\n");
}

namespace {

absl::Time ToTime(const google::protobuf::Timestamp& t) {
  return absl::FromUnixSeconds(t.seconds()) + absl::Nanoseconds(t.nanos());
}

std::string EntryName(const v1::TimelineEntry& e) {
  if (!e.event().empty()) return e.event();
  return absl::StrCat(absl::StripPrefix(v1::JobState_Name(e.from_state()), "JOB_STATE_"), " -> ",
                      absl::StripPrefix(v1::JobState_Name(e.to_state()), "JOB_STATE_"));
}

}  // namespace

std::string FormatTimeline(const v1::GetJobTimelineResponse& timeline, absl::Time origin) {
  std::string out;
  for (const v1::TimelineEntry& e : timeline.entries()) {
    absl::StrAppend(&out, absl::StrFormat("  %+8.3fs  %-28s %-16s %s\n",
                                          absl::ToDoubleSeconds(ToTime(e.time()) - origin), EntryName(e),
                                          e.actor().role() == v1::ROLE_UNSPECIFIED
                                              ? std::string()
                                              : std::string(absl::StripPrefix(v1::Role_Name(e.actor().role()), "ROLE_")),
                                          e.message()));
  }
  return out;
}

std::optional<absl::Duration> EventOffset(const v1::GetJobTimelineResponse& timeline, const std::string& event,
                                          absl::Time origin) {
  for (const v1::TimelineEntry& e : timeline.entries()) {
    if (EntryName(e) == event || (e.event().empty() && v1::JobState_Name(e.to_state()) == "JOB_STATE_" + event)) {
      return ToTime(e.time()) - origin;
    }
  }
  return std::nullopt;
}

std::string OwnNetns() {
  std::error_code ec;
  return std::filesystem::read_symlink("/proc/self/ns/net", ec).string();
}

absl::Status ParseCtlJson(const std::string& output, google::protobuf::Message* message) {
  const size_t begin = output.find('{');
  const size_t end = output.rfind('}');
  if (begin == std::string::npos || end == std::string::npos || end < begin) {
    return absl::InternalError("no JSON in: " + output.substr(0, 2000));
  }
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = true;
  auto parsed = google::protobuf::util::JsonStringToMessage(output.substr(begin, end - begin + 1), message, options);
  if (!parsed.ok()) return absl::InternalError("unparsable JSON: " + output.substr(0, 2000));
  return absl::OkStatus();
}

absl::StatusOr<SubmittedJob> Jobs::Submit(const std::string& script, const std::string& account,
                                          const std::vector<std::string>& extra) {
  return SubmitWith(script, account, extra, /*exclusive=*/true);
}

absl::StatusOr<SubmittedJob> Jobs::SubmitShared(const std::string& script, const std::vector<std::string>& extra) {
  return SubmitWith(script, "proj1", extra, /*exclusive=*/false);
}

absl::StatusOr<SubmittedJob> Jobs::SubmitWith(const std::string& script, const std::string& account,
                                              const std::vector<std::string>& extra, bool exclusive) {
  absl::StatusOr<std::string> dir = stack_->UserDir(user_);
  if (!dir.ok()) return dir.status();
  const std::string path = absl::StrCat(*dir, "/job-", getpid(), "-", ++counter_, ".sh");
  {
    std::ofstream out(path);
    out << script;
    if (!out) return absl::InternalError("cannot write " + path);
  }
  std::filesystem::permissions(path, std::filesystem::perms(0755));
  SubmittedJob job;
  job.submitted = absl::Now();
  std::vector<std::string> argv = {"sbatch", "--parsable", "--chdir=" + *dir, "--output=" + *dir + "/slurm-%j.out"};
  if (exclusive) argv.insert(argv.begin() + 2, "--exclusive");
  if (!account.empty()) argv.insert(argv.end(), {"-A", account});
  argv.insert(argv.end(), extra.begin(), extra.end());
  argv.push_back(path);
  CommandResult r = stack_->Local(user_, argv);
  uint32_t id = 0;
  const std::string first = r.output.substr(0, r.output.find_first_of(";\n"));
  if (r.exit_code != 0 || !absl::SimpleAtoi(first, &id)) {
    return absl::FailedPreconditionError(absl::StrCat("sbatch as ", user_, " failed (", r.exit_code, "): ", r.output));
  }
  job.local_job_id = id;
  job.output_path = absl::StrCat(*dir, "/slurm-", id, ".out");
  return job;
}

absl::Status Jobs::Call(const std::string& daemon, const std::string& method, const std::string& json,
                        google::protobuf::Message* response) {
  CommandResult r = stack_->Ctl(daemon, {"call", method, json});
  if (r.exit_code != 0) return absl::Status(static_cast<absl::StatusCode>(r.exit_code), r.output);
  return ParseCtlJson(r.output, response);
}

absl::StatusOr<v1::LocalJob> Jobs::LocalJob(uint32_t local_job_id) {
  v1::GetLocalJobResponse response;
  absl::Status s = Call("vm-controller", "strongroom.v1.VmController/GetLocalJob",
                        absl::StrCat(R"({"local":{"localCluster":")", E2eStack::kLocalCluster, R"(","localJobId":)",
                                     local_job_id, "}}"),
                        &response);
  if (!s.ok()) return s;
  return response.job();
}

absl::StatusOr<v1::LocalJob> Jobs::WaitLocal(const SubmittedJob& job, v1::LocalJobState state,
                                             absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  absl::StatusOr<v1::LocalJob> last = absl::NotFoundError("not seen yet");
  while (absl::Now() < deadline) {
    last = LocalJob(job.local_job_id);
    if (last.ok()) {
      if (last->state() == state) return last;
      // RUNNING is also reached by jobs that are already past it by the time we look.
      const bool passed_running = state == v1::LOCAL_JOB_STATE_RUNNING &&
                                  (last->state() == v1::LOCAL_JOB_STATE_ENDING ||
                                   last->state() == v1::LOCAL_JOB_STATE_COMPLETED);
      if (passed_running) return last;
      if (TerminalLocal(last->state())) break;
    }
    absl::SleepFor(absl::Milliseconds(100));
  }
  std::string global;
  if (last.ok() && !last->global_job_id().empty()) {
    absl::StatusOr<v1::Job> g = GlobalJob(last->global_job_id());
    global = g.ok() ? g->ShortDebugString() : g.status().ToString();
  }
  return absl::FailedPreconditionError(
      absl::StrCat("local job ", job.local_job_id, " did not reach ", v1::LocalJobState_Name(state), ": ",
                   last.ok() ? last->ShortDebugString() : last.status().ToString(), "; backend: ", global));
}

absl::StatusOr<v1::Job> Jobs::GlobalJob(const std::string& global_job_id) {
  v1::GetJobResponse response;
  absl::Status s = Call("backend", "strongroom.v1.Backend/GetJob",
                        absl::StrCat(R"({"job":{"globalJobId":")", global_job_id, R"("}})"), &response);
  if (!s.ok()) return s;
  return response.job();
}

absl::StatusOr<v1::Job> Jobs::WaitGlobal(const std::string& global_job_id, v1::JobState state,
                                         absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  absl::StatusOr<v1::Job> last = absl::NotFoundError("not seen yet");
  while (absl::Now() < deadline) {
    last = GlobalJob(global_job_id);
    if (last.ok() && (last->state() == state || (state == v1::JOB_STATE_UNSPECIFIED && TerminalGlobal(last->state())))) {
      return last;
    }
    if (last.ok() && TerminalGlobal(last->state())) break;
    absl::SleepFor(absl::Milliseconds(100));
  }
  return absl::FailedPreconditionError(absl::StrCat("global job ", global_job_id, " did not reach ",
                                                    v1::JobState_Name(state), ": ",
                                                    last.ok() ? last->ShortDebugString() : last.status().ToString()));
}

absl::StatusOr<v1::Job> Jobs::WaitGlobalTerminal(const std::string& global_job_id, absl::Duration timeout) {
  return WaitGlobal(global_job_id, v1::JOB_STATE_UNSPECIFIED, timeout);
}

absl::StatusOr<v1::GetJobTimelineResponse> Jobs::Timeline(const std::string& global_job_id) {
  v1::GetJobTimelineResponse response;
  absl::Status s = Call("backend", "strongroom.v1.Backend/GetJobTimeline",
                        absl::StrCat(R"({"job":{"globalJobId":")", global_job_id, R"("}})"), &response);
  if (!s.ok()) return s;
  return response;
}

std::string Jobs::LocalSlurmState(uint32_t local_job_id) {
  CommandResult r = stack_->Local("", {"scontrol", "show", "job", "-o", absl::StrCat(local_job_id)});
  const size_t at = r.output.find("JobState=");
  if (at == std::string::npos) return "";
  const size_t end = r.output.find(' ', at);
  return r.output.substr(at + 9, end == std::string::npos ? std::string::npos : end - at - 9);
}

absl::Status Jobs::WaitLocalSlurmState(uint32_t local_job_id, const std::string& state, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  std::string last;
  while (absl::Now() < deadline) {
    last = LocalSlurmState(local_job_id);
    if (last == state) return absl::OkStatus();
    absl::SleepFor(absl::Milliseconds(100));
  }
  return absl::DeadlineExceededError(absl::StrCat("Local job ", local_job_id, " is ", last, ", not ", state));
}

std::string Jobs::Output(const SubmittedJob& job) {
  std::ifstream in(job.output_path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace strongroom::e2e
