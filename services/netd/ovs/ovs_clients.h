// The real OvsDatabase and OpenFlowSwitch: thin C++ owners of the C shim's handles
// (ovs_shim.h), translating its codes into absl::Status.
#pragma once

#include <memory>
#include <mutex>
#include <string>

#include "services/netd/backends.h"

struct sr_ovsdb;
struct sr_openflow;

namespace strongroom::netd {

// Initialises libopenvswitch for this process. Call once from main() before any thread that
// uses OVS starts (sr_ovs_init's requirements).
void InitOpenvSwitch();

class ShimOvsDatabase final : public OvsDatabase {
 public:
  // Connects in the background to `remote` ("unix:PATH" or "tcp:IP:PORT").
  explicit ShimOvsDatabase(std::string remote);
  ~ShimOvsDatabase() override;

  absl::Status Sync(absl::Duration timeout) override;
  unsigned int Seqno() const override;
  absl::Status ReadBridge(const std::string& bridge, BridgeRow* row,
                          const std::function<void(const PortRow&)>& on_port) override;
  absl::StatusOr<int64_t> AddPort(const NewPort& port, absl::Duration timeout, bool* committed) override;
  absl::Status DeletePort(const std::string& bridge, const std::string& name, bool wait_applied,
                          absl::Duration timeout, bool* committed) override;
  absl::Status UpdatePortExternalIds(const std::string& name, const ExternalIds& set,
                                     absl::Duration timeout) override;
  absl::Status SetFailMode(const std::string& bridge, const std::string& fail_mode,
                           absl::Duration timeout) override;

 private:
  mutable std::mutex mu_;  // the IDL is not thread-safe
  sr_ovsdb* db_;           // owned
};

class ShimOpenFlowSwitch final : public OpenFlowSwitch {
 public:
  // `target` e.g. "unix:/var/run/openvswitch/br-secure.mgmt". Connects lazily, and again after
  // any connection failure (ovs-vswitchd restarts close the socket).
  explicit ShimOpenFlowSwitch(std::string target);
  ~ShimOpenFlowSwitch() override;

  absl::Status ApplyBundle(const std::vector<FlowMod>& mods, std::optional<uint16_t> flush_conntrack_zone,
                           absl::Duration timeout) override;
  absl::Status SendBundle(const std::vector<FlowMod>& mods, std::optional<uint16_t> flush_before,
                          std::optional<uint16_t> flush_after, absl::Duration timeout) override;
  absl::Status AwaitBundle(absl::Duration timeout) override;
  absl::Status Barrier(absl::Duration timeout) override;
  absl::StatusOr<uint64_t> CountFlows(uint64_t cookie, uint64_t cookie_mask, absl::Duration timeout) override;
  absl::StatusOr<std::vector<FlowCounters>> FlowStatistics(uint64_t cookie, uint64_t cookie_mask,
                                                           absl::Duration timeout) override;
  absl::Status FlushConntrackZone(uint16_t zone, absl::Duration timeout) override;

 private:
  // Opens the connection if needed.
  absl::Status ConnectLocked(absl::Duration timeout);
  // Drops the connection after an error that leaves it in an unknown state.
  absl::Status CheckLocked(int code, const char* message);

  const std::string target_;
  std::mutex mu_;                    // a vconn is not thread-safe
  sr_openflow* openflow_ = nullptr;  // owned; null while disconnected
};

// Parses one flow exactly as ApplyBundle would (tests check generated flows with it).
absl::Status ParseFlowMod(const OpenFlowSwitch::FlowMod& mod);

}  // namespace strongroom::netd
