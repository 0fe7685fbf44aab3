#include "services/host_agent/manager.h"

#include <signal.h>
#include <sys/stat.h>
#include <sys/mount.h>
#include <sys/sysinfo.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/log.h"
#include "common/status.h"
#include "google/protobuf/util/json_util.h"
#include "google/protobuf/util/time_util.h"
#include "services/host_agent/mounts.h"
#include "services/host_agent/netns.h"
#include "services/host_agent/scratch.h"
#include "services/host_agent/state_machine.h"

namespace strongroom::host_agent {

const char* NetworkFailureReason(const absl::Status& allocate) {
  switch (allocate.code()) {
    case absl::StatusCode::kResourceExhausted: return "IP_POOL_EXHAUSTED";
    case absl::StatusCode::kUnavailable: return "NETD_UNAVAILABLE";
    default: return "NETD_ALLOCATE";
  }
}

namespace {

using google::protobuf::util::TimeUtil;

google::protobuf::Timestamp Now() { return TimeUtil::NanosecondsToTimestamp(absl::ToUnixNanos(absl::Now())); }

std::string ReadFirstLine(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line;
}

}  // namespace

uint64_t ProcessStartTime(pid_t pid) {
  if (pid <= 0) return 0;
  const std::string stat = ReadFirstLine(absl::StrCat("/proc/", pid, "/stat"));
  const size_t paren = stat.rfind(')');
  if (paren == std::string::npos) return 0;
  std::vector<absl::string_view> f = absl::StrSplit(absl::string_view(stat).substr(paren + 2), ' ');
  uint64_t start = 0;
  if (f.size() > 19 && f[0] != "Z" && f[0] != "X") (void)absl::SimpleAtoi(f[19], &start);
  return start;
}

WorkloadManager::WorkloadManager(ManagerOptions options, std::unique_ptr<Runtime> runtime,
                                 std::unique_ptr<NetworkProvider> network, std::shared_ptr<AuditSink> audit,
                                 std::unique_ptr<Store> store)
    : options_(std::move(options)),
      runtime_(std::move(runtime)),
      network_(std::move(network)),
      audit_(std::move(audit)),
      store_(std::move(store)) {
  limits_.cpus = static_cast<uint32_t>(sysconf(_SC_NPROCESSORS_ONLN));
  struct sysinfo info;
  if (sysinfo(&info) == 0) limits_.memory_bytes = uint64_t{info.totalram} * info.mem_unit;
  limits_.scratch_max_bytes = options_.scratch_max_bytes;
  if (!options_.vm_libvirt_uri.empty()) {
    vm_ = std::make_unique<vm::VmDriver>(
        vm::VmDriverOptions{options_.vm_libvirt_uri, options_.vm_domain_type, options_.vm_writable_disk_bytes},
        [this](const vm::DomainStopped& stopped) { OnVmStopped(stopped); });
  }
}

absl::StatusOr<std::unique_ptr<WorkloadManager>> WorkloadManager::Create(
    ManagerOptions options, std::unique_ptr<Runtime> runtime, std::unique_ptr<NetworkProvider> network,
    std::shared_ptr<AuditSink> audit, std::unique_ptr<ReportSender> reports) {
  std::error_code ec;
  std::filesystem::create_directories(options.state_dir + "/workloads", ec);
  if (ec)
    return absl::FailedPreconditionError(absl::StrCat("state_dir ", options.state_dir, ": ", ec.message()));
  // Execute-only for others: container root (an unprivileged host uid) must traverse to its rootfs, never
  // list.
  chmod(options.state_dir.c_str(), 0711);
  chmod((options.state_dir + "/workloads").c_str(), 0711);
  // Workload mounts live below a private mount point, so none propagates into other mount namespaces.
  if (absl::Status s = EnsurePrivateMountPoint(options.state_dir + "/workloads"); !s.ok()) {
    Log(LogLevel::kWarn, "cannot make the workloads directory a private mount point",
        {{"error", s.ToString()}});
  }
  SR_ASSIGN_OR_RETURN(std::unique_ptr<Store> store, Store::Open(options.state_dir + "/workloads.db"));
  SR_ASSIGN_OR_RETURN(std::vector<TrackedWorkload> rows, store->List());
  std::unique_ptr<WorkloadManager> m(new WorkloadManager(
      std::move(options), std::move(runtime), std::move(network), std::move(audit), std::move(store)));
  if (reports != nullptr) {
    OutboxOptions o = m->options_.outbox;
    o.agent_id = m->options_.agent_id;
    m->outbox_ = std::make_unique<Outbox>(m->store_.get(), std::move(reports), m->audit_, std::move(o));
    m->outbox_->Start();  // delivers what a previous run left in the outbox
  }
  absl::MutexLock lock(&m->mu_);
  for (TrackedWorkload& tw : rows) {
    const std::string id = tw.record.spec().workload_id();
    m->live_[id].tw = std::move(tw);
  }
  return m;
}

WorkloadManager::~WorkloadManager() {
  std::vector<std::thread> monitors;
  {
    absl::MutexLock lock(&mu_);
    shutting_down_ = true;
    monitors.swap(monitors_);
  }
  for (std::thread& t : monitors) t.join();
  // The private bind of the workloads directory goes with the agent unless a workload still has mounts below
  // it (kept for adoption by the next run, which finds the bind in place).
  const std::string workloads = options_.state_dir + "/workloads";
  if (MountsUnder(workloads) == std::vector<std::string>{workloads} && umount2(workloads.c_str(), 0) != 0) {
    Log(LogLevel::kWarn, "cannot unmount the workloads directory", {{"error", strerror(errno)}});
  }
}

void WorkloadManager::MaybeCrash(absl::string_view point) {
  if (options_.fault_crash_at.empty() || options_.fault_crash_at != point) return;
  Log(LogLevel::kWarn, "fault injection: SIGKILL at a configured point", {{"point", point}});
  kill(getpid(), SIGKILL);
}

absl::Status WorkloadManager::UpdateLocked(const std::string& id,
                                           const std::function<void(TrackedWorkload&)>& mutate,
                                           const std::string& actor) {
  auto it = live_.find(id);
  if (it == live_.end())
    return absl::NotFoundError(absl::StrCat("workload ", id, " is unknown on this node"));
  TrackedWorkload next = it->second.tw;
  const v1::WorkloadState from = next.record.state();
  mutate(next);
  const v1::WorkloadState to = next.record.state();
  if (from != to) SR_RETURN_IF_ERROR(CheckTransition(from, to));
  next.record.set_revision(next.record.revision() + 1);
  *next.record.mutable_updated_time() = Now();
  if (from != to && IsTerminal(to)) *next.record.mutable_ended_time() = Now();
  if (from != to && to == v1::WORKLOAD_STATE_RUNNING) *next.record.mutable_running_time() = Now();
  // The reports this change causes are committed with it (the outbox), so a crash cannot lose one.
  std::vector<OutboxEntry> reports;
  if (outbox_ != nullptr) reports = ReportsFor(next.record, from, {options_.node, options_.trust_domain});
  SR_RETURN_IF_ERROR(store_->Put(next, reports));
  if (!reports.empty()) outbox_->Kick();
  it->second.tw = std::move(next);
  if (from != to) {
    const v1::Workload& r = it->second.tw.record;
    std::string detail = absl::StrCat("from=", StateName(from), " to=", StateName(to));
    if (r.has_failure() && to == v1::WORKLOAD_STATE_FAILED) {
      absl::StrAppend(&detail, " phase=", v1::FailurePhase_Name(r.failure().phase()),
                      " reason=", r.failure().reason(), " message=", r.failure().message());
    }
    audit_->Record({actor, "workload.transition", "workload/" + id, "OK", detail});
    Log(LogLevel::kInfo, "workload state",
        {{"workload", id}, {"from", StateName(from)}, {"to", StateName(to)}});
  }
  return absl::OkStatus();
}

absl::Status WorkloadManager::Update(const std::string& id,
                                     const std::function<void(TrackedWorkload&)>& mutate,
                                     const std::string& actor) {
  absl::MutexLock lock(&mu_);
  return UpdateLocked(id, mutate, actor);
}

absl::StatusOr<std::string> WorkloadManager::ResolveImage(const v1::ImageRef& image) {
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

absl::StatusOr<std::string> WorkloadManager::SlurmAuthSource(const v1::WorkloadSpec& spec) {
  const std::string& uri = spec.provisioning().slurm_auth_ref().uri();
  if (absl::StartsWith(uri, "file:///")) {
    if (uri.find("/..") != std::string::npos) {
      return absl::InvalidArgumentError(
          "provisioning.slurm_auth_ref: a file:/// path may not contain \"..\"");
    }
    return uri.substr(7);
  }
  constexpr absl::string_view kVmc = "vmc://";
  if (!absl::StartsWith(uri, kVmc) || options_.local_cluster_secrets_dir.empty()) return std::string();
  // vmc://<cluster>/munge-key, held for now in a node-local directory (a stand-in: in production the key
  // comes from the project's controlling VM).
  std::vector<std::string> parts = absl::StrSplit(uri.substr(kVmc.size()), '/');
  if (parts.size() != 2 || parts[1] != "munge-key") return std::string();  // another secret: vm-controller's
  if (!IsValidId(parts[0])) {
    return absl::InvalidArgumentError(
        absl::StrCat("provisioning.slurm_auth_ref: cluster \"", parts[0], "\" is not an ID"));
  }
  const std::string path = absl::StrCat(options_.local_cluster_secrets_dir, "/", parts[0], "/munge-key");
  struct stat st;
  if (stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) {
    return absl::FailedPreconditionError(absl::StrCat("the munge key of local cluster ", parts[0], " (", uri,
                                                      ") is not on this node: ", path, " is missing"));
  }
  // Container root is host uid uid_base; capabilities do not reach files of unmapped owners.
  if (!((st.st_uid == options_.uid_base && (st.st_mode & S_IRUSR) != 0) || (st.st_mode & S_IROTH) != 0)) {
    return absl::FailedPreconditionError(
        absl::StrCat("the munge key ", path, " is not readable by container root (host uid ",
                     options_.uid_base, "): make it owned by that uid, mode 0400"));
  }
  return path;
}

absl::StatusOr<v1::ScratchEncryption> WorkloadManager::DecideEncryption(const v1::WorkloadSpec& spec) {
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
    if (options_.allow_unencrypted_scratch && asked == v1::SCRATCH_ENCRYPTION_UNSPECIFIED) {
      return v1::SCRATCH_ENCRYPTION_NONE;
    }
    return dm;
  }
  return asked == v1::SCRATCH_ENCRYPTION_PLAIN_DMCRYPT ? v1::SCRATCH_ENCRYPTION_PLAIN_DMCRYPT
                                                       : v1::SCRATCH_ENCRYPTION_LUKS2_NO_KEYSLOT;
}

absl::StatusOr<std::optional<WorkloadManager::StartResult>> WorkloadManager::Existing(
    const v1::WorkloadSpec& spec) {
  const std::string& id = spec.workload_id();
  Live* live = &live_[id];
  if (!SameSpec(live->tw.record.spec(), spec)) {
    return absl::AlreadyExistsError(
        absl::StrCat("workload ", id, " exists with a different spec; workload ids are idempotency keys"));
  }
  mu_.Await(absl::Condition(
      +[](Live* l) { return !(l->busy && l->tw.record.state() == v1::WORKLOAD_STATE_STARTING); }, live));
  const v1::Workload& r = live->tw.record;
  switch (r.state()) {
    case v1::WORKLOAD_STATE_RUNNING:
      return StartResult{r, false};
    case v1::WORKLOAD_STATE_STARTING:
      if (live->tw.resources.stage == kInterruptedStage) return std::nullopt;
      return absl::UnavailableError(absl::StrCat("workload ", id, " is starting; retry"));
    case v1::WORKLOAD_STATE_FAILED:
      if (r.failure().phase() == v1::FAILURE_PHASE_UNSPECIFIED ||
          r.stop_reason() != v1::STOP_REASON_UNSPECIFIED ||
          r.failure().phase() == v1::FAILURE_PHASE_EXECUTION ||
          r.failure().phase() == v1::FAILURE_PHASE_TEARDOWN) {
        return absl::FailedPreconditionError(
            absl::StrCat("workload ", id, " has ended (FAILED); ids are never reused"));
      }
      return absl::Status(
          static_cast<absl::StatusCode>(r.failure().status_code() == 0 ? 13 : r.failure().status_code()),
          absl::StrCat("workload ", id, " failed to start: ", r.failure().message()));
    default:
      return absl::FailedPreconditionError(
          absl::StrCat("workload ", id, " is ", StateName(r.state()), "; workload ids are never reused"));
  }
}

absl::StatusOr<WorkloadManager::StartResult> WorkloadManager::Start(const v1::WorkloadSpec& spec,
                                                                    const std::string& actor) {
  SR_RETURN_IF_ERROR(ValidateSpec(spec, limits_));
  const std::string id = spec.workload_id();
  bool interrupted = false;
  {
    absl::MutexLock lock(&mu_);
    if (live_.count(id) != 0) {
      SR_ASSIGN_OR_RETURN(std::optional<StartResult> existing, Existing(spec));
      if (existing) return *existing;
      interrupted = true;
    }
  }
  if (interrupted) return ResumeStart(spec, actor);
  const bool is_vm = spec.kind() == v1::WORKLOAD_KIND_VM;
  std::string image_path;
  v1::ScratchEncryption encryption = v1::SCRATCH_ENCRYPTION_PLAIN_DMCRYPT;  // a VM's: inside the guest
  if (is_vm) {
    SR_ASSIGN_OR_RETURN(const vm::VmImage image, ResolveVm(spec));
    image_path = image.rootfs;
  } else {
    SR_ASSIGN_OR_RETURN(image_path, ResolveImage(spec.image()));
    SR_ASSIGN_OR_RETURN(encryption, DecideEncryption(spec));
  }
  if (spec.job().user().uid() >= options_.uid_count || spec.job().user().gid() >= options_.uid_count) {
    return absl::FailedPreconditionError(absl::StrCat(
        "spec.job.user: uid ", spec.job().user().uid(), " / gid ", spec.job().user().gid(),
        " cannot exist in the container (this node maps container ids 0..", options_.uid_count - 1, ")"));
  }
  {
    absl::MutexLock lock(&mu_);
    if (live_.count(id) != 0) {  // a concurrent first call won the race
      SR_ASSIGN_OR_RETURN(std::optional<StartResult> existing, Existing(spec));
      if (existing) return *existing;
      return absl::UnavailableError(absl::StrCat("workload ", id, " is being started; retry"));
    }
    for (const auto& [other_id, other] : live_) {
      if (IsTerminal(other.tw.record.state())) continue;
      if (spec.whole_node() || other.tw.record.spec().whole_node()) {
        return absl::FailedPreconditionError(
            absl::StrCat("workload ", other_id, " (", StateName(other.tw.record.state()),
                         ") holds this node; a whole-node workload runs alone"));
      }
    }
    Live& live = live_[id];
    live.busy = true;
    v1::Workload& r = live.tw.record;
    *r.mutable_spec() = spec;
    r.set_state(v1::WORKLOAD_STATE_STARTING);
    r.set_node(options_.node);
    r.set_runtime(is_vm ? "libvirt" : runtime_->name());
    r.set_runtime_id(id);
    r.set_scratch_encryption(encryption);
    r.set_scratch_size_bytes(0);
    r.set_host_uid_base(options_.uid_base);
    if (spec.provisioning().has_identity()) {
      *r.mutable_identity() = spec.provisioning().identity();
    } else {
      r.mutable_identity()->set_role(v1::ROLE_WORKLOAD);
      r.mutable_identity()->set_instance(id);
    }
    r.set_revision(1);
    *r.mutable_created_time() = Now();
    *r.mutable_updated_time() = r.created_time();
    TrackedResources& res = live.tw.resources;
    res.workload_dir = absl::StrCat(options_.state_dir, "/workloads/", id);
    res.netns = NetnsNameFor(id);
    res.crypt_name = encryption == v1::SCRATCH_ENCRYPTION_NONE ? "" : "strongroom-" + id;
    res.stage = "recorded";
    if (absl::Status s = store_->Put(live.tw); !s.ok()) {
      live_.erase(id);
      return s;
    }
    audit_->Record({actor, "workload.transition", "workload/" + id, "OK", "from=UNSPECIFIED to=STARTING"});
  }
  if (encryption == v1::SCRATCH_ENCRYPTION_NONE) {
    Log(LogLevel::kWarn,
        "!!! UNENCRYPTED SCRATCH: development mode (allow_unencrypted_scratch); job data will be written to "
        "disk "
        "in the clear. Never use this in production !!!",
        {{"workload", id}});
    audit_->Record({options_.agent_id, "host-agent.scratch_unencrypted", "workload/" + id, "OK",
                    "allow_unencrypted_scratch is set; scratch is not encrypted"});
  }
  return CompleteStart(id, RunStart(id, image_path, actor));
}

absl::StatusOr<WorkloadManager::StartResult> WorkloadManager::ResumeStart(const v1::WorkloadSpec& spec,
                                                                          const std::string& actor) {
  const std::string id = spec.workload_id();
  SR_ASSIGN_OR_RETURN(const std::string image_path, ResolveImage(spec.image()));
  {
    absl::MutexLock lock(&mu_);
    Live& live = live_[id];
    if (live.busy || live.tw.record.state() != v1::WORKLOAD_STATE_STARTING ||
        live.tw.resources.stage != kInterruptedStage) {
      return absl::UnavailableError(
          absl::StrCat("workload ", id, " is being started by another call; retry"));
    }
    live.busy = true;
    absl::Status s = UpdateLocked(
        id, [](TrackedWorkload& w) { w.resources.stage = "recorded"; }, actor);
    if (!s.ok()) {
      live.busy = false;
      return s;
    }
  }
  Log(LogLevel::kInfo, "resuming a start the agent's restart interrupted", {{"workload", id}});
  audit_->Record({actor, "host-agent.start_resumed", "workload/" + id, "OK",
                  "StartWorkload retried after the agent restarted mid-start"});
  return CompleteStart(id, RunStart(id, image_path, actor));
}

absl::StatusOr<WorkloadManager::StartResult> WorkloadManager::CompleteStart(const std::string& id,
                                                                            const absl::Status& started) {
  absl::MutexLock lock(&mu_);
  Live& live = live_[id];
  live.busy = false;
  if (!started.ok()) return started;
  if (live.exited && live.tw.record.state() == v1::WORKLOAD_STATE_RUNNING && !shutting_down_) {
    // The entrypoint ended while the start was still recording RUNNING (the monitor left it to us): tear down
    // now.
    live.busy = true;
    monitors_.emplace_back(
        [this, id] { (void)FinishStop(id, options_.agent_id, absl::ZeroDuration(), true); });
  }
  return StartResult{live.tw.record, true};
}

absl::Status WorkloadManager::Fail(const std::string& id, v1::FailurePhase phase, const std::string& reason,
                                   const absl::Status& status, const std::string& actor) {
  v1::ScrubReport scrub = Teardown(id, absl::ZeroDuration());
  absl::Status recorded = Update(
      id,
      [&](TrackedWorkload& tw) {
        tw.record.set_state(v1::WORKLOAD_STATE_FAILED);
        v1::FailureInfo* f = tw.record.mutable_failure();
        f->set_phase(phase);
        f->set_reason(reason);
        f->set_message(std::string(status.message()).substr(0, 1024));
        f->set_status_code(static_cast<int>(status.code()));
        *f->mutable_time() = Now();
        *tw.record.mutable_scrub() = scrub;
        tw.record.set_pid(0);
        tw.record.clear_netns();
        tw.record.clear_network();
        tw.resources.stage = "failed";
      },
      actor);
  if (!recorded.ok())
    Log(LogLevel::kError, "cannot record failure", {{"workload", id}, {"error", recorded.ToString()}});
  return Annotate(status, absl::StrCat("host-agent: StartWorkload(workload ", id, ")"));
}

absl::Status WorkloadManager::RunStart(const std::string& id, const std::string& image_path,
                                       const std::string& actor) {
  TrackedWorkload tw;
  {
    absl::MutexLock lock(&mu_);
    tw = live_[id].tw;
  }
  const v1::WorkloadSpec& spec = tw.record.spec();
  if (spec.kind() == v1::WORKLOAD_KIND_VM) return RunStartVm(id, actor);
  const std::string dir = tw.resources.workload_dir;
  StepTimings t;
  const absl::Time t0 = absl::Now();
  auto record = [&](const std::function<void(TrackedWorkload&)>& f) { return Update(id, f, actor); };

  // 0. Provisioning material this node holds (the munge key stand-in): checked before anything is created.
  absl::StatusOr<std::string> slurm_auth = SlurmAuthSource(spec);
  if (!slurm_auth.ok()) {
    return Fail(id, v1::FAILURE_PHASE_PROVISIONING, "SLURM_AUTH_UNAVAILABLE", slurm_auth.status(), actor);
  }
  if (!slurm_auth->empty() && !options_.local_cluster_secrets_dir.empty() &&
      absl::StartsWith(*slurm_auth, options_.local_cluster_secrets_dir + "/")) {
    // Issue 14: in production the munge key comes from vm-controller over the enrolled channel, never from a
    // file on the compute host.
    Log(LogLevel::kWarn,
        "!!! DEVELOPMENT MODE (local_cluster_secrets_dir): the Local Slurm munge key is read from a file on "
        "this compute host; anyone who can read it can forge Local Slurm credentials. Never use this in "
        "production !!!",
        {{"workload", id}, {"path", *slurm_auth}});
    audit_->Record({options_.agent_id, "host-agent.dev_local_munge_key", "workload/" + id, "OK",
                    "local_cluster_secrets_dir is set; the munge key comes from the compute host"});
  }

  // 1. Scratch (encrypted unless explicitly allowed otherwise).
  std::error_code ec;
  std::filesystem::create_directories(dir + "/bundle", ec);
  std::filesystem::create_directories(dir + "/lower", ec);
  std::filesystem::create_directories(dir + "/rootfs", ec);
  chmod(dir.c_str(), 0711);
  if (ec) return Fail(id, v1::FAILURE_PHASE_SCRATCH, "STATE_DIR", absl::InternalError(ec.message()), actor);
  ScratchLayout layout = LayoutFor(dir, id);
  layout.encryption = tw.record.scratch_encryption();
  ScratchOptions so;
  so.size_bytes = EffectiveScratchBytes(spec, options_.scratch_default_bytes);
  so.owner_uid = options_.uid_base;
  so.mkfs_binary = options_.mkfs_binary;
  absl::Status s = CreateScratch(layout, so, [&](const ScratchLayout& l) {
    return record([&](TrackedWorkload& w) { w.resources.scratch_loop = l.loop_device; });
  });
  if (!s.ok()) {
    return Fail(id, v1::FAILURE_PHASE_SCRATCH,
                absl::StrContains(s.message(), "device-mapper") ? "DM_CRYPT_UNAVAILABLE" : "SCRATCH_SETUP", s,
                actor);
  }
  SR_RETURN_IF_ERROR(record([&](TrackedWorkload& w) {
    w.record.set_scratch_size_bytes(so.size_bytes);
    w.resources.mounts = layout.mount_point;
    w.resources.stage = "scratch";
  }));
  t.scratch = absl::Now() - t0;
  MaybeCrash("start.after_scratch");

  // 2. The image read-only as the lower layer; upper and work dirs on the scratch.
  const absl::Time t1 = absl::Now();
  const std::string upper = layout.mount_point + "/upper", work = layout.mount_point + "/work";
  for (const std::string& d : {upper, work}) {
    if (mkdir(d.c_str(), 0755) != 0 || chown(d.c_str(), options_.uid_base, options_.uid_base) != 0) {
      return Fail(id, v1::FAILURE_PHASE_SCRATCH, "SCRATCH_SETUP",
                  absl::InternalError(absl::StrCat("mkdir ", d, ": ", std::strerror(errno))), actor);
    }
  }
  absl::StatusOr<std::string> image_loop = MountImage(image_path, dir + "/lower");
  if (!image_loop.ok()) return Fail(id, v1::FAILURE_PHASE_IMAGE, "IMAGE_MOUNT", image_loop.status(), actor);
  SR_RETURN_IF_ERROR(record([&](TrackedWorkload& w) {
    w.resources.image_loop = *image_loop;
    w.resources.mounts = absl::StrCat(layout.mount_point, "\n", dir, "/lower");
  }));
  struct stat lower_root;
  if (stat((dir + "/lower").c_str(), &lower_root) != 0 || lower_root.st_uid != options_.uid_base) {
    return Fail(id, v1::FAILURE_PHASE_IMAGE, "IMAGE_NOT_SHIFTED",
                absl::FailedPreconditionError(absl::StrCat(
                    "image ", spec.image().name(), ": root not owned by uid_base ", options_.uid_base)),
                actor);
  }
  if (absl::Status o = MountOverlay(dir + "/lower", upper, work, dir + "/rootfs"); !o.ok()) {
    return Fail(id, v1::FAILURE_PHASE_SCRATCH, "OVERLAY_MOUNT", o, actor);
  }
  SR_RETURN_IF_ERROR(record([&](TrackedWorkload& w) {
    w.resources.mounts = absl::StrCat(layout.mount_point, "\n", dir, "/lower\n", dir, "/rootfs");
    w.resources.stage = "overlay";
  }));
  t.overlay = absl::Now() - t1;
  MaybeCrash("start.after_overlay");

  // 3. The network namespace and its br-secure port, before any workload process exists.
  const absl::Time t2 = absl::Now();
  if (absl::Status n = CreateNetns(tw.resources.netns); !n.ok()) {
    return Fail(id, v1::FAILURE_PHASE_NETWORK, "NETNS_CREATE", n, actor);
  }
  absl::StatusOr<v1::NetworkAttachment> port = network_->Allocate(spec, NetnsPath(tw.resources.netns));
  if (!port.ok()) {
    return Fail(id, v1::FAILURE_PHASE_NETWORK, NetworkFailureReason(port.status()), port.status(), actor);
  }
  SR_RETURN_IF_ERROR(record([&](TrackedWorkload& w) {
    if (network_->attached()) *w.record.mutable_network() = *port;
    w.record.set_netns(NetnsPath(w.resources.netns));
    w.resources.port_name = port->port_name();
    w.resources.netd_generation = port->generation();
    w.resources.stage = "network";
  }));
  t.network = absl::Now() - t2;
  MaybeCrash("start.after_network");

  // 4. The container.
  const absl::Time t3 = absl::Now();
  ContainerParams p;
  p.id = id;
  p.rootfs = dir + "/rootfs";
  p.args = {options_.entrypoint};
  p.env = {"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root",
           "STRONGROOM_WORKLOAD_ID=" + id, "STRONGROOM_NODE=" + options_.node};
  p.hostname = spec.provisioning().node_name().empty() ? id : spec.provisioning().node_name();
  p.netns_path = NetnsPath(tw.resources.netns);
  p.uid_base = options_.uid_base;
  p.uid_count = options_.uid_count;
  p.whole_node = spec.whole_node();
  p.cpus = spec.resources().cpus();
  p.memory_bytes = spec.resources().memory_bytes();
  p.image_path = image_path;
  p.overlay_dir = upper;
  if (spec.has_provisioning()) {
    std::string json;
    google::protobuf::util::JsonPrintOptions jo;
    jo.add_whitespace = true;
    (void)google::protobuf::util::MessageToJsonString(spec.provisioning(), &json, jo);
    const std::string file = dir + "/bundle/provisioning.json";
    std::ofstream(file) << json;
    chmod(file.c_str(), 0644);
    p.binds.push_back({file, "/run/strongroom/provisioning.json", true});
    p.env.push_back("STRONGROOM_PROVISIONING=/run/strongroom/provisioning.json");
    if (!slurm_auth->empty()) {
      // Bound read-only from where it is; never copied.
      p.binds.push_back({*slurm_auth, "/run/strongroom/slurm-auth", true});
    }
  }
  if (const v1::UserRef& user = spec.job().user(); !user.name().empty()) {
    // The entrypoint creates this user (and group) in the container unless its uid exists: the job's
    // slurmstepd needs a passwd entry.
    p.env.push_back("STRONGROOM_JOB_USER=" + user.name());
    p.env.push_back(absl::StrCat("STRONGROOM_JOB_UID=", user.uid()));
    p.env.push_back(user.gid() == 0 ? std::string("STRONGROOM_JOB_GID=")
                                    : absl::StrCat("STRONGROOM_JOB_GID=", user.gid()));
  }
  if (auto share = options_.project_shares.find(spec.job().project());
      !spec.job().project().empty() && share != options_.project_shares.end()) {
    // The project's share at the same path (stand-in for its NFS-over-IPsec mount): where output returns.
    Log(LogLevel::kWarn,
        "!!! DEVELOPMENT MODE (project_shares): the project's data is a directory on this compute host, "
        "readable by the host; in production it is an NFS mount through the workload's IPsec tunnel !!!",
        {{"workload", id}, {"path", share->second}});
    audit_->Record({options_.agent_id, "host-agent.dev_project_share", "workload/" + id, "OK",
                    "project_shares is set; project data is bound from the compute host"});
    BindMount b{share->second, share->second, /*read_only=*/false};
    b.exec = true;
    p.binds.push_back(b);
    p.env.push_back("STRONGROOM_PROJECT_SHARE=" + share->second);
  }
  if (absl::Status r = runtime_->Prepare(p, dir + "/bundle"); !r.ok()) {
    return Fail(id, v1::FAILURE_PHASE_RUNTIME, "RUNTIME_PREPARE", r, actor);
  }
  // Container output goes to the encrypted scratch, never to the host's disk in the clear.
  absl::StatusOr<StartedContainer> c = runtime_->Start(
      id, dir + "/bundle", layout.mount_point + "/runtime.log", options_.runtime_start_timeout);
  if (!c.ok()) return Fail(id, v1::FAILURE_PHASE_RUNTIME, "RUNTIME_START", c.status(), actor);
  const uint64_t init_start = ProcessStartTime(c->init_pid);
  SR_RETURN_IF_ERROR(record([&](TrackedWorkload& w) {
    w.resources.init_pid = c->init_pid;
    w.resources.init_start = init_start;
    w.resources.stage = "runtime";
  }));
  StartMonitor(id, c->supervisor, c->init_pid, init_start);
  t.runtime = absl::Now() - t3;
  MaybeCrash("start.after_runtime");

  SR_RETURN_IF_ERROR(record([&](TrackedWorkload& w) {
    w.record.set_state(v1::WORKLOAD_STATE_RUNNING);
    w.record.set_pid(c->init_pid);
    w.resources.stage = "running";
  }));
  t.total = absl::Now() - t0;
  absl::MutexLock lock(&mu_);
  start_timings_ = t;
  return absl::OkStatus();
}

absl::StatusOr<v1::Workload> WorkloadManager::Get(const std::string& id) {
  absl::MutexLock lock(&mu_);
  auto it = live_.find(id);
  if (it == live_.end())
    return absl::NotFoundError(absl::StrCat("workload ", id, " is unknown on this node"));
  return it->second.tw.record;
}

std::vector<v1::Workload> WorkloadManager::List() {
  absl::MutexLock lock(&mu_);
  std::vector<v1::Workload> out;
  for (const auto& [id, live] : live_) out.push_back(live.tw.record);
  std::sort(out.begin(), out.end(), [](const v1::Workload& a, const v1::Workload& b) {
    const int64_t ta = TimeUtil::TimestampToNanoseconds(a.created_time());
    const int64_t tb = TimeUtil::TimestampToNanoseconds(b.created_time());
    return ta != tb ? ta > tb : a.spec().workload_id() < b.spec().workload_id();
  });
  return out;
}

absl::StatusOr<v1::Workload> WorkloadManager::WaitForChange(const std::string& id, uint64_t after_revision,
                                                            absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto it = live_.find(id);
  if (it == live_.end())
    return absl::NotFoundError(absl::StrCat("workload ", id, " is unknown on this node"));
  Live* live = &it->second;
  struct Args {
    Live* live;
    uint64_t after;
    bool* down;
  } args{live, after_revision, &shutting_down_};
  mu_.AwaitWithTimeout(
      absl::Condition(
          +[](Args* a) { return a->live->tw.record.revision() > a->after || *a->down; }, &args),
      timeout);
  if (shutting_down_) return absl::UnavailableError("host-agent is shutting down; watch again");
  return live->tw.record;
}

StepTimings WorkloadManager::last_start_timings() {
  absl::MutexLock lock(&mu_);
  return start_timings_;
}

StepTimings WorkloadManager::last_stop_timings() {
  absl::MutexLock lock(&mu_);
  return stop_timings_;
}

}  // namespace strongroom::host_agent
