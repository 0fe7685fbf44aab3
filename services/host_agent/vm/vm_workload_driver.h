// The VM kind (WorkloadDriver, workload_driver.h) for non-exclusive jobs: netd's tap, then in the workload
// dir a writable disk the guest encrypts and a config disk, and a transient libvirt domain (vm_driver.h).
// Stop: ACPI power-off, grace, destroy, then the workload dir. A VM that stops behind host-agent's back
// (libvirt's lifecycle event) is reported to the lifecycle as an ExternalStop; after a restart, a VM whose
// domain libvirt still runs (its metadata names the workload) can be adopted.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "services/host_agent/network.h"
#include "services/host_agent/provisioning.h"
#include "services/host_agent/vm/domain_xml.h"
#include "services/host_agent/vm/vm_driver.h"
#include "services/host_agent/workload_driver.h"

namespace strongroom::host_agent {

// The 9p mount tags the guest's init (deploy/image/vm/init) looks for.
inline constexpr char kProjectShareTag[] = "sr_project_share";
inline constexpr char kSlurmAuthTag[] = "sr_slurm_auth";

// How a VM gets the provisioning inputs: workload.env on its config disk (the same variables a container has
// in its environment, plus SR_SLURM_AUTH_FILE, the munge key's name in the sr_slurm_auth share) and the
// development-mode stand-ins as 9p shares: the project share read-write, the munge key's directory read-only
// (the guest copies the key to its tmpfs; the host never copies it). The bundle is provisioning.json on the
// config disk. Pure.
struct VmProvisioning {
  std::vector<std::pair<std::string, std::string>> env;  // workload.env
  std::vector<vm::VmFilesystem> filesystems;
};
VmProvisioning VmProvisioningFor(const ProvisioningInputs& inputs);

struct VmWorkloadOptions {
  std::string image_root;  // <name>.squashfs, .vmlinux, .initrd
  std::string entrypoint;  // run as the guest's PID 1
  vm::VmDriverOptions vm;  // libvirt_uri "": this node runs no VMs
};

class VmWorkloadDriver : public WorkloadDriver {
 public:
  // `network` is the lifecycle's, not owned. `on_stop` hears of domains that ended behind host-agent's back,
  // on libvirt's event thread.
  VmWorkloadDriver(VmWorkloadOptions options, NetworkProvider* network,
                   std::function<void(const ExternalStop&)> on_stop);

  std::string runtime_name() const override { return "libvirt"; }
  bool has_main_process() const override { return false; }
  absl::StatusOr<StartPlan> Resolve(const v1::WorkloadSpec& spec) override;
  absl::Status PrepareStorage(StartContext& ctx) override;
  absl::Status AttachNetwork(StartContext& ctx) override;
  absl::Status Launch(StartContext& ctx) override;
  void StopExecution(TeardownContext& ctx) override;
  void RemoveStorage(TeardownContext& ctx) override;
  bool HealthyForAdoption(const TrackedWorkload& tw, std::string* why) override;
  void SweepOrphans(const std::string& workloads_root, const std::set<std::string>& active) override;

 private:
  absl::StatusOr<vm::VmImage> ResolveVm(const v1::WorkloadSpec& spec);

  const VmWorkloadOptions options_;
  NetworkProvider* const network_;    // netd's taps
  std::unique_ptr<vm::VmDriver> vm_;  // libvirt; null without vm_libvirt_uri (VM rows are still torn down)
  bool warmed_up_ = false;            // set by the first SweepOrphans (the start's reconcile, one thread)
};

}  // namespace strongroom::host_agent
