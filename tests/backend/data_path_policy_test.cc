// The secure data path's allowlist (issue 14) as backend derives it: with a project's ipsec_data_path, the
// only default rules are IKE / ESP-in-UDP to the controlling VM and TCP to the enrollment endpoint; no
// plaintext Slurm rule either way; and no requested rule may reach the controlling VM outside the tunnel.
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "tests/backend/sample_requests.h"
#include "services/backend/job_policy.h"

namespace strongroom::backend {
namespace {

v1::CreateGlobalJobRequest Request() { return testing::SampleCreateRequest(); }

BackendSettings Settings(bool ipsec) {
  BackendSettings s;
  ProjectPolicy& p = s.projects["proj1"];
  p.name = "proj1";
  p.local_clusters = {"c1"};
  p.default_image = "img";
  p.egress_ceiling = {"192.0.2.0/24", "198.51.100.0/24"};
  p.ingress_ceiling = {"192.0.2.0/24"};
  p.ipsec_data_path = ipsec;
  s.vm_controllers["c1"] = "192.0.2.5:7443";
  return s;
}

std::vector<std::string> Rules(const v1::WorkloadSpec& spec) {
  std::vector<std::string> out;
  for (const auto& r : spec.egress_allowlist())
    out.push_back(absl::StrCat("out ", r.destination_cidr(), " ", v1::Protocol_Name(r.protocol()), " ",
                               r.port_start()));
  for (const auto& r : spec.ingress_allowlist())
    out.push_back(
        absl::StrCat("in ", r.source_cidr(), " ", v1::Protocol_Name(r.protocol()), " ", r.port_start()));
  return out;
}

const Identity kCaller{"example.edu", Role::kVmController, "c1"};

TEST(DataPathPolicyTest, IpsecProjectGetsOnlyIkeEspInUdpAndEnrollment) {
  BackendSettings s = Settings(true);
  v1::WorkloadSpec spec = BuildWorkloadSpec(Request(), s.projects.at("proj1"), NewJobIds(), "example.edu",
                                            s.vm_controllers.at("c1"));
  EXPECT_EQ(Rules(spec), (std::vector<std::string>{"out 192.0.2.5/32 PROTOCOL_UDP 500",
                                                   "out 192.0.2.5/32 PROTOCOL_UDP 4500",
                                                   "out 192.0.2.5/32 PROTOCOL_TCP 7443"}));
}

// With the cluster's enrollment listener configured (vm_controllers[].enrollment_address), the workload is told
// where it is (its bundle) and may reach exactly it.
TEST(DataPathPolicyTest, TheEnrollmentListenerIsInTheBundleAndTheAllowlist) {
  BackendSettings s = Settings(true);
  v1::WorkloadSpec spec = BuildWorkloadSpec(Request(), s.projects.at("proj1"), NewJobIds(), "example.edu",
                                            s.vm_controllers.at("c1"), 384, "192.0.2.5:7444");
  EXPECT_EQ(spec.provisioning().enrollment_address(), "192.0.2.5:7444");
  EXPECT_EQ(Rules(spec), (std::vector<std::string>{"out 192.0.2.5/32 PROTOCOL_UDP 500",
                                                   "out 192.0.2.5/32 PROTOCOL_UDP 4500",
                                                   "out 192.0.2.5/32 PROTOCOL_TCP 7444"}));
  EXPECT_EQ(BuildWorkloadSpec(Request(), s.projects.at("proj1"), NewJobIds(), "example.edu",
                              s.vm_controllers.at("c1"))
                .provisioning()
                .enrollment_address(),
            "");
}

TEST(DataPathPolicyTest, PlaintextProjectKeepsTodaysSlurmRules) {
  BackendSettings s = Settings(false);
  v1::WorkloadSpec spec = BuildWorkloadSpec(Request(), s.projects.at("proj1"), NewJobIds(), "example.edu",
                                            s.vm_controllers.at("c1"));
  EXPECT_EQ(Rules(spec), (std::vector<std::string>{"out 192.0.2.5/32 PROTOCOL_TCP 6817",
                                                   "in 192.0.2.5/32 PROTOCOL_TCP 6818"}));
}

TEST(DataPathPolicyTest, RequestedRulesToTheControllingVmAreRefused) {
  BackendSettings s = Settings(true);
  v1::CreateGlobalJobRequest r = Request();
  v1::EgressRule* e = r.add_egress_allowlist();
  e->set_destination_cidr("192.0.2.0/24");  // covers the VM: its NFS and Slurm ports in plaintext
  e->set_protocol(v1::PROTOCOL_TCP);
  e->set_port_start(2049);
  absl::Status st = CheckCreatePolicy(r, s, kCaller);
  EXPECT_EQ(st.code(), absl::StatusCode::kPermissionDenied) << st;
  EXPECT_TRUE(absl::StrContains(st.message(), "only through IPsec")) << st;

  r = Request();
  v1::IngressRule* in = r.add_ingress_allowlist();
  in->set_source_cidr("192.0.2.5/32");
  in->set_protocol(v1::PROTOCOL_TCP);
  in->set_port_start(6818);
  st = CheckCreatePolicy(r, s, kCaller);
  EXPECT_EQ(st.code(), absl::StatusCode::kPermissionDenied) << st;

  r = Request();
  e = r.add_egress_allowlist();
  e->set_destination_cidr("198.51.100.7/32");  // a licence server elsewhere is fine
  e->set_protocol(v1::PROTOCOL_TCP);
  e->set_port_start(27000);
  EXPECT_TRUE(CheckCreatePolicy(r, s, kCaller).ok());
  // The same VM rule is allowed for a plaintext project (its ceiling allows it).
  r = Request();
  e = r.add_egress_allowlist();
  e->set_destination_cidr("192.0.2.0/24");
  e->set_protocol(v1::PROTOCOL_TCP);
  e->set_port_start(2049);
  EXPECT_TRUE(CheckCreatePolicy(r, Settings(false), kCaller).ok());
}

}  // namespace
}  // namespace strongroom::backend
