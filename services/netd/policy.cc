#include "services/netd/policy.h"

#include "absl/strings/str_cat.h"
#include "services/netd/flow_plan.h"

namespace strongroom::netd {
namespace {

// Destinations no allowlist may name: they are never a legitimate remote service and some
// (loopback, link-local) would reach the node itself or its metadata services.
struct ForbiddenRange {
  Cidr range;
  const char* what;
};
const ForbiddenRange kForbidden[] = {
    {{0x00000000, 8}, "\"this network\" (0.0.0.0/8)"},        {{0x7f000000, 8}, "loopback (127.0.0.0/8)"},
    {{0xa9fe0000, 16}, "link-local (169.254.0.0/16)"},        {{0xe0000000, 4}, "multicast (224.0.0.0/4)"},
    {{0xf0000000, 4}, "reserved or broadcast (240.0.0.0/4)"},
};

bool IsValidUtf8(absl::string_view text) {
  size_t i = 0;
  while (i < text.size()) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    size_t extra = 0;
    uint32_t code = 0;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xe0) == 0xc0) {
      extra = 1;
      code = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
      extra = 2;
      code = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
      extra = 3;
      code = c & 0x07;
    } else {
      return false;
    }
    if (i + extra >= text.size()) return false;  // truncated sequence
    for (size_t k = 1; k <= extra; ++k) {
      const unsigned char next = static_cast<unsigned char>(text[i + k]);
      if ((next & 0xc0) != 0x80) return false;
      code = (code << 6) | (next & 0x3f);
    }
    // Overlong encodings, surrogates and values beyond Unicode.
    static constexpr uint32_t kMinimum[] = {0, 0x80, 0x800, 0x10000};
    if (code < kMinimum[extra] || (code >= 0xd800 && code <= 0xdfff) || code > 0x10ffff) return false;
    i += extra + 1;
  }
  return true;
}

absl::StatusOr<Rule> ValidateRule(const RuleInput& input, absl::string_view field,
                                  absl::string_view cidr_name, const PolicyLimits& limits) {
  auto error = [&](absl::string_view member, auto&&... reason) {
    return absl::InvalidArgumentError(absl::StrCat(field, ".", member, ": ", reason...));
  };
  absl::StatusOr<Cidr> cidr = ParseCidr(input.cidr, /*allow_bare_address=*/true);
  if (!cidr.ok()) return error(cidr_name, cidr.status().message());
  if (cidr->prefix_length < limits.min_prefix_length) {
    return error(cidr_name, "prefix /", cidr->prefix_length, " is broader than the allowed minimum /",
                 limits.min_prefix_length);
  }
  for (const ForbiddenRange& forbidden : kForbidden) {
    if (cidr->Overlaps(forbidden.range))
      return error(cidr_name, cidr->ToString(), " overlaps ", forbidden.what);
  }
  if (cidr->Overlaps(limits.workload_subnet)) {
    return error(cidr_name, cidr->ToString(), " overlaps the workload subnet ",
                 limits.workload_subnet.ToString(), " (there is no workload-to-workload path)");
  }
  Rule rule;
  rule.peer = *cidr;
  if (input.protocol == 1) {
    rule.protocol = Protocol::kTcp;
  } else if (input.protocol == 2) {
    rule.protocol = Protocol::kUdp;
  } else if (input.protocol == 0) {
    return error("protocol", "required (PROTOCOL_TCP or PROTOCOL_UDP)");
  } else {
    return error("protocol", input.protocol, " is not a known protocol");
  }
  if (input.port_start < 1 || input.port_start > 65535) {
    return error("port_start", input.port_start, " is not in 1..65535");
  }
  const uint32_t last = input.port_end == 0 ? input.port_start : input.port_end;
  if (last < input.port_start || last > 65535) {
    return error("port_end", input.port_end, " is not in port_start (", input.port_start, ")..65535");
  }
  rule.port_first = static_cast<uint16_t>(input.port_start);
  rule.port_last = static_cast<uint16_t>(last);
  if (input.description.size() > kMaxDescriptionBytes) {
    return error("description", input.description.size(), " bytes is longer than ", kMaxDescriptionBytes);
  }
  if (!IsValidUtf8(input.description)) return error("description", "is not valid UTF-8");
  rule.description = input.description;
  return rule;
}

}  // namespace

absl::string_view ProtocolName(Protocol protocol) { return protocol == Protocol::kTcp ? "tcp" : "udp"; }

absl::Status CheckRuleCounts(size_t egress, size_t ingress, const PolicyLimits& limits) {
  if (egress > limits.max_egress_rules) {
    return absl::InvalidArgumentError(absl::StrCat(
        "egress_allowlist: ", egress, " rules is more than the limit of ", limits.max_egress_rules));
  }
  if (ingress > limits.max_ingress_rules) {
    return absl::InvalidArgumentError(absl::StrCat(
        "ingress_allowlist: ", ingress, " rules is more than the limit of ", limits.max_ingress_rules));
  }
  return absl::OkStatus();
}

absl::StatusOr<Policy> ValidatePolicy(const std::vector<RuleInput>& egress,
                                      const std::vector<RuleInput>& ingress, const PolicyLimits& limits) {
  if (absl::Status counts = CheckRuleCounts(egress.size(), ingress.size(), limits); !counts.ok())
    return counts;
  Policy policy;
  policy.egress.reserve(egress.size());
  policy.ingress.reserve(ingress.size());
  for (size_t i = 0; i < egress.size(); ++i) {
    absl::StatusOr<Rule> rule =
        ValidateRule(egress[i], absl::StrCat("egress_allowlist[", i, "]"), "destination_cidr", limits);
    if (!rule.ok()) return rule.status();
    policy.egress.push_back(*std::move(rule));
  }
  for (size_t i = 0; i < ingress.size(); ++i) {
    absl::StatusOr<Rule> rule =
        ValidateRule(ingress[i], absl::StrCat("ingress_allowlist[", i, "]"), "source_cidr", limits);
    if (!rule.ok()) return rule.status();
    policy.ingress.push_back(*std::move(rule));
  }
  const size_t flows = CountWorkloadFlows(policy);
  if (flows > limits.max_flows_per_port) {
    return absl::InvalidArgumentError(
        absl::StrCat("egress_allowlist/ingress_allowlist: the rules expand to ", flows,
                     " OpenFlow flows, more than the limit of ", limits.max_flows_per_port,
                     " (port ranges cost up to 16 flows each; use fewer or aligned ranges)"));
  }
  return policy;
}

}  // namespace strongroom::netd
