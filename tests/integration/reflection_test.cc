// Server reflection works for operators through an independent client: @grpc/grpc-js with a
// reflection client from npm (tests/reflection/), run on the rig's client host over mTLS.
#include <string>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "tests/integration/stack_fixture.h"

namespace strongroom::testing {
namespace {

class ReflectionTest : public StackTest {
 protected:
  CtlResult Reflect(const std::string& daemon, const std::string& credential_prefix,
                    const std::string& method) {
    const std::string pki = stack().dir() + "/pki";
    absl::StatusOr<Rig::ExecResult> r =
        stack().rig().Exec("client",
                           {"node", SR_REFLECT_JS, "--target", stack().rig().Ip(daemon) + ":7443", "--ca",
                            pki + "/ca.pem", "--cert", pki + "/" + credential_prefix + ".pem", "--key",
                            pki + "/" + credential_prefix + ".key", "--describe", method},
                           absl::Seconds(40));
    if (!r.ok()) return {-1, r.status().ToString()};
    return {r->exit_code, r->output};
  }
};

TEST_F(ReflectionTest, OperatorListsServicesAndDescribesAMethod) {
  const struct {
    const char* daemon;
    const char* method;
  } cases[] = {{"backend", "strongroom.v1.Backend.CreateGlobalJob"},
               {"vm-controller", "strongroom.v1.VmController.ConvertLocalJob"},
               {"host-agent", "strongroom.v1.HostAgent.StartWorkload"},
               {"netd", "strongroom.v1.Netd.AllocatePort"}};
  for (const auto& c : cases) {
    SCOPED_TRACE(c.daemon);
    CtlResult r = Reflect(c.daemon, "operator", c.method);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    const std::string service = "strongroom.v1." + ServiceOf(c.daemon);
    EXPECT_TRUE(absl::StrContains(r.output, "\"" + service + "\"")) << r.output;
    EXPECT_TRUE(absl::StrContains(r.output, "\"grpc.health.v1.Health\"")) << r.output;
    EXPECT_TRUE(absl::StrContains(r.output, "\"grpc.reflection.v1alpha.ServerReflection\"")) << r.output;
    const std::string method_name = std::string(c.method).substr(std::string(c.method).rfind('.') + 1);
    EXPECT_TRUE(absl::StrContains(r.output, method_name + "Request")) << r.output;
    EXPECT_TRUE(absl::StrContains(r.output, method_name + "Response")) << r.output;
  }
}

TEST_F(ReflectionTest, ReflectionIsForOperatorsOnly) {
  CtlResult r = Reflect("netd", "client-host-agent", "strongroom.v1.Netd.AllocatePort");
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_TRUE(absl::StrContains(r.output, "PERMISSION_DENIED") || absl::StrContains(r.output, "7"))
      << r.output;
}

}  // namespace
}  // namespace strongroom::testing
