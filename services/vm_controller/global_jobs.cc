#include "services/vm_controller/global_jobs.h"

#include <chrono>

#include "common/status.h"
#include "common/tls.h"

namespace strongroom::vm_controller {
namespace {

constexpr auto kCallTimeout = std::chrono::seconds(30);

class GlobalJobsClient : public GlobalJobs {
 public:
  explicit GlobalJobsClient(std::shared_ptr<grpc::Channel> channel) : stub_(v1::Backend::NewStub(channel)) {}

  absl::StatusOr<v1::CreateGlobalJobResponse> CreateGlobalJob(const v1::CreateGlobalJobRequest& request) override {
    return Call(&v1::Backend::Stub::CreateGlobalJob, request);
  }
  absl::StatusOr<v1::ReleaseWorkloadResponse> ReleaseWorkload(const v1::ReleaseWorkloadRequest& request) override {
    return Call(&v1::Backend::Stub::ReleaseWorkload, request);
  }
  absl::StatusOr<v1::CancelJobResponse> CancelJob(const v1::CancelJobRequest& request) override {
    return Call(&v1::Backend::Stub::CancelJob, request);
  }
  absl::StatusOr<v1::GetJobResponse> GetJob(const v1::GetJobRequest& request) override {
    return Call(&v1::Backend::Stub::GetJob, request);
  }

 private:
  template <typename Request, typename Response>
  absl::StatusOr<Response> Call(grpc::Status (v1::Backend::Stub::*method)(grpc::ClientContext*, const Request&,
                                                                          Response*),
                                const Request& request) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + kCallTimeout);
    Response response;
    grpc::Status status = (stub_.get()->*method)(&context, request, &response);
    if (!status.ok()) return Annotate(FromGrpcStatus(status), "backend");
    return response;
  }

  const std::unique_ptr<v1::Backend::Stub> stub_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<GlobalJobs>> MakeGlobalJobsClient(const std::string& backend_address,
                                                                 const v1::TlsFiles& tls,
                                                                 const std::string& trust_domain) {
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel =
      MakeSecureChannel(backend_address, tls, ServerExpectation{trust_domain, Role::kBackend, std::nullopt});
  if (!channel.ok()) return channel.status();
  return std::unique_ptr<GlobalJobs>(new GlobalJobsClient(*channel));
}

}  // namespace strongroom::vm_controller
