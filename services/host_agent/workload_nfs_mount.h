// The project's NFS share mounted for a workload (issue 14, docs/IPSEC.md "Capabilities the workload will
// need"): the mount cannot be made from the container's user namespace (the kernel refuses NFS there), so
// host-agent makes it with its real CAP_SYS_ADMIN, from a short-lived child that has entered
//   - the workload's network namespace: the kernel NFS client keeps the network namespace of the process that
//     mounted, so every RPC leaves from the workload's address and takes its IPsec tunnel to the controlling
//     VM;
//   - the workload's mount namespace: the mount exists there only, never in the compute host's mount table.
// Plain mount(2) with the kernel's text options (no mount.nfs, no rpcbind: NFSv4 over TCP to port 2049 only).
//
//   WorkloadNfsMount m{"/run/netns/sr-w-17", "/proc/4242/ns/mnt", "192.0.2.1", "/proj-a", "/data"};
//   SR_RETURN_IF_ERROR(MountNfsInWorkload(m, absl::Seconds(30)));
//   ...
//   SR_RETURN_IF_ERROR(UnmountInWorkload(m.mountns_path, m.target, absl::Seconds(30)));
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace strongroom::host_agent {

struct WorkloadNfsMount {
  std::string netns_path;    // the workload's network namespace, e.g. /run/netns/sr-w-17 or /proc/PID/ns/net
  std::string mountns_path;  // the workload's mount namespace, /proc/PID/ns/mnt (never the host's own)
  std::string server_ip;     // the controlling VM (IPv4): the far end of the workload's tunnel
  std::string export_path;   // the NFSv4 pseudo path of the project's share, e.g. "/proj-a"
  std::string target;        // absolute directory inside the workload's mount namespace
  bool read_only = false;
  // mkdir -p the target (0755, owned by host root, which container root sees as unmapped) inside the
  // workload's mount namespace if it is missing.
  bool create_target = false;
};

// The kernel's mount data for `m` (validated): NFSv4.2 over TCP to port 2049 at server_ip, AUTH_SYS, hard
// mount (a job's writes are never silently dropped when the tunnel blips).
absl::StatusOr<std::string> NfsMountOptions(const WorkloadNfsMount& m);

// Mounts the share at m.target inside the workload's namespaces. Refused (FAILED_PRECONDITION) when
// mountns_path is the caller's own mount namespace: that would put the share into the compute host's mount
// table. The child is SIGKILLed past `timeout` (an unreachable server makes mount(2) wait) and the error says
// so.
absl::Status MountNfsInWorkload(const WorkloadNfsMount& m, absl::Duration timeout);

// Unmounts `target` inside the mount namespace `mountns_path` (OK if nothing is mounted there). A busy mount
// is detached (MNT_DETACH), so a job's stray open file cannot keep the share.
absl::Status UnmountInWorkload(const std::string& mountns_path, const std::string& target,
                               absl::Duration timeout);

}  // namespace strongroom::host_agent
