// The global job state machine: the one table of allowed transitions. PostgreSQL holds the same
// table (job_state_transitions, from the migrations) and a trigger refuses any other UPDATE of
// jobs.state; at start backend checks that both tables are equal (JobStore::CheckTransitionTable).
#pragma once

#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "strongroom/v1/backend.pb.h"

namespace strongroom::backend {

// "SUBMITTING", "QUEUED", ... (the enum name without its JOB_STATE_ prefix).
absl::string_view JobStateName(v1::JobState state);

// COMPLETED, FAILED and CANCELLED.
bool IsTerminal(v1::JobState state);

// Every allowed (from, to) pair. Main path SUBMITTING -> QUEUED -> STARTING -> PROVISIONING -> RUNNING ->
// RELEASING -> COMPLETED; any non-terminal state may go to FAILED, and any except CANCELLING to CANCELLING;
// CANCELLING ends in CANCELLED.
const std::vector<std::pair<v1::JobState, v1::JobState>>& AllowedTransitions();

bool TransitionAllowed(v1::JobState from, v1::JobState to);

// OK, or FAILED_PRECONDITION "job <id>: illegal state transition <FROM> -> <TO>".
absl::Status CheckTransition(absl::string_view global_job_id, v1::JobState from, v1::JobState to);

}  // namespace strongroom::backend
