#include "services/backend/job_decisions.h"

#include "absl/strings/str_cat.h"
#include "services/backend/job_state.h"
#include "services/backend/proto_time.h"

namespace strongroom::backend {
namespace {

TimelineItem To(v1::JobState state, const std::string& actor, std::string message,
                std::map<std::string, std::string> details = {}) {
  TimelineItem item;
  item.to = state;
  item.actor = actor;
  item.message = std::move(message);
  item.details = std::move(details);
  return item;
}

TimelineItem Event(std::string name, const std::string& actor, std::string message,
                   const absl::Status& outcome = absl::OkStatus(),
                   std::map<std::string, std::string> details = {}) {
  TimelineItem item;
  item.event = std::move(name);
  item.actor = actor;
  item.message = std::move(message);
  item.outcome = outcome.ok() ? v1::AUDIT_OUTCOME_SUCCESS : v1::AUDIT_OUTCOME_FAILURE;
  item.status_code = static_cast<int>(outcome.code());
  item.details = std::move(details);
  return item;
}

bool Transient(const absl::Status& s) {
  return s.code() == absl::StatusCode::kUnavailable || s.code() == absl::StatusCode::kDeadlineExceeded ||
         s.code() == absl::StatusCode::kResourceExhausted || s.code() == absl::StatusCode::kAborted;
}

bool WorkloadMayExist(const JobRecord& r) {
  const v1::JobWorkload& w = r.job.workload();
  return !w.node().empty() && w.state() != v1::WORKLOAD_STATE_STOPPED &&
         w.state() != v1::WORKLOAD_STATE_FAILED;
}

bool SlurmJobMayRun(const JobRecord& r) {
  return r.job.ref().global_slurm_job_id() != 0 &&
         InterpretSlurmState(r.slurm_state).phase != SlurmStateMeaning::kEnded;
}

// Moves a non-terminal job to FAILED with its failure, and asks for the cleanup it needs.
Items Fail(JobRecord& r, v1::FailurePhase phase, const std::string& reason, const std::string& message,
           int status_code, v1::JobEndReason end_reason, absl::Time now, const std::string& actor) {
  if (IsTerminal(r.job.state())) return {};
  if (r.job.state() == v1::JOB_STATE_CANCELLING) {
    // A failure while cancelling still ends as the cancel that was asked for.
    r.need_scancel = SlurmJobMayRun(r);
    return {To(v1::JOB_STATE_CANCELLED, actor, absl::StrCat("cancelled (", reason, ": ", message, ")"))};
  }
  v1::FailureInfo* failure = r.job.mutable_failure();
  failure->set_phase(phase);
  failure->set_reason(reason);
  failure->set_message(message.substr(0, 1024));
  failure->set_status_code(status_code);
  *failure->mutable_time() = TimestampOfTime(now);
  r.job.set_end_reason(end_reason);
  r.need_scancel = SlurmJobMayRun(r);
  r.need_stop_workload = WorkloadMayExist(r);
  r.need_provision = false;
  r.effect_attempts = 0;
  r.effect_after = absl::InfinitePast();
  r.effect_since = now;
  return {To(v1::JOB_STATE_FAILED, actor, message, {{"reason", reason}})};
}

// An effect failed: retry after `retry_at` while transient and inside the retry window; true if it will.
bool WillRetry(JobRecord& r, const absl::Status& s, absl::Time now, absl::Time retry_at,
               const DecisionPolicy& p) {
  if (!Transient(s) || now - r.effect_since > p.peer_retry_window) return false;
  ++r.effect_attempts;
  r.effect_after = retry_at;
  return true;
}

void EffectDone(JobRecord& r) {
  r.effect_attempts = 0;
  r.effect_after = absl::InfinitePast();
}

}  // namespace

Items OnSubmitAttempt(JobRecord& r) {
  r.job.set_submit_attempts(r.job.submit_attempts() + 1);
  return {};
}

Items OnSubmitted(JobRecord& r, uint32_t slurm_job_id, bool adopted, const DecisionPolicy& p) {
  r.job.mutable_ref()->set_global_slurm_job_id(slurm_job_id);
  r.slurm_state = "PENDING";
  r.effect_after = absl::InfinitePast();
  std::map<std::string, std::string> details = {{"global_slurm_job_id", absl::StrCat(slurm_job_id)},
                                                {"attempt", absl::StrCat(r.job.submit_attempts())}};
  const std::string how =
      adopted ? absl::StrCat("found global job ", slurm_job_id,
                             " submitted before a restart (its comment names this job); adopted")
              : absl::StrCat("submitted to the Global Slurm as job ", slurm_job_id);
  if (r.job.state() == v1::JOB_STATE_SUBMITTING)
    return {To(v1::JOB_STATE_QUEUED, p.backend_actor, how, details)};
  // Cancelled (or failed) while sbatch ran: the Slurm job must go too.
  r.need_scancel = true;
  return {Event("global.submitted", p.backend_actor, how + "; scancel follows", absl::OkStatus(), details)};
}

Items OnSubmitFailed(JobRecord& r, const absl::Status& error, absl::Time now, absl::Time retry_at,
                     const DecisionPolicy& p) {
  const bool transient = error.code() == absl::StatusCode::kUnavailable;
  if (transient && static_cast<int>(r.job.submit_attempts()) < p.max_submit_attempts) {
    r.effect_after = retry_at;
    return {Event("global.submit_retry", p.backend_actor,
                  absl::StrCat("sbatch attempt ", r.job.submit_attempts(), " failed; retrying"), error)};
  }
  if (r.job.state() == v1::JOB_STATE_CANCELLING) return OnNeverSubmitted(r, p);
  const std::string message =
      transient ? absl::StrCat("sbatch failed ", r.job.submit_attempts(), " times: ", error.message())
                : std::string(error.message());
  return Fail(r, v1::FAILURE_PHASE_SUBMISSION, transient ? "GLOBAL_SLURM_UNAVAILABLE" : "SBATCH_REFUSED",
              message, static_cast<int>(error.code()), v1::JOB_END_REASON_GLOBAL_SUBMIT_FAILED, now,
              p.backend_actor);
}

Items OnNeverSubmitted(JobRecord& r, const DecisionPolicy& p) {
  if (r.job.state() != v1::JOB_STATE_CANCELLING) return {};
  r.need_scancel = false;
  return {To(v1::JOB_STATE_CANCELLED, p.backend_actor, "cancelled before it reached the Global Slurm")};
}

bool OrphanSearchIsConclusive(absl::Time created, absl::Time now, absl::Duration min_job_age,
                              absl::Duration margin) {
  return now + margin - created < min_job_age;
}

Items OnOrphanSearchInconclusive(JobRecord& r, absl::Duration min_job_age, absl::Time now,
                                 const DecisionPolicy& p) {
  if (r.job.state() == v1::JOB_STATE_CANCELLING) return OnNeverSubmitted(r, p);
  if (r.job.state() != v1::JOB_STATE_SUBMITTING) return {};
  return Fail(r, v1::FAILURE_PHASE_SUBMISSION, "SUBMIT_OUTCOME_UNKNOWN",
              absl::StrCat("an earlier sbatch attempt (", r.job.submit_attempts() - 1,
                           " counted) may have created a global job, and the Global Slurm no longer reports "
                           "jobs that ended more than MinJobAge (",
                           absl::FormatDuration(min_job_age),
                           ") ago; not submitting again, so that the job cannot run twice"),
              static_cast<int>(absl::StatusCode::kFailedPrecondition),
              v1::JOB_END_REASON_GLOBAL_SUBMIT_FAILED, now, p.backend_actor);
}

Items OnSlurmObserved(JobRecord& r, const SqueueRow& row, absl::Time now, const DecisionPolicy& p) {
  const SlurmStateMeaning meaning = InterpretSlurmState(row.state);
  r.slurm_state = row.state;
  Items items;
  v1::Job& job = r.job;
  if (meaning.phase != SlurmStateMeaning::kPending && !job.has_start_time()) {
    *job.mutable_start_time() = TimestampOfTime(row.start_time.value_or(now));
  }
  if (meaning.phase != SlurmStateMeaning::kPending && row.cpus > 0) job.set_allocated_cpus(row.cpus);
  if (!row.nodes.empty() && job.workload().node().empty()) job.mutable_workload()->set_node(row.nodes);
  if (meaning.phase == SlurmStateMeaning::kRunning) {
    if (job.state() == v1::JOB_STATE_QUEUED) {
      items.push_back(
          To(v1::JOB_STATE_STARTING, p.backend_actor,
             absl::StrCat("global job ", row.job_id, " runs on ", row.nodes, "; waiting for the workload"),
             {{"node", row.nodes}, {"cpus", absl::StrCat(row.cpus)}}));
    }
    return items;
  }
  if (meaning.phase != SlurmStateMeaning::kEnded || IsTerminal(job.state())) return items;
  r.need_scancel = false;
  const std::string ended =
      absl::StrCat("global job ", row.job_id, " ended ", row.state,
                   row.reason.empty() || row.reason == "None" ? "" : " (" + row.reason + ")");
  if (job.state() == v1::JOB_STATE_CANCELLING) return {To(v1::JOB_STATE_CANCELLED, p.backend_actor, ended)};
  if (job.state() == v1::JOB_STATE_RELEASING) return {To(v1::JOB_STATE_COMPLETED, p.backend_actor, ended)};
  const bool before_ready = job.state() == v1::JOB_STATE_SUBMITTING || job.state() == v1::JOB_STATE_QUEUED ||
                            job.state() == v1::JOB_STATE_STARTING;
  const v1::JobEndReason end = meaning.end_reason != v1::JOB_END_REASON_UNSPECIFIED
                                   ? meaning.end_reason
                                   : v1::JOB_END_REASON_WORKLOAD_FAILED;
  return Fail(r, before_ready ? v1::FAILURE_PHASE_SCHEDULING : v1::FAILURE_PHASE_EXECUTION,
              meaning.failure_reason, ended, 0, end, now, p.backend_actor);
}

Items OnSlurmForgot(JobRecord& r, absl::Time now, const DecisionPolicy& p) {
  const v1::JobState s = r.job.state();
  r.slurm_state = "UNKNOWN";
  r.need_scancel = false;
  const std::string message =
      absl::StrCat("the Global Slurm no longer knows job ", r.job.ref().global_slurm_job_id());
  if (IsTerminal(s)) return {};
  if (s == v1::JOB_STATE_CANCELLING) return {To(v1::JOB_STATE_CANCELLED, p.backend_actor, message)};
  if (s == v1::JOB_STATE_RELEASING) return {To(v1::JOB_STATE_COMPLETED, p.backend_actor, message)};
  const bool before_ready = s == v1::JOB_STATE_QUEUED || s == v1::JOB_STATE_STARTING;
  return Fail(r, before_ready ? v1::FAILURE_PHASE_SCHEDULING : v1::FAILURE_PHASE_EXECUTION, "GLOBAL_JOB_LOST",
              message, 0, v1::JOB_END_REASON_UNSPECIFIED, now, p.backend_actor);
}

Items OnReadinessCheck(JobRecord& r, absl::Time now, const DecisionPolicy& p) {
  if (r.job.state() != v1::JOB_STATE_STARTING || !r.job.has_start_time()) return {};
  if (now - TimeOfTimestamp(r.job.start_time()) < p.readiness_deadline) return {};
  return Fail(r, v1::FAILURE_PHASE_READINESS, "READY_DEADLINE_EXCEEDED",
              absl::StrCat("no WorkloadReady within ", absl::FormatDuration(p.readiness_deadline),
                           " of the global job's start"),
              static_cast<int>(absl::StatusCode::kDeadlineExceeded),
              v1::JOB_END_REASON_READY_DEADLINE_EXCEEDED, now, p.backend_actor);
}

Items OnProvisioned(JobRecord& r, const absl::StatusOr<v1::ProvisionWorkloadResponse>& result, absl::Time now,
                    absl::Time retry_at, const DecisionPolicy& p) {
  if (!r.need_provision) return {};
  if (r.job.state() != v1::JOB_STATE_PROVISIONING) {
    r.need_provision = false;
    return {};
  }
  if (result.ok()) {
    r.need_provision = false;
    EffectDone(r);
    *r.job.mutable_workload()->mutable_provisioned_time() = TimestampOfTime(now);
    return {To(v1::JOB_STATE_RUNNING, p.backend_actor,
               absl::StrCat("slurmd ", result->node_name(), " registered; the local job was released"))};
  }
  if (WillRetry(r, result.status(), now, retry_at, p)) {
    return {Event("provision.retry", p.backend_actor, "ProvisionWorkload failed; retrying", result.status())};
  }
  r.need_provision = false;
  EffectDone(r);
  return Fail(
      r, v1::FAILURE_PHASE_PROVISIONING, "PROVISION_FAILED",
      absl::StrCat("vm-controller ProvisionWorkload: ", absl::StatusCodeToString(result.status().code()),
                   ": ", result.status().message()),
      static_cast<int>(result.status().code()), v1::JOB_END_REASON_PROVISION_FAILED, now, p.backend_actor);
}

Items OnStopWorkloadDone(JobRecord& r, const absl::Status& result, absl::Time now, absl::Time retry_at,
                         const DecisionPolicy& p) {
  if (!r.need_stop_workload) return {};
  if (!result.ok() && WillRetry(r, result, now, retry_at, p)) {
    return {
        Event("workload.stop_retry", p.backend_actor, "host-agent StopWorkload failed; retrying", result)};
  }
  r.need_stop_workload = false;
  EffectDone(r);
  const std::string node = r.job.workload().node();
  if (result.ok()) {
    return {Event("workload.stopping", p.backend_actor,
                  absl::StrCat("host-agent on ", node, " stopped the workload"))};
  }
  // The workload's end cannot be confirmed: end the global job so the node is freed either way.
  r.need_scancel = SlurmJobMayRun(r);
  return {Event(
      "workload.stopping", p.backend_actor,
      absl::StrCat("host-agent on ", node, " StopWorkload failed: ", absl::StatusCodeToString(result.code()),
                   ": ", result.message(), r.need_scancel ? "; the global job is scancelled instead" : ""),
      result)};
}

Items OnScancelDone(JobRecord& r, const absl::Status& result, absl::Time now, absl::Time retry_at,
                    const DecisionPolicy& p) {
  if (!r.need_scancel) return {};
  if (!result.ok() && WillRetry(r, result, now, retry_at, p)) {
    return {Event("global.scancel_retry", p.backend_actor, "scancel failed; retrying", result)};
  }
  r.need_scancel = false;
  EffectDone(r);
  return {Event("global.scancelled", p.backend_actor,
                result.ok() ? absl::StrCat("scancel ", r.job.ref().global_slurm_job_id())
                            : absl::StrCat("scancel ", r.job.ref().global_slurm_job_id(),
                                           " failed: ", result.message()),
                result)};
}

Items OnCancel(JobRecord& r, const std::string& reason, v1::JobEndReason end_reason, const std::string& actor,
               absl::Time now) {
  const v1::JobState s = r.job.state();
  if (IsTerminal(s) || s == v1::JOB_STATE_CANCELLING) return {};
  r.job.set_end_reason(end_reason);
  r.need_provision = false;
  r.need_scancel = SlurmJobMayRun(r);
  r.need_stop_workload = WorkloadMayExist(r);
  r.effect_attempts = 0;
  r.effect_after = absl::InfinitePast();
  r.effect_since = now;
  if (r.need_stop_workload && !r.job.workload().has_release_time()) {
    *r.job.mutable_workload()->mutable_release_time() = TimestampOfTime(now);
  }
  return {To(v1::JOB_STATE_CANCELLING, actor, reason, {{"end_reason", v1::JobEndReason_Name(end_reason)}})};
}

absl::StatusOr<Items> OnRelease(JobRecord& r, const v1::ReleaseWorkloadRequest& request,
                                const std::string& actor, absl::Time now) {
  const v1::JobState s = r.job.state();
  if (IsTerminal(s) || s == v1::JOB_STATE_RELEASING || s == v1::JOB_STATE_CANCELLING) return Items{};
  if (request.has_local_end()) *r.job.mutable_local_end() = request.local_end();
  const v1::JobEndReason end = EndReasonOfLocalEnd(request.local_end());
  const std::string reason = request.reason().empty() ? "the local job ended" : request.reason();
  if (s != v1::JOB_STATE_RUNNING) return OnCancel(r, reason, end, actor, now);
  r.job.set_end_reason(end);
  *r.job.mutable_workload()->mutable_release_time() = TimestampOfTime(now);
  r.need_stop_workload = true;
  r.effect_attempts = 0;
  r.effect_after = absl::InfinitePast();
  r.effect_since = now;
  return Items{To(v1::JOB_STATE_RELEASING, actor, reason, {{"end_reason", v1::JobEndReason_Name(end)}})};
}

Items OnWorkloadReady(JobRecord& r, const v1::WorkloadReadyRequest& request, const std::string& actor,
                      absl::Time now) {
  const v1::JobState s = r.job.state();
  v1::JobWorkload* w = r.job.mutable_workload();
  if (IsTerminal(s) || s == v1::JOB_STATE_CANCELLING) {
    if (w->node().empty()) w->set_node(request.node());
    if (r.need_stop_workload || w->state() == v1::WORKLOAD_STATE_STOPPED) return {};
    r.need_stop_workload = true;
    r.effect_since = now;
    return {Event("workload.ready_refused", actor,
                  absl::StrCat("WorkloadReady for a ", JobStateName(s), " job; the workload is stopped"))};
  }
  // SUBMITTING: not yet (BackendService answers UNAVAILABLE); later states: a repeat.
  if (s == v1::JOB_STATE_SUBMITTING || s == v1::JOB_STATE_PROVISIONING || s == v1::JOB_STATE_RUNNING ||
      s == v1::JOB_STATE_RELEASING) {
    return {};
  }
  w->set_node(request.node());
  w->set_state(v1::WORKLOAD_STATE_RUNNING);
  *w->mutable_addresses() = request.addresses();
  *w->mutable_identity() = request.identity();
  w->set_enrollment_ticket_sha256(request.enrollment_ticket_sha256());
  *w->mutable_ready_time() = request.has_ready_time() ? request.ready_time() : TimestampOfTime(now);
  if (!r.job.has_start_time()) *r.job.mutable_start_time() = TimestampOfTime(now);
  r.need_provision = true;
  r.effect_attempts = 0;
  r.effect_after = absl::InfinitePast();
  r.effect_since = now;
  Items items;
  // The poll may not have seen the global job start yet.
  if (s == v1::JOB_STATE_QUEUED) {
    items.push_back(To(v1::JOB_STATE_STARTING, actor, "the global job runs (reported by its host-agent)"));
  }
  items.push_back(To(v1::JOB_STATE_PROVISIONING, actor,
                     absl::StrCat("workload ready on ", request.node(), " at ",
                                  request.addresses_size() > 0 ? request.addresses(0) : "(no address)"),
                     {{"node", request.node()}}));
  return items;
}

Items OnWorkloadFailed(JobRecord& r, const v1::WorkloadFailedRequest& request, const std::string& actor,
                       absl::Time now) {
  v1::JobWorkload* w = r.job.mutable_workload();
  if (w->node().empty()) w->set_node(request.node());
  w->set_state(v1::WORKLOAD_STATE_FAILED);
  *w->mutable_failure() = request.failure();
  r.need_stop_workload = false;  // host-agent already tore it down
  const v1::FailureInfo& f = request.failure();
  if (IsTerminal(r.job.state())) return {Event("workload.failed", actor, f.message())};
  return Fail(r, f.phase(), f.reason(), absl::StrCat("workload failed: ", f.message()), f.status_code(),
              v1::JOB_END_REASON_WORKLOAD_FAILED, now, actor);
}

absl::StatusOr<Items> OnWorkloadStopped(JobRecord& r, const v1::WorkloadStoppedRequest& request,
                                        const std::string& actor, absl::Time now) {
  const v1::JobState s = r.job.state();
  if (s == v1::JOB_STATE_SUBMITTING || s == v1::JOB_STATE_QUEUED) {
    // No workload can exist before the global job runs; the report would complete a job that never ran.
    return CheckTransition(r.job.ref().global_job_id(), s, v1::JOB_STATE_COMPLETED);
  }
  v1::JobWorkload* w = r.job.mutable_workload();
  w->set_state(request.final_state());
  if (request.has_exit()) *w->mutable_exit() = request.exit();
  *w->mutable_scrub() = request.scrub();
  if (request.has_failure()) *w->mutable_failure() = request.failure();
  *w->mutable_stopped_time() = TimestampOfTime(now);
  r.need_stop_workload = false;
  Items items;
  if (!request.scrub().clean()) {
    items.push_back(Event("workload.scrub_incomplete", actor,
                          absl::StrCat("teardown left ", request.scrub().leftovers_size(), " item(s)"),
                          absl::DataLossError("scrub not clean")));
  } else {
    items.push_back(Event("workload.scrubbed", actor, "teardown complete"));
  }
  if (s == v1::JOB_STATE_RELEASING) {
    items.push_back(To(v1::JOB_STATE_COMPLETED, actor, "the workload was stopped and scrubbed"));
  } else if (s == v1::JOB_STATE_CANCELLING) {
    items.push_back(To(v1::JOB_STATE_CANCELLED, actor, "the workload was stopped and scrubbed"));
  } else if (!IsTerminal(s)) {
    Items failed = Fail(r, v1::FAILURE_PHASE_EXECUTION, "WORKLOAD_ENDED",
                        "the workload stopped before the local job was released", 0,
                        v1::JOB_END_REASON_WORKLOAD_FAILED, now, actor);
    items.insert(items.end(), failed.begin(), failed.end());
  }
  return items;
}

v1::JobEndReason EndReasonOfLocalEnd(const v1::LocalJobEnd& end) {
  switch (end.kind()) {
    case v1::LOCAL_JOB_END_KIND_COMPLETED:
      return v1::JOB_END_REASON_LOCAL_COMPLETED;
    case v1::LOCAL_JOB_END_KIND_TIMEOUT:
      return v1::JOB_END_REASON_LOCAL_TIMEOUT;
    case v1::LOCAL_JOB_END_KIND_CANCELLED_PENDING:
      return v1::JOB_END_REASON_LOCAL_CANCELLED_PENDING;
    case v1::LOCAL_JOB_END_KIND_CANCELLED_RUNNING:
      return v1::JOB_END_REASON_LOCAL_CANCELLED_RUNNING;
    case v1::LOCAL_JOB_END_KIND_NODE_FAIL:
      return v1::JOB_END_REASON_NODE_FAILED;
    default:
      return v1::JOB_END_REASON_LOCAL_FAILED;
  }
}

v1::StopReason StopReasonOf(const JobRecord& r) {
  switch (r.job.end_reason()) {
    case v1::JOB_END_REASON_READY_DEADLINE_EXCEEDED:
      return v1::STOP_REASON_READY_DEADLINE;
    case v1::JOB_END_REASON_PROVISION_FAILED:
      return v1::STOP_REASON_PROVISION_FAILED;
    case v1::JOB_END_REASON_GLOBAL_TIMEOUT:
      return v1::STOP_REASON_TIME_LIMIT;
    case v1::JOB_END_REASON_OPERATOR_CANCELLED:
      return v1::STOP_REASON_OPERATOR;
    default:
      break;
  }
  return r.job.state() == v1::JOB_STATE_RELEASING ? v1::STOP_REASON_JOB_ENDED : v1::STOP_REASON_JOB_CANCELLED;
}

}  // namespace strongroom::backend
