#include "services/backend/usage.h"

#include <algorithm>
#include <map>

#include "google/protobuf/util/time_util.h"

namespace strongroom::backend {
namespace {

google::protobuf::Timestamp ToProto(absl::Time t) {
  google::protobuf::Timestamp ts;
  const int64_t micros = absl::ToUnixMicros(t);
  ts.set_seconds(micros / 1000000 - (micros % 1000000 < 0 ? 1 : 0));
  ts.set_nanos(static_cast<int32_t>(((micros % 1000000) + 1000000) % 1000000 * 1000));
  return ts;
}

void Add(const RunRecord& run, double hours, bool ended_inside, v1::Usage* usage) {
  usage->set_jobs(usage->jobs() + 1);
  usage->set_node_hours(usage->node_hours() + hours * run.nodes);
  usage->set_core_hours(usage->core_hours() + hours * run.cpus);
  if (!ended_inside) return;
  if (run.state == v1::JOB_STATE_COMPLETED) usage->set_jobs_completed(usage->jobs_completed() + 1);
  if (run.state == v1::JOB_STATE_FAILED) usage->set_jobs_failed(usage->jobs_failed() + 1);
  if (run.state == v1::JOB_STATE_CANCELLED) usage->set_jobs_cancelled(usage->jobs_cancelled() + 1);
}

}  // namespace

v1::UsageReportResponse ComputeUsage(const std::string& project, absl::Time window_start,
                                     absl::Time window_end, absl::Time now,
                                     const std::vector<RunRecord>& runs) {
  v1::UsageReportResponse report;
  report.set_project(project);
  *report.mutable_window()->mutable_start() = ToProto(window_start);
  *report.mutable_window()->mutable_end() = ToProto(window_end);
  *report.mutable_as_of() = ToProto(now);
  std::map<std::string, v1::Usage> per_user;
  v1::Usage* total = report.mutable_total();
  for (const RunRecord& run : runs) {
    const absl::Time run_end = run.end.value_or(now);
    const absl::Time from = std::max(run.start, window_start);
    const absl::Time to = std::min(run_end, window_end);
    if (to <= from) continue;
    const double hours = absl::ToDoubleHours(to - from);
    const bool ended_inside = run.end.has_value() && *run.end >= window_start && *run.end < window_end;
    Add(run, hours, ended_inside, total);
    Add(run, hours, ended_inside, &per_user[run.user]);
  }
  for (auto& [user, usage] : per_user) {
    v1::UserUsage* entry = report.add_per_user();
    entry->set_user(user);
    *entry->mutable_usage() = std::move(usage);
  }
  return report;
}

}  // namespace strongroom::backend
