// The VM kind inside host-agent's one workload lifecycle (manager.h): the steps that differ from a
// container's. Start: netd tap -> VmDriver::Start (disks, config disk, transient domain) -> RUNNING. Stop:
// ACPI power-off, grace, destroy -> release the tap -> delete the workload dir (disk.img: ciphertext whose
// key died with the guest). A VM that stops behind host-agent's back (libvirt's lifecycle event) ends its
// workload with that reason; after a restart, a RUNNING VM whose domain libvirt still runs is adopted (its
// metadata names the workload).
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/log.h"
#include "common/status.h"
#include "google/protobuf/util/json_util.h"
#include "google/protobuf/util/time_util.h"
#include "services/host_agent/manager.h"
#include "services/host_agent/state_machine.h"

namespace strongroom::host_agent {
namespace {

// TrackedResources.stage once the domain has been asked for (libvirt may have it from then on).
constexpr char kVmRequestedStage[] = "vm_requested";

}  // namespace

absl::StatusOr<vm::VmImage> WorkloadManager::ResolveVm(const v1::WorkloadSpec& spec) {
  if (!vm_) {
    return absl::FailedPreconditionError(
        "spec.kind: WORKLOAD_KIND_VM, but this node runs no VMs (host-agent's vm_libvirt_uri is not set)");
  }
  if (spec.whole_node()) {
    return absl::InvalidArgumentError(
        "spec.whole_node: a VM is sized to its allocation; whole-node jobs run in a "
        "container (WORKLOAD_KIND_CONTAINER)");
  }
  if (spec.resources().cpus() == 0 || spec.resources().memory_bytes() < (uint64_t{64} << 20)) {
    return absl::InvalidArgumentError(
        "spec.resources: a VM needs cpus >= 1 and memory_bytes >= 64 MiB (its Global allocation)");
  }
  SR_ASSIGN_OR_RETURN(vm::VmImage image, vm::ResolveVmImage(options_.image_root, spec.image().name()));
  SR_RETURN_IF_ERROR(vm_->CheckCanRun(image));
  return image;
}

absl::Status WorkloadManager::RunStartVm(const std::string& id, const std::string& actor) {
  TrackedWorkload tw;
  {
    absl::MutexLock lock(&mu_);
    tw = live_[id].tw;
  }
  const v1::WorkloadSpec& spec = tw.record.spec();
  const std::string dir = tw.resources.workload_dir;
  auto record = [&](const std::function<void(TrackedWorkload&)>& f) { return Update(id, f, actor); };
  StepTimings t;
  const absl::Time t0 = absl::Now();
  absl::StatusOr<vm::VmImage> image = ResolveVm(spec);
  if (!image.ok()) return Fail(id, v1::FAILURE_PHASE_IMAGE, "VM_IMAGE", image.status(), actor);
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return Fail(id, v1::FAILURE_PHASE_SCRATCH, "STATE_DIR", absl::InternalError(ec.message()), actor);
  std::filesystem::permissions(dir, std::filesystem::perms::owner_all, ec);

  // The tap, before the VM exists (netd owns it; libvirt only opens it).
  const absl::Time t1 = absl::Now();
  absl::StatusOr<v1::NetworkAttachment> port = network_->AllocateTap(spec);
  if (!port.ok()) {
    return Fail(id, v1::FAILURE_PHASE_NETWORK, NetworkFailureReason(port.status()), port.status(), actor);
  }
  SR_RETURN_IF_ERROR(record([&](TrackedWorkload& w) {
    if (network_->attached()) *w.record.mutable_network() = *port;
    w.resources.port_name = port->port_name();
    w.resources.netd_generation = port->generation();
    w.resources.stage = "network";
  }));
  t.network = absl::Now() - t1;
  MaybeCrash("start.after_network");

  vm::VmLaunch launch;
  launch.workload_id = id;
  launch.workload_dir = dir;
  launch.image = *image;
  launch.vcpus = spec.resources().cpus();
  launch.memory_bytes = spec.resources().memory_bytes();
  launch.tap = port->port_name();
  launch.mac = port->mac();
  if (!port->ipv4_address().empty()) {
    launch.address_cidr = absl::StrCat(port->ipv4_address(), "/", port->prefix_length());
  }
  launch.gateway = port->gateway();
  launch.hostname = spec.provisioning().node_name().empty() ? id : spec.provisioning().node_name();
  launch.entrypoint = options_.entrypoint;
  if (spec.has_provisioning()) {
    google::protobuf::util::JsonPrintOptions jo;
    jo.add_whitespace = true;
    (void)google::protobuf::util::MessageToJsonString(spec.provisioning(), &launch.provisioning_json, jo);
  }
  const absl::Time t2 = absl::Now();
  // Once the domain is asked for it may exist: teardown asks libvirt then (before, it knows there is none).
  {
    // A resumed start reuses the record: what an earlier domain's end left there does not apply to this one.
    absl::MutexLock lock(&mu_);
    live_[id].exited = false;
    live_[id].vm_stop_reason.clear();
    live_[id].vm_stop_message.clear();
  }
  // The domain's UUID is the workload's runtime id, recorded before the domain exists: stop events of any
  // other domain (an earlier one of a resumed start) are not this one's.
  absl::StatusOr<std::string> uuid = vm_->Start(launch, [&](const std::string& domain_uuid) {
    return record([&](TrackedWorkload& w) {
      w.resources.stage = kVmRequestedStage;
      w.record.set_runtime_id(domain_uuid);
    });
  });
  if (!uuid.ok()) {
    return Fail(id, v1::FAILURE_PHASE_RUNTIME,
                absl::IsUnavailable(uuid.status()) ? "LIBVIRT_UNAVAILABLE" : "VM_START", uuid.status(),
                actor);
  }
  SR_RETURN_IF_ERROR(record([&](TrackedWorkload& w) { w.resources.stage = "runtime"; }));
  t.runtime = absl::Now() - t2;
  MaybeCrash("start.after_runtime");
  SR_RETURN_IF_ERROR(record([&](TrackedWorkload& w) {
    w.record.set_state(v1::WORKLOAD_STATE_RUNNING);
    w.resources.stage = "running";
  }));
  t.total = absl::Now() - t0;
  absl::MutexLock lock(&mu_);
  start_timings_ = t;
  return absl::OkStatus();
}

v1::ScrubReport WorkloadManager::TeardownVm(const std::string& id, absl::Duration grace) {
  TrackedWorkload tw;
  {
    absl::MutexLock lock(&mu_);
    tw = live_[id].tw;
  }
  v1::ScrubReport report;
  std::vector<std::string> leftovers;
  StepTimings t;
  const absl::Time t0 = absl::Now();
  // 1. The domain (qemu with it), if one was ever asked for. Without libvirt nothing can be said about it
  // then: a leftover.
  const std::string& stage = tw.resources.stage;
  const bool domain_possible = !(stage.empty() || stage == "network" || stage == kInterruptedStage);
  absl::Status stopped = vm_ && domain_possible ? vm_->Stop(id, grace) : absl::OkStatus();
  if (!stopped.ok()) leftovers.push_back(std::string(stopped.message()));
  report.set_processes_killed(stopped.ok());
  report.set_runtime_deleted(stopped.ok());
  t.runtime = absl::Now() - t0;
  MaybeCrash("stop.after_kill");
  // 2. The tap.
  const absl::Time t1 = absl::Now();
  absl::Status released = network_->Release(id, tw.resources.netd_generation);
  if (!released.ok()) leftovers.push_back(std::string(released.message()));
  report.set_network_released(released.ok());
  t.network = absl::Now() - t1;
  MaybeCrash("stop.after_network");
  // 3. The workload dir: the writable disk (ciphertext only; its key lived in the guest), the config disk,
  // the console. Only once qemu is gone (it holds the files open).
  const absl::Time t2 = absl::Now();
  std::error_code ec;
  if (stopped.ok() && !tw.resources.workload_dir.empty()) {
    std::filesystem::remove_all(tw.resources.workload_dir, ec);
    if (ec) leftovers.push_back(absl::StrCat("remove ", tw.resources.workload_dir, ": ", ec.message()));
  } else if (!stopped.ok()) {
    leftovers.push_back(absl::StrCat(tw.resources.workload_dir, " kept: the VM may still use it"));
  }
  report.set_scratch_destroyed(stopped.ok() && !ec);
  report.set_mounts_removed(true);  // a VM's host side mounts nothing
  t.scratch = absl::Now() - t2;
  for (std::string& l : leftovers) *report.add_leftovers() = l.substr(0, 256);
  report.set_clean(leftovers.empty());
  *report.mutable_time() = google::protobuf::util::TimeUtil::GetCurrentTime();
  t.total = absl::Now() - t0;
  if (!report.clean()) {
    Log(LogLevel::kError, "teardown left something behind",
        {{"workload", id}, {"leftovers", absl::StrJoin(report.leftovers(), "; ")}});
  }
  absl::MutexLock lock(&mu_);
  stop_timings_ = t;
  return report;
}

bool WorkloadManager::HealthyVm(const TrackedWorkload& tw, std::string* why) {
  if (!vm_) {
    *why = "this host-agent has no vm_libvirt_uri any more";
    return false;
  }
  absl::StatusOr<bool> running = vm_->Running(tw.record.spec().workload_id());
  if (!running.ok()) {
    *why = std::string(running.status().message());
    return false;
  }
  if (!*running) *why = "libvirt runs no domain for it (it stopped while host-agent was down)";
  return *running;
}

void WorkloadManager::SweepOrphanVms(const std::set<std::string>& active) {
  absl::StatusOr<std::vector<std::string>> running = vm_->RunningWorkloads();
  if (!running.ok()) {
    Log(LogLevel::kWarn, "reconcile: cannot list VMs", {{"error", running.status().ToString()}});
    return;
  }
  for (const std::string& id : *running) {
    if (active.count(id) != 0) continue;
    Log(LogLevel::kWarn, "reconcile: destroying an orphaned VM", {{"workload", id}});
    (void)vm_->Stop(id, absl::ZeroDuration());
  }
}

void WorkloadManager::OnVmStopped(const vm::DomainStopped& stopped) {
  absl::MutexLock lock(&mu_);
  auto it = live_.find(stopped.workload_id);
  if (it == live_.end() || shutting_down_) return;
  Live& live = it->second;
  if (IsTerminal(live.tw.record.state())) return;
  // Only the workload's current domain counts (its UUID is recorded before it is created).
  if (stopped.uuid.empty() || stopped.uuid != live.tw.record.runtime_id()) return;
  live.exited = true;
  live.vm_stop_reason = stopped.reason;
  live.vm_stop_message = stopped.message;
  v1::ExitStatus exit;
  exit.set_exit_code(stopped.reason == "VM_SHUTDOWN" ? 0 : -1);
  live.exit = exit;
  // Nobody is stopping it: it ended behind host-agent's back, and a thread of ours (not libvirt's event
  // thread) tears it down. While a start or stop owns it, that call sees `exited` (CompleteStart) or caused
  // the stop.
  if (live.busy || live.tw.record.state() != v1::WORKLOAD_STATE_RUNNING) return;
  live.busy = true;
  const std::string id = stopped.workload_id;
  Log(LogLevel::kWarn, "VM stopped behind host-agent's back",
      {{"workload", id}, {"reason", stopped.reason}, {"message", stopped.message}});
  monitors_.emplace_back([this, id] { (void)FinishStop(id, options_.agent_id, absl::ZeroDuration(), true); });
}

}  // namespace strongroom::host_agent
