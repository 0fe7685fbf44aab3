#include "services/vm_controller/user_file.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace strongroom::vm_controller {
namespace {

// The child's exit codes: which step failed (errno cannot cross the exit status whole).
enum ChildExit : int {
  kWritten = 0,
  kCredentials = 10,
  kOpen = 11,
  kNotRegular = 12,
  kWrite = 13,
};

const char* Step(int code) {
  switch (code) {
    case kCredentials: return "dropping to the user's credentials failed";
    case kOpen: return "the user cannot open it for writing (or it is a symlink)";
    case kNotRegular: return "it is not a regular file";
    case kWrite: return "the write failed";
    default: return "the writer failed";
  }
}

}  // namespace

absl::Status AppendAsUser(const std::string& path, uid_t uid, gid_t gid, const std::string& text,
                          absl::Duration timeout) {
  if (uid == 0) return absl::PermissionDeniedError(absl::StrCat(path, ": not written as root"));
  if (path.empty() || path[0] != '/') {
    return absl::InvalidArgumentError(absl::StrCat("\"", path, "\": not an absolute path"));
  }
  const pid_t child = fork();
  if (child < 0) return absl::InternalError(absl::StrCat("fork: ", std::strerror(errno)));
  if (child == 0) {
    // Only async-signal-safe calls from here on (the parent has threads).
    if (setgroups(0, nullptr) != 0 || setresgid(gid, gid, gid) != 0 || setresuid(uid, uid, uid) != 0) {
      _exit(kCredentials);
    }
    const int fd = open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC |
                                          O_NONBLOCK, 0600);
    if (fd < 0) _exit(kOpen);
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) _exit(kNotRegular);
    size_t done = 0;
    while (done < text.size()) {
      const ssize_t n = write(fd, text.data() + done, text.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) _exit(kWrite);
      done += static_cast<size_t>(n);
    }
    _exit(close(fd) == 0 ? kWritten : kWrite);
  }
  const absl::Time deadline = absl::Now() + timeout;
  int status = 0;
  for (;;) {
    const pid_t done = waitpid(child, &status, WNOHANG);
    if (done == child) break;
    if (done < 0 && errno != EINTR) return absl::InternalError(absl::StrCat("waitpid: ", std::strerror(errno)));
    if (absl::Now() >= deadline) {
      kill(child, SIGKILL);
      waitpid(child, &status, 0);
      return absl::DeadlineExceededError(absl::StrCat(path, ": no write within ", absl::FormatDuration(timeout)));
    }
    absl::SleepFor(absl::Milliseconds(5));
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == kWritten) return absl::OkStatus();
  return absl::FailedPreconditionError(
      absl::StrCat(path, ": not written as uid ", uid, ": ",
                   WIFEXITED(status) ? Step(WEXITSTATUS(status)) : "the writer was killed"));
}

}  // namespace strongroom::vm_controller
