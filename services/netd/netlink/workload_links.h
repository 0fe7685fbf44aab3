// The real WorkloadLinks: veth pairs and netns configuration over rtnetlink (no `ip` processes), and
// VMs' persistent taps (TUNSETIFF, then rtnetlink).
#pragma once

#include <cstdint>

#include "services/netd/backends.h"

namespace strongroom::netd {

// The alias netd puts on every host-side veth it creates: how reconcile recognises its own
// veths (together with the "sr" + 12 hex name) and never touches anyone else's.
inline constexpr char kVethAliasPrefix[] = "strongroom-netd";

class NetlinkWorkloadLinks final : public WorkloadLinks {
 public:
  // `group`: the interface group every host end gets (NetdSettings::workload_link_group).
  NetlinkWorkloadLinks(absl::Duration timeout, uint32_t group) : timeout_(timeout), group_(group) {}

  absl::Status CheckNetns(const std::string& netns) override;
  absl::Status Create(const LinkSpec& spec, absl::Duration timeout) override;
  absl::Status Delete(const std::string& host_name) override;
  absl::StatusOr<bool> Exists(const std::string& host_name) override;
  absl::StatusOr<OwnedLinks> ListOwned() override;
  absl::Status Isolate(const std::string& host_name) override;

 private:
  absl::Status CreateTap(const LinkSpec& spec, absl::Duration timeout);

  const absl::Duration timeout_;  // for calls that take no timeout of their own
  const uint32_t group_;          // the host ends' interface group
};

}  // namespace strongroom::netd
