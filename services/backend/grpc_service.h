// The gRPC edge of backend: each RPC reads the caller's verified identity, calls BackendService and maps the
// absl::Status to the wire (ToGrpcStatus, the only place). No logic lives here.
#pragma once

#include <memory>

#include "services/backend/backend_service.h"
#include "strongroom/v1/backend.grpc.pb.h"

namespace strongroom::backend {

std::unique_ptr<v1::Backend::Service> MakeBackendGrpcService(BackendService* service);

}  // namespace strongroom::backend
