// The workload's end of its tunnel to the controlling VM (issue 14, docs/IPSEC.md "The client"), run inside
// the workload by strongroom-enroll after it enrolled: charon (started by the entrypoint, in the workload's
// own network namespace) gets the key from memory over VICI (load-key; never a file), the project certificate
// and the connection that mirrors vm-controller's (WorkloadSideTunnel / VmSideTunnel), and the workload
// initiates.
//
//   SR_ASSIGN_OR_RETURN(CharonRun run, PrepareWorkloadCharon(dir, backend));   // before charon starts
//   SR_ASSIGN_OR_RETURN(WorkloadTunnel t, BringUpWorkloadTunnel(enrolled, options));
//   SR_RETURN_IF_ERROR(WriteTunnelEnv(t, out_dir));
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/charon_process.h"
#include "common/ipsec_session.h"
#include "common/ipsec_tunnel.h"
#include "services/workload_enroll/enroll_client.h"

namespace strongroom::workload_enroll {

// Writes `dir`/strongswan.conf for `backend` (charon as it is: the workload's /run is its own) and, for
// kernel-libipsec, adds the two bypass rules (LibipsecBypassRules) in the caller's network namespace,
// deleting stale ones first. `ip` is the iproute2 binary. Errors name the step.
absl::StatusOr<CharonRun> PrepareWorkloadCharon(
    const std::string& dir, IpsecBackend backend,
    const std::string& charon_binary = std::string(kDefaultCharonBinary));

// The shell lines (KEY=value, sourced by the entrypoint) describing a prepared charon: IPSEC_BACKEND,
// STRONGSWAN_CONF, VICI_SOCKET, CHARON_LOG.
std::string CharonEnv(const CharonRun& run);

struct TunnelOptions {
  std::string vici_socket;  // the workload's charon
  IpsecBackend backend = IpsecBackend::kLibipsec;
  std::string project, global_job_id, workload_id;  // as enrolled (the IKE identity)
  absl::Duration timeout = absl::Seconds(30);       // IKE_SA + CHILD_SA
  absl::Duration charon_wait = absl::Seconds(20);   // until charon answers VICI `version`
};

struct WorkloadTunnel {
  TunnelSpec spec;  // what was loaded (name = the workload id)
  TunnelState state;
};

// The spec of the workload's end: local = the address the project CA bound into its certificate (the netd
// address the VM's connection accepts), remote = GetProjectSecrets' ipsec_address. INVALID_ARGUMENT /
// FAILED_PRECONDITION naming what is missing.
absl::StatusOr<TunnelSpec> WorkloadTunnelSpec(const EnrolledWorkload& enrolled, const TunnelOptions& options);

// Loads identity and connection into the workload's charon, initiates, and requires an INSTALLED,
// UDP-encapsulated CHILD_SA. On failure what was loaded is removed again (TearDownTunnel) and the error names
// the step with charon's reason.
absl::StatusOr<WorkloadTunnel> BringUpWorkloadTunnel(const EnrolledWorkload& enrolled,
                                                     const TunnelOptions& options);

// tunnel.env (0644): TUNNEL_NAME, TUNNEL_LOCAL, TUNNEL_REMOTE, IPSEC_BACKEND, TUNNEL_ESP.
absl::Status WriteTunnelEnv(const WorkloadTunnel& tunnel, const std::string& dir);

}  // namespace strongroom::workload_enroll
