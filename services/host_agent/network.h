// The workload's br-secure port. The netd provider calls netd over mTLS (role host-agent); the loopback-only
// provider is the DEVELOPMENT mode used when no netd is configured (the netns then has only lo).
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "strongroom/v1/config.pb.h"
#include "strongroom/v1/host_agent.pb.h"

namespace strongroom::host_agent {

// The failure reason code of a workload whose port netd did not allocate (a veth's or a VM's tap).
const char* NetworkFailureReason(const absl::Status& allocate);

class NetworkProvider {
 public:
  virtual ~NetworkProvider() = default;
  // False for the loopback-only development mode.
  virtual bool attached() const = 0;
  // netd AllocatePort for the workload's netns with the spec's allowlists. Idempotent (netd is, on workload
  // id).
  virtual absl::StatusOr<v1::NetworkAttachment> Allocate(const v1::WorkloadSpec& spec,
                                                         const std::string& netns) = 0;
  // netd AllocatePort with a tap for a VM (netd creates it in its netns; libvirt opens it). The loopback-only
  // mode answers an attachment without a port: the VM gets no NIC.
  virtual absl::StatusOr<v1::NetworkAttachment> AllocateTap(const v1::WorkloadSpec& spec) = 0;
  // netd ReleasePort; OK if there is no port. generation 0: any.
  virtual absl::Status Release(const std::string& workload_id, uint64_t generation) = 0;
};

std::unique_ptr<NetworkProvider> MakeLoopbackOnlyNetwork();
// `netd_instance` is the expected netd certificate instance (this node's name).
absl::StatusOr<std::unique_ptr<NetworkProvider>> MakeNetdNetwork(const std::string& address,
                                                                 const v1::TlsFiles& tls,
                                                                 const std::string& trust_domain,
                                                                 const std::string& netd_instance);

}  // namespace strongroom::host_agent
