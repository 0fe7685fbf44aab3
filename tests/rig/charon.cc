#include "tests/rig/charon.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/charon_process.h"
#include "common/status.h"
#include "tests/rig/files.h"

namespace strongroom {

absl::StatusOr<std::unique_ptr<CharonInstance>> CharonInstance::Start(Rig* rig, const std::string& host,
                                                                      const std::string& dir,
                                                                      IpsecBackend backend) {
  // The same start as vm-controller's own charon (common/charon_process.h), on a rig host.
  SR_ASSIGN_OR_RETURN(CharonRun run, PrepareCharon(std::string(kDefaultCharonBinary), dir, backend));
  for (const std::vector<std::string>& argv : LibipsecBypassRuleCommands(backend, "add")) {
    SR_ASSIGN_OR_RETURN(Rig::ExecResult r, rig->Exec(host, argv, absl::Seconds(10)));
    if (r.exit_code != 0) return absl::InternalError(absl::StrCat("ip rule add on ", host, ": ", r.output));
  }
  SR_ASSIGN_OR_RETURN(pid_t pid, rig->Spawn(host, run.stdout_path, run.argv));
  std::unique_ptr<CharonInstance> c(
      new CharonInstance(rig, run.settings.vici_socket, run.settings.log_path, pid));
  SR_RETURN_IF_ERROR(Annotate(WaitForCharon(
                                  run, [pid] { return ProcessGone(pid); }, absl::Seconds(20)),
                              absl::StrCat("on ", host)));
  return c;
}

absl::StatusOr<ViciClient> CharonInstance::Vici() const {
  return ViciClient::Connect(vici_socket_, absl::Seconds(20));
}

absl::Status CharonInstance::Stop() {
  if (pid_ == 0) return absl::OkStatus();
  absl::Status s = rig_->Stop(pid_);
  if (s.ok()) pid_ = 0;
  return s;
}

CharonInstance::~CharonInstance() {
  absl::Status s = Stop();
  if (!s.ok()) std::fprintf(stderr, "CharonInstance: stop failed: %s\n", s.ToString().c_str());
}

}  // namespace strongroom
