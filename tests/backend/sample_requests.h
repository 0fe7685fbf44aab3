// The one well-formed CreateGlobalJobRequest the backend unit tests start from (cluster c1, project proj1, alice).
#pragma once

#include <string>

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

}  // namespace strongroom::backend::testing
