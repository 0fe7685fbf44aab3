#include "services/host_agent/container/oci_config.h"

#include <linux/capability.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/log.h"

namespace strongroom::host_agent {
namespace {

std::string Q(absl::string_view s) { return absl::StrCat("\"", JsonEscape(s), "\""); }

std::string QList(const std::vector<std::string>& items) {
  std::vector<std::string> quoted;
  for (const std::string& i : items) quoted.push_back(Q(i));
  return absl::StrCat("[", absl::StrJoin(quoted, ","), "]");
}

std::string Mount(absl::string_view dest, absl::string_view type, absl::string_view source,
                  const std::vector<std::string>& options) {
  return absl::StrCat("{\"destination\":", Q(dest), ",\"type\":", Q(type), ",\"source\":", Q(source),
                      ",\"options\":", QList(options), "}");
}

// Paths of the host kernel the container must not read (runc's defaults).
const std::vector<std::string>& MaskedPaths() {
  static const auto* paths = new std::vector<std::string>{"/proc/acpi",
                                                          "/proc/asound",
                                                          "/proc/kcore",
                                                          "/proc/keys",
                                                          "/proc/latency_stats",
                                                          "/proc/timer_list",
                                                          "/proc/timer_stats",
                                                          "/proc/sched_debug",
                                                          "/proc/scsi",
                                                          "/sys/firmware",
                                                          "/sys/devices/virtual/powercap"};
  return *paths;
}

// Kernel knobs visible but never writable.
const std::vector<std::string>& ReadonlyPaths() {
  static const auto* paths =
      new std::vector<std::string>{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"};
  return *paths;
}

}  // namespace

const std::vector<KeptCapability>& KeptCapabilities() {
  // Everything else is dropped. All of these act only inside the container's user namespace: container root
  // is host uid uid_base, so none of them reaches a host file or process outside the mapped range.
  static const auto* caps = new std::vector<KeptCapability>{
      {"CAP_CHOWN", CAP_CHOWN,
       "creating users (useradd/adduser chown their home) and package installs owning files to service "
       "users"},
      {"CAP_DAC_OVERRIDE", CAP_DAC_OVERRIDE,
       "root tools (slurmd, useradd, dpkg) writing files owned by other container users, e.g. job spool "
       "dirs"},
      {"CAP_FOWNER", CAP_FOWNER,
       "chmod/utime on files of other container users (slurmd spool, creating users)"},
      {"CAP_FSETID", CAP_FSETID,
       "keeping setgid bits on directories when root edits them (package installs)"},
      {"CAP_KILL", CAP_KILL, "slurmd/slurmstepd signal the job's processes, which run as the job's user"},
      {"CAP_SETGID", CAP_SETGID, "slurmstepd switches to the job user's groups (setgid/setgroups)"},
      {"CAP_SETUID", CAP_SETUID, "slurmstepd runs the job as the submitting user (setuid)"},
  };
  // Deliberately absent: CAP_SYS_ADMIN (mounting inside is not needed by slurmd with proctrack/linuxproc and
  // task/none, and it opens most of the kernel's attack surface), CAP_NET_ADMIN and CAP_NET_BIND_SERVICE
  // (only a data-path container has them, DataPathCapabilities(); slurmd listens on 6818), CAP_NET_RAW (the
  // network is netd's), CAP_MKNOD, CAP_SYS_PTRACE, CAP_SYS_CHROOT, CAP_AUDIT_WRITE, CAP_SETFCAP.
  return *caps;
}

const std::vector<KeptCapability>& DataPathCapabilities() {
  // Both act only in the container's own network namespace, which its user namespace owns: the kernel
  // checks them against the netns's owner, so nothing of the host's network (or another workload's) is
  // reachable, and netd's switch-side allowlist and anti-spoofing stay outside the workload's reach. What
  // container root gains is what a VM guest's root already has: its own addresses, routes and netd veth
  // (which it cannot move out of its netns). Measured: docs/IPSEC.md "Running the tunnel inside a container".
  static const auto* caps = new std::vector<KeptCapability>{
      {"CAP_NET_ADMIN", CAP_NET_ADMIN,
       "charon in the workload: the TUN device (TUNSETIFF) and its routes in table 220, the two `ip rule` "
       "bypass rules for IKE/ESP-in-UDP, XFRM states and policies where the kernel has ESP"},
      {"CAP_NET_BIND_SERVICE", CAP_NET_BIND_SERVICE,
       "charon refuses to open its IKE sockets on UDP 500 and 4500 without it (it checks the capability "
       "itself; lowering ip_unprivileged_port_start does not help)"},
  };
  return *caps;
}

std::vector<KeptCapability> CapabilitiesFor(bool data_path) {
  std::vector<KeptCapability> caps = KeptCapabilities();
  if (data_path) caps.insert(caps.end(), DataPathCapabilities().begin(), DataPathCapabilities().end());
  return caps;
}

uint64_t KeptCapabilityMask(bool data_path) {
  uint64_t mask = 0;
  for (const KeptCapability& c : CapabilitiesFor(data_path)) mask |= uint64_t{1} << c.number;
  return mask;
}

const std::vector<absl::string_view>& DeniedSyscalls() {
  // A deny-list in the spirit of Docker's default profile: kernel-global or rarely-needed, historically
  // exploitable interfaces. Most also need capabilities the container lacks; seccomp is the second wall.
  // ptrace, process_vm_readv/writev and kcmp stay allowed: MPI's single-copy shared-memory transports (CMA)
  // use them.
  static const auto* names = new std::vector<absl::string_view>{
      "acct",
      "add_key",
      "bpf",
      "clock_adjtime",
      "clock_settime",
      "create_module",
      "delete_module",
      "finit_module",
      "fsconfig",
      "fsmount",
      "fsopen",
      "fspick",
      "get_kernel_syms",
      "init_module",
      "ioperm",
      "iopl",
      "kexec_file_load",
      "kexec_load",
      "keyctl",
      "lookup_dcookie",
      "mount",
      "mount_setattr",
      "move_mount",
      "name_to_handle_at",
      "nfsservctl",
      "open_by_handle_at",
      "open_tree",
      "perf_event_open",
      "pivot_root",
      "query_module",
      "quotactl",
      "reboot",
      "request_key",
      "setns",
      "settimeofday",
      "stime",
      "swapoff",
      "swapon",
      "syslog",
      "umount",
      "umount2",
      "unshare",
      "uselib",
      "userfaultfd",
      "ustat",
      "vm86",
      "vm86old",
      "adjtimex",
  };
  return *names;
}

std::string BuildOciConfig(const ContainerParams& p) {
  std::vector<std::string> cap_names;
  for (const KeptCapability& c : CapabilitiesFor(p.data_path)) cap_names.emplace_back(c.name);
  const std::string caps = QList(cap_names);

  std::vector<std::string> mounts = {
      Mount("/proc", "proc", "proc", {"nosuid", "noexec", "nodev"}),
      Mount("/dev", "tmpfs", "tmpfs", {"nosuid", "strictatime", "mode=755", "size=65536k"}),
      Mount("/dev/pts", "devpts", "devpts",
            {"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"}),
      Mount("/dev/shm", "tmpfs", "shm", {"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}),
      Mount("/dev/mqueue", "mqueue", "mqueue", {"nosuid", "noexec", "nodev"}),
      // The host's /sys bound read-only, as rootless runtimes do; maskedPaths hide the sensitive parts.
      // Without the data path a fresh sysfs could not be mounted at all (the netns belongs to the host's user
      // namespace); with it (the netns is the container's own) the bind stays, so both containers see the
      // same /sys, and seccomp denies mount(2) inside anyway.
      Mount("/sys", "none", "/sys", {"rbind", "nosuid", "noexec", "nodev", "ro"}),
      Mount("/run", "tmpfs", "tmpfs", {"nosuid", "nodev", "mode=755"}),
  };
  for (const BindMount& b : p.binds) {
    std::vector<std::string> options = {"bind", "nosuid", "nodev"};
    if (!b.exec) options.push_back("noexec");
    if (b.read_only) options.push_back("ro");
    mounts.push_back(Mount(b.destination, "none", b.source, options));
  }
  if (!p.tun_node.empty()) {
    // Without nodev: it is a device node. An OCI linux.devices entry would not do (in a user namespace runc
    // binds the host's 0600 root node, which container root cannot open); runc's default device cgroup
    // already allows c 10:200.
    mounts.push_back(Mount("/dev/net/tun", "none", p.tun_node, {"bind", "nosuid", "noexec"}));
  }

  std::string userns = "{\"type\":\"user\"";
  if (!p.userns_path.empty()) absl::StrAppend(&userns, ",\"path\":", Q(p.userns_path));
  userns += "}";
  std::string netns = absl::StrCat("{\"type\":\"network\"");
  if (!p.netns_path.empty()) absl::StrAppend(&netns, ",\"path\":", Q(p.netns_path));
  netns += "}";

  std::string resources = "{}";
  if (!p.whole_node) {
    constexpr uint64_t kPeriod = 100000;
    resources =
        absl::StrCat("{\"memory\":{\"limit\":", p.memory_bytes,
                     "},\"cpu\":{\"quota\":", uint64_t{p.cpus} * kPeriod, ",\"period\":", kPeriod, "}}");
  }

  std::string seccomp;
  if (p.seccomp) {
    std::vector<std::string> names;
    for (absl::string_view n : DeniedSyscalls()) names.emplace_back(n);
    seccomp = absl::StrCat(
        ",\"seccomp\":{\"defaultAction\":\"SCMP_ACT_ALLOW\",\"architectures\":[\"SCMP_ARCH_X86_64\","
        "\"SCMP_ARCH_X86\",\"SCMP_ARCH_X32\"],\"syscalls\":[{\"names\":",
        QList(names), ",\"action\":\"SCMP_ACT_ERRNO\",\"errnoRet\":1}]}");
  }

  const std::string idmap =
      absl::StrCat("[{\"containerID\":0,\"hostID\":", p.uid_base, ",\"size\":", p.uid_count, "}]");
  return absl::StrCat(
      "{\"ociVersion\":\"1.0.2\",",
      "\"process\":{\"terminal\":false,\"user\":{\"uid\":0,\"gid\":0},\"args\":", QList(p.args),
      ",\"env\":", QList(p.env), ",\"cwd\":\"/\",\"noNewPrivileges\":true,",
      "\"capabilities\":{\"bounding\":", caps, ",\"effective\":", caps, ",\"permitted\":", caps,
      ",\"inheritable\":[],\"ambient\":[]}},", "\"root\":{\"path\":", Q(p.rootfs), ",\"readonly\":false},",
      "\"hostname\":", Q(p.hostname), ",", "\"mounts\":[", absl::StrJoin(mounts, ","), "],",
      "\"linux\":{\"uidMappings\":", idmap, ",\"gidMappings\":", idmap, ",",
      "\"namespaces\":[{\"type\":\"pid\"},{\"type\":\"ipc\"},{\"type\":\"uts\"},{\"type\":\"mount\"},",
      userns, ",{\"type\":\"cgroup\"},", netns, "],",
      // No shared parent: `runc delete` then removes the workload's whole cgroup, leaving nothing behind.
      "\"cgroupsPath\":", Q(absl::StrCat("/strongroom-", p.id)), ",", "\"resources\":", resources, ",",
      "\"maskedPaths\":", QList(MaskedPaths()), ",\"readonlyPaths\":", QList(ReadonlyPaths()), seccomp,
      "}}\n");
}

}  // namespace strongroom::host_agent
