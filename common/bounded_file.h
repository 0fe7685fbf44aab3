// Reading a file an operator names in a config (the config itself, the PEM files of TLS and the CRL): only a
// regular file, at most a documented size, without blocking or growing memory whatever else the path turns
// out to be. A symlink to /dev/zero, a FIFO, a directory, a socket or a 1 GB file is refused in milliseconds,
// before anything is read, with one line naming the path and why.
#pragma once

#include <cstddef>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace strongroom {

// The largest config file a daemon reads (docs/OPERATIONS.md).
constexpr size_t kMaxConfigFileBytes = size_t{1} << 20;
// The largest PEM file (CA bundle, certificate, key, CRL) a daemon reads.
constexpr size_t kMaxPemFileBytes = size_t{1} << 20;

// FAILED_PRECONDITION "PATH: REASON" (NOT_FOUND when it does not exist) unless `path` (after symlinks) is a
// regular file of at most `max_bytes` that this process can open for reading. Opens it without blocking (a
// FIFO never blocks the caller) and reads nothing.
absl::Status CheckBoundedRegularFile(const std::string& path, size_t max_bytes);

// The whole content of `path` after the same checks; a file that grows past `max_bytes` while it is read is
// refused too. Memory used is at most `max_bytes` plus one read buffer.
absl::StatusOr<std::string> ReadBoundedRegularFile(const std::string& path, size_t max_bytes);

}  // namespace strongroom
