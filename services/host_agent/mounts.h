// Mount-table helpers on /proc/self/mountinfo, loop devices through /dev/loop-control ioctls (no losetup),
// and the workload root: the read-only image as the overlay's lower layer, upper and work dirs on the
// scratch.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace strongroom::host_agent {

// Mount points currently at or below `prefix` (a directory path), deepest first (the order to unmount them).
std::vector<std::string> MountsUnder(const std::string& prefix);
bool IsMountPoint(const std::string& path);
// Unmounts `path` if mounted (OK if not). While the mount is busy (EBUSY) it retries for `busy_retry`, then
// falls back to a lazy unmount (MNT_DETACH): the path is free at once and the file system goes when its last
// user does (so a device below it may stay busy for a while; the loop and dm-crypt steps wait for that with
// their own bounds). Other errors name the path.
absl::Status Unmount(const std::string& path, absl::Duration busy_retry = absl::Seconds(3));

// Propagation: makes the mount at `path` private (never propagates to or receives from other mount
// namespaces) and, with `unbindable`, also refuses to be bind-mounted (so a recursive bind of a parent does
// not copy it). Workload mounts are private only: overlayfs refuses layers on unbindable mounts, and the
// runtime binds the rootfs.
absl::Status MakePrivate(const std::string& path, bool unbindable);
// Makes `dir` a private mount point of its own (a bind mount onto itself, as iproute2 does for /run/netns,
// but private): mounts created below it never propagate into other mount namespaces (a host whose / is
// shared would otherwise hand every workload mount to each service namespace, where it pins the scratch).
// Idempotent. Skipped (with a warning, OK) if `dir` is not a mount point yet but already has mounts below it:
// a bind onto itself would hide them.
absl::Status EnsurePrivateMountPoint(const std::string& dir);

// Processes (not this one) with an open file, cwd or root below `prefix`: e.g. an orphaned `runc run`
// supervisor whose stdout is the scratch's runtime.log keeps the scratch busy.
std::vector<pid_t> ProcessesUsing(const std::string& prefix);
// /proc/PID/stat field 22 (start time in clock ticks), to tell a process from a later one with its pid; 0 if
// the process does not exist (or is a zombie).
uint64_t ProcessStartTime(pid_t pid);

// Attaches `file` to a free loop device (LOOP_CONFIGURE; detached explicitly) and returns "/dev/loopN".
absl::StatusOr<std::string> AttachLoop(const std::string& file, bool read_only);
// Detaches `device` if, and only if, its backing file is `file` (so another user's loop is never touched).
// LOOP_CLR_FD on a device still open elsewhere only sets autoclear (the kernel detaches at the last close):
// waits up to `wait` for the detach, re-issuing LOOP_CLR_FD, and fails naming the device after that.
absl::Status DetachLoop(const std::string& device, const std::string& file,
                        absl::Duration wait = absl::Seconds(10));
// Loop devices whose backing file lies under `prefix`.
std::vector<std::pair<std::string, std::string>> LoopsBackedUnder(const std::string& prefix);

// Makes the image available read-only at `target`: a directory is bind-mounted read-only; a .squashfs file is
// attached to a read-only loop device and mounted. Returns the loop device used ("" for a directory).
absl::StatusOr<std::string> MountImage(const std::string& image_path, const std::string& target);

// overlay at `target` with lowerdir=`lower`, upperdir and workdir as given; nosuid, nodev.
absl::Status MountOverlay(const std::string& lower, const std::string& upper, const std::string& work,
                          const std::string& target);

}  // namespace strongroom::host_agent
