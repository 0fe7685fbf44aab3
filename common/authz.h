// The per-RPC authorization table: which roles may call which method. One table for the
// whole system (DESIGN.md §4); an RPC that is not listed is refused (default deny).
#pragma once

#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "common/identity.h"

namespace strongroom {

struct AuthzRule {
  absl::string_view method;  // full gRPC path, "/package.Service/Method"
  std::vector<Role> allowed;
};

// The table itself, for docs and tests.
const std::vector<AuthzRule>& AuthorizationTable();

// OK if `caller` may call `method`; PERMISSION_DENIED naming both otherwise.
absl::Status Authorize(const Identity& caller, absl::string_view method);

}  // namespace strongroom
