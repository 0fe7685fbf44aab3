// The per-RPC authorization table: which roles may call which method. One table for the
// whole system (DESIGN.md §4); an RPC that is not listed is refused (default deny).
#pragma once

#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/identity.h"

namespace strongroom {

// How a method's caller is authenticated, which also fixes the listener that serves it.
enum class CallerAuth {
  // The main mTLS listener: a deployment-CA client certificate whose role is in `allowed`.
  kDeploymentRole,
  // vm-controller's enrollment listener (docs/IPSEC.md): the workload's one-time enrollment ticket,
  // checked by the handler (EnrollmentAuthority). No client certificate needed; `allowed` is empty.
  kEnrollmentTicket,
  // vm-controller's enrollment listener: a client certificate issued by the PROJECT CA (never the deployment
  // CA), checked by the handler against that CA and the caller's address. `allowed` is empty.
  kProjectCertificate,
};

struct AuthzRule {
  absl::string_view method;  // full gRPC path, "/package.Service/Method"
  std::vector<Role> allowed;
  CallerAuth auth = CallerAuth::kDeploymentRole;
};

// The table itself, for docs and tests.
const std::vector<AuthzRule>& AuthorizationTable();

// Main listener: OK if `caller` may call `method`; PERMISSION_DENIED naming both otherwise (also for a method
// that only the enrollment listener serves).
absl::Status Authorize(const Identity& caller, absl::string_view method);

// Enrollment listener: how the handler of `method` must authenticate its caller; PERMISSION_DENIED for every
// method the table does not list for this listener (health, reflection and every main-listener RPC included).
absl::StatusOr<CallerAuth> AuthorizeOnEnrollmentListener(absl::string_view method);

}  // namespace strongroom
