#include "services/host_agent/container/netns.h"

#include <fcntl.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <functional>
#include <set>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "services/host_agent/mounts.h"

namespace strongroom::host_agent {
namespace {

constexpr const char* kNetnsDir = "/run/netns";
constexpr size_t kMaxName = 64;

absl::Status Errno(absl::string_view what) {
  return absl::InternalError(absl::StrCat(what, ": ", std::strerror(errno)));
}

std::set<std::pair<dev_t, ino_t>> NsId(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) return {};
  return {{st.st_dev, st.st_ino}};
}

}  // namespace

absl::Status EnsureNetnsDir() {
  mkdir("/run", 0755);
  mkdir(kNetnsDir, 0755);
  if (IsMountPoint(kNetnsDir)) return absl::OkStatus();
  if (mount(kNetnsDir, kNetnsDir, nullptr, MS_BIND | MS_REC, nullptr) != 0) return Errno("bind /run/netns");
  if (mount(nullptr, kNetnsDir, nullptr, MS_SHARED | MS_REC, nullptr) != 0) return Errno("share /run/netns");
  return absl::OkStatus();
}

std::string NetnsNameFor(const std::string& workload_id) {
  std::string name = "sr-" + workload_id;
  if (name.size() <= kMaxName) return name;
  return absl::StrFormat("sr-%s-%012x", workload_id.substr(0, 47),
                         std::hash<std::string>{}(workload_id)&0xffffffffffffULL);
}

std::string NetnsPath(const std::string& name) { return absl::StrCat(kNetnsDir, "/", name); }

absl::Status CreateNetns(const std::string& name) {
  if (absl::Status s = EnsureNetnsDir(); !s.ok()) return s;
  const std::string path = NetnsPath(name);
  const int fd = open(path.c_str(), O_RDONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0444);
  if (fd < 0) {
    if (errno == EEXIST) return absl::AlreadyExistsError(absl::StrCat("netns ", path, " exists"));
    return Errno(absl::StrCat("create ", path));
  }
  close(fd);
  absl::Status status;
  // unshare(CLONE_NEWNET) changes only the calling thread, which ends right after.
  std::thread([&] {
    if (unshare(CLONE_NEWNET) != 0) {
      status = Errno("unshare(CLONE_NEWNET)");
      return;
    }
    const std::string self = absl::StrCat("/proc/self/task/", syscall(SYS_gettid), "/ns/net");
    if (mount(self.c_str(), path.c_str(), nullptr, MS_BIND, nullptr) != 0) {
      status = Errno(absl::StrCat("bind ", path));
      return;
    }
    const int sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (sock < 0) {
      status = Errno("socket");
      return;
    }
    ifreq ifr{};
    std::strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
    if (ioctl(sock, SIOCGIFFLAGS, &ifr) == 0) {
      ifr.ifr_flags |= IFF_UP;
      if (ioctl(sock, SIOCSIFFLAGS, &ifr) != 0) status = Errno("bring lo up");
    }
    close(sock);
  }).join();
  if (!status.ok()) (void)DeleteNetns(name);
  return status;
}

absl::StatusOr<int> KillProcessesInNetns(const std::string& name, absl::Duration timeout) {
  const auto target = NsId(NetnsPath(name));
  if (target.empty()) return 0;
  const absl::Time deadline = absl::Now() + timeout;
  int found = 0;
  for (int round = 0;; ++round) {
    int live = 0;
    std::error_code ec;
    for (const auto& entry : std::filesystem::directory_iterator("/proc", ec)) {
      int pid = 0;
      if (!absl::SimpleAtoi(entry.path().filename().string(), &pid) || pid <= 1) continue;
      if (NsId(entry.path().string() + "/ns/net") != target) continue;
      // A zombie keeps its ns link until reaped; it has no memory or files left.
      std::string stat_path = entry.path().string() + "/stat";
      char buf[512] = {0};
      const int fd = open(stat_path.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd >= 0) {
        (void)!read(fd, buf, sizeof buf - 1);
        close(fd);
      }
      const char* paren = std::strrchr(buf, ')');
      if (paren != nullptr && paren[1] == ' ' && paren[2] == 'Z') continue;
      ++live;
      if (round == 0) ++found;
      kill(pid, SIGKILL);
    }
    if (live == 0) return found;
    if (absl::Now() > deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat(live, " processes in netns ", name, " survived SIGKILL"));
    }
    absl::SleepFor(absl::Milliseconds(5));
  }
}

absl::Status DeleteNetns(const std::string& name) {
  const std::string path = NetnsPath(name);
  if (access(path.c_str(), F_OK) != 0) return absl::OkStatus();
  umount2(path.c_str(), MNT_DETACH);
  if (unlink(path.c_str()) != 0 && errno != ENOENT) return Errno(absl::StrCat("unlink ", path));
  return absl::OkStatus();
}

}  // namespace strongroom::host_agent
