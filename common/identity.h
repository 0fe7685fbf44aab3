// A service identity as carried in an X.509 SAN URI: spiffe://<trust-domain>/<role>/<instance>.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace strongroom {

// Every kind of caller the authorization table can name. DESIGN.md §4 lists the first six;
// submit-hook (the Local Slurm job_submit/epilog client) and global-job (the node-local
// client of the global job script) are narrower identities so those hooks do not need a
// whole service's certificate.
enum class Role {
  kBackend,
  kVmController,
  kHostAgent,
  kNetd,
  kOperator,
  kWorkload,
  kSubmitHook,
  kGlobalJob,
};

absl::string_view RoleName(Role role);
absl::StatusOr<Role> ParseRole(absl::string_view name);

struct Identity {
  std::string trust_domain;
  Role role = Role::kOperator;
  std::string instance;

  // The canonical URI form, e.g. "spiffe://example.edu/netd/node017".
  std::string SpiffeId() const;
};

// Parses and validates a SPIFFE id. Errors name what is wrong with it.
absl::StatusOr<Identity> ParseSpiffeId(absl::string_view uri);

// ^[a-z0-9][a-z0-9.-]{0,62}$ — instance names, also used for hostnames in the rig.
bool IsValidInstanceName(absl::string_view name);
// Lower-case DNS name, 1..253 characters.
bool IsValidTrustDomain(absl::string_view domain);

}  // namespace strongroom
