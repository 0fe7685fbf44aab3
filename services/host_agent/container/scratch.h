// The workload's scratch: a sparse backing file on a loop device, encrypted with dm-crypt through
// libcryptsetup (LUKS2 with no keyslot, or plain), ext4 with lazy init, mounted; the overlay's upper and work
// dirs live on it. The volume key is generated in locked memory (SecureKey), handed to libcryptsetup and
// zeroed; it exists afterwards only in the kernel's dm-crypt target, which wipes it on deactivation. Teardown
// is O(1) in the scratch size: unmount, deactivate, zero the header area, detach, unlink.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "strongroom/v1/common.pb.h"

namespace strongroom::host_agent {

// Every name and path a scratch uses. All but loop_device derive from the workload, so a crash at any step
// can be cleaned up from the workload id alone; the loop device is also found by its backing file.
struct ScratchLayout {
  std::string backing_file;  // <workload dir>/scratch.img
  std::string crypt_name;    // dm name "strongroom-<id>"
  std::string mount_point;   // <workload dir>/scratch
  std::string loop_device;   // "/dev/loopN" once attached
  v1::ScratchEncryption encryption = v1::SCRATCH_ENCRYPTION_UNSPECIFIED;
};

ScratchLayout LayoutFor(const std::string& workload_dir, const std::string& workload_id);

// OK where dm-crypt can work; FAILED_PRECONDITION naming the missing kernel feature otherwise.
absl::Status CheckDmCrypt();

struct ScratchOptions {
  uint64_t size_bytes = 0;
  uint32_t owner_uid = 0;  // owner of the file system root (container root's host uid)
  std::string mkfs_binary = "/usr/sbin/mkfs.ext4";
  absl::Duration mkfs_timeout = absl::Seconds(60);
};

// Creates and mounts the scratch. `layout.encryption` must be LUKS2_NO_KEYSLOT, PLAIN_DMCRYPT or NONE (the
// caller decided). `record` is called right after the loop device exists (to persist it) and must succeed to
// continue. On error, whatever was created has been removed again.
absl::Status CreateScratch(ScratchLayout& layout, const ScratchOptions& options,
                           const std::function<absl::Status(const ScratchLayout&)>& record);

// What DestroyScratch removed and what it could not.
struct ScratchTeardown {
  bool unmounted = true;
  bool deactivated = true;
  bool file_removed = true;
  std::vector<std::string> leftovers;
};

// Idempotent and tolerant: every step runs even if an earlier one failed or the object is already gone.
ScratchTeardown DestroyScratch(const ScratchLayout& layout);

}  // namespace strongroom::host_agent
