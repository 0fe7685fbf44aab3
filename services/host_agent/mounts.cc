#include "services/host_agent/mounts.h"

#include <fcntl.h>
#include <linux/loop.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "common/log.h"

namespace strongroom::host_agent {
namespace {

absl::Status Errno(absl::string_view what) {
  const int e = errno;
  return absl::Status(e == EBUSY ? absl::StatusCode::kFailedPrecondition : absl::StatusCode::kInternal,
                      absl::StrCat(what, ": ", std::strerror(e)));
}

// mountinfo escapes space, tab, newline and backslash as \ooo.
std::string Unescape(absl::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size()) {
      const int v = (s[i + 1] - '0') * 64 + (s[i + 2] - '0') * 8 + (s[i + 3] - '0');
      out.push_back(static_cast<char>(v));
      i += 3;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

std::vector<std::string> AllMountPoints() {
  std::vector<std::string> points;
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    std::vector<absl::string_view> f = absl::StrSplit(line, ' ');
    if (f.size() > 4) points.push_back(Unescape(f[4]));
  }
  return points;
}

std::string ReadSysfs(const std::string& path) {
  std::ifstream in(path);
  std::string s;
  std::getline(in, s);
  return s;
}

}  // namespace

std::vector<std::string> MountsUnder(const std::string& prefix) {
  const std::string dir = absl::StrCat(absl::StripSuffix(prefix, "/"), "/");
  std::vector<std::string> out;
  for (const std::string& p : AllMountPoints()) {
    if (p == dir.substr(0, dir.size() - 1) || absl::StartsWith(p, dir)) out.push_back(p);
  }
  // Deepest first; a path mounted twice appears twice and is unmounted twice.
  std::stable_sort(out.begin(), out.end(), [](const std::string& a, const std::string& b) {
    return std::count(a.begin(), a.end(), '/') > std::count(b.begin(), b.end(), '/');
  });
  return out;
}

bool IsMountPoint(const std::string& path) {
  for (const std::string& p : AllMountPoints()) {
    if (p == path) return true;
  }
  return false;
}

absl::Status Unmount(const std::string& path, absl::Duration busy_retry) {
  const absl::Time deadline = absl::Now() + busy_retry;
  while (IsMountPoint(path)) {
    if (umount2(path.c_str(), UMOUNT_NOFOLLOW) == 0) continue;  // a path mounted twice: again
    if (errno == EINVAL || errno == ENOENT) return absl::OkStatus();
    if (errno != EBUSY) return Errno(absl::StrCat("umount ", path));
    if (absl::Now() < deadline) {
      absl::SleepFor(absl::Milliseconds(50));
      continue;
    }
    const std::vector<pid_t> users = ProcessesUsing(path + "/");
    Log(LogLevel::kWarn, "umount: still busy after the retry window; detaching lazily",
        {{"path", path}, {"users", absl::StrCat(users.size())}});
    if (umount2(path.c_str(), UMOUNT_NOFOLLOW | MNT_DETACH) != 0) {
      if (errno == EINVAL || errno == ENOENT) return absl::OkStatus();
      return Errno(absl::StrCat("umount -l ", path));
    }
  }
  return absl::OkStatus();
}

absl::Status MakePrivate(const std::string& path, bool unbindable) {
  if (mount(nullptr, path.c_str(), nullptr, unbindable ? MS_UNBINDABLE : MS_PRIVATE, nullptr) != 0) {
    return Errno(absl::StrCat("make ", unbindable ? "unbindable " : "private ", path));
  }
  return absl::OkStatus();
}

absl::Status EnsurePrivateMountPoint(const std::string& dir) {
  if (!IsMountPoint(dir)) {
    if (!MountsUnder(dir).empty()) {
      Log(LogLevel::kWarn,
          "mounts exist below the workloads directory but it is not a private mount point yet; leaving it as "
          "is until they are gone",
          {{"dir", dir}});
      return absl::OkStatus();
    }
    if (mount(dir.c_str(), dir.c_str(), nullptr, MS_BIND, nullptr) != 0) {
      return Errno(absl::StrCat("bind ", dir, " onto itself"));
    }
  }
  return MakePrivate(dir, /*unbindable=*/false);
}

std::vector<pid_t> ProcessesUsing(const std::string& prefix) {
  std::vector<pid_t> out;
  const pid_t self = getpid();
  std::error_code ec;
  auto below = [&](const std::filesystem::path& link) {
    std::error_code e;
    const std::string target = std::filesystem::read_symlink(link, e).string();
    return !e && absl::StartsWith(target, prefix);
  };
  for (const auto& entry : std::filesystem::directory_iterator("/proc", ec)) {
    const std::string name = entry.path().filename();
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
    const pid_t pid = static_cast<pid_t>(std::stol(name));
    if (pid == self) continue;
    bool uses = below(entry.path() / "cwd") || below(entry.path() / "root");
    std::error_code fd_ec;
    for (const auto& fd : std::filesystem::directory_iterator(entry.path() / "fd", fd_ec)) {
      if (uses) break;
      uses = below(fd.path());
    }
    if (uses) out.push_back(pid);
  }
  return out;
}

absl::StatusOr<std::string> AttachLoop(const std::string& file, bool read_only) {
  const int file_fd = open(file.c_str(), (read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC);
  if (file_fd < 0) return Errno(absl::StrCat("open ", file));
  const int ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
  if (ctl < 0) {
    close(file_fd);
    return absl::FailedPreconditionError(
        absl::StrCat("loop devices unavailable (/dev/loop-control: ", std::strerror(errno), ")"));
  }
  absl::StatusOr<std::string> result = absl::InternalError("no free loop device after 16 tries");
  for (int attempt = 0; attempt < 16; ++attempt) {
    const int n = ioctl(ctl, LOOP_CTL_GET_FREE);
    if (n < 0) {
      result = Errno("LOOP_CTL_GET_FREE");
      break;
    }
    const std::string dev = absl::StrCat("/dev/loop", n);
    const int dev_fd = open(dev.c_str(), (read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC);
    if (dev_fd < 0) {
      result = Errno(absl::StrCat("open ", dev));
      continue;
    }
    loop_config config;
    std::memset(&config, 0, sizeof config);
    config.fd = static_cast<uint32_t>(file_fd);
    config.info.lo_flags = read_only ? LO_FLAGS_READ_ONLY : 0;  // no autoclear: it fires on our own close
    std::strncpy(reinterpret_cast<char*>(config.info.lo_file_name), file.c_str(), LO_NAME_SIZE - 1);
    const int rc = ioctl(dev_fd, LOOP_CONFIGURE, &config);
    const int e = errno;
    close(dev_fd);
    if (rc == 0) {
      result = dev;
      break;
    }
    if (e != EBUSY) {
      errno = e;
      result = Errno(absl::StrCat("LOOP_CONFIGURE ", dev));
      break;
    }
  }
  close(ctl);
  close(file_fd);
  return result;
}

absl::Status DetachLoop(const std::string& device, const std::string& file, absl::Duration wait) {
  const std::string name = std::filesystem::path(device).filename();
  const std::string backing = ReadSysfs(absl::StrCat("/sys/block/", name, "/loop/backing_file"));
  if (backing.empty()) return absl::OkStatus();  // already detached (autoclear)
  if (backing != file && backing != file + " (deleted)") {
    return absl::FailedPreconditionError(
        absl::StrCat(device, " is backed by ", backing, ", not ", file, "; not detaching it"));
  }
  const std::string sysfs = absl::StrCat("/sys/block/", name, "/loop/backing_file");
  const absl::Time deadline = absl::Now() + wait;
  absl::Time next_clear = absl::InfinitePast();
  while (true) {
    if (absl::Now() >= next_clear) {
      // LOOP_CLR_FD: detaches now if we are the only user, else sets autoclear (the kernel detaches at the
      // last close, e.g. once a mount namespace that still held the file system goes away). Re-issued in case
      // an older kernel answered EBUSY.
      const int fd = open(device.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0) return errno == ENOENT ? absl::OkStatus() : Errno(absl::StrCat("open ", device));
      const int rc = ioctl(fd, LOOP_CLR_FD, 0);
      const int e = errno;
      close(fd);
      if (rc != 0 && e != ENXIO && e != EBUSY) {
        errno = e;
        return Errno(absl::StrCat("LOOP_CLR_FD ", device));
      }
      next_clear = absl::Now() + absl::Milliseconds(500);
    }
    if (ReadSysfs(sysfs).empty()) return absl::OkStatus();
    if (absl::Now() >= deadline) break;
    absl::SleepFor(absl::Milliseconds(10));
  }
  return absl::FailedPreconditionError(absl::StrCat(device, " is still attached to ", file, " ",
                                                    absl::FormatDuration(wait),
                                                    " after LOOP_CLR_FD (something still holds it open)"));
}

std::vector<std::pair<std::string, std::string>> LoopsBackedUnder(const std::string& prefix) {
  std::vector<std::pair<std::string, std::string>> out;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/sys/block", ec)) {
    const std::string name = entry.path().filename();
    if (!absl::StartsWith(name, "loop")) continue;
    std::string backing = ReadSysfs(entry.path().string() + "/loop/backing_file");
    if (absl::EndsWith(backing, " (deleted)")) backing.resize(backing.size() - 10);
    if (!backing.empty() && absl::StartsWith(backing, prefix)) out.push_back({"/dev/" + name, backing});
  }
  return out;
}

absl::StatusOr<std::string> MountImage(const std::string& image_path, const std::string& target) {
  struct stat st;
  if (stat(image_path.c_str(), &st) != 0) return Errno(absl::StrCat("stat ", image_path));
  if (S_ISDIR(st.st_mode)) {
    if (mount(image_path.c_str(), target.c_str(), nullptr, MS_BIND, nullptr) != 0) {
      return Errno(absl::StrCat("bind ", image_path));
    }
    // A bind mount only becomes read-only on a remount.
    if (mount(nullptr, target.c_str(), nullptr, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV,
              nullptr) != 0) {
      absl::Status s = Errno(absl::StrCat("remount read-only ", target));
      umount2(target.c_str(), MNT_DETACH);
      return s;
    }
    if (absl::Status s = MakePrivate(target, /*unbindable=*/false); !s.ok()) {
      umount2(target.c_str(), MNT_DETACH);
      return s;
    }
    return std::string();
  }
  absl::StatusOr<std::string> loop = AttachLoop(image_path, /*read_only=*/true);
  if (!loop.ok()) return loop.status();
  if (mount(loop->c_str(), target.c_str(), "squashfs", MS_RDONLY | MS_NOSUID | MS_NODEV, nullptr) != 0) {
    absl::Status s = Errno(absl::StrCat("mount squashfs ", image_path));
    (void)DetachLoop(*loop, image_path);
    return s;
  }
  if (absl::Status s = MakePrivate(target, /*unbindable=*/false); !s.ok()) {
    umount2(target.c_str(), MNT_DETACH);
    (void)DetachLoop(*loop, image_path);
    return s;
  }
  return *loop;
}

absl::Status MountOverlay(const std::string& lower, const std::string& upper, const std::string& work,
                          const std::string& target) {
  const std::string options = absl::StrCat("lowerdir=", lower, ",upperdir=", upper, ",workdir=", work);
  if (mount("overlay", target.c_str(), "overlay", MS_NOSUID | MS_NODEV, options.c_str()) != 0) {
    return Errno(absl::StrCat("mount overlay at ", target));
  }
  // Private (not unbindable: the runtime bind-mounts the rootfs onto itself).
  if (absl::Status s = MakePrivate(target, /*unbindable=*/false); !s.ok()) {
    umount2(target.c_str(), MNT_DETACH);
    return s;
  }
  return absl::OkStatus();
}

uint64_t ProcessStartTime(pid_t pid) {
  if (pid <= 0) return 0;
  std::ifstream in(absl::StrCat("/proc/", pid, "/stat"));
  std::string stat;
  std::getline(in, stat);
  const size_t paren = stat.rfind(')');
  if (paren == std::string::npos || paren + 2 > stat.size()) return 0;
  std::vector<absl::string_view> f = absl::StrSplit(absl::string_view(stat).substr(paren + 2), ' ');
  uint64_t start = 0;
  if (f.size() > 19 && f[0] != "Z" && f[0] != "X") (void)absl::SimpleAtoi(f[19], &start);
  return start;
}

}  // namespace strongroom::host_agent
