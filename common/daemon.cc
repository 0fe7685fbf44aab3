#include "common/daemon.h"

#include <signal.h>

#include <cstdio>
#include <cstring>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "common/audit.h"
#include "common/authz_processor.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/metrics_http.h"
#include "common/peer_verifier.h"
#include "common/rpc_observer.h"
#include "common/tls.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/server_builder.h"

namespace strongroom {
namespace {

constexpr uint32_t kDefaultDrainSeconds = 2;
constexpr uint32_t kDefaultGraceSeconds = 10;
constexpr uint32_t kDefaultCertRefreshSeconds = 60;
constexpr int kMinPollers = 2;
constexpr int kMaxPollers = 64;
// How often the health service follows the audit sink's state.
constexpr absl::Duration kAuditHealthInterval = absl::Milliseconds(250);

int Usage(const std::string& name, const std::string& problem) {
  std::fprintf(stderr, "%s: %s\nusage: %s --config FILE [--check-config]\n", name.c_str(), problem.c_str(),
               name.c_str());
  return 2;
}

// Blocks the shutdown signals in every thread (gRPC's threads inherit the mask) so that only
// the main thread receives them, through sigwait.
sigset_t BlockShutdownSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  return set;
}

// Keeps the health service in step with the audit sink: every service (and the server as a whole) reports
// NOT_SERVING while the sink says audited calls cannot be recorded (AuditSink::Health), SERVING again after
// (unless another source, e.g. netd's node stack guard, still objects).
class AuditHealthWatch {
 public:
  AuditHealthWatch(std::shared_ptr<ServiceHealth> health, std::shared_ptr<AuditSink> audit)
      : health_(std::move(health)), audit_(std::move(audit)) {
    thread_ = std::thread([this] { Run(); });
  }
  ~AuditHealthWatch() { Stop(); }

  void Stop() {
    {
      absl::MutexLock lock(&mu_);
      stop_ = true;
    }
    if (thread_.joinable()) thread_.join();
  }

 private:
  void Run() {
    bool serving = true;
    absl::MutexLock lock(&mu_);
    while (!stop_) {
      mu_.AwaitWithTimeout(absl::Condition(&stop_), kAuditHealthInterval);
      if (stop_) break;
      const absl::Status status = audit_->Health();
      if (status.ok() == serving) continue;
      serving = status.ok();
      health_->SetAll("audit", serving, std::string(status.message()));
      Log(serving ? LogLevel::kInfo : LogLevel::kError,
          serving ? "audit log recovered: SERVING again" : "audit log cannot record calls: NOT_SERVING",
          {{"reason", std::string(status.message())}});
    }
  }

  const std::shared_ptr<ServiceHealth> health_;
  const std::shared_ptr<AuditSink> audit_;
  absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;  // runs Run()
};

int Serve(const DaemonSpec& spec, const v1::ServerConfig& server_config, const sigset_t& signals) {
  std::vector<RegisteredService> services;
  if (absl::StatusOr<std::vector<RegisteredService>> made = spec.make_services(); made.ok()) {
    services = std::move(*made);
  } else {
    Log(LogLevel::kError, "cannot start services", {{"error", made.status().ToString()}});
    return 1;
  }

  // One health state for every source that may object (the service itself, the audit watch below).
  std::shared_ptr<ServiceHealth> health = spec.health ? spec.health : std::make_shared<ServiceHealth>();
  for (const RegisteredService& s : services) health->Register(s.full_name);
  health->Register(ServiceHealth::kServer);

  auto metrics = std::make_shared<RpcMetrics>();
  std::shared_ptr<AuditSink> audit = MakeLogAuditSink();
  if (spec.make_audit_sink) {
    absl::StatusOr<std::shared_ptr<AuditSink>> made = spec.make_audit_sink();
    if (!made.ok()) {
      Log(LogLevel::kError, "cannot start the audit sink", {{"error", made.status().ToString()}});
      return 1;
    }
    audit = std::move(*made);
  }
  auto verifier = std::make_shared<PeerVerifier>(server_config.tls().ca_file(), server_config.trust_domain(),
                                                 server_config.tls().crl_file());
  if (absl::Status loaded = verifier->Load(); !loaded.ok()) {
    Log(LogLevel::kError, "cannot load the CA bundle or CRL", {{"error", loaded.ToString()}});
    return 1;
  }
  const int refresh = server_config.has_cert_refresh_seconds() ? server_config.cert_refresh_seconds()
                                                               : kDefaultCertRefreshSeconds;
  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> creds = MakeServerCredentials(
      server_config.tls(), refresh, std::make_shared<AuthzProcessor>(verifier, metrics, audit));
  if (!creds.ok()) {
    Log(LogLevel::kError, "cannot load TLS credentials", {{"error", creds.status().ToString()}});
    return 1;
  }

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int bound_port = 0;
  builder.AddListeningPort(server_config.listen_address(), *creds, &bound_port);
  for (RegisteredService& s : services) builder.RegisterService(s.service.get());
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> interceptors;
  interceptors.push_back(std::make_unique<RpcObserverFactory>(spec.name, metrics, audit));
  builder.experimental().SetInterceptorCreators(std::move(interceptors));
  // Keep idle handler threads instead of reaping them after each burst: creating and destroying
  // threads per burst of calls cost more CPU than the calls themselves (docs/PERFORMANCE.md).
  builder.SetSyncServerOption(grpc::ServerBuilder::SyncServerOption::MIN_POLLERS, kMinPollers);
  builder.SetSyncServerOption(grpc::ServerBuilder::SyncServerOption::MAX_POLLERS, kMaxPollers);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || bound_port == 0) {
    Log(LogLevel::kError, "cannot listen", {{"address", server_config.listen_address()}});
    return 1;
  }

  // The extra listeners (vm-controller's enrollment listener): the same certificate, their own gate.
  // (The services outlive their servers: declared first, destroyed last.)
  std::vector<ExtraListener> extra =
      spec.take_extra_listeners ? spec.take_extra_listeners() : std::vector<ExtraListener>();
  std::vector<std::unique_ptr<grpc::Server>> extra_servers;
  for (ExtraListener& listener : extra) {
    absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> extra_creds = MakeServerCredentials(
        server_config.tls(), refresh, std::make_shared<EnrollmentListenerProcessor>(metrics, audit));
    if (!extra_creds.ok()) {
      Log(LogLevel::kError, "cannot load TLS credentials",
          {{"listener", listener.name}, {"error", extra_creds.status().ToString()}});
      server->Shutdown();
      return 1;
    }
    grpc::ServerBuilder extra_builder;
    int extra_port = 0;
    extra_builder.AddListeningPort(listener.listen_address, *extra_creds, &extra_port);
    for (RegisteredService& s : listener.services) extra_builder.RegisterService(s.service.get());
    std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> extra_interceptors;
    extra_interceptors.push_back(
        std::make_unique<RpcObserverFactory>(spec.name, metrics, audit, /*peer_certificate_verified=*/false));
    extra_builder.experimental().SetInterceptorCreators(std::move(extra_interceptors));
    std::unique_ptr<grpc::Server> extra_server = extra_builder.BuildAndStart();
    if (extra_server == nullptr || extra_port == 0) {
      Log(LogLevel::kError, "cannot listen",
          {{"listener", listener.name}, {"address", listener.listen_address}});
      server->Shutdown();
      return 1;
    }
    Log(LogLevel::kInfo, "serving", {{"listener", listener.name}, {"address", listener.listen_address}});
    extra_servers.push_back(std::move(extra_server));
  }

  std::unique_ptr<MetricsHttpServer> metrics_http;
  if (!server_config.metrics_listen_address().empty()) {
    auto started =
        MetricsHttpServer::Start(server_config.metrics_listen_address(), [metrics, audit, health, &spec] {
          std::string text = metrics->RenderPrometheus() + audit->RenderMetrics() + health->RenderPrometheus();
          if (spec.render_metrics) text += spec.render_metrics();
          return text;
        });
    if (!started.ok()) {
      Log(LogLevel::kError, "cannot start metrics endpoint", {{"error", started.status().ToString()}});
      server->Shutdown();
      return 1;
    }
    metrics_http = std::move(*started);
  }

  health->Attach(server->GetHealthCheckService());
  AuditHealthWatch watch(health, audit);
  Log(LogLevel::kInfo, "serving",
      {{"address", server_config.listen_address()},
       {"port", absl::StrCat(bound_port)},
       {"identity", absl::StrCat("spiffe://", server_config.trust_domain(), "/", spec.name, "/",
                                 server_config.instance())},
       {"metrics", server_config.metrics_listen_address()}});

  int signal_number = 0;
  sigwait(&signals, &signal_number);
  const uint32_t drain =
      server_config.has_drain_seconds() ? server_config.drain_seconds() : kDefaultDrainSeconds;
  const uint32_t grace = server_config.has_shutdown_grace_seconds() ? server_config.shutdown_grace_seconds()
                                                                    : kDefaultGraceSeconds;
  Log(LogLevel::kInfo, "draining",
      {{"signal", strsignal(signal_number)}, {"drain_seconds", absl::StrCat(drain)}});
  // NOT_SERVING first, so health-checking clients move away while in-flight work finishes.
  watch.Stop();
  health->Detach();
  // A second signal skips the rest of the drain period.
  timespec drain_time{static_cast<time_t>(drain), 0};
  sigtimedwait(&signals, nullptr, &drain_time);
  const auto shutdown_deadline = std::chrono::system_clock::now() + std::chrono::seconds(grace);
  for (auto& extra_server : extra_servers) extra_server->Shutdown(shutdown_deadline);
  server->Shutdown(shutdown_deadline);
  for (auto& extra_server : extra_servers) extra_server->Wait();
  server->Wait();
  metrics_http.reset();
  Log(LogLevel::kInfo, "stopped");
  return 0;
}

}  // namespace

int RunDaemon(int argc, char** argv, DaemonSpec spec) {
  RequireTls13();  // before anything (libpq, gRPC) creates a TLS context
  std::string config_path;
  bool check_only = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--config" && i + 1 < argc) {
      config_path = argv[++i];
    } else if (arg.rfind("--config=", 0) == 0) {
      config_path = arg.substr(9);
    } else if (arg == "--check-config") {
      check_only = true;
    } else if (arg == "--help" || arg == "-h") {
      Usage(spec.name, "runs the Strongroom " + spec.name + " service");
      return 0;
    } else {
      return Usage(spec.name, "unknown argument \"" + arg + "\"");
    }
  }
  if (config_path.empty()) return Usage(spec.name, "--config FILE is required");

  absl::StatusOr<std::unique_ptr<ConfigSource>> source = LoadTextprotoFile(config_path, spec.config);
  absl::Status valid = source.ok() ? ValidateServerConfig(spec.server_config(), **source) : source.status();
  if (valid.ok() && spec.validate) valid = spec.validate(**source);
  if (!valid.ok()) {
    std::fprintf(stderr, "%s: config error: %s\n", spec.name.c_str(), std::string(valid.message()).c_str());
    return 2;
  }
  if (check_only) {
    std::fprintf(stderr, "%s: %s is valid\n", spec.name.c_str(), config_path.c_str());
    return 0;
  }
  const v1::ServerConfig& server_config = spec.server_config();
  InitLogging(spec.name, server_config.log_level().empty() ? LogLevel::kInfo
                                                           : *ParseLogLevel(server_config.log_level()));
  RouteGrpcLogsToJson();
  const sigset_t signals = BlockShutdownSignals();
  return Serve(spec, server_config, signals);
}

}  // namespace strongroom
