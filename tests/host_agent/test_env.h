// Shared helpers of the host-agent tests: a private temp dir, a minimal workload image assembled from the
// host's static busybox (owned by the uid base, as deploy/image shifts real images), and leftover checks.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "absl/status/status.h"

namespace strongroom::host_agent::testing {

constexpr uint32_t kUidBase = 100000;

// `base` + "-" + this process's pid in hex: workload ids unique per test process, so two runs of the suite at
// once (another build dir) never share a netns name, dm name or cgroup path.
std::string Id(const std::string& base);

// mkdtemp under /tmp with `prefix`; removed by RemoveTree.
std::string MakeTempDir(const std::string& prefix);
// Unmounts anything below `dir`, then removes it.
void RemoveTree(const std::string& dir);

// Writes image `name` into `image_root`: busybox with applet links, /usr/libexec/strongroom/entrypoint =
// `script` (a /bin/sh script), chowned to kUidBase.
absl::Status BuildBusyboxImage(const std::string& image_root, const std::string& name,
                               const std::string& script);

// The default entrypoint: records uid, capabilities and hostname in /probe, writes /marker, then waits for
// SIGTERM.
std::string ProbeScript();

// What a stopped workload must not leave: mounts or loop devices under `state_dir`, netns `netns`, the
// workload dir, a dm device "strongroom-<id>", a runc container. Empty when clean.
std::vector<std::string> Leftovers(const std::string& state_dir, const std::string& id,
                                   const std::string& runc_root);

std::string ReadFile(const std::string& path);
// The Uid:/CapEff: line values of /proc/PID/status.
std::string ProcStatusField(pid_t pid, const std::string& field);

}  // namespace strongroom::host_agent::testing
