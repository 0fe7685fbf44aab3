// A service's own say in grpc.health.v1: NOT_SERVING while it cannot do its job, although the
// process runs. More than one source may say so (netd while its node stack guard cannot be put in
// place; every service of a daemon while its audit log cannot record calls): a service is SERVING
// only while no source objects. The daemon attaches it to the health service once the server runs;
// sources may report before that.
#pragma once

#include <map>
#include <string>

#include "absl/synchronization/mutex.h"

namespace grpc {
class HealthCheckServiceInterface;
}

namespace strongroom {

class ServiceHealth {
 public:
  // The server as a whole ("" in grpc.health.v1).
  static constexpr char kServer[] = "";

  // Makes `service` (a full name, e.g. "strongroom.v1.Netd") known, SERVING unless a source objects.
  void Register(const std::string& service);
  // `source` (e.g. "node stack guard", "audit") says whether `service` can serve, and why not.
  void Set(const std::string& service, const std::string& source, bool serving, const std::string& reason);
  // The same for every registered service and the server as a whole.
  void SetAll(const std::string& source, bool serving, const std::string& reason);

  // The daemon's side: from now on states go to `health` (every state set so far at once).
  void Attach(grpc::HealthCheckServiceInterface* health);
  // The daemon's side, at drain: the health service answers NOT_SERVING for everything, and
  // later changes no longer reach it.
  void Detach();

  // strongroom_service_serving{service="...",reason="..."} 1 or 0, one line per registered service.
  std::string RenderPrometheus() const;

 private:
  void ApplyLocked(const std::string& service) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  mutable absl::Mutex mu_;
  // service -> source -> why that source says it cannot serve (a service is SERVING when this is empty).
  std::map<std::string, std::map<std::string, std::string>> objections_ ABSL_GUARDED_BY(mu_);
  grpc::HealthCheckServiceInterface* health_ ABSL_GUARDED_BY(mu_) = nullptr;  // not owned; null unless attached
};

}  // namespace strongroom
