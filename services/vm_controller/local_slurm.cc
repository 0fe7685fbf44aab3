#include "services/vm_controller/local_slurm.h"

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/log.h"
#include "common/subprocess.h"
#include "services/vm_controller/user_file.h"

namespace strongroom::vm_controller {
namespace {

class LocalSlurmCli : public LocalSlurm {
 public:
  explicit LocalSlurmCli(LocalSlurmCliOptions options) : options_(std::move(options)) {}

  absl::StatusOr<std::optional<uint32_t>> FindJobByComment(const std::string& comment) override {
    absl::StatusOr<RunResult> r = Slurm("squeue", {"-h", "-a", "-t", "all", "-o", "%i|%k"});
    if (!r.ok()) return r.status();
    if (r->exit_code != 0) return Failed("squeue", *r);
    return FindJobIdByComment(r->output, comment);
  }

  absl::StatusOr<SlurmJob> ShowJob(uint32_t job_id) override {
    absl::StatusOr<RunResult> r = Slurm("scontrol", {"show", "job", "-o", absl::StrCat(job_id)});
    if (!r.ok()) return r.status();
    if (r->exit_code != 0) {
      if (absl::StrContains(r->output, "Invalid job id")) {
        return absl::NotFoundError(absl::StrCat("Local Slurm job ", job_id, " is not known to the controller"));
      }
      return Failed("scontrol show job", *r);
    }
    return ParseScontrolJob(r->output);
  }

  absl::Status PinAndRelease(uint32_t job_id, const std::string& feature, const std::string& partition) override {
    // scontrol may print "Requested partition configuration not available now" and exit 1 although the update
    // was applied (notes/slurm.md), so the job's record decides.
    absl::StatusOr<RunResult> pin =
        Slurm("scontrol", {"update", absl::StrCat("jobid=", job_id), absl::StrCat("Partition=", partition),
                           absl::StrCat("Features=", feature)});
    if (!pin.ok()) return pin.status();
    absl::StatusOr<SlurmJob> job = ShowJob(job_id);
    if (!job.ok()) return job.status();
    if (job->features != feature || job->partition != partition) {
      return absl::InternalError(absl::StrCat("job ", job_id, " has features \"", job->features, "\" in partition \"",
                                              job->partition, "\", not ", feature, " in ", partition, ": ",
                                              absl::StripAsciiWhitespace(pin->output)));
    }
    if (job->priority != 0) return absl::OkStatus();
    absl::StatusOr<RunResult> release = Slurm("scontrol", {"release", absl::StrCat(job_id)});
    if (!release.ok()) return release.status();
    job = ShowJob(job_id);
    if (!job.ok()) return job.status();
    if (job->priority == 0 && job->IsPending()) {
      return absl::InternalError(absl::StrCat("job ", job_id, " is still held after scontrol release: ",
                                              release->output));
    }
    return absl::OkStatus();
  }

  absl::Status RefuseJob(uint32_t job_id, const std::string& comment) override {
    // Best effort: the cancel matters most, the reason is for the user.
    absl::StatusOr<SlurmJob> before = ShowJob(job_id);
    absl::StatusOr<RunResult> noted =
        Slurm("scontrol", {"update", absl::StrCat("jobid=", job_id), absl::StrCat("Comment=", comment),
                           absl::StrCat("AdminComment=", comment)});
    absl::Status cancelled = CancelJob(job_id);
    if (!cancelled.ok()) return cancelled;
    if (before.ok()) WriteRefusalToJobOutput(*before, comment);
    if (!noted.ok()) return noted.status();
    return absl::OkStatus();
  }

  absl::StatusOr<std::vector<QueuedJob>> PendingJobsIn(const std::string& partition) override {
    // %V: submit time as Unix seconds is not offered; "%V" prints the controller's local time.
    absl::StatusOr<RunResult> r =
        Slurm("squeue", {"-h", "-t", "PD", "-p", partition, "-o", "%i|%V|%k"}, options_.listing_timeout);
    if (!r.ok()) return r.status();
    if (r->exit_code != 0) return Failed("squeue", *r);
    std::vector<QueuedJob> jobs;
    for (absl::string_view line : absl::StrSplit(r->output, '\n', absl::SkipWhitespace())) {
      std::vector<absl::string_view> parts = absl::StrSplit(line, absl::MaxSplits('|', 2));
      QueuedJob job;
      std::string error;
      if (parts.size() != 3 || !absl::SimpleAtoi(parts[0], &job.job_id) ||
          !absl::ParseTime("%Y-%m-%dT%H:%M:%S", parts[1], absl::LocalTimeZone(), &job.submitted, &error)) {
        continue;
      }
      job.comment = std::string(absl::StripAsciiWhitespace(parts[2]));
      jobs.push_back(std::move(job));
    }
    return jobs;
  }

  absl::StatusOr<std::vector<SlurmNode>> ListNodes() override {
    absl::StatusOr<RunResult> r = Slurm("scontrol", {"show", "nodes", "-o"}, options_.listing_timeout);
    if (!r.ok()) return r.status();
    if (r->exit_code != 0 && !absl::StrContains(r->output, "No nodes")) return Failed("scontrol show nodes", *r);
    return ParseNodes(r->output);
  }

  absl::StatusOr<std::optional<std::string>> NodeState(const std::string& node) override {
    absl::StatusOr<RunResult> r = Slurm("scontrol", {"show", "node", "-o", node});
    if (!r.ok()) return r.status();
    if (r->exit_code != 0 || absl::StrContains(r->output, "not found")) return std::optional<std::string>();
    absl::StatusOr<std::string> state = ParseNodeState(r->output);
    if (!state.ok()) return state.status();
    return std::optional<std::string>(*state);
  }

  absl::Status DeleteNode(const std::string& node, bool down_only) override {
    absl::StatusOr<std::optional<std::string>> current = NodeState(node);
    if (!current.ok()) return current.status();
    if (!current->has_value()) return absl::OkStatus();  // already gone
    if (!absl::StrContains(**current, "DOWN")) {  // once: repeated updates only add churn to a completing job
      absl::StatusOr<RunResult> down = Slurm(
          "scontrol", {"update", absl::StrCat("nodename=", node), "state=down", "reason=strongroom-teardown"});
      if (!down.ok()) return down.status();
    }
    // Never delete a node a job is still on or completing on: slurmctld 22.05 accepts the delete of a DOWN node
    // whose job is completing and then dies (seen when a global job was cancelled under a running local job).
    // Marking it DOWN lets Slurm finish that job; the next tick deletes the node.
    absl::StatusOr<std::optional<std::string>> before = NodeState(node);
    if (!before.ok()) return before.status();
    if (!before->has_value()) return absl::OkStatus();  // already gone
    for (const char* busy : {"COMPLETING", "ALLOC", "MIX"}) {
      if (absl::StrContains(**before, busy)) {
        return absl::FailedPreconditionError(absl::StrCat("node ", node, " still has a job (", **before, ")"));
      }
    }
    if (down_only) return absl::OkStatus();
    absl::StatusOr<RunResult> del = Slurm("scontrol", {"delete", absl::StrCat("nodename=", node)});
    if (!del.ok()) return del.status();
    if (del->exit_code == 0) return absl::OkStatus();
    absl::StatusOr<std::optional<std::string>> state = NodeState(node);
    if (state.ok() && !state->has_value()) return absl::OkStatus();  // already gone
    return absl::FailedPreconditionError(absl::StrCat("cannot delete node ", node, " yet: ",
                                                      absl::StripAsciiWhitespace(del->output)));
  }

  absl::Status CancelJob(uint32_t job_id) override {
    absl::StatusOr<RunResult> r = Slurm("scancel", {absl::StrCat(job_id)});
    if (!r.ok()) return r.status();
    if (r->exit_code != 0 && !absl::StrContains(r->output, "already completed") &&
        !absl::StrContains(r->output, "Invalid job id")) {
      return Failed("scancel", *r);
    }
    return absl::OkStatus();
  }

 private:
  // The reason also goes where a researcher looks first, the job's output file, written as the job's user
  // (user_file.h): a job refused before it ran has no other output. Logged, not fatal, when it cannot be
  // written (a path on another host, a directory the user cannot write).
  void WriteRefusalToJobOutput(const SlurmJob& job, const std::string& comment) {
    const std::string kMarker = " refused by the enclave: ";
    const size_t at = comment.find(kMarker);
    const std::string line = absl::StrCat("strongroom: job ", job.job_id, " was refused by the secure enclave: ",
                                          at == std::string::npos ? comment : comment.substr(at + kMarker.size()),
                                          "\n");
    std::vector<std::string> paths = {job.std_err};
    if (job.std_out != job.std_err) paths.push_back(job.std_out);
    for (const std::string& path : paths) {
      if (path.empty() || path == "/dev/null") continue;
      if (absl::Status written = AppendAsUser(path, job.uid, job.gid, line); !written.ok()) {
        Log(LogLevel::kWarn, "cannot write the refusal into the job's output",
            {{"job_id", absl::StrCat(job.job_id)}, {"error", written.ToString()}});
      }
    }
  }
  absl::StatusOr<RunResult> Slurm(const std::string& tool, std::vector<std::string> args,
                                  absl::Duration timeout = absl::ZeroDuration()) {
    // env(1) gives the CLI exactly SLURM_CONF and nothing inherited from this daemon.
    std::vector<std::string> argv = {"/usr/bin/env", "-i", absl::StrCat("SLURM_CONF=", options_.slurm_conf),
                                     absl::StrCat(options_.bin_dir, "/", tool)};
    argv.insert(argv.end(), args.begin(), args.end());
    absl::StatusOr<RunResult> r =
        Run(argv, timeout > absl::ZeroDuration() ? std::min(timeout, options_.timeout) : options_.timeout);
    if (!r.ok()) return absl::UnavailableError(absl::StrCat("Local Slurm: ", r.status().message()));
    return r;
  }

  static absl::Status Failed(absl::string_view what, const RunResult& r) {
    return absl::UnavailableError(absl::StrCat("Local Slurm: ", what, " exited ", r.exit_code, ": ",
                                               absl::StripAsciiWhitespace(r.output)));
  }

  const LocalSlurmCliOptions options_;
};

}  // namespace

std::unique_ptr<LocalSlurm> MakeLocalSlurmCli(LocalSlurmCliOptions options) {
  return std::make_unique<LocalSlurmCli>(std::move(options));
}

}  // namespace strongroom::vm_controller
