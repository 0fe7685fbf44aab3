// Real packets from inside network namespaces, without spawning processes: a socket created in a
// namespace stays there, so a short-lived thread enters the namespace, creates the socket and
// exits, and the test then uses the socket from its own thread. Used to assert what netd's flows
// allow and block.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace strongroom::netd::testing {

// A file descriptor closed on destruction.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& other) noexcept : fd_(other.release()) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept;
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd();
  int get() const { return fd_; }
  int release() {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }

 private:
  int fd_ = -1;  // owned, or -1
};

// A socket(domain, type) in the namespace at `netns_path` (e.g. /run/netns/NAME).
absl::StatusOr<UniqueFd> SocketIn(const std::string& netns_path, int domain, int type);

// Connects over TCP from `netns_path` to ip:port within `timeout`; `source_ip` binds first
// (IP_TRANSPARENT, so it need not be configured there). DEADLINE_EXCEEDED or UNAVAILABLE when the
// connection cannot be made: what a dropped SYN looks like.
absl::StatusOr<UniqueFd> TcpConnect(const std::string& netns_path, const std::string& ip, int port,
                                    absl::Duration timeout, const std::string& source_ip = "");

// Whether a TCP connection can be made and carries one echo round trip (the outside services
// are echo servers).
bool TcpEchoWorks(const std::string& netns_path, const std::string& ip, int port,
                  absl::Duration timeout = absl::Milliseconds(1500));
// Whether a TCP connection can be made at all (the handshake completes).
bool TcpConnects(const std::string& netns_path, const std::string& ip, int port,
                 absl::Duration timeout = absl::Milliseconds(1500), const std::string& source_ip = "");

// Sends `payload` on a connected socket and waits for it to come back.
bool EchoRoundTrip(int fd, const std::string& payload, absl::Duration timeout);

// A TCP listener on 0.0.0.0:port in the namespace (the kernel completes handshakes from its
// backlog; nothing needs to accept).
absl::StatusOr<UniqueFd> TcpListen(const std::string& netns_path, int port);

// A UDP socket bound to 0.0.0.0:port in the namespace.
absl::StatusOr<UniqueFd> UdpBind(const std::string& netns_path, int port);
// Sends one datagram from the namespace, from `source_ip` if given (IP_TRANSPARENT: spoofing).
absl::Status UdpSend(const std::string& netns_path, const std::string& ip, int port,
                     const std::string& payload, const std::string& source_ip = "");
// Whether a datagram with exactly `payload` arrives on `fd` within `timeout` (others are skipped).
bool UdpReceived(int fd, const std::string& payload, absl::Duration timeout);

}  // namespace strongroom::netd::testing
