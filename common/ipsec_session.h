// One end of a Strongroom tunnel driven over VICI: what the workload side and vm-controller call (no
// swanctl).
//
//   SR_ASSIGN_OR_RETURN(ViciClient vici, ViciClient::Connect(socket, absl::Seconds(10)));
//   SR_RETURN_IF_ERROR(LoadIdentity(vici, key, cert_pem));   // key from memory, never a file
//   SR_RETURN_IF_ERROR(LoadTunnel(vici, spec));
//   SR_RETURN_IF_ERROR(BringUpTunnel(vici, spec.name, absl::Seconds(8)));   // initiator only
//   SR_ASSIGN_OR_RETURN(TunnelState st, GetTunnelState(vici, spec.name));
//   SR_RETURN_IF_ERROR(TearDownTunnel(vici, spec.name));             // SA, connection and every credential
//   go
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/ipsec_tunnel.h"
#include "common/project_ca.h"
#include "common/vici.h"

namespace strongroom {

// Sends the private key (load-key) and the certificate (load-cert) to charon.
absl::Status LoadIdentity(ViciClient& vici, const EcKey& key, const std::string& cert_pem);
absl::Status LoadTunnel(ViciClient& vici, const TunnelSpec& spec);
// Initiates the IKE_SA and CHILD_SA `name`; the error carries charon's reason (e.g. "establishing CHILD_SA
// 'w-1' failed", peer not responding, authentication failed).
absl::Status BringUpTunnel(ViciClient& vici, const std::string& name, absl::Duration timeout);

struct TunnelState {
  bool ike_established = false;
  bool child_installed = false;
  std::string encryption;  // e.g. "AES_GCM_16-256" of the CHILD_SA
  bool udp_encapsulated = false;
  int64_t bytes_in = 0, bytes_out = 0, packets_in = 0, packets_out = 0;
};
// The state of `name` (all false / zero when there is no SA).
absl::StatusOr<TunnelState> GetTunnelState(ViciClient& vici, const std::string& name);

// Terminates `name`'s SAs (if any), unloads the connection and clears every credential charon holds (keys and
// certificates; a workload's charon holds only its own). Idempotent.
absl::Status TearDownTunnel(ViciClient& vici, const std::string& name);

// What charon still holds, for teardown checks: loaded connections, private keys (by id), SAs.
struct CharonHoldings {
  size_t connections = 0;
  size_t keys = 0;
  size_t sas = 0;
};
absl::StatusOr<CharonHoldings> GetHoldings(ViciClient& vici);

}  // namespace strongroom
