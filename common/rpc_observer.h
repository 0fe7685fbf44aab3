// A server interceptor that sees every RPC that passed authorization: it records metrics and
// an audit event with the final status, and gives bare UNIMPLEMENTED answers a message. A successful answer
// whose audit record the sink cannot make durable (AuditSink::RecordDurably) becomes UNAVAILABLE with the
// reason: no audited call answers OK without its record.
#pragma once

#include <memory>
#include <string>

#include "common/audit.h"
#include "common/metrics.h"
#include "grpcpp/support/server_interceptor.h"

namespace strongroom {

class RpcObserverFactory : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  // `peer_certificate_verified`: false on a listener whose handshake does not verify client certificates
  // against the deployment CA (vm-controller's enrollment listener); the actor is then never read from the
  // peer's certificate ("unverified-peer"), the handler's own audit records name who it authenticated.
  RpcObserverFactory(std::string service_name, std::shared_ptr<RpcMetrics> metrics,
                     std::shared_ptr<AuditSink> audit, bool peer_certificate_verified = true);
  grpc::experimental::Interceptor* CreateServerInterceptor(grpc::experimental::ServerRpcInfo* info) override;

 private:
  const std::string service_name_;
  const std::shared_ptr<RpcMetrics> metrics_;
  const std::shared_ptr<AuditSink> audit_;
  const bool peer_certificate_verified_;  // whether CallerIdentity may name the actor
};

}  // namespace strongroom
