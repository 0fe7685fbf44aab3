// The namespaces and the TUN node of a data-path container (spec.provisioning.ipsec_data_path; docs/IPSEC.md
// "Running the tunnel inside a container"). Its network namespace must be owned by the container's user
// namespace, or CAP_NET_ADMIN inside counts for nothing (the kernel checks it against the netns's owner). So
// host-agent creates both together, in a forked child (a multithreaded process cannot unshare a user
// namespace) cloned with CLONE_NEWUSER|CLONE_NEWNET; it writes the child's uid_map/gid_map (the same
// "0 <uid_base> <uid_count>" runc would write; setgroups stays allowed, slurmstepd needs it) and binds
//   - the child's ns/net at /run/netns/<name> (the name CreateNetns uses: netd's Allocate is unchanged), and
//   - its ns/user onto <workload dir>/userns,
// then the child exits; both namespaces live on through the binds. runc joins both by path
// (oci_config.h ContainerParams::userns_path) and still creates pid, ipc, uts, mount and cgroup.
//
// The host's /dev/net/tun is 0600 root, which container root (an unmapped host uid to it) cannot open, and an
// OCI linux.devices entry in a user namespace binds that same node. So host-agent mknods a per-workload
// `c 10 200` owned by uid_base, 0600, at <workload dir>/tun (the state dir's file system has no nodev), which
// the container gets bound at /dev/net/tun without nodev.
//
// Teardown: DeleteNetns as for every container, RemoveUsernsFile, and the workload dir's removal takes the
// TUN node.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace strongroom::host_agent {

// <workload dir>/userns and <workload dir>/tun.
std::string UsernsFileIn(const std::string& workload_dir);
std::string TunNodeIn(const std::string& workload_dir);

// Creates a user namespace mapping container ids 0..uid_count-1 to host uid_base.. (uid and gid) and a
// network namespace it owns, with loopback up; binds them at /run/netns/<netns_name> and `userns_file`.
// ALREADY_EXISTS if either path exists. On any failure nothing is left (both binds removed, the child
// reaped); the child is SIGKILLed past `timeout`.
absl::Status CreateWorkloadNamespaces(const std::string& netns_name, const std::string& userns_file,
                                      uint32_t uid_base, uint32_t uid_count,
                                      absl::Duration timeout = absl::Seconds(10));

// Unmounts and removes the user namespace's bind; OK if it does not exist.
absl::Status RemoveUsernsFile(const std::string& userns_file);

// mknod `path` c 10 200, owner uid:gid `owner`, 0600 (an existing file is replaced).
absl::Status CreateTunNode(const std::string& path, uint32_t owner);

}  // namespace strongroom::host_agent
