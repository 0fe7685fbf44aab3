// EnrollWorkload on a real vm-controller over mTLS (issue 14, docs/IPSEC.md): only the workload role reaches
// it (the authorization table), a workload may enroll only as itself, and nothing is issued for a workload
// that ProvisionWorkload never handed over. The positive path with a handed-over workload is covered by
// vm_controller_unit_tests (ControllerTest.ProvisionHandsTheWorkloadOverForEnrollment...).
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/project_ca.h"
#include "gtest/gtest.h"
#include "tests/integration/stack_fixture.h"

namespace strongroom::testing {
namespace {

constexpr int kNotFound = 5;
constexpr int kPermissionDenied = 7;

class EnrollmentRpcTest : public StackTest {};

TEST_F(EnrollmentRpcTest, OnlyTheWorkloadItselfReachesEnrollmentAndNothingIsIssuedWithoutAHandover) {
  const std::string pki = stack().dir() + "/pki";
  ASSERT_TRUE(stack()
                  .Pki({"issue", pki, "--role", "workload", "--instance", "wl-enroll-1", "--out",
                        pki + "/workload-wl-enroll-1"})
                  .ok());
  absl::StatusOr<EcKey> key = EcKey::Generate();
  ASSERT_TRUE(key.ok());
  absl::StatusOr<std::string> csr = key->CsrPem("wl-enroll-1");
  ASSERT_TRUE(csr.ok());
  const std::string request = absl::StrCat(
      "{\"workloadId\":\"wl-enroll-1\",\"globalJobId\":\"gj-1\",\"project\":\"proj-a\",\"csrPem\":",
      JsonString(*csr), "}");
  const std::string method = "strongroom.v1.VmController/EnrollWorkload";

  // Another role: refused by the authorization table before the handler.
  CtlResult op = stack().Ctl("vm-controller", Credential::kOperator, {"call", method, request});
  EXPECT_EQ(op.exit_code, kPermissionDenied) << op.output;
  EXPECT_TRUE(absl::StrContains(op.output, "role operator")) << op.output;
  CtlResult backend = stack().Ctl("vm-controller", Credential::kBackend, {"call", method, request});
  EXPECT_EQ(backend.exit_code, kPermissionDenied) << backend.output;

  // The workload's own identity, but ProvisionWorkload never handed it over: nothing issued.
  CtlResult self = stack().CtlAs("vm-controller", pki + "/workload-wl-enroll-1", {"call", method, request});
  EXPECT_EQ(self.exit_code, kNotFound) << self.output;
  EXPECT_TRUE(absl::StrContains(self.output, "not handed over")) << self.output;
  EXPECT_FALSE(absl::StrContains(self.output, "BEGIN CERTIFICATE")) << self.output;

  // A workload speaking for another workload id.
  const std::string other = absl::StrCat(
      "{\"workloadId\":\"wl-someone-else\",\"globalJobId\":\"gj-1\",\"project\":\"proj-a\",\"csrPem\":",
      JsonString(*csr), "}");
  CtlResult impostor = stack().CtlAs("vm-controller", pki + "/workload-wl-enroll-1", {"call", method, other});
  EXPECT_EQ(impostor.exit_code, kPermissionDenied) << impostor.output;
  EXPECT_TRUE(absl::StrContains(impostor.output, "not this workload's identity")) << impostor.output;
}

}  // namespace
}  // namespace strongroom::testing
