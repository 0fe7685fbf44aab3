#include "services/netd/host_isolation.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace strongroom::netd {

std::string VethExposure(const VethFacts& facts, uint32_t group) {
  std::vector<std::string> gaps;
  if (facts.group != group) {
    gaps.push_back(absl::StrCat("its interface group is ", facts.group, ", not netd's ", group));
  }
  if (!facts.noarp) gaps.push_back("ARP is on");
  if (facts.has_ipv4 && facts.ipv4_forwarding != kVethIpv4Forwarding) gaps.push_back("IPv4 forwarding is on");
  if (facts.has_ipv4 && facts.ipv4_rp_filter != kVethRpFilter) {
    gaps.push_back(absl::StrCat("rp_filter is ", facts.ipv4_rp_filter, ", not ", kVethRpFilter));
  }
  if (facts.has_ipv4 && facts.ipv4_arp_ignore != kVethArpIgnore) {
    gaps.push_back(absl::StrCat("arp_ignore is ", facts.ipv4_arp_ignore, ", not ", kVethArpIgnore));
  }
  if (facts.has_ipv6 && !facts.ipv6_disabled) gaps.push_back("IPv6 is on");
  if (facts.addresses > 0) {
    gaps.push_back(absl::StrCat("it has ", facts.addresses, facts.addresses == 1 ? " address" : " addresses"));
  }
  return absl::StrJoin(gaps, ", ");
}

}  // namespace strongroom::netd
