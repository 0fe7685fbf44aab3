#include "services/vm_controller/local_job_state.h"

#include <map>
#include <set>

#include "absl/strings/str_cat.h"

namespace strongroom::vm_controller {
namespace {

using S = v1::LocalJobState;

// Main path RECEIVED -> HELD -> GLOBAL_REQUESTED -> PROVISIONING -> RUNNING -> ENDING -> COMPLETED; any
// non-terminal state may fail or be cancelled; a job that ends before it ran goes ENDING too (cleanup of the
// global job), and a failed provisioning may be retried by backend (PROVISIONING again).
const std::map<S, std::set<S>>& Allowed() {
  static const auto* table = new std::map<S, std::set<S>>{
      {v1::LOCAL_JOB_STATE_RECEIVED, {v1::LOCAL_JOB_STATE_HELD, v1::LOCAL_JOB_STATE_ENDING}},
      {v1::LOCAL_JOB_STATE_HELD, {v1::LOCAL_JOB_STATE_GLOBAL_REQUESTED, v1::LOCAL_JOB_STATE_ENDING}},
      {v1::LOCAL_JOB_STATE_GLOBAL_REQUESTED, {v1::LOCAL_JOB_STATE_PROVISIONING, v1::LOCAL_JOB_STATE_ENDING}},
      {v1::LOCAL_JOB_STATE_PROVISIONING,
       {v1::LOCAL_JOB_STATE_RUNNING, v1::LOCAL_JOB_STATE_GLOBAL_REQUESTED, v1::LOCAL_JOB_STATE_ENDING}},
      {v1::LOCAL_JOB_STATE_RUNNING, {v1::LOCAL_JOB_STATE_ENDING}},
      {v1::LOCAL_JOB_STATE_ENDING,
       {v1::LOCAL_JOB_STATE_COMPLETED, v1::LOCAL_JOB_STATE_CANCELLED, v1::LOCAL_JOB_STATE_FAILED}},
  };
  return *table;
}

}  // namespace

bool IsTerminal(v1::LocalJobState state) {
  return state == v1::LOCAL_JOB_STATE_COMPLETED || state == v1::LOCAL_JOB_STATE_FAILED ||
         state == v1::LOCAL_JOB_STATE_CANCELLED;
}

absl::Status CheckTransition(v1::LocalJobState from, v1::LocalJobState to) {
  const bool to_failure = to == v1::LOCAL_JOB_STATE_FAILED || to == v1::LOCAL_JOB_STATE_CANCELLED;
  if (!IsTerminal(from) && from != v1::LOCAL_JOB_STATE_UNSPECIFIED && to_failure) return absl::OkStatus();
  auto allowed = Allowed().find(from);
  if (allowed != Allowed().end() && allowed->second.count(to) > 0) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat("illegal local job transition ", v1::LocalJobState_Name(from),
                                                    " -> ", v1::LocalJobState_Name(to)));
}

}  // namespace strongroom::vm_controller
