// How the node's own network stack is kept away from workload frames: the expected state of the
// node-side end of a workload veth and of netd's nftables tables (docs/NETD.md "Enforcement
// layers"). Pure logic; netlink/ makes and reads the real state.
//
// Why this is needed: the node-side end of a workload's veth sits in the node's network namespace.
// On the userspace datapath ovs-vswitchd reads it through a packet socket, and the kernel also runs
// every frame that arrives on it through its own IPv4/ARP/IPv6 stacks, which would forward it
// (ip_forward=1) and answer ARP for the node's addresses, bypassing every OpenFlow rule. On the
// kernel datapath OVS's rx handler takes the frame before those stacks, but only while the veth is
// a datapath port. The guards below hold on both datapaths and do not depend on ovs-vswitchd:
//   1. netd's nftables tables drop, at the very first hook (prerouting for IPv4 and IPv6, input for
//      ARP, priority -500: before defragmentation, conntrack, routing and ARP processing), every
//      frame the node's stack would receive on a device of netd's interface group, and everything
//      the node's stack would send to one. A tc ingress drop is no option: ovs-vswitchd deletes any
//      ingress qdisc of its ports whenever it reconfigures them (netdev_linux_set_policing).
//   2. Each such device, from its creation: netd's group, IFF_NOARP, IPv6 disabled, IPv4
//      forwarding off, strict reverse-path filtering, arp_ignore 8, no address. These hold even
//      while a table is missing (until netd puts it back, which its watcher does at once).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace strongroom::netd {

// What the kernel says about the node-side end of a workload veth.
struct VethFacts {
  uint32_t group = 0;
  bool noarp = false;
  bool has_ipv4 = false;  // the device has IPv4 configuration (the kernel reports it in IFLA_AF_SPEC)
  uint32_t ipv4_forwarding = 0;
  uint32_t ipv4_rp_filter = 0;
  uint32_t ipv4_arp_ignore = 0;
  bool has_ipv6 = false;  // the kernel has IPv6 configuration for the device
  bool ipv6_disabled = false;
  size_t addresses = 0;  // IPv4 and IPv6 addresses on it
};

// The per-device values netd sets (net.ipv4.conf.<dev>.*).
inline constexpr uint32_t kVethIpv4Forwarding = 0;
// Strict: nothing that arrives on the device has a route back through it.
inline constexpr uint32_t kVethRpFilter = 1;
// Never answer ARP for any local address on it.
inline constexpr uint32_t kVethArpIgnore = 8;

// What would let the node's stack receive, forward or answer for this veth's frames, e.g.
// "IPv4 forwarding is on, it has 1 address"; "" if every guard is in place.
std::string VethExposure(const VethFacts& facts, uint32_t group);

// The name of netd's nftables tables (one in the inet family, one in the arp family).
inline constexpr char kStackGuardTable[] = "strongroom_netd";

}  // namespace strongroom::netd
