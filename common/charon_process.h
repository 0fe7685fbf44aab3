// How Strongroom runs a charon (docs/IPSEC.md "The tunnel"): vm-controller's responder on the controlling VM
// and the rig's fixture (tests/rig/charon.h) start it the same way, from here. Configured only over VICI:
// STRONGSWAN_CONF points at the generated strongswan.conf (CharonConf: no stroke, no swanctl.conf, no
// credential files). Its pid file is compiled in as /var/run/charon.pid, so every charon runs in its own
// mount namespace with a private tmpfs on /run (unshare --mount --propagation private); that tmpfs, and the
// namespace, go when charon exits.
//
//   SR_ASSIGN_OR_RETURN(CharonRun run, PrepareCharon("/usr/lib/ipsec/charon", dir, backend));
//   for (const auto& argv : LibipsecBypassRuleCommands(backend, "add")) ... run it in charon's netns
//   SR_ASSIGN_OR_RETURN(pid_t pid, Spawn(run.argv, run.stdout_path));
//   SR_RETURN_IF_ERROR(WaitForCharon(run, [&] { return ProcessGone(pid); }, absl::Seconds(20)));
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "common/ipsec_tunnel.h"

namespace strongroom {

inline constexpr absl::string_view kDefaultCharonBinary = "/usr/lib/ipsec/charon";

struct CharonRun {
  std::string conf_path;          // DIR/strongswan.conf
  CharonSettings settings;        // VICI socket DIR/charon.vici, log DIR/charon.log, the backend
  std::string stdout_path;        // DIR/stdout.log: what charon (and the /run mount) print
  std::vector<std::string> argv;  // env STRONGSWAN_CONF=... unshare --mount ... charon_binary
};

// Where charon's compiled-in /var/run/charon.pid goes. kPrivateRun: `unshare --mount` with a tmpfs on /run
// (a host or VM whose /run other charons may share). kOwnRun: charon runs as it is, for a process that
// already has a /run of its own (a workload container: its /run is its own tmpfs, and its seccomp profile
// denies unshare and mount anyway).
enum class CharonRunDir { kPrivateRun, kOwnRun };

// Creates `dir` (0700; an existing one is kept), writes its strongswan.conf, and returns how to start charon.
// `charon_binary` must be absolute.
absl::StatusOr<CharonRun> PrepareCharon(const std::string& charon_binary, const std::string& dir,
                                        IpsecBackend backend,
                                        CharonRunDir run_dir = CharonRunDir::kPrivateRun);

// kernel-libipsec's bypass rules (LibipsecBypassRules) as complete `ip -4 rule <verb> ...` argv vectors, verb
// "add" or "del". Empty for kernel ESP.
std::vector<std::vector<std::string>> LibipsecBypassRuleCommands(IpsecBackend backend,
                                                                 absl::string_view verb);

// The guard that traffic to `remote_cidr` never leaves in the clear while no CHILD_SA
// covers it (before IKE, after the SA is deleted), as `ip` argv vectors for `verb` "add" or "del":
// kernel-libipsec an `unreachable` policy rule (pref 230) after charon's own (pref 220, table 220: the tunnel's
// routes) and after the IKE sockets' bypass rules (210, 211); kernel ESP an outbound XFRM block policy below
// every policy charon installs (from any source: a selector of charon's own would be replaced and deleted by it;
// charon's IKE sockets bypass XFRM). The workload guards its controlling VM's /32, the controlling VM its workload
// subnets.
std::vector<std::vector<std::string>> PlaintextGuardCommands(IpsecBackend backend, const std::string& remote_cidr,
                                                             absl::string_view verb);
// The one exception to that guard, placed before it: TCP from `tcp_source_port` (the enrollment listener, which
// answers before any tunnel exists).
std::vector<std::vector<std::string>> PlaintextGuardExceptionCommands(IpsecBackend backend,
                                                                      const std::string& remote_cidr,
                                                                      int tcp_source_port, absl::string_view verb);

// Waits until charon answers VICI `version` on run.settings.vici_socket. INTERNAL with the tail of its logs
// when `gone()` says it exited first; DEADLINE_EXCEEDED after `timeout`.
absl::Status WaitForCharon(const CharonRun& run, const std::function<bool()>& gone, absl::Duration timeout);

// The last `max_bytes` of a log file, or "" if it cannot be read (for startup errors).
std::string LogTail(const std::string& path, size_t max_bytes = 4096);

}  // namespace strongroom
