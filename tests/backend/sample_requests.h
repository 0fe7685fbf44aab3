// The well-formed requests the backend unit tests start from (cluster c1, project proj1, alice): a
// CreateGlobalJobRequest, and the sbatch submission of its global job.
#pragma once

#include <string>

#include "absl/time/time.h"
#include "services/backend/slurm_commands.h"
#include "strongroom/v1/backend.pb.h"

namespace strongroom::backend::testing {

inline v1::CreateGlobalJobRequest SampleCreateRequest(bool exclusive = true,
                                                      const std::string& slurmctld = "192.0.2.5:6817") {
  v1::CreateGlobalJobRequest r;
  r.mutable_local()->set_local_cluster("c1");
  r.mutable_local()->set_local_job_id(17);
  r.mutable_local()->set_token("sr-abcdef12");
  r.mutable_user()->set_name("alice");
  r.mutable_user()->set_uid(1000);
  r.set_project("proj1");
  r.set_exclusive(exclusive);
  r.add_slurmctld_addresses(slurmctld);
  return r;
}

// An exclusive global job's submission with no time-limit margin and no workload spec.
inline SubmitSpec SampleSubmitSpec() {
  SubmitSpec s;
  s.global_job_id = "gj-1";
  s.workload_id = "wl-1";
  s.local.set_local_cluster("c1");
  s.local.set_local_job_id(17);
  s.local.set_token("sr-abcdef12");
  s.project = "proj1";
  s.job_script = "/opt/strongroom/global-job";
  s.job_output = "/dev/null";
  return s;
}

}  // namespace strongroom::backend::testing
