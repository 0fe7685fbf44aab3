#include "common/authz.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace strongroom {

const std::vector<AuthzRule>& AuthorizationTable() {
  using R = Role;
  const std::vector<Role> kAllServices = {R::kBackend, R::kVmController, R::kHostAgent, R::kNetd};
  const std::vector<Role> kAnyone = {R::kBackend,  R::kVmController, R::kHostAgent, R::kNetd,
                                     R::kOperator, R::kSubmitHook,   R::kGlobalJob};
  static const auto* const kTable = new std::vector<AuthzRule>{
      // ---- backend ------------------------------------------------------------------
      {"/strongroom.v1.Backend/CreateGlobalJob", {R::kVmController}},
      {"/strongroom.v1.Backend/GetJob", {R::kVmController, R::kOperator}},
      {"/strongroom.v1.Backend/ListJobs", {R::kVmController, R::kOperator}},
      {"/strongroom.v1.Backend/GetJobTimeline", {R::kVmController, R::kOperator}},
      {"/strongroom.v1.Backend/CancelJob", {R::kVmController, R::kOperator}},
      {"/strongroom.v1.Backend/WorkloadReady", {R::kHostAgent}},
      {"/strongroom.v1.Backend/WorkloadFailed", {R::kHostAgent}},
      {"/strongroom.v1.Backend/WorkloadStopped", {R::kHostAgent}},
      {"/strongroom.v1.Backend/ReleaseWorkload", {R::kVmController, R::kOperator}},
      {"/strongroom.v1.Backend/AppendAudit", kAllServices},
      {"/strongroom.v1.Backend/QueryAudit", {R::kOperator}},
      {"/strongroom.v1.Backend/VerifyAudit", {R::kOperator}},
      {"/strongroom.v1.Backend/UsageReport", {R::kOperator}},
      // ---- vm-controller ------------------------------------------------------------
      {"/strongroom.v1.VmController/ConvertLocalJob", {R::kSubmitHook, R::kOperator}},
      {"/strongroom.v1.VmController/LocalJobEnded", {R::kSubmitHook, R::kOperator}},
      {"/strongroom.v1.VmController/ProvisionWorkload", {R::kBackend}},
      {"/strongroom.v1.VmController/GetLocalJob", {R::kOperator}},
      {"/strongroom.v1.VmController/ListLocalJobs", {R::kOperator}},
      {"/strongroom.v1.VmController/EnrollWorkload", {R::kWorkload}},
      // ---- vm-controller's enrollment listener (no deployment identity; the handler authenticates) -------
      {"/strongroom.v1.WorkloadEnrollment/EnrollWorkload", {}, CallerAuth::kEnrollmentTicket},
      {"/strongroom.v1.WorkloadEnrollment/GetProjectSecrets", {}, CallerAuth::kProjectCertificate},
      // ---- host-agent ---------------------------------------------------------------
      {"/strongroom.v1.HostAgent/StartWorkload", {R::kBackend, R::kGlobalJob}},
      {"/strongroom.v1.HostAgent/StopWorkload", {R::kBackend, R::kGlobalJob}},
      {"/strongroom.v1.HostAgent/GetWorkload", {R::kBackend, R::kGlobalJob, R::kOperator}},
      {"/strongroom.v1.HostAgent/ListWorkloads", {R::kBackend, R::kGlobalJob, R::kOperator}},
      {"/strongroom.v1.HostAgent/WatchWorkload", {R::kBackend, R::kGlobalJob, R::kOperator}},
      // ---- netd ---------------------------------------------------------------------
      {"/strongroom.v1.Netd/AllocatePort", {R::kHostAgent}},
      {"/strongroom.v1.Netd/UpdateEgress", {R::kHostAgent}},
      {"/strongroom.v1.Netd/ReleasePort", {R::kHostAgent}},
      {"/strongroom.v1.Netd/GetPort", {R::kHostAgent, R::kOperator}},
      {"/strongroom.v1.Netd/ListPorts", {R::kHostAgent, R::kOperator}},
      // ---- served by every daemon ---------------------------------------------------
      {"/grpc.health.v1.Health/Check", kAnyone},
      {"/grpc.health.v1.Health/Watch", kAnyone},
      {"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", {R::kOperator}},
  };
  return *kTable;
}

absl::Status Authorize(const Identity& caller, absl::string_view method) {
  const auto& table = AuthorizationTable();
  auto rule =
      std::find_if(table.begin(), table.end(), [&](const AuthzRule& r) { return r.method == method; });
  if (rule == table.end()) {
    return absl::PermissionDeniedError(
        absl::StrCat(method, " is not in the authorization table (default deny)"));
  }
  if (rule->auth != CallerAuth::kDeploymentRole) {
    return absl::PermissionDeniedError(
        absl::StrCat(method, " is served only on vm-controller's enrollment listener"));
  }
  if (std::find(rule->allowed.begin(), rule->allowed.end(), caller.role) == rule->allowed.end()) {
    return absl::PermissionDeniedError(
        absl::StrCat("role ", RoleName(caller.role), " (", caller.SpiffeId(), ") may not call ", method));
  }
  return absl::OkStatus();
}

absl::StatusOr<CallerAuth> AuthorizeOnEnrollmentListener(absl::string_view method) {
  const auto& table = AuthorizationTable();
  auto rule =
      std::find_if(table.begin(), table.end(), [&](const AuthzRule& r) { return r.method == method; });
  if (rule == table.end() || rule->auth == CallerAuth::kDeploymentRole) {
    return absl::PermissionDeniedError(
        absl::StrCat(method, " is not served on the enrollment listener (default deny)"));
  }
  return rule->auth;
}

}  // namespace strongroom
