// backend refuses a bad BackendConfig with one line naming the file, the line and the field (the daemon exits
// 2).
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/rig/rig.h"

namespace strongroom {
namespace {

class BackendConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir[] = "/tmp/strongroom-backend-config-XXXXXX";
    dir_ = mkdtemp(dir);
    for (const char* name : {"ca.pem", "cert.pem", "key.pem", "job.sh"})
      std::ofstream(dir_ + "/" + name) << "x";
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // Runs `backend --config F [extra]` with `body` after a valid server block.
  Rig::ExecResult Run(const std::string& body, const std::string& extra = "") {
    const std::string path = dir_ + "/backend.textproto";
    std::ofstream(path) << "server {\n  listen_address: \"127.0.0.1:17998\"\n  tls { ca_file: \"" << dir_
                        << "/ca.pem\" cert_file: \"" << dir_ << "/cert.pem\" key_file: \"" << dir_
                        << "/key.pem\" }\n  trust_domain: \"strongroom.test\"\n  instance: \"be1\"\n}\n"
                        << body;
    std::vector<std::string> argv = {SR_BACKEND_BIN, "--config", path};
    if (!extra.empty()) argv.push_back(extra);
    absl::StatusOr<Rig::ExecResult> r = RunWithTimeout(argv, absl::Seconds(20));
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : Rig::ExecResult{-1, ""};
  }

  void ExpectError(const std::string& body, const std::string& expected) {
    Rig::ExecResult r = Run(body);
    EXPECT_EQ(r.exit_code, 2) << r.output;
    EXPECT_TRUE(
        absl::StrContains(r.output, "backend: config error: " + dir_ + "/backend.textproto:" + expected))
        << "expected \"" << expected << "\" in: " << r.output;
  }

  // Two lines (7 and 8); `audit` holds the audit block's fields.
  std::string Valid(const std::string& audit = "") const {
    return absl::StrCat("database { conninfo: \"host=/nonexistent\" }\nglobal_slurm { job_script: \"", dir_,
                        "/job.sh\" } audit { ",
                        audit.empty() ? absl::StrCat("spool_dir: \"", dir_, "/spool\"") : audit, " }\n");
  }

  std::string dir_;
};

TEST_F(BackendConfigTest, ErrorsNameTheFileLineAndField) {
  ExpectError("", "1: database.conninfo: required");
  ExpectError("database { conninfo: \"x\"\n pool_size: 0 }\n", "8: database.pool_size: 0 is not in 1..64");
  ExpectError("database { conninfo: \"x\" }\nglobal_slurm {\n job_script: \"/nope\" }\n",
              "9: global_slurm.job_script: /nope is not an absolute, readable file");
  ExpectError(Valid() + "readiness_deadline_seconds: 0\n",
              "9: readiness_deadline_seconds: 0 is not in 1..86400");
  ExpectError(Valid() + "projects { name: \"Bad Name\" local_clusters: \"c1\" }\n",
              "9: projects.name: \"Bad Name\" must match");
  ExpectError(Valid() + "projects { name: \"p\" local_clusters: \"c1\" egress_ceiling: \"10.0.0.1/8\" }\n",
              "9: projects.egress_ceiling: \"10.0.0.1/8\" has host bits set");
  ExpectError(Valid() + "vm_controllers { name: \"c1\" address: \"nohostport\" }\n",
              "9: vm_controllers.address: \"nohostport\" must be HOST:PORT");
  ExpectError(Valid() + "vm_controllers { name: \"c1\" address: \"10.0.0.1:7443\" enrollment_address: \"x\" }\n",
              "9: vm_controllers.enrollment_address: \"x\" must be HOST:PORT");
  ExpectError(Valid() + "host_agents { name: \"n1\" address: \"10.0.0.1:7443\" enrollment_address: \"10.0.0.1:1\" }\n",
              "9: host_agents.enrollment_address: only vm_controllers have one");
  ExpectError(Valid() + "vm_memory_overhead_mb: 10\n", "9: vm_memory_overhead_mb: 10 is not in 64..65536");
  ExpectError(Valid() + "vm_memory_overhead_mb: 70000\n",
              "9: vm_memory_overhead_mb: 70000 is not in 64..65536");
  ExpectError(Valid() + "fault_stop_at: \"somewhere\"\n",
              "9: fault_stop_at: \"somewhere\" is not a known fault point");
  ExpectError(Valid() + "no_such_field: 1\n", "9:");
  ExpectError(
      absl::StrCat("database { conninfo: \"x\" }\nglobal_slurm { job_script: \"", dir_, "/job.sh\" }\n"),
      "1: audit.spool_dir: required");
  ExpectError(Valid("spool_dir: \"relative/spool\""),
              "8: audit.spool_dir: \"relative/spool\" is not an absolute path");
  ExpectError(Valid("stall_seconds: 0"), "8: audit.stall_seconds: 0 is not in 1..300");
  // A valid file passes --check-config without touching the database.
  Rig::ExecResult check = Run(Valid(), "--check-config");
  EXPECT_EQ(check.exit_code, 0) << check.output;
  Rig::ExecResult overhead = Run(Valid() + "vm_memory_overhead_mb: 512\n", "--check-config");
  EXPECT_EQ(overhead.exit_code, 0) << overhead.output;
}

}  // namespace
}  // namespace strongroom
