// E2eStack's controls for failure tests: kill and restart a node's daemons, run extra processes on a rig host.
#include <signal.h>

#include <fstream>

#include "absl/time/clock.h"
#include "tests/e2e/e2e_stack.h"
#include "tests/rig/files.h"

namespace strongroom::e2e {

absl::Status E2eStack::KillDaemon(const std::string& daemon) {
  auto it = daemons_.find(daemon);
  if (it == daemons_.end()) return absl::NotFoundError("no daemon " + daemon);
  if (absl::Status s = rig_->Kill(it->second, SIGKILL); !s.ok()) return s;
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (!ProcessGone(it->second) && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(50));
  return ProcessGone(it->second) ? absl::OkStatus() : absl::InternalError(daemon + " survived SIGKILL");
}

absl::Status E2eStack::RestartDaemon(const std::string& daemon) {
  const std::vector<std::string> nodes = node_names();
  for (int i = 0; i < static_cast<int>(nodes.size()); ++i) {
    if (daemon == "netd/" + nodes[i]) return StartNetd(i);
    if (daemon == "host-agent/" + nodes[i]) return StartHostAgent(i);
    if (daemon == "libvirtd/" + nodes[i]) return StartLibvirtd(i);
  }
  return absl::NotFoundError("no daemon " + daemon);
}

absl::StatusOr<pid_t> E2eStack::SpawnProcess(const std::string& host, const std::string& name,
                                             const std::vector<std::string>& argv) {
  return SpawnDaemon(host, name, argv);
}

absl::Status E2eStack::StopProcess(pid_t pid) { return rig_->Stop(pid); }

CommandResult E2eStack::DumpBackendDatabase(const std::string& path) {
  absl::StatusOr<std::string> dump = db_->Dump();
  if (!dump.ok()) return {1, dump.status().ToString()};
  std::ofstream out(path);
  out << *dump;
  out.close();
  if (!out) return {1, "cannot write " + path};
  return {0, ""};
}

}  // namespace strongroom::e2e
