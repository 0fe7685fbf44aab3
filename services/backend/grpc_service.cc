#include "services/backend/grpc_service.h"

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/call_context.h"
#include "common/status.h"

namespace strongroom::backend {
namespace {

class BackendGrpcService final : public v1::Backend::Service {
 public:
  explicit BackendGrpcService(BackendService* service) : service_(service) {}

#define SR_BACKEND_RPC(Method)                                                                 \
  grpc::Status Method(grpc::ServerContext* context, const v1::Method##Request* request,        \
                      v1::Method##Response* response) override {                               \
    return Handle(#Method, *context, response,                                                 \
                  [&](const Identity& caller) { return service_->Method(caller, *request); }); \
  }
  SR_BACKEND_RPC(CreateGlobalJob)
  SR_BACKEND_RPC(GetJob)
  SR_BACKEND_RPC(ListJobs)
  SR_BACKEND_RPC(GetJobTimeline)
  SR_BACKEND_RPC(CancelJob)
  SR_BACKEND_RPC(WorkloadReady)
  SR_BACKEND_RPC(WorkloadFailed)
  SR_BACKEND_RPC(WorkloadStopped)
  SR_BACKEND_RPC(ReleaseWorkload)
  SR_BACKEND_RPC(QueryAudit)
  SR_BACKEND_RPC(VerifyAudit)
  SR_BACKEND_RPC(UsageReport)
#undef SR_BACKEND_RPC

  grpc::Status AppendAudit(grpc::ServerContext* context, const v1::AppendAuditRequest* request,
                           v1::AppendAuditResponse* response) override {
    const absl::Time deadline = absl::FromChrono(context->deadline());
    return Handle("AppendAudit", *context, response,
                  [&](const Identity& caller) { return service_->AppendAudit(caller, *request, deadline); });
  }

 private:
  template <typename Response, typename Call>
  static grpc::Status Handle(const char* method, const grpc::ServerContext& context, Response* response,
                             Call&& call) {
    absl::StatusOr<Identity> caller = CallerIdentity(context);
    if (!caller.ok()) return ToGrpcStatus(caller.status());
    absl::StatusOr<Response> result = call(*caller);
    if (!result.ok()) return ToGrpcStatus(Annotate(result.status(), absl::StrCat("backend: ", method)));
    *response = *std::move(result);
    return grpc::Status::OK;
  }

  BackendService* const service_;  // owned by main, outlives the server
};

}  // namespace

std::unique_ptr<v1::Backend::Service> MakeBackendGrpcService(BackendService* service) {
  return std::make_unique<BackendGrpcService>(service);
}

}  // namespace strongroom::backend
