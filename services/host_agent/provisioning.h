// The provisioning inputs of a workload, computed once for every kind: the variables its entrypoint reads,
// the ProvisioningBundle, and the development-mode stand-ins held on this node (the munge key from
// local_cluster_secrets_dir, the project share from project_shares). Each driver delivers them its own way:
// a container gets env and bind mounts (container/container_workload_driver.h), a VM a workload.env on its
// config disk and 9p shares (vm/vm_workload_driver.h).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "common/audit.h"
#include "strongroom/v1/host_agent.pb.h"

namespace strongroom::host_agent {

// Where the workload finds the bundle and the munge key (the image's entrypoint, deploy/image/entrypoint).
inline constexpr char kProvisioningPath[] = "/run/strongroom/provisioning.json";
inline constexpr char kSlurmAuthPath[] = "/run/strongroom/slurm-auth";

struct ProvisioningOptions {
  std::string node;  // this node's name
  // "vmc://<cluster>/munge-key" resolves to <dir>/<cluster>/munge-key ("": such refs are not resolved here).
  std::string local_cluster_secrets_dir;
  std::map<std::string, std::string> project_shares;  // project -> host dir
  uint32_t uid_base = 100000;                         // container root, who must be able to read the key
  // Whether this kernel has an NFS client (data_path.h KernelHasNfsClient): decides a data-path container's
  // project share (DecideDataPathShare).
  bool kernel_has_nfs_client = false;
};

struct ProvisioningInputs {
  // NAME, value: STRONGROOM_WORKLOAD_ID, _NODE, _PROVISIONING (with a bundle), _JOB_USER/_UID/_GID (with a
  // job user), _PROJECT_SHARE (with a share), in this order.
  std::vector<std::pair<std::string, std::string>> env;
  std::string bundle_json;        // the ProvisioningBundle as JSON; "" without one
  std::string slurm_auth_file;    // the munge key on this host ("" none); never copied
  bool slurm_auth_local = false;  // it came from local_cluster_secrets_dir (development mode)
  std::string project_share;      // the project's host directory ("" none; development mode)
  // A data-path container without a development share: host-agent mounts the NFS share inside it when its
  // entrypoint asks (container/share_request_watcher.h).
  bool share_over_nfs = false;
  // SHA-256 (hex) of the one-time enrollment ticket in bundle_json ("" none); reported in WorkloadReady.
  std::string enrollment_ticket_sha256;
};

// The inputs of `spec`. INVALID_ARGUMENT for a malformed slurm_auth_ref, FAILED_PRECONDITION for a munge key
// this node should hold but does not (or container root cannot read). Creates nothing.
// A data-path container (data_path.h IsContainerDataPath) gets its munge key from its controlling VM
// (enrollment), so a vmc:// ref is never resolved in local_cluster_secrets_dir for it; its share follows
// DecideDataPathShare, whose refusal (no NFS client, no development share) the caller checks first.
absl::StatusOr<ProvisioningInputs> ResolveProvisioningInputs(const v1::WorkloadSpec& spec,
                                                             const ProvisioningOptions& options);

// What a workload needs to enroll with its controlling VM's vm-controller (issue 14, docs/IPSEC.md
// "Enrollment"), besides the bundle's enrollmentAddress. Added to its bundle JSON as enrollmentTicket,
// globalJobId, project, trustDomain and deploymentCaPem (the members strongroom-enroll --bundle reads).
struct EnrollmentInputs {
  std::string ticket;  // 64 hex; secret: only ever in the bundle (not the env, a log, an audit, the DB)
  std::string global_job_id;  // spec.job
  std::string project;        // spec.job
  std::string
      trust_domain;  // the deployment's: vm-controller's certificate is spiffe://<td>/vm-controller/...
  std::string deployment_ca_pem;  // public: the CA bundle that verifies vm-controller's certificate ("" none)
};

// Adds `enrollment` to the bundle and records the ticket's SHA-256 (enrollment_ticket_sha256).
// FAILED_PRECONDITION without a bundle, INVALID_ARGUMENT for a malformed ticket.
absl::Status AddEnrollmentInputs(const EnrollmentInputs& enrollment, ProvisioningInputs* inputs);

// The loud warning and the audit record of each development-mode input the workload uses (issue 14).
void AnnounceDevelopmentInputs(const std::string& workload_id, const ProvisioningInputs& inputs,
                               const std::string& agent_id, AuditSink& audit);

}  // namespace strongroom::host_agent
