// The Apptainer driver. Apptainer is not packaged for Debian 12 and cannot be built here, so this driver is
// UNTESTED against a real install: only its command lines are unit-tested (docs/HOST_AGENT.md says so).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "services/host_agent/container/oci_config.h"
#include "services/host_agent/container/runtime.h"

namespace strongroom::host_agent {

struct ApptainerParams {
  std::string binary = "/usr/bin/apptainer";
  std::string nsenter = "/usr/bin/nsenter";
};

// `apptainer instance start` for the container. With params.netns_path set, the command runs inside that
// netns via nsenter and apptainer shares it (netd's port is there); without, `--net --network=none` gives an
// unconnected one.
std::vector<std::string> ApptainerStartArgv(const ApptainerParams& a, const ContainerParams& p);
// `apptainer instance stop` (with a signal) and `apptainer instance list --json` for the instance.
std::vector<std::string> ApptainerStopArgv(const ApptainerParams& a, const std::string& id, int signal);
std::vector<std::string> ApptainerListArgv(const ApptainerParams& a, const std::string& id);
// Capabilities --drop-caps names: every capability 0..40 not kept (KeptCapabilities()).
std::string ApptainerDroppedCaps();

std::unique_ptr<Runtime> MakeApptainerRuntime(ApptainerParams params);

}  // namespace strongroom::host_agent
