// The job RPCs. The audit and usage RPCs are in backend_service_audit.cc.
#include "services/backend/backend_service.h"

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/enrollment_ticket.h"
#include "common/status.h"
#include "services/backend/ids.h"
#include "services/backend/job_decisions.h"
#include "services/backend/job_policy.h"
#include "services/backend/job_state.h"
#include "services/backend/migrations.h"
#include "services/backend/page_token.h"
#include "services/backend/proto_time.h"
#include "services/backend/validation.h"

namespace strongroom::backend {
namespace {

bool SeesEverything(const Identity& caller) { return caller.role != Role::kVmController; }

absl::Status CheckReporter(const Identity& caller, const std::string& node) {
  if (!IsValidInstanceName(node)) return InvalidField("node", node, "must match ^[a-z0-9][a-z0-9.-]{0,62}$");
  if (caller.role == Role::kHostAgent && caller.instance != node) {
    return absl::PermissionDeniedError(
        absl::StrCat("host-agent ", caller.instance, " may not report for node ", node));
  }
  return absl::OkStatus();
}

absl::Status CheckReportIds(const std::string& workload_id, const std::string& global_job_id) {
  if (!IsId(workload_id))
    return InvalidField("workload_id", workload_id, "must match ^[a-z0-9][a-z0-9-]{0,62}$");
  if (!IsId(global_job_id))
    return InvalidField("global_job_id", global_job_id, "must match ^[a-z0-9][a-z0-9-]{0,62}$");
  return absl::OkStatus();
}

}  // namespace

BackendService::BackendService(BackendSettings settings) : settings_(std::move(settings)) {}

BackendService::~BackendService() {
  reconciler_.reset();
  if (audit_writer_ != nullptr) audit_writer_->Stop();
}

absl::StatusOr<std::unique_ptr<BackendService>> BackendService::Start(BackendSettings settings) {
  std::unique_ptr<BackendService> s(new BackendService(std::move(settings)));
  const BackendSettings& c = s->settings_;
  Database::Options options;
  options.conninfo = c.db_conninfo;
  options.pool_size = c.db_pool_size;
  options.statement_timeout_ms = c.db_statement_timeout_ms;
  SR_ASSIGN_OR_RETURN(s->db_, Database::Open(options, c.db_startup_timeout));
  SR_RETURN_IF_ERROR(ApplyMigrations(*s->db_, EmbeddedMigrations()));
  s->store_ = std::make_unique<JobStore>(s->db_.get());
  SR_RETURN_IF_ERROR(s->store_->CheckTransitionTable());
  AuditWriter::Options audit;
  audit.identity = c.identity;
  audit.max_batch = c.audit_max_batch;
  audit.max_queued = c.audit_max_queued;
  audit.local_wait = c.audit_rpc_record_wait;
  audit.stall_after = c.audit_stall_after;
  audit.spool_dir = c.audit_spool_dir;
  s->audit_writer_ = std::make_shared<AuditWriter>(s->db_.get(), audit);
  SR_RETURN_IF_ERROR(s->audit_writer_->Start());
  s->audit_reader_ = std::make_unique<AuditReader>(s->db_.get());
  s->slurm_ = std::make_unique<SlurmClient>(s->settings_);
  s->peers_ = std::make_unique<Peers>(s->settings_);
  AuditWriter* writer = s->audit_writer_.get();
  s->reconciler_ = std::make_unique<Reconciler>(s->settings_, s->store_.get(), s->slurm_.get(),
                                                s->peers_.get(), [writer] { writer->Kick(); });
  s->reconciler_->Start();
  return s;
}

absl::StatusOr<JobRecord> BackendService::Change(const std::string& id, absl::string_view what,
                                                 const JobStore::Decide& decide) {
  SR_ASSIGN_OR_RETURN(JobRecord r, store_->Update(id, what, decide));
  audit_writer_->Kick();
  if (r.HasEffects()) reconciler_->EffectsSoon(id);
  if (r.job.ref().global_slurm_job_id() == 0 && r.job.state() == v1::JOB_STATE_CANCELLING)
    reconciler_->SubmitSoon(id);
  return r;
}

absl::StatusOr<JobRecord> BackendService::VisibleJob(const Identity& caller,
                                                     const v1::JobSelector& selector) {
  SR_RETURN_IF_ERROR(ValidateSelector(selector, "job"));
  absl::StatusOr<JobRecord> r = store_->Get(selector);
  if (!r.ok()) return r.status();
  if (!SeesEverything(caller) && r->job.ref().local().local_cluster() != caller.instance) {
    // Same answer as for a job that does not exist: a vm-controller learns nothing about other clusters.
    return absl::NotFoundError(absl::StrCat("no job with ", DescribeSelector(selector)));
  }
  return r;
}

absl::StatusOr<JobRecord> BackendService::ReportedJob(const Identity& caller,
                                                      const std::string& global_job_id,
                                                      const std::string& workload_id,
                                                      const std::string& node) {
  SR_RETURN_IF_ERROR(CheckReportIds(workload_id, global_job_id));
  SR_RETURN_IF_ERROR(CheckReporter(caller, node));
  SR_ASSIGN_OR_RETURN(JobRecord r, store_->GetById(global_job_id));
  if (r.job.workload().workload_id() != workload_id) {
    return absl::FailedPreconditionError(absl::StrCat("workload ", workload_id, " does not belong to job ",
                                                      global_job_id, " (its workload is ",
                                                      r.job.workload().workload_id(), ")"));
  }
  // Where the Global Slurm runs the job, never where the reporter says: the node backend recorded from Slurm,
  // or, before it recorded one, Slurm asked now. A job Slurm has not placed belongs to no host-agent yet.
  std::string placed = r.job.workload().node();
  if (placed.empty()) {
    const uint32_t slurm_id = r.job.ref().global_slurm_job_id();
    if (slurm_id == 0 && r.job.state() == v1::JOB_STATE_SUBMITTING) {
      // Only after a crash between sbatch and recording its id: the restart adopts the global job (by its
      // comment) and learns its node; until then the report waits (the outbox retries UNAVAILABLE).
      return absl::UnavailableError(
          absl::StrCat("job ", global_job_id,
                       " is still being submitted (its Global Slurm id and node are not "
                       "recorded yet); retry"));
    }
    if (slurm_id == 0) {
      return absl::PermissionDeniedError(
          absl::StrCat("job ", global_job_id, " was never placed on a node by the Global Slurm; host-agent ",
                       caller.instance, " may not report for it"));
    }
    SR_ASSIGN_OR_RETURN(std::vector<SqueueRow> rows, slurm_->Jobs({slurm_id}));
    if (rows.empty() || rows.front().nodes.empty()) {
      return absl::PermissionDeniedError(
          absl::StrCat("job ", global_job_id, " is not placed on any node (Global Slurm job ", slurm_id,
                       " is ", rows.empty() ? "unknown to the Global Slurm" : rows.front().state,
                       "); host-agent ", caller.instance, " may not report for it"));
    }
    placed = rows.front().nodes;
  }
  if (placed != node) {
    return absl::PermissionDeniedError(
        absl::StrCat("job ", global_job_id, " runs on node ", placed, " (per the Global Slurm), not ", node));
  }
  return r;
}

absl::StatusOr<v1::CreateGlobalJobResponse> BackendService::CreateGlobalJob(
    const Identity& caller, const v1::CreateGlobalJobRequest& request) {
  SR_RETURN_IF_ERROR(ValidateCreateRequest(request));
  SR_RETURN_IF_ERROR(CheckCreatePolicy(request, settings_, caller));
  const ProjectPolicy& project = settings_.projects.at(request.project());
  const JobIds ids = NewJobIds();
  const absl::Time now = TimeOfMicros(MicrosOf(absl::Now()));
  NewJob n;
  n.request = request;
  auto vmc = settings_.vm_controllers.find(request.local().local_cluster());
  auto listener = settings_.vm_controller_enrollment.find(request.local().local_cluster());
  n.spec = BuildWorkloadSpec(request, project, ids, settings_.trust_domain,
                             vmc == settings_.vm_controllers.end() ? "" : vmc->second,
                             settings_.vm_memory_overhead_mb,
                             listener == settings_.vm_controller_enrollment.end() ? "" : listener->second);
  v1::Job& job = n.record.job;
  v1::JobRef* ref = job.mutable_ref();
  ref->set_global_job_id(ids.global_job_id);
  *ref->mutable_local() = request.local();
  *ref->mutable_user() = request.user();
  ref->set_project(request.project());
  *job.mutable_resources() = request.resources();
  job.set_exclusive(request.exclusive());
  job.set_state(v1::JOB_STATE_SUBMITTING);
  job.mutable_workload()->set_workload_id(ids.workload_id);
  job.mutable_workload()->set_kind(n.spec.kind());
  job.mutable_workload()->set_local_node_name(ids.local_node_name);
  *job.mutable_created_time() = TimestampOfTime(now);
  *job.mutable_updated_time() = TimestampOfTime(now);
  n.record.local_submit_time =
      request.has_local_submit_time() ? TimeOfMicros(MicrosOfTimestamp(request.local_submit_time())) : now;
  n.created.to = v1::JOB_STATE_SUBMITTING;
  n.created.actor = caller.SpiffeId();
  n.created.message = "recorded; submission to the Global Slurm follows";
  n.created.details = {
      {"local_job", absl::StrCat(request.local().local_cluster(), "/", request.local().local_job_id())},
      {"token", request.local().token()},
      {"project", request.project()},
      {"user", request.user().name()},
      {"workload_id", ids.workload_id}};
  SR_ASSIGN_OR_RETURN(JobStore::Created created, store_->Create(n));
  if (created.created) {
    audit_writer_->Kick();
    reconciler_->SubmitSoon(ids.global_job_id);
  }
  v1::CreateGlobalJobResponse response;
  *response.mutable_job() = std::move(created.record.job);
  response.set_created(created.created);
  return response;
}

absl::StatusOr<v1::GetJobResponse> BackendService::GetJob(const Identity& caller,
                                                          const v1::GetJobRequest& request) {
  SR_ASSIGN_OR_RETURN(JobRecord r, VisibleJob(caller, request.job()));
  v1::GetJobResponse response;
  *response.mutable_job() = std::move(r.job);
  return response;
}

absl::StatusOr<v1::ListJobsResponse> BackendService::ListJobs(const Identity& caller,
                                                              const v1::ListJobsRequest& request) {
  ListFilter filter;
  for (int s : request.states()) {
    if (!v1::JobState_IsValid(s)) return InvalidField("states", absl::StrCat(s), "is not a JobState");
    filter.states.push_back(static_cast<v1::JobState>(s));
  }
  if (!request.project().empty() && !IsName(request.project())) {
    return InvalidField("project", request.project(), "must match ^[a-z0-9][a-z0-9_-]{0,62}$");
  }
  if (!request.user().empty() && !IsUserName(request.user())) {
    return InvalidField("user", request.user(), "must match ^[a-z_][a-z0-9_.-]{0,31}$");
  }
  if (!request.local_cluster().empty() && !IsId(request.local_cluster())) {
    return InvalidField("local_cluster", request.local_cluster(), "must match ^[a-z0-9][a-z0-9-]{0,62}$");
  }
  SR_RETURN_IF_ERROR(ValidateTimeRange(request.created(), "created", false));
  filter.project = request.project();
  filter.user = request.user();
  filter.local_cluster = request.local_cluster();
  if (!SeesEverything(caller)) {
    if (!filter.local_cluster.empty() && filter.local_cluster != caller.instance)
      return v1::ListJobsResponse();
    filter.local_cluster = caller.instance;
  }
  if (request.created().has_start()) filter.created_from = TimeOfTimestamp(request.created().start());
  if (request.created().has_end()) filter.created_to = TimeOfTimestamp(request.created().end());

  v1::ListJobsRequest fingerprinted = request;
  fingerprinted.clear_page();
  const int limit = PageSize(request.page());
  std::optional<std::pair<int64_t, std::string>> after;
  if (!request.page().page_token().empty()) {
    SR_ASSIGN_OR_RETURN(std::vector<std::string> parts,
                        DecodePageToken(request.page().page_token(), fingerprinted, 2));
    int64_t created = 0;
    if (!absl::SimpleAtoi(parts[0], &created) || !IsId(parts[1]))
      return absl::InvalidArgumentError("page.page_token: malformed");
    after.emplace(created, parts[1]);
  }
  SR_ASSIGN_OR_RETURN(std::vector<JobRecord> jobs, store_->List(filter, after, limit + 1));
  v1::ListJobsResponse response;
  for (int i = 0; i < static_cast<int>(jobs.size()) && i < limit; ++i)
    *response.add_jobs() = std::move(jobs[i].job);
  if (static_cast<int>(jobs.size()) > limit) {
    const v1::Job& last = response.jobs(limit - 1);
    response.mutable_page()->set_next_page_token(EncodePageToken(
        fingerprinted, {absl::StrCat(MicrosOfTimestamp(last.created_time())), last.ref().global_job_id()}));
  }
  return response;
}

absl::StatusOr<v1::GetJobTimelineResponse> BackendService::GetJobTimeline(
    const Identity& caller, const v1::GetJobTimelineRequest& request) {
  SR_ASSIGN_OR_RETURN(JobRecord r, VisibleJob(caller, request.job()));
  SR_ASSIGN_OR_RETURN(std::vector<v1::TimelineEntry> entries, store_->Timeline(r.job.ref().global_job_id()));
  v1::GetJobTimelineResponse response;
  for (v1::TimelineEntry& e : entries) {
    if (e.to_state() == v1::JOB_STATE_RUNNING && !response.has_submit_to_running()) {
      const absl::Duration d = TimeOfTimestamp(e.time()) - r.local_submit_time;
      response.mutable_submit_to_running()->set_seconds(absl::ToInt64Seconds(d));
      response.mutable_submit_to_running()->set_nanos(
          static_cast<int32_t>(absl::ToInt64Nanoseconds(d - absl::Seconds(absl::ToInt64Seconds(d)))));
    }
    *e.mutable_actor() = AuditIdentityOf(e.actor().spiffe_id());
    *response.add_entries() = std::move(e);
  }
  *response.mutable_job() = std::move(r.job);
  return response;
}

absl::StatusOr<v1::CancelJobResponse> BackendService::CancelJob(const Identity& caller,
                                                                const v1::CancelJobRequest& request) {
  SR_RETURN_IF_ERROR(ValidateSelector(request.job(), "job"));
  SR_RETURN_IF_ERROR(CheckText("reason", request.reason(), kMessageText, /*required=*/true));
  v1::JobEndReason end = request.end_reason();
  if (end == v1::JOB_END_REASON_UNSPECIFIED) {
    end = caller.role == Role::kOperator ? v1::JOB_END_REASON_OPERATOR_CANCELLED
                                         : v1::JOB_END_REASON_LOCAL_CANCELLED_PENDING;
  } else if (end != v1::JOB_END_REASON_LOCAL_CANCELLED_PENDING &&
             end != v1::JOB_END_REASON_LOCAL_CANCELLED_RUNNING &&
             end != v1::JOB_END_REASON_OPERATOR_CANCELLED) {
    return InvalidField("end_reason", v1::JobEndReason_Name(end),
                        "is not LOCAL_CANCELLED_PENDING, LOCAL_CANCELLED_RUNNING or OPERATOR_CANCELLED");
  }
  SR_ASSIGN_OR_RETURN(JobRecord r, VisibleJob(caller, request.job()));
  const std::string actor = caller.SpiffeId();
  SR_ASSIGN_OR_RETURN(r, Change(r.job.ref().global_job_id(), "CancelJob", [&](JobRecord& job) {
                        return OnCancel(job, request.reason(), end, actor, absl::Now());
                      }));
  v1::CancelJobResponse response;
  *response.mutable_job() = std::move(r.job);
  return response;
}

absl::StatusOr<v1::ReleaseWorkloadResponse> BackendService::ReleaseWorkload(
    const Identity& caller, const v1::ReleaseWorkloadRequest& request) {
  if (!IsId(request.global_job_id())) {
    return InvalidField("global_job_id", request.global_job_id(), "must match ^[a-z0-9][a-z0-9-]{0,62}$");
  }
  SR_RETURN_IF_ERROR(CheckText("reason", request.reason(), kMessageText));
  SR_RETURN_IF_ERROR(CheckText("local_end.slurm_state", request.local_end().slurm_state(), 32));
  if (!v1::LocalJobEndKind_IsValid(request.local_end().kind())) {
    return InvalidField("local_end.kind", absl::StrCat(request.local_end().kind()),
                        "is not a LocalJobEndKind");
  }
  v1::JobSelector selector;
  selector.set_global_job_id(request.global_job_id());
  SR_ASSIGN_OR_RETURN(JobRecord r, VisibleJob(caller, selector));
  if (!request.workload_id().empty() && request.workload_id() != r.job.workload().workload_id()) {
    return absl::FailedPreconditionError(absl::StrCat("workload ", request.workload_id(),
                                                      " does not belong to job ", request.global_job_id()));
  }
  const std::string actor = caller.SpiffeId();
  SR_ASSIGN_OR_RETURN(r, Change(request.global_job_id(), "ReleaseWorkload",
                                [&](JobRecord& job) { return OnRelease(job, request, actor, absl::Now()); }));
  v1::ReleaseWorkloadResponse response;
  *response.mutable_job() = std::move(r.job);
  return response;
}

absl::StatusOr<v1::WorkloadReadyResponse> BackendService::WorkloadReady(
    const Identity& caller, const v1::WorkloadReadyRequest& request) {
  if (request.addresses_size() < 1 || request.addresses_size() > 4) {
    return absl::InvalidArgumentError(
        absl::StrCat("addresses: ", request.addresses_size(), " given; 1 to 4 are required"));
  }
  for (int i = 0; i < request.addresses_size(); ++i) {
    absl::StatusOr<Ipv4Cidr> ip = ParseIpv4Cidr(request.addresses(i));
    if (!ip.ok() || request.addresses(i).find('/') != std::string::npos) {
      return InvalidField(absl::StrCat("addresses[", i, "]"), request.addresses(i), "is not an IPv4 address");
    }
  }
  if (request.identity().spiffe_id().empty())
    return absl::InvalidArgumentError("identity.spiffe_id: required");
  SR_RETURN_IF_ERROR(CheckText("identity.spiffe_id", request.identity().spiffe_id(), 512));
  if (!request.enrollment_ticket_sha256().empty() && !IsHex64(request.enrollment_ticket_sha256())) {
    return absl::InvalidArgumentError("enrollment_ticket_sha256: 64 lower-case hex characters or empty");
  }
  SR_ASSIGN_OR_RETURN(JobRecord r,
                      ReportedJob(caller, request.global_job_id(), request.workload_id(), request.node()));
  // The report's kind (UNSPECIFIED: not said) must be the one stored with the workload.
  if (request.kind() != v1::WORKLOAD_KIND_UNSPECIFIED && request.kind() != r.job.workload().kind()) {
    return InvalidField(
        "kind", v1::WorkloadKind_Name(request.kind()),
        absl::StrCat("does not match the workload's kind ", v1::WorkloadKind_Name(r.job.workload().kind())));
  }
  if (r.job.state() == v1::JOB_STATE_SUBMITTING) {
    // Only after a crash between sbatch and recording its id: the restart adopts the global job first (by its
    // comment); until then backend could not scancel it, so the report waits.
    return absl::UnavailableError(
        absl::StrCat("job ", request.global_job_id(),
                     " is still being submitted (its Global Slurm id is not recorded "
                     "yet); retry"));
  }
  const std::string actor = caller.SpiffeId();
  SR_ASSIGN_OR_RETURN(
      r, Change(request.global_job_id(), "WorkloadReady", [&](JobRecord& job) -> absl::StatusOr<Items> {
        return OnWorkloadReady(job, request, actor, absl::Now());
      }));
  if (IsTerminal(r.job.state()) || r.job.state() == v1::JOB_STATE_CANCELLING) {
    return absl::FailedPreconditionError(
        absl::StrCat("job ", request.global_job_id(), " is ", JobStateName(r.job.state()),
                     ": stop the workload (backend asks host-agent to as well)"));
  }
  v1::WorkloadReadyResponse response;
  response.set_job_state(r.job.state());
  return response;
}

absl::StatusOr<v1::WorkloadFailedResponse> BackendService::WorkloadFailed(
    const Identity& caller, const v1::WorkloadFailedRequest& request) {
  if (!request.has_failure()) return absl::InvalidArgumentError("failure: required");
  SR_RETURN_IF_ERROR(ValidateFailureInfo(request.failure(), "failure"));
  SR_RETURN_IF_ERROR(
      ReportedJob(caller, request.global_job_id(), request.workload_id(), request.node()).status());
  const std::string actor = caller.SpiffeId();
  SR_ASSIGN_OR_RETURN(JobRecord r, Change(request.global_job_id(), "WorkloadFailed", [&](JobRecord& job) {
                        return OnWorkloadFailed(job, request, actor, absl::Now());
                      }));
  v1::WorkloadFailedResponse response;
  response.set_job_state(r.job.state());
  return response;
}

absl::StatusOr<v1::WorkloadStoppedResponse> BackendService::WorkloadStopped(
    const Identity& caller, const v1::WorkloadStoppedRequest& request) {
  if (request.final_state() != v1::WORKLOAD_STATE_STOPPED &&
      request.final_state() != v1::WORKLOAD_STATE_FAILED) {
    return InvalidField("final_state", v1::WorkloadState_Name(request.final_state()),
                        "must be STOPPED or FAILED");
  }
  if (!request.has_scrub()) return absl::InvalidArgumentError("scrub: required");
  if (request.scrub().leftovers_size() > 64)
    return absl::InvalidArgumentError("scrub.leftovers: at most 64 entries");
  for (int i = 0; i < request.scrub().leftovers_size(); ++i) {
    SR_RETURN_IF_ERROR(
        CheckText(absl::StrCat("scrub.leftovers[", i, "]"), request.scrub().leftovers(i), kShortText));
  }
  if (request.has_failure()) SR_RETURN_IF_ERROR(ValidateFailureInfo(request.failure(), "failure"));
  SR_RETURN_IF_ERROR(
      ReportedJob(caller, request.global_job_id(), request.workload_id(), request.node()).status());
  const std::string actor = caller.SpiffeId();
  SR_ASSIGN_OR_RETURN(JobRecord r, Change(request.global_job_id(), "WorkloadStopped", [&](JobRecord& job) {
                        return OnWorkloadStopped(job, request, actor, absl::Now());
                      }));
  v1::WorkloadStoppedResponse response;
  response.set_job_state(r.job.state());
  return response;
}

}  // namespace strongroom::backend
