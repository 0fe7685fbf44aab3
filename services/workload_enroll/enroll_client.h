// The workload's side of enrollment (issue 14, docs/IPSEC.md "Enrollment"), run inside the workload by its
// entrypoint (strongroom-enroll). It generates an EC P-256 key in memory, enrolls with the one-time ticket
// host-agent gave it (WorkloadEnrollment.EnrollWorkload over TLS, vm-controller's certificate verified
// against the deployment CA and its SAN spiffe://<td>/vm-controller/<cluster>), then fetches the project's
// secrets with the issued project certificate as its TLS client certificate (GetProjectSecrets), and writes
// them into a directory the entrypoint chose (a tmpfs inside the workload).
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/project_ca.h"

namespace strongroom::workload_enroll {

struct EnrollOptions {
  std::string target;        // HOST:PORT of vm-controller's enrollment listener
  std::string ca_file;       // the deployment CA bundle (verifies vm-controller's server certificate)
  std::string trust_domain;  // the deployment's trust domain
  std::string cluster;       // the Local Slurm cluster: vm-controller's certificate instance
  std::string workload_id;
  std::string global_job_id;
  std::string project;
  std::string ticket;                              // the one-time enrollment ticket (64 hex); secret
  absl::Duration rpc_timeout = absl::Seconds(15);  // each RPC's deadline
  // The entrypoint starts before backend has handed the workload over to vm-controller (ProvisionWorkload follows
  // host-agent's WorkloadReady), so EnrollWorkload answers NOT_FOUND at first: retried with a growing pause
  // (25 ms doubling to 1 s; every refusal is audited, so not faster) for this long. Any other refusal is final.
  absl::Duration handover_wait = absl::Seconds(60);
};

// What the workload holds after enrolling. Secret material: never logged.
struct EnrolledWorkload {
  std::shared_ptr<const EcKey> key;  // the workload's private key, generated here (the tunnel loads it)
  std::string key_pem;               // the same key as PKCS#8 (written only without the tunnel)
  std::string cert_pem;              // its project certificate
  std::string project_ca_pem;        // the project CA
  absl::Time not_after;
  std::string munge_key;  // raw bytes
  std::string nfs_server;
  std::string nfs_export;
  std::string ipsec_address;    // the controlling VM's IKE address and identity (the tunnel's remote end)
  std::string nfs_mount_point;  // where the workload mounts the share
};

// FAILED_PRECONDITION / INVALID_ARGUMENT naming the option that is missing or malformed.
absl::Status ValidateOptions(const EnrollOptions& options);

// Fills the options left empty from a provisioning bundle (host-agent's JSON: enrollmentAddress,
// localCluster, globalJobId, project, trustDomain, enrollmentTicket) and, when ca_file is empty, writes its
// deploymentCaPem to `ca_out` and names that. INVALID_ARGUMENT naming the member for malformed JSON.
absl::Status FillFromBundle(const std::string& bundle_json, const std::string& ca_out,
                            EnrollOptions* options);

// Both RPCs. Errors name the step ("EnrollWorkload: ...", "GetProjectSecrets: ...") and keep vm-controller's
// status code and reason.
absl::StatusOr<EnrolledWorkload> Enroll(const EnrollOptions& options);

// Writes key.pem (0600; only with `write_key`: never in tunnel mode, where the key stays in memory and in
// charon), cert.pem (0644), project-ca.pem (0644), munge.key (0400; only when one was given) and nfs.env
// (0644: NFS_SERVER=..., NFS_EXPORT=..., NFS_MOUNT_POINT=...) into `dir`, an existing directory; each file is
// written to a temporary name and renamed. INVALID_ARGUMENT for an NFS value that could not be sourced safely
// or a mount point that is not an absolute path.
absl::Status WriteEnrollment(const EnrolledWorkload& enrolled, const std::string& dir, bool write_key = true);

// Writes `content` to dir/name with `mode`, atomically (a temporary file, fsync, rename).
absl::Status WriteFileAtomically(const std::string& dir, const std::string& name, const std::string& content,
                                 mode_t mode);
// Characters safe in a sourced KEY=value line without quoting.
bool SafeEnvValue(const std::string& value);

}  // namespace strongroom::workload_enroll
