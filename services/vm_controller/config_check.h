// vm-controller's config checks (VmControllerConfig in proto/strongroom/v1/config.proto): every error names
// the field and its line. Checks the files it names where they must exist (the charon and ganesha binaries,
// the share).
#pragma once

#include "absl/status/status.h"
#include "common/config.h"
#include "strongroom/v1/config.pb.h"

namespace strongroom::vm_controller {

absl::Status ValidateConfig(const v1::VmControllerConfig& config, const ConfigSource& source);

}  // namespace strongroom::vm_controller
