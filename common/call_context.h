// What a handler may know about its call: the caller's verified identity.
#pragma once

#include "absl/status/statusor.h"
#include "common/identity.h"
#include "grpcpp/server_context.h"

namespace strongroom {

// The caller's SPIFFE identity. The AuthzProcessor has already verified the certificate and
// authorized the call before any handler runs; this only reads it back.
absl::StatusOr<Identity> CallerIdentity(const grpc::ServerContextBase& context);

}  // namespace strongroom
