#include "services/host_agent/container/secure_key.h"

#include <sys/mman.h>
#include <sys/random.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace strongroom::host_agent {

absl::StatusOr<SecureKey> SecureKey::Generate(size_t size) {
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  const size_t mapped = (size + page - 1) / page * page;
  void* p = mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return absl::ResourceExhaustedError(absl::StrCat("mmap: ", std::strerror(errno)));
  if (mlock(p, mapped) != 0) {
    const int e = errno;
    munmap(p, mapped);
    return absl::FailedPreconditionError(
        absl::StrCat("cannot lock memory for the volume key: ", std::strerror(e)));
  }
  madvise(p, mapped, MADV_DONTDUMP);
  madvise(p, mapped, MADV_WIPEONFORK);
  SecureKey key(p, mapped, size);
  size_t filled = 0;
  while (filled < size) {
    const ssize_t n = getrandom(static_cast<char*>(p) + filled, size - filled, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return absl::InternalError(absl::StrCat("getrandom: ", std::strerror(errno)));
    filled += static_cast<size_t>(n);
  }
  return key;
}

SecureKey::SecureKey(SecureKey&& other) noexcept
    : page_(other.page_), mapped_(other.mapped_), size_(other.size_) {
  other.page_ = nullptr;
}

void SecureKey::Wipe() {
  if (page_ != nullptr) explicit_bzero(page_, mapped_);
}

SecureKey::~SecureKey() {
  if (page_ == nullptr) return;
  explicit_bzero(page_, mapped_);
  munlock(page_, mapped_);
  munmap(page_, mapped_);
}

}  // namespace strongroom::host_agent
