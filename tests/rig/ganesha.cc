#include "tests/rig/ganesha.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/status.h"
#include "services/vm_controller/nfs_server.h"
#include "tests/rig/files.h"

namespace strongroom {

absl::StatusOr<std::unique_ptr<GaneshaInstance>> GaneshaInstance::Start(Rig* rig, const std::string& host,
                                                                        const std::string& dir,
                                                                        NfsServerSettings settings) {
  // The same start as vm-controller's own ganesha (services/vm_controller/nfs_server.h), on a rig host.
  SR_ASSIGN_OR_RETURN(GaneshaRun run, PrepareGanesha(std::string(kDefaultGaneshaBinary), dir, &settings));
  SR_ASSIGN_OR_RETURN(pid_t pid, rig->Spawn(host, run.stdout_path, run.argv));
  std::unique_ptr<GaneshaInstance> g(new GaneshaInstance(rig, dir, run.log_path, pid));
  SR_RETURN_IF_ERROR(
      Annotate(WaitForGanesha(
                   run, pid, settings.port, [pid] { return ProcessGone(pid); }, absl::Seconds(30)),
               absl::StrCat("on ", host)));
  return g;
}

absl::Status GaneshaInstance::Stop() {
  if (pid_ == 0) return absl::OkStatus();
  absl::Status s = rig_->Stop(pid_);
  if (s.ok()) pid_ = 0;
  return s;
}

GaneshaInstance::~GaneshaInstance() {
  absl::Status s = Stop();
  if (!s.ok()) std::fprintf(stderr, "GaneshaInstance: stop failed: %s\n", s.ToString().c_str());
}

}  // namespace strongroom
