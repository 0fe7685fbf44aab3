// The outside systems netd drives, as narrow interfaces: OVSDB (ports and their records),
// OpenFlow (flows and conntrack), the kernel's links (veth pairs and netns configuration) and the
// node's own packet filter (the guard that keeps the node's stack away from workload frames). The
// real implementations live in ovs/ and netlink/; unit tests substitute fakes, so the domain logic
// in PortManager is tested without OVS or root.
//
// Error codes every implementation uses: UNAVAILABLE when the peer cannot be reached or did not
// answer before the deadline (safe to retry), NOT_FOUND when the named object does not exist,
// ABORTED for a concurrent OVSDB change, FAILED_PRECONDITION for host state that forbids the
// operation (e.g. a missing netns), INTERNAL for anything else.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "services/netd/ipv4.h"
#include "services/netd/port_record.h"

namespace strongroom::netd {

class OvsDatabase {
 public:
  struct BridgeRow {
    std::string fail_mode;
    std::string datapath_type;
    ExternalIds external_ids;
  };
  // One port of the bridge. Views are valid only during the ReadBridge callback.
  struct PortRow {
    absl::string_view uuid;
    unsigned int seqno = 0;  // changes whenever the port or its interface changes
    absl::string_view name;
    const std::vector<std::pair<absl::string_view, absl::string_view>>* external_ids = nullptr;
    size_t interface_count = 0;
    absl::string_view interface_type;
    int64_t ofport = 0;          // -1 failed, 0 not assigned yet
    int64_t ofport_request = 0;  // Interface.ofport_request; 0 none
    std::optional<absl::string_view> interface_error;
  };
  struct NewPort {
    std::string bridge;
    std::string name;
    ExternalIds port_external_ids;
    ExternalIds interface_external_ids;
    ExternalIds bridge_external_ids;  // set in the same transaction
    // Interface.ofport_request (0: let ovs-vswitchd choose). Honoured if that number is free on
    // the bridge; otherwise ovs-vswitchd silently picks another, so callers compare.
    int64_t ofport_request = 0;
  };

  virtual ~OvsDatabase() = default;
  // Processes pending updates, waiting up to `timeout` for a first complete replica.
  virtual absl::Status Sync(absl::Duration timeout) = 0;
  // Changes whenever the replica changes.
  virtual unsigned int Seqno() const = 0;
  // NOT_FOUND if the bridge does not exist.
  virtual absl::Status ReadBridge(const std::string& bridge, BridgeRow* row,
                                  const std::function<void(const PortRow&)>& on_port) = 0;
  // Adds the port and waits until ovs-vswitchd applied it; returns its ofport. *committed says
  // whether the row was written (then an error leaves it for the caller to remove).
  virtual absl::StatusOr<int64_t> AddPort(const NewPort& port, absl::Duration timeout, bool* committed) = 0;
  // Removes the port and, with `wait_applied`, waits until ovs-vswitchd applied it. *committed as
  // for AddPort.
  virtual absl::Status DeletePort(const std::string& bridge, const std::string& name, bool wait_applied,
                                  absl::Duration timeout, bool* committed) = 0;
  virtual absl::Status UpdatePortExternalIds(const std::string& name, const ExternalIds& set,
                                             absl::Duration timeout) = 0;
  virtual absl::Status SetFailMode(const std::string& bridge, const std::string& fail_mode,
                                   absl::Duration timeout) = 0;
};

class OpenFlowSwitch {
 public:
  struct FlowMod {
    enum class Command { kAdd, kDelete, kDeleteStrict };
    Command command = Command::kAdd;
    std::string text;  // ovs-ofctl syntax
  };

  virtual ~OpenFlowSwitch() = default;
  // All mods in one atomic, ordered bundle: all apply or none. With `flush_conntrack_zone`, that
  // zone is flushed first, in the same exchange (whether or not the bundle then applies).
  virtual absl::Status ApplyBundle(const std::vector<FlowMod>& mods,
                                   std::optional<uint16_t> flush_conntrack_zone, absl::Duration timeout) = 0;
  // ApplyBundle in one round trip instead of two, in two halves so the caller can do other work
  // while ovs-vswitchd applies it: SendBundle queues the messages and returns, AwaitBundle waits
  // for the outcome; nothing else may use the switch in between. The price: the commit goes out
  // before the switch has accepted every mod. A mod refused at the commit (e.g. a missing meter)
  // still fails the whole commit, but one refused on arrival (e.g. an unmapped field) is left out
  // and the others are applied (AwaitBundle fails, saying so). Only for mods of which every subset
  // is safe, such as a new workload's flows (each only permits traffic), and the caller deletes
  // them on failure.
  // `flush_after` is flushed after the commit, in the same exchange.
  virtual absl::Status SendBundle(const std::vector<FlowMod>& mods, std::optional<uint16_t> flush_before,
                                  std::optional<uint16_t> flush_after, absl::Duration timeout) = 0;
  virtual absl::Status AwaitBundle(absl::Duration timeout) = 0;
  // Returns once the switch has handled everything sent before. ovs-vswitchd handles OpenFlow after
  // its datapath work in each main-loop iteration, so after a port was applied (cur_cfg) this also
  // means its packet translation knows the port: before that, a new port's first packets are
  // dropped as coming from an unknown port.
  virtual absl::Status Barrier(absl::Duration timeout) = 0;
  virtual absl::StatusOr<uint64_t> CountFlows(uint64_t cookie, uint64_t cookie_mask,
                                              absl::Duration timeout) = 0;
  // One flow's counters, from a flow-statistics request.
  struct FlowCounters {
    uint64_t cookie = 0;
    int table = 0;
    int priority = 0;
    uint64_t packets = 0;
    uint64_t bytes = 0;
  };
  // The counters of every flow whose cookie matches cookie/cookie_mask.
  virtual absl::StatusOr<std::vector<FlowCounters>> FlowStatistics(uint64_t cookie, uint64_t cookie_mask,
                                                                   absl::Duration timeout) = 0;
  virtual absl::Status FlushConntrackZone(uint16_t zone, absl::Duration timeout) = 0;
};

class WorkloadLinks {
 public:
  struct LinkSpec {
    std::string host_name;  // the veth end that stays in netd's netns and goes on the bridge
    std::string netns;      // as given in the request
    std::string peer_name;  // the end moved into the netns
    std::string mac;
    Ipv4 address = 0;
    int prefix_length = 0;
    Ipv4 gateway = 0;
    int mtu = 1500;
    std::string workload_id;  // for the host end's alias
    // A VM's persistent tap named host_name in netd's netns instead of a veth pair (netns and
    // peer_name unused; the guest configures the address itself).
    bool tap = false;
  };

  virtual ~WorkloadLinks() = default;
  // INVALID_ARGUMENT if malformed; FAILED_PRECONDITION if it does not exist, is not a network
  // namespace, or is netd's own.
  // One of netd's host-side veths as a listing found it.
  struct OwnedLink {
    std::string name;
    // What would let the node's own stack handle its frames (host_isolation.h VethExposure), ""
    // if every per-device guard is in place.
    std::string exposure;
  };
  struct OwnedLinks {
    std::vector<OwnedLink> links;
    // False when the kernel flagged the listing inconsistent (links came and went meanwhile):
    // every link in it exists or existed, but one it lacks may exist too, so an absence must be
    // confirmed with Exists before anything is done about it.
    bool complete = true;
  };

  virtual absl::Status CheckNetns(const std::string& netns) = 0;
  // Creates the pair and configures the peer in its netns (address, MAC, route, up, checksum
  // offload off); for a tap, creates the persistent tap device instead (no peer). The host end gets every per-device guard before it comes up (netd's interface
  // group, no ARP, no IPv4 forwarding, no IPv6, no address), and they are read back before this
  // returns: FAILED_PRECONDITION if the kernel did not keep one. All or nothing: on error,
  // nothing of it is left.
  virtual absl::Status Create(const LinkSpec& spec, absl::Duration timeout) = 0;
  // Deletes the host end (the peer goes with it). OK if it does not exist.
  virtual absl::Status Delete(const std::string& host_name) = 0;
  virtual absl::StatusOr<bool> Exists(const std::string& host_name) = 0;
  // Host ends and taps netd created (marked by their alias), in netd's netns, with their exposure.
  virtual absl::StatusOr<OwnedLinks> ListOwned() = 0;
  // Puts every per-device guard back on one of netd's host ends (after ListOwned found a gap).
  virtual absl::Status Isolate(const std::string& host_name) = 0;
};

// The node's own packet filter: keeps the node's IPv4, ARP and IPv6 stacks from receiving,
// forwarding or answering for any frame of a workload port, and from sending to one
// (host_isolation.h says why and how).
class HostStackGuard {
 public:
  // The drops of one of the guard's chains, e.g. "inet from_workload_ports".
  struct ChainCounters {
    std::string chain;
    uint64_t packets = 0;
    uint64_t bytes = 0;
  };

  virtual ~HostStackGuard() = default;
  // Checks that the guard is in place and puts it back if it is not (one atomic transaction).
  // Cheap when nothing changed since the last check. Returns what was wrong and has been
  // repaired, "" if nothing was. FAILED_PRECONDITION if this kernel cannot enforce it (no
  // nf_tables for IPv4/IPv6 and ARP), UNAVAILABLE/INTERNAL if it could not be checked or repaired.
  virtual absl::StatusOr<std::string> Ensure() = 0;
  virtual absl::StatusOr<std::vector<ChainCounters>> Counters() = 0;
  // Runs Ensure whenever the node's packet filter changes, not only when asked, and reports each
  // outcome that repaired something or failed. No-op where changes cannot be watched.
  virtual void Watch(std::function<void(const absl::StatusOr<std::string>&)> on_result) {}
};

}  // namespace strongroom::netd
