// Researcher-side helpers over an E2eStack: submit a job as an ordinary user on the Local Slurm and follow it
// through vm-controller, backend and both Slurm clusters. Shared by the end-to-end test, its benchmark and the
// quickstart demo.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "google/protobuf/message.h"
#include "strongroom/v1/backend.pb.h"
#include "strongroom/v1/vm_controller.pb.h"
#include "tests/e2e/e2e_stack.h"

namespace strongroom::e2e {

namespace v1 = ::strongroom::v1;

struct SubmittedJob {
  uint32_t local_job_id = 0;
  std::string output_path;  // in the project share
  absl::Time submitted;     // just before sbatch ran
};

// A job script that prints KEY=VALUE lines describing where it runs: job, hostname, netns, uid_map, root_fs,
// user, allowlisted / other (a TCP connect to the Local slurmctld and to backend: "connected" or "blocked"),
// running_at (epoch seconds when the user command ran), kernel (uname -r), address (the first global IPv4 address),
// then sleeps.
std::string ProbeScript(int sleep_seconds);

// The network namespace of this process, as /proc/self/ns/net reads ("net:[N]").
std::string OwnNetns();

// Parses strongroomctl's JSON output (the first '{' to the last '}') into `message`.
absl::Status ParseCtlJson(const std::string& output, google::protobuf::Message* message);

// One line per timeline entry: "+SECONDS  event-or-transition  (actor)  message", offsets from `origin`.
std::string FormatTimeline(const v1::GetJobTimelineResponse& timeline, absl::Time origin);
// The offset from `origin` of the first timeline entry named `event` (or entering `state`), if any.
std::optional<absl::Duration> EventOffset(const v1::GetJobTimelineResponse& timeline, const std::string& event,
                                          absl::Time origin);

class Jobs {
 public:
  Jobs(E2eStack* stack, std::string user) : stack_(stack), user_(std::move(user)) {}

  // Writes `script` into the user's share directory and submits it with sbatch --exclusive as the user, under
  // `account` (the project; empty: no -A), with `extra` sbatch options.
  absl::StatusOr<SubmittedJob> Submit(const std::string& script, const std::string& account = "proj1",
                                      const std::vector<std::string>& extra = {});
  // The same without --exclusive (a job that shares its node: it runs in a VM), with `extra` sbatch options.
  absl::StatusOr<SubmittedJob> SubmitShared(const std::string& script, const std::vector<std::string>& extra = {});

  // vm-controller's view of the job; waits until it reaches `state` (an error if it ends in another terminal
  // state or the timeout passes).
  absl::StatusOr<v1::LocalJob> LocalJob(uint32_t local_job_id);
  absl::StatusOr<v1::LocalJob> WaitLocal(const SubmittedJob& job, v1::LocalJobState state, absl::Duration timeout);

  // backend's view of the global job.
  absl::StatusOr<v1::Job> GlobalJob(const std::string& global_job_id);
  absl::StatusOr<v1::Job> WaitGlobal(const std::string& global_job_id, v1::JobState state, absl::Duration timeout);
  absl::StatusOr<v1::Job> WaitGlobalTerminal(const std::string& global_job_id, absl::Duration timeout);
  absl::StatusOr<v1::GetJobTimelineResponse> Timeline(const std::string& global_job_id);

  // The Local Slurm's JobState of the job ("PENDING", "RUNNING", "COMPLETED", ...), "" if unknown.
  std::string LocalSlurmState(uint32_t local_job_id);
  absl::Status WaitLocalSlurmState(uint32_t local_job_id, const std::string& state, absl::Duration timeout);

  // The job's output file ("" until it exists).
  std::string Output(const SubmittedJob& job);

 private:
  // strongroomctl `call` against `daemon` (see E2eStack::Ctl), the JSON answer parsed into `response`.
  absl::Status Call(const std::string& daemon, const std::string& method, const std::string& json,
                    google::protobuf::Message* response);

  E2eStack* const stack_;  // not owned
  const std::string user_;
  absl::StatusOr<SubmittedJob> SubmitWith(const std::string& script, const std::string& account,
                                          const std::vector<std::string>& extra, bool exclusive);

  int counter_ = 0;
};

}  // namespace strongroom::e2e
