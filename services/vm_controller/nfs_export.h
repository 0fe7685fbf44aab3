// The controlling VM's NFSv4 server for the project's data share (issue 14): the nfs-ganesha configuration
// vm-controller writes. Pure. NFSv4 only over TCP (no rpcbind, NLM, rquota or UDP), AUTH_SYS, one EXPORT per
// share whose CLIENT list is exactly the enrolled workloads' addresses (their traffic arrives through the
// IPsec tunnel with the same source address), everyone else Access_Type = None.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace strongroom {

struct NfsExport {
  int export_id = 1;                    // 1..65535
  std::string path;                     // absolute directory on the VM (not on overlayfs: FSAL_VFS)
  std::string pseudo;                   // its NFSv4 pseudo path, e.g. "/proj-a"
  std::vector<std::string> client_ips;  // IPv4 addresses allowed read-write; empty: nobody
};

struct NfsServerSettings {
  std::string recovery_dir;  // NFSv4 client recovery state (absolute)
  int port = 2049;
  std::vector<NfsExport> exports;
};

absl::StatusOr<std::string> GaneshaConf(const NfsServerSettings& settings);

// The running ganesha's export list, kept by vm-controller: every change rewrites `conf_path` (a new file
// renamed over it) and has ganesha reload it (SIGHUP), which makes ganesha re-read its exports
// (measured: a client added or removed takes effect without a restart). Granting and revoking are per
// workload address on every export.
class GaneshaExports {
 public:
  // `reload` makes the running ganesha re-read `conf_path` (vm-controller's own ganesha: SIGHUP to the PID it
  // started, common/supervised_process.h).
  GaneshaExports(std::string conf_path, std::function<absl::Status()> reload, NfsServerSettings settings)
      : conf_path_(std::move(conf_path)), reload_(std::move(reload)), settings_(std::move(settings)) {}
  // A ganesha someone else started: SIGHUP to the pid in `pid_file`.
  GaneshaExports(std::string conf_path, std::string pid_file, NfsServerSettings settings);

  absl::Status Grant(const std::string& workload_ip);
  absl::Status Revoke(const std::string& workload_ip);

 private:
  absl::Status Apply();

  const std::string conf_path_;                 // ganesha's -f file
  const std::function<absl::Status()> reload_;  // after each rewrite
  NfsServerSettings settings_;                  // the exports with their current client lists
};

}  // namespace strongroom
