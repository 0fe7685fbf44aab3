#include "services/host_agent/manager.h"

#include <openssl/crypto.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysinfo.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/bounded_file.h"
#include "common/enrollment_ticket.h"
#include "common/log.h"
#include "common/status.h"
#include "google/protobuf/util/time_util.h"
#include "services/host_agent/container/container_workload_driver.h"
#include "services/host_agent/data_path.h"
#include "services/host_agent/mounts.h"
#include "services/host_agent/state_machine.h"
#include "services/host_agent/vm/vm_workload_driver.h"

namespace strongroom::host_agent {

namespace {

using google::protobuf::util::TimeUtil;

google::protobuf::Timestamp Now() { return TimeUtil::NanosecondsToTimestamp(absl::ToUnixNanos(absl::Now())); }

}  // namespace

WorkloadManager::WorkloadManager(ManagerOptions options, std::unique_ptr<Runtime> runtime,
                                 std::unique_ptr<NetworkProvider> network, std::shared_ptr<AuditSink> audit,
                                 std::unique_ptr<Store> store)
    : options_(std::move(options)),
      network_(std::move(network)),
      audit_(std::move(audit)),
      store_(std::move(store)) {
  limits_.cpus = static_cast<uint32_t>(sysconf(_SC_NPROCESSORS_ONLN));
  struct sysinfo info;
  if (sysinfo(&info) == 0) limits_.memory_bytes = uint64_t{info.totalram} * info.mem_unit;
  limits_.scratch_max_bytes = options_.scratch_max_bytes;
  ContainerDriverOptions co;
  co.image_root = options_.image_root;
  co.uid_base = options_.uid_base;
  co.uid_count = options_.uid_count;
  co.scratch_default_bytes = options_.scratch_default_bytes;
  co.allow_unencrypted_scratch = options_.allow_unencrypted_scratch;
  co.mkfs_binary = options_.mkfs_binary;
  co.runtime_start_timeout = options_.runtime_start_timeout;
  co.entrypoint = options_.entrypoint;
  co.share_mounter = options_.share_mounter;
  co.share_request_bound = options_.share_request_bound;
  container_ = std::make_unique<ContainerWorkloadDriver>(
      std::move(co), std::move(runtime), network_.get(),
      [this](const std::string& id, const std::string& reason, const std::string& message) {
        FailRunning(id, reason, message);
      });
  VmWorkloadOptions vo;
  vo.image_root = options_.image_root;
  vo.entrypoint = options_.entrypoint;
  vo.vm =
      vm::VmDriverOptions{options_.vm_libvirt_uri, options_.vm_domain_type, options_.vm_writable_disk_bytes};
  vm_ = std::make_unique<VmWorkloadDriver>(std::move(vo), network_.get(),
                                           [this](const ExternalStop& stopped) { OnExternalStop(stopped); });
}

WorkloadDriver& WorkloadManager::DriverFor(const v1::WorkloadSpec& spec) {
  return spec.kind() == v1::WORKLOAD_KIND_VM ? *vm_ : *container_;
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
  WorkloadDriver& driver = DriverFor(spec);
  SR_ASSIGN_OR_RETURN(StartPlan plan, driver.Resolve(spec));
  const v1::ScratchEncryption encryption = plan.encryption;
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
    r.set_runtime(driver.runtime_name());
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
    res = plan.names;
    res.workload_dir = absl::StrCat(options_.state_dir, "/workloads/", id);
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
  return CompleteStart(id, RunStart(id, plan.image_path, actor));
}

absl::StatusOr<WorkloadManager::StartResult> WorkloadManager::ResumeStart(const v1::WorkloadSpec& spec,
                                                                          const std::string& actor) {
  const std::string id = spec.workload_id();
  SR_ASSIGN_OR_RETURN(const StartPlan plan, DriverFor(spec).Resolve(spec));
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
  return CompleteStart(id, RunStart(id, plan.image_path, actor));
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
  StepTimings t;
  const absl::Time t0 = absl::Now();
  StartContext ctx;
  ctx.id = id;
  {
    absl::MutexLock lock(&mu_);
    ctx.workload = live_[id].tw;
  }
  const v1::WorkloadSpec& spec = ctx.workload.record.spec();
  WorkloadDriver& driver = DriverFor(spec);
  ctx.image_path = image_path;
  ctx.timings = &t;
  ctx.record = [&](const std::function<void(TrackedWorkload&)>& f) { return Update(id, f, actor); };
  ctx.fail = [&](v1::FailurePhase phase, const std::string& reason, const absl::Status& status) {
    return Fail(id, phase, reason, status, actor);
  };
  ctx.crash_point = [this](absl::string_view point) { MaybeCrash(point); };
  ctx.watch = [&](pid_t supervisor, pid_t init_pid, uint64_t init_start) {
    StartMonitor(id, supervisor, init_pid, init_start);
  };

  // 0. The provisioning inputs, the same for every kind: what this node holds (the munge key stand-in) is
  // checked before anything is created.
  ProvisioningOptions po{options_.node, options_.local_cluster_secrets_dir, options_.project_shares,
                         options_.uid_base};
  if (IsContainerDataPath(spec)) {
    po.kernel_has_nfs_client =
        options_.kernel_has_nfs_client ? options_.kernel_has_nfs_client() : KernelHasNfsClient();
    const bool development_share =
        !spec.job().project().empty() && options_.project_shares.count(spec.job().project()) != 0;
    absl::StatusOr<DataPathShare> share =
        DecideDataPathShare(spec, development_share, po.kernel_has_nfs_client);
    if (!share.ok())
      return Fail(id, v1::FAILURE_PHASE_PROVISIONING, "NFS_CLIENT_UNAVAILABLE", share.status(), actor);
  }
  absl::StatusOr<ProvisioningInputs> inputs = ResolveProvisioningInputs(spec, po);
  if (!inputs.ok())
    return Fail(id, v1::FAILURE_PHASE_PROVISIONING, "SLURM_AUTH_UNAVAILABLE", inputs.status(), actor);
  ctx.inputs = *std::move(inputs);
  if (!ctx.inputs.bundle_json.empty()) {
    // The workload's one-time enrollment ticket (docs/IPSEC.md "Enrollment"): only in its bundle; only the
    // hash is kept (the record) and reported (WorkloadReady). A resumed start draws a new one.
    absl::StatusOr<std::string> ticket = GenerateEnrollmentTicket();
    EnrollmentInputs enrollment;
    enrollment.global_job_id = spec.job().global_job_id();
    enrollment.project = spec.job().project();
    enrollment.trust_domain = options_.trust_domain;
    if (!options_.deployment_ca_file.empty()) {
      // Public: the workload verifies vm-controller's server certificate with it.
      absl::StatusOr<std::string> ca = ReadBoundedRegularFile(options_.deployment_ca_file, kMaxPemFileBytes);
      if (ca.ok()) enrollment.deployment_ca_pem = std::move(*ca);
    }
    absl::Status added = ticket.status();
    if (ticket.ok()) {
      enrollment.ticket = std::move(*ticket);
      added = AddEnrollmentInputs(enrollment, &ctx.inputs);
      OPENSSL_cleanse(enrollment.ticket.data(), enrollment.ticket.size());
    }
    if (!added.ok()) return Fail(id, v1::FAILURE_PHASE_PROVISIONING, "ENROLLMENT_TICKET", added, actor);
  }
  AnnounceDevelopmentInputs(id, ctx.inputs, options_.agent_id, *audit_);

  // 1. Scratch, image, overlay (a container) or the workload dir (a VM).
  SR_RETURN_IF_ERROR(driver.PrepareStorage(ctx));

  // 2. The br-secure port, before any workload process exists.
  const absl::Time t2 = absl::Now();
  SR_RETURN_IF_ERROR(driver.AttachNetwork(ctx));
  t.network = absl::Now() - t2;
  MaybeCrash("start.after_network");

  // 3. The runtime. A resumed start reuses the record: what an earlier instance's end left there does not
  // apply to this one.
  const absl::Time t3 = absl::Now();
  {
    absl::MutexLock lock(&mu_);
    Live& live = live_[id];
    live.exited = false;
    live.external_failure.clear();
    live.external_message.clear();
  }
  SR_RETURN_IF_ERROR(driver.Launch(ctx));
  t.runtime = absl::Now() - t3;
  MaybeCrash("start.after_runtime");

  SR_RETURN_IF_ERROR(ctx.record([&](TrackedWorkload& w) {
    w.record.set_state(v1::WORKLOAD_STATE_RUNNING);
    w.record.set_pid(w.resources.init_pid);
    w.record.set_enrollment_ticket_sha256(ctx.inputs.enrollment_ticket_sha256);
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
