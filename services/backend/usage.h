// Usage accounting: jobs, node-hours and core-hours of a project in a time window. Pure function over the
// jobs that ran; the SQL that selects them lives in JobStore.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "strongroom/v1/backend.pb.h"

namespace strongroom::backend {

struct RunRecord {
  std::string user;
  v1::JobState state = v1::JOB_STATE_UNSPECIFIED;
  absl::Time start;               // when the global job started on its node
  std::optional<absl::Time> end;  // when it reached a terminal state; unset while it still runs
  uint32_t nodes = 1;
  uint32_t cpus = 0;  // allocated CPUs over all nodes (the whole node's for exclusive jobs)
};

// Run time is clipped to [window_start, window_end) and, for jobs still running, to `now`. A job counts when
// its clipped run time is not empty; it counts as completed/failed/cancelled when it ended inside the window.
// Per-user totals are sorted by user and sum to the total.
v1::UsageReportResponse ComputeUsage(const std::string& project, absl::Time window_start,
                                     absl::Time window_end, absl::Time now,
                                     const std::vector<RunRecord>& runs);

}  // namespace strongroom::backend
