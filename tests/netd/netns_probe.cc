#include "tests/netd/netns_probe.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace strongroom::netd::testing {
namespace {

absl::Status Errno(const std::string& what) {
  return absl::UnavailableError(absl::StrCat(what, ": ", strerror(errno)));
}

absl::StatusOr<sockaddr_in> Address(const std::string& ip, int port) {
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  if (inet_pton(AF_INET, ip.c_str(), &address.sin_addr) != 1) {
    return absl::InvalidArgumentError(absl::StrCat("bad IPv4 address ", ip));
  }
  return address;
}

int RemainingMs(absl::Time deadline) {
  return static_cast<int>(std::max<int64_t>(0, absl::ToInt64Milliseconds(deadline - absl::Now())));
}

absl::Status BindSource(int fd, const std::string& source_ip, int port) {
  const int on = 1;
  // IP_TRANSPARENT (root): the kernel then also routes packets from an address that is not local,
  // which is what spoofing needs; IP_FREEBIND alone only allows the bind.
  setsockopt(fd, SOL_IP, IP_FREEBIND, &on, sizeof on);
  if (!source_ip.empty()) setsockopt(fd, SOL_IP, IP_TRANSPARENT, &on, sizeof on);
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
  absl::StatusOr<sockaddr_in> address = Address(source_ip.empty() ? "0.0.0.0" : source_ip, port);
  if (!address.ok()) return address.status();
  if (bind(fd, reinterpret_cast<const sockaddr*>(&*address), sizeof *address) != 0) return Errno("bind");
  return absl::OkStatus();
}

}  // namespace

UniqueFd& UniqueFd::operator=(UniqueFd&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) close(fd_);
    fd_ = other.release();
  }
  return *this;
}

UniqueFd::~UniqueFd() {
  if (fd_ >= 0) close(fd_);
}

absl::StatusOr<UniqueFd> SocketIn(const std::string& netns_path, int domain, int type) {
  absl::StatusOr<UniqueFd> result = absl::InternalError("not run");
  std::thread worker([&] {
    const int ns = open(netns_path.c_str(), O_RDONLY | O_CLOEXEC);
    if (ns < 0) {
      result = Errno(absl::StrCat("open ", netns_path));
      return;
    }
    const int entered = setns(ns, CLONE_NEWNET);
    close(ns);
    if (entered != 0) {
      result = Errno(absl::StrCat("setns ", netns_path));
      return;
    }
    const int fd = socket(domain, type | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      result = Errno("socket");
      return;
    }
    result = UniqueFd(fd);
  });
  worker.join();
  return result;
}

absl::StatusOr<UniqueFd> TcpConnect(const std::string& netns_path, const std::string& ip, int port,
                                    absl::Duration timeout, const std::string& source_ip) {
  absl::StatusOr<UniqueFd> fd = SocketIn(netns_path, AF_INET, SOCK_STREAM | SOCK_NONBLOCK);
  if (!fd.ok()) return fd.status();
  if (!source_ip.empty()) {
    if (absl::Status s = BindSource(fd->get(), source_ip, 0); !s.ok()) return s;
  }
  absl::StatusOr<sockaddr_in> address = Address(ip, port);
  if (!address.ok()) return address.status();
  if (connect(fd->get(), reinterpret_cast<const sockaddr*>(&*address), sizeof *address) != 0 &&
      errno != EINPROGRESS) {
    return Errno("connect");
  }
  pollfd pfd{fd->get(), POLLOUT, 0};
  const int ready = poll(&pfd, 1, static_cast<int>(absl::ToInt64Milliseconds(timeout)));
  if (ready == 0)
    return absl::DeadlineExceededError(absl::StrCat("connect to ", ip, ":", port, " timed out"));
  int error = 0;
  socklen_t length = sizeof error;
  getsockopt(fd->get(), SOL_SOCKET, SO_ERROR, &error, &length);
  if (ready < 0 || error != 0) {
    return absl::UnavailableError(absl::StrCat("connect to ", ip, ":", port, ": ", strerror(error)));
  }
  return fd;
}

bool EchoRoundTrip(int fd, const std::string& payload, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  if (send(fd, payload.data(), payload.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(payload.size()))
    return false;
  std::string received;
  while (received.size() < payload.size()) {
    pollfd pfd{fd, POLLIN, 0};
    if (poll(&pfd, 1, RemainingMs(deadline)) <= 0) return false;
    char buffer[256];
    const ssize_t n = recv(fd, buffer, sizeof buffer, MSG_DONTWAIT);
    if (n <= 0) return false;
    received.append(buffer, static_cast<size_t>(n));
  }
  return received == payload;
}

bool TcpEchoWorks(const std::string& netns_path, const std::string& ip, int port, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  absl::StatusOr<UniqueFd> fd = TcpConnect(netns_path, ip, port, timeout);
  return fd.ok() &&
         EchoRoundTrip(fd->get(), "ping\n", std::max(deadline - absl::Now(), absl::Milliseconds(300)));
}

bool TcpConnects(const std::string& netns_path, const std::string& ip, int port, absl::Duration timeout,
                 const std::string& source_ip) {
  return TcpConnect(netns_path, ip, port, timeout, source_ip).ok();
}

absl::StatusOr<UniqueFd> TcpListen(const std::string& netns_path, int port) {
  absl::StatusOr<UniqueFd> fd = SocketIn(netns_path, AF_INET, SOCK_STREAM);
  if (!fd.ok()) return fd.status();
  if (absl::Status s = BindSource(fd->get(), "", port); !s.ok()) return s;
  if (listen(fd->get(), 16) != 0) return Errno("listen");
  return fd;
}

absl::StatusOr<UniqueFd> UdpBind(const std::string& netns_path, int port) {
  absl::StatusOr<UniqueFd> fd = SocketIn(netns_path, AF_INET, SOCK_DGRAM);
  if (!fd.ok()) return fd.status();
  if (absl::Status s = BindSource(fd->get(), "", port); !s.ok()) return s;
  return fd;
}

absl::Status UdpSend(const std::string& netns_path, const std::string& ip, int port,
                     const std::string& payload, const std::string& source_ip) {
  absl::StatusOr<UniqueFd> fd = SocketIn(netns_path, AF_INET, SOCK_DGRAM);
  if (!fd.ok()) return fd.status();
  if (!source_ip.empty()) {
    if (absl::Status s = BindSource(fd->get(), source_ip, 0); !s.ok()) return s;
  }
  absl::StatusOr<sockaddr_in> address = Address(ip, port);
  if (!address.ok()) return address.status();
  if (sendto(fd->get(), payload.data(), payload.size(), 0, reinterpret_cast<const sockaddr*>(&*address),
             sizeof *address) != static_cast<ssize_t>(payload.size())) {
    return Errno("sendto");
  }
  return absl::OkStatus();
}

bool UdpReceived(int fd, const std::string& payload, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  for (;;) {
    pollfd pfd{fd, POLLIN, 0};
    if (poll(&pfd, 1, RemainingMs(deadline)) <= 0) return false;
    char buffer[2048];
    const ssize_t n = recv(fd, buffer, sizeof buffer, MSG_DONTWAIT);
    if (n > 0 && std::string(buffer, static_cast<size_t>(n)) == payload) return true;
  }
}

}  // namespace strongroom::netd::testing
