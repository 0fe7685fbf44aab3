// A real StrongSwan charon on a rig host, configured only over VICI (common/vici.h): its own strongswan.conf,
// VICI socket and log under `dir`, and a private mount namespace with its own /run (charon's pid file path is
// compiled in as /var/run/charon.pid, so two charons would otherwise collide). A rig process: rig teardown
// stops it even after a crash (rig_sweep), and its /run tmpfs goes with its mount namespace.
//
//   SR_ASSIGN_OR_RETURN(auto charon, CharonInstance::Start(rig.get(), "vm", rig->state_dir() +
//   "/charon-vm")); SR_ASSIGN_OR_RETURN(ViciClient vici, charon->Vici());
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/ipsec_tunnel.h"
#include "common/vici.h"
#include "tests/rig/rig.h"

namespace strongroom {

class CharonInstance {
 public:
  // Writes the config (CharonConf), adds kernel-libipsec's bypass rules to the host's netns, starts charon on
  // `host` and waits until its VICI socket answers.
  static absl::StatusOr<std::unique_ptr<CharonInstance>> Start(Rig* rig, const std::string& host,
                                                               const std::string& dir, IpsecBackend backend);
  ~CharonInstance();  // Stop()

  absl::StatusOr<ViciClient> Vici() const;
  const std::string& vici_socket() const { return vici_socket_; }
  const std::string& log_path() const { return log_path_; }
  pid_t pid() const { return pid_; }
  absl::Status Stop();

 private:
  CharonInstance(Rig* rig, std::string vici_socket, std::string log_path, pid_t pid)
      : rig_(rig), vici_socket_(std::move(vici_socket)), log_path_(std::move(log_path)), pid_(pid) {}
  Rig* rig_;  // not owned; outlives this
  std::string vici_socket_;
  std::string log_path_;
  pid_t pid_ = 0;  // 0 once stopped
};

}  // namespace strongroom
