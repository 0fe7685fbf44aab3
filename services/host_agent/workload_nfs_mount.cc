#include "services/host_agent/workload_nfs_mount.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/unique_fd.h"

namespace strongroom::host_agent {
namespace {

// What the child reports through its pipe when a step fails: the step and errno.
enum class Step : int { kSetnsNet = 1, kSetnsMount = 2, kMount = 3, kUnmount = 4, kMkdir = 5 };

const char* StepName(Step s) {
  switch (s) {
    case Step::kSetnsNet:
      return "setns(network namespace)";
    case Step::kSetnsMount:
      return "setns(mount namespace)";
    case Step::kMount:
      return "mount";
    case Step::kUnmount:
      return "umount";
    case Step::kMkdir:
      return "mkdir (mount point)";
  }
  return "?";
}

struct ChildError {
  int step = 0;
  int err = 0;
};

bool SafeOptionText(const std::string& s) {
  // The mount data is a comma-separated option list: nothing in a value may add an option.
  return !s.empty() && s.find_first_of(",= \t\n\\\"'") == std::string::npos;
}

absl::StatusOr<int> OpenNamespace(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::NotFoundError(absl::StrCat("open ", path, ": ", std::strerror(errno)));
  return fd;
}

bool SameFile(int fd, const char* path) {
  struct stat a = {};
  struct stat b = {};
  return fstat(fd, &a) == 0 && stat(path, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

// Forks a child that enters the namespaces (net_fd may be -1: stay) and runs `action` (async-signal-safe
// syscalls only: the parent may be multithreaded). setns(CLONE_NEWNS) is refused to a multithreaded process,
// which is why this is a fresh child and not the caller. Waits at most `timeout`, then SIGKILLs it.
template <typename Action>
absl::Status RunInNamespaces(int net_fd, int mnt_fd, Step action_step, Action action, absl::Duration timeout,
                             const std::string& what) {
  int pipe_fds[2];
  if (pipe2(pipe_fds, O_CLOEXEC) != 0)
    return absl::InternalError(absl::StrCat("pipe2: ", std::strerror(errno)));
  UniqueFd read_end(pipe_fds[0]);
  pid_t pid = fork();
  if (pid < 0) {
    close(pipe_fds[1]);
    return absl::InternalError(absl::StrCat("fork: ", std::strerror(errno)));
  }
  if (pid == 0) {
    ChildError e;
    if (net_fd >= 0 && setns(net_fd, CLONE_NEWNET) != 0) {
      e = {static_cast<int>(Step::kSetnsNet), errno};
    } else if (setns(mnt_fd, CLONE_NEWNS) != 0) {
      e = {static_cast<int>(Step::kSetnsMount), errno};
    } else if (action() != 0) {
      e = {static_cast<int>(action_step), errno};
    }
    if (e.step != 0) (void)!write(pipe_fds[1], &e, sizeof(e));
    _exit(e.step == 0 ? 0 : 1);
  }
  close(pipe_fds[1]);
  ChildError e;
  size_t got = 0;
  absl::Time deadline = absl::Now() + timeout;
  bool timed_out = false;
  while (got < sizeof(e)) {
    int left_ms = static_cast<int>(absl::ToInt64Milliseconds(deadline - absl::Now()));
    if (left_ms <= 0) {
      timed_out = true;
      break;
    }
    pollfd p{read_end.get(), POLLIN, 0};
    int r = poll(&p, 1, left_ms);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) continue;
    ssize_t n = read(read_end.get(), reinterpret_cast<char*>(&e) + got, sizeof(e) - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // EOF: the child exited (successfully unless it wrote an error)
    got += static_cast<size_t>(n);
  }
  if (timed_out) kill(pid, SIGKILL);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (timed_out)
    return absl::DeadlineExceededError(absl::StrCat(what, ": no answer within ",
                                                    absl::FormatDuration(timeout),
                                                    " (server unreachable through the workload's network?)"));
  if (got == sizeof(e))
    return absl::InternalError(
        absl::StrCat(what, ": ", StepName(static_cast<Step>(e.step)), ": ", std::strerror(e.err)));
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    return absl::InternalError(absl::StrCat(what, ": child failed (status ", status, ")"));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::string> NfsMountOptions(const WorkloadNfsMount& m) {
  in_addr a{};
  if (inet_pton(AF_INET, m.server_ip.c_str(), &a) != 1)
    return absl::InvalidArgumentError(absl::StrCat("NFS server '", m.server_ip, "' is not an IPv4 address"));
  // vers=4.2: no rpcbind, no NLM, the callback channel rides the same TCP connection (so nothing connects
  // back into the workload); hard: a job's writes survive a tunnel rekey or blip instead of failing with EIO.
  return absl::StrCat("vers=4.2,proto=tcp,port=2049,sec=sys,hard,timeo=600,retrans=2,addr=", m.server_ip);
}

absl::Status MountNfsInWorkload(const WorkloadNfsMount& m, absl::Duration timeout) {
  const std::string what = absl::StrCat("mounting ", m.server_ip, ":", m.export_path, " at ", m.target,
                                        " in the workload (", m.mountns_path, ")");
  absl::StatusOr<std::string> options = NfsMountOptions(m);
  if (!options.ok()) return options.status();
  if (!absl::StartsWith(m.export_path, "/") || !SafeOptionText(m.export_path) ||
      !absl::StartsWith(m.target, "/"))
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": export and target must be absolute, plain paths"));
  absl::StatusOr<int> net = OpenNamespace(m.netns_path);
  if (!net.ok()) return net.status();
  UniqueFd net_fd(*net);
  absl::StatusOr<int> mnt = OpenNamespace(m.mountns_path);
  if (!mnt.ok()) return mnt.status();
  UniqueFd mnt_fd(*mnt);
  if (SameFile(mnt_fd.get(), "/proc/self/ns/mnt"))
    return absl::FailedPreconditionError(absl::StrCat(
        what, ": that is host-agent's own mount namespace; the share would be in the host's mount table"));
  // Everything the child needs is built here: after fork it may only make syscalls.
  const std::string source = absl::StrCat(m.server_ip, ":", m.export_path);
  const unsigned long flags = MS_NOSUID | MS_NODEV | (m.read_only ? MS_RDONLY : 0);
  const char* src = source.c_str();
  const char* tgt = m.target.c_str();
  const char* data = options->c_str();
  if (m.create_target) {
    // mkdir -p inside the workload's mount namespace, on the child's own copy of this buffer.
    std::string path = m.target;
    char* p = path.data();
    const size_t n = path.size();
    absl::Status made = RunInNamespaces(
        -1, mnt_fd.get(), Step::kMkdir,
        [&] {
          for (size_t i = 1; i <= n; ++i) {
            if (i < n && p[i] != '/') continue;
            p[i] = '\0';
            const int r = mkdir(p, 0755);
            if (r != 0 && errno != EEXIST) return -1;
            if (i < n) p[i] = '/';
          }
          return 0;
        },
        timeout, what);
    if (!made.ok()) return made;
  }
  return RunInNamespaces(
      net_fd.get(), mnt_fd.get(), Step::kMount, [&] { return mount(src, tgt, "nfs4", flags, data); }, timeout,
      what);
}

absl::Status UnmountInWorkload(const std::string& mountns_path, const std::string& target,
                               absl::Duration timeout) {
  const std::string what = absl::StrCat("unmounting ", target, " in the workload (", mountns_path, ")");
  absl::StatusOr<int> mnt = OpenNamespace(mountns_path);
  if (!mnt.ok()) return mnt.status();
  UniqueFd mnt_fd(*mnt);
  if (SameFile(mnt_fd.get(), "/proc/self/ns/mnt"))
    return absl::FailedPreconditionError(absl::StrCat(what, ": that is host-agent's own mount namespace"));
  const char* tgt = target.c_str();
  return RunInNamespaces(
      -1, mnt_fd.get(), Step::kUnmount,
      [&] {
        if (umount2(tgt, UMOUNT_NOFOLLOW) == 0) return 0;
        if (errno == EINVAL) return 0;  // not a mount point: nothing mounted there
        if (errno == EBUSY) return umount2(tgt, MNT_DETACH | UMOUNT_NOFOLLOW);
        return -1;
      },
      timeout, what);
}

}  // namespace strongroom::host_agent
