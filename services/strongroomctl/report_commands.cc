// `report usage` and the job views (`jobs`, `job`, `timeline`): read-only operator commands on backend.
#include <cstdio>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/util/time_util.h"
#include "services/strongroomctl/ctl.h"
#include "strongroom/v1/backend.grpc.pb.h"

namespace strongroom::ctl {
namespace {

absl::StatusOr<std::unique_ptr<v1::Backend::Stub>> BackendStub(const Flags& flags) {
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = OpenChannel(flags, Role::kBackend);
  if (!channel.ok()) return channel.status();
  return v1::Backend::NewStub(*channel);
}

}  // namespace

int ReportCommand(const Flags& flags, const std::vector<std::string>& args) {
  if (args.empty() || args[0] != "usage") return UsageError("report usage --project P --from TIME --to TIME");
  std::string error;
  const CommandOptions o =
      ParseCommandOptions({args.begin() + 1, args.end()}, {"--project", "--from", "--to"}, {}, &error);
  if (!error.empty()) return UsageError("report usage: " + error);
  if (o.Get("--project").empty() || o.Get("--from").empty() || o.Get("--to").empty()) {
    return UsageError("report usage needs --project, --from and --to");
  }
  v1::UsageReportRequest request;
  request.set_project(o.Get("--project"));
  for (const char* bound : {"--from", "--to"}) {
    absl::StatusOr<absl::Time> t = ParseTimeArgument(o.Get(bound));
    if (!t.ok()) return UsageError(absl::StrCat(bound, ": ", t.status().message()));
    *(std::string(bound) == "--from" ? request.mutable_window()->mutable_start()
                                     : request.mutable_window()->mutable_end()) =
        google::protobuf::util::TimeUtil::MicrosecondsToTimestamp(absl::ToUnixMicros(*t));
  }
  absl::StatusOr<std::unique_ptr<v1::Backend::Stub>> stub = BackendStub(flags);
  if (!stub.ok()) return UsageError(std::string(stub.status().message()));
  v1::UsageReportResponse response;
  grpc::Status status = (*stub)->UsageReport(NewContext(flags).get(), request, &response);
  if (!status.ok()) return PrintStatusAndExit(status);
  PrintJson(response);
  return 0;
}

int JobsCommand(const Flags& flags, const std::string& command, const std::vector<std::string>& args) {
  absl::StatusOr<std::unique_ptr<v1::Backend::Stub>> stub = BackendStub(flags);
  if (!stub.ok()) return UsageError(std::string(stub.status().message()));
  if (command == "job" || command == "timeline") {
    if (args.size() != 1) return UsageError(command + " GLOBAL_JOB_ID");
    grpc::Status status;
    if (command == "job") {
      v1::GetJobRequest request;
      request.mutable_job()->set_global_job_id(args[0]);
      v1::GetJobResponse response;
      status = (*stub)->GetJob(NewContext(flags).get(), request, &response);
      if (status.ok()) PrintJson(response.job());
    } else {
      v1::GetJobTimelineRequest request;
      request.mutable_job()->set_global_job_id(args[0]);
      v1::GetJobTimelineResponse response;
      status = (*stub)->GetJobTimeline(NewContext(flags).get(), request, &response);
      if (status.ok()) PrintJson(response);
    }
    return status.ok() ? 0 : PrintStatusAndExit(status);
  }
  std::string error;
  const CommandOptions o =
      ParseCommandOptions(args, {"--state", "--project", "--user", "--cluster", "--limit"}, {}, &error);
  if (!error.empty()) return UsageError("jobs: " + error);
  v1::ListJobsRequest request;
  for (const std::string& name :
       o.values.count("--state") ? o.values.at("--state") : std::vector<std::string>()) {
    v1::JobState state;
    if (!v1::JobState_Parse("JOB_STATE_" + name, &state))
      return UsageError("--state: e.g. QUEUED, RUNNING, FAILED");
    request.add_states(state);
  }
  request.set_project(o.Get("--project"));
  request.set_user(o.Get("--user"));
  request.set_local_cluster(o.Get("--cluster"));
  int64_t limit = 100;
  if (!o.Get("--limit").empty() && (!absl::SimpleAtoi(o.Get("--limit"), &limit) || limit < 1)) {
    return UsageError("--limit: a positive number");
  }
  int64_t printed = 0;
  while (printed < limit) {
    request.mutable_page()->set_page_size(static_cast<uint32_t>(std::min<int64_t>(limit - printed, 1000)));
    v1::ListJobsResponse page;
    grpc::Status status = (*stub)->ListJobs(NewContext(flags).get(), request, &page);
    if (!status.ok()) return PrintStatusAndExit(status);
    for (const v1::Job& job : page.jobs()) {
      PrintJson(job);
      ++printed;
    }
    if (page.page().next_page_token().empty()) break;
    request.mutable_page()->set_page_token(page.page().next_page_token());
  }
  return 0;
}

}  // namespace strongroom::ctl
