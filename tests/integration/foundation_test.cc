// The foundation acceptance tests: every daemon runs as its own host in the rig (own netns,
// hostname and IP) and is called over real TCP and mTLS by strongroomctl from a client host.
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/integration/stack_fixture.h"

namespace strongroom::testing {
namespace {

// One mutation that only a specific service role may call, and a read an operator may call,
// per daemon.
struct DaemonCase {
  std::string daemon;        // rig host and binary name
  std::string mutation;      // full method
  std::string allowed_role;  // a role permitted to call `mutation`
  std::string read_method;   // an operator-readable method
};

const std::vector<DaemonCase>& Cases() {
  static const auto* cases = new std::vector<DaemonCase>{
      {"backend", "strongroom.v1.Backend/CreateGlobalJob", "vm-controller", "strongroom.v1.Backend/ListJobs"},
      {"vm-controller", "strongroom.v1.VmController/ProvisionWorkload", "backend",
       "strongroom.v1.VmController/ListLocalJobs"},
      {"host-agent", "strongroom.v1.HostAgent/StartWorkload", "backend",
       "strongroom.v1.HostAgent/ListWorkloads"},
      {"netd", "strongroom.v1.Netd/AllocatePort", "host-agent", "strongroom.v1.Netd/ListPorts"},
  };
  return *cases;
}

constexpr int kOk = 0;
constexpr int kPermissionDenied = 7;
constexpr int kUnauthenticated = 16;

class FoundationTest : public StackTest {};

TEST_F(FoundationTest, MtlsMatrixRejectsBeforeTheHandlerRuns) {
  for (const DaemonCase& c : Cases()) {
    SCOPED_TRACE(c.daemon);
    const uint64_t handled_before = stack().HandledCount(c.daemon, "/" + c.mutation);

    CtlResult anonymous = stack().Ctl(c.daemon, Credential::kAnonymous, {"call", c.mutation, "{}"});
    EXPECT_EQ(anonymous.exit_code, kUnauthenticated) << anonymous.output;
    EXPECT_TRUE(absl::StrContains(anonymous.output, "no client certificate")) << anonymous.output;

    CtlResult foreign = stack().Ctl(c.daemon, Credential::kForeignCa, {"call", c.mutation, "{}"});
    EXPECT_EQ(foreign.exit_code, kUnauthenticated) << foreign.output;
    EXPECT_TRUE(absl::StrContains(foreign.output, "not issued by this deployment's CA")) << foreign.output;

    CtlResult expired = stack().Ctl(c.daemon, Credential::kExpired, {"call", c.mutation, "{}"});
    EXPECT_EQ(expired.exit_code, kUnauthenticated) << expired.output;
    EXPECT_TRUE(absl::StrContains(expired.output, "certificate has expired")) << expired.output;

    CtlResult wrong_role = stack().Ctl(c.daemon, Credential::kOperator, {"call", c.mutation, "{}"});
    EXPECT_EQ(wrong_role.exit_code, kPermissionDenied) << wrong_role.output;
    EXPECT_TRUE(absl::StrContains(wrong_role.output, "role operator")) << wrong_role.output;

    const std::string unlisted = c.mutation.substr(0, c.mutation.find('/')) + "/NotInTheTable";
    CtlResult not_in_table = stack().Ctl(c.daemon, Credential::kOperator, {"--raw", "call", unlisted});
    EXPECT_EQ(not_in_table.exit_code, kPermissionDenied) << not_in_table.output;
    EXPECT_TRUE(absl::StrContains(not_in_table.output, "default deny")) << not_in_table.output;

    // None of the refused calls reached a handler.
    EXPECT_EQ(stack().HandledCount(c.daemon, "/" + c.mutation), handled_before);
    EXPECT_EQ(stack().HandledCount(c.daemon, "/" + unlisted), 0u);
    EXPECT_GE(stack().RejectedCount(c.daemon, "/" + c.mutation), 4u);

    // The right role passes authorization and the handler runs; with an empty request it may answer
    // UNIMPLEMENTED or INVALID_ARGUMENT, but never an authentication or authorization refusal.
    CtlResult allowed = stack().Ctl(c.daemon, RoleCredential(c.allowed_role), {"call", c.mutation, "{}"});
    EXPECT_NE(allowed.exit_code, kPermissionDenied) << allowed.output;
    EXPECT_NE(allowed.exit_code, kUnauthenticated) << allowed.output;
    EXPECT_EQ(stack().HandledCount(c.daemon, "/" + c.mutation), handled_before + 1);

    CtlResult read = stack().Ctl(c.daemon, Credential::kOperator, {"call", c.read_method, "{}"});
    EXPECT_NE(read.exit_code, kPermissionDenied) << read.output;
    EXPECT_NE(read.exit_code, kUnauthenticated) << read.output;
  }
}

TEST_F(FoundationTest, ClientRefusesAServerWithTheWrongRole) {
  // Dial netd but insist on talking to backend: the client's SAN check must refuse.
  CtlResult r = stack().Ctl("netd", Credential::kOperator,
                            {"--server-role", "backend", "call", "strongroom.v1.Netd/ListPorts", "{}"});
  EXPECT_EQ(r.exit_code, 14) << r.output;  // UNAVAILABLE: the client refused the handshake
}

TEST_F(FoundationTest, HealthReportsServing) {
  for (const DaemonCase& c : Cases()) {
    const std::string service = "strongroom.v1." + ServiceOf(c.daemon);
    CtlResult r = stack().Ctl(c.daemon, Credential::kOperator, {"health", service});
    EXPECT_EQ(r.exit_code, kOk) << r.output;
    EXPECT_TRUE(absl::StrContains(r.output, "\"status\":\"SERVING\"")) << r.output;
  }
}

TEST_F(FoundationTest, CertificateHotReloadServesTheNewCertificate) {
  auto serial = [&] {
    CtlResult r = stack().Ctl("netd", Credential::kOperator, {"--show-peer", "health"});
    EXPECT_EQ(r.exit_code, kOk) << r.output;
    const size_t at = r.output.find("\"serial\":\"");
    return at == std::string::npos ? std::string()
                                   : r.output.substr(at + 10, r.output.find('"', at + 10) - at - 10);
  };
  const std::string before = serial();
  ASSERT_FALSE(before.empty());
  ASSERT_TRUE(stack().ReissueServerCertificate("netd").ok());
  std::string after = before;
  // cert_refresh_seconds is 1 in the rig's configs.
  for (int i = 0; i < 40 && after == before; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
    after = serial();
  }
  EXPECT_NE(after, before) << "netd kept serving the old certificate without a restart";
}

TEST_F(FoundationTest, SigtermDrainsWithNotServingThenExits) {
  // Fresh instances, so the shared ones stay up for the other tests.
  std::map<std::string, pid_t> pids;
  for (const DaemonCase& c : Cases()) {
    absl::StatusOr<pid_t> pid = stack().StartExtraDaemon(c.daemon, c.daemon + "-drain", /*drain_seconds=*/4);
    ASSERT_TRUE(pid.ok()) << pid.status();
    pids[c.daemon] = *pid;
  }
  for (const auto& [daemon, pid] : pids) ASSERT_TRUE(stack().rig().Kill(pid, SIGTERM).ok()) << daemon;
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  for (const auto& [daemon, pid] : pids) {
    SCOPED_TRACE(daemon);
    CtlResult draining = stack().Ctl(daemon + "-drain", Credential::kOperator,
                                     {"health", "strongroom.v1." + ServiceOf(daemon)});
    EXPECT_EQ(draining.exit_code, kOk) << draining.output;
    EXPECT_TRUE(absl::StrContains(draining.output, "\"status\":\"NOT_SERVING\"")) << draining.output;
  }
  for (const auto& [daemon, pid] : pids) {
    SCOPED_TRACE(daemon);
    EXPECT_TRUE(stack().WaitForExit(pid, absl::Seconds(15))) << "did not exit after draining";
    EXPECT_TRUE(absl::StrContains(stack().DaemonLog(daemon + "-drain"), "\"msg\":\"stopped\""));
  }
}

}  // namespace
}  // namespace strongroom::testing
