#include "services/vm_controller/nfs_export.h"

#include <arpa/inet.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <set>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "common/bounded_file.h"
#include "common/status.h"

namespace strongroom {
namespace {

// Absolute, no quote, backslash, brace, semicolon or control character: ganesha's parser sees it verbatim.
bool SafePath(const std::string& p) {
  if (p.empty() || p[0] != '/' || p.size() > 1024) return false;
  for (unsigned char c : p) {
    if (c < 0x20 || c == '"' || c == '\\' || c == '{' || c == '}' || c == ';' || c == 0x7f) return false;
  }
  return p.find("/../") == std::string::npos && p.find("/./") == std::string::npos;
}

}  // namespace

absl::StatusOr<std::string> GaneshaConf(const NfsServerSettings& s) {
  if (!SafePath(s.recovery_dir)) return absl::InvalidArgumentError("nfs: bad recovery_dir");
  if (s.port < 1 || s.port > 65535) return absl::InvalidArgumentError("nfs: bad port");
  std::string out = absl::StrCat(
      "# Written by Strongroom vm-controller.\n"
      "NFS_CORE_PARAM { Protocols = 4; NFS_Port = ",
      s.port,
      "; Enable_NLM = false; Enable_RQUOTA = false; Enable_UDP = false; }\n"
      "NFSv4 { RecoveryBackend = fs; RecoveryRoot = \"",
      s.recovery_dir,
      "\"; Graceless = true; }\n"
      "EXPORT_DEFAULTS { Access_Type = None; SecType = sys; Protocols = 4; Transports = TCP; }\n");
  std::set<int> ids;
  std::set<std::string> pseudos;
  for (const NfsExport& e : s.exports) {
    if (e.export_id < 1 || e.export_id > 65535 || !ids.insert(e.export_id).second)
      return absl::InvalidArgumentError(absl::StrCat("nfs: bad or repeated export_id ", e.export_id));
    if (!SafePath(e.path) || !SafePath(e.pseudo) || e.pseudo == "/" || !pseudos.insert(e.pseudo).second)
      return absl::InvalidArgumentError(
          absl::StrCat("nfs: export ", e.export_id, ": bad path or pseudo path"));
    for (const std::string& ip : e.client_ips) {
      in_addr a{};
      if (inet_pton(AF_INET, ip.c_str(), &a) != 1)
        return absl::InvalidArgumentError(absl::StrCat("nfs: export ", e.export_id, ": bad client ", ip));
    }
    absl::StrAppend(&out, "EXPORT {\n  Export_Id = ", e.export_id, ";\n  Path = \"", e.path,
                    "\";\n  Pseudo = \"", e.pseudo,
                    "\";\n  Access_Type = None;\n  Squash = No_Root_Squash;\n  FSAL { Name = VFS; }\n");
    if (!e.client_ips.empty())
      absl::StrAppend(&out, "  CLIENT { Clients = ", absl::StrJoin(e.client_ips, ", "),
                      "; Access_Type = RW; }\n");
    absl::StrAppend(&out, "}\n");
  }
  return out;
}

absl::Status GaneshaExports::Grant(const std::string& workload_ip) {
  for (NfsExport& e : settings_.exports) {
    if (std::find(e.client_ips.begin(), e.client_ips.end(), workload_ip) == e.client_ips.end())
      e.client_ips.push_back(workload_ip);
  }
  return Apply();
}

absl::Status GaneshaExports::Revoke(const std::string& workload_ip) {
  for (NfsExport& e : settings_.exports) {
    e.client_ips.erase(std::remove(e.client_ips.begin(), e.client_ips.end(), workload_ip),
                       e.client_ips.end());
  }
  return Apply();
}

absl::Status GaneshaExports::Apply() {
  SR_ASSIGN_OR_RETURN(std::string conf, GaneshaConf(settings_));
  const std::string tmp = conf_path_ + ".new";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << conf;
    out.flush();
    if (!out) return absl::InternalError(absl::StrCat("nfs: cannot write ", tmp));
  }
  if (rename(tmp.c_str(), conf_path_.c_str()) != 0)
    return absl::InternalError(absl::StrCat("nfs: rename to ", conf_path_, ": ", std::strerror(errno)));
  return reload_();
}

GaneshaExports::GaneshaExports(std::string conf_path, std::string pid_file, NfsServerSettings settings)
    : GaneshaExports(
          std::move(conf_path),
          [pid_file = std::move(pid_file)]() -> absl::Status {
            SR_ASSIGN_OR_RETURN(std::string pid_text, ReadBoundedRegularFile(pid_file, 64));
            int pid = 0;
            if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(pid_text), &pid) || pid <= 1)
              return absl::FailedPreconditionError(absl::StrCat("nfs: no ganesha pid in ", pid_file));
            if (kill(pid, SIGHUP) != 0)
              return absl::UnavailableError(
                  absl::StrCat("nfs: SIGHUP to ganesha (pid ", pid, "): ", std::strerror(errno)));
            return absl::OkStatus();
          },
          std::move(settings)) {}

}  // namespace strongroom
