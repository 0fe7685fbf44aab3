// Mount-table helpers on /proc/self/mountinfo, loop devices through /dev/loop-control ioctls (no losetup),
// and the workload root: the read-only image as the overlay's lower layer, upper and work dirs on the
// scratch.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace strongroom::host_agent {

// Mount points currently at or below `prefix` (a directory path), deepest first (the order to unmount them).
std::vector<std::string> MountsUnder(const std::string& prefix);
bool IsMountPoint(const std::string& path);
// Unmounts `path` if mounted (OK if not). EBUSY is an error naming the path.
absl::Status Unmount(const std::string& path);

// Attaches `file` to a free loop device (LOOP_CONFIGURE; detached explicitly) and returns "/dev/loopN".
absl::StatusOr<std::string> AttachLoop(const std::string& file, bool read_only);
// Detaches `device` if, and only if, its backing file is `file` (so another user's loop is never touched).
absl::Status DetachLoop(const std::string& device, const std::string& file);
// Loop devices whose backing file lies under `prefix`.
std::vector<std::pair<std::string, std::string>> LoopsBackedUnder(const std::string& prefix);

// Makes the image available read-only at `target`: a directory is bind-mounted read-only; a .squashfs file is
// attached to a read-only loop device and mounted. Returns the loop device used ("" for a directory).
absl::StatusOr<std::string> MountImage(const std::string& image_path, const std::string& target);

// overlay at `target` with lowerdir=`lower`, upperdir and workdir as given; nosuid, nodev.
absl::Status MountOverlay(const std::string& lower, const std::string& upper, const std::string& work,
                          const std::string& target);

}  // namespace strongroom::host_agent
