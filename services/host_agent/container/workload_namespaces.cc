#include "services/host_agent/container/workload_namespaces.h"

#include <fcntl.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/unique_fd.h"
#include "services/host_agent/container/netns.h"

namespace strongroom::host_agent {
namespace {

absl::Status Errno(absl::string_view what, int err = errno) {
  return absl::InternalError(absl::StrCat(what, ": ", std::strerror(err)));
}

// What the child reports once its namespaces exist: 0, or the errno of the step that failed (1: unshare,
// 2: bringing lo up).
struct ChildReport {
  int step = 0;
  int err = 0;
};

absl::Status WriteFile(const std::string& path, const std::string& text) {
  const int fd = open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return Errno(absl::StrCat("open ", path));
  const ssize_t n = write(fd, text.data(), text.size());
  const int err = errno;
  close(fd);
  if (n != static_cast<ssize_t>(text.size())) return Errno(absl::StrCat("write ", path), err);
  return absl::OkStatus();
}

// Creates the empty file a namespace is bound onto.
absl::Status CreateBindTarget(const std::string& path) {
  const int fd = open(path.c_str(), O_RDONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0444);
  if (fd < 0) {
    if (errno == EEXIST) return absl::AlreadyExistsError(absl::StrCat(path, " exists"));
    return Errno(absl::StrCat("create ", path));
  }
  close(fd);
  return absl::OkStatus();
}

void RemoveBind(const std::string& path) {
  umount2(path.c_str(), MNT_DETACH);
  unlink(path.c_str());
}

// The child: new user and network namespaces (after fork it is single-threaded, so unshare of a user
// namespace is allowed), loopback up (it holds every capability in its new user namespace, which owns the new
// netns), report, then wait until the parent has bound both namespaces (EOF on `hold`). Syscalls only.
[[noreturn]] void Child(int report_fd, int hold_fd) {
  ChildReport r;
  if (unshare(CLONE_NEWUSER | CLONE_NEWNET) != 0) {
    r = {1, errno};
  } else {
    const int sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    ifreq ifr{};
    std::memcpy(ifr.ifr_name, "lo", 3);
    if (sock < 0 || ioctl(sock, SIOCGIFFLAGS, &ifr) != 0) {
      r = {2, errno};
    } else {
      ifr.ifr_flags |= IFF_UP;
      if (ioctl(sock, SIOCSIFFLAGS, &ifr) != 0) r = {2, errno};
    }
    if (sock >= 0) close(sock);
  }
  (void)!write(report_fd, &r, sizeof r);
  char c;
  while (read(hold_fd, &c, 1) < 0 && errno == EINTR) {
  }
  _exit(r.step == 0 ? 0 : 1);
}

}  // namespace

std::string UsernsFileIn(const std::string& workload_dir) { return workload_dir + "/userns"; }
std::string TunNodeIn(const std::string& workload_dir) { return workload_dir + "/tun"; }

absl::Status CreateWorkloadNamespaces(const std::string& netns_name, const std::string& userns_file,
                                      uint32_t uid_base, uint32_t uid_count, absl::Duration timeout) {
  if (uid_count == 0) return absl::InvalidArgumentError("user namespace: uid_count is 0");
  if (absl::Status s = EnsureNetnsDir(); !s.ok()) return s;
  const std::string netns_path = NetnsPath(netns_name);
  if (access(netns_path.c_str(), F_OK) == 0)
    return absl::AlreadyExistsError(absl::StrCat("netns ", netns_path, " exists"));
  if (access(userns_file.c_str(), F_OK) == 0)
    return absl::AlreadyExistsError(absl::StrCat("user namespace file ", userns_file, " exists"));
  int report_fds[2], hold_fds[2];
  if (pipe2(report_fds, O_CLOEXEC) != 0) return Errno("pipe2");
  UniqueFd report_read(report_fds[0]), report_write(report_fds[1]);
  if (pipe2(hold_fds, O_CLOEXEC) != 0) return Errno("pipe2");
  UniqueFd hold_read(hold_fds[0]), hold_write(hold_fds[1]);
  const pid_t pid = fork();
  if (pid < 0) return Errno("fork");
  if (pid == 0) {
    // Only its own ends: the parent's end of `hold` open here would keep the child's read from seeing EOF.
    close(report_fds[0]);
    close(hold_fds[1]);
    Child(report_fds[1], hold_fds[0]);
  }
  report_write.Reset();
  hold_read.Reset();

  absl::Status status;
  ChildReport r;
  size_t got = 0;
  const absl::Time deadline = absl::Now() + timeout;
  while (got < sizeof r) {
    const int left_ms = static_cast<int>(absl::ToInt64Milliseconds(deadline - absl::Now()));
    if (left_ms <= 0) break;
    pollfd p{report_read.get(), POLLIN, 0};
    const int n = poll(&p, 1, left_ms);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) continue;
    const ssize_t k = read(report_read.get(), reinterpret_cast<char*>(&r) + got, sizeof r - got);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) break;
    got += static_cast<size_t>(k);
  }
  bool netns_created = false, userns_created = false;  // by this call: removed again on failure
  if (got != sizeof r) {
    status = absl::DeadlineExceededError("user+network namespace child: no report");
  } else if (r.step != 0) {
    status = Errno(r.step == 1 ? "unshare(CLONE_NEWUSER|CLONE_NEWNET)" : "bring lo up", r.err);
  } else {
    // The same mapping runc writes for today's containers: container root is host uid_base.
    const std::string map = absl::StrCat("0 ", uid_base, " ", uid_count, "\n");
    const std::string proc = absl::StrCat("/proc/", pid);
    status = WriteFile(proc + "/uid_map", map);
    if (status.ok()) status = WriteFile(proc + "/gid_map", map);
    if (status.ok()) status = CreateBindTarget(netns_path);
    netns_created = status.ok();
    if (status.ok() && mount((proc + "/ns/net").c_str(), netns_path.c_str(), nullptr, MS_BIND, nullptr) != 0)
      status = Errno(absl::StrCat("bind ", netns_path));
    if (status.ok()) {
      status = CreateBindTarget(userns_file);
      userns_created = status.ok();
    }
    if (status.ok() &&
        mount((proc + "/ns/user").c_str(), userns_file.c_str(), nullptr, MS_BIND, nullptr) != 0)
      status = Errno(absl::StrCat("bind ", userns_file));
  }
  if (!status.ok()) kill(pid, SIGKILL);
  hold_write.Reset();  // the child may go
  int wstatus = 0;
  while (waitpid(pid, &wstatus, 0) < 0 && errno == EINTR) {
  }
  if (!status.ok()) {
    if (netns_created) RemoveBind(netns_path);
    if (userns_created) RemoveBind(userns_file);
    return status;
  }
  return absl::OkStatus();
}

absl::Status RemoveUsernsFile(const std::string& userns_file) {
  if (access(userns_file.c_str(), F_OK) != 0) return absl::OkStatus();
  if (umount2(userns_file.c_str(), MNT_DETACH) != 0 && errno != EINVAL)
    return Errno(absl::StrCat("unmount ", userns_file));
  if (unlink(userns_file.c_str()) != 0 && errno != ENOENT) return Errno(absl::StrCat("unlink ", userns_file));
  return absl::OkStatus();
}

absl::Status CreateTunNode(const std::string& path, uint32_t owner) {
  unlink(path.c_str());
  if (mknod(path.c_str(), S_IFCHR | 0600, makedev(10, 200)) != 0) return Errno(absl::StrCat("mknod ", path));
  if (chown(path.c_str(), owner, owner) != 0 || chmod(path.c_str(), 0600) != 0) {
    const int err = errno;
    unlink(path.c_str());
    return Errno(absl::StrCat("chown/chmod ", path), err);
  }
  return absl::OkStatus();
}

}  // namespace strongroom::host_agent
