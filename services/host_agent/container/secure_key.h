// A volume key in locked memory: generated with getrandom(2) into an mlock'ed, MADV_DONTDUMP anonymous
// mapping, explicitly zeroed (explicit_bzero) and unmapped on destruction. Never copied, logged or
// serialized.
#pragma once

#include <cstddef>
#include <cstdint>

#include "absl/status/statusor.h"

namespace strongroom::host_agent {

class SecureKey {
 public:
  // `size` random bytes in locked memory. FAILED_PRECONDITION if the memory cannot be locked
  // (RLIMIT_MEMLOCK).
  static absl::StatusOr<SecureKey> Generate(size_t size);
  SecureKey(SecureKey&& other) noexcept;
  SecureKey& operator=(SecureKey&&) = delete;
  SecureKey(const SecureKey&) = delete;
  ~SecureKey();  // zeroes, unlocks, unmaps

  const char* data() const { return static_cast<const char*>(page_); }
  size_t size() const { return size_; }
  // Zeroes the key now (it stays allocated); the destructor does it again.
  void Wipe();

 private:
  SecureKey(void* page, size_t mapped, size_t size) : page_(page), mapped_(mapped), size_(size) {}
  void* page_;     // the locked mapping holding the key; null after a move
  size_t mapped_;  // bytes mapped (a page multiple)
  size_t size_;    // key bytes
};

}  // namespace strongroom::host_agent
