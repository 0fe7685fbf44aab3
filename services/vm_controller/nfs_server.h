// How Strongroom runs nfs-ganesha with the configuration of nfs_export.h: vm-controller's own server on the
// controlling VM and the rig's fixture (tests/rig/ganesha.h) start it the same way, from here. Everything it
// writes is under one directory: ganesha.conf, ganesha.pid, ganesha.log, recovery/.
#pragma once

#include <sys/types.h>

#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "services/vm_controller/nfs_export.h"

namespace strongroom {

inline constexpr absl::string_view kDefaultGaneshaBinary = "/usr/bin/ganesha.nfsd";

struct GaneshaRun {
  std::string conf_path;          // DIR/ganesha.conf (GaneshaExports rewrites it)
  std::string pid_file;           // DIR/ganesha.pid
  std::string log_path;           // DIR/ganesha.log
  std::string stdout_path;        // DIR/stdout.log
  std::vector<std::string> argv;  // ganesha.nfsd -F -f CONF -L LOG -p PID -N NIV_EVENT
};

// Creates `dir` and DIR/recovery (0700; existing ones are kept), points settings->recovery_dir there, writes
// the configuration and returns how to start ganesha (in the foreground: its PID is the one spawned).
absl::StatusOr<GaneshaRun> PrepareGanesha(const std::string& ganesha_binary, const std::string& dir,
                                          NfsServerSettings* settings);

// Waits until ganesha is serving: its log says "NFS SERVER INITIALIZED" and a TCP socket listens on `port` in
// the network namespace of `pid` (/proc/PID/net/tcp, tcp6). INTERNAL with its log's tail when `gone()` says
// it exited first; DEADLINE_EXCEEDED after `timeout`.
absl::Status WaitForGanesha(const GaneshaRun& run, pid_t pid, int port, const std::function<bool()>& gone,
                            absl::Duration timeout);

// Whether a TCP socket listens on `port` in the network namespace of `pid`.
bool TcpPortListens(pid_t pid, int port);

}  // namespace strongroom
