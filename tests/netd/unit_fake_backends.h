// In-memory stand-ins for OVSDB, the OpenFlow switch, the kernel's links and the node stack guard,
// sharing one state so a test can see (and break) what PortManager did: the unit tests of the
// domain logic.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "services/netd/backends.h"
#include "services/netd/request_validation.h"

namespace strongroom::netd::testing {

struct FakeWorld {
  struct Port {
    std::string uuid;
    unsigned int seqno = 0;
    ExternalIds external_ids;
    size_t interfaces = 1;
    int64_t ofport = 0;
    std::optional<std::string> error;
    int64_t ofport_request = 0;
  };

  // OVSDB
  bool ovsdb_up = true;
  bool bridge_exists = true;
  std::string fail_mode = "secure";
  ExternalIds bridge_external_ids;
  std::map<std::string, Port> ports;
  unsigned int seqno = 1;
  int next_uuid = 1;
  int64_t next_ofport = 1;
  int fail_add_ports = 0;             // the next N AddPort calls fail before committing
  bool honour_ofport_request = true;  // as ovs-vswitchd when the number is free
  // OpenFlow
  bool vswitchd_up = true;
  std::multimap<uint64_t, std::string> flows;  // cookie -> flow text
  std::vector<std::vector<OpenFlowSwitch::FlowMod>> bundles;
  std::vector<uint16_t> flushed_zones;
  int fail_bundles = 0;  // the next N bundles are rejected (nothing applied)
  std::optional<std::vector<OpenFlowSwitch::FlowMod>> in_flight;  // sent, not yet awaited
  std::optional<uint16_t> in_flight_flush_after;
  int sent_bundles = 0;  // SendBundle calls
  int barriers = 0;      // Barrier calls
  std::map<std::pair<uint64_t, std::string>, uint64_t> flow_packets;  // (cookie, flow text) -> packets
  // Kernel
  std::set<std::string> netns;                           // names that exist
  std::map<std::string, WorkloadLinks::LinkSpec> links;  // host-side veths netd created
  std::map<std::string, std::string> exposed;            // veth -> what its guards lack (a test set it)
  std::set<std::string> cannot_isolate;                  // veths whose Isolate fails
  std::set<std::string> unlisted;                        // veths an inconsistent listing skips
  int isolate_calls = 0;
  // The node stack guard
  bool guard_broken = false;      // the next Ensure finds it broken and repairs it
  bool guard_unavailable = false;  // Ensure fails (the kernel cannot enforce it)
  int guard_repairs = 0;

  void Touch() { ++seqno; }
  void AddForeignPort(const std::string& name, ExternalIds ids = {}) {
    ports[name] = {absl::StrCat("uuid-", next_uuid++), seqno, std::move(ids), 1, next_ofport++, std::nullopt};
    Touch();
  }
  size_t FlowsWithCookie(uint64_t cookie) const { return flows.count(cookie); }
};

inline uint64_t CookieOf(const std::string& flow) {
  uint64_t cookie = 0;
  if (absl::StartsWith(flow, "cookie=0x")) {
    (void)absl::SimpleHexAtoi(flow.substr(9, flow.find_first_of(",/") - 9), &cookie);
  }
  return cookie;
}

class FakeDatabase final : public OvsDatabase {
 public:
  explicit FakeDatabase(std::shared_ptr<FakeWorld> world) : world_(std::move(world)) {}
  absl::Status Sync(absl::Duration) override {
    return world_->ovsdb_up ? absl::OkStatus() : absl::UnavailableError("fake ovsdb-server is down");
  }
  unsigned int Seqno() const override { return world_->seqno; }
  absl::Status ReadBridge(const std::string& bridge, BridgeRow* row,
                          const std::function<void(const PortRow&)>& on_port) override {
    if (!world_->ovsdb_up) return absl::UnavailableError("fake ovsdb-server is down");
    if (!world_->bridge_exists) return absl::NotFoundError("bridge " + bridge + " does not exist");
    row->fail_mode = world_->fail_mode;
    row->external_ids = world_->bridge_external_ids;
    for (const auto& [name, port] : world_->ports) {
      std::vector<std::pair<absl::string_view, absl::string_view>> ids(port.external_ids.begin(),
                                                                       port.external_ids.end());
      PortRow view;
      view.uuid = port.uuid;
      view.seqno = port.seqno;
      view.name = name;
      view.external_ids = &ids;
      view.interface_count = port.interfaces;
      view.ofport = port.ofport;
      view.ofport_request = port.ofport_request;
      if (port.error) view.interface_error = *port.error;
      on_port(view);
    }
    return absl::OkStatus();
  }
  absl::StatusOr<int64_t> AddPort(const NewPort& port, absl::Duration, bool* committed) override {
    *committed = false;
    if (!world_->ovsdb_up) return absl::UnavailableError("fake ovsdb-server is down");
    if (world_->fail_add_ports > 0) {
      --world_->fail_add_ports;
      return absl::InternalError("fake: add port refused");
    }
    world_->Touch();
    world_->ports[port.name] = {absl::StrCat("uuid-", world_->next_uuid++),
                                world_->seqno,
                                port.port_external_ids,
                                1,
                                0,
                                std::nullopt,
                                port.ofport_request};
    for (const auto& [key, value] : port.bridge_external_ids) world_->bridge_external_ids[key] = value;
    *committed = true;
    if (!world_->vswitchd_up) return absl::UnavailableError("fake ovs-vswitchd did not apply the change");
    // As ovs-vswitchd: the requested number if no other port has it, else one of its own.
    bool taken = port.ofport_request <= 0 || !world_->honour_ofport_request;
    for (const auto& [name, other] : world_->ports)
      taken = taken || (name != port.name && other.ofport == port.ofport_request);
    world_->ports[port.name].ofport = taken ? world_->next_ofport++ : port.ofport_request;
    return world_->ports[port.name].ofport;
  }
  absl::Status DeletePort(const std::string&, const std::string& name, bool, absl::Duration,
                          bool* committed) override {
    *committed = false;
    if (!world_->ovsdb_up) return absl::UnavailableError("fake ovsdb-server is down");
    if (world_->ports.erase(name) == 0) return absl::NotFoundError("no port " + name);
    world_->Touch();
    *committed = true;
    return absl::OkStatus();
  }
  absl::Status UpdatePortExternalIds(const std::string& name, const ExternalIds& set,
                                     absl::Duration) override {
    if (!world_->ovsdb_up) return absl::UnavailableError("fake ovsdb-server is down");
    auto it = world_->ports.find(name);
    if (it == world_->ports.end()) return absl::NotFoundError("no port " + name);
    world_->Touch();
    for (const auto& [key, value] : set) it->second.external_ids[key] = value;
    it->second.seqno = world_->seqno;
    return absl::OkStatus();
  }
  absl::Status SetFailMode(const std::string&, const std::string& mode, absl::Duration) override {
    world_->fail_mode = mode;
    world_->Touch();
    return absl::OkStatus();
  }

 private:
  std::shared_ptr<FakeWorld> world_;
};

class FakeSwitch final : public OpenFlowSwitch {
 public:
  explicit FakeSwitch(std::shared_ptr<FakeWorld> world) : world_(std::move(world)) {}
  absl::Status ApplyBundle(const std::vector<FlowMod>& mods, std::optional<uint16_t> flush_conntrack_zone,
                           absl::Duration) override {
    if (!world_->vswitchd_up) return absl::UnavailableError("fake ovs-vswitchd is down");
    if (flush_conntrack_zone) world_->flushed_zones.push_back(*flush_conntrack_zone);
    if (world_->fail_bundles > 0) {
      --world_->fail_bundles;
      return absl::InternalError("fake: bundle rejected, nothing applied");
    }
    world_->bundles.push_back(mods);
    for (const FlowMod& mod : mods) {
      if (mod.command == FlowMod::Command::kAdd) {
        world_->flows.emplace(CookieOf(mod.text), mod.text);
      } else if (mod.text.empty()) {
        world_->flows.clear();
      } else {
        world_->flows.erase(CookieOf(mod.text));
      }
    }
    return absl::OkStatus();
  }
  // Applied at AwaitBundle (as ovs-vswitchd applies it after the send), all or nothing here.
  absl::Status SendBundle(const std::vector<FlowMod>& mods, std::optional<uint16_t> flush_before,
                          std::optional<uint16_t> flush_after, absl::Duration) override {
    if (world_->in_flight) return absl::InternalError("fake: an earlier bundle was not awaited");
    if (!world_->vswitchd_up) return absl::UnavailableError("fake ovs-vswitchd is down");
    ++world_->sent_bundles;
    if (flush_before) world_->flushed_zones.push_back(*flush_before);
    world_->in_flight = mods;
    world_->in_flight_flush_after = flush_after;
    return absl::OkStatus();
  }
  absl::Status AwaitBundle(absl::Duration timeout) override {
    if (!world_->in_flight) return absl::InternalError("fake: no bundle in flight");
    std::vector<FlowMod> mods = std::move(*world_->in_flight);
    world_->in_flight.reset();
    absl::Status applied = ApplyBundle(mods, std::nullopt, timeout);
    if (applied.ok() && world_->in_flight_flush_after)
      world_->flushed_zones.push_back(*world_->in_flight_flush_after);
    return applied;
  }
  absl::Status Barrier(absl::Duration) override {
    if (world_->in_flight) return absl::InternalError("fake: a bundle in flight was not awaited");
    if (!world_->vswitchd_up) return absl::UnavailableError("fake ovs-vswitchd is down");
    ++world_->barriers;
    return absl::OkStatus();
  }
  absl::StatusOr<uint64_t> CountFlows(uint64_t cookie, uint64_t mask, absl::Duration) override {
    if (!world_->vswitchd_up) return absl::UnavailableError("fake ovs-vswitchd is down");
    uint64_t count = 0;
    for (const auto& [flow_cookie, text] : world_->flows) count += (flow_cookie & mask) == (cookie & mask);
    return count;
  }
  absl::StatusOr<std::vector<FlowCounters>> FlowStatistics(uint64_t cookie, uint64_t mask,
                                                           absl::Duration) override {
    if (!world_->vswitchd_up) return absl::UnavailableError("fake ovs-vswitchd is down");
    std::vector<FlowCounters> counters;
    for (const auto& [flow_cookie, text] : world_->flows) {
      if ((flow_cookie & mask) != (cookie & mask)) continue;
      FlowCounters flow;
      flow.cookie = flow_cookie;
      (void)absl::SimpleAtoi(Field(text, "table"), &flow.table);
      (void)absl::SimpleAtoi(Field(text, "priority"), &flow.priority);
      if (auto it = world_->flow_packets.find({flow_cookie, text}); it != world_->flow_packets.end()) {
        flow.packets = it->second;
        flow.bytes = it->second * 100;
      }
      counters.push_back(flow);
    }
    return counters;
  }
  absl::Status FlushConntrackZone(uint16_t zone, absl::Duration) override {
    if (!world_->vswitchd_up) return absl::UnavailableError("fake ovs-vswitchd is down");
    world_->flushed_zones.push_back(zone);
    return absl::OkStatus();
  }

  // The value of `field=` in a flow's text, "" if absent.
  static std::string Field(const std::string& flow, const std::string& field) {
    for (absl::string_view part : absl::StrSplit(flow, ',')) {
      if (absl::StartsWith(part, field + "=")) return std::string(part.substr(field.size() + 1));
    }
    return "";
  }

 private:
  std::shared_ptr<FakeWorld> world_;
};

class FakeLinks final : public WorkloadLinks {
 public:
  explicit FakeLinks(std::shared_ptr<FakeWorld> world) : world_(std::move(world)) {}
  absl::Status CheckNetns(const std::string& netns) override {
    absl::StatusOr<std::string> path = NetnsPath(netns);
    if (!path.ok()) return path.status();
    if (world_->netns.count(netns) == 0) {
      return absl::FailedPreconditionError("netns \"" + netns + "\" does not exist (" + *path + ")");
    }
    return absl::OkStatus();
  }
  absl::Status Create(const LinkSpec& spec, absl::Duration) override {
    if (!spec.tap) {
      if (absl::Status s = CheckNetns(spec.netns); !s.ok()) return s;
    }
    world_->links[spec.host_name] = spec;
    return absl::OkStatus();
  }
  absl::Status Delete(const std::string& host_name) override {
    world_->links.erase(host_name);
    return absl::OkStatus();
  }
  absl::StatusOr<bool> Exists(const std::string& host_name) override {
    return world_->links.count(host_name) > 0;
  }
  absl::StatusOr<OwnedLinks> ListOwned() override {
    OwnedLinks owned;
    for (const auto& [name, spec] : world_->links) {
      if (world_->unlisted.count(name) != 0) {
        owned.complete = false;
        continue;
      }
      auto exposed = world_->exposed.find(name);
      owned.links.push_back({name, exposed == world_->exposed.end() ? "" : exposed->second});
    }
    return owned;
  }
  absl::Status Isolate(const std::string& host_name) override {
    ++world_->isolate_calls;
    if (world_->cannot_isolate.count(host_name) != 0) return absl::InternalError("fake: cannot isolate");
    world_->exposed.erase(host_name);
    return absl::OkStatus();
  }

 private:
  std::shared_ptr<FakeWorld> world_;
};

class FakeGuard final : public HostStackGuard {
 public:
  explicit FakeGuard(std::shared_ptr<FakeWorld> world) : world_(std::move(world)) {}
  absl::StatusOr<std::string> Ensure() override {
    if (world_->guard_unavailable) return absl::FailedPreconditionError("fake: no nf_tables");
    if (!world_->guard_broken) return std::string();
    world_->guard_broken = false;
    ++world_->guard_repairs;
    return std::string("fake: table inet strongroom_netd is missing");
  }
  absl::StatusOr<std::vector<ChainCounters>> Counters() override {
    return std::vector<ChainCounters>{{"inet from_workload_ports", 3, 300}};
  }

 private:
  std::shared_ptr<FakeWorld> world_;
};

}  // namespace strongroom::netd::testing
