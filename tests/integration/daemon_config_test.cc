// Every daemon refuses to start on a malformed or out-of-range config, with exactly one line
// naming the file, the line and the field.
#include <unistd.h>

#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "tests/rig/rig.h"

namespace strongroom {
namespace {

struct Daemon {
  const char* name;
  const char* binary;
};
const Daemon kDaemons[] = {{"backend", SR_BACKEND_BIN},
                           {"vm-controller", SR_VM_CONTROLLER_BIN},
                           {"host-agent", SR_HOST_AGENT_BIN},
                           {"netd", SR_NETD_BIN}};

class DaemonConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir_template[] = "/tmp/strongroom-daemon-config-XXXXXX";
    dir_ = mkdtemp(dir_template);
    for (const char* name : {"ca.pem", "cert.pem", "key.pem"}) std::ofstream(dir_ + "/" + name) << "x";
  }
  void TearDown() override { (void)RunWithTimeout({"/bin/rm", "-rf", dir_}, absl::Seconds(10)); }

  // Runs `binary --config <text>` and returns its result.
  Rig::ExecResult Run(const char* binary, const std::string& text) {
    const std::string path = dir_ + "/daemon.textproto";
    std::ofstream(path) << text;
    absl::StatusOr<Rig::ExecResult> r = RunWithTimeout({binary, "--config", path}, absl::Seconds(20));
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : Rig::ExecResult{-1, ""};
  }

  std::string ValidPrefix() const {
    return "server {\n"
           "  listen_address: \"127.0.0.1:17999\"\n"
           "  tls { ca_file: \"" +
           dir_ + "/ca.pem\" cert_file: \"" + dir_ + "/cert.pem\" key_file: \"" + dir_ +
           "/key.pem\" }\n"
           "  trust_domain: \"strongroom.test\"\n"
           "  instance: \"one\"\n";
  }

  std::string dir_;
};

void ExpectOneLineError(const Rig::ExecResult& r, const std::string& daemon, const std::string& expected) {
  EXPECT_EQ(r.exit_code, 2) << r.output;
  std::vector<std::string> lines = absl::StrSplit(r.output, '\n', absl::SkipEmpty());
  EXPECT_EQ(lines.size(), 1u) << r.output;
  EXPECT_TRUE(absl::StrContains(r.output, daemon + ": config error: ")) << r.output;
  EXPECT_TRUE(absl::StrContains(r.output, expected)) << r.output;
}

TEST_F(DaemonConfigTest, OutOfRangeValueStopsEveryDaemon) {
  for (const Daemon& d : kDaemons) {
    SCOPED_TRACE(d.name);
    ExpectOneLineError(Run(d.binary, ValidPrefix() + "  drain_seconds: 9000\n}\n"), d.name,
                       "daemon.textproto:6: server.drain_seconds: 9000 is not in 0..300");
  }
}

TEST_F(DaemonConfigTest, MalformedFileStopsEveryDaemon) {
  for (const Daemon& d : kDaemons) {
    SCOPED_TRACE(d.name);
    ExpectOneLineError(Run(d.binary, ValidPrefix() + "  listen_adress: \"x\"\n}\n"), d.name,
                       "daemon.textproto:6:");
    ExpectOneLineError(Run(d.binary, ValidPrefix() + "  listen_adress: \"x\"\n}\n"), d.name, "listen_adress");
  }
}

TEST_F(DaemonConfigTest, BadAddressAndIdentityAreNamed) {
  std::string bad_port = ValidPrefix() + "}\n";
  bad_port.replace(bad_port.find("127.0.0.1:17999"), 15, "127.0.0.1:70000");
  ExpectOneLineError(Run(SR_NETD_BIN, bad_port), "netd",
                     "daemon.textproto:2: server.listen_address: port \"70000\" is not in 1..65535");
  std::string bad_instance = ValidPrefix() + "}\n";
  bad_instance.replace(bad_instance.find("\"one\""), 5, "\"../etc\"");
  ExpectOneLineError(Run(SR_NETD_BIN, bad_instance), "netd",
                     "daemon.textproto:5: server.instance: must match");
}

}  // namespace
}  // namespace strongroom
