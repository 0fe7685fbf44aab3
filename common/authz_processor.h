// The one place every RPC is authenticated and authorized, before any handler runs:
// gRPC calls this processor with the call's path and the connection's TLS properties. It also refuses every
// call but health checks with UNAVAILABLE while the audit sink reports it cannot record them
// (AuditSink::Health), so nothing runs unaudited.
#pragma once

#include <memory>

#include "common/audit.h"
#include "common/metrics.h"
#include "common/peer_verifier.h"
#include "grpcpp/security/auth_metadata_processor.h"

namespace strongroom {

class AuthzProcessor : public grpc::AuthMetadataProcessor {
 public:
  AuthzProcessor(std::shared_ptr<PeerVerifier> verifier, std::shared_ptr<RpcMetrics> metrics,
                 std::shared_ptr<AuditSink> audit);

  // The checks are in-memory (the CA bundle is cached), so run them inline.
  bool IsBlocking() const override { return false; }

  grpc::Status Process(const InputMetadata& metadata, grpc::AuthContext* context, OutputMetadata* consumed,
                       OutputMetadata* response) override;

 private:
  const std::shared_ptr<PeerVerifier> verifier_;
  const std::shared_ptr<RpcMetrics> metrics_;
  const std::shared_ptr<AuditSink> audit_;
};

// The same gate for vm-controller's enrollment listener (docs/IPSEC.md), where callers have no deployment
// identity: only the methods the authorization table lists for that listener pass (their handlers
// authenticate the caller: the ticket, or a project-CA certificate); everything else is PERMISSION_DENIED,
// counted and audited. Audited calls are refused with UNAVAILABLE while the audit sink cannot record them.
class EnrollmentListenerProcessor : public grpc::AuthMetadataProcessor {
 public:
  EnrollmentListenerProcessor(std::shared_ptr<RpcMetrics> metrics, std::shared_ptr<AuditSink> audit);
  bool IsBlocking() const override { return false; }
  grpc::Status Process(const InputMetadata& metadata, grpc::AuthContext* context, OutputMetadata* consumed,
                       OutputMetadata* response) override;

 private:
  const std::shared_ptr<RpcMetrics> metrics_;
  const std::shared_ptr<AuditSink> audit_;
};

}  // namespace strongroom
