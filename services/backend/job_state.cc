#include "services/backend/job_state.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace strongroom::backend {

absl::string_view JobStateName(v1::JobState state) {
  const std::string& full = v1::JobState_Name(state);
  absl::string_view name = full;
  if (name.empty()) return "UNKNOWN";
  absl::ConsumePrefix(&name, "JOB_STATE_");
  return name;
}

bool IsTerminal(v1::JobState state) {
  return state == v1::JOB_STATE_COMPLETED || state == v1::JOB_STATE_FAILED ||
         state == v1::JOB_STATE_CANCELLED;
}

const std::vector<std::pair<v1::JobState, v1::JobState>>& AllowedTransitions() {
  static const auto* const kTable = [] {
    using S = v1::JobState;
    auto* table = new std::vector<std::pair<S, S>>{
        {v1::JOB_STATE_SUBMITTING, v1::JOB_STATE_QUEUED},
        {v1::JOB_STATE_QUEUED, v1::JOB_STATE_STARTING},
        {v1::JOB_STATE_STARTING, v1::JOB_STATE_PROVISIONING},
        {v1::JOB_STATE_PROVISIONING, v1::JOB_STATE_RUNNING},
        {v1::JOB_STATE_RUNNING, v1::JOB_STATE_RELEASING},
        {v1::JOB_STATE_RELEASING, v1::JOB_STATE_COMPLETED},
        {v1::JOB_STATE_CANCELLING, v1::JOB_STATE_CANCELLED},
    };
    for (S from : {v1::JOB_STATE_SUBMITTING, v1::JOB_STATE_QUEUED, v1::JOB_STATE_STARTING,
                   v1::JOB_STATE_PROVISIONING, v1::JOB_STATE_RUNNING, v1::JOB_STATE_RELEASING}) {
      table->push_back({from, v1::JOB_STATE_CANCELLING});
      table->push_back({from, v1::JOB_STATE_FAILED});
    }
    return table;
  }();
  return *kTable;
}

bool TransitionAllowed(v1::JobState from, v1::JobState to) {
  const auto& table = AllowedTransitions();
  return std::find(table.begin(), table.end(), std::make_pair(from, to)) != table.end();
}

absl::Status CheckTransition(absl::string_view global_job_id, v1::JobState from, v1::JobState to) {
  if (TransitionAllowed(from, to)) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat("job ", global_job_id, ": illegal state transition ",
                                                    JobStateName(from), " -> ", JobStateName(to)));
}

}  // namespace strongroom::backend
