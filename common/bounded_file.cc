#include "common/bounded_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace strongroom {
namespace {

std::string KindOf(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISSOCK(mode)) return "a socket";
  return "not a regular file";
}

absl::Status Refuse(const std::string& path, absl::string_view reason) {
  return absl::FailedPreconditionError(absl::StrCat(path, ": ", reason));
}

// The file's kind and size as `fd` sees them; OK only for a regular file within the bound.
absl::Status CheckKindAndSize(const std::string& path, const struct stat& st, size_t max_bytes) {
  if (!S_ISREG(st.st_mode))
    return Refuse(path, absl::StrCat("is ", KindOf(st.st_mode), ", not a regular file"));
  if (static_cast<uint64_t>(st.st_size) > max_bytes) {
    return Refuse(path, absl::StrCat("is ", st.st_size, " bytes; at most ", max_bytes, " are allowed"));
  }
  return absl::OkStatus();
}

// Opens `path` for reading after checking what it is. O_NONBLOCK: opening a FIFO for reading would otherwise
// wait for a writer. The kind is checked again on the open descriptor (the path may have been swapped).
absl::StatusOr<int> OpenChecked(const std::string& path, size_t max_bytes) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return absl::NotFoundError(absl::StrCat(path, ": ", std::strerror(errno)));
    return Refuse(path, std::strerror(errno));
  }
  if (absl::Status s = CheckKindAndSize(path, st, max_bytes); !s.ok()) return s;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (fd < 0) return Refuse(path, absl::StrCat("cannot open: ", std::strerror(errno)));
  if (::fstat(fd, &st) != 0) {
    const int error = errno;
    ::close(fd);
    return Refuse(path, std::strerror(error));
  }
  if (absl::Status s = CheckKindAndSize(path, st, max_bytes); !s.ok()) {
    ::close(fd);
    return s;
  }
  return fd;
}

}  // namespace

absl::Status CheckBoundedRegularFile(const std::string& path, size_t max_bytes) {
  absl::StatusOr<int> fd = OpenChecked(path, max_bytes);
  if (!fd.ok()) return fd.status();
  ::close(*fd);
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadBoundedRegularFile(const std::string& path, size_t max_bytes) {
  absl::StatusOr<int> fd = OpenChecked(path, max_bytes);
  if (!fd.ok()) return fd.status();
  std::string content;
  char buffer[64 * 1024];
  while (true) {
    const ssize_t n = ::read(*fd, buffer, sizeof(buffer));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int error = errno;
      ::close(*fd);
      return Refuse(path, absl::StrCat("read failed: ", std::strerror(error)));
    }
    if (n == 0) break;
    if (content.size() + static_cast<size_t>(n) > max_bytes) {
      ::close(*fd);
      return Refuse(path, absl::StrCat("grew past ", max_bytes, " bytes while it was read"));
    }
    content.append(buffer, static_cast<size_t>(n));
  }
  ::close(*fd);
  return content;
}

}  // namespace strongroom
