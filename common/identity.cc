#include "common/identity.h"

#include <array>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace strongroom {
namespace {

constexpr std::array<std::pair<Role, absl::string_view>, 8> kRoleNames = {{
    {Role::kBackend, "backend"},
    {Role::kVmController, "vm-controller"},
    {Role::kHostAgent, "host-agent"},
    {Role::kNetd, "netd"},
    {Role::kOperator, "operator"},
    {Role::kWorkload, "workload"},
    {Role::kSubmitHook, "submit-hook"},
    {Role::kGlobalJob, "global-job"},
}};

bool IsLowerAlnum(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }

}  // namespace

absl::string_view RoleName(Role role) {
  for (const auto& [r, name] : kRoleNames) {
    if (r == role) return name;
  }
  return "unknown";
}

absl::StatusOr<Role> ParseRole(absl::string_view name) {
  for (const auto& [r, n] : kRoleNames) {
    if (n == name) return r;
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown role \"", name, "\""));
}

std::string Identity::SpiffeId() const {
  return absl::StrCat("spiffe://", trust_domain, "/", RoleName(role), "/", instance);
}

bool IsValidInstanceName(absl::string_view name) {
  if (name.empty() || name.size() > 63 || !IsLowerAlnum(name[0])) return false;
  for (char c : name) {
    if (!IsLowerAlnum(c) && c != '.' && c != '-') return false;
  }
  return true;
}

bool IsValidTrustDomain(absl::string_view domain) {
  if (domain.empty() || domain.size() > 253) return false;
  for (absl::string_view label : absl::StrSplit(domain, '.')) {
    if (label.empty() || label.size() > 63) return false;
    for (char c : label) {
      if (!IsLowerAlnum(c) && c != '-') return false;
    }
  }
  return true;
}

absl::StatusOr<Identity> ParseSpiffeId(absl::string_view uri) {
  constexpr absl::string_view kScheme = "spiffe://";
  if (!absl::StartsWith(uri, kScheme)) {
    return absl::InvalidArgumentError(absl::StrCat("\"", uri, "\" is not a spiffe:// URI"));
  }
  std::vector<absl::string_view> parts = absl::StrSplit(uri.substr(kScheme.size()), '/');
  if (parts.size() != 3) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"", uri, "\" must have the form spiffe://<trust-domain>/<role>/<instance>"));
  }
  if (!IsValidTrustDomain(parts[0])) {
    return absl::InvalidArgumentError(absl::StrCat("\"", uri, "\": invalid trust domain"));
  }
  absl::StatusOr<Role> role = ParseRole(parts[1]);
  if (!role.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("\"", uri, "\": ", role.status().message()));
  }
  if (!IsValidInstanceName(parts[2])) {
    return absl::InvalidArgumentError(absl::StrCat("\"", uri, "\": invalid instance name"));
  }
  return Identity{std::string(parts[0]), *role, std::string(parts[2])};
}

}  // namespace strongroom
