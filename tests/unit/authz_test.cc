#include "common/authz.h"

#include <set>
#include <string>

#include "absl/strings/str_cat.h"
#include "google/protobuf/descriptor.h"
#include "gtest/gtest.h"
#include "strongroom/v1/backend.grpc.pb.h"
#include "strongroom/v1/host_agent.grpc.pb.h"
#include "strongroom/v1/netd.grpc.pb.h"
#include "strongroom/v1/vm_controller.grpc.pb.h"

namespace strongroom {
namespace {

Identity As(Role role) { return Identity{"lab.example.edu", role, "x"}; }

TEST(Authz, DesignExamplesHold) {
  EXPECT_TRUE(Authorize(As(Role::kBackend), "/strongroom.v1.HostAgent/StartWorkload").ok());
  EXPECT_TRUE(Authorize(As(Role::kHostAgent), "/strongroom.v1.Netd/AllocatePort").ok());
  EXPECT_TRUE(Authorize(As(Role::kVmController), "/strongroom.v1.Backend/CreateGlobalJob").ok());
  EXPECT_TRUE(Authorize(As(Role::kOperator), "/strongroom.v1.Netd/ListPorts").ok());

  EXPECT_EQ(Authorize(As(Role::kOperator), "/strongroom.v1.HostAgent/StartWorkload").code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(Authorize(As(Role::kBackend), "/strongroom.v1.Netd/AllocatePort").code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(Authorize(As(Role::kWorkload), "/grpc.health.v1.Health/Check").code(),
            absl::StatusCode::kPermissionDenied);
}

TEST(Authz, UnlistedMethodIsDenied) {
  absl::Status s = Authorize(As(Role::kOperator), "/strongroom.v1.Netd/DropTables");
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_NE(s.message().find("default deny"), absl::string_view::npos) << s;
}

TEST(Authz, DenialNamesRoleAndMethod) {
  absl::Status s = Authorize(As(Role::kOperator), "/strongroom.v1.Netd/AllocatePort");
  EXPECT_NE(s.message().find("operator"), absl::string_view::npos) << s;
  EXPECT_NE(s.message().find("/strongroom.v1.Netd/AllocatePort"), absl::string_view::npos) << s;
}

// The table and the proto API must agree: every RPC has a rule (else it is unreachable by
// default deny) and every rule names a real RPC (else it is a typo that opens nothing).
TEST(Authz, TableCoversExactlyTheApi) {
  std::set<std::string> api;
  for (const char* name : {v1::Backend::service_full_name(), v1::VmController::service_full_name(),
                           v1::WorkloadEnrollment::service_full_name(), v1::HostAgent::service_full_name(),
                           v1::Netd::service_full_name()}) {
    const google::protobuf::ServiceDescriptor* service =
        google::protobuf::DescriptorPool::generated_pool()->FindServiceByName(name);
    ASSERT_NE(service, nullptr) << name;
    for (int i = 0; i < service->method_count(); ++i) {
      api.insert(absl::StrCat("/", service->full_name(), "/", service->method(i)->name()));
    }
  }
  std::set<std::string> table;
  for (const AuthzRule& rule : AuthorizationTable()) {
    EXPECT_TRUE(table.insert(std::string(rule.method)).second) << "duplicate rule " << rule.method;
    // A deployment-role rule names its roles; an enrollment-listener rule none (its handler authenticates).
    EXPECT_EQ(rule.allowed.empty(), rule.auth != CallerAuth::kDeploymentRole) << rule.method;
    if (rule.method.rfind("/strongroom.", 0) == 0) {
      EXPECT_TRUE(api.count(std::string(rule.method))) << "rule for unknown RPC " << rule.method;
    }
  }
  for (const std::string& method : api) EXPECT_TRUE(table.count(method)) << "no rule for " << method;
}

// Issue 14: the workload-facing enrollment RPCs are served on vm-controller's enrollment listener only, and
// that listener serves nothing else (no health, no reflection, no main-listener RPC).
TEST(Authz, EnrollmentListenerServesExactlyTheEnrollmentRpcs) {
  for (Role role : {Role::kWorkload, Role::kOperator, Role::kBackend}) {
    absl::Status s = Authorize(As(role), "/strongroom.v1.WorkloadEnrollment/GetProjectSecrets");
    EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied);
    EXPECT_NE(s.message().find("only on vm-controller's enrollment listener"), absl::string_view::npos) << s;
    EXPECT_EQ(Authorize(As(role), "/strongroom.v1.WorkloadEnrollment/EnrollWorkload").code(),
              absl::StatusCode::kPermissionDenied);
  }
  EXPECT_EQ(*AuthorizeOnEnrollmentListener("/strongroom.v1.WorkloadEnrollment/EnrollWorkload"),
            CallerAuth::kEnrollmentTicket);
  EXPECT_EQ(*AuthorizeOnEnrollmentListener("/strongroom.v1.WorkloadEnrollment/GetProjectSecrets"),
            CallerAuth::kProjectCertificate);
  for (const char* other :
       {"/strongroom.v1.VmController/EnrollWorkload", "/strongroom.v1.VmController/ProvisionWorkload",
        "/grpc.health.v1.Health/Check", "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        "/strongroom.v1.WorkloadEnrollment/Nope"}) {
    EXPECT_EQ(AuthorizeOnEnrollmentListener(other).status().code(), absl::StatusCode::kPermissionDenied)
        << other;
  }
}

}  // namespace
}  // namespace strongroom
