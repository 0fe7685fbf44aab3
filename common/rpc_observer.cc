#include "common/rpc_observer.h"

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/call_context.h"
#include "google/protobuf/message.h"

namespace strongroom {
namespace {

using grpc::experimental::InterceptionHookPoints;

class RpcObserver : public grpc::experimental::Interceptor {
 public:
  RpcObserver(grpc::experimental::ServerRpcInfo* info, const std::string& service_name, RpcMetrics* metrics,
              AuditSink* audit, bool peer_certificate_verified)
      : info_(info),
        service_name_(service_name),
        metrics_(metrics),
        audit_(audit),
        peer_certificate_verified_(peer_certificate_verified) {}

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::POST_RECV_INITIAL_METADATA)) {
      start_ = absl::Now();
    }
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::POST_RECV_MESSAGE)) {
      // The audit record names the request's object. Only our generated services are known to
      // receive protobuf messages here (the default health service receives raw ByteBuffers).
      if (absl::StartsWith(info_->method(), "/strongroom.") && methods->GetRecvMessage() != nullptr) {
        object_ = AuditObjectOf(*static_cast<const google::protobuf::Message*>(methods->GetRecvMessage()));
      }
    }
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_STATUS)) {
      grpc::Status status = methods->GetSendStatus();
      // Generated service stubs answer UNIMPLEMENTED with an empty message; say which RPC.
      if (status.error_code() == grpc::StatusCode::UNIMPLEMENTED && status.error_message().empty()) {
        status = grpc::Status(
            grpc::StatusCode::UNIMPLEMENTED,
            absl::StrCat(info_->method(), " is not implemented by this ", service_name_, " build"));
        methods->ModifySendStatus(status);
      }
      // Fail closed: an answer whose record is not durable is not given (health checks excepted: they must
      // report a stalled chain, and their records wait like any other).
      if (absl::Status recorded = Finish(status);
          !recorded.ok() && status.ok() && !absl::StartsWith(info_->method(), "/grpc.health.")) {
        methods->ModifySendStatus(grpc::Status(
            grpc::StatusCode::UNAVAILABLE,
            absl::StrCat("the audit record of this call could not be made durable, so its answer is withheld "
                         "(the call may have taken effect; retry): ",
                         recorded.message())));
      }
    }
    methods->Proceed();
  }

 private:
  absl::Status Finish(const grpc::Status& status) {
    const std::string code = absl::StatusCodeToString(static_cast<absl::StatusCode>(status.error_code()));
    metrics_->RecordHandled(info_->method(), code, absl::ToDoubleSeconds(absl::Now() - start_));
    AuditEvent event{peer_certificate_verified_ ? "unauthenticated" : "unverified-peer", info_->method(),
                     object_, code, status.ok() ? "" : status.error_message()};
    if (auto* context = info_->server_context(); context != nullptr) {
      if (absl::StatusOr<Identity> caller = CallerIdentity(*context);
          peer_certificate_verified_ && caller.ok()) {
        event.actor = caller->SpiffeId();
      }
      event.details["peer"] = context->peer();
    }
    return audit_->RecordDurably(event);
  }

  grpc::experimental::ServerRpcInfo* const info_;
  const std::string& service_name_;
  RpcMetrics* const metrics_;
  AuditSink* const audit_;
  const bool peer_certificate_verified_;  // see RpcObserverFactory
  absl::Time start_ = absl::Now();
  std::string object_;  // what the request is about, for the audit record
};

}  // namespace

RpcObserverFactory::RpcObserverFactory(std::string service_name, std::shared_ptr<RpcMetrics> metrics,
                                       std::shared_ptr<AuditSink> audit, bool peer_certificate_verified)
    : service_name_(std::move(service_name)),
      metrics_(std::move(metrics)),
      audit_(std::move(audit)),
      peer_certificate_verified_(peer_certificate_verified) {}

grpc::experimental::Interceptor* RpcObserverFactory::CreateServerInterceptor(
    grpc::experimental::ServerRpcInfo* info) {
  return new RpcObserver(info, service_name_, metrics_.get(), audit_.get(), peer_certificate_verified_);
}

}  // namespace strongroom
