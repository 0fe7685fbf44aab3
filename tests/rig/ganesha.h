// A real nfs-ganesha (userspace NFSv4 server) on a rig host, with the configuration vm-controller writes
// (services/vm_controller/nfs_export.h): its conf, log, pid file and recovery directory under `dir`. A rig
// process: rig teardown stops it even after a crash (rig_sweep).
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "services/vm_controller/nfs_export.h"
#include "tests/rig/rig.h"

namespace strongroom {

class GaneshaInstance {
 public:
  // Writes the config, starts ganesha.nfsd on `host` and waits until it listens on settings.port.
  // settings.recovery_dir is set to dir/recovery.
  static absl::StatusOr<std::unique_ptr<GaneshaInstance>> Start(Rig* rig, const std::string& host,
                                                                const std::string& dir,
                                                                NfsServerSettings settings);
  ~GaneshaInstance();  // Stop()

  const std::string& log_path() const { return log_path_; }
  std::string conf_path() const { return dir_ + "/ganesha.conf"; }
  std::string pid_file() const { return dir_ + "/ganesha.pid"; }
  absl::Status Stop();

 private:
  GaneshaInstance(Rig* rig, std::string dir, std::string log_path, pid_t pid)
      : rig_(rig), dir_(std::move(dir)), log_path_(std::move(log_path)), pid_(pid) {}
  Rig* rig_;         // not owned; outlives this
  std::string dir_;  // conf, pid file, log, recovery
  std::string log_path_;
  pid_t pid_ = 0;  // 0 once stopped
};

}  // namespace strongroom
