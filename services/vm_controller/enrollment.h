// Automatic enrollment of workloads into the project's trust (issue 14, DESIGN.md §4 "Project trust"), in
// vm-controller on the controlling VM. Pure policy and state: the gRPC edge passes in what it verified (the
// caller's mTLS identity, its source address, its client certificate).
//
// The life of one workload:
//   Expect()       ProvisionWorkload handed the workload over for a job: id, job, project, netd-assigned IP,
//   and
//                  when the job's time limit ends. Nothing else can be enrolled.
//   Enroll()       The workload, with the one-time ticket host-agent gave it (whose SHA-256 came with the
//                  handover), from its netd IP, sends a CSR for a key it generated in memory. Exactly once:
//                  the project CA issues a certificate bound to id, job and IP, expiring at the time limit
//                  plus a margin. On the main mTLS listener the caller must also be its deployment identity
//                  spiffe://…/workload/<id>.
//   Secrets()      Over a channel authenticated by that project certificate (never a deployment-CA one), from
//   the
//                  same IP, the workload gets what the project gives it: the munge key and the NFS export.
//   End()          The workload or its job ended: its record shrinks to a tombstone (id only) so the id can
//   never
//                  be enrolled again, and nothing else of it stays here.
// Every refusal is audited (action "enrollment/<Step>", object "workload/<id>", the status code, the reason);
// so is every success. Thread-safe.
#pragma once

#include <map>
#include <memory>
#include <set>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/audit.h"
#include "common/project_ca.h"

namespace strongroom {

struct HandedOverWorkload {
  std::string workload_id;
  std::string global_job_id;
  std::string project;
  std::string ip;             // the netd-assigned address (ProvisionWorkload's primary workload address)
  absl::Time time_limit_end;  // when the job's time limit runs out
  // SHA-256 (hex) of the workload's one-time enrollment ticket (host-agent's report).
  std::string ticket_sha256;
};

struct EnrollRequest {
  // The verified mTLS identity of the caller (deployment CA, role workload) on the main listener; "" on the
  // enrollment listener, where the ticket alone authenticates.
  std::string caller_spiffe_id;
  std::string peer_ip;  // the connection's source address
  std::string workload_id;
  std::string global_job_id;
  std::string project;
  std::string csr_pem;
  std::string ticket;  // the one-time enrollment ticket (hex); secret, never logged or audited
};

struct Enrollment {
  std::string certificate_pem;  // the workload's project certificate
  std::string project_ca_pem;   // the CA its IPsec peer (the controlling VM) chains to
  absl::Time not_after;
};

// What the project hands an enrolled workload. Held in memory; never logged or audited.
struct ProjectSecrets {
  std::string munge_key;   // the Local Slurm's munge key (raw bytes)
  std::string nfs_server;  // the controlling VM's address inside the tunnel
  std::string nfs_export;  // the project's data share path on it
  std::string ipsec_address;    // the VM's IKE address (the tunnel's remote end); empty: no tunnels here
  std::string nfs_mount_point;  // where the workload mounts the share (its path on the VM)
};

class EnrollmentAuthority {
 public:
  // `trust_domain`: the deployment trust domain whose workload identities may enroll on the main listener.
  // `margin`: how long a
  // certificate outlives the job's time limit.
  EnrollmentAuthority(std::unique_ptr<ProjectCa> ca, std::string trust_domain, ProjectSecrets secrets,
                      absl::Duration margin, AuditSink* audit);

  const ProjectCa& ca() const { return *ca_; }

  // Handover from ProvisionWorkload. A repeat for the same job, address and ticket hash keeps the first
  // handover; another job, address or ticket hash for a known id, or an id that has ended, is ALREADY_EXISTS;
  // a malformed ticket hash INVALID_ARGUMENT.
  absl::Status Expect(const HandedOverWorkload& workload, absl::Time now);
  absl::StatusOr<Enrollment> Enroll(const EnrollRequest& request, absl::Time now);
  // `client_cert_pem`: the certificate the caller authenticated with on the enrolled channel.
  absl::StatusOr<ProjectSecrets> Secrets(const std::string& client_cert_pem, const std::string& peer_ip,
                                         absl::Time now);
  void End(const std::string& workload_id, absl::Time now);

  // For tests and metrics: workloads with a live (handed over or enrolled) record.
  size_t LiveCount() const;

 private:
  enum class State { kHandedOver, kEnrolled };
  struct Record {
    HandedOverWorkload workload;
    State state = State::kHandedOver;
    absl::Time cert_not_after;
  };

  absl::Status Refuse(const std::string& actor, const std::string& step, const std::string& workload_id,
                      absl::Status status, absl::Time now);
  void Audit(const std::string& actor, const std::string& step, const std::string& workload_id,
             const absl::Status& status, absl::Time now);

  const std::unique_ptr<ProjectCa> ca_;  // the project's CA; its key exists only in this process
  const std::string trust_domain_;       // whose workload identities may enroll
  const ProjectSecrets secrets_;         // handed out by Secrets() only
  const absl::Duration margin_;          // certificate lifetime past the job's time limit
  AuditSink* const audit_;               // not owned; every step's outcome

  mutable absl::Mutex mu_;
  std::map<std::string, Record> live_ ABSL_GUARDED_BY(mu_);  // by workload id
  std::set<std::string> ended_ ABSL_GUARDED_BY(mu_);         // tombstones: ids that may never enroll again
};

}  // namespace strongroom
