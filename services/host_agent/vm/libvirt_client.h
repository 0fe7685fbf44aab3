// host-agent's connection to libvirt (its C API; never virsh): transient domains without
// autodestroy, so VMs outlive a host-agent restart and are adopted again from their <metadata>;
// lifecycle events, so a VM that stops behind host-agent's back ends its workload with the reason.
//
// Errors: UNAVAILABLE when libvirtd cannot be reached (or the connection broke), NOT_FOUND for a
// domain that does not exist, INVALID_ARGUMENT for XML libvirt refuses, FAILED_PRECONDITION for a
// domain in the wrong state, INTERNAL otherwise; each message starts "libvirt at URI: OP: ".
#pragma once

#include <sys/types.h>

#include <atomic>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

typedef struct _virConnect* virConnectPtr;

namespace strongroom::host_agent::vm {

// A domain of host-agent's that stopped (or crashed): which workload, why, and libvirt's words.
struct DomainStopped {
  std::string workload_id;
  // VM_SHUTDOWN (the guest powered off), VM_DESTROYED (destroyed, by host-agent or anyone else),
  // VM_CRASHED (the guest crashed), VM_EMULATOR_FAILED (qemu died or was killed), VM_STOPPED_OTHER.
  std::string reason;
  std::string message;
  std::string uuid;  // the domain's: a workload's later domain (a resumed start) has another
};

// One running domain that carries host-agent's metadata.
struct OwnedDomain {
  std::string workload_id;
  std::string name;
  std::string uuid;
  int state = 0;  // virDomainState
};

class LibvirtClient {
 public:
  // Called on libvirt's event thread for every stop of a domain named sr-<id>: must not block and
  // must not call back into this client.
  using StopObserver = std::function<void(const DomainStopped&)>;

  // Connects (e.g. "qemu:///system?socket=/run/strongroom/libvirt/sock/libvirt-sock") and
  // subscribes to lifecycle events. UNAVAILABLE if libvirtd is not there.
  static absl::StatusOr<std::unique_ptr<LibvirtClient>> Connect(const std::string& uri, StopObserver on_stop);
  ~LibvirtClient();
  LibvirtClient(const LibvirtClient&) = delete;
  LibvirtClient& operator=(const LibvirtClient&) = delete;

  // Starts a transient domain from `xml` (DomainXml). Returns its UUID.
  absl::StatusOr<std::string> CreateTransient(const std::string& xml);
  // Asks the guest to power off (ACPI). FAILED_PRECONDITION if it is not running.
  absl::Status Shutdown(const std::string& workload_id);
  // Destroys the domain at once. OK if it does not exist.
  absl::Status Destroy(const std::string& workload_id);
  // The workload's running domain, or nullopt.
  absl::StatusOr<std::optional<OwnedDomain>> Find(const std::string& workload_id);
  // Has libvirtd probe `emulator` for `domain_type` now (virConnectGetDomainCapabilities), so that the first
  // domain does not wait for it: on a fresh libvirtd that probe runs qemu and takes seconds.
  absl::Status ProbeEmulator(const std::string& emulator, const std::string& domain_type);
  // Every running domain with host-agent's <metadata> (others are never touched).
  absl::StatusOr<std::vector<OwnedDomain>> ListOwned();
  // False once libvirt reported the connection closed (libvirtd gone); calls then fail UNAVAILABLE.
  bool connected() const { return connected_.load(); }
  const std::string& uri() const { return uri_; }

 private:
  LibvirtClient(std::string uri, StopObserver on_stop) : uri_(std::move(uri)), on_stop_(std::move(on_stop)) {}
  absl::Status LastError(const std::string& operation) const;
  friend struct LibvirtCallbacks;  // libvirt's C callbacks (libvirt_client.cc)

  const std::string uri_;               // for messages
  const StopObserver on_stop_;          // the owner's
  virConnectPtr conn_ = nullptr;        // owned; closed by the destructor
  int lifecycle_callback_ = -1;         // virConnectDomainEventRegisterAny's id
  std::atomic<bool> connected_{false};  // cleared by OnClose
};

// Whether this node can run a domain of `domain_type` ("kvm" or "qemu") for `kernel`; a clear
// FAILED_PRECONDITION naming the cause if not. qemu (TCG) runs anywhere qemu does. kvm needs a
// /dev/kvm that opens, and not a PVM backend (module kvm_pvm): that one runs only PVM-built guest
// kernels and hangs a stock one such as Debian's. `sys` and `dev_kvm` are for tests.
absl::Status CheckDomainType(const std::string& domain_type, const std::string& kernel,
                             const std::string& sys = "/sys", const std::string& dev_kvm = "/dev/kvm");

}  // namespace strongroom::host_agent::vm
