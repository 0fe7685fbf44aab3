// WorkloadManager: the host-agent's domain logic and its one workload lifecycle, for every kind. It owns the
// records and the state machine, idempotency, failures, the monitors of running workloads, reconciliation
// after a restart and the order of every start and stop step; what a kind creates and removes is its
// WorkloadDriver's (workload_driver.h: container/, vm/), picked by spec.kind. The outside world (runtime,
// libvirt, netd, the DB) comes in through interfaces; the gRPC adapter (service.h) only maps requests and
// statuses.
//
// Start: validate -> the driver resolves (image, encryption) -> record STARTING -> provisioning inputs ->
// storage -> network -> launch -> RUNNING. Any failure tears down what exists and records FAILED with phase
// and reason. Stop: STOPPING -> end the processes -> release the port -> remove storage -> STOPPED (or FAILED
// TEARDOWN with the leftovers named in the ScrubReport).
#pragma once

#include <sys/types.h>

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/audit.h"
#include "services/host_agent/container/runtime.h"
#include "services/host_agent/container/share_request_watcher.h"
#include "services/host_agent/network.h"
#include "services/host_agent/provisioning.h"
#include "services/host_agent/reports.h"
#include "services/host_agent/spec_validation.h"
#include "services/host_agent/store.h"
#include "services/host_agent/workload_driver.h"
#include "strongroom/v1/host_agent.pb.h"

namespace strongroom::host_agent {

struct ManagerOptions {
  std::string node;          // this node's name (the agent's certificate instance)
  std::string agent_id;      // the agent's SPIFFE id: the actor of state changes it makes on its own
  std::string trust_domain;  // for workload identities in reports
  std::string deployment_ca_file;  // server.tls.ca_file: public, copied into each bundle (deploymentCaPem)
  std::string state_dir;     // DB, workload dirs
  std::string image_root;    // the image catalog
  uint32_t uid_base = 100000;
  uint32_t uid_count = 65536;
  uint64_t scratch_default_bytes = uint64_t{1} << 30;
  uint64_t scratch_max_bytes = uint64_t{1} << 40;
  bool allow_unencrypted_scratch = false;  // DEVELOPMENT ONLY
  std::string mkfs_binary = "/usr/sbin/mkfs.ext4";
  bool adopt_on_restart = true;  // reconcile policy for healthy RUNNING workloads
  // A start the agent's restart interrupted is cleaned up and waits this long for the same StartWorkload to
  // be retried (the global job's client does) before it is FAILED; zero fails it at once.
  absl::Duration start_retry_window = absl::Seconds(120);
  std::string fault_crash_at;  // TESTS ONLY: SIGKILL self at this named point
  absl::Duration default_grace = absl::Seconds(10);
  absl::Duration runtime_start_timeout = absl::Seconds(30);
  std::string entrypoint = "/usr/libexec/strongroom/entrypoint";  // run inside the image
  OutboxOptions outbox;  // report retry timing (agent_id is filled in from above)
  // "vmc://<cluster>/munge-key" resolves to <dir>/<cluster>/munge-key ("" : such refs are not resolved here).
  std::string local_cluster_secrets_dir;
  std::map<std::string, std::string>
      project_shares;  // project -> host dir, bound read-write at the same path
  // VMs (kind VM, services/host_agent/vm/): libvirt's URI ("" : this node runs no VMs), the domain type ("kvm"
  // or "qemu", i.e. TCG) and the size of each VM's writable disk (the guest encrypts it).
  std::string vm_libvirt_uri;
  std::string vm_domain_type = "qemu";
  uint64_t vm_writable_disk_bytes = uint64_t{1} << 30;
  // The secure data path's project share (data_path.h): whether the kernel has an NFS client (null: read
  // /proc/filesystems), the mount into the workload (null: the kernel's) and how long to wait for the
  // workload's request. Tests inject the first two.
  std::function<bool()> kernel_has_nfs_client;
  std::shared_ptr<ShareMounter> share_mounter;
  absl::Duration share_request_bound = absl::Minutes(30);
};

class WorkloadManager {
 public:
  // `reports` delivers WorkloadReady/Failed/Stopped to backend; null: no reports (standalone).
  static absl::StatusOr<std::unique_ptr<WorkloadManager>> Create(
      ManagerOptions options, std::unique_ptr<Runtime> runtime, std::unique_ptr<NetworkProvider> network,
      std::shared_ptr<AuditSink> audit, std::unique_ptr<ReportSender> reports = nullptr);
  ~WorkloadManager();

  // Run once before serving: finishes interrupted stops, cleans up interrupted starts, re-adopts or cleans up
  // running workloads (per options.adopt_on_restart) and removes orphans of this agent. Logs each decision.
  absl::Status Reconcile();

  struct StartResult {
    v1::Workload workload;
    bool created = false;
  };
  absl::StatusOr<StartResult> Start(const v1::WorkloadSpec& spec, const std::string& actor);
  absl::StatusOr<v1::Workload> Stop(const std::string& id, v1::StopReason reason, const std::string& message,
                                    absl::Duration grace, const std::string& actor);
  absl::StatusOr<v1::Workload> Get(const std::string& id);
  std::vector<v1::Workload> List();
  // Returns the record once its revision exceeds `after_revision`, or the current one after `timeout`.
  absl::StatusOr<v1::Workload> WaitForChange(const std::string& id, uint64_t after_revision,
                                             absl::Duration timeout);

  StepTimings last_start_timings();
  StepTimings last_stop_timings();
  const ManagerOptions& options() const { return options_; }
  // The report outbox; null without a backend.
  Outbox* outbox() { return outbox_.get(); }

 private:
  struct Live {
    TrackedWorkload tw;      // mirror of the DB row
    bool busy = false;       // a start or stop owns the workload's resources
    bool exited = false;     // the main process (a container's init, a VM) has ended
    v1::ExitStatus exit;     // its status, when exited
    bool monitored = false;  // a monitor thread watches the init process
    // Why its driver says it failed behind host-agent's back (ExternalStop), "" otherwise, and in whose
    // words.
    std::string external_failure;
    std::string external_message;
  };

  WorkloadManager(ManagerOptions options, std::unique_ptr<Runtime> runtime,
                  std::unique_ptr<NetworkProvider> network, std::shared_ptr<AuditSink> audit,
                  std::unique_ptr<Store> store);

  // Applies `mutate` to the workload's row, checks the state transition, bumps the revision, persists and
  // wakes watchers. Requires mu_.
  absl::Status UpdateLocked(const std::string& id, const std::function<void(TrackedWorkload&)>& mutate,
                            const std::string& actor) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status Update(const std::string& id, const std::function<void(TrackedWorkload&)>& mutate,
                      const std::string& actor);
  // The driver of the spec's kind.
  WorkloadDriver& DriverFor(const v1::WorkloadSpec& spec);
  // The answer to a repeated StartWorkload; nullopt for a start the agent's restart interrupted, which the
  // repeat resumes (ResumeStart).
  absl::StatusOr<std::optional<StartResult>> Existing(const v1::WorkloadSpec& spec)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<StartResult> ResumeStart(const v1::WorkloadSpec& spec, const std::string& actor);
  // After RunStart: clears busy and hands a workload whose entrypoint already ended to teardown.
  absl::StatusOr<StartResult> CompleteStart(const std::string& id, const absl::Status& started);
  // Fails an interrupted start nobody retried within options_.start_retry_window (a thread per such start).
  void ExpireInterruptedStart(std::string id);
  // The start's steps after STARTING is recorded, in order, through the workload's driver.
  absl::Status RunStart(const std::string& id, const std::string& image_path, const std::string& actor);
  absl::Status Fail(const std::string& id, v1::FailurePhase phase, const std::string& reason,
                    const absl::Status& status, const std::string& actor);
  // Stops everything the workload has; the returned report says what is left.
  v1::ScrubReport Teardown(const std::string& id, absl::Duration grace);
  absl::StatusOr<v1::Workload> FinishStop(const std::string& id, const std::string& actor,
                                          absl::Duration grace, bool self_exit);
  void StartMonitor(const std::string& id, pid_t supervisor, pid_t init_pid, uint64_t init_start);
  void Monitor(std::string id, pid_t supervisor, pid_t init_pid, uint64_t init_start);
  void SweepOrphans();
  // A workload its driver saw end behind host-agent's back (a VM: libvirt's event, on libvirt's thread): the
  // teardown is handed to a thread of ours.
  void OnExternalStop(const ExternalStop& stopped);
  // A driver is about to kill a RUNNING workload for `reason` (a data-path share that could not be mounted):
  // its end is then recorded FAILED EXECUTION with that reason.
  void FailRunning(const std::string& id, const std::string& reason, const std::string& message);
  void MaybeCrash(absl::string_view point);

  const ManagerOptions options_;
  const std::unique_ptr<NetworkProvider> network_;  // netd, or loopback-only in development: every kind's
  const std::shared_ptr<AuditSink> audit_;          // state transitions and notable events
  const std::unique_ptr<Store> store_;              // the tracking DB
  std::unique_ptr<WorkloadDriver> container_;       // kind CONTAINER (or unspecified)
  std::unique_ptr<WorkloadDriver> vm_;              // kind VM (refused without vm_libvirt_uri)
  std::unique_ptr<Outbox> outbox_;                  // reports to backend (after store_: stopped first)
  NodeLimits limits_;                               // this node's CPUs, memory, scratch maximum

  absl::Mutex mu_;                                          // guards everything below
  std::map<std::string, Live> live_ ABSL_GUARDED_BY(mu_);   // every workload ever started here
  bool shutting_down_ ABSL_GUARDED_BY(mu_) = false;         // monitors stop watching
  std::vector<std::thread> monitors_ ABSL_GUARDED_BY(mu_);  // joined by the destructor
  StepTimings start_timings_ ABSL_GUARDED_BY(mu_);
  StepTimings stop_timings_ ABSL_GUARDED_BY(mu_);
};

}  // namespace strongroom::host_agent
