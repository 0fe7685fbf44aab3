#include "services/host_agent/data_path.h"

#include <arpa/inet.h>

#include <fstream>
#include <map>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace strongroom::host_agent {
namespace {

constexpr size_t kMaxValue = 255;

absl::Status Bad(absl::string_view field, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat("nfs-request: ", field, ": ", why));
}

// An absolute path of plain components: [A-Za-z0-9._-] only, no "." or "..", no empty component ("//", a
// trailing "/"); "/" itself passes (the mount point check refuses it).
absl::Status CheckAbsolutePath(absl::string_view field, absl::string_view v) {
  if (v.empty() || v[0] != '/') return Bad(field, "must be an absolute path");
  if (v.size() > kMaxValue) return Bad(field, absl::StrCat("longer than ", kMaxValue, " bytes"));
  for (char c : v) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                    c == '_' || c == '-' || c == '/';
    if (!ok) return Bad(field, "only A-Z a-z 0-9 . _ - / are allowed");
  }
  if (v == "/") return absl::OkStatus();
  for (absl::string_view part : absl::StrSplit(v.substr(1), '/')) {
    if (part.empty()) return Bad(field, "empty path component (\"//\" or a trailing \"/\")");
    if (part == "." || part == "..") return Bad(field, "\".\" and \"..\" are not allowed");
  }
  return absl::OkStatus();
}

}  // namespace

bool IsContainerDataPath(const v1::WorkloadSpec& spec) {
  return spec.kind() != v1::WORKLOAD_KIND_VM && spec.has_provisioning() &&
         spec.provisioning().ipsec_data_path();
}

absl::StatusOr<DataPathShare> DecideDataPathShare(const v1::WorkloadSpec& spec, bool has_development_share,
                                                  bool kernel_has_nfs_client) {
  if (!IsContainerDataPath(spec)) return DataPathShare::kNone;
  if (has_development_share) return DataPathShare::kDevelopmentBind;
  if (kernel_has_nfs_client) return DataPathShare::kNfsOnRequest;
  return absl::FailedPreconditionError(
      "provisioning.ipsec_data_path: the project share must be mounted over NFS through the workload's "
      "tunnel, but this node's kernel has no NFS client (/proc/filesystems lists neither nfs4 nor nfs); "
      "host-agent's project_shares would bind it from the host instead, and is for development only");
}

bool KernelHasNfsClient(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    // "nodev\tnfs4" or "\tnfs"
    absl::string_view name = line;
    if (const size_t tab = name.rfind('\t'); tab != absl::string_view::npos) name = name.substr(tab + 1);
    name = absl::StripAsciiWhitespace(name);
    if (name == "nfs4" || name == "nfs") return true;
  }
  return false;
}

absl::StatusOr<NfsShareRequest> ParseNfsShareRequest(absl::string_view text) {
  if (text.size() > kMaxNfsRequestBytes) return Bad("request", "too large");
  if (text.find('\0') != absl::string_view::npos) return Bad("request", "contains a NUL byte");
  std::map<std::string, std::string> values;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (absl::EndsWith(line, "\r")) return Bad("request", "carriage return in a line");
    if (line.empty()) continue;
    const size_t eq = line.find('=');
    if (eq == absl::string_view::npos) return Bad("request", "a line without \"=\"");
    const std::string key(line.substr(0, eq));
    if (key != "server" && key != "export" && key != "mountpoint")
      return Bad("request", "unknown key (only server, export, mountpoint)");
    if (!values.emplace(key, std::string(line.substr(eq + 1))).second) return Bad(key, "given twice");
  }
  for (const char* key : {"server", "export", "mountpoint"}) {
    if (values.count(key) == 0 || values[key].empty()) return Bad(key, "missing");
  }
  NfsShareRequest r{values["server"], values["export"], values["mountpoint"]};
  in_addr a{};
  if (r.server.size() > 15 || inet_pton(AF_INET, r.server.c_str(), &a) != 1)
    return Bad("server", "not an IPv4 address");
  if (absl::Status s = CheckAbsolutePath("export", r.export_path); !s.ok()) return s;
  if (absl::Status s = CheckAbsolutePath("mountpoint", r.mountpoint); !s.ok()) return s;
  if (r.mountpoint == "/") return Bad("mountpoint", "\"/\" is not allowed");
  for (absl::string_view reserved : {"/proc", "/sys", "/dev", "/run"}) {
    if (r.mountpoint == reserved || absl::StartsWith(r.mountpoint, absl::StrCat(reserved, "/")))
      return Bad("mountpoint", absl::StrCat("may not be ", reserved, " or below it"));
  }
  return r;
}

std::optional<DataPathExit> DataPathExitFailure(int exit_code) {
  switch (exit_code) {
    case 70:
      return DataPathExit{"DATA_PATH_ENROLLMENT",
                          "the workload could not enroll with its controlling VM (entrypoint exit 70)"};
    case 71:
      return DataPathExit{
          "DATA_PATH_TUNNEL",
          "the workload could not bring up its IPsec tunnel to its controlling VM (entrypoint "
          "exit 71)"};
    case 72:
      return DataPathExit{"DATA_PATH_SHARE",
                          "the workload could not mount the project share through its tunnel (entrypoint "
                          "exit 72)"};
    default:
      return std::nullopt;
  }
}

}  // namespace strongroom::host_agent
