#include "common/service_health.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "grpcpp/health_check_service_interface.h"

namespace strongroom {

void ServiceHealth::Register(const std::string& service) {
  absl::MutexLock lock(&mu_);
  objections_[service];
  ApplyLocked(service);
}

void ServiceHealth::Set(const std::string& service, const std::string& source, bool serving,
                        const std::string& reason) {
  absl::MutexLock lock(&mu_);
  std::map<std::string, std::string>& objections = objections_[service];
  if (serving) {
    objections.erase(source);
  } else {
    objections[source] = reason;
  }
  ApplyLocked(service);
}

void ServiceHealth::SetAll(const std::string& source, bool serving, const std::string& reason) {
  absl::MutexLock lock(&mu_);
  objections_[kServer];
  for (auto& [service, objections] : objections_) {
    if (serving) {
      objections.erase(source);
    } else {
      objections[source] = reason;
    }
    ApplyLocked(service);
  }
}

void ServiceHealth::ApplyLocked(const std::string& service) {
  if (health_ == nullptr) return;
  const bool serving = objections_[service].empty();
  if (service == kServer) {
    health_->SetServingStatus(serving);
  } else {
    health_->SetServingStatus(service, serving);
  }
}

void ServiceHealth::Attach(grpc::HealthCheckServiceInterface* health) {
  absl::MutexLock lock(&mu_);
  health_ = health;
  for (const auto& [service, objections] : objections_) ApplyLocked(service);
}

void ServiceHealth::Detach() {
  absl::MutexLock lock(&mu_);
  if (health_ != nullptr) health_->Shutdown();
  health_ = nullptr;
}

std::string ServiceHealth::RenderPrometheus() const {
  absl::MutexLock lock(&mu_);
  std::string out =
      "# HELP strongroom_service_serving 1 while the service can do its job, 0 with the reasons why not.\n"
      "# TYPE strongroom_service_serving gauge\n";
  for (const auto& [service, objections] : objections_) {
    if (service == kServer) continue;
    std::string reason = absl::StrJoin(objections, "; ", [](std::string* out, const auto& objection) {
      absl::StrAppend(out, objection.first, ": ", objection.second);
    });
    // Label values escape backslash, quote and newline (Prometheus text format).
    reason = absl::StrReplaceAll(reason, {{"\\", "\\\\"}, {"\"", "\\\""}, {"\n", "\\n"}});
    absl::StrAppend(&out, "strongroom_service_serving{service=\"", service, "\",reason=\"", reason, "\"} ",
                    objections.empty() ? 1 : 0, "\n");
  }
  return out;
}

}  // namespace strongroom
