// Syntax checks of the API's strings (common.proto conventions and netd.proto field comments).
// Pure: whether a netns exists is checked later, by the netlink layer.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace strongroom::netd {

// ID: ^[a-z0-9][a-z0-9-]{0,62}$. INVALID_ARGUMENT "<field>: ..." otherwise (empty included).
absl::Status CheckWorkloadId(absl::string_view id, absl::string_view field = "workload_id");

// A netns as AllocatePortRequest.netns allows: a name (^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$, meaning
// /run/netns/<name>) or an absolute /run/netns/<name>, /var/run/netns/<name> or
// /proc/<pid>/ns/net. Returns the path to open.
absl::StatusOr<std::string> NetnsPath(absl::string_view netns);

// Interface name inside the netns: ^[a-z][a-z0-9]{0,14}$; empty means "eth0". Returns the name.
absl::StatusOr<std::string> InterfaceName(absl::string_view name);

// Owner label: ^[A-Za-z0-9._:/@-]{0,128}$; empty means the workload id. Returns the label.
absl::StatusOr<std::string> OwnerLabel(absl::string_view label, absl::string_view workload_id);

}  // namespace strongroom::netd
