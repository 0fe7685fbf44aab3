// The local-job state machine: which state may follow which. Every change in the store goes through it.
#pragma once

#include "absl/status/status.h"
#include "strongroom/v1/vm_controller.pb.h"

namespace strongroom::vm_controller {

bool IsTerminal(v1::LocalJobState state);

// OK when `from` -> `to` is a legal transition; FAILED_PRECONDITION naming both states otherwise.
absl::Status CheckTransition(v1::LocalJobState from, v1::LocalJobState to);

}  // namespace strongroom::vm_controller
