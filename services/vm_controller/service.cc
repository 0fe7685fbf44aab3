#include "services/vm_controller/service.h"

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/call_context.h"
#include "common/status.h"
#include "google/protobuf/util/time_util.h"
#include "services/vm_controller/enrollment_service.h"

namespace strongroom::vm_controller {
namespace {

using google::protobuf::util::TimeUtil;

constexpr uint32_t kDefaultPageSize = 100;
constexpr uint32_t kMaxPageSize = 1000;

bool InRange(const google::protobuf::Timestamp& t, const v1::TimeRange& range) {
  if (range.has_start() && t < range.start()) return false;
  if (range.has_end() && !(t < range.end())) return false;
  return true;
}

}  // namespace

absl::Status VmControllerService::CheckHookInstance(const grpc::ServerContext& context) const {
  SR_ASSIGN_OR_RETURN(Identity caller, CallerIdentity(context));
  if (caller.role == Role::kSubmitHook && caller.instance != cluster_) {
    return absl::PermissionDeniedError(absl::StrCat("submit hook ", caller.SpiffeId(),
                                                    " may only speak for cluster ", caller.instance,
                                                    "; this controller serves ", cluster_));
  }
  return absl::OkStatus();
}

grpc::Status VmControllerService::ConvertLocalJob(grpc::ServerContext* context,
                                                  const v1::ConvertLocalJobRequest* request,
                                                  v1::ConvertLocalJobResponse* response) {
  if (absl::Status s = CheckHookInstance(*context); !s.ok()) return ToGrpcStatus(s);
  absl::StatusOr<std::pair<v1::LocalJob, bool>> converted = controller_->Convert(*request);
  if (!converted.ok()) return ToGrpcStatus(Annotate(converted.status(), "ConvertLocalJob"));
  *response->mutable_job() = converted->first;
  response->set_created(converted->second);
  return grpc::Status::OK;
}

grpc::Status VmControllerService::LocalJobEnded(grpc::ServerContext* context, const v1::LocalJobEndedRequest* request,
                                                v1::LocalJobEndedResponse* response) {
  if (absl::Status s = CheckHookInstance(*context); !s.ok()) return ToGrpcStatus(s);
  absl::StatusOr<v1::LocalJob> job = controller_->LocalJobEnded(*request);
  if (!job.ok()) return ToGrpcStatus(Annotate(job.status(), "LocalJobEnded"));
  *response->mutable_job() = *job;
  return grpc::Status::OK;
}

grpc::Status VmControllerService::ProvisionWorkload(grpc::ServerContext* context,
                                                    const v1::ProvisionWorkloadRequest* request,
                                                    v1::ProvisionWorkloadResponse* response) {
  absl::Time deadline = absl::FromChrono(context->deadline());
  if (request->has_registration_timeout() && request->registration_timeout().seconds() > 0) {
    deadline = std::min(deadline, absl::Now() + absl::Seconds(request->registration_timeout().seconds()));
  }
  absl::StatusOr<v1::ProvisionWorkloadResponse> provisioned = controller_->Provision(*request, deadline);
  if (!provisioned.ok()) {
    return ToGrpcStatus(Annotate(provisioned.status(), absl::StrCat("ProvisionWorkload(", request->workload_id(), ")")));
  }
  *response = *provisioned;
  return grpc::Status::OK;
}

grpc::Status VmControllerService::GetLocalJob(grpc::ServerContext*, const v1::GetLocalJobRequest* request,
                                              v1::GetLocalJobResponse* response) {
  absl::StatusOr<v1::LocalJob> job = controller_->Get(request->local());
  if (!job.ok()) return ToGrpcStatus(Annotate(job.status(), "GetLocalJob"));
  *response->mutable_job() = *job;
  return grpc::Status::OK;
}

grpc::Status VmControllerService::ListLocalJobs(grpc::ServerContext*, const v1::ListLocalJobsRequest* request,
                                                v1::ListLocalJobsResponse* response) {
  std::vector<v1::LocalJobState> states;
  for (int s : request->states()) states.push_back(static_cast<v1::LocalJobState>(s));
  uint64_t offset = 0;
  if (!request->page().page_token().empty() && !absl::SimpleAtoi(request->page().page_token(), &offset)) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "ListLocalJobs: page.page_token is not one we issued");
  }
  uint32_t page_size = request->page().page_size() == 0 ? kDefaultPageSize : request->page().page_size();
  page_size = std::min(page_size, kMaxPageSize);
  absl::StatusOr<std::vector<v1::LocalJob>> jobs = controller_->List(states, 1 << 20);
  if (!jobs.ok()) return ToGrpcStatus(Annotate(jobs.status(), "ListLocalJobs"));
  uint64_t matched = 0;
  for (const v1::LocalJob& job : *jobs) {
    if (!request->user().empty() && job.user().name() != request->user()) continue;
    if (!request->project().empty() && job.project() != request->project()) continue;
    if (request->has_submitted() && !InRange(job.submit_time(), request->submitted())) continue;
    if (matched++ < offset) continue;
    if (static_cast<uint32_t>(response->jobs_size()) == page_size) {
      response->mutable_page()->set_next_page_token(absl::StrCat(offset + page_size));
      break;
    }
    *response->add_jobs() = job;
  }
  return grpc::Status::OK;
}

std::string PeerIpv4(const std::string& peer) {
  std::string rest;
  if (absl::StartsWith(peer, "ipv4:")) {
    rest = peer.substr(5);
  } else if (absl::StartsWith(peer, "ipv6:[::ffff:")) {
    rest = peer.substr(13);
    size_t close = rest.find(']');
    if (close == std::string::npos) return "";
    rest = rest.substr(0, close) + ":";
  } else {
    return "";
  }
  size_t colon = rest.rfind(':');
  return colon == std::string::npos ? "" : rest.substr(0, colon);
}

grpc::Status VmControllerService::EnrollWorkload(grpc::ServerContext* context,
                                                 const v1::EnrollWorkloadRequest* request,
                                                 v1::EnrollWorkloadResponse* response) {
  if (enrollment_ == nullptr) {
    return ToGrpcStatus(
        absl::FailedPreconditionError("EnrollWorkload: enrollment is not configured on this VM"));
  }
  absl::StatusOr<Identity> caller = CallerIdentity(*context);
  if (!caller.ok()) return ToGrpcStatus(caller.status());
  return ServeEnrollment(*enrollment_, caller->SpiffeId(), context->peer(), *request, response);
}

}  // namespace strongroom::vm_controller
