// Named network namespaces (/run/netns/<name>, the iproute2 convention netd understands) created in-process
// with unshare(2) in a short-lived thread and a bind mount: no `ip` processes. The loopback interface is
// brought up, because the container (whose user namespace does not own this netns) cannot do it itself.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace strongroom::host_agent {

// "sr-<workload id>" (shortened with a hash when the id is too long for netd's 64-character limit).
std::string NetnsNameFor(const std::string& workload_id);
std::string NetnsPath(const std::string& name);

// As iproute2 does: /run/netns is a shared mount of itself, so later mount namespaces see our unmounts.
absl::Status EnsureNetnsDir();
// Creates /run/netns/<name> (ALREADY_EXISTS if it exists), owned by the initial user namespace. A data-path
// workload's netns is owned by its own user namespace instead (workload_namespaces.h).
absl::Status CreateNetns(const std::string& name);
// SIGKILLs every process whose network namespace is /run/netns/<name> and waits until they are gone (or the
// timeout). Returns how many it found.
absl::StatusOr<int> KillProcessesInNetns(const std::string& name, absl::Duration timeout);
// Unmounts and removes /run/netns/<name>; OK if it does not exist.
absl::Status DeleteNetns(const std::string& name);

}  // namespace strongroom::host_agent
