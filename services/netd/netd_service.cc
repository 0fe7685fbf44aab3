#include "services/netd/netd_service.h"

#include <algorithm>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/call_context.h"
#include "common/identity.h"
#include "common/audit.h"
#include "common/status.h"
#include "google/protobuf/util/time_util.h"
#include "services/netd/request_validation.h"

namespace strongroom::netd {
namespace {

using google::protobuf::RepeatedPtrField;
using google::protobuf::util::TimeUtil;

constexpr uint32_t kDefaultPageSize = 100;
constexpr uint32_t kMaxPageSize = 1000;

template <typename RuleProto, typename CidrGetter>
std::vector<RuleInput> Inputs(const RepeatedPtrField<RuleProto>& rules, CidrGetter cidr) {
  std::vector<RuleInput> inputs;
  inputs.reserve(rules.size());
  for (const RuleProto& rule : rules) {
    inputs.push_back({cidr(rule), static_cast<int>(rule.protocol()), rule.port_start(), rule.port_end(),
                      rule.description()});
  }
  return inputs;
}

v1::Protocol ProtocolToProto(Protocol protocol) {
  return protocol == Protocol::kTcp ? v1::PROTOCOL_TCP : v1::PROTOCOL_UDP;
}

v1::DropReason DropReasonToProto(DropReason reason) {
  switch (reason) {
    case DropReason::kVlanTagged:
      return v1::DROP_REASON_VLAN_TAGGED;
    case DropReason::kArpNotAllowed:
      return v1::DROP_REASON_ARP_NOT_ALLOWED;
    case DropReason::kSpoofed:
      return v1::DROP_REASON_SPOOFED;
    case DropReason::kIpv6:
      return v1::DROP_REASON_IPV6;
    case DropReason::kOtherProtocol:
      return v1::DROP_REASON_OTHER_PROTOCOL;
    case DropReason::kEgressNotAllowed:
      return v1::DROP_REASON_EGRESS_NOT_ALLOWED;
    case DropReason::kEgressInvalid:
      return v1::DROP_REASON_EGRESS_INVALID;
    case DropReason::kIngressNotAllowed:
      return v1::DROP_REASON_INGRESS_NOT_ALLOWED;
    case DropReason::kIngressInvalid:
      return v1::DROP_REASON_INGRESS_INVALID;
  }
  return v1::DROP_REASON_UNSPECIFIED;
}

google::protobuf::Timestamp TimeToProto(absl::Time time) {
  return TimeUtil::NanosecondsToTimestamp(absl::ToUnixNanos(time));
}

// Errors read "netd: AllocatePort(workload w-17): ..." so an operator knows where they came from.
grpc::Status Fail(absl::string_view method, absl::string_view workload_id, const absl::Status& status) {
  return ToGrpcStatus(Annotate(status, workload_id.empty()
                                           ? absl::StrCat("netd: ", method)
                                           : absl::StrCat("netd: ", method, "(workload ", workload_id, ")")));
}

// ListPorts page tokens: web-safe base64 of "<states filter>|<last workload id returned>".
std::string StatesKey(const google::protobuf::RepeatedField<int>& states) {
  std::vector<int> sorted(states.begin(), states.end());
  std::sort(sorted.begin(), sorted.end());
  return absl::StrJoin(sorted, ",");
}

}  // namespace

absl::StatusOr<Policy> PolicyFromRequest(const RepeatedPtrField<v1::EgressRule>& egress,
                                         const RepeatedPtrField<v1::IngressRule>& ingress,
                                         const PolicyLimits& limits) {
  // Counts first, so 10,000 rules are refused before being copied.
  SR_RETURN_IF_ERROR(CheckRuleCounts(egress.size(), ingress.size(), limits));
  return ValidatePolicy(Inputs(egress, [](const v1::EgressRule& r) { return r.destination_cidr(); }),
                        Inputs(ingress, [](const v1::IngressRule& r) { return r.source_cidr(); }), limits);
}

void PortToProto(const PortStatus& status, v1::Port* port) {
  const PortRecord& record = status.record;
  port->set_workload_id(record.workload_id);
  port->set_netns(record.netns);
  port->set_tap(record.tap);
  v1::NetworkAttachment* attachment = port->mutable_attachment();
  attachment->set_port_name(record.port_name);
  attachment->set_interface_name(record.interface_name);
  attachment->set_ipv4_address(FormatIpv4(record.address));
  attachment->set_prefix_length(static_cast<uint32_t>(record.prefix_length));
  attachment->set_gateway(FormatIpv4(record.gateway));
  attachment->set_mac(record.mac);
  attachment->set_mtu(static_cast<uint32_t>(record.mtu));
  attachment->set_generation(record.generation);
  port->set_ofport(static_cast<int32_t>(std::max<int64_t>(status.ofport, 0)));
  for (const Rule& rule : record.policy.egress) {
    v1::EgressRule* out = port->add_egress_allowlist();
    out->set_destination_cidr(rule.peer.ToString());
    out->set_protocol(ProtocolToProto(rule.protocol));
    out->set_port_start(rule.port_first);
    out->set_port_end(rule.port_last);
    out->set_description(rule.description);
  }
  for (const Rule& rule : record.policy.ingress) {
    v1::IngressRule* out = port->add_ingress_allowlist();
    out->set_source_cidr(rule.peer.ToString());
    out->set_protocol(ProtocolToProto(rule.protocol));
    out->set_port_start(rule.port_first);
    out->set_port_end(rule.port_last);
    out->set_description(rule.description);
  }
  port->set_owner(record.owner_label);
  if (absl::StatusOr<Identity> identity = ParseSpiffeId(record.requested_by); identity.ok()) {
    v1::Identity* by = port->mutable_requested_by();
    by->set_spiffe_id(identity->SpiffeId());
    by->set_trust_domain(identity->trust_domain);
    by->set_role(ProtoRole(identity->role));
    by->set_instance(identity->instance);
  }
  port->set_policy_revision(record.policy_revision);
  port->set_cookie(record.Cookie());
  port->set_state(status.ready ? v1::PORT_STATE_READY : v1::PORT_STATE_DEGRADED);
  port->set_status_message(status.status_message.substr(0, 256));
  *port->mutable_created_time() = TimeToProto(record.created_time);
  *port->mutable_updated_time() = TimeToProto(record.updated_time);
  for (const DropCount& drop : status.drops) {
    v1::DropCounter* counter = port->add_dropped();
    counter->set_reason(DropReasonToProto(drop.reason));
    counter->set_packets(drop.packets);
    counter->set_bytes(drop.bytes);
  }
}

NetdService::NetdService(std::shared_ptr<PortManager> manager, PolicyLimits limits, std::string node_instance)
    : manager_(std::move(manager)), limits_(std::move(limits)), node_instance_(std::move(node_instance)) {}

absl::Status NetdService::CheckSameNode(const grpc::ServerContext& context,
                                        std::string* caller_spiffe_id) const {
  SR_ASSIGN_OR_RETURN(const Identity caller, CallerIdentity(context));
  if (caller_spiffe_id != nullptr) *caller_spiffe_id = caller.SpiffeId();
  if (caller.role == Role::kHostAgent && caller.instance != node_instance_) {
    return absl::PermissionDeniedError(absl::StrCat(
        "host-agent ", caller.instance, " may manage ports only on its own node; this is ", node_instance_));
  }
  return absl::OkStatus();
}

grpc::Status NetdService::AllocatePort(grpc::ServerContext* context, const v1::AllocatePortRequest* request,
                                       v1::AllocatePortResponse* response) {
  const std::string& id = request->workload_id();
  // The request's shape is checked first: it reveals nothing about this node.
  AllocateRequest allocate;
  auto prepare = [&]() -> absl::Status {
    SR_RETURN_IF_ERROR(CheckWorkloadId(id));
    switch (request->target_case()) {
      case v1::AllocatePortRequest::kNetns: {
        SR_RETURN_IF_ERROR(NetnsPath(request->netns()).status());
        SR_ASSIGN_OR_RETURN(allocate.interface_name, InterfaceName(request->interface_name()));
        allocate.netns = request->netns();
        break;
      }
      case v1::AllocatePortRequest::kTap:
        if (!request->interface_name().empty()) {
          return absl::InvalidArgumentError(
              "interface_name: must be empty for a tap (the VM's NIC is named by the guest)");
        }
        allocate.tap = true;
        break;
      default:
        return absl::InvalidArgumentError("netns: required (or tap, for a VM)");
    }
    SR_ASSIGN_OR_RETURN(allocate.owner_label, OwnerLabel(request->owner(), id));
    SR_ASSIGN_OR_RETURN(allocate.policy, PolicyFromRequest(request->egress_allowlist(),
                                                           request->ingress_allowlist(), limits_));
    SR_RETURN_IF_ERROR(CheckSameNode(*context, &allocate.requested_by));
    allocate.workload_id = id;
    return absl::OkStatus();
  };
  if (absl::Status s = prepare(); !s.ok()) return Fail("AllocatePort", CheckWorkloadId(id).ok() ? id : "", s);
  absl::StatusOr<AllocateResult> result = manager_->Allocate(allocate);
  if (!result.ok()) return Fail("AllocatePort", id, result.status());
  PortToProto(result->port, response->mutable_port());
  response->set_created(result->created);
  return grpc::Status::OK;
}

grpc::Status NetdService::UpdateEgress(grpc::ServerContext* context, const v1::UpdateEgressRequest* request,
                                       v1::UpdateEgressResponse* response) {
  const std::string& id = request->workload_id();
  Policy policy;
  auto prepare = [&]() -> absl::Status {
    SR_RETURN_IF_ERROR(CheckWorkloadId(id));
    SR_ASSIGN_OR_RETURN(
        policy, PolicyFromRequest(request->egress_allowlist(), request->ingress_allowlist(), limits_));
    return CheckSameNode(*context, nullptr);
  };
  if (absl::Status s = prepare(); !s.ok()) return Fail("UpdateEgress", CheckWorkloadId(id).ok() ? id : "", s);
  absl::StatusOr<PortStatus> port = manager_->UpdatePolicy(id, policy, request->expected_generation());
  if (!port.ok()) return Fail("UpdateEgress", id, port.status());
  PortToProto(*port, response->mutable_port());
  return grpc::Status::OK;
}

grpc::Status NetdService::ReleasePort(grpc::ServerContext* context, const v1::ReleasePortRequest* request,
                                      v1::ReleasePortResponse* response) {
  const std::string& id = request->workload_id();
  if (absl::Status s = CheckWorkloadId(id); !s.ok()) return Fail("ReleasePort", "", s);
  if (absl::Status s = CheckSameNode(*context, nullptr); !s.ok()) return Fail("ReleasePort", id, s);
  absl::StatusOr<std::optional<PortStatus>> released = manager_->Release(id, request->expected_generation());
  if (!released.ok()) return Fail("ReleasePort", id, released.status());
  response->set_released(released->has_value());
  if (released->has_value()) PortToProto(**released, response->mutable_port());
  return grpc::Status::OK;
}

grpc::Status NetdService::GetPort(grpc::ServerContext* context, const v1::GetPortRequest* request,
                                  v1::GetPortResponse* response) {
  const std::string& id = request->workload_id();
  if (absl::Status s = CheckWorkloadId(id); !s.ok()) return Fail("GetPort", "", s);
  if (absl::Status s = CheckSameNode(*context, nullptr); !s.ok()) return Fail("GetPort", id, s);
  absl::StatusOr<PortStatus> port = manager_->Get(id);
  if (!port.ok()) return Fail("GetPort", id, port.status());
  PortToProto(*port, response->mutable_port());
  return grpc::Status::OK;
}

grpc::Status NetdService::ListPorts(grpc::ServerContext* context, const v1::ListPortsRequest* request,
                                    v1::ListPortsResponse* response) {
  const std::string states_key = StatesKey(request->states());
  std::string after;
  if (!request->page().page_token().empty()) {
    std::string token;
    std::vector<std::string> parts;
    if (request->page().page_token().size() <= 1024 &&
        absl::WebSafeBase64Unescape(request->page().page_token(), &token)) {
      parts = absl::StrSplit(token, absl::MaxSplits('|', 1));
    }
    if (parts.size() != 2 || parts[0] != states_key) {
      return Fail(
          "ListPorts", "",
          absl::InvalidArgumentError("page.page_token: not a token of this listing (or the filter changed)"));
    }
    after = parts[1];
  }
  if (absl::Status s = CheckSameNode(*context, nullptr); !s.ok()) return Fail("ListPorts", "", s);
  uint32_t page_size = request->page().page_size() == 0 ? kDefaultPageSize : request->page().page_size();
  page_size = std::min(page_size, kMaxPageSize);

  absl::StatusOr<std::vector<PortStatus>> ports = manager_->List();
  if (!ports.ok()) return Fail("ListPorts", "", ports.status());
  for (const PortStatus& port : *ports) {
    if (!after.empty() && port.record.workload_id <= after) continue;
    const v1::PortState state = port.ready ? v1::PORT_STATE_READY : v1::PORT_STATE_DEGRADED;
    if (!request->states().empty() &&
        std::find(request->states().begin(), request->states().end(), state) == request->states().end()) {
      continue;
    }
    if (static_cast<uint32_t>(response->ports_size()) == page_size) {
      response->mutable_page()->set_next_page_token(absl::WebSafeBase64Escape(
          absl::StrCat(states_key, "|", response->ports(response->ports_size() - 1).workload_id())));
      break;
    }
    PortToProto(port, response->add_ports());
  }
  return grpc::Status::OK;
}

}  // namespace strongroom::netd
