// A real Slurm cluster for tests (notes/slurm.md): munged and slurmctld on a controller host, one slurmd per
// node host, every daemon a rig host's process (so rig teardown stops it, even after a crash: rig_sweep).
// Usable for the Global Slurm (static nodes) and for a Local Slurm (dynamic nodes, no static ones).
//
//   SlurmClusterOptions o;
//   o.controller_ip = "198.51.100.2";
//   o.nodes = {{"gnode1", "198.51.100.3"}, {"gnode2", "198.51.100.4"}};
//   SR_ASSIGN_OR_RETURN(auto cluster, SlurmCluster::Start(rig.get(), rig->state_dir() + "/global", o));
//   cluster->Command("client", {"squeue", "-h"});  // runs with SLURM_CONF set
#pragma once

#include <sys/types.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "tests/rig/rig.h"

namespace strongroom {

struct SlurmClusterOptions {
  std::string cluster_name = "global";
  std::string controller_host = "gctl";  // rig host added for slurmctld and munged
  std::string controller_ip;             // its address; hosts use a /24
  struct Node {
    std::string name;  // rig host and Slurm NodeName
    std::string ip;
  };
  std::vector<Node> nodes;     // static nodes; each becomes a rig host running slurmd
  bool dynamic_nodes = false;  // a Local cluster: MaxNodeCount, a dynamic nodeset, no static node
  std::string dynamic_feature = "dyn";  // the feature selecting dynamic nodes into the partition
  // The nodes are Strongroom workloads (configless slurmd in a container): slurmd's spool, pid and log paths are
  // the image's, not this cluster's directory, which the workload cannot see.
  bool nodes_in_workloads = false;
  int cpus_per_node = 8;       // advertised (SlurmdParameters=config_overrides lets it exceed the hardware)
  int memory_mb = 4000;
  int controller_port = 6817;  // below 32768 (the ephemeral range): notes/slurm.md
  int slurmd_port = 6818;
  int slurmd_timeout_seconds = 10;
  std::vector<std::string> extra_config;  // lines appended to slurm.conf
  // Files copied next to slurm.conf before slurmctld starts (e.g. job_submit.lua): name -> source path.
  std::map<std::string, std::string> files;
};

class SlurmCluster {
 public:
  // Adds the controller and node hosts to `rig`, writes the config and key under `dir` (created), starts
  // munged, slurmctld and the slurmds, and waits until the controller answers and every static node is idle.
  static absl::StatusOr<std::unique_ptr<SlurmCluster>> Start(Rig* rig, const std::string& dir,
                                                             SlurmClusterOptions options);
  ~SlurmCluster();  // Stop()

  const std::string& conf() const { return conf_; }  // slurm.conf, for SLURM_CONF
  const SlurmClusterOptions& options() const { return options_; }

  // Runs a Slurm client (sbatch, squeue, scontrol, scancel, sinfo: argv[0] a name) on rig host `host` with
  // SLURM_CONF set.
  absl::StatusOr<Rig::ExecResult> Command(const std::string& host, std::vector<std::string> argv,
                                          absl::Duration timeout = absl::Seconds(30));

  // The daemons' PIDs (from Rig::Spawn), e.g. to kill a node's slurmd.
  pid_t controller_pid() const { return controller_pid_; }
  pid_t slurmd_pid(const std::string& node) const;

  // Stops the slurmds, then slurmctld, then munged. Idempotent.
  absl::Status Stop();

 private:
  SlurmCluster(Rig* rig, std::string dir, SlurmClusterOptions options);
  absl::Status WriteFiles();
  absl::Status WaitFor(const std::string& what, absl::Duration timeout, const std::function<bool()>& ready);

  Rig* const rig_;  // not owned; outlives the cluster
  const std::string dir_;
  const SlurmClusterOptions options_;
  std::string conf_;
  pid_t munged_pid_ = 0;
  pid_t controller_pid_ = 0;
  std::map<std::string, pid_t> slurmd_pids_;  // node name -> PID
  bool stopped_ = false;
};

}  // namespace strongroom
