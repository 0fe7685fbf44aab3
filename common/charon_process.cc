#include "common/charon_process.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/vici.h"

namespace strongroom {

absl::StatusOr<CharonRun> PrepareCharon(const std::string& charon_binary, const std::string& dir,
                                        IpsecBackend backend, CharonRunDir run_dir) {
  if (charon_binary.empty() || charon_binary[0] != '/')
    return absl::InvalidArgumentError(absl::StrCat("charon binary '", charon_binary, "' is not absolute"));
  if (mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST)
    return absl::InternalError(absl::StrCat("mkdir ", dir, ": ", std::strerror(errno)));
  CharonRun run;
  run.conf_path = dir + "/strongswan.conf";
  run.settings = CharonSettings{dir + "/charon.vici", dir + "/charon.log", backend};
  run.stdout_path = dir + "/stdout.log";
  {
    std::ofstream conf(run.conf_path, std::ios::trunc);
    conf << CharonConf(run.settings);
    conf.flush();
    if (!conf) return absl::InternalError(absl::StrCat("cannot write ", run.conf_path));
  }
  if (run_dir == CharonRunDir::kOwnRun) {
    run.argv = {"/usr/bin/env", absl::StrCat("STRONGSWAN_CONF=", run.conf_path), charon_binary};
    return run;
  }
  // The binary is passed to the shell as $0, never spliced into the command string.
  run.argv = {"/usr/bin/env",
              absl::StrCat("STRONGSWAN_CONF=", run.conf_path),
              "/usr/bin/unshare",
              "--mount",
              "--propagation",
              "private",
              "--",
              "/bin/sh",
              "-c",
              "mount -t tmpfs -o mode=0755,size=1m strongroom-charon-run /run && exec \"$0\"",
              charon_binary};
  return run;
}

std::vector<std::vector<std::string>> LibipsecBypassRuleCommands(IpsecBackend backend,
                                                                 absl::string_view verb) {
  std::vector<std::vector<std::string>> out;
  for (const std::vector<std::string>& rule : LibipsecBypassRules(backend)) {
    std::vector<std::string> argv = {"/usr/sbin/ip", "-4", "rule", std::string(verb)};
    argv.insert(argv.end(), rule.begin(), rule.end());
    out.push_back(std::move(argv));
  }
  return out;
}

std::vector<std::vector<std::string>> PlaintextGuardCommands(IpsecBackend backend, const std::string& remote_cidr,
                                                             absl::string_view verb) {
  const bool add = verb == "add";
  if (backend == IpsecBackend::kLibipsec) {
    return {{"/usr/sbin/ip", "-4", "rule", add ? "add" : "del", "pref", "230", "to", remote_cidr, "unreachable"}};
  }
  // Not charon's selector (src = its local address): XFRM keys a policy by selector and direction, not by
  // priority, so charon would update (replace) a block policy with its own and delete it with its SA.
  std::vector<std::string> argv = {"/usr/sbin/ip", "xfrm", "policy", add ? "add" : "delete", "src", "0.0.0.0/0",
                                   "dst", remote_cidr, "dir", "out"};
  if (add) argv.insert(argv.end(), {"action", "block", "priority", "4000000000"});
  return {argv};
}

std::vector<std::vector<std::string>> PlaintextGuardExceptionCommands(IpsecBackend backend,
                                                                      const std::string& remote_cidr,
                                                                      int tcp_source_port, absl::string_view verb) {
  const bool add = verb == "add";
  const std::string port = absl::StrCat(tcp_source_port);
  if (backend == IpsecBackend::kLibipsec) {
    return {{"/usr/sbin/ip", "-4", "rule", add ? "add" : "del", "pref", "212", "to", remote_cidr, "ipproto", "tcp",
             "sport", port, "lookup", "main"}};
  }
  std::vector<std::string> argv = {"/usr/sbin/ip", "xfrm", "policy", add ? "add" : "delete", "src", "0.0.0.0/0",
                                   "dst", remote_cidr, "proto", "tcp", "sport", port, "dir", "out"};
  if (add) argv.insert(argv.end(), {"action", "allow", "priority", "3999999999"});
  return {argv};
}

std::string LogTail(const std::string& path, size_t max_bytes) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "";
  std::ostringstream all;
  all << in.rdbuf();
  std::string s = all.str();
  if (s.size() > max_bytes) s.erase(0, s.size() - max_bytes);
  return s;
}

absl::Status WaitForCharon(const CharonRun& run, const std::function<bool()>& gone, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    absl::StatusOr<ViciClient> vici = ViciClient::Connect(run.settings.vici_socket, absl::Seconds(5));
    if (vici.ok() && vici->Call("version", ViciMessage()).ok()) return absl::OkStatus();
    if (gone())
      return absl::InternalError(absl::StrCat("charon exited before its VICI socket answered: ",
                                              LogTail(run.stdout_path), LogTail(run.settings.log_path)));
    if (absl::Now() > deadline)
      return absl::DeadlineExceededError(absl::StrCat("charon: no VICI answer on ", run.settings.vici_socket,
                                                      " within ", absl::FormatDuration(timeout), ": ",
                                                      LogTail(run.settings.log_path)));
    absl::SleepFor(absl::Milliseconds(50));
  }
}

}  // namespace strongroom
