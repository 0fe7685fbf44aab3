// The stack backend's integration tests run against, all real: a rig (tests/rig) with a client host, the
// backend host, a Global Slurm cluster (munged + slurmctld on "gctl", slurmd on "gnode1" and "gnode2"), a
// PostgreSQL (tests/rig/postgres.sh), a PKI, and the peers backend calls (see unimplemented_peer.cc) on "vmc"
// (as the vm-controller of cluster c1) and on each node (as its host-agent). strongroomctl runs on the client
// host.
#pragma once

#include <sys/types.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "strongroom/v1/backend.pb.h"
#include "tests/rig/postgres.h"
#include "tests/rig/rig.h"
#include "tests/rig/slurm_cluster.h"

namespace strongroom::testing {

struct BackendOptions {
  int poll_interval_seconds = 1;
  int readiness_deadline_seconds = 300;
  int peer_retry_window_seconds = 600;
  std::string fault_stop_at;           // BackendConfig.fault_stop_at
  std::string job_script;              // default: deploy/slurm/global-job-placeholder.sh
  std::string slurm_bin_dir;           // default: /usr/bin (the real Slurm CLIs)
  std::string extra_config;            // appended to the textproto as is
  std::string audit_config;            // fields added to the `audit { spool_dir: ... }` block
  int time_limit_margin_minutes = -1;  // global_slurm.time_limit_margin_minutes; -1: backend's default
  std::string backend_bin;             // default: this build's backend (benchmarks compare builds)
};

// BackendOptions with some fields changed: Options([](BackendOptions& o) { o.poll_interval_seconds = 2; }).
template <typename F>
BackendOptions Options(F&& change) {
  BackendOptions options;
  change(options);
  return options;
}

struct CtlOutput {
  int exit_code = -1;
  std::string output;  // stdout and stderr
};

class BackendStack {
 public:
  static constexpr const char* kTrustDomain = "strongroom.test";
  static constexpr const char* kBackendIp = "198.51.100.10";
  static constexpr const char* kBackendIdentity = "spiffe://strongroom.test/backend/be1";

  static absl::StatusOr<std::unique_ptr<BackendStack>> Start();
  ~BackendStack();

  // Starts backend with `options` and waits until it serves. One backend at a time.
  absl::StatusOr<pid_t> StartBackend(const BackendOptions& options = {});
  // SIGTERM, then waits for the exit.
  absl::Status StopBackend();
  // SIGKILL (kill -9), then waits for the exit.
  absl::Status KillBackend();
  pid_t backend_pid() const { return backend_pid_; }
  // Waits until the backend log contains `needle`.
  bool WaitForLog(const std::string& needle, absl::Duration timeout);
  std::string BackendLog() const;

  // strongroomctl on the client host against backend, presenting certificate `who`: "operator" (alice),
  // "vmc-c1", "vmc-c2" (vm-controllers), "ha-gnode1", "ha-gnode2" (host-agents), "netd-gnode1", "backend", or
  // "anonymous".
  CtlOutput Ctl(const std::string& who, std::vector<std::string> args,
                absl::Duration timeout = absl::Seconds(60));
  CtlOutput Call(const std::string& who, const std::string& method, const std::string& json);
  // Calls and parses the JSON response into `response`; the error (with strongroomctl's output) otherwise.
  absl::Status CallInto(const std::string& who, const std::string& method, const std::string& json,
                        google::protobuf::Message* response);

  // A program from the build on the client host (e.g. backend_load), with the PKI paths of `who`.
  absl::StatusOr<Rig::ExecResult> RunOnClient(std::vector<std::string> argv, absl::Duration timeout);
  std::string CertPrefix(const std::string& who) const { return dir_ + "/pki/" + who; }

  // backend's /metrics (Prometheus text), scraped from the client host; "" when it does not answer.
  std::string Metrics();
  // One unlabelled series of Metrics(), or -1 when absent.
  double MetricValue(const std::string& series);
  // Where backend spools its own records (audit.spool_dir).
  std::string AuditSpoolDir() const { return dir_ + "/backend-audit-spool"; }

  // psql as superuser; the output (unaligned, tuples only).
  absl::StatusOr<std::string> Sql(const std::string& sql) { return db_->Psql(sql); }
  // A Slurm client command on the client host.
  absl::StatusOr<Rig::ExecResult> Slurm(std::vector<std::string> argv) {
    return slurm_->Command("client", argv);
  }

  Rig& rig() { return *rig_; }
  PostgresInstance& db() { return *db_; }
  SlurmCluster& slurm() { return *slurm_; }
  const std::string& dir() const { return dir_; }
  void DumpLogs() const;

 private:
  BackendStack() = default;
  absl::Status Pki(std::vector<std::string> args);
  absl::Status StartPeer(const std::string& host, const std::string& role, const std::string& instance);

  std::unique_ptr<Rig> rig_;
  std::unique_ptr<PostgresInstance> db_;  // outside the rig: a unix socket every host reaches
  std::unique_ptr<SlurmCluster> slurm_;
  std::string dir_;  // PKI, configs and logs; inside the rig's state directory
  pid_t backend_pid_ = 0;
};

// One BackendStack per test (each test runs in its own process under ctest anyway). Skips only where the
// machine cannot run the rig at all (not root).
class BackendTest : public ::testing::Test {
 protected:
  void SetUp() override;
  void TearDown() override;
  BackendStack& stack() { return *stack_; }

  // GetJob as the operator (a failed call fails the test).
  v1::Job Get(const std::string& global_job_id);
  // Polls GetJob until `done` holds or `timeout` passes; returns the last job seen.
  v1::Job WaitFor(const std::string& global_job_id, const std::function<bool(const v1::Job&)>& done,
                  absl::Duration timeout);
  // WaitFor the job to be in `state`; a job that is not fails the test (the last one seen is returned).
  v1::Job WaitForState(const std::string& global_job_id, v1::JobState state,
                       absl::Duration timeout = absl::Seconds(30));

  std::unique_ptr<BackendStack> stack_;
};

// JSON for a CreateGlobalJobRequest of cluster c1 (project proj1) with local job id `local_job_id`.
std::string CreateRequestJson(int local_job_id, const std::string& extra_fields = "");

}  // namespace strongroom::testing
