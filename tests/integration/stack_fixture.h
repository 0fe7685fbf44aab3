// A test stack for the integration tests: a PKI, one rig host per daemon (own netns, hostname
// and IP on the rig's bridge), the four daemons running there, and a "client" host from which
// strongroomctl calls them over real TCP and mTLS.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "tests/rig/postgres.h"
#include "tests/rig/rig.h"

namespace strongroom::testing {

// Which certificate the client presents.
enum class Credential {
  kAnonymous,  // none at all
  kForeignCa,  // an operator certificate from another CA
  kExpired,    // an operator certificate from our CA whose validity ended
  kOperator,
  kBackend,
  kVmController,
  kHostAgent,
  kNetd,
};
Credential RoleCredential(const std::string& role);
// "host-agent" -> "HostAgent": the strongroom.v1 service a daemon serves.
std::string ServiceOf(const std::string& daemon);
// `s` as a JSON string literal (for strongroomctl call's request bodies: PEM has newlines).
std::string JsonString(const std::string& s);

struct CtlResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr
};

class Stack {
 public:
  static constexpr const char* kTrustDomain = "strongroom.test";
  static absl::StatusOr<std::unique_ptr<Stack>> Start();
  ~Stack();

  // Runs strongroomctl on the client host against the daemon on host `daemon`.
  CtlResult Ctl(const std::string& daemon, Credential credential, std::vector<std::string> args);
  // The same with the certificate PREFIX.pem / PREFIX.key ("" : anonymous).
  CtlResult CtlAs(const std::string& daemon, const std::string& cert_prefix, std::vector<std::string> args);
  // strongroomctl on rig host `host` against `target` (HOST:PORT) with PREFIX.pem / PREFIX.key ("":
  // anonymous); no --server-role is added.
  CtlResult CtlFrom(const std::string& host, const std::string& target, const std::string& cert_prefix,
                    std::vector<std::string> args);
  // vm-controller's enrollment listener (HOST:PORT), the munge key file it hands out, its local job store.
  std::string EnrollmentAddress() const;
  std::string MungeKeyFile() const;
  std::string VmControllerStateDb() const;
  // Counters scraped from the daemon's /metrics.
  uint64_t HandledCount(const std::string& daemon, const std::string& method);
  uint64_t RejectedCount(const std::string& daemon, const std::string& method);
  // Issues a new certificate for the daemon and swaps it in on disk, as a rotation would.
  absl::Status ReissueServerCertificate(const std::string& daemon);
  // Moves PREFIX.pem / PREFIX.key over the daemon's server certificate and key (picked up within its
  // cert_refresh_seconds, 1 in the stack).
  absl::Status ReplaceServerCertificate(const std::string& daemon, const std::string& prefix);
  // strongroom-pki with `args` on the client host (the deployment CA is dir()/pki; its CRL dir()/pki/crl.pem,
  // which every daemon's tls.crl_file names).
  absl::Status Pki(std::vector<std::string> args);
  // Starts another instance of `binary` on a new host `host`, waits until it serves.
  absl::StatusOr<pid_t> StartExtraDaemon(const std::string& binary, const std::string& host,
                                         int drain_seconds);
  // Starts `binary` on `host`, a host the test added itself, and waits until it serves.
  absl::StatusOr<pid_t> StartDaemonOn(const std::string& binary, const std::string& host, int drain_seconds) {
    return StartDaemon(binary, host, drain_seconds);
  }
  // Lines added inside vm-controller's `enrollment { }` block on `host` (before it starts), e.g. its
  // `ipsec { }` and `nfs { }`.
  void SetEnrollmentExtra(const std::string& host, std::string lines) { enrollment_extra_[host] = std::move(lines); }
  bool WaitForExit(pid_t pid, absl::Duration timeout);
  std::string DaemonLog(const std::string& host) const;
  // Prints every daemon's log on stderr (after a failure; the files go with the stack).
  void DumpLogs() const;
  Rig& rig() { return *rig_; }
  const std::string& dir() const { return dir_; }

 private:
  Stack() = default;
  absl::Status WriteConfig(const std::string& binary, const std::string& host, int drain_seconds);
  // Config lines after `server { ... }` that `binary` needs to start.
  std::string DaemonSpecificConfig(const std::string& binary, const std::string& host) const;
  absl::StatusOr<pid_t> StartDaemon(const std::string& binary, const std::string& host, int drain_seconds);
  uint64_t MetricValue(const std::string& daemon, const std::string& series);

  std::unique_ptr<Rig> rig_;
  std::string dir_;                             // PKI, configs and logs of this stack; removed with it
  std::unique_ptr<PostgresInstance> postgres_;  // backend's database, started with the first backend
  int next_host_octet_ = 30;
  std::map<std::string, std::string> enrollment_extra_;  // by host: SetEnrollmentExtra
};

// backend's ProvisionWorkload for `request_json`, in the background: it blocks until slurmd registers, which
// never happens in these stacks (no Local Slurm), so the test acts during the registration window. Joined on
// every way out of the test (an ASSERT included).
class BackgroundProvision {
 public:
  BackgroundProvision(Stack& stack, std::string daemon, std::string request_json);
  ~BackgroundProvision();
  // Whether vm-controller handed the workload over (the local job `token` is PROVISIONING) within `timeout`.
  bool WaitHandedOver(const std::string& token, absl::Duration timeout = absl::Seconds(10));
  // Waits for ProvisionWorkload's answer.
  const CtlResult& Finish();

 private:
  Stack& stack_;
  const std::string daemon_;
  CtlResult result_;
  std::thread thread_;
};

// GoogleTest fixture sharing one Stack per test suite. Skips, with the reason, only where the
// machine lacks what the rig needs (root, network namespaces).
class StackTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite();
  static void TearDownTestSuite();
  void SetUp() override;
  Stack& stack() { return *stack_; }

 private:
  static Stack* stack_;
  static std::string* skip_reason_;
  static std::string* start_error_;
};

}  // namespace strongroom::testing
