// The whole Strongroom path on one machine, every component real (DESIGN.md §3):
//
//   lctl   198.51.100.40  Local Slurm: munged, slurmctld (dynamic nodes, job_submit.lua, EpilogSlurmctld),
//                         vm-controller, the submit hook; users submit here ("the login node")
//   backend 198.51.100.10 backend, with PostgreSQL (tests/rig/postgres.sh, a unix socket)
//   gctl   198.51.100.2   Global Slurm: munged, slurmctld
//   gnodeN 198.51.100.2+N a Global compute node: slurmd, ovsdb-server + ovs-vswitchd (userspace datapath) with
//                         br-secure, netd, libvirtd, host-agent (real runc and qemu (TCG), the real workload image:
//                         --exclusive jobs in containers, the others in VMs)
//   client 198.51.100.20  operators' strongroomctl
//
// Each node's workloads get addresses from 203.0.113.16*(N-1)/28 (gateway .16*(N-1)+1 on the node, which routes
// to the rig bridge); lctl routes those subnets to their node, so the workload's slurmd and the Local slurmctld
// talk only through br-secure and netd's allowlist.
//
// No device-mapper on this host kernel: host-agent runs with allow_unencrypted_scratch (logged and audited);
// dm-crypt is covered by tests/guest (a VM encrypts its own writable disk). The project share (host-agent's
// project_shares: a bind mount into a container, 9p into a VM) stands in for the project's NFS export from its
// controlling VM: job output returns there.
//
// Everything lives in one rig (processes, namespaces, state) plus one PostgreSQL; the destructor removes both.
#pragma once

#include <sys/types.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "strongroom/v1/host_agent.pb.h"
#include "tests/rig/postgres.h"
#include "tests/rig/rig.h"
#include "tests/rig/slurm_cluster.h"

namespace strongroom::e2e {

// The workloads' OVS bridge on every Global node.
inline constexpr const char* kBridge = "br-secure";

struct E2eOptions {
  // Rig root (mode 0711: non-root users reach the Local Slurm's files). Swept by `rig.sh sweep ROOT`.
  std::string root = "/tmp/strongroom-e2e";
  int nodes = 2;
  // The workload image catalog (host-agent image_root) holding "strongroom-workload"; see EnsureWorkloadImage.
  std::string image_root;
  // The project every job runs under (the Slurm account on both clusters).
  std::string project = "proj1";
  // A second project whose default image exists on no node, so its workloads fail to start.
  static constexpr const char* kBrokenProject = "broken";
  // The secure data path (issue 14, docs/IPSEC.md) for `project`: vm-controller runs the enrollment listener, its
  // own charon (the IPsec responder, kernel-libipsec here) and nfs-ganesha exporting the share; backend gives the
  // project's workloads the IPsec-only allowlist; no host-agent has the Local munge key (local_cluster_secrets_dir
  // is not configured: the workload gets it by enrollment); lctl never sends to the workload subnets in the clear
  // (enrollment.ipsec.workload_subnets). The share is still host-agent's development-mode bind (9p into a VM): this
  // kernel has no NFS client for containers. Containers use kernel-libipsec, VMs their kernel's ESP.
  bool data_path = false;
};

struct CommandResult {
  int exit_code = -1;
  std::string output;
};

// Builds the workload image with deploy/image/build-rootfs.sh into a cache directory keyed by the content of the
// image recipe (so an edited entrypoint gives a new image), unless it is there already. Returns the catalog dir.
absl::StatusOr<std::string> EnsureWorkloadImage(const std::string& cache_root = "/var/cache/strongroom/images");

class E2eStack {
 public:
  static constexpr const char* kTrustDomain = "strongroom.test";
  static constexpr const char* kLocalCluster = "local";
  // The site limits in strongroom-hook.conf (the submit check): the Global nodes' size
  // (SlurmClusterOptions' defaults) and a day.
  static constexpr int kGlobalCpusPerNode = 8;
  static constexpr int kGlobalMemoryMb = 4000;
  static constexpr int kMaxTimeMinutes = 1440;

  static absl::StatusOr<std::unique_ptr<E2eStack>> Start(E2eOptions options);
  ~E2eStack();  // Down()

  // Stops every daemon (host-agents first, so workloads are scrubbed), the clusters, OVS, the rig, PostgreSQL.
  absl::Status Down();

  // A Slurm client on the Local login host: as `user` (runuser) or as root when user is empty.
  CommandResult Local(const std::string& user, std::vector<std::string> argv,
                      absl::Duration timeout = absl::Seconds(30));
  // A Slurm client against the Global cluster (as root, on gctl).
  CommandResult Global(std::vector<std::string> argv, absl::Duration timeout = absl::Seconds(30));
  // strongroomctl with the operator certificate against `daemon`: "backend", "vm-controller", "host-agent/gnodeN",
  // "netd/gnodeN".
  CommandResult Ctl(const std::string& daemon, std::vector<std::string> args,
                    absl::Duration timeout = absl::Seconds(60));
  // Runs argv in the network namespace of a rig host, as root.
  CommandResult OnHost(const std::string& host, std::vector<std::string> argv,
                       absl::Duration timeout = absl::Seconds(30));

  // A directory in the project share that `user` (a name; its container uid is shifted by host-agent's uid base)
  // may write from inside the workload, created if missing. Job scripts and outputs go here.
  absl::StatusOr<std::string> UserDir(const std::string& user);

  // What a finished stack must not have: workloads not terminal, runc containers, netd ports, OVS ports other
  // than the uplink, mounts or loop devices under the host-agents' state, workload netns, dynamic nodes on the
  // Local Slurm, processes running from a workload's rootfs. Empty when clean.
  std::vector<std::string> Leftovers();

  // host-agent's workloads on `node` (empty if it cannot be asked).
  std::vector<strongroom::v1::Workload> Workloads(const std::string& node);

  // Kills `daemon` ("host-agent/gnodeN" or "netd/gnodeN") with SIGKILL, as a crash would (its workloads stay),
  // and starts it again with the same configuration, waiting until it is healthy.
  absl::Status KillDaemon(const std::string& daemon);
  absl::Status RestartDaemon(const std::string& daemon);
  // Any process on a rig host, in the background (logs/<name>.log); stopped with StopProcess or at Down.
  absl::StatusOr<pid_t> SpawnProcess(const std::string& host, const std::string& name,
                                     const std::vector<std::string>& argv);
  absl::Status StopProcess(pid_t pid);

  // Writes backend's whole database (pg_dump) to `path`.
  CommandResult DumpBackendDatabase(const std::string& path);

  // Every daemon's log (tails) on stderr.
  void DumpLogs() const;

  std::vector<std::string> node_names() const;
  const std::string& dir() const { return dir_; }
  const std::string& share() const { return share_; }
  // The workload image catalog (host-agent's image_root on every node).
  const std::string& image_root() const { return options_.image_root; }
  const std::string& local_slurm_conf() const { return local_->conf(); }
  const std::string& global_slurm_conf() const { return global_->conf(); }
  std::string HostIp(const std::string& host) const { return rig_->Ip(host); }
  std::string HostNetns(const std::string& host) const { return rig_->Netns(host); }
  // Where the operator's certificate and the CA are (for strongroomctl outside this class).
  std::string PkiDir() const { return dir_ + "/pki"; }
  // Where node's libvirtd keeps everything (its socket, qemu's pid files and logs).
  std::string LibvirtDir(const std::string& node) const { return dir_ + "/" + node + "/libvirt"; }
  // The sparse disk file of a VM's writable layer (the guest encrypts it).
  static constexpr uint64_t kVmWritableDiskBytes = uint64_t{256} << 20;
  // The workload subnet of node index i (0-based), e.g. "203.0.113.16/28".
  static std::string NodeSubnet(int i);
  // vm-controller's enrollment listener (data_path only), HOST:PORT on lctl.
  static std::string EnrollmentAddress();
  // The controlling VM's address (lctl): slurmctld, vm-controller, its charon and ganesha.
  static std::string ControllingVmIp();
  const E2eOptions& options() const { return options_; }

 private:
  E2eStack() = default;
  absl::Status Setup();
  absl::Status Pki(std::vector<std::string> args);
  absl::Status StartNodeNetwork(int index);
  absl::Status StartNetd(int index);
  absl::Status StartHostAgent(int index);
  absl::Status StartLibvirtd(int index);
  absl::Status StartBackend();
  absl::Status StartVmController();
  absl::Status WriteHookFiles();
  // Asks every host-agent to stop its live workloads and waits until all are terminal.
  absl::Status StopAllWorkloads(absl::Duration timeout);
  // Kills what is left of this stack's workloads after their agents stopped: cgroup members, scratch loops, netns.
  void KillWorkloadRemains();
  absl::Status WaitHealthy(const std::string& daemon, pid_t pid, const std::string& log);
  absl::StatusOr<pid_t> SpawnDaemon(const std::string& host, const std::string& name,
                                    const std::vector<std::string>& argv);
  std::string ServerBlock(const std::string& listen, const std::string& cert, const std::string& instance) const;
  std::string TlsBlock(const std::string& field, const std::string& cert) const;

  E2eOptions options_;
  std::unique_ptr<Rig> rig_;
  std::unique_ptr<PostgresInstance> db_;
  std::unique_ptr<SlurmCluster> global_;
  std::unique_ptr<SlurmCluster> local_;
  std::string dir_;    // configs, PKI, logs, state of every daemon (inside the rig's state dir)
  std::string share_;  // the project share
  std::vector<pid_t> host_agents_;  // stopped first at Down (index = node index)
  std::map<std::string, pid_t> daemons_;  // "netd/gnode1", "host-agent/gnode1": the running process
  std::vector<pid_t> ovs_;          // ovsdb-server and ovs-vswitchd of every node, stopped last
  bool down_ = false;
};

}  // namespace strongroom::e2e
