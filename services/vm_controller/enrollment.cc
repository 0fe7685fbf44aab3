#include "services/vm_controller/enrollment.h"

#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/enrollment_ticket.h"
#include "common/identity.h"
#include "common/status.h"

namespace strongroom {

EnrollmentAuthority::EnrollmentAuthority(std::unique_ptr<ProjectCa> ca, std::string trust_domain,
                                         ProjectSecrets secrets, absl::Duration margin, AuditSink* audit)
    : ca_(std::move(ca)),
      trust_domain_(std::move(trust_domain)),
      secrets_(std::move(secrets)),
      margin_(margin),
      audit_(audit) {}

void EnrollmentAuthority::Audit(const std::string& actor, const std::string& step,
                                const std::string& workload_id, const absl::Status& status, absl::Time now) {
  if (audit_ == nullptr) return;
  AuditEvent e;
  e.actor = actor.empty() ? "unauthenticated" : actor;
  e.action = absl::StrCat("enrollment/", step);
  e.object = absl::StrCat("workload/", workload_id);
  e.outcome = absl::StatusCodeToString(status.code());
  e.detail = std::string(status.message());
  e.details["project"] = ca_->project();
  e.time = now;
  audit_->Record(e);
}

absl::Status EnrollmentAuthority::Refuse(const std::string& actor, const std::string& step,
                                         const std::string& workload_id, absl::Status status,
                                         absl::Time now) {
  Audit(actor, step, workload_id, status, now);
  return status;
}

absl::Status EnrollmentAuthority::Expect(const HandedOverWorkload& w, absl::Time now) {
  const std::string actor = "vm-controller:ProvisionWorkload";
  if (!IsHex64(w.ticket_sha256))
    return Refuse(actor, "Expect", w.workload_id,
                  absl::InvalidArgumentError(
                      "enrollment_ticket_sha256: 64 lower-case hex characters are required for enrollment"),
                  now);
  if (w.project != ca_->project())
    return Refuse(actor, "Expect", w.workload_id,
                  absl::PermissionDeniedError(
                      absl::StrCat("workload of project ", w.project, ", not ", ca_->project())),
                  now);
  absl::MutexLock lock(&mu_);
  if (ended_.count(w.workload_id))
    return Refuse(actor, "Expect", w.workload_id,
                  absl::AlreadyExistsError("workload id already used and ended"), now);
  auto it = live_.find(w.workload_id);
  if (it != live_.end()) {
    const HandedOverWorkload& o = it->second.workload;
    // ProvisionWorkload is idempotent: a repeat keeps the first handover (and its time limit).
    if (o.global_job_id == w.global_job_id && o.ip == w.ip && o.ticket_sha256 == w.ticket_sha256)
      return absl::OkStatus();
    return Refuse(
        actor, "Expect", w.workload_id,
        absl::AlreadyExistsError("workload id already handed over with another job, address or ticket"), now);
  }
  live_[w.workload_id] = Record{w, State::kHandedOver, absl::InfinitePast()};
  Audit(actor, "Expect", w.workload_id, absl::OkStatus(), now);
  return absl::OkStatus();
}

absl::StatusOr<Enrollment> EnrollmentAuthority::Enroll(const EnrollRequest& r, absl::Time now) {
  // The actor of the audit records: the verified deployment identity, or (enrollment listener) the address
  // that presented a ticket. Never the ticket.
  const std::string actor =
      r.caller_spiffe_id.empty() ? absl::StrCat("ticket-holder@", r.peer_ip) : r.caller_spiffe_id;
  if (!r.caller_spiffe_id.empty()) {
    // Main listener: a deployment identity of role workload naming this very workload.
    absl::StatusOr<Identity> id = ParseSpiffeId(r.caller_spiffe_id);
    if (!id.ok() || id->role != Role::kWorkload || id->trust_domain != trust_domain_ ||
        id->instance != r.workload_id)
      return Refuse(actor, "Enroll", r.workload_id,
                    absl::PermissionDeniedError("caller is not this workload's identity"), now);
  }
  if (r.project != ca_->project())
    return Refuse(actor, "Enroll", r.workload_id,
                  absl::PermissionDeniedError(absl::StrCat("enrollment for project ", r.project,
                                                           " at project ", ca_->project(), "'s CA")),
                  now);
  CertBinding binding;
  {
    absl::MutexLock lock(&mu_);
    if (ended_.count(r.workload_id))
      return Refuse(actor, "Enroll", r.workload_id, absl::FailedPreconditionError("workload has ended"), now);
    auto it = live_.find(r.workload_id);
    if (it == live_.end())
      return Refuse(actor, "Enroll", r.workload_id,
                    absl::NotFoundError("workload was not handed over by ProvisionWorkload"), now);
    Record& rec = it->second;
    // The ticket before anything that tells the caller more about the workload. The hash is compared in
    // constant time; a wrong ticket does not use up the slot (the right one is 256 random bits).
    if (r.ticket.empty())
      return Refuse(actor, "Enroll", r.workload_id, absl::PermissionDeniedError("enrollment_ticket: missing"),
                    now);
    if (!EnrollmentTicketMatches(r.ticket, rec.workload.ticket_sha256))
      return Refuse(actor, "Enroll", r.workload_id,
                    absl::PermissionDeniedError("enrollment_ticket: not this workload's ticket"), now);
    if (rec.state == State::kEnrolled)
      return Refuse(actor, "Enroll", r.workload_id,
                    absl::AlreadyExistsError("workload already enrolled (replay or second enrollment)"), now);
    if (rec.workload.global_job_id != r.global_job_id)
      return Refuse(actor, "Enroll", r.workload_id,
                    absl::PermissionDeniedError(absl::StrCat(
                        "workload belongs to job ", rec.workload.global_job_id, ", not ", r.global_job_id)),
                    now);
    if (rec.workload.ip != r.peer_ip)
      return Refuse(actor, "Enroll", r.workload_id,
                    absl::PermissionDeniedError(absl::StrCat(
                        "enrollment from ", r.peer_ip, ", not the workload's address ", rec.workload.ip)),
                    now);
    if (now >= rec.workload.time_limit_end)
      return Refuse(actor, "Enroll", r.workload_id,
                    absl::FailedPreconditionError("the job's time limit has passed"), now);
    binding = CertBinding{ca_->project(),  r.workload_id,          r.global_job_id,
                          rec.workload.ip, now - absl::Minutes(1), rec.workload.time_limit_end + margin_};
    // Claimed before issuing: a concurrent second request sees kEnrolled, and a failed issue below does not
    // reopen the slot (the workload must be handed over anew, i.e. a new workload).
    rec.state = State::kEnrolled;
    rec.cert_not_after = binding.not_after;
  }
  absl::StatusOr<std::string> cert = ca_->IssueFromCsr(r.csr_pem, binding);
  if (!cert.ok()) return Refuse(actor, "Enroll", r.workload_id, cert.status(), now);
  Audit(actor, "Enroll", r.workload_id, absl::OkStatus(), now);
  return Enrollment{*cert, ca_->cert_pem(), binding.not_after};
}

absl::StatusOr<ProjectSecrets> EnrollmentAuthority::Secrets(const std::string& client_cert_pem,
                                                            const std::string& peer_ip, absl::Time now) {
  if (client_cert_pem.empty())
    return Refuse("unauthenticated", "Secrets", "",
                  absl::PermissionDeniedError("no client certificate: the project certificate is required"),
                  now);
  absl::StatusOr<CertBinding> b = ReadBinding(client_cert_pem);
  std::string workload_id = b.ok() ? b->workload_id : "";
  std::string actor =
      b.ok() ? absl::StrCat("project-cert:", b->project, "/", b->workload_id) : "unauthenticated";
  // Only the project CA vouches for access to project data; a deployment-CA certificate fails here.
  if (absl::Status v = VerifyIssuedBy(client_cert_pem, ca_->cert_pem(), now); !v.ok() || !b.ok())
    return Refuse(actor, "Secrets", workload_id,
                  absl::PermissionDeniedError(absl::StrCat("not a project certificate: ",
                                                           v.ok() ? b.status().message() : v.message())),
                  now);
  absl::MutexLock lock(&mu_);
  if (ended_.count(workload_id))
    return Refuse(actor, "Secrets", workload_id, absl::FailedPreconditionError("workload has ended"), now);
  auto it = live_.find(workload_id);
  if (it == live_.end() || it->second.state != State::kEnrolled)
    return Refuse(actor, "Secrets", workload_id, absl::NotFoundError("workload is not enrolled"), now);
  const HandedOverWorkload& w = it->second.workload;
  if (b->ip != w.ip || peer_ip != w.ip || b->job_id != w.global_job_id)
    return Refuse(
        actor, "Secrets", workload_id,
        absl::PermissionDeniedError(absl::StrCat("certificate for ", b->ip, "/", b->job_id, " used from ",
                                                 peer_ip, "; the workload is ", w.ip, "/", w.global_job_id)),
        now);
  Audit(actor, "Secrets", workload_id, absl::OkStatus(), now);
  return secrets_;
}

void EnrollmentAuthority::End(const std::string& workload_id, absl::Time now) {
  {
    absl::MutexLock lock(&mu_);
    live_.erase(workload_id);
    ended_.insert(workload_id);
  }
  Audit("vm-controller", "End", workload_id, absl::OkStatus(), now);
}

size_t EnrollmentAuthority::LiveCount() const {
  absl::MutexLock lock(&mu_);
  return live_.size();
}

}  // namespace strongroom
