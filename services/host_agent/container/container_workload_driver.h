// The container kind (WorkloadDriver, workload_driver.h): an encrypted scratch on a loop device, the image
// read-only under an overlay whose upper layer is on the scratch, the sr-<id> netns with netd's veth, and the
// runtime (runc/crun, or Apptainer) running the image's entrypoint in it as our child.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "services/host_agent/container/oci_config.h"
#include "services/host_agent/container/runtime.h"
#include "services/host_agent/container/share_request_watcher.h"
#include "services/host_agent/network.h"
#include "services/host_agent/provisioning.h"
#include "services/host_agent/workload_driver.h"

namespace strongroom::host_agent {

struct ContainerDriverOptions {
  std::string image_root;  // the catalog: <name>/ (a shifted rootfs) or <name>.squashfs
  uint32_t uid_base = 100000;
  uint32_t uid_count = 65536;
  uint64_t scratch_default_bytes = uint64_t{1} << 30;
  bool allow_unencrypted_scratch = false;  // DEVELOPMENT ONLY
  std::string mkfs_binary = "/usr/sbin/mkfs.ext4";
  absl::Duration runtime_start_timeout = absl::Seconds(30);
  std::string entrypoint = "/usr/libexec/strongroom/entrypoint";
  // The project share of a data-path container on a kernel with an NFS client (share_request_watcher.h);
  // null: the kernel's MountNfsInWorkload.
  std::shared_ptr<ShareMounter> share_mounter;
  absl::Duration share_request_bound = absl::Minutes(30);  // how long to poll for the workload's request
};

// Fails a RUNNING workload whose main process is about to be killed (workload id, reason, message): the
// lifecycle's (WorkloadManager), which then records FAILED EXECUTION with that reason when it ends.
using RunningFailure =
    std::function<void(const std::string& id, const std::string& reason, const std::string& message)>;

// How a container gets the provisioning inputs: variables in its environment, the bundle (the file
// `bundle_file` on the host), the munge key and the project share as bind mounts. Pure.
struct ContainerProvisioning {
  std::vector<std::string> env;  // NAME=value
  std::vector<BindMount> binds;
};
ContainerProvisioning ContainerProvisioningFor(const ProvisioningInputs& inputs,
                                               const std::string& bundle_file);

class ContainerWorkloadDriver : public WorkloadDriver {
 public:
  // `network` is the lifecycle's (shared by every kind), not owned.
  ContainerWorkloadDriver(ContainerDriverOptions options, std::unique_ptr<Runtime> runtime,
                          NetworkProvider* network, RunningFailure fail_running = nullptr)
      : options_(std::move(options)),
        runtime_(std::move(runtime)),
        network_(network),
        fail_running_(std::move(fail_running)),
        shares_(options_.share_mounter != nullptr ? options_.share_mounter : MakeKernelShareMounter()) {}

  std::string runtime_name() const override { return runtime_->name(); }
  bool has_main_process() const override { return true; }
  absl::StatusOr<StartPlan> Resolve(const v1::WorkloadSpec& spec) override;
  absl::Status PrepareStorage(StartContext& ctx) override;
  absl::Status AttachNetwork(StartContext& ctx) override;
  absl::Status Launch(StartContext& ctx) override;
  void StopExecution(TeardownContext& ctx) override;
  void RemoveStorage(TeardownContext& ctx) override;
  // Healthy: also resumes polling for a data-path workload's share request it has not made yet.
  bool HealthyForAdoption(const TrackedWorkload& tw, std::string* why) override;
  void SweepOrphans(const std::string& workloads_root, const std::set<std::string>& active) override;

 private:
  absl::StatusOr<std::string> ResolveImage(const v1::ImageRef& image);
  absl::StatusOr<v1::ScratchEncryption> DecideEncryption(const v1::WorkloadSpec& spec);
  // Polls for a data-path workload's share request (share_request_watcher.h).
  void WatchShareRequest(const TrackedWorkload& tw, pid_t init_pid);

  const ContainerDriverOptions options_;
  const std::unique_ptr<Runtime> runtime_;  // runc/crun/apptainer
  NetworkProvider* const network_;          // netd, or loopback-only in development
  const RunningFailure fail_running_;       // a share request that failed ends the workload with its reason
  ShareRequestWatcher shares_;              // data-path containers' share requests (polling threads)
};

}  // namespace strongroom::host_agent
