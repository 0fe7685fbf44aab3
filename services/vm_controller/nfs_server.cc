#include "services/vm_controller/nfs_server.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <fstream>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/charon_process.h"
#include "common/status.h"

namespace strongroom {

absl::StatusOr<GaneshaRun> PrepareGanesha(const std::string& ganesha_binary, const std::string& dir,
                                          NfsServerSettings* settings) {
  if (ganesha_binary.empty() || ganesha_binary[0] != '/')
    return absl::InvalidArgumentError(absl::StrCat("ganesha binary '", ganesha_binary, "' is not absolute"));
  for (const std::string& d : {dir, dir + "/recovery"}) {
    if (mkdir(d.c_str(), 0700) != 0 && errno != EEXIST)
      return absl::InternalError(absl::StrCat("mkdir ", d, ": ", std::strerror(errno)));
  }
  settings->recovery_dir = dir + "/recovery";
  SR_ASSIGN_OR_RETURN(std::string conf, GaneshaConf(*settings));
  GaneshaRun run{dir + "/ganesha.conf", dir + "/ganesha.pid", dir + "/ganesha.log", dir + "/stdout.log", {}};
  {
    std::ofstream out(run.conf_path, std::ios::trunc);
    out << conf;
    out.flush();
    if (!out) return absl::InternalError(absl::StrCat("cannot write ", run.conf_path));
  }
  run.argv = {ganesha_binary, "-F", "-f",         run.conf_path, "-L",
              run.log_path,   "-p", run.pid_file, "-N",          "NIV_EVENT"};
  return run;
}

bool TcpPortListens(pid_t pid, int port) {
  for (const char* table : {"tcp", "tcp6"}) {
    std::ifstream in(absl::StrCat("/proc/", pid, "/net/", table));
    std::string line;
    std::getline(in, line);  // the header
    while (std::getline(in, line)) {
      // "  sl  local_address rem_address   st ...": local "ADDR:PORT" in hex, st 0A = LISTEN.
      std::vector<absl::string_view> f = absl::StrSplit(line, ' ', absl::SkipEmpty());
      if (f.size() < 4 || f[3] != "0A") continue;
      const size_t colon = f[1].rfind(':');
      uint32_t p = 0;
      if (colon != absl::string_view::npos && absl::SimpleHexAtoi(f[1].substr(colon + 1), &p) &&
          static_cast<int>(p) == port)
        return true;
    }
  }
  return false;
}

absl::Status WaitForGanesha(const GaneshaRun& run, pid_t pid, int port, const std::function<bool()>& gone,
                            absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    if (absl::StrContains(LogTail(run.log_path, 1 << 20), "NFS SERVER INITIALIZED") &&
        TcpPortListens(pid, port))
      return absl::OkStatus();
    if (gone())
      return absl::InternalError(
          absl::StrCat("ganesha exited before it served: ", LogTail(run.stdout_path), LogTail(run.log_path)));
    if (absl::Now() > deadline)
      return absl::DeadlineExceededError(absl::StrCat("ganesha: not serving on port ", port, " within ",
                                                      absl::FormatDuration(timeout), ": ",
                                                      LogTail(run.log_path)));
    absl::SleepFor(absl::Milliseconds(100));
  }
}

}  // namespace strongroom
