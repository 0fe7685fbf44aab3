// Generates an OCI runtime config.json (runtime-spec 1.0.2) for a whole-node workload container: a fakeroot
// user namespace (container root = an unprivileged host uid range), the capability set below and nothing
// else, no_new_privs, a seccomp deny-list, masked and read-only paths, and the workload's prepared network
// namespace. Pure: no I/O. The Apptainer driver builds its command line from the same parameters
// (apptainer_argv.h).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace strongroom::host_agent {

// One capability kept inside the container, and why the workload needs it.
struct KeptCapability {
  absl::string_view name;    // e.g. "CAP_CHOWN"
  int number;                // from linux/capability.h
  absl::string_view reason;  // why a Local Slurm node (slurmd, job prolog, package tools) needs it
};

// The capability set of every workload container: bounding = effective = permitted; inheritable and ambient
// empty.
const std::vector<KeptCapability>& KeptCapabilities();
// What a data-path container (spec.provisioning.ipsec_data_path) keeps in addition: CAP_NET_ADMIN and
// CAP_NET_BIND_SERVICE, for the IPsec tunnel it runs itself in the network namespace its own user namespace
// owns (workload_namespaces.h).
const std::vector<KeptCapability>& DataPathCapabilities();
// KeptCapabilities(), plus DataPathCapabilities() when `data_path`.
std::vector<KeptCapability> CapabilitiesFor(bool data_path);
// The same set as a bit mask (bit N = capability N), as /proc/PID/status CapEff shows it.
uint64_t KeptCapabilityMask(bool data_path = false);

// Syscalls the seccomp profile refuses with EPERM (everything else is allowed).
const std::vector<absl::string_view>& DeniedSyscalls();

struct BindMount {
  std::string source;       // host path
  std::string destination;  // path inside the container
  bool read_only = true;
  bool exec = false;        // false: noexec (data only); a project share allows executing job scripts
};

struct ContainerParams {
  std::string id;                 // runtime container id (= the workload id)
  std::string rootfs;             // the merged overlay, absolute host path
  std::vector<std::string> args;  // the entrypoint argv
  std::vector<std::string> env;   // KEY=VALUE
  std::string hostname;
  std::string netns_path;  // /run/netns/<name>; empty: a new, unconnected netns
  // The secure data path (workload_namespaces.h): the user namespace to join (a bind of it, which owns
  // netns_path; runc gets the same id mappings), the data-path capabilities, and the workload's own TUN node
  // bound at /dev/net/tun without nodev. Empty / false / empty for every other container.
  std::string userns_path;
  bool data_path = false;
  std::string tun_node;
  uint32_t uid_base = 0;   // host uid/gid of container root
  uint32_t uid_count = 0;
  bool whole_node = true;  // false: cpus and memory_bytes become cgroup limits
  uint32_t cpus = 0;
  uint64_t memory_bytes = 0;
  std::vector<BindMount> binds;  // extra bind mounts (e.g. the provisioning bundle)
  bool seccomp = true;           // false only where the runtime was built without seccomp support
  // For drivers that assemble the root themselves (Apptainer): the catalog image and the writable overlay
  // dir.
  std::string image_path;
  std::string overlay_dir;
};

// The config.json text.
std::string BuildOciConfig(const ContainerParams& params);

}  // namespace strongroom::host_agent
