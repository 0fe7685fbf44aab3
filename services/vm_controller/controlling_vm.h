// The controlling VM's side of the secure data path for the workloads vm-controller hands over (issue 14,
// docs/IPSEC.md "The controlling VM's daemons"): the VM's charon (the IPsec responder, VmTunnels) and its
// nfs-ganesha (the project's share, GaneshaExports). vm-controller starts both itself when configured
// (`enrollment { ipsec { } nfs { } }`), waits until each serves, watches them, and stops them (only the PIDs
// it started) when it stops; a charon run by someone else (`ipsec_vici_socket`) is used as is.
//
// Supervision: a process that exits while vm-controller runs is logged and audited
// (controlling-vm/ProcessExited), and from then on every handover is refused with FAILED_PRECONDITION naming
// it (no restart: a new charon would have lost every loaded connection and the VM's identity, a new ganesha
// the NFSv4 state of the clients; restarting vm-controller restarts both cleanly). The job's end still clears
// its records: what a dead process held went with it.
#pragma once

#include <sys/types.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/audit.h"
#include "common/ipsec_tunnel.h"
#include "common/project_ca.h"
#include "common/supervised_process.h"
#include "services/vm_controller/nfs_export.h"
#include "services/vm_controller/vm_tunnels.h"

namespace strongroom {

// What the controlling VM keeps for a handed-over workload besides its enrollment. Controller opens it at the
// handover (ProvisionWorkload) and closes it at the job's end.
class WorkloadDataPath {
 public:
  virtual ~WorkloadDataPath() = default;
  // The workload's IPsec connection and NFS grant. Idempotent.
  virtual absl::Status Open(const std::string& workload_id, const std::string& job_id,
                            const std::string& workload_ip) = 0;
  // Removes whatever Open gave the workload. Idempotent; OK for a workload never opened.
  virtual absl::Status Close(const std::string& workload_id) = 0;
};

struct ControllingVmOptions {
  // charon: started here from `charon_binary` with its files in `charon_dir`, or (both empty) someone else's
  // at `external_vici_socket`; neither: no tunnels.
  std::string charon_binary;
  std::string charon_dir;
  std::string external_vici_socket;
  std::string ipsec_address;  // the VM's IKE address and identity (with either charon)
  // The workloads' br-secure subnets (CIDRs): this VM's traffic to them never leaves in the clear
  // (PlaintextGuardCommands; only with the charon started here). Empty: no guard.
  std::vector<std::string> workload_subnets;
  int enrollment_port = 0;  // the enrollment listener's TCP port: its answers are the guard's one exception
  IpsecBackend ipsec_backend = IpsecBackend::kLibipsec;
  // nfs-ganesha, started here from `ganesha_binary` with its files in `ganesha_dir`; empty: no NFS.
  std::string ganesha_binary;
  std::string ganesha_dir;
  std::string share_path;   // the exported directory
  std::string export_path;  // its NFSv4 pseudo path
  int nfs_port = 2049;
  // What a startup error of each names first (vm-controller: its config field).
  std::string charon_context = "charon";
  std::string ganesha_context = "nfs-ganesha";
  absl::Duration ready_timeout = absl::Seconds(30);  // for each process to serve
  absl::Duration stop_grace = absl::Seconds(5);      // SIGTERM to SIGKILL
};

class ControllingVm : public WorkloadDataPath {
 public:
  // Starts what `options` asks for and waits until it serves; on error nothing started is left running.
  // `audit` (not owned, may be null) receives the records of every grant, revocation and unexpected exit.
  static absl::StatusOr<std::unique_ptr<ControllingVm>> Start(const ControllingVmOptions& options,
                                                              const ProjectCa& ca, AuditSink* audit);
  ~ControllingVm() override;  // Stop()

  absl::Status Open(const std::string& workload_id, const std::string& job_id,
                    const std::string& workload_ip) override;
  absl::Status Close(const std::string& workload_id) override;

  // OK while every process started here runs; else FAILED_PRECONDITION naming the first that exited.
  absl::Status Health() const;
  // Stops ganesha, then charon (SIGTERM, SIGKILL after stop_grace) and removes charon's bypass rules.
  // Idempotent.
  void Stop();

  // 0 when not started here.
  pid_t charon_pid() const { return charon_ ? charon_->pid() : 0; }
  pid_t ganesha_pid() const { return ganesha_ ? ganesha_->pid() : 0; }

 private:
  ControllingVm(ControllingVmOptions options, AuditSink* audit)
      : options_(std::move(options)), audit_(audit) {}
  void Audit(const std::string& action, const std::string& object, const absl::Status& status,
             std::map<std::string, std::string> details);
  void Exited(const std::string& name, pid_t pid, int exit_code);
  absl::Status StartCharon(const ProjectCa& ca, const SupervisedProcess::ExitCallback& on_exit);
  absl::Status StartGanesha(const SupervisedProcess::ExitCallback& on_exit);

  // What a workload was given, so that Close removes exactly that (and audits only real removals).
  struct Given {
    std::string ip;
    bool tunnel = false;
    bool grant = false;
  };

  const ControllingVmOptions options_;
  AuditSink* const audit_;                              // not owned; may be null
  // `ip` argv vectors that undo what StartCharon applied (bypass rules, plaintext guards), run at Stop.
  std::vector<std::vector<std::string>> undo_commands_;
  std::unique_ptr<SupervisedProcess> charon_;           // ours, or null
  std::unique_ptr<SupervisedProcess> ganesha_;          // ours, or null
  std::unique_ptr<VmTunnels> tunnels_;                  // on charon_ or the external charon; null: no IPsec
  absl::Mutex mu_;                                      // the grants: one change at a time
  std::unique_ptr<GaneshaExports> exports_ ABSL_GUARDED_BY(mu_);  // null: no NFS
  std::map<std::string, Given> given_ ABSL_GUARDED_BY(mu_);       // by workload id
};

}  // namespace strongroom
