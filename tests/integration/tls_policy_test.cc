// The TLS policy of every daemon, on both ends of a connection, against the real daemons in the rig:
//   - TLS 1.3 only: a TLS 1.2 client is refused by every server, and our client refuses a TLS 1.2 server;
//   - the leaf policy: CA:TRUE, a keyUsage without digitalSignature or an extendedKeyUsage without clientAuth
//     (serverAuth for servers) is refused, naming the reason;
//   - revocation: a certificate revoked with strongroom-pki (which publishes the CRL every daemon's
//     tls.crl_file names) is refused with UNAUTHENTICATED naming its serial within cert_refresh_seconds (1 in
//     the stack) of the CRL changing, by every daemon, without a restart.
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "tests/integration/stack_fixture.h"
#include "tests/rig/files.h"

namespace strongroom::testing {
namespace {

constexpr int kOk = 0;
constexpr int kUnavailable = 14;
constexpr int kUnauthenticated = 16;

const std::vector<std::string>& Daemons() {
  static const auto* daemons = new std::vector<std::string>{"backend", "vm-controller", "host-agent", "netd"};
  return *daemons;
}

// A call every certificate of the deployment may make (grpc.health.v1 Check): it succeeds exactly when the
// caller's certificate is accepted, whatever the daemon can reach.
const std::vector<std::string> kCall = {"--timeout", "5", "health"};

class TlsPolicyTest : public StackTest {
 protected:
  std::string Pki() { return stack().dir() + "/pki"; }

  // `openssl s_client` from the client host against `daemon`, limited to `version` ("-tls1_2", "-tls1_3"),
  // presenting the operator certificate.
  Rig::ExecResult Handshake(const std::string& daemon, const std::string& version) {
    absl::StatusOr<Rig::ExecResult> r = stack().rig().Exec(
        "client",
        {"bash", "-c",
         "openssl s_client -connect \"$1\" \"$2\" -alpn h2 -CAfile \"$3/ca.pem\" -cert \"$3/operator.pem\" "
         "-key \"$3/operator.key\" -brief </dev/null 2>&1",
         "handshake", absl::StrCat(stack().rig().Ip(daemon), ":7443"), version, Pki()},
        absl::Seconds(20));
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : Rig::ExecResult{-1, ""};
  }

  // A certificate with `defect` (strongroom-pki issue-nonconforming), returned as its file prefix.
  std::string Nonconforming(const std::string& role, const std::string& instance, const std::string& defect) {
    const std::string prefix = absl::StrCat(Pki(), "/", role, "-", instance, "-", defect);
    absl::Status s = stack().Pki({"issue-nonconforming", Pki(), "--role", role, "--instance", instance,
                                  "--defect", defect, "--out", prefix});
    EXPECT_TRUE(s.ok()) << s;
    return prefix;
  }

  std::string SerialOf(const std::string& pem_file) {
    absl::StatusOr<Rig::ExecResult> r = stack().rig().Exec(
        "client", {"openssl", "x509", "-in", pem_file, "-noout", "-serial"}, absl::Seconds(10));
    if (!r.ok() || r->exit_code != 0) return "";
    std::string serial = r->output.substr(r->output.find('=') + 1);
    while (!serial.empty() && (serial.back() == '\n' || serial.back() == '\r')) serial.pop_back();
    return serial;
  }
};

TEST_F(TlsPolicyTest, EveryDaemonRefusesTls12AndCompletesTls13) {
  for (const std::string& daemon : Daemons()) {
    SCOPED_TRACE(daemon);
    const size_t log_before = stack().DaemonLog(daemon).size();
    Rig::ExecResult old = Handshake(daemon, "-tls1_2");
    EXPECT_NE(old.exit_code, 0) << old.output;
    EXPECT_FALSE(absl::StrContains(old.output, "CONNECTION ESTABLISHED")) << old.output;
    // The server closes without an alert; its own log says why.
    std::string log;
    for (int i = 0; i < 20 && !absl::StrContains(log, "unsupported protocol"); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      log = stack().DaemonLog(daemon).substr(log_before);
    }
    EXPECT_TRUE(absl::StrContains(log, "unsupported protocol")) << log;
    // The control: the same client, certificate and server with TLS 1.3.
    Rig::ExecResult current = Handshake(daemon, "-tls1_3");
    EXPECT_TRUE(absl::StrContains(current.output, "Protocol version: TLSv1.3")) << current.output;
  }
}

TEST_F(TlsPolicyTest, OurClientRefusesATls12Server) {
  // A TLS 1.2-only server with a valid backend certificate of this deployment, on the client host.
  const std::string log = stack().dir() + "/logs/tls12-server.log";
  for (const std::string& version : {std::string("-tls1_2"), std::string("-tls1_3")}) {
    SCOPED_TRACE(version);
    absl::StatusOr<pid_t> server = stack().rig().Spawn(
        "client", log,
        {"openssl", "s_server", "-accept", "198.51.100.20:7600", version, "-naccept", "1", "-rev", "-cert",
         Pki() + "/server-backend.pem", "-key", Pki() + "/server-backend.key", "-CAfile", Pki() + "/ca.pem"});
    ASSERT_TRUE(server.ok()) << server.status();
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    absl::StatusOr<Rig::ExecResult> r = stack().rig().Exec(
        "client",
        {SR_CTL_BIN, "--target", "198.51.100.20:7600", "--trust-domain", Stack::kTrustDomain, "--ca",
         Pki() + "/ca.pem", "--cert", Pki() + "/operator.pem", "--key", Pki() + "/operator.key",
         "--server-role", "backend", "--timeout", "3", "health"},
        absl::Seconds(20));
    ASSERT_TRUE(r.ok()) << r.status();
    // s_server speaks no HTTP/2, so the call fails either way; what differs is whether TLS was agreed on.
    EXPECT_EQ(r->exit_code, kUnavailable) << r->output;
    (void)stack().rig().Stop(*server);
    const std::string seen = ReadFileOrEmpty(log);
    if (version == "-tls1_2") {
      EXPECT_FALSE(absl::StrContains(seen, "CONNECTION ESTABLISHED")) << "a TLS 1.2 session was agreed on:\n"
                                                                      << seen;
      EXPECT_TRUE(absl::StrContains(seen, "unsupported protocol")) << seen;
    } else {
      EXPECT_TRUE(absl::StrContains(seen, "Protocol version: TLSv1.3")) << "the control did not handshake:\n"
                                                                        << seen;
    }
  }
}

TEST_F(TlsPolicyTest, EveryDaemonRefusesANonconformingClientLeafNamingWhy) {
  const struct {
    const char* defect;
    const char* reason;
  } cases[] = {{"ca-true", "CA:TRUE"},
               {"no-digital-signature", "lacks digitalSignature"},
               {"server-auth-only", "certificate rejected"}};
  for (const auto& c : cases) {
    const std::string prefix = Nonconforming("operator", "mallory", c.defect);
    for (const std::string& daemon : Daemons()) {
      SCOPED_TRACE(absl::StrCat(daemon, " ", c.defect));
      CtlResult r = stack().CtlAs(daemon, prefix, kCall);
      EXPECT_EQ(r.exit_code, kUnauthenticated) << r.output;
      EXPECT_TRUE(absl::StrContains(r.output, c.reason)) << r.output;
    }
  }
  // The control: a conforming operator certificate of the same CA passes everywhere.
  for (const std::string& daemon : Daemons()) {
    CtlResult r = stack().Ctl(daemon, Credential::kOperator, kCall);
    EXPECT_EQ(r.exit_code, kOk) << daemon << ": " << r.output;
  }
}

TEST_F(TlsPolicyTest, ClientsRefuseANonconformingServerLeaf) {
  const std::string original = Pki() + "/original-server-netd";
  ASSERT_TRUE(stack().Pki({"issue", Pki(), "--role", "netd", "--instance", "netd", "--out", original}).ok());
  const struct {
    const char* defect;
    const char* reason;
  } cases[] = {{"ca-true", "server certificate rejected (serial"},
               // OpenSSL's own check in the handshake already refuses this one, before our verifier runs.
               {"client-auth-only", "certificate verify failed"}};
  for (const auto& c : cases) {
    SCOPED_TRACE(c.defect);
    ASSERT_TRUE(stack().ReplaceServerCertificate("netd", Nonconforming("netd", "netd", c.defect)).ok());
    CtlResult r;
    for (int i = 0; i < 40; ++i) {  // the watcher picks the swap up within cert_refresh_seconds (1)
      r = stack().Ctl("netd", Credential::kOperator, {"--timeout", "3", "health"});
      if (absl::StrContains(r.output, c.reason)) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(250));
    }
    EXPECT_EQ(r.exit_code, kUnavailable) << r.output;
    EXPECT_TRUE(absl::StrContains(r.output, c.reason)) << r.output;
  }
  // Back to a conforming certificate: served again.
  ASSERT_TRUE(stack().Pki({"issue", Pki(), "--role", "netd", "--instance", "netd", "--out", original}).ok());
  ASSERT_TRUE(stack().ReplaceServerCertificate("netd", original).ok());
  CtlResult r;
  for (int i = 0; i < 40; ++i) {
    r = stack().Ctl("netd", Credential::kOperator, {"--timeout", "3", "health"});
    if (r.exit_code == kOk) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
  EXPECT_EQ(r.exit_code, kOk) << r.output;
}

TEST_F(TlsPolicyTest, ARevokedClientIsRefusedByEveryDaemonWithinTheRefreshNamingItsSerial) {
  const std::string carol = Pki() + "/operator-carol";
  ASSERT_TRUE(
      stack().Pki({"issue", Pki(), "--role", "operator", "--instance", "carol", "--out", carol}).ok());
  for (const std::string& daemon : Daemons()) {
    CtlResult r = stack().CtlAs(daemon, carol, kCall);
    ASSERT_EQ(r.exit_code, kOk) << daemon << " before the revocation: " << r.output;
  }
  const std::string serial = SerialOf(carol + ".pem");
  ASSERT_FALSE(serial.empty());
  ASSERT_TRUE(stack().Pki({"revoke", Pki(), "--cert", carol + ".pem", "--reason", "keyCompromise"}).ok());
  const absl::Time revoked = absl::Now();
  for (const std::string& daemon : Daemons()) {
    SCOPED_TRACE(daemon);
    CtlResult r;
    absl::Duration took;
    while (true) {
      r = stack().CtlAs(daemon, carol, kCall);
      took = absl::Now() - revoked;
      if (r.exit_code != kOk || took > absl::Seconds(10)) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    EXPECT_EQ(r.exit_code, kUnauthenticated) << r.output;
    EXPECT_TRUE(absl::StrContains(r.output, "certificate revoked")) << r.output;
    EXPECT_TRUE(absl::StrContains(r.output, serial)) << r.output;
    // cert_refresh_seconds is 1 in the stack; a strongroomctl call takes up to a few hundred ms under load.
    EXPECT_LE(took, absl::Seconds(3)) << "still accepted " << took << " after the CRL changed";
    std::printf("%s refused the revoked certificate %s after %s\n", daemon.c_str(), serial.c_str(),
                absl::FormatDuration(took).c_str());
  }
  // Others are unaffected.
  for (const std::string& daemon : Daemons()) {
    CtlResult r = stack().Ctl(daemon, Credential::kOperator, kCall);
    EXPECT_EQ(r.exit_code, kOk) << daemon << ": " << r.output;
  }
}

TEST_F(TlsPolicyTest, AClientWithTheCrlRefusesARevokedServer) {
  const std::string fresh = Pki() + "/server-netd-to-revoke";
  ASSERT_TRUE(stack().Pki({"issue", Pki(), "--role", "netd", "--instance", "netd", "--out", fresh}).ok());
  const std::string serial = SerialOf(fresh + ".pem");
  ASSERT_TRUE(stack().ReplaceServerCertificate("netd", fresh).ok());
  const std::vector<std::string> with_crl = {"--crl", Pki() + "/crl.pem", "--timeout", "3", "health"};
  CtlResult r;
  for (int i = 0; i < 40; ++i) {
    r = stack().Ctl("netd", Credential::kOperator, {"--show-peer", "--crl", Pki() + "/crl.pem", "health"});
    if (r.exit_code == kOk && absl::StrContains(r.output, serial)) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
  ASSERT_TRUE(absl::StrContains(r.output, serial)) << r.output;
  ASSERT_TRUE(stack().Pki({"revoke", Pki(), "--serial", serial}).ok());
  r = stack().Ctl("netd", Credential::kOperator, with_crl);
  EXPECT_EQ(r.exit_code, kUnavailable) << r.output;
  // Without the CRL the same client still connects: the refusal above is the revocation check.
  r = stack().Ctl("netd", Credential::kOperator, {"--timeout", "3", "health"});
  EXPECT_EQ(r.exit_code, kOk) << r.output;
  ASSERT_TRUE(stack().ReissueServerCertificate("netd").ok());
}

}  // namespace
}  // namespace strongroom::testing
