#include "tests/rig/charon.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/status.h"
#include "tests/rig/files.h"

namespace strongroom {

absl::StatusOr<std::unique_ptr<CharonInstance>> CharonInstance::Start(Rig* rig, const std::string& host,
                                                                      const std::string& dir,
                                                                      IpsecBackend backend) {
  if (mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST)
    return absl::InternalError(absl::StrCat("mkdir ", dir, ": ", std::strerror(errno)));
  CharonSettings settings{dir + "/charon.vici", dir + "/charon.log", backend};
  {
    std::ofstream conf(dir + "/strongswan.conf");
    conf << CharonConf(settings);
    if (!conf) return absl::InternalError(absl::StrCat("cannot write ", dir, "/strongswan.conf"));
  }
  for (const std::vector<std::string>& rule : LibipsecBypassRules(backend)) {
    std::vector<std::string> argv = {"/usr/sbin/ip", "-4", "rule", "add"};
    argv.insert(argv.end(), rule.begin(), rule.end());
    SR_ASSIGN_OR_RETURN(Rig::ExecResult r, rig->Exec(host, argv, absl::Seconds(10)));
    if (r.exit_code != 0) return absl::InternalError(absl::StrCat("ip rule add on ", host, ": ", r.output));
  }
  SR_ASSIGN_OR_RETURN(
      pid_t pid,
      rig->Spawn(
          host, dir + "/stdout.log",
          {"/usr/bin/env", absl::StrCat("STRONGSWAN_CONF=", dir, "/strongswan.conf"), "/usr/bin/unshare",
           "--mount", "--propagation", "private", "--", "/bin/sh", "-c",
           "mount -t tmpfs -o mode=0755,size=1m strongroom-charon-run /run && exec /usr/lib/ipsec/charon"}));
  std::unique_ptr<CharonInstance> c(new CharonInstance(rig, settings.vici_socket, settings.log_path, pid));
  absl::Time deadline = absl::Now() + absl::Seconds(20);
  while (true) {
    absl::StatusOr<ViciClient> vici = c->Vici();
    if (vici.ok()) {
      absl::StatusOr<ViciMessage> v = vici->Call("version", ViciMessage());
      if (v.ok()) break;
    }
    if (ProcessGone(pid))
      return absl::InternalError(absl::StrCat("charon on ", host,
                                              " exited: ", ReadFileOrEmpty(dir + "/stdout.log"),
                                              ReadFileOrEmpty(settings.log_path)));
    if (absl::Now() > deadline)
      return absl::DeadlineExceededError(absl::StrCat("charon on ", host, ": no VICI"));
    absl::SleepFor(absl::Milliseconds(50));
  }
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
