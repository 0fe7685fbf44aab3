// The workload state machine (common.proto WorkloadState): STARTING -> RUNNING -> STOPPING -> STOPPED,
// STARTING -> STOPPING (stop requested or the main process exited during start), and any non-terminal state
// -> FAILED. STOPPED and FAILED are terminal. Every change of a workload's state goes through
// CheckTransition.
#pragma once

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "strongroom/v1/common.pb.h"

namespace strongroom::host_agent {

bool IsTerminal(v1::WorkloadState state);
absl::string_view StateName(v1::WorkloadState state);
// OK if `from` -> `to` is allowed; INTERNAL naming both otherwise (a bug, never a user error).
absl::Status CheckTransition(v1::WorkloadState from, v1::WorkloadState to);

}  // namespace strongroom::host_agent
