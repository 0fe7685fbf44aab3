// Opaque page tokens: base64url of "<fingerprint>:<part>:<part>...", where the fingerprint is a hash of the
// request without its page, so a token is refused (INVALID_ARGUMENT) with other filters.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "google/protobuf/message.h"
#include "strongroom/v1/common.pb.h"

namespace strongroom::backend {

// page_size 0 means 100; above 1000 means 1000.
int PageSize(const v1::PageRequest& page);

std::string EncodePageToken(const google::protobuf::Message& filters, const std::vector<std::string>& parts);
// The parts, if the token is well-formed, has `parts` parts and was made for these filters.
absl::StatusOr<std::vector<std::string>> DecodePageToken(const std::string& token,
                                                         const google::protobuf::Message& filters,
                                                         size_t parts);

}  // namespace strongroom::backend
