#include "services/netd/netlink/rtnl_socket.h"

#include <errno.h>
#include <libmnl/libmnl.h>
#include <linux/ethtool.h>
#include <linux/sockios.h>
#include <net/if.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cstring>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"

namespace strongroom::netd {

namespace {

// A signal handled elsewhere in the process (OVS installs handlers, so do test harnesses) may
// interrupt a wait; that is not a failure of the request, so the call is simply repeated.
ssize_t SendRetryingEintr(struct mnl_socket* socket, const struct nlmsghdr* request) {
  ssize_t sent;
  do {
    sent = mnl_socket_sendto(socket, request, request->nlmsg_len);
  } while (sent < 0 && errno == EINTR);
  return sent;
}

ssize_t ReceiveRetryingEintr(struct mnl_socket* socket, std::vector<char>& buffer) {
  ssize_t received;
  do {
    received = mnl_socket_recvfrom(socket, buffer.data(), buffer.size());
  } while (received < 0 && errno == EINTR);
  return received;
}

}  // namespace

absl::Status ErrnoStatus(int error, absl::string_view what) {
  const std::string message = absl::StrCat(what, ": ", std::strerror(error));
  switch (error) {
    case ENOENT:
    case ENODEV:
      return absl::NotFoundError(message);
    case EEXIST:
      return absl::AlreadyExistsError(message);
    case EAGAIN:
    case ETIMEDOUT:
      return absl::UnavailableError(absl::StrCat(what, ": the kernel did not answer before the deadline"));
    default:
      return absl::InternalError(message);
  }
}

RtnlSocket::RtnlSocket(struct mnl_socket* netlink, int inet_fd)
    : netlink_(netlink), inet_fd_(inet_fd), port_id_(mnl_socket_get_portid(netlink)) {}

RtnlSocket::RtnlSocket(RtnlSocket&& other) noexcept { *this = std::move(other); }

RtnlSocket& RtnlSocket::operator=(RtnlSocket&& other) noexcept {
  if (this != &other) {
    Close();
    netlink_ = other.netlink_;
    inet_fd_ = other.inet_fd_;
    port_id_ = other.port_id_;
    sequence_ = other.sequence_;
    other.netlink_ = nullptr;
    other.inet_fd_ = -1;
  }
  return *this;
}

RtnlSocket::~RtnlSocket() { Close(); }

void RtnlSocket::Close() {
  if (netlink_ != nullptr) mnl_socket_close(netlink_);
  if (inet_fd_ >= 0) close(inet_fd_);
  netlink_ = nullptr;
  inet_fd_ = -1;
}

absl::StatusOr<RtnlSocket> RtnlSocket::Open(absl::Duration timeout) {
  struct mnl_socket* netlink = mnl_socket_open2(NETLINK_ROUTE, SOCK_CLOEXEC);
  if (netlink == nullptr) return ErrnoStatus(errno, "opening a netlink socket");
  if (mnl_socket_bind(netlink, 0, MNL_SOCKET_AUTOPID) < 0) {
    const int error = errno;
    mnl_socket_close(netlink);
    return ErrnoStatus(error, "binding a netlink socket");
  }
  const timeval tv = absl::ToTimeval(timeout);
  // Acks are always wanted: with them every error surfaces at the request that caused it.
  const int on = 1;
  if (setsockopt(mnl_socket_get_fd(netlink), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0 ||
      setsockopt(mnl_socket_get_fd(netlink), SOL_NETLINK, NETLINK_EXT_ACK, &on, sizeof on) != 0) {
    const int error = errno;
    mnl_socket_close(netlink);
    return ErrnoStatus(error, "configuring a netlink socket");
  }
  const int inet = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (inet < 0) {
    const int error = errno;
    mnl_socket_close(netlink);
    return ErrnoStatus(error, "opening an ioctl socket");
  }
  return RtnlSocket(netlink, inet);
}

absl::StatusOr<RtnlSocket> RtnlSocket::OpenIn(int netns_fd, absl::Duration timeout) {
  absl::StatusOr<RtnlSocket> result = absl::InternalError("netns worker did not run");
  std::thread worker([&] {
    if (setns(netns_fd, CLONE_NEWNET) != 0) {
      result = ErrnoStatus(errno, "entering the network namespace");
      return;
    }
    result = Open(timeout);
  });
  worker.join();
  return result;
}

absl::Status RtnlSocket::Transact(struct nlmsghdr* request, absl::string_view what) {
  return Transact(request, what, nullptr);
}

absl::Status RtnlSocket::Transact(struct nlmsghdr* request, absl::string_view what,
                                  const std::function<void(const struct nlmsghdr*)>& on_reply) {
  request->nlmsg_flags |= NLM_F_REQUEST | NLM_F_ACK;
  request->nlmsg_seq = NextSequence();
  if (SendRetryingEintr(netlink_, request) < 0) return ErrnoStatus(errno, what);
  std::vector<char> buffer(MNL_SOCKET_BUFFER_SIZE);
  for (;;) {
    const ssize_t received = ReceiveRetryingEintr(netlink_, buffer);
    if (received < 0) return ErrnoStatus(errno, what);
    auto deliver = [](const struct nlmsghdr* reply, void* data) {
      const auto* callback = static_cast<const std::function<void(const struct nlmsghdr*)>*>(data);
      if (*callback) (*callback)(reply);
      return MNL_CB_OK;
    };
    const int result = mnl_cb_run(buffer.data(), received, request->nlmsg_seq, port_id_, +deliver,
                                  const_cast<std::function<void(const struct nlmsghdr*)>*>(&on_reply));
    if (result == MNL_CB_ERROR) return ErrnoStatus(errno, what);
    if (result == MNL_CB_STOP) return absl::OkStatus();
  }
}

absl::StatusOr<bool> RtnlSocket::Dump(struct nlmsghdr* request,
                                      const std::function<void(const struct nlmsghdr*)>& on_message,
                                      absl::string_view what) {
  request->nlmsg_flags |= NLM_F_REQUEST | NLM_F_DUMP;
  request->nlmsg_seq = NextSequence();
  if (SendRetryingEintr(netlink_, request) < 0) return ErrnoStatus(errno, what);
  // Dumps come in multi-part messages of up to 32 KiB (the kernel's recommended buffer).
  std::vector<char> buffer(32768);
  bool consistent = true;
  for (;;) {
    const ssize_t received = ReceiveRetryingEintr(netlink_, buffer);
    if (received < 0) return ErrnoStatus(errno, what);
    int remaining = static_cast<int>(received);
    for (const struct nlmsghdr* message = reinterpret_cast<const struct nlmsghdr*>(buffer.data());
         mnl_nlmsg_ok(message, remaining); message = mnl_nlmsg_next(message, &remaining)) {
      if (!mnl_nlmsg_seq_ok(message, request->nlmsg_seq) || !mnl_nlmsg_portid_ok(message, port_id_)) continue;
      if ((message->nlmsg_flags & NLM_F_DUMP_INTR) != 0) consistent = false;
      if (message->nlmsg_type == NLMSG_ERROR || message->nlmsg_type == NLMSG_DONE) {
        const int error = mnl_nlmsg_get_payload_len(message) >= sizeof(int)
                              ? *static_cast<const int*>(mnl_nlmsg_get_payload(message))
                              : 0;
        if (error < 0) return ErrnoStatus(-error, what);
        return consistent;
      }
      if (message->nlmsg_type >= NLMSG_MIN_TYPE) on_message(message);
    }
  }
}

absl::StatusOr<int> RtnlSocket::InterfaceIndex(const std::string& name) const {
  struct ifreq request {};
  if (name.size() >= sizeof request.ifr_name) return absl::InvalidArgumentError("interface name too long");
  std::memcpy(request.ifr_name, name.c_str(), name.size() + 1);
  if (ioctl(inet_fd_, SIOCGIFINDEX, &request) != 0)
    return ErrnoStatus(errno, absl::StrCat("interface ", name));
  return request.ifr_ifindex;
}

absl::Status RtnlSocket::DisableTxChecksumOffload(const std::string& name) const {
  struct ethtool_value value {};
  value.cmd = ETHTOOL_STXCSUM;
  value.data = 0;
  struct ifreq request {};
  if (name.size() >= sizeof request.ifr_name) return absl::InvalidArgumentError("interface name too long");
  std::memcpy(request.ifr_name, name.c_str(), name.size() + 1);
  request.ifr_data = reinterpret_cast<char*>(&value);
  if (ioctl(inet_fd_, SIOCETHTOOL, &request) != 0) {
    return ErrnoStatus(errno, absl::StrCat("turning checksum offload off on ", name));
  }
  return absl::OkStatus();
}

}  // namespace strongroom::netd
