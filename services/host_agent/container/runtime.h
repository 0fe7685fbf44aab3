// The container runtime behind one interface: the OCI driver (runc, crun) and the Apptainer driver.
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "services/host_agent/container/oci_config.h"

namespace strongroom::host_agent {

struct StartedContainer {
  pid_t supervisor = 0;  // our child that lives as long as the container (`runc run`); reaped by the caller
  pid_t init_pid = 0;    // host pid of the container's first process
};

struct RuntimeState {
  bool exists = false;
  std::string status;  // "created", "running", "stopped", ...
  pid_t pid = 0;
};

class Runtime {
 public:
  virtual ~Runtime() = default;
  // "runc", "crun" or "apptainer".
  virtual std::string name() const = 0;
  // Writes the bundle (config.json for OCI) into `bundle_dir`, which exists.
  virtual absl::Status Prepare(const ContainerParams& params, const std::string& bundle_dir) = 0;
  // Starts the container and returns once its entrypoint has been exec'd. Runtime output goes to `log_path`.
  virtual absl::StatusOr<StartedContainer> Start(const std::string& id, const std::string& bundle_dir,
                                                 const std::string& log_path, absl::Duration timeout) = 0;
  virtual absl::StatusOr<RuntimeState> State(const std::string& id) = 0;
  // Sends `signal` to the container's init (or, with all, to every process of it).
  virtual absl::Status Kill(const std::string& id, int signal, bool all) = 0;
  // Deletes the container and its runtime state; OK if it does not exist.
  virtual absl::Status Delete(const std::string& id) = 0;
};

// binary: /usr/sbin/runc or /usr/bin/crun; root: the runtime's state directory (--root).
std::unique_ptr<Runtime> MakeOciRuntime(std::string name, std::string binary, std::string root);

}  // namespace strongroom::host_agent
