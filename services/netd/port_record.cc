#include "services/netd/port_record.h"

#include <openssl/evp.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "services/netd/flow_plan.h"

namespace strongroom::netd {
namespace {

constexpr char kWorkloadId[] = "strongroom-workload-id";
constexpr char kNetns[] = "strongroom-netns";
constexpr char kInterface[] = "strongroom-interface";
// "tap" for a VM's tap port; absent (records made before taps existed) or "veth" for a veth pair.
constexpr char kTarget[] = "strongroom-target";
constexpr char kAddress[] = "strongroom-ip";  // "a.b.c.d/prefix"
constexpr char kGateway[] = "strongroom-gateway";
constexpr char kMac[] = "strongroom-mac";
constexpr char kMtu[] = "strongroom-mtu";
constexpr char kGeneration[] = "strongroom-generation";
constexpr char kOwnerLabel[] = "strongroom-owner-label";
constexpr char kRequestedBy[] = "strongroom-requested-by";
constexpr char kPolicyRevision[] = "strongroom-policy-revision";
constexpr char kEgress[] = "strongroom-egress";
constexpr char kIngress[] = "strongroom-ingress";
constexpr char kCreated[] = "strongroom-created";
constexpr char kUpdated[] = "strongroom-updated";

bool Unreserved(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
         c == '_' || c == '~';
}

std::string PercentEncode(absl::string_view text) {
  std::string out;
  for (char c : text) {
    if (Unreserved(c)) {
      out.push_back(c);
    } else {
      absl::StrAppendFormat(&out, "%%%02X", static_cast<unsigned char>(c));
    }
  }
  return out;
}

absl::StatusOr<std::string> PercentDecode(absl::string_view text) {
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '%') {
      out.push_back(text[i]);
      continue;
    }
    int value = 0;
    if (i + 2 >= text.size()) return absl::DataLossError("truncated %-escape");
    if (!absl::SimpleHexAtoi(text.substr(i + 1, 2), &value)) return absl::DataLossError("bad %-escape");
    out.push_back(static_cast<char>(value));
    i += 2;
  }
  return out;
}

std::string Rfc3339(absl::Time time) {
  return absl::FormatTime(absl::RFC3339_full, time, absl::UTCTimeZone());
}

}  // namespace

uint64_t PortRecord::Cookie() const { return CookieForGeneration(generation); }

bool IsOwnedByNetd(const ExternalIds& external_ids) {
  auto it = external_ids.find(kOwnerKey);
  return it != external_ids.end() && it->second == kOwnerValue;
}

std::string EncodeRules(const std::vector<Rule>& rules) {
  return absl::StrJoin(rules, ";", [](std::string* out, const Rule& rule) {
    absl::StrAppend(out, ProtocolName(rule.protocol), " ", rule.peer.ToString(), " ", rule.port_first, "-",
                    rule.port_last, " ", PercentEncode(rule.description));
  });
}

absl::StatusOr<std::vector<Rule>> DecodeRules(absl::string_view text) {
  std::vector<Rule> rules;
  if (text.empty()) return rules;
  for (absl::string_view item : absl::StrSplit(text, ';')) {
    std::vector<absl::string_view> fields = absl::StrSplit(item, ' ');
    auto bad = [&] { return absl::DataLossError(absl::StrCat("malformed rule \"", item, "\"")); };
    if (fields.size() != 4) return bad();
    Rule rule;
    if (fields[0] == "tcp") {
      rule.protocol = Protocol::kTcp;
    } else if (fields[0] == "udp") {
      rule.protocol = Protocol::kUdp;
    } else {
      return bad();
    }
    absl::StatusOr<Cidr> peer = ParseCidr(fields[1], /*allow_bare_address=*/false);
    std::vector<absl::string_view> ports = absl::StrSplit(fields[2], '-');
    uint32_t first = 0;
    uint32_t last = 0;
    if (!peer.ok() || ports.size() != 2 || !absl::SimpleAtoi(ports[0], &first) ||
        !absl::SimpleAtoi(ports[1], &last) || first < 1 || last < first || last > 65535) {
      return bad();
    }
    absl::StatusOr<std::string> description = PercentDecode(fields[3]);
    if (!description.ok()) return bad();
    rule.peer = *peer;
    rule.port_first = static_cast<uint16_t>(first);
    rule.port_last = static_cast<uint16_t>(last);
    rule.description = *std::move(description);
    rules.push_back(std::move(rule));
  }
  return rules;
}

ExternalIds EncodePolicyExternalIds(const PortRecord& record) {
  return {{kPolicyRevision, absl::StrCat(record.policy_revision)},
          {kEgress, EncodeRules(record.policy.egress)},
          {kIngress, EncodeRules(record.policy.ingress)},
          {kUpdated, Rfc3339(record.updated_time)}};
}

ExternalIds EncodePortExternalIds(const PortRecord& record) {
  ExternalIds ids = EncodePolicyExternalIds(record);
  ids[kOwnerKey] = kOwnerValue;
  ids[kWorkloadId] = record.workload_id;
  ids[kNetns] = record.netns;
  ids[kInterface] = record.interface_name;
  ids[kTarget] = record.tap ? "tap" : "veth";
  ids[kAddress] = absl::StrCat(FormatIpv4(record.address), "/", record.prefix_length);
  ids[kGateway] = FormatIpv4(record.gateway);
  ids[kMac] = record.mac;
  ids[kMtu] = absl::StrCat(record.mtu);
  ids[kGeneration] = absl::StrCat(record.generation);
  ids[kOwnerLabel] = record.owner_label;
  ids[kRequestedBy] = record.requested_by;
  ids[kCreated] = Rfc3339(record.created_time);
  return ids;
}

ExternalIds EncodeInterfaceExternalIds(const PortRecord& record) {
  return {{kOwnerKey, kOwnerValue},
          {kWorkloadId, record.workload_id},
          {"iface-id", record.workload_id},
          {"attached-mac", record.mac}};
}

absl::StatusOr<Ipv4> RecordedAddress(const ExternalIds& external_ids) {
  auto it = external_ids.find(kAddress);
  if (it == external_ids.end()) return absl::DataLossError(absl::StrCat(kAddress, " is missing"));
  const std::string& value = it->second;
  absl::StatusOr<Ipv4> address = ParseIpv4(absl::string_view(value).substr(0, value.find('/')));
  if (!address.ok()) return absl::DataLossError(absl::StrCat(kAddress, "=\"", value, "\" is malformed"));
  return address;
}

absl::StatusOr<PortRecord> DecodePortExternalIds(const std::string& port_name, const ExternalIds& ids) {
  if (!IsOwnedByNetd(ids)) return absl::DataLossError("not owned by strongroom-netd");
  auto get = [&](const char* key) -> absl::StatusOr<std::string> {
    auto it = ids.find(key);
    if (it == ids.end()) return absl::DataLossError(absl::StrCat(key, " is missing"));
    return it->second;
  };
  auto bad = [&](const char* key, absl::string_view value) {
    return absl::DataLossError(absl::StrCat(key, "=\"", value, "\" is malformed"));
  };
  PortRecord record;
  record.port_name = port_name;
  // Every key is required; collect them first so the error names the first missing one.
  absl::StatusOr<std::string> values[] = {get(kWorkloadId),  get(kNetns),          get(kInterface),
                                          get(kAddress),     get(kGateway),        get(kMac),
                                          get(kMtu),         get(kGeneration),     get(kOwnerLabel),
                                          get(kRequestedBy), get(kPolicyRevision), get(kEgress),
                                          get(kIngress),     get(kCreated),        get(kUpdated)};
  for (const auto& value : values) {
    if (!value.ok()) return value.status();
  }
  if (auto target = ids.find(kTarget); target != ids.end()) {
    if (target->second != "tap" && target->second != "veth") return bad(kTarget, target->second);
    record.tap = target->second == "tap";
  }
  record.workload_id = *values[0];
  record.netns = *values[1];
  record.interface_name = *values[2];
  {
    const std::string& text = *values[3];
    const size_t slash = text.find('/');
    absl::StatusOr<Ipv4> address = ParseIpv4(absl::string_view(text).substr(0, slash));
    if (!address.ok() || slash == std::string::npos ||
        !absl::SimpleAtoi(absl::string_view(text).substr(slash + 1), &record.prefix_length) ||
        record.prefix_length < 8 || record.prefix_length > 30) {
      return bad(kAddress, text);
    }
    record.address = *address;
  }
  absl::StatusOr<Ipv4> gateway = ParseIpv4(*values[4]);
  if (!gateway.ok()) return bad(kGateway, *values[4]);
  record.gateway = *gateway;
  record.mac = *values[5];
  if (!absl::SimpleAtoi(*values[6], &record.mtu)) return bad(kMtu, *values[6]);
  if (!absl::SimpleAtoi(*values[7], &record.generation) || record.generation == 0 ||
      record.generation > kMaxGeneration) {
    return bad(kGeneration, *values[7]);
  }
  record.owner_label = *values[8];
  record.requested_by = *values[9];
  if (!absl::SimpleAtoi(*values[10], &record.policy_revision)) return bad(kPolicyRevision, *values[10]);
  absl::StatusOr<std::vector<Rule>> egress = DecodeRules(*values[11]);
  if (!egress.ok()) return absl::DataLossError(absl::StrCat(kEgress, ": ", egress.status().message()));
  absl::StatusOr<std::vector<Rule>> ingress = DecodeRules(*values[12]);
  if (!ingress.ok()) return absl::DataLossError(absl::StrCat(kIngress, ": ", ingress.status().message()));
  record.policy.egress = *std::move(egress);
  record.policy.ingress = *std::move(ingress);
  std::string error;
  if (!absl::ParseTime(absl::RFC3339_full, *values[13], &record.created_time, &error)) {
    return bad(kCreated, *values[13]);
  }
  if (!absl::ParseTime(absl::RFC3339_full, *values[14], &record.updated_time, &error)) {
    return bad(kUpdated, *values[14]);
  }
  return record;
}

std::string PortNameForWorkload(absl::string_view workload_id) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  EVP_Digest(workload_id.data(), workload_id.size(), digest, &length, EVP_sha256(), nullptr);
  std::string name = "sr";
  for (int i = 0; i < 6; ++i) absl::StrAppendFormat(&name, "%02x", digest[i]);
  return name;
}

}  // namespace strongroom::netd
