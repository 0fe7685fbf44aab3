#include "services/backend/reconciler.h"

#include <signal.h>

#include <algorithm>
#include <map>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/log.h"
#include "google/protobuf/util/message_differencer.h"
#include "services/backend/job_state.h"
#include "services/backend/proto_time.h"

namespace strongroom::backend {
namespace {

constexpr int kEffectThreads = 4;
constexpr size_t kSqueueChunk = 2000;  // job ids per squeue call (argv stays far below 128 KiB)
constexpr absl::Duration kStopWorkloadTimeout =
    absl::Seconds(330);  // host-agent's grace (<= 300 s) plus teardown
constexpr absl::Duration kMaxRetryDelay = absl::Seconds(60);
constexpr absl::Duration kMinJobAgeWarning = absl::Seconds(300);  // Slurm's default MinJobAge

DecisionPolicy PolicyOf(const BackendSettings& s) {
  DecisionPolicy p;
  p.backend_actor = s.identity;
  p.readiness_deadline = s.readiness_deadline;
  p.peer_retry_window = s.peer_retry_window;
  p.max_submit_attempts = s.max_submit_attempts;
  return p;
}

bool SameRecord(const JobRecord& a, const JobRecord& b) {
  return google::protobuf::util::MessageDifferencer::Equals(a.job, b.job) && a.slurm_state == b.slurm_state &&
         a.need_scancel == b.need_scancel && a.need_stop_workload == b.need_stop_workload &&
         a.need_provision == b.need_provision && a.effect_attempts == b.effect_attempts &&
         a.effect_after == b.effect_after && a.effect_since == b.effect_since;
}

void LogFailure(absl::string_view what, const std::string& id, const absl::Status& s) {
  Log(LogLevel::kWarn, what, {{"global_job_id", id}, {"error", s.ToString()}});
}

}  // namespace

Reconciler::Reconciler(const BackendSettings& settings, JobStore* store, SlurmClient* slurm, Peers* peers,
                       std::function<void()> timeline_written)
    : settings_(settings),
      store_(store),
      slurm_(slurm),
      peers_(peers),
      timeline_written_(std::move(timeline_written)),
      policy_(PolicyOf(settings)) {}

Reconciler::~Reconciler() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  wake_.notify_all();
  if (pass_thread_.joinable()) pass_thread_.join();
  submitter_.reset();
  effects_.reset();
}

void Reconciler::Start() {
  submitter_ = std::make_unique<KeyedWorkPool>(settings_.submit_concurrency,
                                               [this](const std::string& id) { Submit(id); });
  effects_ =
      std::make_unique<KeyedWorkPool>(kEffectThreads, [this](const std::string& id) { RunEffects(id); });
  pass_thread_ = std::thread([this] {
    CheckMinJobAge();
    PassLoop();
  });
}

void Reconciler::CheckMinJobAge() {
  absl::StatusOr<absl::Duration> age = slurm_->MinJobAge();
  if (!age.ok()) {
    Log(LogLevel::kWarn,
        "cannot read the Global Slurm's MinJobAge; it is read again when an orphan search needs it",
        {{"error", age.status().ToString()}});
    return;
  }
  const std::string window =
      *age == absl::InfiniteDuration() ? "unlimited (MinJobAge=0)" : absl::FormatDuration(*age);
  Log(*age < kMinJobAgeWarning ? LogLevel::kWarn : LogLevel::kInfo,
      "Global Slurm MinJobAge: a job whose sbatch outcome a crash left unknown is adopted if found within "
      "this "
      "window of its creation, and failed (SUBMIT_OUTCOME_UNKNOWN) rather than submitted again after it",
      {{"min_job_age", window}});
}

void Reconciler::SubmitSoon(const std::string& id) { submitter_->Add(id); }
void Reconciler::EffectsSoon(const std::string& id) { effects_->Add(id); }

void Reconciler::PollSoon() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    poll_now_ = true;
  }
  wake_.notify_one();
}

absl::Time Reconciler::RetryAt(int attempts) const {
  return absl::Now() + std::min(kMaxRetryDelay, absl::Seconds(1) * (1 << std::min(attempts, 6)));
}

void Reconciler::FaultPoint(const std::string& name) {
  if (settings_.fault_stop_at != name) return;
  // TESTS ONLY (BackendConfig.fault_stop_at): freeze here so the test can kill -9 the process at this point.
  Log(LogLevel::kWarn, "fault point reached; stopping", {{"fault_point", name}});
  raise(SIGSTOP);
}

absl::StatusOr<JobRecord> Reconciler::Update(const std::string& id, absl::string_view what,
                                             const JobStore::Decide& decide) {
  bool wrote_items = false;
  absl::StatusOr<JobRecord> r = store_->Update(id, what, [&](JobRecord& record) -> absl::StatusOr<Items> {
    absl::StatusOr<Items> items = decide(record);
    wrote_items = items.ok() && !items->empty();
    return items;
  });
  if (r.ok() && wrote_items) timeline_written_();
  if (!r.ok()) LogFailure(what, id, r.status());
  return r;
}

JobRecord Reconciler::UpdateIfChanged(const JobRecord& record, absl::string_view what,
                                      const JobStore::Decide& decide) {
  JobRecord copy = record;
  absl::StatusOr<Items> items = decide(copy);
  if (items.ok() && items->empty() && SameRecord(copy, record)) return record;
  absl::StatusOr<JobRecord> updated = Update(record.job.ref().global_job_id(), what, decide);
  return updated.ok() ? *std::move(updated) : record;
}

void Reconciler::PassLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    lock.unlock();
    Pass();
    lock.lock();
    wake_.wait_for(lock, absl::ToChronoMilliseconds(settings_.poll_interval),
                   [&] { return stop_ || poll_now_; });
    poll_now_ = false;
  }
}

void Reconciler::Pass() {
  absl::StatusOr<std::vector<JobRecord>> active = store_->Active();
  if (!active.ok()) {
    Log(LogLevel::kWarn, "reconciler: cannot load active jobs", {{"error", active.status().ToString()}});
    return;
  }
  std::vector<uint32_t> ids;
  for (const JobRecord& r : *active) {
    if (!IsTerminal(r.job.state()) && r.job.ref().global_slurm_job_id() != 0)
      ids.push_back(r.job.ref().global_slurm_job_id());
  }
  std::map<uint32_t, SqueueRow> rows;
  bool rows_known = true;
  for (size_t begin = 0; begin < ids.size() && rows_known; begin += kSqueueChunk) {
    std::vector<uint32_t> chunk(ids.begin() + begin,
                                ids.begin() + std::min(ids.size(), begin + kSqueueChunk));
    absl::StatusOr<std::vector<SqueueRow>> listed = slurm_->Jobs(chunk);
    if (!listed.ok()) {
      Log(LogLevel::kWarn, "reconciler: squeue failed; state not polled this round",
          {{"error", listed.status().ToString()}});
      rows_known = false;
      break;
    }
    for (SqueueRow& row : *listed) rows[row.job_id] = std::move(row);
  }
  const absl::Time now = absl::Now();
  for (const JobRecord& loaded : *active) {
    JobRecord r = loaded;
    const std::string id = r.job.ref().global_job_id();
    const uint32_t slurm_id = r.job.ref().global_slurm_job_id();
    if (slurm_id == 0 &&
        (r.job.state() == v1::JOB_STATE_SUBMITTING || r.job.state() == v1::JOB_STATE_CANCELLING)) {
      if (r.effect_after <= now) submitter_->Add(id);
      continue;
    }
    if (!IsTerminal(r.job.state()) && slurm_id != 0 && rows_known) {
      if (auto row = rows.find(slurm_id); row != rows.end()) {
        const SqueueRow observed = row->second;
        r = UpdateIfChanged(r, "poll the Global Slurm", [&](JobRecord& job) {
          return OnSlurmObserved(job, observed, absl::Now(), policy_);
        });
      } else {
        r = UpdateIfChanged(r, "poll the Global Slurm",
                            [&](JobRecord& job) { return OnSlurmForgot(job, absl::Now(), policy_); });
      }
    }
    if (r.job.state() == v1::JOB_STATE_STARTING) {
      r = UpdateIfChanged(r, "check the readiness deadline",
                          [&](JobRecord& job) { return OnReadinessCheck(job, absl::Now(), policy_); });
    }
    if (r.HasEffects() && r.effect_after <= now) effects_->Add(id);
  }
}

void Reconciler::Submit(const std::string& id) {
  absl::StatusOr<JobRecord> record = store_->GetById(id);
  if (!record.ok()) return LogFailure("submit: load", id, record.status());
  auto needs_submission = [](const JobRecord& r) {
    return r.job.ref().global_slurm_job_id() == 0 &&
           (r.job.state() == v1::JOB_STATE_SUBMITTING || r.job.state() == v1::JOB_STATE_CANCELLING);
  };
  if (!needs_submission(*record) || record->effect_after > absl::Now()) return;

  // Count the attempt before anything reaches Slurm: after a crash, a counted attempt means "look for an
  // orphan".
  uint32_t earlier_attempts = 0;
  bool proceed = false;
  record = Update(id, "count the sbatch attempt", [&](JobRecord& r) -> absl::StatusOr<Items> {
    proceed = needs_submission(r);
    if (!proceed) return Items{};
    earlier_attempts = r.job.submit_attempts();
    return OnSubmitAttempt(r);
  });
  if (!record.ok() || !proceed) return;

  if (earlier_attempts > 0) {
    absl::StatusOr<std::vector<SqueueRow>> found = slurm_->FindByName(id);
    if (!found.ok()) {
      (void)Update(id, "orphan search failed", [&](JobRecord& r) {
        return OnSubmitFailed(r, found.status(), absl::Now(), RetryAt(r.job.submit_attempts()), policy_);
      });
      return;
    }
    for (const SqueueRow& row : *found) {
      if (GlobalJobIdOfComment(row.comment) != id) continue;
      Log(LogLevel::kInfo, "adopting a global job submitted before a restart",
          {{"global_job_id", id}, {"global_slurm_job_id", absl::StrCat(row.job_id)}});
      (void)Update(id, "adopt the orphan",
                   [&](JobRecord& r) { return OnSubmitted(r, row.job_id, true, policy_); });
      EffectsSoon(id);
      PollSoon();
      return;
    }
    // None found. That proves no earlier attempt created a global job only while Slurm would still report one
    // that has ended since: MinJobAge after its end, which is after the job row was created.
    absl::StatusOr<absl::Duration> min_job_age = slurm_->MinJobAge();
    if (!min_job_age.ok()) {
      (void)Update(id, "read the Global Slurm's MinJobAge", [&](JobRecord& r) {
        return OnSubmitFailed(r, min_job_age.status(), absl::Now(), RetryAt(r.job.submit_attempts()),
                              policy_);
      });
      return;
    }
    if (!OrphanSearchIsConclusive(TimeOfTimestamp(record->job.created_time()), absl::Now(), *min_job_age,
                                  settings_.slurm_command_timeout)) {
      Log(LogLevel::kWarn,
          "an orphan of an earlier sbatch attempt may have been forgotten by the Global Slurm",
          {{"global_job_id", id}, {"min_job_age", absl::FormatDuration(*min_job_age)}});
      (void)Update(id, "orphan search inconclusive", [&](JobRecord& r) {
        return OnOrphanSearchInconclusive(r, *min_job_age, absl::Now(), policy_);
      });
      return;
    }
  }
  if (record->job.state() == v1::JOB_STATE_CANCELLING) {
    (void)Update(id, "cancel before submission", [&](JobRecord& r) { return OnNeverSubmitted(r, policy_); });
    return;
  }

  FaultPoint("submit.after_commit_before_sbatch");
  absl::StatusOr<v1::WorkloadSpec> spec = store_->GetSpec(id);
  if (!spec.ok()) return LogFailure("submit: load the workload spec", id, spec.status());
  SubmitSpec submit;
  submit.global_job_id = id;
  submit.workload_id = record->job.workload().workload_id();
  submit.local = record->job.ref().local();
  submit.project = record->job.ref().project();
  submit.exclusive = record->job.exclusive();
  // A VM's Global job asks for what the VM gets (the job's CPUs, its memory plus the guest's overhead), which
  // the stored spec holds; a container's for the job's own minimums on the whole node.
  submit.resources = submit.exclusive ? record->job.resources() : spec->resources();
  submit.partition = settings_.partition;
  submit.time_limit_margin = settings_.time_limit_margin;
  submit.job_script = settings_.job_script;
  submit.job_output = settings_.job_output;
  submit.workload_spec_base64 = absl::Base64Escape(spec->SerializeAsString());
  absl::StatusOr<uint32_t> slurm_id = slurm_->Submit(submit);
  if (!slurm_id.ok()) {
    (void)Update(id, "sbatch failed", [&](JobRecord& r) {
      return OnSubmitFailed(r, slurm_id.status(), absl::Now(), RetryAt(r.job.submit_attempts()), policy_);
    });
    return;
  }
  FaultPoint("submit.after_sbatch_before_record");
  absl::StatusOr<JobRecord> done = Update(id, "record the global job id", [&](JobRecord& r) {
    return OnSubmitted(r, *slurm_id, false, policy_);
  });
  if (done.ok() && done->HasEffects()) EffectsSoon(id);
}

void Reconciler::RunEffects(const std::string& id) {
  absl::StatusOr<JobRecord> r = store_->GetById(id);
  if (!r.ok() || !r->HasEffects() || r->effect_after > absl::Now()) return;

  if (r->need_provision && r->job.state() == v1::JOB_STATE_PROVISIONING) {
    const v1::Job& job = r->job;
    v1::ProvisionWorkloadRequest request;
    request.set_global_job_id(id);
    request.set_workload_id(job.workload().workload_id());
    *request.mutable_local() = job.ref().local();
    *request.mutable_workload_addresses() = job.workload().addresses();
    *request.mutable_workload_identity() = job.workload().identity();
    request.set_enrollment_ticket_sha256(job.workload().enrollment_ticket_sha256());
    request.set_node_name(job.workload().local_node_name());
    const absl::Duration registration =
        std::max(absl::Seconds(1), settings_.provision_timeout - absl::Seconds(30));
    request.mutable_registration_timeout()->set_seconds(absl::ToInt64Seconds(registration));
    absl::StatusOr<v1::ProvisionWorkloadResponse> result =
        peers_->Provision(job.ref().local().local_cluster(), request, settings_.provision_timeout);
    r = Update(id, "hand the workload to vm-controller", [&](JobRecord& j) {
      return OnProvisioned(j, result, absl::Now(), RetryAt(j.effect_attempts), policy_);
    });
    if (!r.ok()) return;
  }
  if (r->need_scancel && r->job.ref().global_slurm_job_id() != 0 && r->effect_after <= absl::Now()) {
    const absl::Status cancelled = slurm_->Cancel(r->job.ref().global_slurm_job_id());
    r = Update(id, "scancel the global job", [&](JobRecord& j) {
      return OnScancelDone(j, cancelled, absl::Now(), RetryAt(j.effect_attempts), policy_);
    });
    if (!r.ok()) return;
    PollSoon();
  }
  if (r->need_stop_workload && r->effect_after <= absl::Now()) {
    v1::StopWorkloadRequest request;
    request.set_workload_id(r->job.workload().workload_id());
    request.set_reason(StopReasonOf(*r));
    request.set_message(absl::StrCat("backend: job ", id, " is ", JobStateName(r->job.state())));
    const absl::Status stopped =
        peers_->StopWorkload(r->job.workload().node(), request, kStopWorkloadTimeout);
    r = Update(id, "stop the workload", [&](JobRecord& j) {
      return OnStopWorkloadDone(j, stopped, absl::Now(), RetryAt(j.effect_attempts), policy_);
    });
    if (!r.ok()) return;
  }
  // A stop that failed may have asked for a scancel: run it now rather than on the next pass.
  if (r->need_scancel && r->job.ref().global_slurm_job_id() != 0 && r->effect_after <= absl::Now())
    EffectsSoon(id);
}

}  // namespace strongroom::backend
