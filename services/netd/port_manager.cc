// PortManager's RPC-facing operations. Reconcile and the background watcher are in
// port_reconcile.cc.
#include "services/netd/port_manager.h"

#include <algorithm>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/log.h"
#include "common/status.h"
#include "services/netd/flow_plan.h"

namespace strongroom::netd {
namespace {

using Command = OpenFlowSwitch::FlowMod::Command;

// How long an RPC waits for a first OVSDB snapshot before answering UNAVAILABLE.
constexpr absl::Duration kSyncTimeout = absl::Seconds(2);

// Bumps an epoch when a port change starts and again when it ends (however it ends), so a
// reader that saw the same value before and after its own unlocked work knows no change overlapped it.
class EpochBump {
 public:
  explicit EpochBump(std::atomic<uint64_t>& epoch) : epoch_(epoch) { ++epoch_; }
  ~EpochBump() { ++epoch_; }
  EpochBump(const EpochBump&) = delete;
  EpochBump& operator=(const EpochBump&) = delete;

 private:
  std::atomic<uint64_t>& epoch_;  // PortManager::port_epoch_
};

bool SameRequest(const PortRecord& record, const AllocateRequest& request) {
  return record.tap == request.tap && record.netns == request.netns &&
         record.interface_name == request.interface_name &&
         record.owner_label == request.owner_label && record.policy == request.policy;
}

}  // namespace

PortManager::PortManager(NetdSettings settings, std::unique_ptr<OvsDatabase> database,
                         std::unique_ptr<OpenFlowSwitch> openflow, std::unique_ptr<OpenFlowSwitch> watcher,
                         std::unique_ptr<WorkloadLinks> links, std::unique_ptr<HostStackGuard> guard,
                         std::shared_ptr<AuditSink> audit)
    : settings_(std::move(settings)),
      database_(std::move(database)),
      openflow_(std::move(openflow)),
      watcher_owned_(std::move(watcher)),
      watcher_(watcher_owned_ ? watcher_owned_.get() : openflow_.get()),
      links_(std::move(links)),
      guard_(std::move(guard)),
      audit_(std::move(audit)) {}

PortManager::~PortManager() {
  {
    std::lock_guard<std::mutex> lock(stop_mu_);
    stop_ = true;
  }
  stop_cv_.notify_all();
  if (background_.joinable()) background_.join();
}

uint64_t PortManager::full_pushes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return full_pushes_;
}

absl::Status PortManager::RefreshLocked() {
  SR_RETURN_IF_ERROR(database_->Sync(std::min(kSyncTimeout, settings_.ovs_timeout)));
  if (cache_loaded_ && database_->Seqno() == cache_seqno_) return absl::OkStatus();
  const unsigned int seqno = database_->Seqno();

  OvsDatabase::BridgeRow bridge;
  std::map<std::string, CachedPort> fresh;
  absl::Status read = database_->ReadBridge(settings_.bridge, &bridge, [&](const OvsDatabase::PortRow& row) {
    const std::string name(row.name);
    auto old = ports_.find(name);
    if (old != ports_.end() && old->second.uuid == row.uuid && old->second.seqno == row.seqno) {
      fresh.emplace(name, std::move(old->second));
      return;
    }
    CachedPort port;
    port.uuid = std::string(row.uuid);
    port.seqno = row.seqno;
    port.interface_count = row.interface_count;
    port.ofport = row.ofport;
    port.ofport_request = row.ofport_request;
    if (row.interface_error) port.interface_error = std::string(*row.interface_error);
    ExternalIds ids;
    for (const auto& [key, value] : *row.external_ids) ids.emplace(key, value);
    port.owned = IsOwnedByNetd(ids);
    if (port.owned) {
      port.record = DecodePortExternalIds(name, ids);
      if (absl::StatusOr<Ipv4> address = RecordedAddress(ids); address.ok()) port.recorded_address = *address;
    }
    fresh.emplace(name, std::move(port));
  });
  if (absl::IsNotFound(read)) {
    return absl::FailedPreconditionError(
        absl::StrCat("bridge ", settings_.bridge, " does not exist in OVSDB (", settings_.ovsdb_remote,
                     "); deployment must create it with its uplink port ", settings_.uplink_port));
  }
  SR_RETURN_IF_ERROR(read);

  // Owned rows that disappeared without netd releasing them (Release drops its own first).
  for (auto& [name, port] : ports_) {
    if (port.owned && fresh.find(name) == fresh.end()) vanished_.emplace_back(name, std::move(port));
  }
  ports_ = std::move(fresh);
  by_workload_.clear();
  uint64_t highest = 0;
  if (auto it = bridge.external_ids.find(kGenerationCounterKey); it != bridge.external_ids.end()) {
    (void)absl::SimpleAtoi(it->second, &highest);
  }
  for (const auto& [name, port] : ports_) {
    if (!port.owned || !port.record.ok()) continue;
    highest = std::max(highest, port.record->generation);
    auto [it, inserted] = by_workload_.emplace(port.record->workload_id, name);
    if (!inserted) {
      // Never written by netd; keep the newer allocation visible and say so.
      Log(LogLevel::kWarn, "two ports claim one workload",
          {{"workload", port.record->workload_id}, {"port", name}, {"other_port", it->second}});
      if (ports_.at(it->second).record->generation < port.record->generation) it->second = name;
    }
  }
  generation_counter_ = highest;
  last_address_ = 0;
  if (auto it = bridge.external_ids.find(kLastAddressKey); it != bridge.external_ids.end()) {
    if (absl::StatusOr<Ipv4> last = ParseIpv4(it->second); last.ok()) last_address_ = *last;
  }
  last_ofport_ = 0;
  if (auto it = bridge.external_ids.find(kLastOfportKey); it != bridge.external_ids.end()) {
    (void)absl::SimpleAtoi(it->second, &last_ofport_);
  }
  bridge_fail_mode_ = bridge.fail_mode;
  auto uplink = ports_.find(settings_.uplink_port);
  uplink_ofport_ = uplink != ports_.end() && uplink->second.ofport > 0 ? uplink->second.ofport : 0;
  cache_seqno_ = seqno;
  cache_loaded_ = true;
  return absl::OkStatus();
}

const PortManager::CachedPort* PortManager::FindWorkloadLocked(const std::string& workload_id) const {
  auto it = by_workload_.find(workload_id);
  if (it == by_workload_.end()) return nullptr;
  return &ports_.at(it->second);
}

UplinkSpec PortManager::UplinkLocked() const {
  return {uplink_ofport_, settings_.pool.gateway(), settings_.gateway_mac};
}

PortStatus PortManager::StatusOf(const CachedPort& port) const {
  PortStatus status;
  status.record = *port.record;
  status.ofport = port.ofport;
  std::optional<std::string> guard_problem;
  {
    std::lock_guard<std::mutex> lock(guard_mu_);
    guard_problem = guard_problem_.value_or("not checked yet");
  }
  if (!guard_problem->empty()) {
    status.status_message = absl::StrCat("the node stack guard is not in place: ", *guard_problem);
  } else if (std::optional<std::string> broken = BrokenReason(port)) {
    status.status_message = *broken;
  } else if (port.ofport == 0) {
    status.status_message = "waiting for ovs-vswitchd to assign an OpenFlow port";
  } else if (uplink_ofport_ <= 0) {
    status.status_message =
        absl::StrCat("uplink port ", settings_.uplink_port, " is missing; traffic is dropped");
  } else if (auto pushed = pushed_.find(port.record->port_name);
             pushed == pushed_.end() || pushed->second.ofport != port.ofport) {
    status.status_message = absl::StrCat("flows not installed (traffic is dropped): ",
                                         flow_problem_.empty() ? "reconcile pending" : flow_problem_);
  }
  status.ready = status.status_message.empty();
  return status;
}

std::optional<std::string> PortManager::BrokenReason(const CachedPort& port) const {
  if (port.interface_count == 0) return std::string("the port has no interface");
  if (port.interface_error) return absl::StrCat("interface error: ", *port.interface_error);
  if (port.ofport < 0) return std::string("ovs-vswitchd could not attach the interface");
  return std::nullopt;
}

uint64_t PortManager::ExpectedFlowCountLocked() const {
  uint64_t count = BaseFlows().size();
  for (const auto& [name, pushed] : pushed_) count += pushed.flow_count;
  return count;
}

void PortManager::Audit(const std::string& action, const std::string& object, const std::string& detail) {
  Log(LogLevel::kWarn, action, {{"object", object}, {"detail", detail}});
  if (audit_) audit_->Record({"strongroom-netd", action, object, "OK", detail});
}

std::vector<OpenFlowSwitch::FlowMod> PortManager::WorkloadFlowModsLocked(const PortRecord& record,
                                                                         int64_t ofport) const {
  const uint16_t zone = static_cast<uint16_t>(ofport);
  std::vector<std::string> flows =
      WorkloadFlows(UplinkLocked(), {record.Cookie(), ofport, zone, record.address, record.mac}, record.policy);
  std::vector<OpenFlowSwitch::FlowMod> mods;
  mods.reserve(flows.size() + 1);
  // Replace semantics inside one atomic bundle: never a moment with both or neither policy.
  mods.push_back({Command::kDelete, MatchCookie(record.Cookie())});
  for (std::string& flow : flows) mods.push_back({Command::kAdd, std::move(flow)});
  return mods;
}

absl::Status PortManager::InstallWorkloadFlowsLocked(const PortRecord& record, int64_t ofport,
                                                     bool flush_conntrack) {
  const uint16_t zone = static_cast<uint16_t>(ofport);
  std::vector<OpenFlowSwitch::FlowMod> mods = WorkloadFlowModsLocked(record, ofport);
  ++flow_epoch_;
  // A new port's zone (its ofport) may hold entries of an earlier holder of that ofport.
  SR_RETURN_IF_ERROR(
      Annotate(openflow_->ApplyBundle(mods, flush_conntrack ? std::optional<uint16_t>(zone) : std::nullopt,
                                      settings_.ovs_timeout),
               "installing flows"));
  pushed_[record.port_name] = {ofport, mods.size() - 1};
  return absl::OkStatus();
}

int64_t PortManager::PickOfportLocked() const {
  std::set<int64_t> taken;
  for (const auto& [name, port] : ports_) {
    taken.insert(port.ofport);
    taken.insert(port.ofport_request);
  }
  constexpr int64_t kRange = kLastRequestedOfport - kFirstRequestedOfport + 1;
  const int64_t last = last_ofport_ >= kFirstRequestedOfport && last_ofport_ <= kLastRequestedOfport
                           ? last_ofport_
                           : kLastRequestedOfport;
  for (int64_t step = 1; step <= kRange; ++step) {
    const int64_t candidate = kFirstRequestedOfport + (last - kFirstRequestedOfport + step) % kRange;
    if (taken.count(candidate) == 0) return candidate;
  }
  return 0;
}

absl::StatusOr<AllocateResult> PortManager::Allocate(const AllocateRequest& request,
                                                     AllocateTimings* timings) {
  std::lock_guard<std::mutex> lock(mu_);
  return AllocateLocked(request, timings);
}

absl::StatusOr<AllocateResult> PortManager::AllocateLocked(const AllocateRequest& request,
                                                           AllocateTimings* timings) {
  SR_RETURN_IF_ERROR(RefreshLocked());
  if (const CachedPort* existing = FindWorkloadLocked(request.workload_id)) {
    if (!SameRequest(*existing->record, request)) {
      return absl::AlreadyExistsError(absl::StrCat("workload ", request.workload_id, " already has port ",
                                                   existing->record->port_name,
                                                   " allocated with a different target, netns, interface, owner or "
                                                   "policy; use UpdateEgress to change the policy"));
    }
    return AllocateResult{StatusOf(*existing), false};
  }
  const std::string port_name = PortNameForWorkload(request.workload_id);
  if (auto taken = ports_.find(port_name); taken != ports_.end()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "port name ", port_name, " (derived from the workload id) is already on bridge ", settings_.bridge,
        taken->second.owned ? " with a damaged netd record" : " and is not netd's"));
  }
  const size_t owned =
      std::count_if(ports_.begin(), ports_.end(), [](const auto& p) { return p.second.owned; });
  if (owned >= settings_.max_ports) {
    return absl::ResourceExhaustedError(
        absl::StrCat("netd already holds ", owned, " ports, the configured max_ports"));
  }
  if (uplink_ofport_ <= 0) {
    return absl::FailedPreconditionError(absl::StrCat("uplink port ", settings_.uplink_port,
                                                      " is not on bridge ", settings_.bridge,
                                                      " or has no OpenFlow port"));
  }
  if (!request.tap) SR_RETURN_IF_ERROR(links_->CheckNetns(request.netns));
  // The node's own stack must never see this port's frames: refused unless the guard is in place.
  SR_RETURN_IF_ERROR(EnsureHostGuard());
  std::set<Ipv4> in_use;
  for (const auto& [name, port] : ports_) {
    if (port.recorded_address) in_use.insert(*port.recorded_address);
  }
  SR_ASSIGN_OR_RETURN(const Ipv4 address, settings_.pool.Pick(in_use, last_address_));
  if (generation_counter_ >= kMaxGeneration) return absl::InternalError("generation counter exhausted");

  PortRecord record;
  record.workload_id = request.workload_id;
  record.port_name = port_name;
  record.tap = request.tap;
  record.netns = request.netns;
  record.interface_name = request.interface_name;
  record.address = address;
  record.prefix_length = settings_.pool.subnet().prefix_length;
  record.gateway = settings_.pool.gateway();
  record.mac = MacForIpv4(address);
  record.mtu = settings_.mtu;
  record.generation = generation_counter_ + 1;
  record.owner_label = request.owner_label;
  record.requested_by = request.requested_by;
  record.policy_revision = 1;
  record.policy = request.policy;
  record.created_time = record.updated_time = absl::Now();

  // The flows go out first, for an ofport netd picks itself (Interface.ofport_request), and
  // ovs-vswitchd applies them while the veth and the port are being made: a busy ovs-vswitchd
  // serves each request in a main-loop iteration of its own, and at 1,000 ports one iteration
  // costs it up to a few hundred milliseconds (docs/PERFORMANCE.md), so overlapping them is what
  // keeps allocation fast. Sending them
  // unconfirmed (one round trip) is safe here: every flow of a new workload only permits traffic,
  // and any failure below deletes them by cookie. Without a free number in netd's range (more
  // than 32,512 ports), ovs-vswitchd picks the number and the flows follow the port.
  const int64_t requested_ofport = PickOfportLocked();
  absl::Time start = absl::Now();
  const EpochBump port_change(port_epoch_);
  bool flows_sent = false;
  size_t sent_flow_count = 0;
  if (requested_ofport > 0) {
    ++flow_epoch_;
    const uint16_t zone = static_cast<uint16_t>(requested_ofport);
    std::vector<OpenFlowSwitch::FlowMod> mods = WorkloadFlowModsLocked(record, requested_ofport);
    sent_flow_count = mods.size() - 1;  // the first deletes the cookie
    // The zone may hold entries of an earlier holder of that number: flushed first.
    SR_RETURN_IF_ERROR(
        Annotate(openflow_->SendBundle(mods, zone, std::nullopt, settings_.ovs_timeout), "sending flows"));
    flows_sent = true;
  }
  // Waits for the flows in flight, once; their outcome is kept for the caller.
  absl::Status flows_outcome;
  auto await_flows = [&]() {
    if (!flows_sent) return;
    flows_sent = false;
    flows_outcome = Annotate(openflow_->AwaitBundle(settings_.ovs_timeout), "installing flows");
  };
  // Undo in reverse order; each step is best effort and reconcile repeats whatever fails here.
  auto undo = [&](const absl::Status& cause, bool port_added, std::optional<int64_t> flows_ofport) {
    await_flows();
    if (port_added) {
      bool ignored = false;
      if (absl::Status s = database_->DeletePort(settings_.bridge, port_name, /*wait_applied=*/true,
                                                 settings_.ovs_timeout, &ignored);
          !s.ok() && !absl::IsNotFound(s)) {
        Log(LogLevel::kWarn, "rollback: cannot delete port", {{"port", port_name}, {"error", s.ToString()}});
      }
    }
    if (flows_ofport) DeleteFlowsLocked(port_name, record.Cookie(), *flows_ofport);
    if (absl::Status s = links_->Delete(port_name); !s.ok()) {
      Log(LogLevel::kWarn, "rollback: cannot delete veth", {{"port", port_name}, {"error", s.ToString()}});
    }
    pushed_.erase(port_name);
    return Annotate(cause, absl::StrCat("allocating port ", port_name, " (rolled back)"));
  };
  const std::optional<int64_t> sent_for =
      requested_ofport > 0 ? std::optional<int64_t>(requested_ofport) : std::nullopt;

  if (absl::Status link_status =
          links_->Create({port_name, record.netns, record.interface_name, record.mac, record.address,
                          record.prefix_length, record.gateway, record.mtu, record.workload_id, record.tap},
                         settings_.ovs_timeout);
      !link_status.ok()) {
    if (sent_for) (void)undo(link_status, false, sent_for);
    return link_status;  // the veth step's own error, as before: nothing of it is left
  }
  absl::Time linked = absl::Now();

  bool committed = false;
  ExternalIds bridge_ids = {{kGenerationCounterKey, absl::StrCat(record.generation)},
                            {kLastAddressKey, FormatIpv4(address)}};
  if (requested_ofport > 0) bridge_ids[kLastOfportKey] = absl::StrCat(requested_ofport);
  absl::StatusOr<int64_t> ofport =
      database_->AddPort({settings_.bridge, port_name, EncodePortExternalIds(record),
                          EncodeInterfaceExternalIds(record), std::move(bridge_ids), requested_ofport},
                         settings_.ovs_timeout, &committed);
  if (committed) {
    generation_counter_ = record.generation;
    last_address_ = address;
    if (requested_ofport > 0) last_ofport_ = requested_ofport;
  }
  if (!ofport.ok()) return undo(ofport.status(), committed, sent_for);
  absl::Time added = absl::Now();

  await_flows();
  if (!flows_outcome.ok()) return undo(flows_outcome, true, sent_for);
  if (requested_ofport > 0 && *ofport == requested_ofport) {
    // Traffic flows only once ovs-vswitchd's packet translation knows the port, an iteration
    // after it applied it; a barrier is handled after that (the fallback below has its own
    // round trips after the port).
    if (absl::Status barrier =
            Annotate(openflow_->Barrier(settings_.ovs_timeout), "waiting for ovs-vswitchd");
        !barrier.ok()) {
      return undo(barrier, true, sent_for);
    }
    pushed_[port_name] = {*ofport, sent_flow_count};
  } else {
    // ovs-vswitchd chose the number (none was requested, or someone took it meanwhile): the
    // flows follow the port, replacing any sent for the requested number.
    if (absl::Status flows = InstallWorkloadFlowsLocked(record, *ofport, /*flush_conntrack=*/true);
        !flows.ok()) {
      return undo(flows, true, sent_for.value_or(*ofport));
    }
    if (sent_for) {
      Log(LogLevel::kWarn, "ovs-vswitchd did not honour the requested OpenFlow port",
          {{"port", port_name},
           {"requested", absl::StrCat(requested_ofport)},
           {"assigned", absl::StrCat(*ofport)}});
    }
  }
  absl::Time done = absl::Now();
  if (timings) *timings = {linked - start, added - linked, done - added};

  // Cache it now; the next refresh re-reads the row (its uuid is unknown here) and keeps it.
  CachedPort cached;
  cached.owned = true;
  cached.record = record;
  cached.recorded_address = address;
  cached.interface_count = 1;
  cached.ofport = *ofport;
  cached.ofport_request = requested_ofport;
  ports_[port_name] = std::move(cached);
  by_workload_[record.workload_id] = port_name;
  return AllocateResult{StatusOf(ports_.at(port_name)), true};
}

absl::StatusOr<PortStatus> PortManager::UpdatePolicy(const std::string& workload_id, const Policy& policy,
                                                     uint64_t expected_generation) {
  std::lock_guard<std::mutex> lock(mu_);
  SR_RETURN_IF_ERROR(RefreshLocked());
  const CachedPort* port = FindWorkloadLocked(workload_id);
  if (port == nullptr) return absl::NotFoundError(absl::StrCat("workload ", workload_id, " has no port"));
  const PortRecord old = *port->record;
  if (expected_generation != 0 && expected_generation != old.generation) {
    return absl::FailedPreconditionError(absl::StrCat("workload ", workload_id, " has generation ",
                                                      old.generation, ", not the expected ",
                                                      expected_generation));
  }
  PortRecord updated = old;
  updated.policy = policy;
  updated.policy_revision = old.policy_revision + 1;
  updated.updated_time = absl::Now();

  // OVSDB first: it is the record reconcile re-derives flows from, so a crash between the two
  // steps converges on the new policy rather than silently reverting it.
  SR_RETURN_IF_ERROR(Annotate(database_->UpdatePortExternalIds(
                                  old.port_name, EncodePolicyExternalIds(updated), settings_.ovs_timeout),
                              "recording the new policy"));
  if (!BrokenReason(*port) && port->ofport > 0 && uplink_ofport_ > 0) {
    if (absl::Status flows = InstallWorkloadFlowsLocked(updated, port->ofport, false); !flows.ok()) {
      if (absl::Status restore = database_->UpdatePortExternalIds(old.port_name, EncodePolicyExternalIds(old),
                                                                  settings_.ovs_timeout);
          !restore.ok()) {
        // The new policy stays recorded; reconcile installs it once the switch answers again.
        flows_in_sync_ = false;
        Log(LogLevel::kError, "cannot restore the old policy record",
            {{"workload", workload_id}, {"error", restore.ToString()}});
      }
      return flows;
    }
  }
  CachedPort& cached = ports_.at(old.port_name);
  cached.record = updated;
  return StatusOf(cached);
}

absl::StatusOr<std::optional<PortStatus>> PortManager::Release(const std::string& workload_id,
                                                               uint64_t expected_generation,
                                                               ReleaseTimings* timings) {
  std::lock_guard<std::mutex> lock(mu_);
  SR_RETURN_IF_ERROR(RefreshLocked());
  const CachedPort* port = FindWorkloadLocked(workload_id);
  if (port == nullptr) return std::optional<PortStatus>();
  PortStatus before = StatusOf(*port);
  const PortRecord& record = before.record;
  if (expected_generation != 0 && expected_generation != record.generation) {
    return absl::FailedPreconditionError(absl::StrCat("workload ", workload_id, " has generation ",
                                                      record.generation, ", not the expected ",
                                                      expected_generation, " (it was re-allocated since)"));
  }
  const absl::Time start = absl::Now();
  const EpochBump port_change(port_epoch_);
  bool committed = false;
  // Not waiting for ovs-vswitchd to apply the removal: the row is the record, and once it is gone
  // the port is released. ovs-vswitchd removes it meanwhile, as it deletes the flows below.
  absl::Status deleted = database_->DeletePort(settings_.bridge, record.port_name, /*wait_applied=*/false,
                                               settings_.ovs_timeout, &committed);
  if (!deleted.ok() && !committed && !absl::IsNotFound(deleted)) {
    return Annotate(deleted, absl::StrCat("releasing port ", record.port_name));
  }
  const absl::Time port_deleted = absl::Now();
  // The record is gone, so the address is free. What follows is cleanup: a failure is logged and
  // left to reconcile (orphan veths are swept, stray flows replaced), never reported as "not
  // released", since a retry would find nothing to release.
  const int64_t ofport = port->ofport;
  ports_.erase(record.port_name);
  by_workload_.erase(workload_id);
  pushed_.erase(record.port_name);
  ++flow_epoch_;
  // One exchange, in flight while the kernel deletes the veth: the flows by cookie (an ordered
  // bundle of one delete, so unconfirmed is as safe as confirmed), then the conntrack zone,
  // which no flow can fill again by then.
  absl::Status flows = openflow_->SendBundle(
      {{OpenFlowSwitch::FlowMod::Command::kDelete, MatchCookie(record.Cookie())}}, std::nullopt,
      ofport > 0 ? std::optional<uint16_t>(static_cast<uint16_t>(ofport)) : std::nullopt,
      settings_.ovs_timeout);
  const bool flows_sent = flows.ok();
  if (absl::Status s = links_->Delete(record.port_name); !s.ok()) {
    Log(LogLevel::kWarn, "release: cannot delete veth", {{"workload", workload_id}, {"error", s.ToString()}});
  }
  const absl::Time link_deleted = absl::Now();
  if (flows_sent) flows = openflow_->AwaitBundle(settings_.ovs_timeout);
  if (!flows.ok()) {
    flows_in_sync_ = false;
    Log(LogLevel::kWarn, "release: cannot delete flows or flush conntrack",
        {{"workload", workload_id}, {"error", flows.ToString()}});
  }
  if (timings) *timings = {port_deleted - start, link_deleted - port_deleted, absl::Now() - link_deleted};
  return std::optional<PortStatus>(std::move(before));
}

absl::StatusOr<PortStatus> PortManager::Get(const std::string& workload_id) {
  std::lock_guard<std::mutex> lock(mu_);
  SR_RETURN_IF_ERROR(RefreshLocked());
  const CachedPort* port = FindWorkloadLocked(workload_id);
  if (port == nullptr) return absl::NotFoundError(absl::StrCat("workload ", workload_id, " has no port"));
  PortStatus status = StatusOf(*port);
  const uint64_t cookie = status.record.Cookie();
  if (absl::StatusOr<std::vector<OpenFlowSwitch::FlowCounters>> flows =
          openflow_->FlowStatistics(cookie, ~uint64_t{0}, settings_.ovs_timeout);
      flows.ok()) {
    status.drops = std::move(DropCountsByCookie(*flows)[cookie]);
  } else {
    Log(LogLevel::kWarn, "cannot read drop counters", {{"workload", workload_id}, {"error", flows.status().ToString()}});
  }
  return status;
}

absl::StatusOr<std::vector<PortStatus>> PortManager::List() {
  std::lock_guard<std::mutex> lock(mu_);
  SR_RETURN_IF_ERROR(RefreshLocked());
  std::vector<PortStatus> ports;
  ports.reserve(by_workload_.size());
  for (const auto& [workload, name] : by_workload_) ports.push_back(StatusOf(ports_.at(name)));
  // One request for every netd flow, not one per port.
  if (absl::StatusOr<std::vector<OpenFlowSwitch::FlowCounters>> flows =
          openflow_->FlowStatistics(kCookieTag, kCookieTagMask, settings_.ovs_timeout);
      flows.ok()) {
    std::map<uint64_t, std::vector<DropCount>> drops = DropCountsByCookie(*flows);
    for (PortStatus& port : ports) port.drops = std::move(drops[port.record.Cookie()]);
  } else {
    Log(LogLevel::kWarn, "cannot read drop counters", {{"error", flows.status().ToString()}});
  }
  return ports;
}

}  // namespace strongroom::netd
