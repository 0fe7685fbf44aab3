// host-agent's config (strongroom.v1.HostAgentConfig): validation with FILE:LINE errors, and building the
// WorkloadManager with its runtime driver and network provider from it.
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "common/audit.h"
#include "common/config.h"
#include "services/host_agent/manager.h"
#include "strongroom/v1/config.pb.h"

namespace strongroom::host_agent {

absl::Status ValidateConfig(const v1::HostAgentConfig& config, const ConfigSource& source);

// Creates the manager (opens the DB) and runs Reconcile.
absl::StatusOr<std::shared_ptr<WorkloadManager>> BuildManager(const v1::HostAgentConfig& config,
                                                              std::shared_ptr<AuditSink> audit);

}  // namespace strongroom::host_agent
