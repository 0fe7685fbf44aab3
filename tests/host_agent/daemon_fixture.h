// Runs the real host-agent binary (mTLS, its own config, state dir and image catalog) on 127.0.0.1 and talks
// to it with gRPC clients holding PKI certificates of several roles. Used by the crash, authorization and
// netd tests.
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "strongroom/v1/host_agent.grpc.pb.h"

namespace strongroom::host_agent::testing {

class AgentDaemon {
 public:
  // A PKI (CA, server cert "host-agent/node-a", clients backend, operator, global-job node-a and node-b) and
  // an image catalog with the busybox probe image, in a fresh temp dir.
  static absl::StatusOr<std::unique_ptr<AgentDaemon>> Create();
  ~AgentDaemon();  // stops the agent, stops leftover workloads through a fresh agent, removes the dir

  // Starts the agent with the base config plus `extra` textproto lines; waits until it serves.
  absl::Status Start(const std::string& extra = "");
  // SIGKILLs the agent (the one this fixture started) and reaps it.
  void Kill9();
  // Waits for the agent to die by itself (fault injection); true if it did within the timeout.
  bool WaitForDeath(int seconds);
  bool running() const { return pid_ > 0; }

  // A stub authenticated as `client` ("backend", "operator", "global-job-node-a", "global-job-node-b").
  std::unique_ptr<v1::HostAgent::Stub> Stub(const std::string& client);
  // Issues an extra client certificate (e.g. role host-agent for netd calls) into the PKI dir; returns its
  // prefix.
  absl::StatusOr<std::string> Issue(const std::string& role, const std::string& instance);

  const std::string& dir() const { return dir_; }
  std::string state_dir() const { return dir_ + "/state"; }
  std::string runc_root() const { return dir_ + "/state/runtime"; }
  std::string log() const;
  int port() const { return port_; }

 private:
  AgentDaemon() = default;
  std::string dir_;  // temp dir: pki/, images/, state/, agent.textproto, agent.log
  int port_ = 0;     // the agent's gRPC port on 127.0.0.1
  pid_t pid_ = 0;    // the running agent, 0 when none
};

v1::WorkloadSpec ProbeSpec(const std::string& id);

}  // namespace strongroom::host_agent::testing
