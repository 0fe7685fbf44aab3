// The stop half of WorkloadManager's lifecycle: Stop, the order of Teardown's steps (each kind's through its
// driver), the per-workload monitor, workloads that end behind host-agent's back, and reconciliation after a
// restart.
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <filesystem>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/log.h"
#include "common/subprocess.h"
#include "google/protobuf/util/time_util.h"
#include "services/host_agent/data_path.h"
#include "services/host_agent/manager.h"
#include "services/host_agent/mounts.h"
#include "services/host_agent/state_machine.h"

namespace strongroom::host_agent {
namespace {

constexpr size_t kMaxLeftovers = 64;

google::protobuf::Timestamp Now() {
  return google::protobuf::util::TimeUtil::NanosecondsToTimestamp(absl::ToUnixNanos(absl::Now()));
}

bool Alive(pid_t pid, uint64_t start) { return pid > 0 && start != 0 && ProcessStartTime(pid) == start; }

int PidfdOpen(pid_t pid) { return static_cast<int>(syscall(SYS_pidfd_open, pid, 0)); }

v1::ExitStatus DecodeExit(int code) {
  v1::ExitStatus e;
  if (code > 128 && code <= 128 + 64) {
    e.set_exit_code(-1);
    e.set_signal(code - 128);
  } else {
    e.set_exit_code(code);
  }
  return e;
}

}  // namespace

void WorkloadManager::StartMonitor(const std::string& id, pid_t supervisor, pid_t init_pid,
                                   uint64_t init_start) {
  absl::MutexLock lock(&mu_);
  Live& live = live_[id];
  live.monitored = true;
  live.exited = false;
  monitors_.emplace_back(&WorkloadManager::Monitor, this, id, supervisor, init_pid, init_start);
}

// Waits for the container to end. A supervisor (our `runc run` child) gives the exit status; an adopted
// container (after a restart) is watched through a pidfd and its status is unknown.
void WorkloadManager::Monitor(std::string id, pid_t supervisor, pid_t init_pid, uint64_t init_start) {
  const pid_t watched = supervisor > 0 ? supervisor : init_pid;
  const int fd = PidfdOpen(watched);
  bool gone = fd < 0 && !(supervisor > 0) && !Alive(init_pid, init_start);
  while (!gone) {
    {
      absl::MutexLock lock(&mu_);
      if (shutting_down_) break;
    }
    if (fd >= 0) {
      pollfd p{fd, POLLIN, 0};
      gone = poll(&p, 1, 200) > 0;
    } else {
      absl::SleepFor(absl::Milliseconds(200));
      gone = !Alive(init_pid, init_start);
    }
  }
  if (fd >= 0) close(fd);
  if (!gone) return;  // shutting down: a restarted agent re-adopts it
  v1::ExitStatus exit;
  if (supervisor > 0) {
    exit = DecodeExit(WaitChild(supervisor));
  } else {
    exit.set_exit_code(-1);
  }
  bool self_exit = false;
  {
    absl::MutexLock lock(&mu_);
    Live& live = live_[id];
    live.exited = true;
    live.monitored = false;
    live.exit = exit;
    (void)UpdateLocked(
        id, [&](TrackedWorkload& tw) { *tw.record.mutable_exit() = exit; }, options_.agent_id);
    // Nobody is stopping it: the workload ended by itself, so this thread tears it down.
    if (!live.busy && live.tw.record.state() == v1::WORKLOAD_STATE_RUNNING && !shutting_down_) {
      live.busy = true;
      self_exit = true;
    }
  }
  if (self_exit) {
    Log(LogLevel::kInfo, "workload main process exited",
        {{"workload", id},
         {"exit_code", absl::StrCat(exit.exit_code())},
         {"signal", absl::StrCat(exit.signal())}});
    (void)FinishStop(id, options_.agent_id, absl::ZeroDuration(), /*self_exit=*/true);
  }
}

absl::StatusOr<v1::Workload> WorkloadManager::Stop(const std::string& id, v1::StopReason reason,
                                                   const std::string& message, absl::Duration grace,
                                                   const std::string& actor) {
  {
    absl::MutexLock lock(&mu_);
    auto it = live_.find(id);
    if (it == live_.end())
      return absl::NotFoundError(absl::StrCat("workload ", id, " is unknown on this node"));
    Live* live = &it->second;
    mu_.Await(absl::Condition(
        +[](Live* l) { return !l->busy; }, live));
    if (IsTerminal(live->tw.record.state())) return live->tw.record;
    live->busy = true;
    if (live->tw.record.state() != v1::WORKLOAD_STATE_STOPPING) {
      absl::Status s = UpdateLocked(
          id,
          [&](TrackedWorkload& tw) {
            tw.record.set_state(v1::WORKLOAD_STATE_STOPPING);
            tw.record.set_stop_reason(reason);
            tw.resources.stage = "stopping";
          },
          actor);
      if (!s.ok()) {
        live->busy = false;
        return s;
      }
    }
    if (!message.empty()) Log(LogLevel::kInfo, "stop requested", {{"workload", id}, {"message", message}});
  }
  MaybeCrash("stop.after_mark");
  return FinishStop(id, actor, grace, /*self_exit=*/false);
}

absl::StatusOr<v1::Workload> WorkloadManager::FinishStop(const std::string& id, const std::string& actor,
                                                         absl::Duration grace, bool self_exit) {
  if (self_exit) {
    (void)Update(
        id, [&](TrackedWorkload& tw) { tw.record.set_state(v1::WORKLOAD_STATE_STOPPING); }, actor);
  }
  v1::ScrubReport scrub = Teardown(id, grace);
  absl::MutexLock lock(&mu_);
  Live& live = live_[id];
  absl::Status s = UpdateLocked(
      id,
      [&](TrackedWorkload& tw) {
        v1::Workload& r = tw.record;
        *r.mutable_scrub() = scrub;
        r.set_pid(0);
        r.clear_netns();
        r.clear_network();
        tw.resources.stage = "ended";
        const bool failed_exit = self_exit && r.has_exit() && (r.exit().exit_code() != 0);
        if (!scrub.clean()) {
          r.set_state(v1::WORKLOAD_STATE_FAILED);
          r.mutable_failure()->set_phase(v1::FAILURE_PHASE_TEARDOWN);
          r.mutable_failure()->set_reason("TEARDOWN_INCOMPLETE");
          r.mutable_failure()->set_message(absl::StrJoin(scrub.leftovers(), "; ").substr(0, 1024));
          *r.mutable_failure()->mutable_time() = Now();
        } else if (self_exit && !live.external_failure.empty()) {
          // It stopped behind host-agent's back (a VM destroyed, crashed, qemu killed): that is the reason.
          r.set_state(v1::WORKLOAD_STATE_FAILED);
          r.mutable_failure()->set_phase(v1::FAILURE_PHASE_EXECUTION);
          r.mutable_failure()->set_reason(live.external_failure);
          r.mutable_failure()->set_message(live.external_message);
          *r.mutable_failure()->mutable_time() = Now();
        } else if (const std::optional<DataPathExit> dp = failed_exit && IsContainerDataPath(r.spec())
                                                              ? DataPathExitFailure(r.exit().exit_code())
                                                              : std::nullopt;
                   dp) {
          // The data-path entrypoint said which step failed (enrollment, tunnel, share).
          r.set_state(v1::WORKLOAD_STATE_FAILED);
          r.mutable_failure()->set_phase(v1::FAILURE_PHASE_EXECUTION);
          r.mutable_failure()->set_reason(dp->reason);
          r.mutable_failure()->set_message(dp->message);
          *r.mutable_failure()->mutable_time() = Now();
        } else if (failed_exit) {
          r.set_state(v1::WORKLOAD_STATE_FAILED);
          r.mutable_failure()->set_phase(v1::FAILURE_PHASE_EXECUTION);
          r.mutable_failure()->set_reason("MAIN_PROCESS_FAILED");
          r.mutable_failure()->set_message(absl::StrCat("the workload's main process exited with code ",
                                                        r.exit().exit_code(), " (signal ", r.exit().signal(),
                                                        ")"));
          *r.mutable_failure()->mutable_time() = Now();
        } else {
          r.set_state(v1::WORKLOAD_STATE_STOPPED);
        }
      },
      actor);
  live.busy = false;
  if (!s.ok()) return s;
  return live.tw.record;
}

v1::ScrubReport WorkloadManager::Teardown(const std::string& id, absl::Duration grace) {
  bool monitored = false;
  TeardownContext ctx;
  ctx.id = id;
  {
    absl::MutexLock lock(&mu_);
    ctx.workload = live_[id].tw;
    monitored = live_[id].monitored;
  }
  WorkloadDriver& driver = DriverFor(ctx.workload.record.spec());
  const TrackedResources& res = ctx.workload.resources;
  v1::ScrubReport report;
  std::vector<std::string> leftovers;
  StepTimings t;
  const absl::Time t0 = absl::Now();
  ctx.grace = grace;
  ctx.report = &report;
  ctx.leftovers = &leftovers;
  ctx.timings = &t;
  ctx.crash_point = [this](absl::string_view point) { MaybeCrash(point); };
  ctx.await_exit = [&](absl::Duration wait) {
    if (!monitored) {  // not our child (a crashed agent's): poll the process
      const absl::Time deadline = absl::Now() + wait;
      while (Alive(res.init_pid, res.init_start)) {
        if (absl::Now() >= deadline) return false;
        absl::SleepFor(absl::Milliseconds(5));
      }
      return true;
    }
    absl::MutexLock lock(&mu_);
    Live* live = &live_[id];
    return mu_.AwaitWithTimeout(absl::Condition(
                                    +[](Live* l) { return l->exited; }, live),
                                wait);
  };

  // 1. Processes and the runtime's object (a container, a domain).
  driver.StopExecution(ctx);

  // 2. The netd port (a veth or a tap).
  const absl::Time t1 = absl::Now();
  absl::Status released = network_->Release(id, res.netd_generation);
  if (!released.ok()) leftovers.push_back(std::string(released.message()));
  report.set_network_released(released.ok());
  t.network = absl::Now() - t1;
  MaybeCrash("stop.after_network");

  // 3. Mounts, scratch, disks, the netns and the workload dir.
  driver.RemoveStorage(ctx);

  if (leftovers.size() > kMaxLeftovers) leftovers.resize(kMaxLeftovers);
  for (std::string& l : leftovers) *report.add_leftovers() = l.substr(0, 256);
  report.set_clean(leftovers.empty() && report.processes_killed() && report.mounts_removed() &&
                   report.scratch_destroyed() && report.network_released() && report.runtime_deleted());
  *report.mutable_time() = Now();
  t.total = absl::Now() - t0;
  if (!report.clean()) {
    Log(LogLevel::kError, "teardown left something behind",
        {{"workload", id}, {"leftovers", absl::StrJoin(report.leftovers(), "; ")}});
  }
  absl::MutexLock lock(&mu_);
  stop_timings_ = t;
  return report;
}

absl::Status WorkloadManager::Reconcile() {
  std::vector<TrackedWorkload> pending;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [id, live] : live_) {
      if (!IsTerminal(live.tw.record.state())) pending.push_back(live.tw);
    }
  }
  const std::string& me = options_.agent_id;
  for (const TrackedWorkload& tw : pending) {
    const std::string id = tw.record.spec().workload_id();
    const v1::WorkloadState state = tw.record.state();
    std::string why;
    WorkloadDriver& driver = DriverFor(tw.record.spec());
    if (state == v1::WORKLOAD_STATE_RUNNING && options_.adopt_on_restart &&
        driver.HealthyForAdoption(tw, &why)) {
      (void)Update(
          id, [](TrackedWorkload& w) { w.record.set_adopted(true); }, me);
      // Without a main process on this host (a VM), the driver's stop events reach OnExternalStop instead.
      if (driver.has_main_process()) StartMonitor(id, 0, tw.resources.init_pid, tw.resources.init_start);
      Log(LogLevel::kInfo, "reconcile: re-adopted running workload", {{"workload", id}});
      audit_->Record({me, "host-agent.reconcile_adopt", "workload/" + id, "OK", "healthy after restart"});
      continue;
    }
    {
      absl::MutexLock lock(&mu_);
      live_[id].busy = true;
    }
    if (state == v1::WORKLOAD_STATE_STOPPING) {
      Log(LogLevel::kInfo, "reconcile: completing an interrupted stop",
          {{"workload", id}, {"stage", tw.resources.stage}});
      absl::StatusOr<v1::Workload> done = FinishStop(id, me, absl::ZeroDuration(), false);
      if (!done.ok()) return done.status();
      continue;
    }
    if (state == v1::WORKLOAD_STATE_STARTING && options_.start_retry_window > absl::ZeroDuration()) {
      // The global job's client retries its StartWorkload across our restart: undo the half-done start and
      // let that retry begin again from a clean slate (ExpireInterruptedStart fails it if none comes).
      v1::ScrubReport scrub = Teardown(id, absl::ZeroDuration());
      if (scrub.clean()) {
        absl::MutexLock lock(&mu_);
        absl::Status s = UpdateLocked(
            id,
            [&](TrackedWorkload& w) {
              TrackedResources fresh;
              fresh.workload_dir = w.resources.workload_dir;
              fresh.netns = w.resources.netns;
              fresh.crypt_name = w.resources.crypt_name;
              fresh.stage = kInterruptedStage;
              w.resources = fresh;
              w.record.set_pid(0);
              w.record.clear_netns();
              w.record.clear_network();
              w.record.set_scratch_size_bytes(0);
            },
            me);
        live_[id].busy = false;
        if (!s.ok()) return s;
        Log(LogLevel::kWarn,
            "reconcile: cleaned up a start this restart interrupted; waiting for it to be retried",
            {{"workload", id},
             {"stage", tw.resources.stage},
             {"window", absl::FormatDuration(options_.start_retry_window)}});
        audit_->Record({me, "host-agent.start_interrupted", "workload/" + id, "OK",
                        absl::StrCat("cleaned up after the restart (last step: ", tw.resources.stage,
                                     "); a retried StartWorkload resumes it")});
        monitors_.emplace_back([this, id] { ExpireInterruptedStart(id); });
        continue;
      }
      // Something could not be removed: starting again on top of it is not safe. Fail it (below).
    }
    const std::string reason = state == v1::WORKLOAD_STATE_STARTING ? "AGENT_RESTARTED_DURING_START"
                               : why.empty()                        ? "RECONCILE_POLICY_CLEANUP"
                                                                    : "UNHEALTHY_AFTER_RESTART";
    const std::string message =
        state == v1::WORKLOAD_STATE_STARTING
            ? absl::StrCat("host-agent restarted while starting it (last step: ", tw.resources.stage, ")")
        : why.empty() ? "reconcile_policy is cleanup"
                      : absl::StrCat("not healthy after a restart: ", why);
    Log(LogLevel::kWarn, "reconcile: cleaning up workload",
        {{"workload", id}, {"state", StateName(state)}, {"why", message}});
    v1::ScrubReport scrub = Teardown(id, absl::ZeroDuration());
    absl::MutexLock lock(&mu_);
    absl::Status s = UpdateLocked(
        id,
        [&](TrackedWorkload& w) {
          w.record.set_state(v1::WORKLOAD_STATE_FAILED);
          w.record.mutable_failure()->set_phase(v1::FAILURE_PHASE_RECONCILE);
          w.record.mutable_failure()->set_reason(reason);
          w.record.mutable_failure()->set_message(message);
          w.record.mutable_failure()->set_status_code(static_cast<int>(absl::StatusCode::kAborted));
          *w.record.mutable_failure()->mutable_time() = Now();
          *w.record.mutable_scrub() = scrub;
          w.record.set_pid(0);
          w.record.clear_netns();
          w.record.clear_network();
          w.resources.stage = "reconciled";
        },
        me);
    live_[id].busy = false;
    if (!s.ok()) return s;
  }
  SweepOrphans();
  return absl::OkStatus();
}

void WorkloadManager::ExpireInterruptedStart(std::string id) {
  absl::MutexLock lock(&mu_);
  Live* live = &live_[id];
  struct Args {
    Live* live;
    bool* shutting_down;
  } args{live, &shutting_down_};
  // Until the window ends, the agent stops, or a retry took the start over.
  mu_.AwaitWithTimeout(
      absl::Condition(
          +[](Args* a) { return *a->shutting_down || a->live->tw.resources.stage != kInterruptedStage; },
          &args),
      options_.start_retry_window);
  if (shutting_down_ || live->busy || live->tw.resources.stage != kInterruptedStage) return;
  const std::string message =
      absl::StrCat("host-agent restarted while starting it, and no StartWorkload retried it within ",
                   absl::FormatDuration(options_.start_retry_window));
  Log(LogLevel::kWarn, "interrupted start was not retried; failing it", {{"workload", id}});
  absl::Status s = UpdateLocked(
      id,
      [&](TrackedWorkload& w) {
        w.record.set_state(v1::WORKLOAD_STATE_FAILED);
        w.record.mutable_failure()->set_phase(v1::FAILURE_PHASE_RECONCILE);
        w.record.mutable_failure()->set_reason("AGENT_RESTARTED_DURING_START");
        w.record.mutable_failure()->set_message(message);
        w.record.mutable_failure()->set_status_code(static_cast<int>(absl::StatusCode::kAborted));
        *w.record.mutable_failure()->mutable_time() = Now();
        w.record.mutable_scrub()->set_clean(true);
        w.resources.stage = "reconciled";
      },
      options_.agent_id);
  if (!s.ok())
    Log(LogLevel::kError, "cannot record the failure", {{"workload", id}, {"error", s.ToString()}});
}

// Removes what this agent's state dir still holds without a live workload: each kind's leftovers (mounts,
// loop devices, runtime containers, domains), then the workload dirs. Only things under this agent's own
// state dir, runtime root or libvirt metadata are touched.
void WorkloadManager::SweepOrphans() {
  std::set<std::string> active;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [id, live] : live_) {
      if (!IsTerminal(live.tw.record.state())) active.insert(id);
    }
  }
  const std::string root = options_.state_dir + "/workloads";
  container_->SweepOrphans(root, active);
  vm_->SweepOrphans(root, active);
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(root, ec)) {
    if (active.count(entry.path().filename()) != 0) continue;
    Log(LogLevel::kWarn, "reconcile: removing orphaned workload directory", {{"dir", entry.path().string()}});
    if (MountsUnder(entry.path()).empty()) std::filesystem::remove_all(entry.path(), ec);
  }
}

void WorkloadManager::FailRunning(const std::string& id, const std::string& reason,
                                  const std::string& message) {
  absl::MutexLock lock(&mu_);
  auto it = live_.find(id);
  if (it == live_.end() || IsTerminal(it->second.tw.record.state())) return;
  // The monitor sees the main process end next and FinishStop records this reason (as for ExternalStop).
  it->second.external_failure = reason;
  it->second.external_message = message;
  Log(LogLevel::kWarn, "failing a running workload", {{"workload", id}, {"reason", reason}});
}

void WorkloadManager::OnExternalStop(const ExternalStop& stopped) {
  absl::MutexLock lock(&mu_);
  auto it = live_.find(stopped.workload_id);
  if (it == live_.end() || shutting_down_) return;
  Live& live = it->second;
  if (IsTerminal(live.tw.record.state())) return;
  // Only the workload's current instance counts (its runtime id is recorded before it is created).
  if (stopped.runtime_id.empty() || stopped.runtime_id != live.tw.record.runtime_id()) return;
  live.exited = true;
  live.external_failure = stopped.failed ? stopped.reason : "";
  live.external_message = stopped.message;
  v1::ExitStatus exit;
  exit.set_exit_code(stopped.failed ? -1 : 0);
  live.exit = exit;
  // Nobody is stopping it: it ended behind host-agent's back, and a thread of ours (not the driver's event
  // thread) tears it down. While a start or stop owns it, that call sees `exited` (CompleteStart) or caused
  // the stop.
  if (live.busy || live.tw.record.state() != v1::WORKLOAD_STATE_RUNNING) return;
  live.busy = true;
  const std::string id = stopped.workload_id;
  Log(LogLevel::kWarn, "workload stopped behind host-agent's back",
      {{"workload", id}, {"reason", stopped.reason}, {"message", stopped.message}});
  monitors_.emplace_back([this, id] { (void)FinishStop(id, options_.agent_id, absl::ZeroDuration(), true); });
}

}  // namespace strongroom::host_agent
