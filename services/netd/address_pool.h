// IPAM: which workload addresses exist and which one to hand out next. The pool itself is
// stateless; the addresses in use always come from OVSDB's external_ids (the only record), so
// nothing here can drift from what the bridge says, across restarts included.
#pragma once

#include <cstddef>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "services/netd/ipv4.h"

namespace strongroom::netd {

// An inclusive address range.
struct AddressRange {
  Ipv4 first = 0;
  Ipv4 last = 0;
};

// Parses "a.b.c.d", "a.b.c.d/n" or "a.b.c.d-e.f.g.h" (first <= last).
absl::StatusOr<AddressRange> ParseAddressRange(absl::string_view text);

class AddressPool {
 public:
  // An empty pool (nothing assignable); use Create.
  AddressPool() = default;
  // `subnet` prefix 8..30; `gateway` a host address inside it; `reserved` ranges inside it.
  // The network and broadcast addresses and the gateway are never assignable.
  static absl::StatusOr<AddressPool> Create(Cidr subnet, Ipv4 gateway, std::vector<AddressRange> reserved);

  const Cidr& subnet() const { return subnet_; }
  Ipv4 gateway() const { return gateway_; }

  // Whether `address` may ever be handed to a workload.
  bool IsAssignable(Ipv4 address) const;

  // How many addresses the pool can hand out in total.
  size_t Capacity() const;

  // The first assignable address not in `in_use` after `previous` (the last one handed out),
  // wrapping around to the lowest: round robin, so a released address is reused as late as
  // possible (peers and ovs-vswitchd's datapath cache may still remember its previous holder).
  // RESOURCE_EXHAUSTED when there is none.
  absl::StatusOr<Ipv4> Pick(const std::set<Ipv4>& in_use, Ipv4 previous = 0) const;

 private:
  AddressPool(Cidr subnet, Ipv4 gateway, std::vector<AddressRange> excluded);

  Cidr subnet_{0, 32};
  Ipv4 gateway_ = 0;
  // Never assigned: reserved ranges plus network, broadcast and gateway, sorted and merged.
  std::vector<AddressRange> excluded_{{0, 0}};
};

}  // namespace strongroom::netd
