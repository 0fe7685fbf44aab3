// The real WorkloadLinks: veth pairs and netns configuration over rtnetlink (no `ip` processes).
#pragma once

#include "services/netd/backends.h"

namespace strongroom::netd {

// The alias netd puts on every host-side veth it creates: how reconcile recognises its own
// veths (together with the "sr" + 12 hex name) and never touches anyone else's.
inline constexpr char kVethAliasPrefix[] = "strongroom-netd";

class NetlinkWorkloadLinks final : public WorkloadLinks {
 public:
  explicit NetlinkWorkloadLinks(absl::Duration timeout) : timeout_(timeout) {}

  absl::Status CheckNetns(const std::string& netns) override;
  absl::Status Create(const LinkSpec& spec, absl::Duration timeout) override;
  absl::Status Delete(const std::string& host_name) override;
  absl::StatusOr<bool> Exists(const std::string& host_name) override;
  absl::StatusOr<std::vector<std::string>> ListOwned() override;

 private:
  const absl::Duration timeout_;  // for calls that take no timeout of their own
};

}  // namespace strongroom::netd
