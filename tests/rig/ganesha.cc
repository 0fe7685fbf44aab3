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
#include "tests/rig/files.h"

namespace strongroom {

absl::StatusOr<std::unique_ptr<GaneshaInstance>> GaneshaInstance::Start(Rig* rig, const std::string& host,
                                                                        const std::string& dir,
                                                                        NfsServerSettings settings) {
  for (const std::string& d : {dir, dir + "/recovery"}) {
    if (mkdir(d.c_str(), 0700) != 0 && errno != EEXIST)
      return absl::InternalError(absl::StrCat("mkdir ", d, ": ", std::strerror(errno)));
  }
  settings.recovery_dir = dir + "/recovery";
  SR_ASSIGN_OR_RETURN(std::string conf, GaneshaConf(settings));
  {
    std::ofstream out(dir + "/ganesha.conf");
    out << conf;
    if (!out) return absl::InternalError(absl::StrCat("cannot write ", dir, "/ganesha.conf"));
  }
  const std::string log = dir + "/ganesha.log";
  SR_ASSIGN_OR_RETURN(pid_t pid, rig->Spawn(host, dir + "/stdout.log",
                                            {"/usr/bin/ganesha.nfsd", "-F", "-f", dir + "/ganesha.conf", "-L",
                                             log, "-p", dir + "/ganesha.pid", "-N", "NIV_EVENT"}));
  std::unique_ptr<GaneshaInstance> g(new GaneshaInstance(rig, dir, log, pid));
  absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (!absl::StrContains(ReadFileOrEmpty(log), "NFS SERVER INITIALIZED")) {
    if (ProcessGone(pid))
      return absl::InternalError(absl::StrCat("ganesha on ", host, " exited: ", ReadFileOrEmpty(log)));
    if (absl::Now() > deadline)
      return absl::DeadlineExceededError(absl::StrCat("ganesha on ", host, ": not up"));
    absl::SleepFor(absl::Milliseconds(100));
  }
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
