#include "services/netd/request_validation.h"

#include <regex>

#include "common/field_rules.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace strongroom::netd {
namespace {

bool Matches(absl::string_view text, const char* pattern) {
  const std::regex re(pattern);
  return std::regex_match(text.begin(), text.end(), re);
}

constexpr char kNetnsName[] = "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$";

}  // namespace

absl::Status CheckWorkloadId(absl::string_view id, absl::string_view field) {
  if (id.empty()) return absl::InvalidArgumentError(absl::StrCat(field, ": required"));
  if (!IsId(id)) {  // common/field_rules.h
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": \"", QuoteValue(id), "\" is not an ID (^[a-z0-9][a-z0-9-]{0,62}$)"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> NetnsPath(absl::string_view netns) {
  auto invalid = [&] {
    return absl::InvalidArgumentError(absl::StrCat(
        "netns: \"", QuoteValue(netns),
        "\" is neither a netns name nor /run/netns/NAME, /var/run/netns/NAME or /proc/PID/ns/net"));
  };
  if (netns.empty()) return absl::InvalidArgumentError("netns: required");
  if (netns[0] != '/') {
    if (!Matches(netns, kNetnsName) || netns == "." || netns == "..") return invalid();
    return absl::StrCat("/run/netns/", netns);
  }
  for (absl::string_view dir : {"/run/netns/", "/var/run/netns/"}) {
    if (absl::StartsWith(netns, dir)) {
      absl::string_view name = netns.substr(dir.size());
      if (!Matches(name, kNetnsName) || name == "." || name == "..") return invalid();
      return std::string(netns);
    }
  }
  if (Matches(netns, "^/proc/[1-9][0-9]{0,9}/ns/net$")) return std::string(netns);
  return invalid();
}

absl::StatusOr<std::string> InterfaceName(absl::string_view name) {
  if (name.empty()) return std::string("eth0");
  if (!Matches(name, "^[a-z][a-z0-9]{0,14}$")) {
    return absl::InvalidArgumentError(
        absl::StrCat("interface_name: \"", QuoteValue(name), "\" does not match ^[a-z][a-z0-9]{0,14}$"));
  }
  return std::string(name);
}

absl::StatusOr<std::string> OwnerLabel(absl::string_view label, absl::string_view workload_id) {
  if (label.empty()) return std::string(workload_id);
  if (label.size() > 128 || !Matches(label, "^[A-Za-z0-9._:/@-]{1,128}$")) {
    return absl::InvalidArgumentError(
        absl::StrCat("owner: \"", QuoteValue(label), "\" does not match ^[A-Za-z0-9._:/@-]{0,128}$"));
  }
  return std::string(label);
}

}  // namespace strongroom::netd
