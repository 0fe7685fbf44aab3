#include "services/host_agent/vm/libvirt_client.h"

#include <fcntl.h>
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "services/host_agent/vm/domain_xml.h"

namespace strongroom::host_agent::vm {
namespace {

// libvirt's event loop, once per process: lifecycle events, keepalive and the close callback
// all need it. Its thread runs for the life of the process.
void StartEventLoopOnce() {
  static std::once_flag once;
  std::call_once(once, [] {
    // Errors are read with virGetLastError where they happen; never printed by libvirt itself.
    virSetErrorFunc(
        nullptr, +[](void*, virErrorPtr) {});
    virEventRegisterDefaultImpl();
    std::thread([] {
      for (;;) {
        if (virEventRunDefaultImpl() < 0) std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
    }).detach();
  });
}

// A domain reference, freed on scope exit.
struct DomainRef {
  explicit DomainRef(virDomainPtr d) : domain(d) {}
  ~DomainRef() {
    if (domain != nullptr) virDomainFree(domain);
  }
  DomainRef(const DomainRef&) = delete;
  DomainRef& operator=(const DomainRef&) = delete;
  virDomainPtr domain;
};

std::string StopReason(int detail) {
  switch (detail) {
    case VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN:
      return "VM_SHUTDOWN";
    case VIR_DOMAIN_EVENT_STOPPED_DESTROYED:
      return "VM_DESTROYED";
    case VIR_DOMAIN_EVENT_STOPPED_CRASHED:
      return "VM_CRASHED";
    case VIR_DOMAIN_EVENT_STOPPED_FAILED:
      return "VM_EMULATOR_FAILED";
    default:
      return "VM_STOPPED_OTHER";
  }
}

std::string StopMessage(int detail) {
  switch (detail) {
    case VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN:
      return "the guest powered off";
    case VIR_DOMAIN_EVENT_STOPPED_DESTROYED:
      return "the domain was destroyed";
    case VIR_DOMAIN_EVENT_STOPPED_CRASHED:
      return "the guest crashed";
    case VIR_DOMAIN_EVENT_STOPPED_FAILED:
      return "the emulator (qemu) failed or was killed";
    case VIR_DOMAIN_EVENT_STOPPED_MIGRATED:
      return "the domain was migrated away";
    case VIR_DOMAIN_EVENT_STOPPED_SAVED:
      return "the domain was saved";
    default:
      return absl::StrCat("the domain stopped (libvirt detail ", detail, ")");
  }
}

std::optional<OwnedDomain> Describe(virDomainPtr domain) {
  char* metadata =
      virDomainGetMetadata(domain, VIR_DOMAIN_METADATA_ELEMENT, kMetadataUri, VIR_DOMAIN_AFFECT_LIVE);
  if (metadata == nullptr) return std::nullopt;  // not host-agent's
  std::optional<std::string> id = WorkloadIdFromMetadata(metadata);
  std::free(metadata);
  if (!id) return std::nullopt;
  OwnedDomain owned;
  owned.workload_id = *id;
  if (const char* name = virDomainGetName(domain)) owned.name = name;
  char uuid[VIR_UUID_STRING_BUFLEN] = {};
  if (virDomainGetUUIDString(domain, uuid) == 0) owned.uuid = uuid;
  int state = 0;
  int reason = 0;
  if (virDomainGetState(domain, &state, &reason, 0) == 0) owned.state = state;
  return owned;
}

}  // namespace

struct LibvirtCallbacks {
  static int OnLifecycle(virConnectPtr, virDomainPtr domain, int event, int detail, void* opaque) {
    auto* client = static_cast<LibvirtClient*>(opaque);
    const char* name = virDomainGetName(domain);  // local: no round trip
    if (name == nullptr || !absl::StartsWith(name, kDomainPrefix)) return 0;
    const std::string id = std::string(name).substr(std::strlen(kDomainPrefix));
    if (event == VIR_DOMAIN_EVENT_STOPPED) {
      char uuid[VIR_UUID_STRING_BUFLEN] = {};
      (void)virDomainGetUUIDString(domain, uuid);  // local: no round trip
      if (client->on_stop_) client->on_stop_({id, StopReason(detail), StopMessage(detail), uuid});
    } else if (event == VIR_DOMAIN_EVENT_CRASHED) {
      Log(LogLevel::kWarn, "VM crashed", {{"workload", id}});
    }
    return 0;
  }
  static void OnClose(virConnectPtr, int reason, void* opaque) {
    auto* client = static_cast<LibvirtClient*>(opaque);
    client->connected_.store(false);
    Log(LogLevel::kError, "libvirt connection closed",
        {{"uri", client->uri_}, {"reason", absl::StrCat(reason)}});
  }
};

absl::StatusOr<std::unique_ptr<LibvirtClient>> LibvirtClient::Connect(const std::string& uri,
                                                                      StopObserver on_stop) {
  StartEventLoopOnce();
  std::unique_ptr<LibvirtClient> client(new LibvirtClient(uri, std::move(on_stop)));
  client->conn_ = virConnectOpen(uri.c_str());
  if (client->conn_ == nullptr) {
    const virError* error = virGetLastError();
    return absl::UnavailableError(
        absl::StrCat("libvirt at ", uri,
                     " is unreachable: ", error != nullptr && error->message ? error->message : "no answer"));
  }
  client->connected_.store(true);
  // A dead libvirtd is noticed within about 15 s even without traffic.
  (void)virConnectSetKeepAlive(client->conn_, 5, 3);
  if (virConnectRegisterCloseCallback(client->conn_, LibvirtCallbacks::OnClose, client.get(), nullptr) != 0) {
    return client->LastError("registering the close callback");
  }
  client->lifecycle_callback_ = virConnectDomainEventRegisterAny(
      client->conn_, nullptr, VIR_DOMAIN_EVENT_ID_LIFECYCLE,
      VIR_DOMAIN_EVENT_CALLBACK(LibvirtCallbacks::OnLifecycle), client.get(), nullptr);
  if (client->lifecycle_callback_ < 0) return client->LastError("subscribing to lifecycle events");
  return client;
}

LibvirtClient::~LibvirtClient() {
  if (conn_ == nullptr) return;
  if (lifecycle_callback_ >= 0) (void)virConnectDomainEventDeregisterAny(conn_, lifecycle_callback_);
  (void)virConnectUnregisterCloseCallback(conn_, LibvirtCallbacks::OnClose);
  virConnectClose(conn_);
}

absl::Status LibvirtClient::LastError(const std::string& operation) const {
  const virError* error = virGetLastError();
  const std::string message = absl::StrCat("libvirt at ", uri_, ": ", operation, ": ",
                                           error != nullptr && error->message ? error->message : "failed");
  const int code = error != nullptr ? error->code : VIR_ERR_INTERNAL_ERROR;
  if (!connected_.load()) return absl::UnavailableError(message);
  switch (code) {
    case VIR_ERR_NO_DOMAIN:
      return absl::NotFoundError(message);
    case VIR_ERR_NO_CONNECT:
    case VIR_ERR_RPC:
    case VIR_ERR_SYSTEM_ERROR:
    case VIR_ERR_AUTH_FAILED:
      return absl::UnavailableError(message);
    case VIR_ERR_XML_ERROR:
    case VIR_ERR_XML_DETAIL:
    case VIR_ERR_CONFIG_UNSUPPORTED:
    case VIR_ERR_INVALID_ARG:
      return absl::InvalidArgumentError(message);
    case VIR_ERR_OPERATION_INVALID:
    case VIR_ERR_OPERATION_FAILED:
      return absl::FailedPreconditionError(message);
    default:
      return absl::InternalError(message);
  }
}

absl::StatusOr<std::string> LibvirtClient::CreateTransient(const std::string& xml) {
  // Flags 0: no VIR_DOMAIN_START_AUTODESTROY, so the VM outlives this connection (a host-agent
  // restart adopts it); no START_PAUSED.
  DomainRef domain(virDomainCreateXML(conn_, xml.c_str(), 0));
  if (domain.domain == nullptr) return LastError("creating the domain");
  char uuid[VIR_UUID_STRING_BUFLEN] = {};
  if (virDomainGetUUIDString(domain.domain, uuid) != 0) return LastError("reading the new domain's UUID");
  return std::string(uuid);
}

absl::Status LibvirtClient::ProbeEmulator(const std::string& emulator, const std::string& domain_type) {
  char* caps = virConnectGetDomainCapabilities(conn_, emulator.c_str(), "x86_64", "pc", domain_type.c_str(), 0);
  if (caps == nullptr) return LastError(absl::StrCat("probing ", emulator, " for ", domain_type));
  free(caps);
  return absl::OkStatus();
}

absl::Status LibvirtClient::Shutdown(const std::string& workload_id) {
  DomainRef domain(virDomainLookupByName(conn_, DomainName(workload_id).c_str()));
  if (domain.domain == nullptr) return LastError(absl::StrCat("looking up ", DomainName(workload_id)));
  if (virDomainShutdownFlags(domain.domain, VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN) != 0) {
    return LastError(absl::StrCat("shutting down ", DomainName(workload_id)));
  }
  return absl::OkStatus();
}

absl::Status LibvirtClient::Destroy(const std::string& workload_id) {
  DomainRef domain(virDomainLookupByName(conn_, DomainName(workload_id).c_str()));
  if (domain.domain == nullptr) {
    absl::Status status = LastError(absl::StrCat("looking up ", DomainName(workload_id)));
    return absl::IsNotFound(status) ? absl::OkStatus() : status;
  }
  if (virDomainDestroy(domain.domain) != 0) {
    absl::Status status = LastError(absl::StrCat("destroying ", DomainName(workload_id)));
    // Gone meanwhile (it stopped by itself): what was asked for.
    if (absl::IsNotFound(status) || absl::IsFailedPrecondition(status)) return absl::OkStatus();
    return status;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::optional<OwnedDomain>> LibvirtClient::Find(const std::string& workload_id) {
  DomainRef domain(virDomainLookupByName(conn_, DomainName(workload_id).c_str()));
  if (domain.domain == nullptr) {
    absl::Status status = LastError(absl::StrCat("looking up ", DomainName(workload_id)));
    if (absl::IsNotFound(status)) return std::nullopt;
    return status;
  }
  std::optional<OwnedDomain> owned = Describe(domain.domain);
  if (owned && owned->workload_id != workload_id) return std::nullopt;
  return owned;
}

absl::StatusOr<std::vector<OwnedDomain>> LibvirtClient::ListOwned() {
  virDomainPtr* domains = nullptr;
  const int count = virConnectListAllDomains(conn_, &domains, VIR_CONNECT_LIST_DOMAINS_ACTIVE);
  if (count < 0) return LastError("listing domains");
  std::vector<OwnedDomain> owned;
  for (int i = 0; i < count; ++i) {
    DomainRef domain(domains[i]);
    if (std::optional<OwnedDomain> mine = Describe(domain.domain)) owned.push_back(*std::move(mine));
  }
  std::free(domains);
  return owned;
}

absl::Status CheckDomainType(const std::string& domain_type, const std::string& kernel,
                             const std::string& sys, const std::string& dev_kvm) {
  if (domain_type == "qemu") return absl::OkStatus();
  if (domain_type != "kvm") {
    return absl::InvalidArgumentError(
        absl::StrCat("vm_domain_type: \"", domain_type, "\" is neither \"kvm\" nor \"qemu\""));
  }
  const int fd = open(dev_kvm.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    return absl::FailedPreconditionError(absl::StrCat("domain type kvm cannot run here: ", dev_kvm, ": ",
                                                      std::strerror(errno),
                                                      "; set vm_domain_type: \"qemu\" (TCG)"));
  }
  close(fd);
  struct stat st;
  if (stat((sys + "/module/kvm_pvm").c_str(), &st) == 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "domain type kvm cannot run the image's kernel ", kernel, ": ", dev_kvm,
        " is a PVM backend (module kvm_pvm), which runs only PVM-built guest kernels and hangs a stock one; "
        "set vm_domain_type: \"qemu\" (TCG) on this node"));
  }
  return absl::OkStatus();
}

}  // namespace strongroom::host_agent::vm
