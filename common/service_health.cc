#include "common/service_health.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "grpcpp/health_check_service_interface.h"

namespace strongroom {

void ServiceHealth::Set(const std::string& service, bool serving, const std::string& reason) {
  absl::MutexLock lock(&mu_);
  states_[service] = {serving, serving ? "" : reason};
  if (health_ != nullptr) health_->SetServingStatus(service, serving);
}

void ServiceHealth::Attach(grpc::HealthCheckServiceInterface* health) {
  absl::MutexLock lock(&mu_);
  health_ = health;
  for (const auto& [service, state] : states_) health_->SetServingStatus(service, state.serving);
}

void ServiceHealth::Detach() {
  absl::MutexLock lock(&mu_);
  if (health_ != nullptr) health_->Shutdown();
  health_ = nullptr;
}

std::string ServiceHealth::RenderPrometheus() const {
  absl::MutexLock lock(&mu_);
  std::string out =
      "# HELP strongroom_service_serving 1 while the service can do its job, 0 with the reason why not.\n"
      "# TYPE strongroom_service_serving gauge\n";
  for (const auto& [service, state] : states_) {
    // Label values escape backslash, quote and newline (Prometheus text format).
    const std::string reason =
        absl::StrReplaceAll(state.reason, {{"\\", "\\\\"}, {"\"", "\\\""}, {"\n", "\\n"}});
    absl::StrAppend(&out, "strongroom_service_serving{service=\"", service, "\",reason=\"", reason, "\"} ",
                    state.serving ? 1 : 0, "\n");
  }
  return out;
}

}  // namespace strongroom
