#include "services/host_agent/network.h"

#include <chrono>
#include <functional>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "common/tls.h"
#include "strongroom/v1/netd.grpc.pb.h"

namespace strongroom::host_agent {

const char* NetworkFailureReason(const absl::Status& allocate) {
  switch (allocate.code()) {
    case absl::StatusCode::kResourceExhausted:
      return "IP_POOL_EXHAUSTED";
    case absl::StatusCode::kUnavailable:
      return "NETD_UNAVAILABLE";
    default:
      return "NETD_ALLOCATE";
  }
}

namespace {

constexpr auto kCallTimeout = std::chrono::seconds(30);

class LoopbackOnly : public NetworkProvider {
 public:
  bool attached() const override { return false; }
  absl::StatusOr<v1::NetworkAttachment> Allocate(const v1::WorkloadSpec&, const std::string&) override {
    return v1::NetworkAttachment();
  }
  absl::StatusOr<v1::NetworkAttachment> AllocateTap(const v1::WorkloadSpec&) override {
    return v1::NetworkAttachment();
  }
  absl::Status Release(const std::string&, uint64_t) override { return absl::OkStatus(); }
};

class NetdNetwork : public NetworkProvider {
 public:
  explicit NetdNetwork(std::shared_ptr<grpc::Channel> channel) : stub_(v1::Netd::NewStub(channel)) {}
  bool attached() const override { return true; }

  absl::StatusOr<v1::NetworkAttachment> Allocate(const v1::WorkloadSpec& spec,
                                                 const std::string& netns) override {
    v1::AllocatePortRequest request;
    request.set_netns(netns);
    return Send(spec, request);
  }
  absl::StatusOr<v1::NetworkAttachment> AllocateTap(const v1::WorkloadSpec& spec) override {
    v1::AllocatePortRequest request;
    request.mutable_tap();
    return Send(spec, request);
  }

  absl::StatusOr<v1::NetworkAttachment> Send(const v1::WorkloadSpec& spec, v1::AllocatePortRequest& request) {
    request.set_workload_id(spec.workload_id());
    *request.mutable_egress_allowlist() = spec.egress_allowlist();
    *request.mutable_ingress_allowlist() = spec.ingress_allowlist();
    if (!spec.job().project().empty() && !spec.job().global_job_id().empty()) {
      request.set_owner(absl::StrCat(spec.job().project(), "/", spec.job().global_job_id()));
    }
    v1::AllocatePortResponse response;
    // AllocatePort is idempotent on the workload id, so a dropped connection is retried.
    grpc::Status s = WithRetry(
        [&](grpc::ClientContext* context) { return stub_->AllocatePort(context, request, &response); });
    if (!s.ok()) {
      return Annotate(FromGrpcStatus(s),
                      absl::StrCat("netd AllocatePort(workload ", spec.workload_id(), ")"));
    }
    return response.port().attachment();
  }

  absl::Status Release(const std::string& workload_id, uint64_t generation) override {
    v1::ReleasePortRequest request;
    request.set_workload_id(workload_id);
    request.set_expected_generation(generation);
    v1::ReleasePortResponse response;
    grpc::Status s = WithRetry(
        [&](grpc::ClientContext* context) { return stub_->ReleasePort(context, request, &response); });
    if (!s.ok())
      return Annotate(FromGrpcStatus(s), absl::StrCat("netd ReleasePort(workload ", workload_id, ")"));
    return absl::OkStatus();
  }

 private:
  // Up to 3 attempts, 100 ms then 400 ms apart, while netd is UNAVAILABLE (both RPCs are idempotent).
  static grpc::Status WithRetry(const std::function<grpc::Status(grpc::ClientContext*)>& call) {
    grpc::Status s;
    for (int attempt = 0; attempt < 3; ++attempt) {
      if (attempt > 0) std::this_thread::sleep_for(std::chrono::milliseconds(100 << (2 * (attempt - 1))));
      grpc::ClientContext context;
      context.set_deadline(std::chrono::system_clock::now() + kCallTimeout);
      context.set_wait_for_ready(attempt > 0);
      s = call(&context);
      if (s.error_code() != grpc::StatusCode::UNAVAILABLE) return s;
    }
    return s;
  }
  std::unique_ptr<v1::Netd::Stub> stub_;  // one mTLS channel to this node's netd
};

}  // namespace

std::unique_ptr<NetworkProvider> MakeLoopbackOnlyNetwork() { return std::make_unique<LoopbackOnly>(); }

absl::StatusOr<std::unique_ptr<NetworkProvider>> MakeNetdNetwork(const std::string& address,
                                                                 const v1::TlsFiles& tls,
                                                                 const std::string& trust_domain,
                                                                 const std::string& netd_instance) {
  ServerExpectation expected;
  expected.trust_domain = trust_domain;
  expected.role = Role::kNetd;
  if (!netd_instance.empty()) expected.instance = netd_instance;
  SR_ASSIGN_OR_RETURN(std::shared_ptr<grpc::Channel> channel, MakeSecureChannel(address, tls, expected));
  return std::unique_ptr<NetworkProvider>(std::make_unique<NetdNetwork>(std::move(channel)));
}

}  // namespace strongroom::host_agent
