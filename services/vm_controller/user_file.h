// Writing into a user's own file (the refused job's output) with that user's rights, never root's: the path
// comes from the user's job, so a symlink, a FIFO or a file the user cannot write must not become root's write.
#pragma once

#include <sys/types.h>

#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace strongroom::vm_controller {

// Appends `text` to `path` (created 0600 if missing) as `uid`:`gid` with no supplementary groups, in a child
// process (credentials are per process; the daemon's threads keep root's). Refuses uid 0, a relative path, a
// symlink as the last component and anything but a regular file. The child is killed after `timeout` (a path on
// a hung network filesystem).
absl::Status AppendAsUser(const std::string& path, uid_t uid, gid_t gid, const std::string& text,
                          absl::Duration timeout = absl::Seconds(5));

}  // namespace strongroom::vm_controller
