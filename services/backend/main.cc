// The backend daemon (DESIGN.md §2): global jobs in PostgreSQL with an explicit state machine, Global Slurm
// submission and tracking, the workload hand-off to vm-controller, and the hash-chained audit log of the
// whole system. docs/BACKEND.md describes the design; this file only wires it into the shared daemon
// bootstrap.
#include <memory>

#include "absl/synchronization/mutex.h"
#include "common/daemon.h"
#include "services/backend/backend_config.h"
#include "services/backend/backend_service.h"
#include "services/backend/grpc_service.h"
#include "strongroom/v1/backend.grpc.pb.h"

int main(int argc, char** argv) {
  using namespace strongroom;
  // Abseil's mutex deadlock detector keeps a global lock graph; gRPC creates and destroys mutexes per call,
  // so the detector was a measurable share of backend's CPU. Lock ordering is reviewed, not checked at run
  // time.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  v1::BackendConfig config;
  // Lives as long as main: the gRPC service and the audit sink point into it.
  std::unique_ptr<backend::BackendService> service;
  DaemonSpec spec;
  spec.name = "backend";
  spec.config = &config;
  spec.server_config = [&config]() -> const v1::ServerConfig& { return config.server(); };
  spec.validate = [&config](const ConfigSource& source) {
    return backend::ValidateBackendConfig(config, source);
  };
  spec.make_services = [&]() -> absl::StatusOr<std::vector<RegisteredService>> {
    absl::StatusOr<std::unique_ptr<backend::BackendService>> started =
        backend::BackendService::Start(backend::ResolveSettings(config));
    if (!started.ok()) return started.status();
    service = std::move(*started);
    std::vector<RegisteredService> services;
    services.push_back({v1::Backend::service_full_name(), backend::MakeBackendGrpcService(service.get())});
    return services;
  };
  spec.make_audit_sink = [&]() -> absl::StatusOr<std::shared_ptr<AuditSink>> {
    return service->audit_sink();
  };
  const int exit_code = RunDaemon(argc, argv, std::move(spec));
  service.reset();  // after the server stopped: no RPC is left that could use it
  return exit_code;
}
