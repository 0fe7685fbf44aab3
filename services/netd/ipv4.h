// IPv4 addresses, CIDR blocks and derived MACs: the vocabulary of IPAM, policy and flows.
// Strict parsing: dotted quads without leading zeros or signs, so "010.0.0.1" (octal to some
// tools) and " 1.2.3.4" are refused rather than guessed.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace strongroom::netd {

// An IPv4 address in host byte order.
using Ipv4 = uint32_t;

absl::StatusOr<Ipv4> ParseIpv4(absl::string_view text);
std::string FormatIpv4(Ipv4 address);

// A CIDR block; `network` has no host bits set.
struct Cidr {
  Ipv4 network = 0;
  int prefix_length = 32;

  Ipv4 Mask() const { return prefix_length == 0 ? 0 : ~Ipv4{0} << (32 - prefix_length); }
  Ipv4 First() const { return network; }
  Ipv4 Last() const { return network | ~Mask(); }
  bool Contains(Ipv4 address) const { return (address & Mask()) == network; }
  bool Overlaps(const Cidr& other) const { return First() <= other.Last() && other.First() <= Last(); }
  // "a.b.c.d/n".
  std::string ToString() const;

  friend bool operator==(const Cidr& a, const Cidr& b) {
    return a.network == b.network && a.prefix_length == b.prefix_length;
  }
  friend bool operator!=(const Cidr& a, const Cidr& b) { return !(a == b); }
};

// Parses "a.b.c.d/n" (host bits must be zero). With `allow_bare_address`, "a.b.c.d" means /32.
absl::StatusOr<Cidr> ParseCidr(absl::string_view text, bool allow_bare_address);

// The locally administered MAC netd gives the workload holding `address`: 02:53 ("S") followed
// by the four address octets, lower case. One MAC per address means a re-assigned address keeps
// its MAC, so the gateway's ARP cache is never stale, and the pinning flows need no extra state.
std::string MacForIpv4(Ipv4 address);

}  // namespace strongroom::netd
