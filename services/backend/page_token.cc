#include "services/backend/page_token.h"

#include <openssl/evp.h>

#include "absl/strings/escaping.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/audit_chain.h"

namespace strongroom::backend {
namespace {

constexpr size_t kMaxToken = 1024;

std::string Fingerprint(const google::protobuf::Message& filters) {
  std::string bytes;
  filters.SerializeToString(
      &bytes);  // deterministic enough within one binary; tokens do not outlive upgrades
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  EVP_Digest(bytes.data(), bytes.size(), digest, &length, EVP_sha256(), nullptr);
  return HexOf(std::string(reinterpret_cast<const char*>(digest), 8));
}

}  // namespace

int PageSize(const v1::PageRequest& page) {
  if (page.page_size() == 0) return 100;
  return static_cast<int>(std::min<uint32_t>(page.page_size(), 1000));
}

std::string EncodePageToken(const google::protobuf::Message& filters, const std::vector<std::string>& parts) {
  return absl::WebSafeBase64Escape(absl::StrCat(Fingerprint(filters), ":", absl::StrJoin(parts, ":")));
}

absl::StatusOr<std::vector<std::string>> DecodePageToken(const std::string& token,
                                                         const google::protobuf::Message& filters,
                                                         size_t parts) {
  std::string text;
  if (token.size() > kMaxToken || !absl::WebSafeBase64Unescape(token, &text)) {
    return absl::InvalidArgumentError("page.page_token: not a token this server issued");
  }
  std::vector<std::string> fields = absl::StrSplit(text, ':');
  if (fields.size() != parts + 1)
    return absl::InvalidArgumentError("page.page_token: not a token this server issued");
  if (fields[0] != Fingerprint(filters)) {
    return absl::InvalidArgumentError(
        "page.page_token: issued for other filters; start again without a token");
  }
  fields.erase(fields.begin());
  return fields;
}

}  // namespace strongroom::backend
