// The one IPsec tunnel shape Strongroom uses between a workload and its controlling VM, as pure data for
// charon: the strongswan.conf a Strongroom-run charon gets, and the VICI load-conn message for one tunnel.
// Both ends build theirs from the same function, so initiator and responder can never disagree on proposals.
//
// The shape: IKEv2 only; AES-256-GCM for IKE and ESP (AEAD), PRF SHA-384, ECP-384; certificate
// authentication on both sides (auth = pubkey, no PSK is ever configured), the identity of each side is its
// IP address as an IP SAN, and the peer's certificate must chain to the *project* CA given (remote cacerts
// pins it, so a deployment-CA certificate with the right SAN is refused). One host-to-host CHILD_SA in tunnel
// mode (kernel-libipsec supports only tunnel mode), traffic selectors = the two addresses.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/vici.h"

namespace strongroom {

// Where ESP runs. Kernel ESP (XFRM) where the kernel has it; else StrongSwan's kernel-libipsec (userspace ESP
// over a TUN device, ESP always in UDP 4500).
enum class IpsecBackend { kKernelEsp, kLibipsec };
absl::string_view IpsecBackendName(IpsecBackend backend);  // "kernel-esp" / "kernel-libipsec"
absl::StatusOr<IpsecBackend> ParseIpsecBackend(absl::string_view name);

// What the running kernel offers: kernel ESP needs the XFRM netlink interface and the esp4 transform (a
// loaded module or built in). `proc_root`/`sys_root` exist for tests.
struct KernelIpsecFacts {
  bool xfrm_netlink = false;  // socket(AF_NETLINK, NETLINK_XFRM) opens
  bool esp4 = false;          // /sys/module/esp4 exists or modules.builtin lists esp4
};
KernelIpsecFacts ProbeKernelIpsec();
IpsecBackend ChooseIpsecBackend(const KernelIpsecFacts& facts);

// strongswan.conf for a charon that Strongroom starts: only the plugins it needs (no stroke, no file-based
// credentials), the VICI socket at `vici_socket`, a log file, and for kernel-libipsec the plugin loaded
// before kernel-netlink with allow_peer_ts (our selectors are the IKE peers themselves; see
// LibipsecBypassRules).
struct CharonSettings {
  std::string vici_socket;  // absolute path of the unix socket
  std::string log_path;     // charon's own log (IKE level 1: negotiations, never key material)
  IpsecBackend backend = IpsecBackend::kLibipsec;
};
std::string CharonConf(const CharonSettings& settings);

// kernel-libipsec routes the peer's /32 into its TUN device (table 220), which would also swallow charon's
// own IKE and ESP-in-UDP packets. These `ip rule` argument vectors (after "ip", "-4", "rule", "add") send UDP
// from ports 500 and 4500 through the main table instead. Empty for kernel ESP (XFRM policies bypass IKE
// sockets).
std::vector<std::vector<std::string>> LibipsecBypassRules(IpsecBackend backend);

struct TunnelSpec {
  std::string name;            // connection and child name, e.g. "w-17"; [A-Za-z0-9._-]{1,64}
  std::string local_ip;        // IPv4 dotted quad: the IKE address, identity and traffic selector
  std::string remote_ip;       // the peer's, likewise
  std::string local_cert_pem;  // our certificate (its key is loaded separately with load-key)
  std::string project_ca_pem;  // the only CA the peer's certificate may chain to
  IpsecBackend backend = IpsecBackend::kLibipsec;  // ESP is always UDP-encapsulated (port 4500) either way
  // IKE identities; empty: the IP address. A workload's is its certificate's subject (WorkloadIkeId), so the
  // VM's connection for one workload accepts no other project certificate, even one for the same (reused)
  // address.
  std::string local_id;
  std::string remote_id;
};

// The IKE identity of a workload: the subject DN the project CA writes ("O=<project>, OU=<job>,
// CN=<workload>").
std::string WorkloadIkeId(const std::string& project, const std::string& job_id,
                          const std::string& workload_id);

// The two ends of one workload's tunnel, built here so they always mirror each other. Both are named after
// the workload (the connection and child name). The VM's (VmTunnels::Add): local = the VM's address (its IKE
// identity), remote = the workload's address with remote id WorkloadIkeId. The workload's
// (strongroom-enroll --tunnel, the rig): local = its address with local id WorkloadIkeId, remote = the VM's
// address as its identity. `cert_pem` is the end's own project certificate, `ca_pem` the project CA.
struct WorkloadTunnelEnds {
  std::string project;
  std::string job_id;
  std::string workload_id;
  std::string workload_ip;
  std::string vm_ip;
};
TunnelSpec VmSideTunnel(const WorkloadTunnelEnds& ends, const std::string& cert_pem,
                        const std::string& ca_pem, IpsecBackend backend);
TunnelSpec WorkloadSideTunnel(const WorkloadTunnelEnds& ends, const std::string& cert_pem,
                              const std::string& ca_pem, IpsecBackend backend);

// The load-conn message for `spec` (a section named spec.name). Validates the spec.
absl::StatusOr<ViciMessage> BuildLoadConn(const TunnelSpec& spec);

// The proposals, exposed for tests and docs.
inline constexpr absl::string_view kIkeProposal = "aes256gcm16-prfsha384-ecp384";
inline constexpr absl::string_view kEspProposal = "aes256gcm16";

}  // namespace strongroom
