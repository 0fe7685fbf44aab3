// What netd records about one workload port, and its encoding in OVSDB external_ids: the only
// place it is stored. A restarted netd rebuilds IPAM and the whole flow table from these keys.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "services/netd/ipv4.h"
#include "services/netd/policy.h"

namespace strongroom::netd {

using ExternalIds = std::map<std::string, std::string>;

// The ownership marker on every Port and Interface netd creates (as ovs-docker and ovs-cni tag
// theirs). Rows without it are never read as netd's, never modified and never deleted.
inline constexpr char kOwnerKey[] = "owner";
inline constexpr char kOwnerValue[] = "strongroom-netd";
// Bridge external_ids key holding the last generation handed out (so generations never repeat,
// even after the port that held the highest one is released and netd restarts).
inline constexpr char kGenerationCounterKey[] = "strongroom-netd-generation";
// Bridge external_ids key holding the address handed out last: where round-robin IPAM resumes.
inline constexpr char kLastAddressKey[] = "strongroom-netd-last-address";
// Bridge external_ids key holding the OpenFlow port number requested last: where the round robin
// over netd's ofport range resumes.
inline constexpr char kLastOfportKey[] = "strongroom-netd-last-ofport";
// The OpenFlow port numbers netd requests (Interface.ofport_request): the upper half of the range,
// which ovs-vswitchd never assigns by itself ("reserved for controllers", ofproto.c
// alloc_ofp_port), up to OFPP_MAX - 1. Knowing the number before ovs-vswitchd applies the port lets
// netd send the flows at the same time as the port.
inline constexpr int64_t kFirstRequestedOfport = 32768;
inline constexpr int64_t kLastRequestedOfport = 65279;

struct PortRecord {
  std::string workload_id;
  std::string port_name;       // OVS port = host-side veth or tap, "sr" + 12 hex digits
  // A VM's persistent tap in netd's netns (AllocatePortRequest.tap) instead of a veth pair; then
  // netns and interface_name are empty.
  bool tap = false;
  std::string netns;           // as given at allocation ("" for a tap)
  std::string interface_name;  // inside the netns ("" for a tap)
  Ipv4 address = 0;
  int prefix_length = 0;
  Ipv4 gateway = 0;
  std::string mac;
  int mtu = 0;
  uint64_t generation = 0;
  std::string owner_label;   // the caller's label (AllocatePortRequest.owner)
  std::string requested_by;  // SPIFFE id of the allocating host-agent
  uint64_t policy_revision = 0;
  Policy policy;
  absl::Time created_time;
  absl::Time updated_time;

  uint64_t Cookie() const;
};

bool IsOwnedByNetd(const ExternalIds& external_ids);

// The Port's external_ids for `record` (owner marker included).
ExternalIds EncodePortExternalIds(const PortRecord& record);
// The Interface's external_ids: the owner marker plus the conventional iface-id/attached-mac.
ExternalIds EncodeInterfaceExternalIds(const PortRecord& record);
// Only the keys UpdateEgress changes.
ExternalIds EncodePolicyExternalIds(const PortRecord& record);

// Decodes a Port's external_ids (which must carry the owner marker). `port_name` is the row's
// name. DATA_LOSS describes what is missing or malformed.
absl::StatusOr<PortRecord> DecodePortExternalIds(const std::string& port_name,
                                                 const ExternalIds& external_ids);

// The address recorded on a port, even if the rest of its record is unreadable, so a damaged
// record never lets its address be handed out twice.
absl::StatusOr<Ipv4> RecordedAddress(const ExternalIds& external_ids);

// The rule-list encoding used in external_ids: "tcp 192.0.2.10/32 8080-8080 licence%20server"
// per rule, ";" between rules, the description percent-encoded. Exposed for tests.
std::string EncodeRules(const std::vector<Rule>& rules);
absl::StatusOr<std::vector<Rule>> DecodeRules(absl::string_view text);

// "sr" + the first 12 hex digits of SHA-256(workload_id): fits IFNAMSIZ and is stable, so a
// repeated allocation finds its port.
std::string PortNameForWorkload(absl::string_view workload_id);

}  // namespace strongroom::netd
