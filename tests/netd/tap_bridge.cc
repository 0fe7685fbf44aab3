// tap_bridge: a stand-in for a VM's NIC in netd's tests. It opens netd's tap in the namespace it
// runs in (the node's), exactly as qemu does through libvirt (TUNSETIFF on the persistent tap, a
// single queue), and relays every frame between it and a second, private tap named IFNAME that it
// creates inside WORKLOAD_NETNS. Configured there as a guest would configure its NIC (netd's MAC,
// address and gateway), that namespace then behaves as the VM: every frame its stack or a raw
// socket sends leaves through netd's tap, so the same attack matrix a container faces can be sent
// from behind a tap (tests/netd/netd_egress_test.cc), and witnesses see what gets through.
//
//   tap_bridge NODE_TAP WORKLOAD_NETNS IFNAME READY_FILE
//
// Writes READY_FILE once both taps are open; relays until SIGTERM. The private tap is not
// persistent, so it disappears when this process exits; netd's tap stays (netd owns it).
#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>

namespace {

volatile sig_atomic_t stop = 0;

int OpenTap(const char* name) {
  const int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
  if (fd < 0) return -1;
  struct ifreq request {};
  std::strncpy(request.ifr_name, name, IFNAMSIZ - 1);
  request.ifr_flags = IFF_TAP | IFF_NO_PI;
  if (ioctl(fd, TUNSETIFF, &request) != 0) {
    const int error = errno;
    close(fd);
    errno = error;
    return -1;
  }
  return fd;
}

// Copies one frame from `from` to `to`; false when `from` is closed or broken.
bool Relay(int from, int to) {
  char frame[65536];
  const ssize_t n = read(from, frame, sizeof(frame));
  if (n < 0) return errno == EINTR || errno == EAGAIN;
  if (n == 0) return false;
  // A frame the other side cannot take (its link down, say) is dropped, as a NIC would.
  (void)!write(to, frame, static_cast<size_t>(n));
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 5) {
    std::fprintf(stderr, "usage: tap_bridge NODE_TAP WORKLOAD_NETNS IFNAME READY_FILE\n");
    return 64;
  }
  struct sigaction action {};
  action.sa_handler = [](int) { stop = 1; };
  sigaction(SIGTERM, &action, nullptr);
  sigaction(SIGINT, &action, nullptr);

  const int node_tap = OpenTap(argv[1]);
  if (node_tap < 0) {
    std::fprintf(stderr, "tap_bridge: opening %s: %s\n", argv[1], std::strerror(errno));
    return 1;
  }
  const int netns = open(argv[2], O_RDONLY | O_CLOEXEC);
  if (netns < 0 || setns(netns, CLONE_NEWNET) != 0) {
    std::fprintf(stderr, "tap_bridge: entering %s: %s\n", argv[2], std::strerror(errno));
    return 1;
  }
  close(netns);
  const int guest_tap = OpenTap(argv[3]);
  if (guest_tap < 0) {
    std::fprintf(stderr, "tap_bridge: creating %s in %s: %s\n", argv[3], argv[2], std::strerror(errno));
    return 1;
  }
  std::ofstream(argv[4]) << "ready\n";

  struct pollfd fds[2] = {{node_tap, POLLIN, 0}, {guest_tap, POLLIN, 0}};
  while (!stop) {
    if (poll(fds, 2, 200) < 0) {
      if (errno == EINTR) continue;
      std::perror("tap_bridge: poll");
      return 1;
    }
    if ((fds[0].revents & POLLIN) && !Relay(node_tap, guest_tap)) break;
    if ((fds[1].revents & POLLIN) && !Relay(guest_tap, node_tap)) break;
    if ((fds[0].revents | fds[1].revents) & (POLLERR | POLLHUP | POLLNVAL)) break;
  }
  close(guest_tap);
  close(node_tap);
  return 0;
}
