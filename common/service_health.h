// A service's own say in grpc.health.v1: NOT_SERVING while it cannot do its job, although the
// process runs (netd while the node stack guard cannot be put in place). The daemon attaches it
// to the health service once the server runs; a service may set states before that.
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
  // `service`: the full name the health service reports, e.g. "strongroom.v1.Netd". `reason`
  // says why not serving (logged by the caller; shown in /metrics as a label).
  void Set(const std::string& service, bool serving, const std::string& reason);

  // The daemon's side: from now on states go to `health` (every state set so far at once).
  void Attach(grpc::HealthCheckServiceInterface* health);
  // The daemon's side, at drain: the health service answers NOT_SERVING for everything, and
  // later Set calls no longer reach it.
  void Detach();

  // strongroom_service_serving{service="...",reason="..."} 1 or 0, one line per service set.
  std::string RenderPrometheus() const;

 private:
  struct State {
    bool serving = true;
    std::string reason;
  };
  mutable absl::Mutex mu_;
  std::map<std::string, State> states_ ABSL_GUARDED_BY(mu_);          // by service name
  grpc::HealthCheckServiceInterface* health_ ABSL_GUARDED_BY(mu_) = nullptr;  // not owned; null unless attached
};

}  // namespace strongroom
