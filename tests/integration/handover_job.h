// The local job as vm-controller's CreateGlobalJob leaves it (GLOBAL_REQUESTED, the global job and workload
// known), written straight into its store: these stacks run no Local Slurm, and a test of the handover
// (ProvisionWorkload) starts from there. Callers link vm_controller_lib.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "services/vm_controller/local_job_store.h"
#include "strongroom/v1/vm_controller.pb.h"

namespace strongroom {

inline absl::Status InsertJobAwaitingHandover(const std::string& store_path, const std::string& workload,
                                              const std::string& global_job, const std::string& token,
                                              int64_t local_job_id) {
  absl::StatusOr<std::unique_ptr<vm_controller::LocalJobStore>> store =
      vm_controller::LocalJobStore::Open(store_path);
  if (!store.ok()) return store.status();
  v1::LocalJob job;
  job.mutable_local()->set_local_cluster("local");
  job.mutable_local()->set_local_job_id(local_job_id);
  job.mutable_local()->set_token(token);
  job.mutable_user()->set_name("alice");
  job.mutable_user()->set_uid(1000);
  job.set_project("proj-a");
  job.set_exclusive(true);
  job.set_state(v1::LOCAL_JOB_STATE_GLOBAL_REQUESTED);
  job.set_global_job_id(global_job);
  job.set_workload_id(workload);
  return (*store)->Insert(job).status();
}

}  // namespace strongroom
