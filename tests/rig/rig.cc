#include "tests/rig/rig.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"

extern char** environ;

namespace strongroom {
namespace {

// rig.sh is run by an explicit interpreter so neither its exec bit nor PATH matters.
constexpr char kBash[] = "/bin/bash";

// Timeouts for rig.sh subcommands. `down` may spend 3 s on SIGTERM and 3 s on SIGKILL.
constexpr absl::Duration kSetupTimeout = absl::Seconds(30);
constexpr absl::Duration kSpawnTimeout = absl::Seconds(15);
constexpr absl::Duration kKillTimeout = absl::Seconds(30);
constexpr absl::Duration kDownTimeout = absl::Seconds(120);

// Output beyond this is dropped (a runaway command must not exhaust the test's memory).
constexpr size_t kMaxOutput = 64 << 20;
// How much output an error message quotes.
constexpr size_t kQuotedOutput = 4096;

// rig.sh `exec` exits with this when rig.sh itself (not the command) failed.
constexpr int kRigExecError = 125;

absl::Status ErrnoError(absl::string_view what, int err) {
  return absl::InternalError(absl::StrCat(what, ": ", std::strerror(err)));
}

std::string Tail(absl::string_view s) {
  s = absl::StripAsciiWhitespace(s);
  if (s.size() <= kQuotedOutput) return std::string(s);
  return absl::StrCat("...", s.substr(s.size() - kQuotedOutput));
}

// Closes a file descriptor on scope exit.
class FdCloser {
 public:
  explicit FdCloser(int fd) : fd_(fd) {}
  ~FdCloser() {
    if (fd_ >= 0) close(fd_);
  }
  FdCloser(const FdCloser&) = delete;
  FdCloser& operator=(const FdCloser&) = delete;

 private:
  int fd_;  // owned descriptor, or -1
};

// Reads what is available from a non-blocking fd into *out. Returns true at EOF.
bool Drain(int fd, std::string* out) {
  char buf[65536];
  while (true) {
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n > 0) {
      size_t room = kMaxOutput > out->size() ? kMaxOutput - out->size() : 0;
      out->append(buf, std::min(room, static_cast<size_t>(n)));
      continue;
    }
    if (n == 0) return true;
    if (errno == EINTR) continue;
    return errno != EAGAIN && errno != EWOULDBLOCK;  // a read error ends the stream too
  }
}

int ExitCode(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

// Spawns argv with stdout+stderr into write_fd, stdin from /dev/null, in a new process group,
// with an empty signal mask and default dispositions (ignored signals survive exec otherwise,
// and gRPC ignores SIGPIPE).
absl::StatusOr<pid_t> SpawnChild(const std::vector<std::string>& argv, int write_fd) {
  std::vector<char*> cargv;
  cargv.reserve(argv.size() + 1);
  for (const std::string& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
  cargv.push_back(nullptr);

  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attr;
  if (int rc = posix_spawn_file_actions_init(&actions); rc != 0) {
    return ErrnoError("posix_spawn_file_actions_init", rc);
  }
  if (int rc = posix_spawnattr_init(&attr); rc != 0) {
    posix_spawn_file_actions_destroy(&actions);
    return ErrnoError("posix_spawnattr_init", rc);
  }
  sigset_t empty;
  sigset_t defaults;
  sigemptyset(&empty);
  sigemptyset(&defaults);
  for (int sig = 1; sig < 32; ++sig) {
    if (sig != SIGKILL && sig != SIGSTOP) sigaddset(&defaults, sig);
  }
  int rc = 0;
  if (rc == 0) rc = posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  if (rc == 0) rc = posix_spawn_file_actions_adddup2(&actions, write_fd, 1);
  if (rc == 0) rc = posix_spawn_file_actions_adddup2(&actions, write_fd, 2);
  if (rc == 0) rc = posix_spawn_file_actions_addclosefrom_np(&actions, 3);
  if (rc == 0) {
    rc = posix_spawnattr_setflags(&attr,
                                  POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  }
  if (rc == 0) rc = posix_spawnattr_setpgroup(&attr, 0);
  if (rc == 0) rc = posix_spawnattr_setsigmask(&attr, &empty);
  if (rc == 0) rc = posix_spawnattr_setsigdefault(&attr, &defaults);
  pid_t pid = -1;
  if (rc == 0) rc = posix_spawn(&pid, argv[0].c_str(), &actions, &attr, cargv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) return ErrnoError(absl::StrCat("cannot run ", argv[0]), rc);
  return pid;
}

}  // namespace

absl::StatusOr<Rig::ExecResult> RunWithTimeout(const std::vector<std::string>& argv, absl::Duration timeout) {
  if (argv.empty()) return absl::InvalidArgumentError("RunWithTimeout: empty argv");
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return ErrnoError("pipe2", errno);
  FdCloser read_closer(fds[0]);
  absl::StatusOr<pid_t> spawned = SpawnChild(argv, fds[1]);
  close(fds[1]);
  if (!spawned.ok()) return spawned.status();
  const pid_t pid = *spawned;
  fcntl(fds[0], F_SETFL, fcntl(fds[0], F_GETFL) | O_NONBLOCK);

  // A pidfd makes exit wake up poll(); without one (old kernel) poll ticks every 20 ms.
  const int pidfd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
  FdCloser pidfd_closer(pidfd);

  const auto deadline = std::chrono::steady_clock::now() + absl::ToChronoMilliseconds(timeout);
  Rig::ExecResult result;
  bool eof = false;
  int status = 0;
  while (true) {
    pid_t w = waitpid(pid, &status, WNOHANG);
    if (w == pid || (w < 0 && errno == ECHILD)) {
      // Exited. Take what is already in the pipe, but do not wait for EOF: a background
      // grandchild may hold the write end open.
      if (!eof) Drain(fds[0], &result.output);
      if (w < 0) return absl::InternalError(absl::StrCat(argv[0], ": exit status lost (ECHILD)"));
      result.exit_code = ExitCode(status);
      return result;
    }
    if (!eof) eof = Drain(fds[0], &result.output);

    auto now = std::chrono::steady_clock::now();
    if (now >= deadline) {
      kill(-pid, SIGKILL);  // its process group: rig.sh and whatever it runs in the foreground
      while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
      }
      if (!eof) Drain(fds[0], &result.output);
      return absl::DeadlineExceededError(absl::StrCat(absl::StrJoin(argv, " "), ": killed after ",
                                                      absl::FormatDuration(timeout),
                                                      "; output so far: ", Tail(result.output)));
    }
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now).count();
    pollfd pfds[2];
    nfds_t n = 0;
    if (!eof) pfds[n++] = {fds[0], POLLIN, 0};
    if (pidfd >= 0) pfds[n++] = {pidfd, POLLIN, 0};
    int wait_ms = static_cast<int>(std::min<int64_t>(left + 1, pidfd >= 0 ? 1000 : 20));
    poll(pfds, n, wait_ms);
  }
}

Rig::Rig(std::string rig_sh_path, std::string state_dir, std::string id)
    : rig_sh_path_(std::move(rig_sh_path)), state_dir_(std::move(state_dir)), id_(std::move(id)) {}

Rig::~Rig() {
  absl::Status s = Down();
  if (!s.ok()) {
    std::fprintf(stderr, "Rig %s (%s): teardown failed: %s\n", id_.c_str(), state_dir_.c_str(),
                 std::string(s.message()).c_str());
  }
}

absl::StatusOr<std::unique_ptr<Rig>> Rig::Create(std::string rig_sh_path, const std::string& root) {
  if (mkdir(root.c_str(), 0700) != 0 && errno != EEXIST) {
    return ErrnoError(absl::StrCat("rig root ", root), errno);
  }
  struct stat st;
  if (lstat(root.c_str(), &st) != 0) return ErrnoError(absl::StrCat("rig root ", root), errno);
  if (!S_ISDIR(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 022) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("rig root ", root, ": must be a directory owned by uid ", geteuid(),
                     " and not writable by group or others (rig.sh sweep refuses otherwise)"));
  }
  std::string tmpl = absl::StrCat(root, "/rig-XXXXXX");
  if (mkdtemp(tmpl.data()) == nullptr) return ErrnoError(absl::StrCat("mkdtemp ", tmpl), errno);

  std::vector<std::string> argv = {kBash, rig_sh_path, "up", tmpl, "--owner", absl::StrCat(getpid())};
  absl::StatusOr<ExecResult> r = RunWithTimeout(argv, kSetupTimeout);
  std::string id;
  if (r.ok() && r->exit_code == 0) {
    id = std::string(absl::StripAsciiWhitespace(r->output));
    if (size_t nl = id.rfind('\n'); nl != std::string::npos) id = id.substr(nl + 1);
  }
  if (id.size() != 5) {
    // rig.sh up undoes its own partial work; make sure, then drop the directory.
    RunWithTimeout({kBash, rig_sh_path, "down", tmpl}, kDownTimeout).IgnoreError();
    rmdir(tmpl.c_str());
    if (!r.ok()) return r.status();
    return absl::InternalError(
        absl::StrCat("rig.sh up ", tmpl, ": exit ", r->exit_code, ": ", Tail(r->output)));
  }
  return std::unique_ptr<Rig>(new Rig(std::move(rig_sh_path), std::move(tmpl), std::move(id)));
}

absl::Status Rig::Sweep(const std::string& rig_sh_path, const std::string& root) {
  absl::StatusOr<ExecResult> r = RunWithTimeout({kBash, rig_sh_path, "sweep", root}, kDownTimeout);
  if (!r.ok()) return r.status();
  if (r->exit_code != 0) {
    return absl::InternalError(
        absl::StrCat("rig.sh sweep ", root, ": exit ", r->exit_code, ": ", Tail(r->output)));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> Rig::RunRigSh(const std::vector<std::string>& args,
                                          absl::Duration timeout) const {
  std::vector<std::string> argv = {kBash, rig_sh_path_};
  argv.insert(argv.end(), args.begin(), args.end());
  absl::StatusOr<ExecResult> r = RunWithTimeout(argv, timeout);
  if (!r.ok()) return r.status();
  if (r->exit_code != 0) {
    std::string msg =
        absl::StrCat("rig.sh ", absl::StrJoin(args, " "), ": exit ", r->exit_code, ": ", Tail(r->output));
    return r->exit_code == 2 ? absl::InvalidArgumentError(msg) : absl::InternalError(msg);
  }
  return std::move(r->output);
}

absl::Status Rig::AddHost(absl::string_view name, absl::string_view ip_cidr) {
  absl::StatusOr<std::string> out =
      RunRigSh({"host", state_dir_, std::string(name), std::string(ip_cidr)}, kSetupTimeout);
  if (!out.ok()) return out.status();
  std::string ip(ip_cidr.substr(0, ip_cidr.find('/')));
  std::lock_guard<std::mutex> lock(mu_);
  ips_[std::string(name)] = std::move(ip);
  return absl::OkStatus();
}

absl::StatusOr<pid_t> Rig::Spawn(absl::string_view host, absl::string_view log_path,
                                 const std::vector<std::string>& argv) {
  if (argv.empty()) return absl::InvalidArgumentError("Rig::Spawn: empty argv");
  std::vector<std::string> args = {"spawn", state_dir_, std::string(host), std::string(log_path), "--"};
  args.insert(args.end(), argv.begin(), argv.end());
  absl::StatusOr<std::string> out = RunRigSh(args, kSpawnTimeout);
  if (!out.ok()) return out.status();
  absl::string_view line = absl::StripAsciiWhitespace(*out);
  if (size_t nl = line.rfind('\n'); nl != absl::string_view::npos) line = line.substr(nl + 1);
  int pid = 0;
  if (!absl::SimpleAtoi(line, &pid) || pid <= 0) {
    return absl::InternalError(absl::StrCat("rig.sh spawn: expected a PID, got \"", *out, "\""));
  }
  return static_cast<pid_t>(pid);
}

absl::StatusOr<Rig::ExecResult> Rig::Exec(absl::string_view host, const std::vector<std::string>& argv,
                                          absl::Duration timeout) {
  if (argv.empty()) return absl::InvalidArgumentError("Rig::Exec: empty argv");
  std::vector<std::string> full = {kBash, rig_sh_path_, "exec", state_dir_, std::string(host), "--"};
  full.insert(full.end(), argv.begin(), argv.end());
  absl::StatusOr<ExecResult> r = RunWithTimeout(full, timeout);
  if (!r.ok()) {
    return absl::Status(r.status().code(), absl::StrCat("Rig::Exec on ", host, ": ", r.status().message()));
  }
  // rig.sh's own failures (unknown host, ...) exit 125 with a "rig.sh: " message.
  if (r->exit_code == kRigExecError && absl::StartsWith(r->output, "rig.sh: ")) {
    return absl::InvalidArgumentError(absl::StrCat("Rig::Exec on ", host, ": ", Tail(r->output)));
  }
  return r;
}

absl::Status Rig::Kill(pid_t pid, int sig) {
  return RunRigSh({"kill", state_dir_, absl::StrCat(pid), absl::StrCat(sig)}, kKillTimeout).status();
}

absl::Status Rig::Stop(pid_t pid) {
  return RunRigSh({"kill", state_dir_, absl::StrCat(pid)}, kKillTimeout).status();
}

absl::Status Rig::Down() {
  std::lock_guard<std::mutex> lock(mu_);
  if (down_) return absl::OkStatus();
  absl::StatusOr<std::string> out = RunRigSh({"down", state_dir_}, kDownTimeout);
  if (!out.ok()) return out.status();
  // Create() made the state directory, so whatever a test wrote there (logs, PKI) goes too:
  // tests leave nothing behind.
  // A daemon that left a mount below the state directory (its processes are gone by now) would make the
  // removal fail or, worse, reach into what is mounted: detach those first, deepest first, and say so.
  std::vector<std::string> mounts;
  {
    std::ifstream table("/proc/self/mounts");
    std::string device, point, rest;
    while (table >> device >> point && std::getline(table, rest)) {
      if (point.rfind(state_dir_ + "/", 0) == 0) mounts.push_back(point);
    }
  }
  std::sort(mounts.rbegin(), mounts.rend());
  for (const std::string& m : mounts) {
    std::fprintf(stderr, "Rig::Down: detaching a mount left below the rig: %s\n", m.c_str());
    umount2(m.c_str(), MNT_DETACH);
  }
  std::error_code ignored;
  std::filesystem::remove_all(state_dir_, ignored);
  down_ = true;
  return absl::OkStatus();
}

std::string Rig::Ip(absl::string_view host) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = ips_.find(std::string(host));
  return it == ips_.end() ? std::string() : it->second;
}

std::string Rig::Netns(absl::string_view host) const {
  if (host == "sw") return absl::StrCat("sr", id_, "-sw");
  std::lock_guard<std::mutex> lock(mu_);
  if (ips_.find(std::string(host)) == ips_.end()) return std::string();
  return absl::StrCat("sr", id_, "-", host);
}

}  // namespace strongroom
