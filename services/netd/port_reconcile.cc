// PortManager's reconcile: make the bridge match OVSDB's records again, and the background
// watcher that decides when.
//
// Drift netd repairs:
//   - ovs-vswitchd restarted: its flow table is empty although nothing changed in OVSDB. Found by
//     counting netd's flows (one aggregate request per flow_check_interval): a count different
//     from what netd installed, or no answer, means the table must be pushed again.
//   - an owned port whose interface is gone or in error (e.g. the workload's netns was deleted,
//     which destroys the veth pair): the port, its flows and conntrack zone are removed. An error
//     while the veth still exists must persist kBrokenGrace first (ovs-vswitchd restarts).
//   - an owned port row deleted behind netd's back: its record is gone, and OVSDB is the record,
//     so the allocation is over: the veth (and the workload's interface with it), flows and
//     conntrack zone are removed and the address becomes free.
//   - a veth netd created that no port records (a crash between veth and OVSDB): deleted.
//   - fail_mode other than secure: set back to secure.
// Ports netd does not own are never modified or deleted. Flows are another matter: netd owns
// the bridge's whole flow table, so a full push replaces everything in it.
#include <algorithm>
#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/status.h"
#include "services/netd/flow_plan.h"
#include "services/netd/port_manager.h"

namespace strongroom::netd {
namespace {

using Command = OpenFlowSwitch::FlowMod::Command;

// Checking that every owned veth still exists costs a netlink dump; every this many watcher
// iterations is enough (interface errors from ovs-vswitchd usually say it first).
constexpr unsigned int kLinkCheckEvery = 5;
// An interface error while its veth still exists is removed only if it persists this long:
// ovs-vswitchd reports transient errors while it restarts, and removing a healthy workload's
// port for one would cut it off for good.
constexpr absl::Duration kBrokenGrace = absl::Seconds(5);
// The metrics snapshot (one flow-statistics request and the guard's counters) every this many
// watcher iterations: about a second at the default interval.
constexpr unsigned int kMetricsEvery = 5;

}  // namespace

absl::Status PortManager::Reconcile() {
  std::lock_guard<std::mutex> lock(mu_);
  return ReconcileLocked();
}

void PortManager::DeleteFlowsLocked(const std::string& port_name, uint64_t cookie, int64_t ofport) {
  ++flow_epoch_;
  if (absl::Status s = openflow_->ApplyBundle({{Command::kDelete, MatchCookie(cookie)}}, std::nullopt,
                                              settings_.ovs_timeout);
      !s.ok()) {
    flows_in_sync_ = false;  // a later full push replaces them
  }
  if (ofport > 0) (void)openflow_->FlushConntrackZone(static_cast<uint16_t>(ofport), settings_.ovs_timeout);
  pushed_.erase(port_name);
}

void PortManager::RemoveBrokenPortLocked(const std::string& port_name, const std::string& reason) {
  const CachedPort port = ports_.at(port_name);
  const std::string object = absl::StrCat("port/", port.record.ok() ? port.record->workload_id : port_name);
  bool committed = false;
  absl::Status deleted = database_->DeletePort(settings_.bridge, port_name, /*wait_applied=*/true,
                                               settings_.ovs_timeout, &committed);
  if (!deleted.ok() && !committed && !absl::IsNotFound(deleted)) {
    Log(LogLevel::kWarn, "reconcile: cannot remove broken port",
        {{"port", port_name}, {"reason", reason}, {"error", deleted.ToString()}});
    return;
  }
  if (port.record.ok()) {
    by_workload_.erase(port.record->workload_id);
    DeleteFlowsLocked(port_name, port.record->Cookie(), port.ofport);
  }
  if (absl::Status s = links_->Delete(port_name); !s.ok()) {
    Log(LogLevel::kWarn, "reconcile: cannot delete veth", {{"port", port_name}, {"error", s.ToString()}});
  }
  ports_.erase(port_name);
  broken_since_.erase(port_name);
  Audit("netd.reconcile.remove_broken_port", object, absl::StrCat(port_name, ": ", reason));
}

void PortManager::CleanUpVanishedLocked(const CachedPort& port, const std::string& port_name) {
  const std::string object = absl::StrCat("port/", port.record.ok() ? port.record->workload_id : port_name);
  if (absl::Status s = links_->Delete(port_name); !s.ok()) {
    Log(LogLevel::kWarn, "reconcile: cannot delete veth", {{"port", port_name}, {"error", s.ToString()}});
  }
  if (port.record.ok()) DeleteFlowsLocked(port_name, port.record->Cookie(), port.ofport);
  broken_since_.erase(port_name);
  Audit("netd.reconcile.port_vanished", object,
        absl::StrCat(port_name,
                     " was deleted from OVSDB without ReleasePort; veth, flows and conntrack removed"));
}

void PortManager::RepairPortsLocked(const absl::StatusOr<WorkloadLinks::OwnedLinks>& links) {
  if (bridge_fail_mode_ != "secure") {
    if (absl::Status s = database_->SetFailMode(settings_.bridge, "secure", settings_.ovs_timeout); s.ok()) {
      Audit("netd.reconcile.fail_mode_secure", absl::StrCat("bridge/", settings_.bridge),
            absl::StrCat("fail_mode was \"", bridge_fail_mode_, "\"; set to secure"));
      bridge_fail_mode_ = "secure";
    } else {
      Log(LogLevel::kError, "reconcile: cannot set fail_mode=secure", {{"error", s.ToString()}});
    }
  }

  std::vector<std::pair<std::string, CachedPort>> vanished;
  vanished.swap(vanished_);
  for (const auto& [name, port] : vanished) CleanUpVanishedLocked(port, name);

  std::map<std::string, std::string> listed;  // veth name -> its exposure ("" if guarded)
  if (links.ok()) {
    for (const WorkloadLinks::OwnedLink& link : links->links) listed[link.name] = link.exposure;
  }
  // Whether a veth the listing lacks is really gone: an inconsistent listing (links came and
  // went meanwhile) may have skipped it, so it is looked up by name.
  auto veth_gone = [&](const std::string& name) {
    if (!links.ok() || listed.count(name) != 0) return false;
    if (links->complete) return true;
    absl::StatusOr<bool> exists = links_->Exists(name);
    return exists.ok() && !*exists;
  };

  const absl::Time now = absl::Now();
  std::vector<std::pair<std::string, std::string>> broken;  // port name, reason
  for (const auto& [name, port] : ports_) {
    if (!port.owned) continue;
    if (!port.record.ok()) {
      if (reported_damaged_.insert(name).second) {
        Log(LogLevel::kError,
            "owned port has a damaged record; its address stays reserved and it gets no flows",
            {{"port", name}, {"error", port.record.status().ToString()}});
      }
      continue;
    }
    if (veth_gone(name)) {
      broken.emplace_back(name, "its veth no longer exists");
    } else if (std::optional<std::string> reason = BrokenReason(port)) {
      auto [since, first] = broken_since_.emplace(name, now);
      if (first) Log(LogLevel::kWarn, "port is broken", {{"port", name}, {"reason", *reason}});
      if (now - since->second >= kBrokenGrace) broken.emplace_back(name, *reason);
    } else {
      broken_since_.erase(name);
    }
  }
  for (const auto& [name, reason] : broken) RemoveBrokenPortLocked(name, reason);

  // A veth whose per-device guards are off (its group changed, ARP, forwarding or IPv6 turned on,
  // an address added) gets them back; one that cannot is cut off rather than left exposed.
  for (const auto& [name, exposure] : listed) {
    if (exposure.empty() || ports_.count(name) == 0) continue;
    const CachedPort& port = ports_.at(name);
    const std::string object = absl::StrCat("port/", port.record.ok() ? port.record->workload_id : name);
    if (absl::Status isolated = links_->Isolate(name); isolated.ok()) {
      Audit("netd.reconcile.veth_guard_restored", object, absl::StrCat(name, ": ", exposure, "; restored"));
    } else if (port.owned) {
      RemoveBrokenPortLocked(name, absl::StrCat("the node's stack is exposed to it (", exposure,
                                                ") and that cannot be undone: ", isolated.message()));
    }
  }

  if (links.ok()) {
    for (const auto& [link, exposure] : listed) {
      if (ports_.count(link) != 0) continue;
      if (absl::Status s = links_->Delete(link); !s.ok()) {
        Log(LogLevel::kWarn, "reconcile: cannot delete orphan veth",
            {{"veth", link}, {"error", s.ToString()}});
        continue;
      }
      Audit("netd.reconcile.remove_orphan_veth", absl::StrCat("veth/", link),
            "a veth netd created has no port record (netd stopped mid-allocation, or its port was deleted)");
    }
  }
}

absl::Status PortManager::PushFlowTableLocked() {
  // The whole table in one atomic bundle: delete everything, add what the records say.
  std::vector<OpenFlowSwitch::FlowMod> mods;
  mods.push_back({Command::kDelete, ""});
  for (std::string& flow : BaseFlows()) mods.push_back({Command::kAdd, std::move(flow)});
  std::map<std::string, PushedFlows> pushed;
  if (uplink_ofport_ > 0) {
    for (const auto& [name, port] : ports_) {
      if (!port.owned || !port.record.ok() || port.ofport <= 0 || BrokenReason(port)) continue;
      const PortRecord& record = *port.record;
      std::vector<std::string> flows = WorkloadFlows(
          UplinkLocked(),
          {record.Cookie(), port.ofport, static_cast<uint16_t>(port.ofport), record.address, record.mac},
          record.policy);
      pushed[name] = {port.ofport, flows.size()};
      for (std::string& flow : flows) mods.push_back({Command::kAdd, std::move(flow)});
    }
  }
  ++flow_epoch_;
  if (absl::Status applied = openflow_->ApplyBundle(mods, std::nullopt, settings_.ovs_timeout);
      !applied.ok()) {
    flows_in_sync_ = false;
    pushed_.clear();
    flow_problem_ = std::string(applied.message());
    return Annotate(applied, "pushing the flow table");
  }
  pushed_ = std::move(pushed);
  pushed_uplink_ofport_ = uplink_ofport_;
  flows_in_sync_ = true;
  flow_problem_.clear();
  ++full_pushes_;
  Log(LogLevel::kInfo, "flow table pushed",
      {{"bridge", settings_.bridge},
       {"ports", absl::StrCat(pushed_.size())},
       {"flows", absl::StrCat(mods.size() - 1)}});
  return absl::OkStatus();
}

absl::Status PortManager::ReconcileLocked() {
  (void)EnsureHostGuard();  // its outcome is the health and every port's state; the rest goes on
  SR_RETURN_IF_ERROR(RefreshLocked());
  RepairPortsLocked(ListOwnedLinks());
  return PushFlowTableLocked();
}

std::string PortManager::RecordDriftLocked() const {
  if (uplink_ofport_ != pushed_uplink_ofport_) return "the uplink's OpenFlow port changed";
  for (const auto& [name, port] : ports_) {
    if (!port.owned || !port.record.ok() || BrokenReason(port) || port.ofport <= 0 || uplink_ofport_ <= 0) {
      continue;
    }
    auto pushed = pushed_.find(name);
    if (pushed == pushed_.end() || pushed->second.ofport != port.ofport) {
      return absl::StrCat("port ", name, " has no flows for OpenFlow port ", port.ofport);
    }
  }
  return "";
}

absl::StatusOr<WorkloadLinks::OwnedLinks> PortManager::ListOwnedLinks() {
  absl::StatusOr<WorkloadLinks::OwnedLinks> listed = links_->ListOwned();
  if (!listed.ok()) {
    Log(LogLevel::kWarn, "reconcile: cannot list veths", {{"error", listed.status().ToString()}});
  }
  return listed;
}

absl::Status PortManager::CheckOnce() {
  uint64_t expected = 0;
  uint64_t epoch = 0;
  // The veth listing is a netlink dump (about 2 MB of messages at 1,000 ports): done before taking
  // the lock, and only every kLinkCheckEvery checks. Anything it misses in between, the next one sees.
  const unsigned int check = checks_.fetch_add(1);
  const bool check_links = check % kLinkCheckEvery == 0;
  // Cheap unless the node's ruleset changed (its generation number is compared first).
  (void)EnsureHostGuard();
  if (check % kMetricsEvery == 0) RefreshMetrics();
  const uint64_t ports_before = port_epoch_.load();
  absl::StatusOr<WorkloadLinks::OwnedLinks> links =
      check_links ? ListOwnedLinks()
                  : absl::StatusOr<WorkloadLinks::OwnedLinks>(absl::UnavailableError("not checked"));
  {
    std::lock_guard<std::mutex> lock(mu_);
    // A port allocated or released while the list was taken would look orphaned or veth-less.
    if (port_epoch_.load() != ports_before) links = absl::UnavailableError("ports changed while listing");
    SR_RETURN_IF_ERROR(RefreshLocked());
    RepairPortsLocked(links);
    if (std::string why = RecordDriftLocked(); !why.empty() && flows_in_sync_) {
      Log(LogLevel::kWarn, "pushing the flow table", {{"reason", why}});
      return PushFlowTableLocked();
    }
    expected = ExpectedFlowCountLocked();
    epoch = flow_epoch_;
  }
  // Counting is a round trip to ovs-vswitchd, which takes a main-loop iteration of it: slow when
  // it is busy. So it runs without the lock and on the watcher's own connection, and RPCs never
  // wait behind it.
  // All flows, not only netd's: the table is netd's alone, so a flow anyone else added (whatever
  // its cookie) is drift too, and the push that follows removes it.
  absl::StatusOr<uint64_t> count = watcher_->CountFlows(0, 0, settings_.ovs_timeout);
  std::lock_guard<std::mutex> lock(mu_);
  if (!count.ok()) {
    // Unreachable: its flows die with it. Fail closed and push everything once it is back.
    if (flows_in_sync_) {
      Log(LogLevel::kWarn, "ovs-vswitchd unreachable; flows will be pushed again when it is back",
          {{"error", count.status().ToString()}});
    }
    flows_in_sync_ = false;
    pushed_.clear();
    flow_problem_ = std::string(count.status().message());
    return count.status();
  }
  if (epoch != flow_epoch_) return absl::OkStatus();  // netd changed flows meanwhile: count next time
  std::string why;
  if (!flows_in_sync_) {
    why = "the flow table was not pushed since ovs-vswitchd was last unreachable";
  } else if (*count != expected) {
    why = absl::StrCat("ovs-vswitchd holds ", *count, " flows, not ", expected,
                       " (restarted, or flows were changed behind netd's back)");
  } else {
    why = RecordDriftLocked();
  }
  if (why.empty()) return absl::OkStatus();
  Log(LogLevel::kWarn, "pushing the flow table", {{"reason", why}});
  return PushFlowTableLocked();
}

void PortManager::StartBackground() {
  guard_->Watch([this](const absl::StatusOr<std::string>& result) { NoteHostGuard(result); });
  background_ = std::thread([this] { BackgroundLoop(); });
}

void PortManager::BackgroundLoop() {
  // The first pass is a full reconcile (netd may have been down while things changed); then
  // the cheap check every interval, which reconciles only on drift.
  bool reconciled = false;
  std::string last_error;
  for (;;) {
    const absl::Status status = reconciled ? CheckOnce() : Reconcile();
    if (status.ok()) reconciled = true;
    // Log a persisting problem once, not every interval.
    const std::string error = status.ok() ? "" : status.ToString();
    if (error != last_error && !error.empty()) Log(LogLevel::kWarn, "reconcile failed", {{"error", error}});
    last_error = error;
    std::unique_lock<std::mutex> lock(stop_mu_);
    if (stop_cv_.wait_for(lock, absl::ToChronoMilliseconds(settings_.flow_check_interval),
                          [this] { return stop_; })) {
      return;
    }
  }
}

}  // namespace strongroom::netd
