// absl::Status is the error type inside Strongroom; grpc::Status appears only at the RPC edge.
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "grpcpp/support/status.h"

namespace strongroom {

// The single mapping from internal status to the wire, used by every service adapter.
grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);

// Returns `status` with "context: " in front of its message, keeping the code, so errors
// read like "netd: AllocatePort(workload w-17): OVSDB transaction failed: ...".
absl::Status Annotate(const absl::Status& status, absl::string_view context);

}  // namespace strongroom

#define SR_CONCAT_INNER_(a, b) a##b
#define SR_CONCAT_(a, b) SR_CONCAT_INNER_(a, b)

// Propagates a non-OK absl::Status to the caller.
#define SR_RETURN_IF_ERROR(expr)                                                 \
  do {                                                                           \
    if (::absl::Status sr_status_ = (expr); !sr_status_.ok()) return sr_status_; \
  } while (0)

// `SR_ASSIGN_OR_RETURN(auto x, F());` unwraps an absl::StatusOr or returns its error.
#define SR_ASSIGN_OR_RETURN(lhs, expr) \
  SR_ASSIGN_OR_RETURN_IMPL_(SR_CONCAT_(sr_statusor_, __LINE__), lhs, expr)
#define SR_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                              \
  if (!tmp.ok()) return tmp.status();             \
  lhs = std::move(tmp).value()
