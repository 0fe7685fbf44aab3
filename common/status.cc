#include "common/status.h"

#include <string>

#include "absl/strings/str_cat.h"

namespace strongroom {

// absl::StatusCode and grpc::StatusCode share the canonical numbering (0..16), so the
// mapping is a cast; anything outside that range is a bug and reported as UNKNOWN.
grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  const int code = static_cast<int>(status.code());
  if (code < 0 || code > 16) return grpc::Status(grpc::StatusCode::UNKNOWN, std::string(status.message()));
  return grpc::Status(static_cast<grpc::StatusCode>(code), std::string(status.message()));
}

absl::Status FromGrpcStatus(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

absl::Status Annotate(const absl::Status& status, absl::string_view context) {
  if (status.ok()) return status;
  return absl::Status(status.code(), absl::StrCat(context, ": ", status.message()));
}

}  // namespace strongroom
