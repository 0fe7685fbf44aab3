// The whole secure data path (issue 14) on two rig hosts, for the guest acceptance test and its benchmark
// (both run inside one qemu guest boot, where Debian's kernel has kernel ESP and an NFS client):
//   "vm" 192.0.2.1   the controlling VM: charon (responder) and nfs-ganesha exporting /proj-a from a tmpfs
//   share
//                    (FSAL_VFS cannot export from the guest's overlay root) to the workload's address only;
//   "wl" 192.0.2.10  the workload: charon (initiator) with a project-CA certificate, and the workload's own
//   mount
//                    namespace (a process holding it), where host-agent's MountNfsInWorkload puts the share.
// Everything real (charon, ganesha, the kernel's ESP and NFS client), configured as vm-controller does
// (VmTunnels, GaneshaConf) and as the workload side will (its key made in it, a CSR to the project CA, its
// subject DN as IKE identity). Destruction undoes everything (mounts, processes, namespaces).
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/ipsec_session.h"
#include "common/ipsec_tunnel.h"
#include "common/project_ca.h"
#include "common/subprocess.h"
#include "services/vm_controller/vm_tunnels.h"
#include "tests/rig/charon.h"
#include "tests/rig/ganesha.h"
#include "tests/rig/rig.h"

namespace strongroom {

inline constexpr char kDataPathVmIp[] = "192.0.2.1";
inline constexpr char kDataPathWorkloadIp[] = "192.0.2.10";
inline constexpr char kDataPathTunnel[] = "w-1";

// What tests/ipsec/capture.py counted between the two addresses on every port of the rig's switch.
struct CaptureCounts {
  int64_t ike_esp = -1, other = -1, sensitive = -1, raw_esp = -1, dropped = -1;
  std::string line;  // as printed
};

class DataPathRig {
 public:
  // Rig hosts, both charons (backend as given), the project CA and both ends' certificates, and ganesha with
  // the share. The tunnel is loaded into both charons but not initiated.
  static absl::StatusOr<std::unique_ptr<DataPathRig>> Create(IpsecBackend backend);
  ~DataPathRig();  // Down(); failures on stderr

  // Initiates the tunnel from the workload (charon's reason on failure); Terminate closes the SAs and keeps
  // the loaded connections (for the next Initiate); Unload ends the workload as both sides do at the job's
  // end: the workload's charon drops its SAs, connection and credentials, the VM's the workload's connection
  // (VmTunnels:: Remove; the VM keeps its own identity).
  absl::Status Initiate();
  absl::Status Terminate();
  absl::Status Unload();
  absl::StatusOr<TunnelState> WorkloadTunnelState();
  // What each charon still holds.
  absl::StatusOr<CharonHoldings> WorkloadHoldings();
  absl::StatusOr<CharonHoldings> VmHoldings();

  // The workload's mount namespace: a process on "wl" in a mount namespace of its own (and the workload's
  // network namespace). StopWorkload ends it (its namespace goes with it).
  absl::Status StartWorkload();
  absl::Status StopWorkload();
  pid_t workload_pid() const { return workload_pid_; }
  std::string workload_mountns() const;  // /proc/PID/ns/mnt
  std::string workload_netns() const;    // /run/netns/<the wl host's netns>
  // The share's mount point inside the workload (also a plain empty directory in the host's view).
  const std::string& workload_target() const { return workload_target_; }

  // host-agent's MountNfsInWorkload / UnmountInWorkload on the workload.
  absl::Status MountShare();
  absl::Status UnmountShare();
  // Runs argv inside the workload (its network and mount namespaces), like a job step.
  absl::StatusOr<RunResult> RunInWorkload(const std::vector<std::string>& argv, absl::Duration timeout);
  // The workload's /proc/PID/mounts.
  std::string WorkloadMounts() const;

  // The export's directory on the controlling VM.
  const std::string& share_dir() const { return share_dir_; }
  const std::string& state_dir() const { return rig_->state_dir(); }
  Rig& rig() { return *rig_; }
  CharonInstance& vm_charon() { return *vm_; }
  CharonInstance& workload_charon() { return *wl_; }

  // A capture on every port of the switch (tests/ipsec/capture.py). Start, then Finish for the counts.
  absl::Status StartCapture(const std::string& tag);
  absl::StatusOr<CaptureCounts> FinishCapture();

  absl::Status Down();

 private:
  explicit DataPathRig(IpsecBackend backend) : backend_(backend) {}
  absl::Status Setup();

  IpsecBackend backend_;
  std::unique_ptr<Rig> rig_;
  std::unique_ptr<CharonInstance> vm_;
  std::unique_ptr<CharonInstance> wl_;
  std::unique_ptr<GaneshaInstance> nfs_;
  std::unique_ptr<ProjectCa> ca_;
  std::unique_ptr<VmTunnels> vm_tunnels_;  // vm-controller's side, on vm_'s charon
  std::string share_dir_;                  // a tmpfs mounted here (the export); unmounted by Down
  bool share_mounted_ = false;             // share_dir_ is a tmpfs mount point of ours
  std::string workload_target_;
  pid_t workload_pid_ = 0;  // the holder of the workload's mount namespace (a rig process); 0 when none
  bool share_in_workload_ = false;  // MountShare succeeded and UnmountShare has not run
  pid_t capture_pid_ = 0;           // capture.py, a child of ours; 0 when none
  std::string capture_log_, capture_stop_;
};

// Parses capture.py's "ike_esp=N other=M sensitive=K raw_esp=R dropped=D" line.
absl::StatusOr<CaptureCounts> ParseCaptureLine(const std::string& output);

}  // namespace strongroom
