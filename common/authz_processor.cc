#include "common/authz_processor.h"

#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/authz.h"
#include "common/status.h"
#include "grpc/grpc_security_constants.h"

namespace strongroom {
namespace {

std::string FirstProperty(const grpc::AuthContext& context, const char* name) {
  std::vector<grpc::string_ref> values = context.FindPropertyValues(name);
  if (values.empty()) return "";
  return std::string(values[0].data(), values[0].size());
}

}  // namespace

AuthzProcessor::AuthzProcessor(std::shared_ptr<PeerVerifier> verifier, std::shared_ptr<RpcMetrics> metrics,
                               std::shared_ptr<AuditSink> audit)
    : verifier_(std::move(verifier)), metrics_(std::move(metrics)), audit_(std::move(audit)) {}

grpc::Status AuthzProcessor::Process(const InputMetadata& metadata, grpc::AuthContext* context,
                                     OutputMetadata*, OutputMetadata*) {
  std::string method = "(unknown)";
  if (auto path = metadata.find(":path"); path != metadata.end()) {
    method.assign(path->second.data(), path->second.size());
  }
  absl::StatusOr<Identity> caller =
      verifier_->Verify(FirstProperty(*context, GRPC_X509_PEM_CERT_PROPERTY_NAME),
                        FirstProperty(*context, GRPC_X509_PEM_CERT_CHAIN_PROPERTY_NAME));
  absl::Status verdict = caller.ok() ? Authorize(*caller, method) : caller.status();
  // Fail closed while the audit sink cannot keep up: the call would run without its record. Health checks
  // still run: they are how the stall is seen.
  if (verdict.ok() && method.rfind("/grpc.health.", 0) != 0) {
    if (absl::Status health = audit_->Health(); !health.ok()) {
      verdict = absl::UnavailableError(absl::StrCat(
          "audited calls are refused while the audit log cannot record them: ", health.message()));
    }
  }
  if (verdict.ok()) return grpc::Status::OK;

  const std::string code = absl::StatusCodeToString(verdict.code());
  metrics_->RecordRejected(method, code);
  audit_->Record({caller.ok() ? caller->SpiffeId() : "unauthenticated", method, "", code,
                  std::string(verdict.message())});
  return ToGrpcStatus(verdict);
}

EnrollmentListenerProcessor::EnrollmentListenerProcessor(std::shared_ptr<RpcMetrics> metrics,
                                                         std::shared_ptr<AuditSink> audit)
    : metrics_(std::move(metrics)), audit_(std::move(audit)) {}

grpc::Status EnrollmentListenerProcessor::Process(const InputMetadata& metadata, grpc::AuthContext*,
                                                  OutputMetadata*, OutputMetadata*) {
  std::string method = "(unknown)";
  if (auto path = metadata.find(":path"); path != metadata.end()) {
    method.assign(path->second.data(), path->second.size());
  }
  absl::Status verdict = AuthorizeOnEnrollmentListener(method).status();
  if (verdict.ok()) {
    if (absl::Status health = audit_->Health(); !health.ok()) {
      verdict = absl::UnavailableError(absl::StrCat(
          "audited calls are refused while the audit log cannot record them: ", health.message()));
    }
  }
  if (verdict.ok()) return grpc::Status::OK;
  const std::string code = absl::StatusCodeToString(verdict.code());
  metrics_->RecordRejected(method, code);
  // The peer's certificate is not verified here: the actor is never taken from it.
  audit_->Record({"unauthenticated", method, "", code, std::string(verdict.message())});
  return ToGrpcStatus(verdict);
}

}  // namespace strongroom
