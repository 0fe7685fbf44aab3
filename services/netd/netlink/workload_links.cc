#include "services/netd/netlink/workload_links.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <libmnl/libmnl.h>
#include <linux/if_link.h>
#include <linux/if_tun.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/nsfs.h>
#include <linux/rtnetlink.h>
#include <linux/veth.h>
#include <net/if.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cstring>
#include <map>
#include <optional>
#include <regex>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/status.h"
#include "services/netd/host_isolation.h"
#include "services/netd/netlink/rtnl_socket.h"
#include "services/netd/request_validation.h"

namespace strongroom::netd {
namespace {

// An open netns file descriptor, closed on scope exit.
class NetnsFd {
 public:
  explicit NetnsFd(int fd) : fd_(fd) {}
  NetnsFd(NetnsFd&& other) noexcept : fd_(other.fd_) { other.fd_ = -1; }
  NetnsFd(const NetnsFd&) = delete;
  NetnsFd& operator=(const NetnsFd&) = delete;
  ~NetnsFd() {
    if (fd_ >= 0) close(fd_);
  }
  int get() const { return fd_; }

 private:
  int fd_;  // owned
};

// Opens `netns` and checks it is a network namespace other than netd's own.
absl::StatusOr<NetnsFd> OpenNetns(const std::string& netns) {
  SR_ASSIGN_OR_RETURN(const std::string path, NetnsPath(netns));
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int error = errno;
    if (error == ENOENT) {
      return absl::FailedPreconditionError(absl::StrCat("netns \"", netns, "\" does not exist (", path, ")"));
    }
    return absl::FailedPreconditionError(
        absl::StrCat("netns \"", netns, "\": cannot open ", path, ": ", std::strerror(error)));
  }
  NetnsFd handle(fd);
  if (ioctl(fd, NS_GET_NSTYPE) != CLONE_NEWNET) {
    return absl::FailedPreconditionError(
        absl::StrCat("netns \"", netns, "\": ", path, " is not a network namespace"));
  }
  struct stat target {};
  struct stat own {};
  if (fstat(fd, &target) != 0 || stat("/proc/thread-self/ns/net", &own) != 0) {
    return ErrnoStatus(errno, absl::StrCat("netns \"", netns, "\": stat"));
  }
  if (target.st_dev == own.st_dev && target.st_ino == own.st_ino) {
    return absl::FailedPreconditionError(
        absl::StrCat("netns \"", netns, "\" is netd's own network namespace, not a workload's"));
  }
  // The host's own namespace (that of PID 1) is never a workload's either, even when netd runs in
  // another one.
  struct stat init {};
  if (stat("/proc/1/ns/net", &init) == 0 && target.st_dev == init.st_dev && target.st_ino == init.st_ino) {
    return absl::FailedPreconditionError(
        absl::StrCat("netns \"", netns, "\" is the host's network namespace (PID 1's), not a workload's"));
  }
  return handle;
}

using MacBytes = std::array<uint8_t, 6>;

absl::StatusOr<MacBytes> ParseMac(absl::string_view text) {
  std::vector<absl::string_view> parts = absl::StrSplit(text, ':');
  MacBytes mac{};
  if (parts.size() != 6) return absl::InvalidArgumentError(absl::StrCat("bad MAC ", text));
  for (size_t i = 0; i < 6; ++i) {
    int value = 0;
    if (parts[i].size() != 2 || !absl::SimpleHexAtoi(parts[i], &value)) {
      return absl::InvalidArgumentError(absl::StrCat("bad MAC ", text));
    }
    mac[i] = static_cast<uint8_t>(value);
  }
  return mac;
}

// A netlink message under construction in a stack buffer.
class Message {
 public:
  explicit Message(uint16_t type, uint16_t flags = 0) {
    header_ = mnl_nlmsg_put_header(buffer_.data());
    header_->nlmsg_type = type;
    header_->nlmsg_flags = flags;
  }
  struct nlmsghdr* header() {
    return header_;
  }
  template <typename T>
  T* Extra() {
    return static_cast<T*>(mnl_nlmsg_put_extra_header(header_, sizeof(T)));
  }

 private:
  // Requests are small: names, a MAC, a few u32s.
  std::array<char, 8192> buffer_{};
  struct nlmsghdr* header_;
};

absl::Status DeleteLink(RtnlSocket& socket, const std::string& name) {
  Message message(RTM_DELLINK);
  message.Extra<ifinfomsg>()->ifi_family = AF_UNSPEC;
  mnl_attr_put_strz(message.header(), IFLA_IFNAME, name.c_str());
  absl::Status status = socket.Transact(message.header(), absl::StrCat("deleting ", name));
  return absl::IsNotFound(status) ? absl::OkStatus() : status;
}

// Writes one of a device's sysctls; a file the kernel does not have (no IPv6, say) is fine.
absl::Status WriteSysctl(const std::string& path, absl::string_view value, const std::string& name) {
  const int fd = open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return absl::OkStatus();
    return ErrnoStatus(errno, absl::StrCat("writing ", path, " of ", name));
  }
  const ssize_t written = write(fd, value.data(), value.size());
  const int error = errno;
  close(fd);
  if (written != static_cast<ssize_t>(value.size())) {
    return ErrnoStatus(error, absl::StrCat("writing ", path, " of ", name));
  }
  return absl::OkStatus();
}

// The per-device sysctls of a host-side veth (host_isolation.h), set before it comes up. Through
// /proc rather than RTM_SETLINK: a sysctl change is no link event, and every link event in
// ovs-vswitchd's netns makes it reconfigure all its ports and re-read the routing table.
// IPv6 off also means no link-local address and none of its routes: ovs-vswitchd looks up the
// source address of each route on every re-read, so 1,000 veths with IPv6 routes cost it O(n^2)
// per port added or removed (docs/PERFORMANCE.md).
absl::Status ApplyDeviceSysctls(const std::string& name) {
  const std::string ipv4 = absl::StrCat("/proc/sys/net/ipv4/conf/", name, "/");
  SR_RETURN_IF_ERROR(WriteSysctl(absl::StrCat("/proc/sys/net/ipv6/conf/", name, "/disable_ipv6"), "1", name));
  SR_RETURN_IF_ERROR(WriteSysctl(ipv4 + "forwarding", absl::StrCat(kVethIpv4Forwarding), name));
  SR_RETURN_IF_ERROR(WriteSysctl(ipv4 + "rp_filter", absl::StrCat(kVethRpFilter), name));
  return WriteSysctl(ipv4 + "arp_ignore", absl::StrCat(kVethArpIgnore), name);
}

// Sets IFF_UP (by index, or by name when index is 0), or only the alias when `alias` is given.
absl::Status SetUpOrAlias(RtnlSocket& socket, int index, const std::string& name, const std::string& alias) {
  Message message(RTM_NEWLINK);
  ifinfomsg* info = message.Extra<ifinfomsg>();
  info->ifi_family = AF_UNSPEC;
  info->ifi_index = index;
  if (alias.empty()) {
    info->ifi_flags = IFF_UP;
    info->ifi_change = IFF_UP;
  }
  if (index == 0) mnl_attr_put_strz(message.header(), IFLA_IFNAME, name.c_str());
  if (!alias.empty()) mnl_attr_put_strz(message.header(), IFLA_IFALIAS, alias.c_str());
  return socket.Transact(message.header(), absl::StrCat(alias.empty() ? "bringing up " : "marking ", name));
}

// What a link message says about a link: its name, alias and kind, and the facts the per-device
// guards are judged by (all but its addresses).
struct LinkInfo {
  int index = 0;
  std::string name;
  std::string alias;
  std::string kind;
  VethFacts facts;
};

// IFLA_AF_SPEC: per address family, the device's configuration (IPv4: an array of u32 indexed by
// IPV4_DEVCONF_* - 1; IPv6: an array of s32 indexed by DEVCONF_*).
void ParseAfSpec(const struct nlattr* spec, VethFacts* facts) {
  mnl_attr_parse_nested(
      spec,
      +[](const struct nlattr* family, void* out) {
        auto* facts = static_cast<VethFacts*>(out);
        const int type = mnl_attr_get_type(family);
        if (type != AF_INET && type != AF_INET6) return MNL_CB_OK;
        if (type == AF_INET) facts->has_ipv4 = true;
        if (type == AF_INET6) facts->has_ipv6 = true;
        mnl_attr_parse_nested(
            family,
            type == AF_INET
                ? +[](const struct nlattr* conf, void* out) {
                    if (mnl_attr_get_type(conf) != IFLA_INET_CONF) return MNL_CB_OK;
                    auto* facts = static_cast<VethFacts*>(out);
                    const auto* values = static_cast<const uint32_t*>(mnl_attr_get_payload(conf));
                    const size_t count = mnl_attr_get_payload_len(conf) / sizeof(uint32_t);
                    auto value = [&](int devconf) { return devconf <= static_cast<int>(count) ? values[devconf - 1] : 0; };
                    facts->ipv4_forwarding = value(IPV4_DEVCONF_FORWARDING);
                    facts->ipv4_rp_filter = value(IPV4_DEVCONF_RP_FILTER);
                    facts->ipv4_arp_ignore = value(IPV4_DEVCONF_ARP_IGNORE);
                    return MNL_CB_OK;
                  }
                : +[](const struct nlattr* conf, void* out) {
                    if (mnl_attr_get_type(conf) != IFLA_INET6_CONF) return MNL_CB_OK;
                    const auto* values = static_cast<const int32_t*>(mnl_attr_get_payload(conf));
                    const size_t count = mnl_attr_get_payload_len(conf) / sizeof(int32_t);
                    static_cast<VethFacts*>(out)->ipv6_disabled =
                        DEVCONF_DISABLE_IPV6 < count && values[DEVCONF_DISABLE_IPV6] != 0;
                    return MNL_CB_OK;
                  },
            facts);
        return MNL_CB_OK;
      },
      facts);
}

LinkInfo ParseLink(const struct nlmsghdr* message) {
  LinkInfo link;
  const auto* info = static_cast<const ifinfomsg*>(mnl_nlmsg_get_payload(message));
  link.index = info->ifi_index;
  link.facts.noarp = (info->ifi_flags & IFF_NOARP) != 0;
  // libmnl's attribute iteration macros do not compile as C++; its callback API does.
  auto on_attribute = [](const struct nlattr* attribute, void* data) {
    auto* link = static_cast<LinkInfo*>(data);
    switch (mnl_attr_get_type(attribute)) {
      case IFLA_IFNAME:
        link->name = mnl_attr_get_str(attribute);
        break;
      case IFLA_IFALIAS:
        link->alias = mnl_attr_get_str(attribute);
        break;
      case IFLA_GROUP:
        link->facts.group = mnl_attr_get_u32(attribute);
        break;
      case IFLA_AF_SPEC:
        ParseAfSpec(attribute, &link->facts);
        break;
      case IFLA_LINKINFO:
        mnl_attr_parse_nested(
            attribute,
            +[](const struct nlattr* nested, void* out) {
              if (mnl_attr_get_type(nested) == IFLA_INFO_KIND)
                static_cast<LinkInfo*>(out)->kind = mnl_attr_get_str(nested);
              return MNL_CB_OK;
            },
            link);
        break;
      default:
        break;
    }
    return MNL_CB_OK;
  };
  mnl_attr_parse(message, sizeof(ifinfomsg), on_attribute, &link);
  return link;
}

// One link, by name: NOT_FOUND if there is none.
absl::StatusOr<LinkInfo> GetLink(RtnlSocket& socket, const std::string& name) {
  Message message(RTM_GETLINK);
  message.Extra<ifinfomsg>()->ifi_family = AF_UNSPEC;
  mnl_attr_put_strz(message.header(), IFLA_IFNAME, name.c_str());
  std::optional<LinkInfo> link;
  SR_RETURN_IF_ERROR(socket.Transact(message.header(), absl::StrCat("reading link ", name),
                                     [&](const struct nlmsghdr* reply) {
                                       if (reply->nlmsg_type == RTM_NEWLINK) link = ParseLink(reply);
                                     }));
  if (!link) return absl::NotFoundError(absl::StrCat("link ", name, ": no answer"));
  return *link;
}

// The addresses (IPv4 and IPv6) of every link of the socket's netns, by interface index.
absl::StatusOr<std::map<int, std::vector<std::pair<int, std::vector<uint8_t>>>>> AddressesByIndex(
    RtnlSocket& socket) {
  Message message(RTM_GETADDR);
  message.Extra<ifaddrmsg>()->ifa_family = AF_UNSPEC;
  std::map<int, std::vector<std::pair<int, std::vector<uint8_t>>>> addresses;
  SR_RETURN_IF_ERROR(socket
                         .Dump(message.header(),
                               [&](const struct nlmsghdr* reply) {
                                 const auto* info = static_cast<const ifaddrmsg*>(mnl_nlmsg_get_payload(reply));
                                 std::pair<int, std::vector<uint8_t>> entry{info->ifa_family, {}};
                                 entry.second.push_back(info->ifa_prefixlen);
                                 mnl_attr_parse(
                                     reply, sizeof(ifaddrmsg),
                                     +[](const struct nlattr* attribute, void* out) {
                                       if (mnl_attr_get_type(attribute) != IFA_ADDRESS) return MNL_CB_OK;
                                       auto* bytes = static_cast<std::vector<uint8_t>*>(out);
                                       const auto* data = static_cast<const uint8_t*>(mnl_attr_get_payload(attribute));
                                       bytes->insert(bytes->end(), data, data + mnl_attr_get_payload_len(attribute));
                                       return MNL_CB_OK;
                                     },
                                     &entry.second);
                                 addresses[static_cast<int>(info->ifa_index)].push_back(std::move(entry));
                               },
                               "listing addresses")
                         .status());
  return addresses;
}

// Sets IFF_NOARP and the interface group on a link that exists (by index).
absl::Status SetNoArpAndGroup(RtnlSocket& socket, int index, const std::string& name, uint32_t group) {
  Message message(RTM_NEWLINK);
  ifinfomsg* info = message.Extra<ifinfomsg>();
  info->ifi_family = AF_UNSPEC;
  info->ifi_index = index;
  info->ifi_flags = IFF_NOARP;
  info->ifi_change = IFF_NOARP;
  mnl_attr_put_u32(message.header(), IFLA_GROUP, group);
  return socket.Transact(message.header(), absl::StrCat("turning ARP off and setting the group of ", name));
}

// Creates `name` as a persistent, single-queue tap in the calling thread's netns (netd's), with no
// owner (opening it takes CAP_NET_ADMIN there) and nothing attached: tun/tap devices cannot be
// made over rtnetlink, only with TUNSETIFF. The opener (libvirt, for qemu) sets the offload
// flags it wants; only IFF_MULTI_QUEUE has to match.
absl::Status MakePersistentTap(const std::string& name) {
  const int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    // Not a missing object of the caller's: this node cannot make taps (no tun module or device node).
    return absl::FailedPreconditionError(absl::StrCat("this node cannot make a VM's tap: opening /dev/net/tun: ",
                                                      std::strerror(errno), " (CONFIG_TUN, module tun)"));
  }
  struct ifreq request {};
  std::strncpy(request.ifr_name, name.c_str(), IFNAMSIZ - 1);
  request.ifr_flags = IFF_TAP | IFF_NO_PI;
  absl::Status status;
  if (ioctl(fd, TUNSETIFF, &request) != 0) {
    status = ErrnoStatus(errno, absl::StrCat("creating tap ", name, " (TUNSETIFF)"));
  } else if (ioctl(fd, TUNSETPERSIST, 1) != 0) {
    status = ErrnoStatus(errno, absl::StrCat("making tap ", name, " persistent"));
  }
  close(fd);  // a non-persistent tap (on error) disappears with its last file descriptor
  return status;
}

// Sets the flags (promiscuous, no ARP), group and MTU of an existing link, by name.
absl::Status SetTapBasics(RtnlSocket& socket, const std::string& name, int mtu, uint32_t group) {
  Message message(RTM_NEWLINK);
  ifinfomsg* info = message.Extra<ifinfomsg>();
  info->ifi_family = AF_UNSPEC;
  info->ifi_flags = IFF_PROMISC | IFF_NOARP;
  info->ifi_change = IFF_PROMISC | IFF_NOARP;
  mnl_attr_put_strz(message.header(), IFLA_IFNAME, name.c_str());
  mnl_attr_put_u32(message.header(), IFLA_MTU, static_cast<uint32_t>(mtu));
  mnl_attr_put_u32(message.header(), IFLA_GROUP, group);
  return socket.Transact(message.header(), absl::StrCat("configuring tap ", name));
}

bool IsNetdVethName(const std::string& name) {
  static const std::regex* const kPattern = new std::regex("^sr[0-9a-f]{12}$");
  return std::regex_match(name, *kPattern);
}

}  // namespace

absl::Status NetlinkWorkloadLinks::CheckNetns(const std::string& netns) { return OpenNetns(netns).status(); }

absl::Status NetlinkWorkloadLinks::CreateTap(const LinkSpec& spec, absl::Duration timeout) {
  SR_ASSIGN_OR_RETURN(RtnlSocket host, RtnlSocket::Open(timeout));
  if (host.InterfaceIndex(spec.host_name).ok()) {
    // Only a leftover of netd's own (same derived name) can be here; reconcile would delete it.
    SR_RETURN_IF_ERROR(DeleteLink(host, spec.host_name));
  }
  SR_RETURN_IF_ERROR(MakePersistentTap(spec.host_name));
  // From here on, deleting the tap undoes everything. The same order and guards as a veth's host
  // end: mark, flags and group, sysctls, then up, then read back.
  auto configure = [&]() -> absl::Status {
    SR_RETURN_IF_ERROR(SetUpOrAlias(host, 0, spec.host_name,
                                    absl::StrCat(kVethAliasPrefix, " workload ", spec.workload_id)));
    SR_RETURN_IF_ERROR(SetTapBasics(host, spec.host_name, spec.mtu, group_));
    SR_RETURN_IF_ERROR(ApplyDeviceSysctls(spec.host_name));
    SR_RETURN_IF_ERROR(SetUpOrAlias(host, 0, spec.host_name, ""));
    SR_ASSIGN_OR_RETURN(const LinkInfo link, GetLink(host, spec.host_name));
    if (const std::string exposure = VethExposure(link.facts, group_); !exposure.empty()) {
      return absl::FailedPreconditionError(absl::StrCat("the node's stack would handle frames of ", spec.host_name,
                                                        ": ", exposure));
    }
    return absl::OkStatus();
  };
  if (absl::Status configured = configure(); !configured.ok()) {
    (void)DeleteLink(host, spec.host_name);
    return Annotate(configured, absl::StrCat("configuring tap ", spec.host_name, " (tap removed again)"));
  }
  return absl::OkStatus();
}

absl::Status NetlinkWorkloadLinks::Create(const LinkSpec& spec, absl::Duration timeout) {
  if (spec.tap) return CreateTap(spec, timeout);
  SR_ASSIGN_OR_RETURN(NetnsFd netns, OpenNetns(spec.netns));
  SR_ASSIGN_OR_RETURN(const MacBytes mac, ParseMac(spec.mac));
  SR_ASSIGN_OR_RETURN(RtnlSocket host, RtnlSocket::Open(timeout));
  SR_ASSIGN_OR_RETURN(RtnlSocket inside, RtnlSocket::OpenIn(netns.get(), timeout));

  // Precise errors before changing anything.
  if (inside.InterfaceIndex(spec.peer_name).ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("interface ", spec.peer_name, " already exists in netns \"", spec.netns, "\""));
  }
  if (host.InterfaceIndex(spec.host_name).ok()) {
    // Only a leftover of netd's own (same derived name) can be here; reconcile would delete it.
    SR_RETURN_IF_ERROR(DeleteLink(host, spec.host_name));
  }

  {
    Message message(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL);
    ifinfomsg* host_info = message.Extra<ifinfomsg>();
    host_info->ifi_family = AF_UNSPEC;
    // Promiscuous from the start: ovs-vswitchd sets it when it adds the port, and that change
    // would be one more link event, i.e. one more full reconfiguration of ovs-vswitchd. Without
    // ARP and in netd's group from the start too: the node's stack never answers ARP on it, and
    // netd's nftables tables drop whatever it would receive there from the moment it exists.
    host_info->ifi_flags = IFF_PROMISC | IFF_NOARP;
    host_info->ifi_change = IFF_PROMISC | IFF_NOARP;
    struct nlmsghdr* header = message.header();
    mnl_attr_put_strz(header, IFLA_IFNAME, spec.host_name.c_str());
    mnl_attr_put_u32(header, IFLA_MTU, static_cast<uint32_t>(spec.mtu));
    mnl_attr_put_u32(header, IFLA_GROUP, group_);
    struct nlattr* link_info = mnl_attr_nest_start(header, IFLA_LINKINFO);
    mnl_attr_put_strz(header, IFLA_INFO_KIND, "veth");
    struct nlattr* data = mnl_attr_nest_start(header, IFLA_INFO_DATA);
    struct nlattr* peer = mnl_attr_nest_start(header, VETH_INFO_PEER);
    static_cast<ifinfomsg*>(mnl_nlmsg_put_extra_header(header, sizeof(ifinfomsg)))->ifi_family = AF_UNSPEC;
    mnl_attr_put_strz(header, IFLA_IFNAME, spec.peer_name.c_str());
    mnl_attr_put_u32(header, IFLA_NET_NS_FD, static_cast<uint32_t>(netns.get()));
    mnl_attr_put(header, IFLA_ADDRESS, mac.size(), mac.data());
    mnl_attr_put_u32(header, IFLA_MTU, static_cast<uint32_t>(spec.mtu));
    mnl_attr_nest_end(header, peer);
    mnl_attr_nest_end(header, data);
    mnl_attr_nest_end(header, link_info);
    absl::Status created = host.Transact(header, absl::StrCat("creating veth ", spec.host_name));
    if (absl::IsAlreadyExists(created)) {
      return absl::FailedPreconditionError(absl::StrCat("creating veth ", spec.host_name, ": interface ",
                                                        spec.peer_name, " already exists in netns \"",
                                                        spec.netns, "\""));
    }
    SR_RETURN_IF_ERROR(created);
  }

  // From here on, deleting the host end undoes everything (the peer goes with it).
  auto configure = [&]() -> absl::Status {
    // The mark first, so a netd killed from here on leaves a veth reconcile recognises as its own.
    SR_RETURN_IF_ERROR(SetUpOrAlias(host, 0, spec.host_name,
                                    absl::StrCat(kVethAliasPrefix, " workload ", spec.workload_id)));
    // Before the host end is up (and promiscuous from its creation, above): every link event in
    // ovs-vswitchd's netns makes it reconfigure all its ports and re-read the routing table.
    SR_RETURN_IF_ERROR(ApplyDeviceSysctls(spec.host_name));
    // Up before the peer, so the peer has its carrier the moment it comes up. Measured here: with
    // the host end raised last instead, about one allocation in 30 lost the workload's first ARP
    // request (the veth counted a transmit drop) and traffic waited for the 1 s ARP retry.
    SR_RETURN_IF_ERROR(SetUpOrAlias(host, 0, spec.host_name, ""));
    SR_ASSIGN_OR_RETURN(const int index, inside.InterfaceIndex(spec.peer_name));
    SR_RETURN_IF_ERROR(inside.DisableTxChecksumOffload(spec.peer_name));
    {
      Message message(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL);
      ifaddrmsg* address = message.Extra<ifaddrmsg>();
      address->ifa_family = AF_INET;
      address->ifa_prefixlen = static_cast<uint8_t>(spec.prefix_length);
      address->ifa_scope = RT_SCOPE_UNIVERSE;
      address->ifa_index = static_cast<uint32_t>(index);
      const uint32_t local = htonl(spec.address);
      const uint32_t broadcast = htonl(spec.address | ~(~uint32_t{0} << (32 - spec.prefix_length)));
      mnl_attr_put_u32(message.header(), IFA_LOCAL, local);
      mnl_attr_put_u32(message.header(), IFA_ADDRESS, local);
      mnl_attr_put_u32(message.header(), IFA_BROADCAST, broadcast);
      SR_RETURN_IF_ERROR(
          inside.Transact(message.header(), absl::StrCat("adding the address to ", spec.peer_name)));
    }
    SR_RETURN_IF_ERROR(SetUpOrAlias(inside, index, spec.peer_name, ""));
    {
      Message message(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL);
      rtmsg* route = message.Extra<rtmsg>();
      route->rtm_family = AF_INET;
      route->rtm_dst_len = 0;
      route->rtm_table = RT_TABLE_MAIN;
      route->rtm_protocol = RTPROT_STATIC;
      route->rtm_scope = RT_SCOPE_UNIVERSE;
      route->rtm_type = RTN_UNICAST;
      mnl_attr_put_u32(message.header(), RTA_GATEWAY, htonl(spec.gateway));
      mnl_attr_put_u32(message.header(), RTA_OIF, static_cast<uint32_t>(index));
      SR_RETURN_IF_ERROR(inside.Transact(message.header(), "adding the default route"));
    }
    // Read back, so a kernel that did not keep a guard is caught before the port carries traffic.
    SR_ASSIGN_OR_RETURN(const LinkInfo link, GetLink(host, spec.host_name));
    if (const std::string exposure = VethExposure(link.facts, group_); !exposure.empty()) {
      return absl::FailedPreconditionError(absl::StrCat("the node's stack would handle frames of ", spec.host_name,
                                                        ": ", exposure));
    }
    return absl::OkStatus();
  };
  if (absl::Status configured = configure(); !configured.ok()) {
    (void)DeleteLink(host, spec.host_name);
    return Annotate(configured, absl::StrCat("configuring ", spec.peer_name, " in netns \"", spec.netns,
                                             "\" (veth removed again)"));
  }
  return absl::OkStatus();
}

absl::Status NetlinkWorkloadLinks::Delete(const std::string& host_name) {
  SR_ASSIGN_OR_RETURN(RtnlSocket host, RtnlSocket::Open(timeout_));
  return DeleteLink(host, host_name);
}

absl::StatusOr<bool> NetlinkWorkloadLinks::Exists(const std::string& host_name) {
  SR_ASSIGN_OR_RETURN(RtnlSocket host, RtnlSocket::Open(timeout_));
  absl::StatusOr<int> index = host.InterfaceIndex(host_name);
  if (absl::IsNotFound(index.status())) return false;
  if (!index.ok()) return index.status();
  return true;
}

absl::StatusOr<WorkloadLinks::OwnedLinks> NetlinkWorkloadLinks::ListOwned() {
  SR_ASSIGN_OR_RETURN(RtnlSocket host, RtnlSocket::Open(timeout_));
  Message message(RTM_GETLINK);
  message.Extra<ifinfomsg>()->ifi_family = AF_UNSPEC;
  std::map<std::string, LinkInfo> owned;  // a name twice in an interrupted dump counts once
  SR_ASSIGN_OR_RETURN(const bool complete, host.Dump(
                                               message.header(),
                                               [&](const struct nlmsghdr* reply) {
                                                 LinkInfo link = ParseLink(reply);
                                                 if ((link.kind == "veth" || link.kind == "tun") &&
                                                     IsNetdVethName(link.name) &&
                                                     absl::StartsWith(link.alias, kVethAliasPrefix)) {
                                                   owned[link.name] = std::move(link);
                                                 }
                                               },
                                               "listing links"));
  SR_ASSIGN_OR_RETURN(const auto addresses, AddressesByIndex(host));
  OwnedLinks result;
  result.complete = complete;
  for (auto& [name, link] : owned) {
    if (auto it = addresses.find(link.index); it != addresses.end()) link.facts.addresses = it->second.size();
    result.links.push_back({name, VethExposure(link.facts, group_)});
  }
  return result;
}

absl::Status NetlinkWorkloadLinks::Isolate(const std::string& host_name) {
  SR_ASSIGN_OR_RETURN(RtnlSocket host, RtnlSocket::Open(timeout_));
  SR_ASSIGN_OR_RETURN(const LinkInfo link, GetLink(host, host_name));
  if (!link.facts.noarp || link.facts.group != group_) {
    SR_RETURN_IF_ERROR(SetNoArpAndGroup(host, link.index, host_name, group_));
  }
  SR_RETURN_IF_ERROR(ApplyDeviceSysctls(host_name));
  SR_ASSIGN_OR_RETURN(const auto addresses, AddressesByIndex(host));
  if (auto it = addresses.find(link.index); it != addresses.end()) {
    for (const auto& [family, bytes] : it->second) {
      Message remove(RTM_DELADDR);
      ifaddrmsg* info = remove.Extra<ifaddrmsg>();
      info->ifa_family = static_cast<uint8_t>(family);
      info->ifa_prefixlen = bytes.empty() ? 0 : bytes[0];
      info->ifa_index = static_cast<uint32_t>(link.index);
      if (bytes.size() > 1) mnl_attr_put(remove.header(), IFA_LOCAL, bytes.size() - 1, bytes.data() + 1);
      if (bytes.size() > 1) mnl_attr_put(remove.header(), IFA_ADDRESS, bytes.size() - 1, bytes.data() + 1);
      absl::Status removed = host.Transact(remove.header(), absl::StrCat("removing an address of ", host_name));
      if (!removed.ok() && !absl::IsNotFound(removed)) return removed;
    }
  }
  SR_ASSIGN_OR_RETURN(const LinkInfo after, GetLink(host, host_name));
  if (const std::string exposure = VethExposure(after.facts, group_); !exposure.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(host_name, " is still exposed to the node's stack: ", exposure));
  }
  return absl::OkStatus();
}

}  // namespace strongroom::netd
