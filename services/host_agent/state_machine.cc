#include "services/host_agent/state_machine.h"

#include "absl/strings/str_cat.h"

namespace strongroom::host_agent {

bool IsTerminal(v1::WorkloadState state) {
  return state == v1::WORKLOAD_STATE_STOPPED || state == v1::WORKLOAD_STATE_FAILED;
}

absl::string_view StateName(v1::WorkloadState state) {
  switch (state) {
    case v1::WORKLOAD_STATE_STARTING:
      return "STARTING";
    case v1::WORKLOAD_STATE_RUNNING:
      return "RUNNING";
    case v1::WORKLOAD_STATE_STOPPING:
      return "STOPPING";
    case v1::WORKLOAD_STATE_STOPPED:
      return "STOPPED";
    case v1::WORKLOAD_STATE_FAILED:
      return "FAILED";
    default:
      return "UNSPECIFIED";
  }
}

absl::Status CheckTransition(v1::WorkloadState from, v1::WorkloadState to) {
  using S = v1::WorkloadState;
  bool ok = false;
  switch (from) {
    case S::WORKLOAD_STATE_UNSPECIFIED:
      ok = to == S::WORKLOAD_STATE_STARTING;
      break;
    case S::WORKLOAD_STATE_STARTING:
      ok = to == S::WORKLOAD_STATE_RUNNING || to == S::WORKLOAD_STATE_STOPPING ||
           to == S::WORKLOAD_STATE_FAILED;
      break;
    case S::WORKLOAD_STATE_RUNNING:
      ok = to == S::WORKLOAD_STATE_STOPPING || to == S::WORKLOAD_STATE_FAILED;
      break;
    case S::WORKLOAD_STATE_STOPPING:
      ok = to == S::WORKLOAD_STATE_STOPPED || to == S::WORKLOAD_STATE_FAILED;
      break;
    default:
      ok = false;
  }
  if (ok) return absl::OkStatus();
  return absl::InternalError(absl::StrCat("workload state ", StateName(from), " -> ", StateName(to),
                                          " is not a transition of the state machine"));
}

}  // namespace strongroom::host_agent
