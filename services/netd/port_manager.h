// The heart of netd: allocates, updates and releases workload ports, and keeps br-secure's ports
// and flow table equal to what OVSDB records (reconcile). Pure domain logic over the three
// backends (backends.h); it knows nothing about gRPC.
//
// Every public call is serialised by one mutex: the OVS IDL and vconn are single-threaded, and
// serialising mutations is what makes "check, then act" (idempotency, IPAM) race-free.
//
// Source of truth: OVSDB. The in-memory cache below is a parsed copy of the bridge's rows, kept
// only to make each call O(changed rows) instead of O(all ports); it is refreshed from the IDL
// whenever the IDL's seqno moves, so a restarted netd knows exactly what the old one knew.
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/audit.h"
#include "services/netd/backends.h"
#include "services/netd/flow_plan.h"
#include "services/netd/policy.h"
#include "services/netd/port_record.h"
#include "services/netd/settings.h"

namespace strongroom::netd {

struct AllocateRequest {
  std::string workload_id;     // validated ID
  std::string netns;           // validated syntax; existence is checked here ("" for a tap)
  std::string interface_name;  // validated, default applied ("" for a tap)
  std::string owner_label;     // validated, default applied
  Policy policy;               // validated
  std::string requested_by;    // the caller's SPIFFE id
  bool tap = false;            // a VM's tap in netd's netns instead of a veth into `netns`
};

// What one of a workload's drop flows counted (flow_plan.h DropReason).
struct DropCount {
  DropReason reason = DropReason::kOtherProtocol;
  uint64_t packets = 0;
  uint64_t bytes = 0;
};

struct PortStatus {
  PortRecord record;
  int64_t ofport = 0;
  bool ready = false;
  std::string status_message;  // why it is not ready; empty when ready
  // Every drop reason with its counts, as ovs-vswitchd last reported them (Get and List fill it;
  // empty if the switch could not be asked).
  std::vector<DropCount> drops;
};

struct AllocateResult {
  PortStatus port;
  bool created = false;
};

// Where an allocation spent its time (the benchmark reports these). The flows are sent before
// the veth is created and ovs-vswitchd applies them meanwhile, so `flows` is only what was left
// to wait for after the port was applied.
struct AllocateTimings {
  absl::Duration link;   // veth pair + netns configuration
  absl::Duration ovsdb;  // port added and applied by ovs-vswitchd
  absl::Duration flows;  // waiting for the flow bundle (and conntrack flush) still in flight
};

// Where a release spent its time (the benchmark reports these).
struct ReleaseTimings {
  absl::Duration ovsdb;  // port row removed (ovsdb-server; ovs-vswitchd applies it meanwhile)
  absl::Duration link;   // veth deleted (the kernel unregisters both ends)
  absl::Duration flows;  // waiting for the flow deletion + conntrack flush still in flight
};

class PortManager {
 public:
  // `watcher` is a second OpenFlow connection for the background flow count, so RPCs never queue
  // behind it; null means `openflow` serves both (tests).
  PortManager(NetdSettings settings, std::unique_ptr<OvsDatabase> database,
              std::unique_ptr<OpenFlowSwitch> openflow, std::unique_ptr<OpenFlowSwitch> watcher,
              std::unique_ptr<WorkloadLinks> links, std::unique_ptr<HostStackGuard> guard,
              std::shared_ptr<AuditSink> audit);
  ~PortManager();  // stops the background thread
  PortManager(const PortManager&) = delete;
  PortManager& operator=(const PortManager&) = delete;

  // Starts the thread that reconciles at once and then watches for drift every
  // flow_check_interval (ovs-vswitchd restarts, ports vanishing or failing), and the node stack
  // guard's own watcher.
  void StartBackground();

  // Called whenever netd's ability to serve changes: serving=false while the node stack guard
  // cannot be put in place (then AllocatePort is refused and every port is DEGRADED), with why.
  void SetServingObserver(std::function<void(bool serving, const std::string& reason)> observer);

  // Prometheus text: per-port drop counters by reason, the node stack guard's drops, state and
  // repairs. From a snapshot the background thread refreshes (never blocks on OVS).
  std::string RenderMetrics() const;

  absl::StatusOr<AllocateResult> Allocate(const AllocateRequest& request, AllocateTimings* timings = nullptr);
  // Replaces the whole policy atomically. expected_generation 0 means any.
  absl::StatusOr<PortStatus> UpdatePolicy(const std::string& workload_id, const Policy& policy,
                                          uint64_t expected_generation);
  // The port as it was before removal, or nullopt if there was none.
  absl::StatusOr<std::optional<PortStatus>> Release(const std::string& workload_id,
                                                    uint64_t expected_generation,
                                                    ReleaseTimings* timings = nullptr);
  absl::StatusOr<PortStatus> Get(const std::string& workload_id);
  // Every port netd owns, ordered by workload id.
  absl::StatusOr<std::vector<PortStatus>> List();

  // Full reconcile: fail_mode, broken and vanished ports, orphan veths, then the whole flow
  // table replaced in one bundle. Exposed for tests and the benchmark.
  absl::Status Reconcile();
  // One iteration of the background watcher. Exposed for tests.
  absl::Status CheckOnce();
  // Refreshes the metrics snapshot (the background thread does it every few checks). Exposed for tests.
  void RefreshMetrics();

  // How many full reconciles have pushed the flow table (tests observe restarts with it).
  uint64_t full_pushes() const;

 private:
  // A parsed bridge port row.
  struct CachedPort {
    std::string uuid;
    unsigned int seqno = 0;
    bool owned = false;
    absl::StatusOr<PortRecord> record = absl::UnknownError("not decoded");  // owned ports only
    std::optional<Ipv4> recorded_address;  // owned ports, even with a damaged record
    size_t interface_count = 0;
    int64_t ofport = 0;
    int64_t ofport_request = 0;
    std::optional<std::string> interface_error;
  };
  // What netd installed for one port in the switch.
  struct PushedFlows {
    int64_t ofport = 0;
    size_t flow_count = 0;
  };

  absl::Status RefreshLocked();
  // Where workload traffic leaves the bridge, as the flows need it.
  UplinkSpec UplinkLocked() const;
  // Checks the node stack guard (cheap unless something changed) and records the outcome.
  absl::Status EnsureHostGuard();
  void NoteHostGuard(const absl::StatusOr<std::string>& result);
  // Every workload's drop counters (by cookie; every reason present) from a flow-statistics reply.
  static std::map<uint64_t, std::vector<DropCount>> DropCountsByCookie(
      const std::vector<OpenFlowSwitch::FlowCounters>& flows);
  absl::StatusOr<AllocateResult> AllocateLocked(const AllocateRequest& request, AllocateTimings* timings);
  absl::Status InstallWorkloadFlowsLocked(const PortRecord& record, int64_t ofport, bool flush_conntrack);
  // The workload's flows for `ofport` (the first mod deletes its cookie: replace semantics).
  std::vector<OpenFlowSwitch::FlowMod> WorkloadFlowModsLocked(const PortRecord& record, int64_t ofport) const;
  // The next free number of netd's ofport range after the last one requested, or 0 if none is free.
  int64_t PickOfportLocked() const;
  absl::Status ReconcileLocked();
  // Why the installed flows no longer match the records (uplink or an ofport changed), or "".
  std::string RecordDriftLocked() const;
  // fail_mode, vanished ports, broken ports; given the veths netd owns (`links` OK) also ports
  // whose veth is gone, orphan veths and veths whose per-device guards are off.
  void RepairPortsLocked(const absl::StatusOr<WorkloadLinks::OwnedLinks>& links);
  // The host-side veths netd created (logged on failure). Takes no lock.
  absl::StatusOr<WorkloadLinks::OwnedLinks> ListOwnedLinks();
  // Replaces the switch's whole flow table with what the records say, in one bundle.
  absl::Status PushFlowTableLocked();
  // Removes an owned port netd found broken, with everything attached to it.
  void RemoveBrokenPortLocked(const std::string& port_name, const std::string& reason);
  // Cleans up after an owned port whose row disappeared without netd releasing it.
  void CleanUpVanishedLocked(const CachedPort& port, const std::string& port_name);
  // Deletes one workload's flows and conntrack zone (best effort; a full push covers failures).
  void DeleteFlowsLocked(const std::string& port_name, uint64_t cookie, int64_t ofport);
  std::optional<std::string> BrokenReason(const CachedPort& port) const;
  PortStatus StatusOf(const CachedPort& port) const;
  const CachedPort* FindWorkloadLocked(const std::string& workload_id) const;
  uint64_t ExpectedFlowCountLocked() const;
  void Audit(const std::string& action, const std::string& object, const std::string& detail);
  void BackgroundLoop();

  const NetdSettings settings_;
  const std::unique_ptr<OvsDatabase> database_;
  const std::unique_ptr<OpenFlowSwitch> openflow_;
  const std::unique_ptr<OpenFlowSwitch> watcher_owned_;  // the watcher's own connection, if given
  OpenFlowSwitch* const watcher_;                        // watcher_owned_ or openflow_
  const std::unique_ptr<WorkloadLinks> links_;
  const std::unique_ptr<HostStackGuard> guard_;
  const std::shared_ptr<AuditSink> audit_;

  mutable std::mutex mu_;  // serialises everything below and every backend call
  bool cache_loaded_ = false;
  unsigned int cache_seqno_ = 0;
  std::map<std::string, CachedPort> ports_;         // every port of the bridge, by name
  std::map<std::string, std::string> by_workload_;  // workload id -> port name (owned, readable)
  std::string bridge_fail_mode_;                    // as last read
  uint64_t generation_counter_ = 0;                 // the bridge's counter (or the highest seen)
  Ipv4 last_address_ = 0;                           // where round-robin IPAM resumes (bridge record)
  int64_t last_ofport_ = 0;                         // where the ofport round robin resumes (bridge record)
  int64_t uplink_ofport_ = 0;                       // 0 while the uplink is missing
  std::vector<std::pair<std::string, CachedPort>> vanished_;  // owned rows gone behind netd's back

  bool flows_in_sync_ = false;                 // a full push happened and nothing was lost since
  std::map<std::string, PushedFlows> pushed_;  // port name -> its installed flows (cleared when lost)
  int64_t pushed_uplink_ofport_ = 0;           // the uplink ofport the installed flows use
  std::string flow_problem_;                   // why flows may be missing; shown in DEGRADED ports
  uint64_t full_pushes_ = 0;                   // full flow-table pushes so far
  uint64_t flow_epoch_ = 0;                 // bumped by every flow change netd makes (CheckOnce compares it)
  std::atomic<unsigned int> checks_{0};     // watcher iterations, to space out veth listings (no lock needed)
  std::atomic<uint64_t> port_epoch_{0};     // bumped as a port creation/deletion starts and ends (CheckOnce)
  std::set<std::string> reported_damaged_;  // damaged records already logged (log once)
  std::map<std::string, absl::Time> broken_since_;  // owned port -> when it was first seen broken

  mutable std::mutex guard_mu_;        // guards the node stack guard's state below (taken after mu_)
  std::optional<std::string> guard_problem_;  // why the guard is not in place; nullopt before the first check
  uint64_t guard_repairs_ = 0;         // times the guard was found broken and put back
  std::function<void(bool, const std::string&)> serving_observer_;  // SetServingObserver's

  // What /metrics shows, refreshed by RefreshMetrics.
  struct MetricsSnapshot {
    std::vector<std::pair<std::string, std::vector<DropCount>>> ports;  // workload id, its drops
    std::vector<HostStackGuard::ChainCounters> guard_chains;
  };
  mutable std::mutex metrics_mu_;  // guards metrics_
  MetricsSnapshot metrics_;        // the last snapshot

  std::mutex stop_mu_;               // guards stop_
  std::condition_variable stop_cv_;  // wakes the background thread for shutdown
  bool stop_ = false;                // set by the destructor
  std::thread background_;           // runs BackgroundLoop after StartBackground
};

}  // namespace strongroom::netd
