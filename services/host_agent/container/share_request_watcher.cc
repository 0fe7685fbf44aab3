#include "services/host_agent/container/share_request_watcher.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "common/log.h"
#include "common/unique_fd.h"
#include "services/host_agent/data_path.h"

namespace strongroom::host_agent {
namespace {

class KernelShareMounter : public ShareMounter {
 public:
  explicit KernelShareMounter(absl::Duration timeout) : timeout_(timeout) {}
  absl::Status Mount(const WorkloadNfsMount& m) override { return MountNfsInWorkload(m, timeout_); }
  absl::Status Unmount(const std::string& mountns_path, const std::string& target) override {
    return UnmountInWorkload(mountns_path, target, timeout_);
  }

 private:
  const absl::Duration timeout_;  // of each mount(2) / umount(2) child
};

}  // namespace

std::shared_ptr<ShareMounter> MakeKernelShareMounter(absl::Duration timeout) {
  return std::make_shared<KernelShareMounter>(timeout);
}

absl::StatusOr<std::string> ReadFileInRoot(const std::string& root_dir, const std::string& path,
                                           size_t max_bytes) {
  if (path.empty() || path[0] != '/') return absl::InvalidArgumentError("path must be absolute");
  UniqueFd root(open(root_dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (root.get() < 0) return absl::NotFoundError(absl::StrCat("open ", root_dir, ": ", std::strerror(errno)));
  open_how how{};
  how.flags = O_PATH | O_NOFOLLOW | O_CLOEXEC;
  how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
  UniqueFd file(static_cast<int>(syscall(SYS_openat2, root.get(), path.c_str() + 1, &how, sizeof how)));
  if (file.get() < 0) {
    if (errno == ENOENT) return absl::NotFoundError(absl::StrCat(path, " does not exist"));
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", std::strerror(errno)));
  }
  struct stat st;
  if (fstat(file.get(), &st) != 0 || !S_ISREG(st.st_mode))
    return absl::InvalidArgumentError(absl::StrCat(path, " is not a regular file"));
  if (static_cast<size_t>(st.st_size) > max_bytes)
    return absl::InvalidArgumentError(absl::StrCat(path, " is larger than ", max_bytes, " bytes"));
  // Opened for reading only now that it is known to be a regular file (the O_PATH fd pins that inode).
  UniqueFd data(open(absl::StrCat("/proc/self/fd/", file.get()).c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
  if (data.get() < 0) return absl::InvalidArgumentError(absl::StrCat(path, ": ", std::strerror(errno)));
  std::string out(max_bytes + 1, '\0');
  size_t got = 0;
  while (got < out.size()) {
    const ssize_t n = read(data.get(), out.data() + got, out.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return absl::InvalidArgumentError(absl::StrCat("read ", path, ": ", std::strerror(errno)));
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  if (got > max_bytes)
    return absl::InvalidArgumentError(absl::StrCat(path, " is larger than ", max_bytes, " bytes"));
  out.resize(got);
  return out;
}

ShareRequestWatcher::~ShareRequestWatcher() {
  std::map<std::string, Entry> all;
  {
    absl::MutexLock lock(&mu_);
    for (auto& [id, e] : watches_) *e.stop = true;
    all.swap(watches_);
  }
  for (auto& [id, e] : all) {
    if (e.thread.joinable()) e.thread.join();
  }
}

std::thread ShareRequestWatcher::TakeWatch(const std::string& id) {
  absl::MutexLock lock(&mu_);
  auto it = watches_.find(id);
  if (it == watches_.end()) return std::thread();
  *it->second.stop = true;
  std::thread t = std::move(it->second.thread);
  watches_.erase(it);
  return t;
}

void ShareRequestWatcher::Watch(ShareWatch w) {
  const std::string id = w.workload_id;
  if (std::thread old = TakeWatch(id); old.joinable()) old.join();
  auto stop = std::make_shared<bool>(false);
  absl::MutexLock lock(&mu_);
  Entry& e = watches_[id];
  e.stop = stop;
  e.thread = std::thread(&ShareRequestWatcher::Run, this, std::move(w), stop);
}

bool ShareRequestWatcher::Stopped(const std::shared_ptr<bool>& stop) {
  absl::MutexLock lock(&mu_);
  return *stop;
}

void ShareRequestWatcher::Run(ShareWatch w, std::shared_ptr<bool> stop) {
  const absl::Time deadline = absl::Now() + w.give_up_after;
  while (!Stopped(stop)) {
    if (absl::Now() > deadline) {
      Log(LogLevel::kWarn, "data path: the workload did not ask for its project share in time; not polling",
          {{"workload", w.workload_id}, {"after", absl::FormatDuration(w.give_up_after)}});
      return;
    }
    absl::StatusOr<std::string> text = ReadFileInRoot(w.root_dir, kNfsRequestPath, kMaxNfsRequestBytes);
    if (absl::IsNotFound(text.status())) {
      absl::SleepFor(w.poll_interval);
      continue;
    }
    absl::StatusOr<NfsShareRequest> request =
        text.ok() ? ParseNfsShareRequest(*text) : absl::StatusOr<NfsShareRequest>(text.status());
    absl::Status mounted = request.status();
    if (request.ok()) {
      WorkloadNfsMount m;
      m.netns_path = w.netns_path;
      m.mountns_path = w.mountns_path;
      m.server_ip = request->server;
      m.export_path = request->export_path;
      m.target = request->mountpoint;
      m.create_target = true;
      // Recorded first: a crash between mount and record must not hide the mount from teardown.
      std::ofstream(w.record_file, std::ios::trunc) << m.target << "\n";
      mounted = mounter_->Mount(m);
    }
    if (mounted.ok()) {
      Log(LogLevel::kInfo, "data path: project share mounted inside the workload",
          {{"workload", w.workload_id}, {"target", request->mountpoint}, {"server", request->server}});
      return;
    }
    if (Stopped(stop)) return;  // the workload is being stopped anyway
    const std::string message = absl::StrCat("project share (", kNfsRequestPath, "): ", mounted.message());
    Log(LogLevel::kError, "data path: cannot mount the project share; failing the workload",
        {{"workload", w.workload_id}, {"error", message}});
    if (w.fail) w.fail("PROJECT_SHARE_MOUNT", message.substr(0, 1024));
    return;
  }
}

absl::Status ShareRequestWatcher::Release(const std::string& id, const std::string& mountns_path,
                                          const std::string& record_file) {
  if (std::thread t = TakeWatch(id); t.joinable()) t.join();
  std::string target;
  {
    std::ifstream in(record_file);
    if (!in) return absl::OkStatus();  // nothing was mounted
    std::getline(in, target);
  }
  absl::Status s = absl::OkStatus();
  if (!target.empty() && !mountns_path.empty() && access(mountns_path.c_str(), F_OK) == 0)
    s = mounter_->Unmount(mountns_path, target);
  // A gone mount namespace took the mount with it.
  if (absl::IsNotFound(s)) s = absl::OkStatus();
  if (s.ok()) unlink(record_file.c_str());
  return s;
}

}  // namespace strongroom::host_agent
