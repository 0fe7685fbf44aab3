// host-agent's pure rules of the secure data path (issue 14, spec.provisioning.ipsec_data_path;
// docs/IPSEC.md): which workloads it applies to, where the project share comes from, the workload's request
// to mount it, and what the entrypoint's data-path exit codes mean. No I/O except KernelHasNfsClient.
//
// A VM workload with the data path: the guest's root is real root in its own kernel, so it needs none of the
// container's namespaces, capabilities or TUN node, and it mounts the share by itself. host-agent leaves VMs
// exactly as without the flag (IsContainerDataPath is false for them).
#pragma once

#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "strongroom/v1/host_agent.pb.h"

namespace strongroom::host_agent {

// Where a data-path container's entrypoint asks for the project share (inside the container).
inline constexpr char kNfsRequestPath[] = "/run/strongroom/nfs-request";
inline constexpr size_t kMaxNfsRequestBytes = 1024;

// True for a container (kind CONTAINER or unspecified) whose bundle has ipsec_data_path.
bool IsContainerDataPath(const v1::WorkloadSpec& spec);

// How a data-path container gets its project share.
enum class DataPathShare {
  kNone,             // not a data-path container: today's rules
  kDevelopmentBind,  // project_shares has the project: bound from the host as today (development mode)
  kNfsOnRequest,     // host-agent mounts the NFS share inside the workload when its entrypoint asks
};
// FAILED_PRECONDITION (naming provisioning.ipsec_data_path) when the kernel has no NFS client and
// project_shares has no entry for the project.
absl::StatusOr<DataPathShare> DecideDataPathShare(const v1::WorkloadSpec& spec, bool has_development_share,
                                                  bool kernel_has_nfs_client);

// Whether /proc/filesystems (or `path`) lists nfs4 or nfs.
bool KernelHasNfsClient(const std::string& path = "/proc/filesystems");

// The entrypoint's request (kNfsRequestPath): lines `server=<IPv4>`, `export=<NFSv4 path>`,
// `mountpoint=<absolute path>`, each exactly once, nothing else (blank lines allowed). INVALID_ARGUMENT
// naming the field and what is wrong: NUL bytes, unknown or duplicate keys, a non-IPv4 server, relative
// paths, "." / ".." components, characters outside [A-Za-z0-9._/-], over 255 bytes, a mount point of "/" or
// under /proc, /sys, /dev or /run.
struct NfsShareRequest {
  std::string server;
  std::string export_path;
  std::string mountpoint;
};
absl::StatusOr<NfsShareRequest> ParseNfsShareRequest(absl::string_view text);

// What a data-path entrypoint's exit code says (70 enrollment, 71 tunnel, 72 share): reason and message of
// the workload's failure, or nullopt for any other code.
struct DataPathExit {
  std::string reason;   // DATA_PATH_ENROLLMENT, DATA_PATH_TUNNEL, DATA_PATH_SHARE
  std::string message;  // "the workload could not ... (entrypoint exit 71)"
};
std::optional<DataPathExit> DataPathExitFailure(int exit_code);

}  // namespace strongroom::host_agent
