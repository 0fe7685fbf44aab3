// One HostAgent RPC from the rig's client host through strongroomctl, as backend (the caller StartWorkload and
// StopWorkload admit): the host-agent suites that run the real daemon share it.
#pragma once

#include <algorithm>
#include <string>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "tests/rig/rig.h"

namespace strongroom::host_agent::testing {

// Returns (exit code, the response JSON line, else the whole output); -1 when strongroomctl did not finish.
inline std::pair<int, std::string> CallHostAgentAsBackend(Rig& rig, const std::string& ctl, const std::string& target,
                                                          const std::string& pki, const std::string& method,
                                                          const std::string& json, absl::Duration timeout) {
  auto r = rig.Exec("client",
                    {ctl, "--target", target, "--trust-domain", "strongroom.test", "--ca", pki + "/ca.pem", "--cert",
                     pki + "/backend.pem", "--key", pki + "/backend.key", "--server-role", "host-agent",
                     // The RPC's own deadline is the caller's patience (less 5 s, so that the answer still
                     // arrives): a StopWorkload on a loaded machine (its grace, then teardown) can outlast
                     // strongroomctl's 10 s default.
                     "--timeout", absl::StrCat(std::max(1.0, absl::ToDoubleSeconds(timeout) - 5)), "call",
                     "strongroom.v1.HostAgent/" + method, json},
                    timeout);
  if (!r.ok()) return {-1, r.status().ToString()};
  std::string body = r->output;
  for (absl::string_view line : absl::StrSplit(r->output, '\n')) {
    if (absl::StartsWith(line, "{")) body = std::string(line);
  }
  return {r->exit_code, body};
}

}  // namespace strongroom::host_agent::testing
