// A NETLINK_ROUTE socket (libmnl) plus an AF_INET datagram socket for interface ioctls, both
// bound to one network namespace, with a receive timeout so no kernel call can block forever.
#pragma once

#include <linux/netlink.h>

#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

struct mnl_socket;

namespace strongroom::netd {

// Maps an errno to a status naming `what`: ENOENT/ENODEV NOT_FOUND, EEXIST ALREADY_EXISTS,
// EAGAIN/ETIMEDOUT UNAVAILABLE, anything else INTERNAL.
absl::Status ErrnoStatus(int error, absl::string_view what);

class RtnlSocket {
 public:
  // In the calling thread's network namespace.
  static absl::StatusOr<RtnlSocket> Open(absl::Duration timeout);
  // In the network namespace `netns_fd` refers to: a short-lived thread enters it and opens the
  // sockets there (a socket stays in the namespace it was created in), so no thread of the
  // caller ever changes namespace.
  static absl::StatusOr<RtnlSocket> OpenIn(int netns_fd, absl::Duration timeout);

  RtnlSocket(RtnlSocket&& other) noexcept;
  RtnlSocket& operator=(RtnlSocket&& other) noexcept;
  RtnlSocket(const RtnlSocket&) = delete;
  RtnlSocket& operator=(const RtnlSocket&) = delete;
  ~RtnlSocket();

  // Fills in sequence number and NLM_F_REQUEST|NLM_F_ACK, sends, and waits for the kernel's ack.
  absl::Status Transact(struct nlmsghdr* request, absl::string_view what);
  // The same for a request that gets data back (e.g. RTM_GETLINK of one link): on_reply sees each
  // reply message before the ack.
  absl::Status Transact(struct nlmsghdr* request, absl::string_view what,
                        const std::function<void(const struct nlmsghdr*)>& on_reply);
  // Sends a NLM_F_DUMP request and calls on_message for every reply until the dump ends. Returns
  // whether the dump was consistent: false when the kernel flagged it interrupted (NLM_F_DUMP_INTR:
  // the list changed meanwhile, as links come and go on a busy node), in which case it may have
  // skipped or repeated entries, so what it returned exists (or existed) but an entry it lacks may
  // exist too. One pass, whatever the churn: callers confirm absences one by one instead of
  // dumping again (which under enough churn never ends).
  absl::StatusOr<bool> Dump(struct nlmsghdr* request,
                            const std::function<void(const struct nlmsghdr*)>& on_message, absl::string_view what);

  // The interface's index, or NOT_FOUND.
  absl::StatusOr<int> InterfaceIndex(const std::string& name) const;
  // ETHTOOL_STXCSUM: turns transmit checksum offload off (veths otherwise hand the userspace
  // datapath packets with unfinished checksums, and TCP/UDP fail while ping works).
  absl::Status DisableTxChecksumOffload(const std::string& name) const;

  uint32_t NextSequence() { return ++sequence_; }

 private:
  RtnlSocket(struct mnl_socket* netlink, int inet_fd);
  void Close();

  struct mnl_socket* netlink_ = nullptr;  // owned
  int inet_fd_ = -1;                      // owned; for SIOCGIFINDEX / SIOCETHTOOL
  uint32_t port_id_ = 0;                  // netlink port id of netlink_
  uint32_t sequence_ = 0;                 // last sequence number used
};

}  // namespace strongroom::netd
