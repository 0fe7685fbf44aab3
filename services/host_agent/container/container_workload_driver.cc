#include "services/host_agent/container/container_workload_driver.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/log.h"
#include "common/status.h"
#include "services/host_agent/container/netns.h"
#include "services/host_agent/container/scratch.h"
#include "services/host_agent/container/workload_namespaces.h"
#include "services/host_agent/data_path.h"
#include "services/host_agent/mounts.h"
#include "services/host_agent/spec_validation.h"

namespace strongroom::host_agent {
namespace {

constexpr absl::Duration kKillWait = absl::Seconds(10);
constexpr absl::Duration kUserWait = absl::Seconds(5);  // processes still using the workload dir

// The host file naming the project share host-agent mounted inside a data-path workload, and the marker of a
// workload whose share host-agent mounts on request (so an agent that adopts it after a restart polls again).
std::string ShareRecordIn(const std::string& workload_dir) { return workload_dir + "/share-mount"; }
std::string ShareOnRequestIn(const std::string& workload_dir) { return workload_dir + "/share-on-request"; }

std::string ReadFirstLine(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line;
}

bool Alive(pid_t pid, uint64_t start) { return pid > 0 && start != 0 && ProcessStartTime(pid) == start; }

// Waits for processes that still use files below the workload dir to go (the `runc run` supervisor exits
// shortly after its container; after an agent restart nobody waits for that orphan), then SIGKILLs what is
// left: with the container gone, nothing may hold the workload's scratch. Returns what survived.
std::vector<pid_t> ReleaseUsers(const std::string& dir) {
  if (dir.size() < 2 || dir[0] != '/') return {};
  const absl::Time deadline = absl::Now() + kUserWait;
  std::vector<pid_t> users = ProcessesUsing(dir + "/");
  while (!users.empty() && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(20));
    users = ProcessesUsing(dir + "/");
  }
  if (users.empty()) return users;
  for (pid_t pid : users) {
    Log(LogLevel::kWarn, "teardown: killing a process still using the workload dir",
        {{"dir", dir}, {"pid", absl::StrCat(pid)}});
    kill(pid, SIGKILL);
  }
  const absl::Time kill_deadline = absl::Now() + kKillWait;
  while (!users.empty() && absl::Now() < kill_deadline) {
    absl::SleepFor(absl::Milliseconds(20));
    users = ProcessesUsing(dir + "/");
  }
  return users;
}

}  // namespace

ContainerProvisioning ContainerProvisioningFor(const ProvisioningInputs& inputs,
                                               const std::string& bundle_file) {
  ContainerProvisioning out;
  out.env = {"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root"};
  for (const auto& [name, value] : inputs.env) out.env.push_back(absl::StrCat(name, "=", value));
  if (!inputs.bundle_json.empty()) {
    out.binds.push_back({bundle_file, kProvisioningPath, true});
    // Bound read-only from where it is; never copied.
    if (!inputs.slurm_auth_file.empty()) out.binds.push_back({inputs.slurm_auth_file, kSlurmAuthPath, true});
  }
  if (!inputs.project_share.empty()) {
    // At the same path, so paths in job scripts mean the same inside and out; job scripts may live there.
    BindMount b{inputs.project_share, inputs.project_share, /*read_only=*/false};
    b.exec = true;
    out.binds.push_back(b);
  }
  return out;
}

absl::StatusOr<std::string> ContainerWorkloadDriver::ResolveImage(const v1::ImageRef& image) {
  // The name was validated (no "/", no ".."), so the path stays inside image_root.
  const std::string base = options_.image_root + "/" + image.name();
  std::string path;
  struct stat st;
  if (stat(base.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
    path = base;
    if (st.st_uid != options_.uid_base) {
      return absl::FailedPreconditionError(absl::StrCat(
          "image ", image.name(), ": its root is owned by host uid ", st.st_uid, ", not the uid_base ",
          options_.uid_base, " container root maps to (deploy/image shifts it)"));
    }
  } else if (stat((base + ".squashfs").c_str(), &st) == 0 && S_ISREG(st.st_mode)) {
    path = base + ".squashfs";
  } else {
    return absl::NotFoundError(absl::StrCat("image ", image.name(), " is not in this node's catalog"));
  }
  if (!image.digest().empty()) {
    const std::string pinned = ReadFirstLine(base + ".digest");
    if (pinned != image.digest()) {
      return absl::FailedPreconditionError(absl::StrCat("image ", image.name(), ": digest ", image.digest(),
                                                        " asked, catalog has ",
                                                        pinned.empty() ? "none" : pinned));
    }
  }
  return path;
}

absl::StatusOr<v1::ScratchEncryption> ContainerWorkloadDriver::DecideEncryption(
    const v1::WorkloadSpec& spec) {
  const v1::ScratchEncryption asked = spec.scratch().encryption();
  if (asked == v1::SCRATCH_ENCRYPTION_NONE) {
    if (!options_.allow_unencrypted_scratch) {
      return absl::FailedPreconditionError(
          "spec.scratch.encryption: SCRATCH_ENCRYPTION_NONE is refused (host-agent config "
          "allow_unencrypted_scratch is off; it is for development only)");
    }
    return v1::SCRATCH_ENCRYPTION_NONE;
  }
  absl::Status dm = CheckDmCrypt();
  if (!dm.ok()) {
    // Development only, and never a downgrade of an explicit request.
    if (options_.allow_unencrypted_scratch && asked == v1::SCRATCH_ENCRYPTION_UNSPECIFIED) {
      return v1::SCRATCH_ENCRYPTION_NONE;
    }
    return dm;
  }
  return asked == v1::SCRATCH_ENCRYPTION_PLAIN_DMCRYPT ? v1::SCRATCH_ENCRYPTION_PLAIN_DMCRYPT
                                                       : v1::SCRATCH_ENCRYPTION_LUKS2_NO_KEYSLOT;
}

absl::StatusOr<StartPlan> ContainerWorkloadDriver::Resolve(const v1::WorkloadSpec& spec) {
  if (IsContainerDataPath(spec) && runtime_->name() == "apptainer") {
    return absl::FailedPreconditionError(
        "provisioning.ipsec_data_path: the apptainer runtime cannot join a prepared user namespace; this "
        "node must run containers with runc or crun for the secure data path");
  }
  StartPlan plan;
  SR_ASSIGN_OR_RETURN(plan.image_path, ResolveImage(spec.image()));
  SR_ASSIGN_OR_RETURN(plan.encryption, DecideEncryption(spec));
  plan.names.netns = NetnsNameFor(spec.workload_id());
  plan.names.crypt_name =
      plan.encryption == v1::SCRATCH_ENCRYPTION_NONE ? "" : "strongroom-" + spec.workload_id();
  return plan;
}

absl::Status ContainerWorkloadDriver::PrepareStorage(StartContext& ctx) {
  const std::string& id = ctx.id;
  const std::string& dir = ctx.workload.resources.workload_dir;
  const v1::WorkloadSpec& spec = ctx.workload.record.spec();
  // 1. Scratch (encrypted unless explicitly allowed otherwise).
  const absl::Time t0 = absl::Now();
  std::error_code ec;
  std::filesystem::create_directories(dir + "/bundle", ec);
  std::filesystem::create_directories(dir + "/lower", ec);
  std::filesystem::create_directories(dir + "/rootfs", ec);
  chmod(dir.c_str(), 0711);
  if (ec) return ctx.fail(v1::FAILURE_PHASE_SCRATCH, "STATE_DIR", absl::InternalError(ec.message()));
  ScratchLayout layout = LayoutFor(dir, id);
  layout.encryption = ctx.workload.record.scratch_encryption();
  ScratchOptions so;
  so.size_bytes = EffectiveScratchBytes(spec, options_.scratch_default_bytes);
  so.owner_uid = options_.uid_base;
  so.mkfs_binary = options_.mkfs_binary;
  absl::Status s = CreateScratch(layout, so, [&](const ScratchLayout& l) {
    return ctx.record([&](TrackedWorkload& w) { w.resources.scratch_loop = l.loop_device; });
  });
  if (!s.ok()) {
    return ctx.fail(
        v1::FAILURE_PHASE_SCRATCH,
        absl::StrContains(s.message(), "device-mapper") ? "DM_CRYPT_UNAVAILABLE" : "SCRATCH_SETUP", s);
  }
  SR_RETURN_IF_ERROR(ctx.record([&](TrackedWorkload& w) {
    w.record.set_scratch_size_bytes(so.size_bytes);
    w.resources.mounts = layout.mount_point;
    w.resources.stage = "scratch";
  }));
  ctx.timings->scratch = absl::Now() - t0;
  ctx.crash_point("start.after_scratch");

  // 2. The image read-only as the lower layer; upper and work dirs on the scratch.
  const absl::Time t1 = absl::Now();
  const std::string upper = layout.mount_point + "/upper", work = layout.mount_point + "/work";
  for (const std::string& d : {upper, work}) {
    if (mkdir(d.c_str(), 0755) != 0 || chown(d.c_str(), options_.uid_base, options_.uid_base) != 0) {
      return ctx.fail(v1::FAILURE_PHASE_SCRATCH, "SCRATCH_SETUP",
                      absl::InternalError(absl::StrCat("mkdir ", d, ": ", std::strerror(errno))));
    }
  }
  absl::StatusOr<std::string> image_loop = MountImage(ctx.image_path, dir + "/lower");
  if (!image_loop.ok()) return ctx.fail(v1::FAILURE_PHASE_IMAGE, "IMAGE_MOUNT", image_loop.status());
  SR_RETURN_IF_ERROR(ctx.record([&](TrackedWorkload& w) {
    w.resources.image_loop = *image_loop;
    w.resources.mounts = absl::StrCat(layout.mount_point, "\n", dir, "/lower");
  }));
  struct stat lower_root;
  if (stat((dir + "/lower").c_str(), &lower_root) != 0 || lower_root.st_uid != options_.uid_base) {
    return ctx.fail(v1::FAILURE_PHASE_IMAGE, "IMAGE_NOT_SHIFTED",
                    absl::FailedPreconditionError(absl::StrCat(
                        "image ", spec.image().name(), ": root not owned by uid_base ", options_.uid_base)));
  }
  if (absl::Status o = MountOverlay(dir + "/lower", upper, work, dir + "/rootfs"); !o.ok()) {
    return ctx.fail(v1::FAILURE_PHASE_SCRATCH, "OVERLAY_MOUNT", o);
  }
  SR_RETURN_IF_ERROR(ctx.record([&](TrackedWorkload& w) {
    w.resources.mounts = absl::StrCat(layout.mount_point, "\n", dir, "/lower\n", dir, "/rootfs");
    w.resources.stage = "overlay";
  }));
  ctx.timings->overlay = absl::Now() - t1;
  ctx.crash_point("start.after_overlay");
  return absl::OkStatus();
}

absl::Status ContainerWorkloadDriver::AttachNetwork(StartContext& ctx) {
  // The port exists before any workload process does.
  const std::string& netns = ctx.workload.resources.netns;
  const std::string& dir = ctx.workload.resources.workload_dir;
  if (IsContainerDataPath(ctx.workload.record.spec())) {
    // The netns owned by the container's own user namespace, and its TUN node (workload_namespaces.h). Both
    // binds lie under names teardown derives from the record (the netns name, the workload dir).
    if (absl::Status n =
            CreateWorkloadNamespaces(netns, UsernsFileIn(dir), options_.uid_base, options_.uid_count);
        !n.ok())
      return ctx.fail(v1::FAILURE_PHASE_NETWORK, "NETNS_CREATE", n);
    SR_RETURN_IF_ERROR(ctx.record([&](TrackedWorkload& w) {
      w.resources.mounts = absl::StrCat(w.resources.mounts, "\n", UsernsFileIn(dir));
      w.resources.stage = "namespaces";
    }));
    ctx.crash_point("start.after_namespaces");
    if (absl::Status t = CreateTunNode(TunNodeIn(dir), options_.uid_base); !t.ok())
      return ctx.fail(v1::FAILURE_PHASE_NETWORK, "TUN_DEVICE", t);
  } else if (absl::Status n = CreateNetns(netns); !n.ok()) {
    return ctx.fail(v1::FAILURE_PHASE_NETWORK, "NETNS_CREATE", n);
  }
  absl::StatusOr<v1::NetworkAttachment> port =
      network_->Allocate(ctx.workload.record.spec(), NetnsPath(netns));
  if (!port.ok())
    return ctx.fail(v1::FAILURE_PHASE_NETWORK, NetworkFailureReason(port.status()), port.status());
  ctx.port = *port;
  return ctx.record([&](TrackedWorkload& w) {
    if (network_->attached()) *w.record.mutable_network() = *port;
    w.record.set_netns(NetnsPath(w.resources.netns));
    w.resources.port_name = port->port_name();
    w.resources.netd_generation = port->generation();
    w.resources.stage = "network";
  });
}

absl::Status ContainerWorkloadDriver::Launch(StartContext& ctx) {
  const std::string& id = ctx.id;
  const std::string& dir = ctx.workload.resources.workload_dir;
  const v1::WorkloadSpec& spec = ctx.workload.record.spec();
  const std::string scratch = LayoutFor(dir, id).mount_point;
  ContainerParams p;
  p.id = id;
  p.rootfs = dir + "/rootfs";
  p.args = {options_.entrypoint};
  p.hostname = spec.provisioning().node_name().empty() ? id : spec.provisioning().node_name();
  p.netns_path = NetnsPath(ctx.workload.resources.netns);
  const bool data_path = IsContainerDataPath(spec);
  if (data_path) {
    p.userns_path = UsernsFileIn(dir);
    p.data_path = true;
    p.tun_node = TunNodeIn(dir);
  }
  p.uid_base = options_.uid_base;
  p.uid_count = options_.uid_count;
  p.whole_node = spec.whole_node();
  p.cpus = spec.resources().cpus();
  p.memory_bytes = spec.resources().memory_bytes();
  p.image_path = ctx.image_path;
  p.overlay_dir = scratch + "/upper";
  const std::string bundle_file = dir + "/bundle/provisioning.json";
  if (!ctx.inputs.bundle_json.empty()) {
    // It holds the workload's one-time enrollment ticket: created 0600 (never readable by others, not even
    // briefly), then owned by container root (host uid uid_base), 0400.
    unlink(bundle_file.c_str());
    const int fd = open(bundle_file.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    const std::string& json = ctx.inputs.bundle_json;
    bool written = fd >= 0;
    for (size_t done = 0; written && done < json.size();) {
      const ssize_t n = write(fd, json.data() + done, json.size() - done);
      if (n < 0 && errno == EINTR) continue;
      written = n > 0;
      if (written) done += static_cast<size_t>(n);
    }
    written = written && fchown(fd, options_.uid_base, options_.uid_base) == 0 && fchmod(fd, 0400) == 0;
    const int err = errno;
    if (fd >= 0) close(fd);
    if (!written) {
      return ctx.fail(v1::FAILURE_PHASE_PROVISIONING, "BUNDLE_FILE",
                      absl::InternalError(absl::StrCat("cannot write ", bundle_file,
                                                       " for container root: ", strerror(err))));
    }
  }
  ContainerProvisioning provisioning = ContainerProvisioningFor(ctx.inputs, bundle_file);
  p.env = std::move(provisioning.env);
  p.binds = std::move(provisioning.binds);
  if (absl::Status r = runtime_->Prepare(p, dir + "/bundle"); !r.ok()) {
    return ctx.fail(v1::FAILURE_PHASE_RUNTIME, "RUNTIME_PREPARE", r);
  }
  // Container output goes to the encrypted scratch, never to the host's disk in the clear.
  absl::StatusOr<StartedContainer> c =
      runtime_->Start(id, dir + "/bundle", scratch + "/runtime.log", options_.runtime_start_timeout);
  if (!c.ok()) return ctx.fail(v1::FAILURE_PHASE_RUNTIME, "RUNTIME_START", c.status());
  const uint64_t init_start = ProcessStartTime(c->init_pid);
  SR_RETURN_IF_ERROR(ctx.record([&](TrackedWorkload& w) {
    w.resources.init_pid = c->init_pid;
    w.resources.init_start = init_start;
    w.resources.stage = "runtime";
  }));
  ctx.watch(c->supervisor, c->init_pid, init_start);
  if (data_path && ctx.inputs.share_over_nfs) {
    std::ofstream(ShareOnRequestIn(dir)) << "1\n";
    WatchShareRequest(ctx.workload, c->init_pid);
  }
  return absl::OkStatus();
}

void ContainerWorkloadDriver::WatchShareRequest(const TrackedWorkload& tw, pid_t init_pid) {
  ShareWatch w;
  w.workload_id = tw.record.spec().workload_id();
  w.root_dir = absl::StrCat("/proc/", init_pid, "/root");
  w.netns_path = NetnsPath(tw.resources.netns);
  w.mountns_path = absl::StrCat("/proc/", init_pid, "/ns/mnt");
  w.record_file = ShareRecordIn(tw.resources.workload_dir);
  w.give_up_after = options_.share_request_bound;
  w.fail = [this, id = w.workload_id](const std::string& reason, const std::string& message) {
    if (fail_running_) fail_running_(id, reason, message);
    (void)runtime_->Kill(id, SIGKILL, true);
  };
  shares_.Watch(std::move(w));
}

void ContainerWorkloadDriver::StopExecution(TeardownContext& ctx) {
  const std::string& id = ctx.id;
  const TrackedResources& res = ctx.workload.resources;
  std::vector<std::string>& leftovers = *ctx.leftovers;
  const absl::Time t0 = absl::Now();
  // The NFS share host-agent mounted inside the workload, while its mount namespace still exists.
  // (Only through the init recorded: a reused pid's namespace is someone else's.)
  const std::string mountns =
      Alive(res.init_pid, res.init_start) ? absl::StrCat("/proc/", res.init_pid, "/ns/mnt") : "";
  if (absl::Status s = shares_.Release(id, mountns, ShareRecordIn(res.workload_dir)); !s.ok())
    leftovers.push_back(std::string(s.message()));
  // SIGTERM, the grace period, SIGKILL to all, then everything left in the netns.
  if (res.init_pid != 0 && !ctx.await_exit(absl::ZeroDuration())) {
    if (ctx.grace > absl::ZeroDuration()) {
      (void)runtime_->Kill(id, SIGTERM, false);
      ctx.await_exit(ctx.grace);
    }
    if (!ctx.await_exit(absl::ZeroDuration())) {
      if (absl::Status s = runtime_->Kill(id, SIGKILL, true); !s.ok())
        leftovers.push_back(std::string(s.message()));
      if (!ctx.await_exit(kKillWait))
        leftovers.push_back(absl::StrCat("container ", id, ": init survived SIGKILL"));
    }
  }
  absl::StatusOr<int> killed = KillProcessesInNetns(res.netns, kKillWait);
  if (!killed.ok()) leftovers.push_back(std::string(killed.status().message()));
  ctx.report->set_processes_killed(killed.ok());
  ctx.crash_point("stop.after_kill");
  absl::Status deleted = runtime_->Delete(id);
  if (!deleted.ok()) leftovers.push_back(std::string(deleted.message()));
  ctx.report->set_runtime_deleted(deleted.ok());
  ctx.timings->runtime = absl::Now() - t0;
}

void ContainerWorkloadDriver::RemoveStorage(TeardownContext& ctx) {
  const TrackedResources& res = ctx.workload.resources;
  std::vector<std::string>& leftovers = *ctx.leftovers;
  // Overlay and image, then the scratch (unmount, deactivate, wipe header, detach, unlink).
  const absl::Time t0 = absl::Now();
  const std::string dir = res.workload_dir;
  bool mounts_ok = true;
  for (pid_t pid : ReleaseUsers(dir)) {
    leftovers.push_back(absl::StrCat("process ", pid, " still uses ", dir, " after SIGKILL"));
  }
  for (const std::string& m : {dir + "/rootfs", dir + "/lower"}) {
    if (absl::Status s = Unmount(m); !s.ok()) {
      mounts_ok = false;
      leftovers.push_back(std::string(s.message()));
    }
  }
  if (!res.image_loop.empty()) {
    (void)DetachLoop(res.image_loop,
                     options_.image_root + "/" + ctx.workload.record.spec().image().name() + ".squashfs");
  }
  ctx.timings->overlay = absl::Now() - t0;
  const absl::Time t1 = absl::Now();
  ScratchLayout layout = LayoutFor(dir, ctx.id);
  layout.loop_device = res.scratch_loop;
  if (!res.crypt_name.empty()) layout.crypt_name = res.crypt_name;
  ScratchTeardown st = DestroyScratch(layout);
  leftovers.insert(leftovers.end(), st.leftovers.begin(), st.leftovers.end());
  mounts_ok = mounts_ok && st.unmounted;
  ctx.report->set_scratch_destroyed(st.deactivated && st.file_removed);
  ctx.timings->scratch = absl::Now() - t1;

  // The netns and the workload dir (only once nothing is mounted below it).
  if (absl::Status s = DeleteNetns(res.netns); !s.ok()) leftovers.push_back(std::string(s.message()));
  // A data-path workload's user namespace (its TUN node goes with the directory).
  if (absl::Status s = RemoveUsernsFile(UsernsFileIn(dir)); !s.ok())
    leftovers.push_back(std::string(s.message()));
  for (const std::string& m : MountsUnder(dir)) {
    if (absl::Status s = Unmount(m); !s.ok()) leftovers.push_back(std::string(s.message()));
  }
  if (MountsUnder(dir).empty()) {
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
    if (ec) leftovers.push_back(absl::StrCat("remove ", dir, ": ", ec.message()));
  } else {
    mounts_ok = false;
    leftovers.push_back(absl::StrCat("mounts remain under ", dir, "; directory kept"));
  }
  ctx.report->set_mounts_removed(mounts_ok);
}

bool ContainerWorkloadDriver::HealthyForAdoption(const TrackedWorkload& tw, std::string* why) {
  const TrackedResources& r = tw.resources;
  if (!Alive(r.init_pid, r.init_start)) {
    *why = "its init process is gone";
    return false;
  }
  absl::StatusOr<RuntimeState> st = runtime_->State(tw.record.spec().workload_id());
  if (!st.ok() || !st->exists || st->status != "running") {
    *why = absl::StrCat(runtime_->name(), " does not report it running");
    return false;
  }
  for (absl::string_view m : absl::StrSplit(r.mounts, '\n', absl::SkipEmpty())) {
    if (!IsMountPoint(std::string(m))) {
      *why = absl::StrCat(m, " is not mounted");
      return false;
    }
  }
  if (access(NetnsPath(r.netns).c_str(), F_OK) != 0) {
    *why = "its netns is gone";
    return false;
  }
  if (IsContainerDataPath(tw.record.spec())) {
    // Its user namespace's bind is among r.mounts (checked above); the TUN node is bound in the container.
    if (access(TunNodeIn(r.workload_dir).c_str(), F_OK) != 0) {
      *why = "its TUN node is gone";
      return false;
    }
    // Adopted: a share it has not asked for yet is watched for again (one already mounted has its record).
    if (access(ShareOnRequestIn(r.workload_dir).c_str(), F_OK) == 0 &&
        access(ShareRecordIn(r.workload_dir).c_str(), F_OK) != 0)
      WatchShareRequest(tw, r.init_pid);
  }
  return true;
}

void ContainerWorkloadDriver::SweepOrphans(const std::string& workloads_root,
                                           const std::set<std::string>& active) {
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(workloads_root, ec)) {
    const std::string id = entry.path().filename();
    if (active.count(id) != 0) continue;
    for (const std::string& m : MountsUnder(entry.path())) (void)Unmount(m);  // a data-path userns too
    (void)DestroyScratch(LayoutFor(entry.path(), id));
    (void)runtime_->Delete(id);
    (void)DeleteNetns(NetnsNameFor(id));
  }
  for (const auto& [device, file] : LoopsBackedUnder(workloads_root + "/")) {
    const std::string id = std::filesystem::path(file).parent_path().filename();
    if (active.count(id) == 0) (void)DetachLoop(device, file);
  }
}

}  // namespace strongroom::host_agent
