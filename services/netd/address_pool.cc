#include "services/netd/address_pool.h"

#include <algorithm>
#include <optional>

#include "absl/strings/str_cat.h"

namespace strongroom::netd {

absl::StatusOr<AddressRange> ParseAddressRange(absl::string_view text) {
  if (const size_t dash = text.find('-'); dash != absl::string_view::npos) {
    absl::StatusOr<Ipv4> first = ParseIpv4(text.substr(0, dash));
    absl::StatusOr<Ipv4> last = ParseIpv4(text.substr(dash + 1));
    if (!first.ok() || !last.ok() || *first > *last) {
      return absl::InvalidArgumentError(absl::StrCat(
          "\"", text, "\" is not a range a.b.c.d-e.f.g.h with the first address not after the last"));
    }
    return AddressRange{*first, *last};
  }
  absl::StatusOr<Cidr> cidr = ParseCidr(text, /*allow_bare_address=*/true);
  if (!cidr.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("\"", text, "\" is not an address, CIDR or range"));
  }
  return AddressRange{cidr->First(), cidr->Last()};
}

AddressPool::AddressPool(Cidr subnet, Ipv4 gateway, std::vector<AddressRange> excluded)
    : subnet_(subnet), gateway_(gateway), excluded_(std::move(excluded)) {}

absl::StatusOr<AddressPool> AddressPool::Create(Cidr subnet, Ipv4 gateway,
                                                std::vector<AddressRange> reserved) {
  if (subnet.prefix_length < 8 || subnet.prefix_length > 30) {
    return absl::InvalidArgumentError(
        absl::StrCat("subnet ", subnet.ToString(), ": prefix length must be 8..30"));
  }
  if (!subnet.Contains(gateway) || gateway == subnet.First() || gateway == subnet.Last()) {
    return absl::InvalidArgumentError(absl::StrCat("gateway ", FormatIpv4(gateway),
                                                   " is not a host address of subnet ", subnet.ToString()));
  }
  for (const AddressRange& range : reserved) {
    if (!subnet.Contains(range.first) || !subnet.Contains(range.last)) {
      return absl::InvalidArgumentError(absl::StrCat("reserved range ", FormatIpv4(range.first), "-",
                                                     FormatIpv4(range.last), " is not inside subnet ",
                                                     subnet.ToString()));
    }
  }
  std::vector<AddressRange> excluded = std::move(reserved);
  excluded.push_back({subnet.First(), subnet.First()});
  excluded.push_back({subnet.Last(), subnet.Last()});
  excluded.push_back({gateway, gateway});
  std::sort(excluded.begin(), excluded.end(),
            [](const AddressRange& a, const AddressRange& b) { return a.first < b.first; });
  std::vector<AddressRange> merged;
  for (const AddressRange& range : excluded) {
    if (!merged.empty() && range.first <= merged.back().last + 1) {
      merged.back().last = std::max(merged.back().last, range.last);
    } else {
      merged.push_back(range);
    }
  }
  AddressPool pool(subnet, gateway, std::move(merged));
  if (pool.Capacity() == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "subnet ", subnet.ToString(), " has no assignable address left after the reserved ranges"));
  }
  return pool;
}

bool AddressPool::IsAssignable(Ipv4 address) const {
  if (!subnet_.Contains(address)) return false;
  return std::none_of(excluded_.begin(), excluded_.end(),
                      [&](const AddressRange& r) { return r.first <= address && address <= r.last; });
}

size_t AddressPool::Capacity() const {
  size_t total = static_cast<size_t>(subnet_.Last()) - subnet_.First() + 1;
  for (const AddressRange& range : excluded_) total -= static_cast<size_t>(range.last) - range.first + 1;
  return total;
}

absl::StatusOr<Ipv4> AddressPool::Pick(const std::set<Ipv4>& in_use, Ipv4 previous) const {
  // Walk the gaps between excluded ranges in order, from just after `previous`, then once more
  // from the start; within a gap, skip the addresses in use. Cost is O(excluded ranges +
  // addresses in use), independent of the subnet's size.
  auto first_free = [&](uint64_t from) -> std::optional<Ipv4> {
    uint64_t candidate = std::max<uint64_t>(from, subnet_.First());
    for (size_t i = 0; i <= excluded_.size(); ++i) {
      const uint64_t gap_end =
          i < excluded_.size() ? uint64_t{excluded_[i].first} : uint64_t{subnet_.Last()} + 1;
      while (candidate < gap_end) {
        if (in_use.count(static_cast<Ipv4>(candidate)) == 0) return static_cast<Ipv4>(candidate);
        ++candidate;
      }
      if (i < excluded_.size()) candidate = std::max<uint64_t>(candidate, uint64_t{excluded_[i].last} + 1);
    }
    return std::nullopt;
  };
  std::optional<Ipv4> picked = subnet_.Contains(previous) ? first_free(uint64_t{previous} + 1) : std::nullopt;
  if (!picked) picked = first_free(subnet_.First());
  if (picked) return *picked;
  return absl::ResourceExhaustedError(absl::StrCat("address pool ", subnet_.ToString(), " is exhausted (",
                                                   Capacity(), " addresses, all assigned)"));
}

}  // namespace strongroom::netd
