// The shared main() of every Strongroom daemon: flags, config, logging, mTLS, authorization,
// reflection, health, metrics and graceful drain. A service's main.cc only fills DaemonSpec.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/audit.h"
#include "common/config.h"
#include "common/service_health.h"
#include "google/protobuf/message.h"
#include "grpcpp/impl/codegen/service_type.h"
#include "strongroom/v1/config.pb.h"

namespace strongroom {

struct RegisteredService {
  std::string full_name;  // e.g. "strongroom.v1.Netd", reported by the health service
  std::unique_ptr<grpc::Service> service;
};

// A listener beside the main mTLS one, for callers without a deployment identity (vm-controller's
// enrollment listener, docs/IPSEC.md): TLS with the daemon's own server certificate (server.tls), a client
// certificate requested but not verified by the handshake, and only the methods the authorization table lists
// for it (EnrollmentListenerProcessor); their handlers authenticate the caller. RPCs are observed and audited
// like the main listener's, without an actor taken from the unverified peer certificate.
struct ExtraListener {
  std::string name;            // in logs, e.g. "enrollment"
  std::string listen_address;  // HOST:PORT
  std::vector<RegisteredService> services;
};

struct DaemonSpec {
  // Names the binary in logs and errors, e.g. "netd".
  std::string name;
  // The daemon's top-level config message, filled from --config before anything else runs.
  google::protobuf::Message* config = nullptr;
  // The ServerConfig inside `config`, and its field name there (for error lines).
  std::function<const v1::ServerConfig&()> server_config;
  // Service-specific validation beyond ServerConfig; may be empty.
  std::function<absl::Status(const ConfigSource&)> validate;
  // Builds the services once the config is valid.
  std::function<absl::StatusOr<std::vector<RegisteredService>>()> make_services;
  // Where RPC and refusal audit events go; called once, after make_services. Empty: the JSON log
  // (MakeLogAuditSink). backend passes its local hash chain; other daemons pass
  // MakeShippingAuditSink (common/audit_client.h) once their config names the backend.
  std::function<absl::StatusOr<std::shared_ptr<AuditSink>>()> make_audit_sink;
  // Further listeners, taken once after make_services succeeded; may be empty.
  std::function<std::vector<ExtraListener>()> take_extra_listeners;
  // The services' own health (NOT_SERVING while one cannot do its job); may be null. Services
  // not set in it are SERVING while the daemon runs.
  std::shared_ptr<ServiceHealth> health;
  // The service's own Prometheus text, appended to /metrics; may be empty.
  std::function<std::string()> render_metrics;
};

// Parses `--config FILE` (and `--check-config`), then serves until SIGTERM/SIGINT.
// Exit codes: 0 clean shutdown, 2 bad flags or config, 1 runtime failure.
int RunDaemon(int argc, char** argv, DaemonSpec spec);

}  // namespace strongroom
