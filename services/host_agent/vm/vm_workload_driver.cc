#include "services/host_agent/vm/vm_workload_driver.h"

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/log.h"
#include "common/status.h"

namespace strongroom::host_agent {
namespace {

// TrackedResources.stage once the domain has been asked for (libvirt may have it from then on).
constexpr char kVmRequestedStage[] = "vm_requested";

}  // namespace

VmProvisioning VmProvisioningFor(const ProvisioningInputs& inputs) {
  VmProvisioning out;
  out.env = inputs.env;
  if (!inputs.slurm_auth_file.empty()) {
    const std::filesystem::path key(inputs.slurm_auth_file);
    out.env.emplace_back("SR_SLURM_AUTH_FILE", key.filename().string());
    out.filesystems.push_back({key.parent_path().string(), kSlurmAuthTag, /*read_only=*/true});
  }
  if (!inputs.project_share.empty()) {
    out.filesystems.push_back({inputs.project_share, kProjectShareTag, /*read_only=*/false});
  }
  return out;
}

VmWorkloadDriver::VmWorkloadDriver(VmWorkloadOptions options, NetworkProvider* network,
                                   std::function<void(const ExternalStop&)> on_stop)
    : options_(std::move(options)), network_(network) {
  if (options_.vm.libvirt_uri.empty()) return;
  vm_ =
      std::make_unique<vm::VmDriver>(options_.vm, [on_stop = std::move(on_stop)](const vm::DomainStopped& d) {
        // A guest that powers off ends its workload normally; every other end is the workload's failure.
        on_stop({d.workload_id, d.uuid, d.reason != "VM_SHUTDOWN", d.reason, d.message});
      });
}

absl::StatusOr<vm::VmImage> VmWorkloadDriver::ResolveVm(const v1::WorkloadSpec& spec) {
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

absl::StatusOr<StartPlan> VmWorkloadDriver::Resolve(const v1::WorkloadSpec& spec) {
  SR_ASSIGN_OR_RETURN(const vm::VmImage image, ResolveVm(spec));
  StartPlan plan;
  plan.image_path = image.rootfs;
  plan.encryption = v1::SCRATCH_ENCRYPTION_PLAIN_DMCRYPT;  // inside the guest, with its own key
  return plan;
}

absl::Status VmWorkloadDriver::PrepareStorage(StartContext& ctx) {
  // Checked again: the catalog or libvirt may have changed since Resolve (a resumed start).
  absl::StatusOr<vm::VmImage> image = ResolveVm(ctx.workload.record.spec());
  if (!image.ok()) return ctx.fail(v1::FAILURE_PHASE_IMAGE, "VM_IMAGE", image.status());
  const std::string& dir = ctx.workload.resources.workload_dir;
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return ctx.fail(v1::FAILURE_PHASE_SCRATCH, "STATE_DIR", absl::InternalError(ec.message()));
  std::filesystem::permissions(dir, std::filesystem::perms::owner_all, ec);
  return absl::OkStatus();
}

absl::Status VmWorkloadDriver::AttachNetwork(StartContext& ctx) {
  // The tap, before the VM exists (netd owns it; libvirt only opens it).
  absl::StatusOr<v1::NetworkAttachment> port = network_->AllocateTap(ctx.workload.record.spec());
  if (!port.ok())
    return ctx.fail(v1::FAILURE_PHASE_NETWORK, NetworkFailureReason(port.status()), port.status());
  ctx.port = *port;
  return ctx.record([&](TrackedWorkload& w) {
    if (network_->attached()) *w.record.mutable_network() = *port;
    w.resources.port_name = port->port_name();
    w.resources.netd_generation = port->generation();
    w.resources.stage = "network";
  });
}

absl::Status VmWorkloadDriver::Launch(StartContext& ctx) {
  const v1::WorkloadSpec& spec = ctx.workload.record.spec();
  absl::StatusOr<vm::VmImage> image = vm::ResolveVmImage(options_.image_root, spec.image().name());
  if (!image.ok()) return ctx.fail(v1::FAILURE_PHASE_IMAGE, "VM_IMAGE", image.status());
  vm::VmLaunch launch;
  launch.workload_id = ctx.id;
  launch.workload_dir = ctx.workload.resources.workload_dir;
  launch.image = *image;
  launch.vcpus = spec.resources().cpus();
  launch.memory_bytes = spec.resources().memory_bytes();
  const v1::NetworkAttachment& port = ctx.port;
  launch.tap = port.port_name();
  launch.mac = port.mac();
  if (!port.ipv4_address().empty())
    launch.address_cidr = absl::StrCat(port.ipv4_address(), "/", port.prefix_length());
  launch.gateway = port.gateway();
  launch.hostname = spec.provisioning().node_name().empty() ? ctx.id : spec.provisioning().node_name();
  launch.entrypoint = options_.entrypoint;
  launch.provisioning_json = ctx.inputs.bundle_json;
  VmProvisioning provisioning = VmProvisioningFor(ctx.inputs);
  absl::StatusOr<std::string> env = vm::WorkloadEnvFile(provisioning.env);
  if (!env.ok()) return ctx.fail(v1::FAILURE_PHASE_PROVISIONING, "WORKLOAD_ENV", env.status());
  launch.workload_env = *std::move(env);
  launch.filesystems = std::move(provisioning.filesystems);
  // The domain's UUID is the workload's runtime id, recorded before the domain exists: stop events of any
  // other domain (an earlier one of a resumed start) are not this one's. Once the domain is asked for it may
  // exist: teardown asks libvirt from then on (before, it knows there is none).
  absl::StatusOr<std::string> uuid = vm_->Start(launch, [&](const std::string& domain_uuid) {
    return ctx.record([&](TrackedWorkload& w) {
      w.resources.stage = kVmRequestedStage;
      w.record.set_runtime_id(domain_uuid);
    });
  });
  if (!uuid.ok()) {
    return ctx.fail(v1::FAILURE_PHASE_RUNTIME,
                    absl::IsUnavailable(uuid.status()) ? "LIBVIRT_UNAVAILABLE" : "VM_START", uuid.status());
  }
  return ctx.record([&](TrackedWorkload& w) { w.resources.stage = "runtime"; });
}

void VmWorkloadDriver::StopExecution(TeardownContext& ctx) {
  const absl::Time t0 = absl::Now();
  // The domain (qemu with it), if one was ever asked for. Without libvirt nothing can be said about it then:
  // a leftover.
  const std::string& stage = ctx.workload.resources.stage;
  const bool domain_possible = !(stage.empty() || stage == "network" || stage == kInterruptedStage);
  absl::Status stopped = vm_ && domain_possible ? vm_->Stop(ctx.id, ctx.grace) : absl::OkStatus();
  if (!stopped.ok()) ctx.leftovers->push_back(std::string(stopped.message()));
  ctx.report->set_processes_killed(stopped.ok());
  ctx.report->set_runtime_deleted(stopped.ok());
  ctx.timings->runtime = absl::Now() - t0;
  ctx.crash_point("stop.after_kill");
}

void VmWorkloadDriver::RemoveStorage(TeardownContext& ctx) {
  // The writable disk (ciphertext only; its key lived in the guest), the config disk, the console. Only once
  // qemu is gone: it holds the files open.
  const absl::Time t0 = absl::Now();
  const std::string& dir = ctx.workload.resources.workload_dir;
  const bool vm_gone = ctx.report->processes_killed();
  std::error_code ec;
  if (vm_gone && !dir.empty()) {
    std::filesystem::remove_all(dir, ec);
    if (ec) ctx.leftovers->push_back(absl::StrCat("remove ", dir, ": ", ec.message()));
  } else if (!vm_gone) {
    ctx.leftovers->push_back(absl::StrCat(dir, " kept: the VM may still use it"));
  }
  ctx.report->set_scratch_destroyed(vm_gone && !ec);
  ctx.report->set_mounts_removed(true);  // a VM's host side mounts nothing
  ctx.timings->scratch = absl::Now() - t0;
}

bool VmWorkloadDriver::HealthyForAdoption(const TrackedWorkload& tw, std::string* why) {
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

void VmWorkloadDriver::SweepOrphans(const std::string& /*workloads_root*/,
                                    const std::set<std::string>& active) {
  if (!vm_) return;
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
  // Once, at the agent's start (its reconcile sweeps): the first VM on a freshly started libvirtd would
  // otherwise wait about 4 s for libvirt's probe of qemu (measured here).
  if (!warmed_up_) {
    warmed_up_ = true;
    const absl::Time t0 = absl::Now();
    absl::Status probed = vm_->WarmUp();
    Log(probed.ok() ? LogLevel::kInfo : LogLevel::kWarn, "libvirt probed the emulator",
        {{"ms", absl::StrCat(absl::ToInt64Milliseconds(absl::Now() - t0))},
         {"status", probed.ToString()}});
  }
}

}  // namespace strongroom::host_agent
