#include "services/netd/ovs/ovs_clients.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "services/netd/ovs/ovs_shim.h"

namespace strongroom::netd {
namespace {

absl::Status FromShim(int code, const char* message) {
  switch (code) {
    case SR_OVS_OK:
      return absl::OkStatus();
    case SR_OVS_UNAVAILABLE:
      return absl::UnavailableError(message);
    case SR_OVS_NOT_FOUND:
      return absl::NotFoundError(message);
    case SR_OVS_CONFLICT:
      return absl::AbortedError(message);
    case SR_OVS_INVALID:
      return absl::InvalidArgumentError(message);
    default:
      return absl::InternalError(message);
  }
}

int TimeoutMs(absl::Duration timeout) {
  return static_cast<int>(std::clamp<int64_t>(absl::ToInt64Milliseconds(timeout), 0, 3600 * 1000));
}

// Keeps key/value strings alive while the shim reads them as sr_kv.
struct KvArray {
  explicit KvArray(const ExternalIds& map) {
    items.reserve(map.size());
    for (const auto& [key, value] : map) items.push_back({key.c_str(), value.c_str()});
  }
  std::vector<sr_kv> items;
};

sr_flow_command ShimCommand(OpenFlowSwitch::FlowMod::Command command) {
  switch (command) {
    case OpenFlowSwitch::FlowMod::Command::kAdd:
      return SR_FLOW_ADD;
    case OpenFlowSwitch::FlowMod::Command::kDelete:
      return SR_FLOW_DELETE;
    case OpenFlowSwitch::FlowMod::Command::kDeleteStrict:
      return SR_FLOW_DELETE_STRICT;
  }
  return SR_FLOW_ADD;
}

// The shim's view of `mods`; it points into them, so it must not outlive them.
std::vector<sr_flow_mod> ShimMods(const std::vector<OpenFlowSwitch::FlowMod>& mods) {
  std::vector<sr_flow_mod> shim_mods;
  shim_mods.reserve(mods.size());
  for (const OpenFlowSwitch::FlowMod& mod : mods) shim_mods.push_back({ShimCommand(mod.command), mod.text.c_str()});
  return shim_mods;
}

// A conntrack zone for the shim: -1 for none.
int ShimZone(std::optional<uint16_t> zone) { return zone ? static_cast<int>(*zone) : -1; }

struct ReadContext {
  OvsDatabase::BridgeRow* row;
  const std::function<void(const OvsDatabase::PortRow&)>* on_port;
  std::vector<std::pair<absl::string_view, absl::string_view>> external_ids;  // reused per port
};

void OnBridge(void* context, const sr_bridge_view* bridge) {
  auto* read = static_cast<ReadContext*>(context);
  read->row->fail_mode = bridge->fail_mode;
  read->row->datapath_type = bridge->datapath_type;
  read->row->external_ids.clear();
  for (size_t i = 0; i < bridge->n_external_ids; ++i) {
    read->row->external_ids.emplace(bridge->external_ids[i].key, bridge->external_ids[i].value);
  }
}

void OnPort(void* context, const sr_port_view* port) {
  auto* read = static_cast<ReadContext*>(context);
  read->external_ids.clear();
  for (size_t i = 0; i < port->n_external_ids; ++i) {
    read->external_ids.emplace_back(port->external_ids[i].key, port->external_ids[i].value);
  }
  OvsDatabase::PortRow row;
  row.uuid = port->uuid;
  row.seqno = port->seqno;
  row.name = port->name;
  row.external_ids = &read->external_ids;
  row.interface_count = port->n_interfaces;
  row.interface_type = port->iface_type;
  row.ofport = port->ofport;
  row.ofport_request = port->ofport_request;
  if (port->iface_error != nullptr) row.interface_error = absl::string_view(port->iface_error);
  (*read->on_port)(row);
}

}  // namespace

void InitOpenvSwitch() { sr_ovs_init(); }

absl::Status ParseFlowMod(const OpenFlowSwitch::FlowMod& mod) {
  sr_flow_mod shim_mod{ShimCommand(mod.command), mod.text.c_str()};
  sr_ovs_error error{};
  const int code = sr_flow_parse(&shim_mod, &error);
  return FromShim(code, error.message);
}

ShimOvsDatabase::ShimOvsDatabase(std::string remote) : db_(sr_ovsdb_create(remote.c_str())) {}

ShimOvsDatabase::~ShimOvsDatabase() { sr_ovsdb_destroy(db_); }

absl::Status ShimOvsDatabase::Sync(absl::Duration timeout) {
  std::lock_guard<std::mutex> lock(mu_);
  sr_ovs_error error{};
  const int code = sr_ovsdb_sync(db_, TimeoutMs(timeout), &error);
  return FromShim(code, error.message);
}

unsigned int ShimOvsDatabase::Seqno() const {
  std::lock_guard<std::mutex> lock(mu_);
  return sr_ovsdb_seqno(db_);
}

absl::Status ShimOvsDatabase::ReadBridge(const std::string& bridge, BridgeRow* row,
                                         const std::function<void(const PortRow&)>& on_port) {
  std::lock_guard<std::mutex> lock(mu_);
  ReadContext context{row, &on_port, {}};
  sr_ovs_error error{};
  const int code = sr_ovsdb_read_bridge(db_, bridge.c_str(), &context, OnBridge, OnPort, &error);
  return FromShim(code, error.message);
}

absl::StatusOr<int64_t> ShimOvsDatabase::AddPort(const NewPort& port, absl::Duration timeout,
                                                 bool* committed) {
  std::lock_guard<std::mutex> lock(mu_);
  KvArray port_ids(port.port_external_ids);
  KvArray interface_ids(port.interface_external_ids);
  KvArray bridge_ids(port.bridge_external_ids);
  sr_port_add request{port.bridge.c_str(),     port.name.c_str(),          port_ids.items.data(),
                      port_ids.items.size(),   interface_ids.items.data(), interface_ids.items.size(),
                      bridge_ids.items.data(), bridge_ids.items.size(),    port.ofport_request};
  int64_t ofport = 0;
  int was_committed = 0;
  sr_ovs_error error{};
  const int code = sr_ovsdb_add_port(db_, &request, TimeoutMs(timeout), &ofport, &was_committed, &error);
  *committed = was_committed != 0;
  if (code != SR_OVS_OK) return FromShim(code, error.message);
  return ofport;
}

absl::Status ShimOvsDatabase::DeletePort(const std::string& bridge, const std::string& name,
                                         bool wait_applied, absl::Duration timeout, bool* committed) {
  std::lock_guard<std::mutex> lock(mu_);
  int was_committed = 0;
  sr_ovs_error error{};
  const int code = sr_ovsdb_delete_port(db_, bridge.c_str(), name.c_str(), wait_applied ? 1 : 0,
                                        TimeoutMs(timeout), &was_committed, &error);
  *committed = was_committed != 0;
  return FromShim(code, error.message);
}

absl::Status ShimOvsDatabase::UpdatePortExternalIds(const std::string& name, const ExternalIds& set,
                                                    absl::Duration timeout) {
  std::lock_guard<std::mutex> lock(mu_);
  KvArray items(set);
  sr_ovs_error error{};
  const int code = sr_ovsdb_update_port_external_ids(
      db_, name.c_str(), items.items.data(), items.items.size(), nullptr, 0, TimeoutMs(timeout), &error);
  return FromShim(code, error.message);
}

absl::Status ShimOvsDatabase::SetFailMode(const std::string& bridge, const std::string& fail_mode,
                                          absl::Duration timeout) {
  std::lock_guard<std::mutex> lock(mu_);
  sr_ovs_error error{};
  const int code = sr_ovsdb_set_fail_mode(db_, bridge.c_str(), fail_mode.c_str(), TimeoutMs(timeout), &error);
  return FromShim(code, error.message);
}

ShimOpenFlowSwitch::ShimOpenFlowSwitch(std::string target) : target_(std::move(target)) {}

ShimOpenFlowSwitch::~ShimOpenFlowSwitch() { sr_openflow_close(openflow_); }

absl::Status ShimOpenFlowSwitch::ConnectLocked(absl::Duration timeout) {
  if (openflow_ != nullptr) return absl::OkStatus();
  sr_ovs_error error{};
  const int code = sr_openflow_open(target_.c_str(), TimeoutMs(timeout), &openflow_, &error);
  return FromShim(code, error.message);
}

absl::Status ShimOpenFlowSwitch::CheckLocked(int code, const char* message) {
  // After a connection failure or a timeout the stream may hold stale replies: start afresh.
  if (code == SR_OVS_UNAVAILABLE || code == SR_OVS_INTERNAL) {
    sr_openflow_close(openflow_);
    openflow_ = nullptr;
  }
  return FromShim(code, message);
}

absl::Status ShimOpenFlowSwitch::ApplyBundle(const std::vector<FlowMod>& mods,
                                             std::optional<uint16_t> flush_conntrack_zone,
                                             absl::Duration timeout) {
  std::lock_guard<std::mutex> lock(mu_);
  if (absl::Status s = ConnectLocked(timeout); !s.ok()) return s;
  const std::vector<sr_flow_mod> shim_mods = ShimMods(mods);
  sr_ovs_error error{};
  const int code = sr_openflow_bundle(openflow_, shim_mods.data(), shim_mods.size(), ShimZone(flush_conntrack_zone),
                                      TimeoutMs(timeout), &error);
  return CheckLocked(code, error.message);
}

absl::Status ShimOpenFlowSwitch::SendBundle(const std::vector<FlowMod>& mods,
                                            std::optional<uint16_t> flush_before,
                                            std::optional<uint16_t> flush_after, absl::Duration timeout) {
  std::lock_guard<std::mutex> lock(mu_);
  if (absl::Status s = ConnectLocked(timeout); !s.ok()) return s;
  const std::vector<sr_flow_mod> shim_mods = ShimMods(mods);
  sr_ovs_error error{};
  const int code = sr_openflow_bundle_send(openflow_, shim_mods.data(), shim_mods.size(), ShimZone(flush_before),
                                           ShimZone(flush_after), TimeoutMs(timeout), &error);
  return CheckLocked(code, error.message);
}

absl::Status ShimOpenFlowSwitch::AwaitBundle(absl::Duration timeout) {
  std::lock_guard<std::mutex> lock(mu_);
  if (openflow_ == nullptr) return absl::UnavailableError("ovs-vswitchd at " + target_ + ": connection lost");
  sr_ovs_error error{};
  const int code = sr_openflow_bundle_await(openflow_, TimeoutMs(timeout), &error);
  return CheckLocked(code, error.message);
}

absl::Status ShimOpenFlowSwitch::Barrier(absl::Duration timeout) {
  std::lock_guard<std::mutex> lock(mu_);
  if (absl::Status s = ConnectLocked(timeout); !s.ok()) return s;
  sr_ovs_error error{};
  const int code = sr_openflow_barrier(openflow_, TimeoutMs(timeout), &error);
  return CheckLocked(code, error.message);
}

absl::StatusOr<uint64_t> ShimOpenFlowSwitch::CountFlows(uint64_t cookie, uint64_t cookie_mask,
                                                        absl::Duration timeout) {
  std::lock_guard<std::mutex> lock(mu_);
  if (absl::Status s = ConnectLocked(timeout); !s.ok()) return s;
  uint64_t count = 0;
  sr_ovs_error error{};
  const int code =
      sr_openflow_count_flows(openflow_, cookie, cookie_mask, TimeoutMs(timeout), &count, &error);
  if (absl::Status s = CheckLocked(code, error.message); !s.ok()) return s;
  return count;
}

absl::StatusOr<std::vector<OpenFlowSwitch::FlowCounters>> ShimOpenFlowSwitch::FlowStatistics(
    uint64_t cookie, uint64_t cookie_mask, absl::Duration timeout) {
  std::lock_guard<std::mutex> lock(mu_);
  if (absl::Status s = ConnectLocked(timeout); !s.ok()) return s;
  std::vector<FlowCounters> flows;
  sr_ovs_error error{};
  const int code = sr_openflow_flow_counters(
      openflow_, cookie, cookie_mask, TimeoutMs(timeout), &flows,
      [](void* context, const sr_flow_counters* flow) {
        static_cast<std::vector<FlowCounters>*>(context)->push_back(
            {flow->cookie, flow->table_id, flow->priority, flow->packets == UINT64_MAX ? 0 : flow->packets,
             flow->bytes == UINT64_MAX ? 0 : flow->bytes});
      },
      &error);
  if (absl::Status s = CheckLocked(code, error.message); !s.ok()) return s;
  return flows;
}

absl::Status ShimOpenFlowSwitch::FlushConntrackZone(uint16_t zone, absl::Duration timeout) {
  std::lock_guard<std::mutex> lock(mu_);
  if (absl::Status s = ConnectLocked(timeout); !s.ok()) return s;
  sr_ovs_error error{};
  const int code = sr_openflow_flush_ct_zone(openflow_, zone, TimeoutMs(timeout), &error);
  return CheckLocked(code, error.message);
}

}  // namespace strongroom::netd
