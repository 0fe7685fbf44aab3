// PortManager's view for operators: the per-port drop counters, the node stack guard's state
// (health and DEGRADED ports follow it), and the Prometheus text built from both.
#include <map>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/status.h"
#include "services/netd/host_isolation.h"
#include "services/netd/port_manager.h"

namespace strongroom::netd {

std::map<uint64_t, std::vector<DropCount>> PortManager::DropCountsByCookie(
    const std::vector<OpenFlowSwitch::FlowCounters>& flows) {
  std::map<uint64_t, std::vector<DropCount>> by_cookie;
  for (const OpenFlowSwitch::FlowCounters& flow : flows) {
    if (flow.cookie == kBaseCookie || (flow.cookie & kCookieTagMask) != kCookieTag) continue;
    std::optional<DropReason> reason = DropReasonOfFlow(flow.table, flow.priority);
    if (!reason) continue;
    std::vector<DropCount>& drops = by_cookie[flow.cookie];
    if (drops.empty()) {
      for (DropReason each : kAllDropReasons) drops.push_back({each, 0, 0});
    }
    for (DropCount& drop : drops) {
      if (drop.reason != *reason) continue;
      drop.packets += flow.packets;
      drop.bytes += flow.bytes;
    }
  }
  return by_cookie;
}

void PortManager::SetServingObserver(std::function<void(bool serving, const std::string& reason)> observer) {
  std::lock_guard<std::mutex> lock(guard_mu_);
  serving_observer_ = std::move(observer);
  if (guard_problem_ && serving_observer_) serving_observer_(guard_problem_->empty(), *guard_problem_);
}

void PortManager::NoteHostGuard(const absl::StatusOr<std::string>& result) {
  std::function<void(bool, const std::string&)> observer;
  std::string problem;
  bool changed = false;
  {
    std::lock_guard<std::mutex> lock(guard_mu_);
    problem = result.ok() ? "" : std::string(result.status().message());
    changed = !guard_problem_ || *guard_problem_ != problem;
    guard_problem_ = problem;
    if (result.ok() && !result->empty()) ++guard_repairs_;
    if (changed) observer = serving_observer_;
  }
  if (result.ok() && !result->empty()) {
    Audit("netd.reconcile.node_stack_guard_restored", absl::StrCat("node/", kStackGuardTable),
          absl::StrCat("netd's nftables tables were not in place (", *result, "); replaced"));
  }
  if (!changed) return;
  if (problem.empty()) {
    Log(LogLevel::kInfo, "node stack guard in place", {{"table", kStackGuardTable}});
  } else {
    Log(LogLevel::kError, "node stack guard is not in place: refusing new ports, existing ports DEGRADED",
        {{"error", problem}});
  }
  if (observer) observer(problem.empty(), problem);
}

absl::Status PortManager::EnsureHostGuard() {
  absl::StatusOr<std::string> result = guard_->Ensure();
  NoteHostGuard(result);
  if (!result.ok()) {
    return Annotate(result.status(), "the node's own network stack cannot be kept away from workload ports");
  }
  return absl::OkStatus();
}

void PortManager::RefreshMetrics() {
  std::map<uint64_t, std::string> workload_of;  // cookie -> workload id
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [workload, name] : by_workload_) workload_of[ports_.at(name).record->Cookie()] = workload;
  }
  MetricsSnapshot snapshot;
  // The watcher's connection, without netd's lock: RPCs never wait behind a statistics request.
  if (absl::StatusOr<std::vector<OpenFlowSwitch::FlowCounters>> flows =
          watcher_->FlowStatistics(kCookieTag, kCookieTagMask, settings_.ovs_timeout);
      flows.ok()) {
    for (auto& [cookie, drops] : DropCountsByCookie(*flows)) {
      if (auto it = workload_of.find(cookie); it != workload_of.end()) {
        snapshot.ports.emplace_back(it->second, std::move(drops));
      }
    }
  }
  if (absl::StatusOr<std::vector<HostStackGuard::ChainCounters>> chains = guard_->Counters(); chains.ok()) {
    snapshot.guard_chains = *std::move(chains);
  }
  std::lock_guard<std::mutex> lock(metrics_mu_);
  metrics_ = std::move(snapshot);
}

std::string PortManager::RenderMetrics() const {
  std::string out;
  {
    std::lock_guard<std::mutex> lock(metrics_mu_);
    absl::StrAppend(&out,
                    "# HELP strongroom_netd_port_dropped_packets_total Frames of a workload port netd's flows "
                    "dropped, by reason.\n# TYPE strongroom_netd_port_dropped_packets_total counter\n");
    for (const auto& [workload, drops] : metrics_.ports) {
      for (const DropCount& drop : drops) {
        absl::StrAppend(&out, "strongroom_netd_port_dropped_packets_total{workload=\"", workload, "\",reason=\"",
                        DropReasonName(drop.reason), "\"} ", drop.packets, "\n");
      }
    }
    absl::StrAppend(&out,
                    "# HELP strongroom_netd_port_dropped_bytes_total Bytes of the frames counted in "
                    "strongroom_netd_port_dropped_packets_total.\n"
                    "# TYPE strongroom_netd_port_dropped_bytes_total counter\n");
    for (const auto& [workload, drops] : metrics_.ports) {
      for (const DropCount& drop : drops) {
        absl::StrAppend(&out, "strongroom_netd_port_dropped_bytes_total{workload=\"", workload, "\",reason=\"",
                        DropReasonName(drop.reason), "\"} ", drop.bytes, "\n");
      }
    }
    absl::StrAppend(&out,
                    "# HELP strongroom_netd_node_stack_dropped_packets_total Frames the node's own stack would "
                    "have received from, or sent to, a workload port, dropped by netd's nftables tables.\n"
                    "# TYPE strongroom_netd_node_stack_dropped_packets_total counter\n");
    for (const HostStackGuard::ChainCounters& chain : metrics_.guard_chains) {
      absl::StrAppend(&out, "strongroom_netd_node_stack_dropped_packets_total{chain=\"", chain.chain, "\"} ",
                      chain.packets, "\n");
    }
  }
  std::lock_guard<std::mutex> lock(guard_mu_);
  absl::StrAppend(&out,
                  "# HELP strongroom_netd_node_stack_guard_ok 1 while the node stack guard is verified in "
                  "place, else 0.\n# TYPE strongroom_netd_node_stack_guard_ok gauge\n"
                  "strongroom_netd_node_stack_guard_ok ",
                  guard_problem_ && guard_problem_->empty() ? 1 : 0,
                  "\n# HELP strongroom_netd_node_stack_guard_repairs_total Times netd found its nftables tables "
                  "changed or missing and put them back.\n"
                  "# TYPE strongroom_netd_node_stack_guard_repairs_total counter\n"
                  "strongroom_netd_node_stack_guard_repairs_total ",
                  guard_repairs_, "\n");
  return out;
}

}  // namespace strongroom::netd
