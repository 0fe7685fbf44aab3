#include "services/vm_controller/controller.h"

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "common/field_rules.h"
#include "common/log.h"
#include "common/status.h"
#include "google/protobuf/util/time_util.h"
#include "services/vm_controller/local_job_state.h"
#include "services/vm_controller/job_conversion.h"

namespace strongroom::vm_controller {
namespace {

using google::protobuf::util::TimeUtil;
using S = v1::LocalJobState;

google::protobuf::Timestamp Now() { return TimeUtil::NanosecondsToTimestamp(absl::ToUnixNanos(absl::Now())); }

absl::Time ToAbsl(const google::protobuf::Timestamp& t) {
  return absl::FromUnixNanos(TimeUtil::TimestampToNanoseconds(t));
}

// How a Local Slurm job state maps to how it ended; `ran` tells a cancel while running from one while pending.
v1::LocalJobEnd EndFromSlurm(const SlurmJob& job, bool ran) {
  v1::LocalJobEnd end;
  end.set_slurm_state(job.state);
  end.mutable_exit()->set_exit_code(job.exit_code);
  *end.mutable_end_time() = Now();
  if (job.state == "COMPLETED") {
    end.set_kind(job.exit_code == 0 ? v1::LOCAL_JOB_END_KIND_COMPLETED : v1::LOCAL_JOB_END_KIND_FAILED);
  } else if (job.state == "CANCELLED") {
    end.set_kind(ran ? v1::LOCAL_JOB_END_KIND_CANCELLED_RUNNING : v1::LOCAL_JOB_END_KIND_CANCELLED_PENDING);
  } else if (job.state == "TIMEOUT") {
    end.set_kind(v1::LOCAL_JOB_END_KIND_TIMEOUT);
  } else if (job.state == "NODE_FAIL") {
    end.set_kind(v1::LOCAL_JOB_END_KIND_NODE_FAIL);
  } else {
    end.set_kind(v1::LOCAL_JOB_END_KIND_FAILED);
  }
  return end;
}

bool IsCancel(v1::LocalJobEndKind kind) {
  return kind == v1::LOCAL_JOB_END_KIND_CANCELLED_PENDING || kind == v1::LOCAL_JOB_END_KIND_CANCELLED_RUNNING;
}

void LogJob(LogLevel level, absl::string_view message, const v1::LocalJob& job, absl::string_view detail = "") {
  Log(level, message,
      {{"token", job.local().token()},
       {"local_job_id", absl::StrCat(job.local().local_job_id())},
       {"state", v1::LocalJobState_Name(job.state())},
       {"detail", detail}});
}

}  // namespace

std::string CommentTag(const std::string& token) { return absl::StrCat("strongroom:", token); }

Controller::Controller(ControllerOptions options, LocalJobStore* store, LocalSlurm* slurm, GlobalJobs* backend)
    : options_(std::move(options)), store_(store), slurm_(slurm), backend_(backend) {}

Controller::~Controller() {
  stop_ = true;
  {
    absl::MutexLock lock(&wake_mu_);
    wake_ = true;
  }
  if (worker_.joinable()) worker_.join();
}

void Controller::StartWorker() {
  worker_ = std::thread([this] {
    while (!stop_) {
      {
        absl::MutexLock lock(&wake_mu_);
        wake_mu_.AwaitWithTimeout(absl::Condition(&wake_), options_.poll_interval);
        wake_ = false;
      }
      if (!stop_) Tick();
    }
  });
}

absl::StatusOr<std::pair<v1::LocalJob, bool>> Controller::Convert(const v1::ConvertLocalJobRequest& request) {
  SR_RETURN_IF_ERROR(ValidateConvertRequest(request, options_.cluster));
  v1::LocalJob job;
  *job.mutable_local() = request.local();
  job.mutable_local()->set_local_job_id(0);  // resolved by token; the hook cannot know it
  *job.mutable_user() = request.user();
  job.set_project(request.project());
  *job.mutable_resources() = request.resources();
  job.set_exclusive(request.exclusive());
  job.set_script_path(request.script_path());
  job.set_work_dir(request.work_dir());
  job.set_state(v1::LOCAL_JOB_STATE_RECEIVED);
  *job.mutable_submit_time() = request.has_submit_time() ? request.submit_time() : Now();
  *job.mutable_updated_time() = Now();
  absl::StatusOr<std::pair<v1::LocalJob, bool>> stored = store_->Insert(job);
  if (stored.ok() && stored->second) {
    LogJob(LogLevel::kInfo, "local job received", stored->first);
    absl::MutexLock lock(&wake_mu_);
    wake_ = true;
  }
  return stored;
}

void Controller::Tick() {
  absl::MutexLock tick(&tick_mu_);
  absl::StatusOr<std::vector<v1::LocalJob>> jobs =
      store_->List({v1::LOCAL_JOB_STATE_RECEIVED, v1::LOCAL_JOB_STATE_HELD, v1::LOCAL_JOB_STATE_GLOBAL_REQUESTED,
                    v1::LOCAL_JOB_STATE_RUNNING, v1::LOCAL_JOB_STATE_ENDING},
                   100000);
  if (!jobs.ok()) {
    Log(LogLevel::kError, "cannot list local jobs", {{"error", jobs.status().ToString()}});
    return;
  }
  for (const v1::LocalJob& job : *jobs) {
    switch (job.state()) {
      case v1::LOCAL_JOB_STATE_RECEIVED: Resolve(job); break;
      case v1::LOCAL_JOB_STATE_HELD: RequestGlobalJob(job); break;
      case v1::LOCAL_JOB_STATE_ENDING: FinishEnding(job); break;
      default: Watch(job); break;
    }
  }
  if (absl::Now() - last_reconcile_ >= options_.node_reconcile) {
    last_reconcile_ = absl::Now();
    // One listing per round while the Local Slurm does not answer (each is bounded by listing_timeout).
    if (ReconcileNodes() && !stop_) RefuseUnannounced();
  }
}

void Controller::RefuseUnannounced() {
  absl::StatusOr<std::vector<LocalSlurm::QueuedJob>> waiting = slurm_->PendingJobsIn(options_.wait_partition);
  if (!waiting.ok()) return;
  for (const LocalSlurm::QueuedJob& queued : *waiting) {
    // The tag's token; a job vm-controller never heard of (the hook could not reach it) waits for nothing.
    absl::string_view tag = queued.comment;
    tag = tag.substr(0, tag.find(' '));
    if (!absl::ConsumePrefix(&tag, "strongroom:") || !IsToken(tag)) continue;
    if (store_->Get(std::string(tag)).ok()) continue;
    if (absl::Now() - queued.submitted < options_.resolve_deadline + absl::Seconds(30)) continue;
    const std::string comment =
        absl::StrCat(CommentTag(std::string(tag)), " refused by the enclave: NOT_ANNOUNCED: vm-controller never "
                     "accepted this job (its submit hook failed or was refused); please resubmit");
    absl::Status refused = slurm_->RefuseJob(queued.job_id, comment);
    Log(LogLevel::kWarn, "cancelled a waiting job vm-controller never received",
        {{"local_job_id", absl::StrCat(queued.job_id)}, {"token", std::string(tag)},
         {"detail", std::string(refused.message())}});
  }
}

bool Controller::ReconcileNodes() {
  absl::StatusOr<std::vector<SlurmNode>> nodes = slurm_->ListNodes();
  if (!nodes.ok()) {
    Log(LogLevel::kWarn, "cannot list the Local Slurm's nodes; will retry", {{"error", nodes.status().ToString()}});
    return false;
  }
  for (const SlurmNode& node : *nodes) {
    std::vector<std::string> features = absl::StrSplit(node.features, ',', absl::SkipEmpty());
    const bool ours = absl::StrContains(node.state, "DYNAMIC") ||
                      std::find(features.begin(), features.end(), "strongroom") != features.end();
    if (!ours) continue;
    // The node's token feature names its job; a live job keeps its node, an ENDING one is cleaned up by
    // FinishEnding. Anything else (the job ended, the node registered again after its deletion, a token no
    // job has) must not hold a node.
    bool live = false;
    for (const std::string& feature : features) {
      if (!IsToken(feature)) continue;
      absl::StatusOr<v1::LocalJob> job = store_->Get(feature);
      if (!job.ok()) continue;
      live = !IsTerminal(job->state()) && (job->node_name().empty() || job->node_name() == node.name);
    }
    if (live) continue;
    absl::Status deleted = slurm_->DeleteNode(node.name);
    Log(deleted.ok() ? LogLevel::kWarn : LogLevel::kInfo,
        deleted.ok() ? "dynamic node without a live workload drained and deleted"
                     : "dynamic node without a live workload drained; will delete it once idle",
        {{"node", node.name}, {"state", node.state}, {"detail", std::string(deleted.message())}});
  }
  return true;
}

void Controller::Resolve(const v1::LocalJob& job) {
  absl::StatusOr<std::optional<uint32_t>> id = slurm_->FindJobByComment(CommentTag(job.local().token()));
  if (!id.ok()) return LogJob(LogLevel::kWarn, "cannot query the Local Slurm; will retry", job, id.status().message());
  if (!id->has_value()) {
    if (absl::Now() - ToAbsl(job.submit_time()) > options_.resolve_deadline) {
      End(job, v1::LocalJobEnd(), "the job never appeared in the Local Slurm queue");
    }
    return;
  }
  const uint32_t job_id = **id;
  absl::StatusOr<SlurmJob> slurm_job = slurm_->ShowJob(job_id);
  if (!slurm_job.ok()) return LogJob(LogLevel::kWarn, "cannot read the local job", job, slurm_job.status().message());
  v1::LocalJob with_id = job;
  with_id.mutable_local()->set_local_job_id(job_id);
  if (slurm_job->IsTerminal()) return End(with_id, EndFromSlurm(*slurm_job, false), "the job ended before it ran");
  // The Local Slurm's record wins over what the hook sent; a different submitter is an attack or a bug.
  if (slurm_job->uid != job.user().uid()) {
    return Refuse(with_id, job_id, "USER_MISMATCH",
                  absl::PermissionDeniedError(absl::StrCat("the submit hook said uid ", job.user().uid(),
                                                           ", the Local Slurm says ", slurm_job->uid)));
  }
  // job_submit.lua put the job into the wait partition, which has no nodes; one found anywhere else was moved
  // by someone other than vm-controller and could start on any node.
  if (slurm_job->partition != options_.wait_partition) {
    return Refuse(with_id, job_id, "NOT_PINNED",
                  absl::FailedPreconditionError(absl::StrCat("the job is in partition \"", slurm_job->partition,
                                                             "\", not the enclave's wait partition; resubmit it")));
  }
  const v1::Resources resources = ResourcesFromSlurm(*slurm_job);
  if (absl::Status valid = ValidateResources(resources); !valid.ok()) {
    return Refuse(with_id, job_id, "INVALID_RESOURCES", valid);
  }
  absl::StatusOr<v1::LocalJob> held = store_->Update(
      job.local().token(), v1::LOCAL_JOB_STATE_HELD,
      [&](v1::LocalJob* j) {
        j->mutable_local()->set_local_job_id(job_id);
        if (j->project().empty()) j->set_project(slurm_job->account);
        *j->mutable_resources() = resources;
        j->set_exclusive(slurm_job->exclusive);
      },
      "held on the Local Slurm", {v1::LOCAL_JOB_STATE_RECEIVED});
  if (held.ok()) {
    LogJob(LogLevel::kInfo, "local job held", *held);
    RequestGlobalJob(*held);
  }
}

void Controller::RequestGlobalJob(const v1::LocalJob& job) {
  // No Global node is taken before the local job could run: the user's --hold, --begin and --dependency are
  // waited out here, in the wait partition.
  const uint32_t job_id = job.local().local_job_id();
  absl::StatusOr<SlurmJob> slurm_job = slurm_->ShowJob(job_id);
  if (absl::IsNotFound(slurm_job.status())) {
    v1::LocalJobEnd end;
    end.set_kind(v1::LOCAL_JOB_END_KIND_CANCELLED_PENDING);
    return End(job, end, "the job vanished from the Local Slurm");
  }
  if (!slurm_job.ok()) return LogJob(LogLevel::kWarn, "cannot read the local job", job, slurm_job.status().message());
  if (slurm_job->IsTerminal()) return End(job, EndFromSlurm(*slurm_job, false), "the job ended before it ran");
  switch (EligibilityOf(*slurm_job, absl::Now())) {
    case Eligibility::kEligible: break;
    case Eligibility::kHeld:
    case Eligibility::kNotYet: return;
    case Eligibility::kNeverSatisfied:
      return Refuse(job, job_id, "DEPENDENCY_NEVER_SATISFIED",
                    absl::FailedPreconditionError(absl::StrCat("its dependency ", slurm_job->dependency,
                                                               " can never be satisfied")));
  }
  v1::CreateGlobalJobRequest request;
  *request.mutable_local() = job.local();
  *request.mutable_user() = job.user();
  request.set_project(job.project());
  *request.mutable_resources() = job.resources();
  request.set_exclusive(job.exclusive());
  request.set_workload_kind(WorkloadKindOf(job.exclusive()));
  for (const std::string& address : options_.slurmctld_addresses) request.add_slurmctld_addresses(address);
  *request.mutable_local_submit_time() = job.submit_time();
  request.set_local_munge_socket(options_.munge_socket);
  absl::StatusOr<v1::CreateGlobalJobResponse> created = backend_->CreateGlobalJob(request);
  if (!created.ok()) {
    if (absl::IsUnavailable(created.status()) || absl::IsDeadlineExceeded(created.status())) {
      return LogJob(LogLevel::kWarn, "backend unreachable; will retry CreateGlobalJob", job,
                    created.status().message());
    }
    return Refuse(job, job_id, "GLOBAL_JOB_REFUSED", created.status());
  }
  absl::StatusOr<v1::LocalJob> requested = store_->Update(
      job.local().token(), v1::LOCAL_JOB_STATE_GLOBAL_REQUESTED,
      [&](v1::LocalJob* j) {
        j->set_global_job_id(created->job().ref().global_job_id());
        j->set_workload_id(created->job().workload().workload_id());
      },
      "global job created", {v1::LOCAL_JOB_STATE_HELD});
  if (requested.ok()) LogJob(LogLevel::kInfo, "global job requested", *requested, requested->global_job_id());
}

void Controller::Watch(const v1::LocalJob& job) {
  absl::StatusOr<SlurmJob> slurm_job = slurm_->ShowJob(job.local().local_job_id());
  const bool ran = job.state() == v1::LOCAL_JOB_STATE_RUNNING;
  if (absl::IsNotFound(slurm_job.status())) {
    v1::LocalJobEnd end;
    end.set_kind(ran ? v1::LOCAL_JOB_END_KIND_FAILED : v1::LOCAL_JOB_END_KIND_CANCELLED_PENDING);
    return End(job, end, "the job vanished from the Local Slurm");
  }
  if (!slurm_job.ok()) return;
  if (!slurm_job->IsTerminal()) return FollowGlobalJob(job);
  // A running job's end normally arrives from the epilog; this catches a lost epilog and pending cancels.
  End(job, EndFromSlurm(*slurm_job, ran), absl::StrCat("the Local Slurm reports ", slurm_job->state));
}

// How long an ending job's node waits for backend to report its workload stopped before it is deleted anyway.
constexpr absl::Duration kWorkloadStopWait = absl::Seconds(60);

// How often a provisioning wait asks backend whether the global job has ended meanwhile.
constexpr absl::Duration kProvisioningGlobalCheck = absl::Seconds(1);

// How long a job on its node may outlive its global job before vm-controller takes the node DOWN itself.
constexpr absl::Duration kReleasedJobGrace = absl::Seconds(60);

void Controller::FollowGlobalJob(const v1::LocalJob& job) {
  if (job.global_job_id().empty()) return;
  v1::GetJobRequest request;
  request.mutable_job()->set_global_job_id(job.global_job_id());
  absl::StatusOr<v1::GetJobResponse> global = backend_->GetJob(request);
  if (!global.ok()) return;  // backend unreachable: ask again next tick
  const v1::JobState state = global->job().state();
  if (state != v1::JOB_STATE_FAILED && state != v1::JOB_STATE_CANCELLED && state != v1::JOB_STATE_COMPLETED) return;
  // The global side ended (workload failed, node lost, cancelled by an operator) while the local job still waits
  // or runs: nothing will ever run it. A held job is cancelled now. A job already on its dynamic node is
  // cancelled by the workload itself as it stops (deploy/image/entrypoint), while its slurmd still runs, and then
  // ends through the epilog: slurmctld 22.05 crashed (segfault) when it had to kill a job on a dynamic node whose
  // slurmd was gone. Only if that has not happened a while after the global job ended is the node taken DOWN.
  const v1::FailureInfo& failure = global->job().failure();
  const std::string code = absl::StrCat("GLOBAL_JOB_", absl::StripPrefix(v1::JobState_Name(state), "JOB_STATE_"));
  const absl::Status why = absl::FailedPreconditionError(
      absl::StrCat("global job ", job.global_job_id(), " ended ", v1::JobState_Name(state),
                   failure.reason().empty() ? "" : ": " + failure.reason(),
                   failure.message().empty() ? "" : " (" + failure.message() + ")"));
  if (job.has_released_time()) {
    const google::protobuf::Timestamp& ended = global->job().end_time();
    const absl::Time ended_at = absl::FromUnixSeconds(ended.seconds()) + absl::Nanoseconds(ended.nanos());
    if (absl::Now() - ended_at < kReleasedJobGrace) return;
    return Fail(job, code, why);
  }
  Refuse(job, job.local().local_job_id(), code, why);
}

absl::StatusOr<v1::LocalJob> Controller::LocalJobEnded(const v1::LocalJobEndedRequest& request) {
  SR_RETURN_IF_ERROR(ValidateEndedRequest(request, options_.cluster));
  absl::StatusOr<v1::LocalJob> job = request.local().token().empty()
                                         ? store_->GetByJobId(request.local().local_job_id())
                                         : store_->Get(request.local().token());
  if (!job.ok()) return job.status();
  if (request.local().local_job_id() != 0 && job->local().local_job_id() != 0 &&
      request.local().local_job_id() != job->local().local_job_id()) {
    return absl::InvalidArgumentError(absl::StrCat("token ", job->local().token(), " belongs to job ",
                                                   job->local().local_job_id(), ", not ",
                                                   request.local().local_job_id()));
  }
  if (IsTerminal(job->state())) return job;
  // The epilog knows the exit status but not how the job ended (completed, cancelled, timeout); the Local Slurm's
  // record of the job does.
  v1::LocalJobEnd end = request.end();
  absl::StatusOr<SlurmJob> slurm_job = slurm_->ShowJob(job->local().local_job_id());
  if (slurm_job.ok() && !slurm_job->IsTerminal()) {
    // Still COMPLETING: how it ended (completed, cancelled, timeout) is not settled yet; the worker's polling
    // ends the job once the Local Slurm has decided.
    absl::MutexLock lock(&wake_mu_);
    wake_ = true;
    return job;
  }
  if (slurm_job.ok()) {
    v1::LocalJobEnd from_slurm = EndFromSlurm(*slurm_job, job->has_released_time());
    end.set_kind(from_slurm.kind());
    end.set_slurm_state(from_slurm.slurm_state());
  }
  End(*job, end, "reported by the epilog");
  return store_->Get(job->local().token());
}

void Controller::End(const v1::LocalJob& job, const v1::LocalJobEnd& end, const std::string& reason) {
  absl::StatusOr<v1::LocalJob> ending = store_->Update(
      job.local().token(), v1::LOCAL_JOB_STATE_ENDING,
      [&](v1::LocalJob* j) {
        if (j->local().local_job_id() == 0) j->mutable_local()->set_local_job_id(job.local().local_job_id());
        *j->mutable_end() = end;
      },
      reason,
      {v1::LOCAL_JOB_STATE_RECEIVED, v1::LOCAL_JOB_STATE_HELD, v1::LOCAL_JOB_STATE_GLOBAL_REQUESTED,
       v1::LOCAL_JOB_STATE_PROVISIONING, v1::LOCAL_JOB_STATE_RUNNING});
  if (!ending.ok()) return;  // already ending or ended: the first report wins
  LogJob(LogLevel::kInfo, "local job ended", *ending, reason);
  FinishEnding(*ending);
}

void Controller::FinishEnding(const v1::LocalJob& job) {
  // The workload can never enroll again, and nothing of it stays in the enrollment authority.
  if (options_.enrollment != nullptr && !job.workload_id().empty())
    options_.enrollment->End(job.workload_id(), absl::Now());
  // Nothing of it stays on the controlling VM: its IPsec connection and its NFS grant go.
  if (options_.data_path != nullptr && !job.workload_id().empty()) {
    if (absl::Status s = options_.data_path->Close(job.workload_id()); !s.ok())
      return LogJob(LogLevel::kWarn, "the workload's tunnel or NFS grant is still on the VM; will retry", job,
                    s.message());
  }
  // The node goes DOWN first (nothing else can start on it) and is deleted only after backend has released the
  // workload, which stops its slurmd; one that registers again anyway is deleted by ReconcileNodes.
  if (!job.node_name().empty()) {
    if (absl::Status down = slurm_->DeleteNode(job.node_name(), /*down_only=*/true); !down.ok()) {
      return LogJob(LogLevel::kInfo, "dynamic node still busy; will retry", job, down.message());
    }
  }
  const bool provisioned = job.has_released_time();
  v1::LocalJob current = job;
  if (!job.global_job_id().empty() && !job.has_workload_released_time()) {
    absl::Status done;
    if (provisioned) {
      v1::ReleaseWorkloadRequest release;
      release.set_global_job_id(job.global_job_id());
      release.set_workload_id(job.workload_id());
      *release.mutable_local_end() = job.end();
      release.set_reason("the local job ended");
      done = backend_->ReleaseWorkload(release).status();
    } else {
      v1::CancelJobRequest cancel;
      cancel.mutable_job()->set_global_job_id(job.global_job_id());
      cancel.set_reason(absl::StrCat("the local job ended before it ran (", job.end().slurm_state(), ")"));
      cancel.set_end_reason(v1::JOB_END_REASON_LOCAL_CANCELLED_PENDING);
      done = backend_->CancelJob(cancel).status();
    }
    if (!done.ok() && !absl::IsNotFound(done) && !absl::IsFailedPrecondition(done)) {
      return LogJob(LogLevel::kWarn, "backend did not take the release; will retry", job, done.message());
    }
    absl::StatusOr<v1::LocalJob> released = store_->Update(
        job.local().token(), v1::LOCAL_JOB_STATE_ENDING,
        [&](v1::LocalJob* j) { *j->mutable_workload_released_time() = Now(); }, "workload released",
        {v1::LOCAL_JOB_STATE_ENDING});
    if (!released.ok()) return;
    current = *released;
  }
  if (!job.node_name().empty()) {
    // The workload's slurmd must be gone before its node is deleted, or it registers the node again: wait (a
    // bounded while) until backend reports the global job ended, which it does once the workload stopped.
    if (!current.global_job_id().empty()) {
      v1::GetJobRequest get;
      get.mutable_job()->set_global_job_id(current.global_job_id());
      absl::StatusOr<v1::GetJobResponse> global = backend_->GetJob(get);
      const bool ended = global.ok() && (global->job().state() == v1::JOB_STATE_COMPLETED ||
                                         global->job().state() == v1::JOB_STATE_FAILED ||
                                         global->job().state() == v1::JOB_STATE_CANCELLED);
      if (!ended && absl::Now() - ToAbsl(current.workload_released_time()) < kWorkloadStopWait) {
        return LogJob(LogLevel::kInfo, "waiting for the workload to stop before deleting its node", current);
      }
    }
    if (absl::Status deleted = slurm_->DeleteNode(job.node_name()); !deleted.ok()) {
      LogJob(LogLevel::kInfo, "dynamic node not deleted yet; node reconciliation will", job, deleted.message());
    }
  }
  // A job that ran is COMPLETED whatever its exit code (the exit is in `end`); one that never ran and was not
  // cancelled failed somewhere before it could.
  const S final_state = job.has_failure()            ? v1::LOCAL_JOB_STATE_FAILED
                        : IsCancel(job.end().kind()) ? v1::LOCAL_JOB_STATE_CANCELLED
                        : provisioned                ? v1::LOCAL_JOB_STATE_COMPLETED
                                                     : v1::LOCAL_JOB_STATE_FAILED;
  absl::StatusOr<v1::LocalJob> done =
      store_->Update(job.local().token(), final_state, nullptr, "cleaned up", {v1::LOCAL_JOB_STATE_ENDING});
  if (done.ok()) LogJob(LogLevel::kInfo, "local job finished", *done);
}

void Controller::Fail(const v1::LocalJob& job, const std::string& reason_code, const absl::Status& why) {
  LogJob(LogLevel::kError, "local job failed", job, why.ToString());
  v1::LocalJobEnd end;
  end.set_kind(v1::LOCAL_JOB_END_KIND_FAILED);
  absl::StatusOr<v1::LocalJob> failed = store_->Update(
      job.local().token(), v1::LOCAL_JOB_STATE_ENDING,
      [&](v1::LocalJob* j) {
        if (j->local().local_job_id() == 0) j->mutable_local()->set_local_job_id(job.local().local_job_id());
        *j->mutable_end() = end;
        v1::FailureInfo* failure = j->mutable_failure();
        failure->set_phase(v1::FAILURE_PHASE_UNSPECIFIED);
        failure->set_reason(reason_code);
        failure->set_message(std::string(why.message()));
        failure->set_status_code(static_cast<int>(why.code()));
        *failure->mutable_time() = Now();
      },
      reason_code);
  if (failed.ok()) FinishEnding(*failed);
}

void Controller::Refuse(const v1::LocalJob& job, uint32_t job_id, const std::string& reason_code,
                        const absl::Status& why) {
  if (job_id != 0) {
    // What the user sees in `scontrol show job` (Comment, AdminComment) and `squeue -o %k`; bounded and without
    // control or bidi characters (common/field_rules.h).
    std::string reason = SanitizeText(absl::StrCat(reason_code, ": ", why.message()));
    if (reason.size() > 900) reason = reason.substr(0, 900) + "...";
    const std::string comment = absl::StrCat(CommentTag(job.local().token()), " refused by the enclave: ", reason);
    if (absl::Status refused = slurm_->RefuseJob(job_id, comment); !refused.ok()) {
      LogJob(LogLevel::kWarn, "cannot cancel the refused local job", job, refused.message());
    }
  }
  v1::LocalJob with_id = job;
  if (with_id.local().local_job_id() == 0) with_id.mutable_local()->set_local_job_id(job_id);
  Fail(with_id, reason_code, why);
}

absl::StatusOr<v1::ProvisionWorkloadResponse> Controller::Provision(const v1::ProvisionWorkloadRequest& request,
                                                                    absl::Time deadline) {
  SR_RETURN_IF_ERROR(ValidateProvisionRequest(request, options_.cluster));
  SR_ASSIGN_OR_RETURN(v1::LocalJob job, store_->Get(request.local().token()));
  if (job.workload_id() != request.workload_id() || job.global_job_id() != request.global_job_id()) {
    return absl::FailedPreconditionError(absl::StrCat("local job ", job.local().token(), " belongs to global job ",
                                                      job.global_job_id(), " / workload ", job.workload_id()));
  }
  if (options_.enrollment != nullptr) {
    if (request.workload_addresses_size() == 0)
      return absl::InvalidArgumentError("workload_addresses: required for enrollment");
    // Only a workload handed over here can enroll (docs/IPSEC.md), bound to its netd address and time limit.
    absl::Duration limit = options_.enrollment_default_limit;
    if (job.resources().has_time_limit() && job.resources().time_limit().seconds() > 0)
      limit = absl::Seconds(job.resources().time_limit().seconds());
    SR_RETURN_IF_ERROR(options_.enrollment->Expect(
        HandedOverWorkload{request.workload_id(), request.global_job_id(), job.project(),
                           request.workload_addresses(0), absl::Now() + limit,
                           request.enrollment_ticket_sha256()},
        absl::Now()));
    if (options_.data_path != nullptr)
      SR_RETURN_IF_ERROR(options_.data_path->Open(request.workload_id(), request.global_job_id(),
                                                  request.workload_addresses(0)));
  }
  v1::ProvisionWorkloadResponse response;
  if (job.state() == v1::LOCAL_JOB_STATE_RUNNING && job.node_name() == request.node_name()) {
    response.set_node_name(job.node_name());
    *response.mutable_released_time() = job.released_time();
    response.set_local_job_state(job.state());
    return response;  // an idempotent repeat
  }
  SR_ASSIGN_OR_RETURN(job, store_->Update(
                               job.local().token(), v1::LOCAL_JOB_STATE_PROVISIONING,
                               [&](v1::LocalJob* j) { j->set_node_name(request.node_name()); }, "provision",
                               {v1::LOCAL_JOB_STATE_GLOBAL_REQUESTED, v1::LOCAL_JOB_STATE_PROVISIONING}));
  const absl::Time registration_deadline = std::min(deadline, absl::Now() + options_.register_deadline);
  absl::Time next_global_check = absl::Now() + kProvisioningGlobalCheck;
  while (true) {
    absl::StatusOr<std::optional<std::string>> state = slurm_->NodeState(request.node_name());
    if (state.ok() && state->has_value() && (*state)->find("FUTURE") == std::string::npos &&
        (*state)->find("DOWN") == std::string::npos) {
      break;
    }
    // A workload that fails before its slurmd registers (e.g. its tunnel cannot come up) ends its global job:
    // fail the local job now, with backend's reason, instead of at the registration deadline.
    if (absl::Now() >= next_global_check) {
      next_global_check = absl::Now() + kProvisioningGlobalCheck;
      FollowGlobalJob(job);
      absl::StatusOr<v1::LocalJob> now = store_->Get(job.local().token());
      if (now.ok() && IsTerminal(now->state())) {
        return absl::FailedPreconditionError(absl::StrCat("local job ", job.local().local_job_id(),
                                                          " ended while its workload was provisioned: ",
                                                          now->failure().message()));
      }
    }
    if (absl::Now() >= registration_deadline) {
      absl::Status late = absl::DeadlineExceededError(absl::StrCat(
          "node ", request.node_name(), " did not register with the Local slurmctld in time"));
      Refuse(job, job.local().local_job_id(), "SLURMD_REGISTRATION_TIMEOUT", late);
      return late;
    }
    absl::SleepFor(absl::Milliseconds(50));
  }
  *response.mutable_registered_time() = Now();
  if (absl::Status pinned = slurm_->PinAndRelease(job.local().local_job_id(), job.local().token(),
                                                   options_.run_partition); !pinned.ok()) {
    absl::StatusOr<SlurmJob> current = slurm_->ShowJob(job.local().local_job_id());
    if (current.ok() && current->IsTerminal()) {
      End(job, EndFromSlurm(*current, false), "the job ended while its workload was provisioned");
      return absl::FailedPreconditionError(absl::StrCat("local job ", job.local().local_job_id(), " is ",
                                                        current->state));
    }
    return Annotate(pinned, "pin and release");
  }
  SR_ASSIGN_OR_RETURN(job, store_->Update(
                               job.local().token(), v1::LOCAL_JOB_STATE_RUNNING,
                               [&](v1::LocalJob* j) { *j->mutable_released_time() = Now(); },
                               "released on its dynamic node", {v1::LOCAL_JOB_STATE_PROVISIONING}));
  LogJob(LogLevel::kInfo, "local job released", job, request.node_name());
  response.set_node_name(job.node_name());
  *response.mutable_released_time() = job.released_time();
  response.set_local_job_state(job.state());
  return response;
}

absl::StatusOr<v1::LocalJob> Controller::Get(const v1::LocalJobKey& key) {
  if (!key.local_cluster().empty() && key.local_cluster() != options_.cluster) {
    return absl::NotFoundError(absl::StrCat("this controller serves cluster ", options_.cluster));
  }
  if (!key.token().empty()) return store_->Get(key.token());
  if (key.local_job_id() != 0) return store_->GetByJobId(key.local_job_id());
  return absl::InvalidArgumentError("local: local_job_id or token is required");
}

absl::StatusOr<std::vector<v1::LocalJob>> Controller::List(const std::vector<v1::LocalJobState>& states, int limit) {
  return store_->List(states, limit);
}

}  // namespace strongroom::vm_controller
