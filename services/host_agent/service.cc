#include "services/host_agent/service.h"

#include <algorithm>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/call_context.h"
#include "common/status.h"
#include "google/protobuf/util/time_util.h"
#include "services/host_agent/spec_validation.h"
#include "services/host_agent/state_machine.h"

namespace strongroom::host_agent {
namespace {

using google::protobuf::util::TimeUtil;

constexpr int64_t kMaxGraceSeconds = 300;

absl::Status CheckId(const std::string& id) {
  if (!IsValidId(id)) {
    return absl::InvalidArgumentError(
        absl::StrCat("workload_id: \"", id.substr(0, 64), "\" is not an ID (^[a-z0-9][a-z0-9-]{0,62}$)"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::string> HostAgentService::Caller(const grpc::ServerContext& context) {
  SR_ASSIGN_OR_RETURN(Identity caller, CallerIdentity(context));
  if (caller.role == Role::kGlobalJob && caller.instance != manager_->options().node) {
    return absl::PermissionDeniedError(absl::StrCat("global-job client ", caller.SpiffeId(),
                                                    " belongs to node ", caller.instance,
                                                    ", not to this node ", manager_->options().node));
  }
  return caller.SpiffeId();
}

grpc::Status HostAgentService::StartWorkload(grpc::ServerContext* context,
                                             const v1::StartWorkloadRequest* request,
                                             v1::StartWorkloadResponse* response) {
  absl::StatusOr<std::string> caller = Caller(*context);
  if (!caller.ok()) return ToGrpcStatus(caller.status());
  if (!request->has_spec()) return ToGrpcStatus(absl::InvalidArgumentError("spec: required"));
  absl::StatusOr<WorkloadManager::StartResult> r = manager_->Start(request->spec(), *caller);
  if (!r.ok()) return ToGrpcStatus(r.status());
  *response->mutable_workload() = r->workload;
  response->set_created(r->created);
  return grpc::Status::OK;
}

grpc::Status HostAgentService::StopWorkload(grpc::ServerContext* context,
                                            const v1::StopWorkloadRequest* request,
                                            v1::StopWorkloadResponse* response) {
  absl::StatusOr<std::string> caller = Caller(*context);
  if (!caller.ok()) return ToGrpcStatus(caller.status());
  if (absl::Status s = CheckId(request->workload_id()); !s.ok()) return ToGrpcStatus(s);
  if (request->message().size() > 1024)
    return ToGrpcStatus(absl::InvalidArgumentError("message: above 1024 bytes"));
  absl::Duration grace = manager_->options().default_grace;
  if (request->has_grace_period()) {
    const auto& g = request->grace_period();
    if (g.seconds() < 0 || g.nanos() < 0 || g.seconds() > kMaxGraceSeconds) {
      return ToGrpcStatus(absl::InvalidArgumentError("grace_period: must be 0 to 300 s"));
    }
    if (g.seconds() != 0 || g.nanos() != 0) grace = absl::Seconds(g.seconds()) + absl::Nanoseconds(g.nanos());
  }
  v1::StopReason reason = request->reason();
  if (reason == v1::STOP_REASON_UNSPECIFIED) {
    reason = caller->find("/operator/") != std::string::npos ? v1::STOP_REASON_OPERATOR
                                                             : v1::STOP_REASON_JOB_ENDED;
  }
  absl::StatusOr<v1::Workload> w =
      manager_->Stop(request->workload_id(), reason, request->message(), grace, *caller);
  if (!w.ok()) return ToGrpcStatus(w.status());
  *response->mutable_workload() = *w;
  return grpc::Status::OK;
}

grpc::Status HostAgentService::GetWorkload(grpc::ServerContext* context,
                                           const v1::GetWorkloadRequest* request,
                                           v1::GetWorkloadResponse* response) {
  absl::StatusOr<std::string> caller = Caller(*context);
  if (!caller.ok()) return ToGrpcStatus(caller.status());
  if (absl::Status s = CheckId(request->workload_id()); !s.ok()) return ToGrpcStatus(s);
  absl::StatusOr<v1::Workload> w = manager_->Get(request->workload_id());
  if (!w.ok()) return ToGrpcStatus(w.status());
  *response->mutable_workload() = *w;
  return grpc::Status::OK;
}

grpc::Status HostAgentService::ListWorkloads(grpc::ServerContext* context,
                                             const v1::ListWorkloadsRequest* request,
                                             v1::ListWorkloadsResponse* response) {
  absl::StatusOr<std::string> caller = Caller(*context);
  if (!caller.ok()) return ToGrpcStatus(caller.status());
  size_t page_size =
      request->page().page_size() == 0 ? 100 : std::min<size_t>(request->page().page_size(), 1000);
  size_t offset = 0;
  if (!request->page().page_token().empty() && !absl::SimpleAtoi(request->page().page_token(), &offset)) {
    return ToGrpcStatus(absl::InvalidArgumentError("page.page_token: not a token from a previous response"));
  }
  std::vector<v1::Workload> matched;
  for (v1::Workload& w : manager_->List()) {
    if (request->states_size() > 0 &&
        std::find(request->states().begin(), request->states().end(), w.state()) == request->states().end()) {
      continue;
    }
    if (request->kind() != v1::WORKLOAD_KIND_UNSPECIFIED && w.spec().kind() != request->kind()) continue;
    if (!request->global_job_id().empty() && w.spec().job().global_job_id() != request->global_job_id())
      continue;
    matched.push_back(std::move(w));
  }
  for (size_t i = offset; i < matched.size() && i < offset + page_size; ++i)
    *response->add_workloads() = matched[i];
  if (offset + page_size < matched.size()) {
    response->mutable_page()->set_next_page_token(absl::StrCat(offset + page_size));
  }
  return grpc::Status::OK;
}

grpc::Status HostAgentService::WatchWorkload(grpc::ServerContext* context,
                                             const v1::WatchWorkloadRequest* request,
                                             grpc::ServerWriter<v1::WatchWorkloadResponse>* writer) {
  absl::StatusOr<std::string> caller = Caller(*context);
  if (!caller.ok()) return ToGrpcStatus(caller.status());
  if (absl::Status s = CheckId(request->workload_id()); !s.ok()) return ToGrpcStatus(s);
  absl::Duration heartbeat = absl::Seconds(30);
  if (request->has_heartbeat_interval()) {
    const int64_t secs = request->heartbeat_interval().seconds();
    if (secs != 0 || request->heartbeat_interval().nanos() != 0) {
      if (secs < 5 || secs > 600)
        return ToGrpcStatus(absl::InvalidArgumentError("heartbeat_interval: 5 s to 600 s"));
      heartbeat = absl::Seconds(secs);
    }
  }
  absl::StatusOr<v1::Workload> w = manager_->Get(request->workload_id());
  if (!w.ok()) return ToGrpcStatus(w.status());
  v1::WatchWorkloadResponse first;
  *first.mutable_workload() = *w;
  if (!writer->Write(first)) return grpc::Status::CANCELLED;
  uint64_t seen = std::max<uint64_t>(w->revision(), request->after_revision());
  absl::Time last_sent = absl::Now();
  while (!IsTerminal(w->state())) {
    if (context->IsCancelled()) return grpc::Status::CANCELLED;
    w = manager_->WaitForChange(request->workload_id(), seen, absl::Seconds(1));
    if (!w.ok()) return ToGrpcStatus(w.status());
    v1::WatchWorkloadResponse msg;
    *msg.mutable_workload() = *w;
    if (w->revision() > seen) {
      seen = w->revision();
    } else if (absl::Now() - last_sent >= heartbeat) {
      msg.set_heartbeat(true);
    } else {
      continue;
    }
    if (!writer->Write(msg)) return grpc::Status::CANCELLED;
    last_sent = absl::Now();
  }
  return grpc::Status::OK;
}

}  // namespace strongroom::host_agent
