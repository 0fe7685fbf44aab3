// The real HostStackGuard: netd's nftables tables in its network namespace, made and checked over
// NETLINK_NETFILTER with libnftnl (no `nft` process).
//
//   table inet strongroom_netd {
//     chain from_workload_ports { type filter hook prerouting priority -500; policy accept;
//                                 meta iifgroup GROUP counter drop }
//     chain to_workload_ports   { type filter hook output priority -500; policy accept;
//                                 meta oifgroup GROUP counter drop }
//   }
//   table arp strongroom_netd { the same two chains, on the input and output hooks }
//
// netd owns both tables: whatever else is in them, or a dormant flag, is drift, and the repair
// replaces each table whole in one transaction (so there is never a moment without the rules).
// Tables persist when netd stops, so workload ports stay guarded while it restarts.
#pragma once

#include <atomic>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/time/time.h"
#include "services/netd/backends.h"

namespace strongroom::netd {

class NftablesHostStackGuard final : public HostStackGuard {
 public:
  NftablesHostStackGuard(uint32_t group, absl::Duration timeout);
  ~NftablesHostStackGuard() override;  // stops the watcher
  NftablesHostStackGuard(const NftablesHostStackGuard&) = delete;
  NftablesHostStackGuard& operator=(const NftablesHostStackGuard&) = delete;

  absl::StatusOr<std::string> Ensure() override;
  absl::StatusOr<std::vector<ChainCounters>> Counters() override;

  // Starts a thread that listens to nf_tables' change notifications and runs Ensure() on each,
  // so a flushed ruleset (a firewall reload, `nft flush ruleset`) is back within milliseconds,
  // not at the next reconcile. on_result gets Ensure's outcome whenever it repaired something or
  // failed.
  void Watch(std::function<void(const absl::StatusOr<std::string>&)> on_result) override;

 private:
  const uint32_t group_;
  const absl::Duration timeout_;
  std::mutex mu_;                       // serialises Ensure (the RPC path, reconcile, the watcher)
  std::optional<uint32_t> verified_generation_;  // the ruleset generation last found intact
  std::atomic<bool> stop_{false};       // tells the watcher to return
  std::thread watcher_;                 // runs Watch's loop
};

}  // namespace strongroom::netd
