// backend's global-job RPCs as vm-controller uses them. GlobalJobsClient calls backend over mTLS with this
// daemon's own certificate (role vm-controller, instance = the Local cluster name).
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "strongroom/v1/backend.grpc.pb.h"
#include "strongroom/v1/config.pb.h"

namespace strongroom::vm_controller {

class GlobalJobs {
 public:
  virtual ~GlobalJobs() = default;
  virtual absl::StatusOr<v1::CreateGlobalJobResponse> CreateGlobalJob(const v1::CreateGlobalJobRequest& request) = 0;
  virtual absl::StatusOr<v1::ReleaseWorkloadResponse> ReleaseWorkload(const v1::ReleaseWorkloadRequest& request) = 0;
  virtual absl::StatusOr<v1::CancelJobResponse> CancelJob(const v1::CancelJobRequest& request) = 0;
  virtual absl::StatusOr<v1::GetJobResponse> GetJob(const v1::GetJobRequest& request) = 0;
};

absl::StatusOr<std::unique_ptr<GlobalJobs>> MakeGlobalJobsClient(const std::string& backend_address,
                                                                 const v1::TlsFiles& tls,
                                                                 const std::string& trust_domain);

}  // namespace strongroom::vm_controller
