#include "services/netd/ipv4.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"

namespace strongroom::netd {

absl::StatusOr<Ipv4> ParseIpv4(absl::string_view text) {
  auto invalid = [&] {
    return absl::InvalidArgumentError(absl::StrCat("\"", text, "\" is not an IPv4 address"));
  };
  std::vector<absl::string_view> octets = absl::StrSplit(text, '.');
  if (octets.size() != 4) return invalid();
  Ipv4 address = 0;
  for (absl::string_view octet : octets) {
    if (octet.empty() || octet.size() > 3) return invalid();
    for (char c : octet) {
      if (c < '0' || c > '9') return invalid();
    }
    if (octet.size() > 1 && octet[0] == '0') return invalid();
    uint32_t value = 0;
    if (!absl::SimpleAtoi(octet, &value) || value > 255) return invalid();
    address = (address << 8) | value;
  }
  return address;
}

std::string FormatIpv4(Ipv4 address) {
  return absl::StrFormat("%u.%u.%u.%u", address >> 24, (address >> 16) & 0xff, (address >> 8) & 0xff,
                         address & 0xff);
}

std::string Cidr::ToString() const { return absl::StrCat(FormatIpv4(network), "/", prefix_length); }

absl::StatusOr<Cidr> ParseCidr(absl::string_view text, bool allow_bare_address) {
  const size_t slash = text.find('/');
  if (slash == absl::string_view::npos) {
    if (!allow_bare_address) {
      return absl::InvalidArgumentError(absl::StrCat("\"", text, "\" is not an IPv4 CIDR (a.b.c.d/n)"));
    }
    absl::StatusOr<Ipv4> address = ParseIpv4(text);
    if (!address.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("\"", text, "\" is not an IPv4 address or CIDR"));
    }
    return Cidr{*address, 32};
  }
  absl::StatusOr<Ipv4> address = ParseIpv4(text.substr(0, slash));
  absl::string_view prefix_text = text.substr(slash + 1);
  int prefix = -1;
  const bool prefix_ok = !prefix_text.empty() && prefix_text.size() <= 2 &&
                         prefix_text.find_first_not_of("0123456789") == absl::string_view::npos &&
                         (prefix_text.size() == 1 || prefix_text[0] != '0') &&
                         absl::SimpleAtoi(prefix_text, &prefix) && prefix <= 32;
  if (!address.ok() || !prefix_ok) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"", text, "\" is not an IPv4 CIDR (a.b.c.d/n, n 0..32)"));
  }
  Cidr cidr{*address, prefix};
  if ((cidr.network & cidr.Mask()) != cidr.network) {
    Cidr suggestion{cidr.network & cidr.Mask(), prefix};
    return absl::InvalidArgumentError(
        absl::StrCat("\"", text, "\" has host bits set (did you mean ", suggestion.ToString(), "?)"));
  }
  return cidr;
}

std::string MacForIpv4(Ipv4 address) {
  return absl::StrFormat("02:53:%02x:%02x:%02x:%02x", address >> 24, (address >> 16) & 0xff,
                         (address >> 8) & 0xff, address & 0xff);
}

}  // namespace strongroom::netd
