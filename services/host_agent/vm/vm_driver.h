// The VM kind of workload: what host-agent's one lifecycle (manager.cc, teardown.cc) asks of a VM, on top of
// libvirt (libvirt_client.h). Per workload, in its directory:
//   disk.img     the writable layer, a sparse file the guest encrypts with a key of its own
//   (deploy/image/vm/init)
//   config.img   the read-only config disk: a tar with network.env (netd's attachment), workload.env (the
//                provisioning inputs' variables) and provisioning.json
//   console.log  the guest's serial console
// and the image's catalog files: <image_root>/<name>.squashfs (the read-only root, the same image as a
// container's), <name>.vmlinux and <name>.initrd (the boot files, deploy/image/vm/build-vm-boot.sh).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "services/host_agent/vm/domain_xml.h"
#include "services/host_agent/vm/libvirt_client.h"

namespace strongroom::host_agent::vm {

struct VmDriverOptions {
  std::string libvirt_uri;           // e.g. qemu:///system?socket=/run/strongroom/libvirt/sock/libvirt-sock
  std::string domain_type = "qemu";  // "kvm" where /dev/kvm runs stock kernels, "qemu" (TCG) elsewhere
  uint64_t writable_disk_bytes = uint64_t{1} << 30;  // disk.img's size (sparse)
};

// A VM image in the catalog.
struct VmImage {
  std::string rootfs;  // <name>.squashfs
  std::string kernel;  // <name>.vmlinux
  std::string initrd;  // <name>.initrd
};
// NOT_FOUND without the root file system; FAILED_PRECONDITION "image X has no kernel" without the boot files.
absl::StatusOr<VmImage> ResolveVmImage(const std::string& image_root, const std::string& name);

struct VmLaunch {
  std::string workload_id;
  std::string workload_dir;  // exists
  VmImage image;
  uint32_t vcpus = 1;
  uint64_t memory_bytes = 0;
  std::string tap, mac, address_cidr, gateway;  // netd's attachment ("" tap: no NIC)
  std::string hostname;
  std::string entrypoint;         // inside the image
  std::string provisioning_json;  // "" for none
  std::string workload_env;       // workload.env on the config disk (WorkloadEnvFile); "" for none
  std::vector<VmFilesystem> filesystems;  // 9p shares (development-mode stand-ins)
};

// NAME='value' lines for a file the guest's init sources with sh: every value single-quoted, a ' inside as
// '\''. Names must be [A-Za-z_][A-Za-z0-9_]* (INVALID_ARGUMENT otherwise: the file would not parse).
absl::StatusOr<std::string> WorkloadEnvFile(const std::vector<std::pair<std::string, std::string>>& vars);

// The config disk's bytes: a ustar archive of `files` (name -> contents), padded to whole MiB. Exposed for
// tests.
std::string ConfigDiskImage(const std::map<std::string, std::string>& files);

class VmDriver {
 public:
  // `on_stop` hears of every stop of one of host-agent's domains, on libvirt's event thread.
  VmDriver(VmDriverOptions options, LibvirtClient::StopObserver on_stop)
      : options_(std::move(options)), on_stop_(std::move(on_stop)) {}

  const VmDriverOptions& options() const { return options_; }
  // Before anything is made: whether this node can run the domain type for the image (CheckDomainType).
  absl::Status CheckCanRun(const VmImage& image) const;
  // Writes disk.img and config.img and starts the transient domain. All or nothing: on error, no domain.
  // `before_create` runs right before the domain is asked for, with the UUID it will have (the caller records
  // that it may exist from then on, and which domain is the workload's); its error stops the start. Returns
  // the UUID.
  absl::StatusOr<std::string> Start(
      const VmLaunch& launch, const std::function<absl::Status(const std::string& uuid)>& before_create);
  // ACPI power-off, `grace` to comply, then destroy. OK if there is no domain.
  absl::Status Stop(const std::string& workload_id, absl::Duration grace);
  // Whether the workload's domain runs.
  absl::StatusOr<bool> Running(const std::string& workload_id);
  // Has libvirt probe the emulator now rather than at the first VM's start (LibvirtClient::ProbeEmulator).
  absl::Status WarmUp();
  // Workload ids of every running domain with host-agent's metadata.
  absl::StatusOr<std::vector<std::string>> RunningWorkloads();

 private:
  // The connection, (re)made on demand: libvirtd may restart, or be down when host-agent starts.
  absl::StatusOr<LibvirtClient*> Client();

  const VmDriverOptions options_;
  const LibvirtClient::StopObserver on_stop_;
  std::mutex mu_;                          // guards client_
  std::unique_ptr<LibvirtClient> client_;  // null until first needed, or after the connection closed
};

}  // namespace strongroom::host_agent::vm
