#include "tests/integration/stack_fixture.h"

#include "tests/rig/files.h"

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"

namespace strongroom::testing {
namespace {

constexpr int kGrpcPort = 7443;
constexpr int kEnrollmentPort = 7444;  // vm-controller's enrollment listener
constexpr int kMetricsPort = 9464;

// The daemons of the stack and their rig IPs. Test hosts use 198.51.100.0/24 only.
const std::map<std::string, std::string>& DaemonIps() {
  static const auto* ips = new std::map<std::string, std::string>{{"backend", "198.51.100.10"},
                                                                  {"vm-controller", "198.51.100.11"},
                                                                  {"host-agent", "198.51.100.12"},
                                                                  {"netd", "198.51.100.13"}};
  return *ips;
}
constexpr const char* kClientIp = "198.51.100.20";

std::string BinaryPath(const std::string& binary) {
  static const auto* paths = new std::map<std::string, std::string>{{"backend", SR_BACKEND_BIN},
                                                                    {"vm-controller", SR_VM_CONTROLLER_BIN},
                                                                    {"host-agent", SR_HOST_AGENT_BIN},
                                                                    {"netd", SR_NETD_BIN}};
  return paths->at(binary);
}

// The role a client certificate carries, and its file prefix in the PKI dir.
std::string CredentialPrefix(Credential c) {
  switch (c) {
    case Credential::kAnonymous:
      return "";
    case Credential::kForeignCa:
      return "foreign/operator";
    case Credential::kExpired:
      return "pki/expired-operator";
    case Credential::kOperator:
      return "pki/operator";
    case Credential::kBackend:
      return "pki/client-backend";
    case Credential::kVmController:
      return "pki/client-vm-controller";
    case Credential::kHostAgent:
      return "pki/client-host-agent";
    case Credential::kNetd:
      return "pki/client-netd";
  }
  return "";
}

}  // namespace

std::string Stack::DaemonSpecificConfig(const std::string& binary, const std::string& host) const {
  // The least each daemon needs to start; tests of a daemon's behaviour write their own.
  if (binary == "host-agent") {
    return "state_dir: \"" + dir_ + "/" + host + "-state\"\n"
           "image_root: \"" + dir_ + "/images\"\n";
  }
  if (binary == "vm-controller") {
    return "cluster_name: \"local\"\n"
           "slurm_conf: \"/nonexistent/strongroom-test/slurm.conf\"\n"
           "state_db: \"" +
           dir_ + "/" + host +
           "-state/local-jobs.db\"\n"
           "backend_address: \"" +
           DaemonIps().at("backend") +
           ":7443\"\n"
           "slurmctld_addresses: \"198.51.100.99:6817\"\n"
           "enrollment {\n"
           "  project: \"proj-a\"\n"
           "  listen_address: \"" +
           rig_->Ip(host) + ":" + std::to_string(kEnrollmentPort) +
           "\"\n"
           "  munge_key_file: \"" +
           dir_ +
           "/vm-controller-munge.key\"\n"
           "  nfs_server: \"" +
           DaemonIps().at("vm-controller") +
           "\"\n"
           "  nfs_export: \"/export/proj-a\"\n" +
           (enrollment_extra_.count(host) ? enrollment_extra_.at(host) : std::string()) + "}\n";
  }
  return "";
}

Credential RoleCredential(const std::string& role) {
  static const auto* roles =
      new std::map<std::string, Credential>{{"operator", Credential::kOperator},
                                            {"backend", Credential::kBackend},
                                            {"vm-controller", Credential::kVmController},
                                            {"host-agent", Credential::kHostAgent},
                                            {"netd", Credential::kNetd}};
  return roles->at(role);
}

BackgroundProvision::BackgroundProvision(Stack& stack, std::string daemon, std::string request_json)
    : stack_(stack), daemon_(std::move(daemon)) {
  thread_ = std::thread([this, request = std::move(request_json)] {
    result_ = stack_.Ctl(daemon_, Credential::kBackend,
                         {"--timeout", "28", "call", "strongroom.v1.VmController/ProvisionWorkload", request});
  });
}

BackgroundProvision::~BackgroundProvision() {
  if (thread_.joinable()) thread_.join();
}

bool BackgroundProvision::WaitHandedOver(const std::string& token, absl::Duration timeout) {
  for (const absl::Time deadline = absl::Now() + timeout; absl::Now() < deadline;) {
    CtlResult get = stack_.Ctl(daemon_, Credential::kOperator,
                               {"call", "strongroom.v1.VmController/GetLocalJob",
                                absl::StrCat(R"({"local":{"token":")", token, R"("}})")});
    if (absl::StrContains(get.output, "LOCAL_JOB_STATE_PROVISIONING")) return true;
    absl::SleepFor(absl::Milliseconds(100));
  }
  return false;
}

const CtlResult& BackgroundProvision::Finish() {
  if (thread_.joinable()) thread_.join();
  return result_;
}

std::string JsonString(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '\n') {
      out += "\\n";
    } else if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else {
      out += c;
    }
  }
  return out + "\"";
}

std::string ServiceOf(const std::string& daemon) {
  static const auto* services = new std::map<std::string, std::string>{{"backend", "Backend"},
                                                                       {"vm-controller", "VmController"},
                                                                       {"host-agent", "HostAgent"},
                                                                       {"netd", "Netd"}};
  return services->at(daemon);
}

absl::Status Stack::Pki(std::vector<std::string> args) {
  args.insert(args.begin(), SR_PKI_TOOL);
  absl::StatusOr<Rig::ExecResult> r = rig_->Exec("client", args, absl::Seconds(30));
  if (!r.ok()) return r.status();
  if (r->exit_code != 0) {
    return absl::InternalError(absl::StrCat("strongroom-pki ", args[1], " failed: ", r->output));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Stack>> Stack::Start() {
  std::unique_ptr<Stack> stack(new Stack());
  absl::StatusOr<std::unique_ptr<Rig>> rig = Rig::Create(SR_RIG_SH);
  if (!rig.ok()) return rig.status();
  stack->rig_ = std::move(*rig);
  stack->dir_ = stack->rig_->state_dir() + "/stack";
  std::filesystem::create_directories(stack->dir_ + "/logs");

  if (absl::Status s = stack->rig_->AddHost("client", absl::StrCat(kClientIp, "/24")); !s.ok()) return s;
  const std::string pki = stack->dir_ + "/pki";
  const std::string foreign = stack->dir_ + "/foreign";
  for (absl::Status s :
       {stack->Pki({"init-ca", pki, "--trust-domain", kTrustDomain}),
        stack->Pki({"init-ca", foreign, "--trust-domain", kTrustDomain}),
        stack->Pki({"issue", pki, "--role", "operator", "--instance", "alice", "--out", pki + "/operator"}),
        stack->Pki(
            {"issue", foreign, "--role", "operator", "--instance", "alice", "--out", foreign + "/operator"}),
        stack->Pki({"issue-expired", pki, "--role", "operator", "--instance", "bob", "--out",
                    pki + "/expired-operator"}),
        // Every daemon checks peers against this CRL (tls.crl_file); empty until a test revokes something.
        stack->Pki({"crl", pki})}) {
    if (!s.ok()) return s;
  }
  for (const auto& [daemon, ip] : DaemonIps()) {
    if (absl::Status s = stack->Pki(
            {"issue", pki, "--role", daemon, "--instance", daemon, "--out", pki + "/server-" + daemon});
        !s.ok()) {
      return s;
    }
    if (absl::Status s = stack->Pki({"issue", pki, "--role", daemon, "--instance", "peer-" + daemon, "--out",
                                     pki + "/client-" + daemon});
        !s.ok()) {
      return s;
    }
    if (absl::Status s = stack->rig_->AddHost(daemon, absl::StrCat(ip, "/24")); !s.ok()) return s;
    if (absl::StatusOr<pid_t> pid = stack->StartDaemon(daemon, daemon, 2); !pid.ok()) return pid.status();
  }
  return stack;
}

Stack::~Stack() {
  if (rig_ == nullptr) return;
  (void)rig_->Down();  // also removes dir_, which lives in the rig's state directory
  postgres_.reset();   // after the backends that used it
}

void Stack::DumpLogs() const {
  std::error_code ignored;
  for (const auto& entry : std::filesystem::directory_iterator(dir_ + "/logs", ignored)) {
    std::fprintf(stderr, "---- %s ----\n%s\n", entry.path().filename().c_str(),
                 ReadFileOrEmpty(entry.path().string()).c_str());
  }
}

absl::Status Stack::WriteConfig(const std::string& binary, const std::string& host, int drain_seconds) {
  const std::string pki = dir_ + "/pki";
  const std::string ip = rig_->Ip(host);
  std::ofstream out(dir_ + "/" + host + ".textproto");
  out << "# " << binary << " on rig host " << host << "\n"
      << "server {\n"
      << "  listen_address: \"" << ip << ":" << kGrpcPort << "\"\n"
      << "  tls {\n"
      << "    ca_file: \"" << pki << "/ca.pem\"\n"
      << "    cert_file: \"" << pki << "/server-" << binary << ".pem\"\n"
      << "    key_file: \"" << pki << "/server-" << binary << ".key\"\n"
      << "    crl_file: \"" << pki << "/crl.pem\"\n"
      << "  }\n"
      << "  trust_domain: \"" << kTrustDomain << "\"\n"
      << "  instance: \"" << binary << "\"\n"
      << "  metrics_listen_address: \"" << ip << ":" << kMetricsPort << "\"\n"
      << "  drain_seconds: " << drain_seconds << "\n"
      << "  shutdown_grace_seconds: 5\n"
      << "  cert_refresh_seconds: 1\n"
      << "}\n"
      << DaemonSpecificConfig(binary, host);
  if (binary == "vm-controller" && !std::filesystem::exists(dir_ + "/vm-controller-munge.key")) {
    // The Local Slurm's munge key as the controlling VM holds it (handed out by GetProjectSecrets only).
    std::ofstream key(dir_ + "/vm-controller-munge.key");
    key << "munge-key-" << std::hex << absl::ToUnixNanos(absl::Now()) << "-of-the-test-stack";
  }
  if (binary == "backend") {
    // backend keeps its state in PostgreSQL (one instance serves every backend of the stack) and needs a
    // global job script; no Global Slurm runs here, so nothing is submitted (tests/backend/ covers that).
    if (postgres_ == nullptr) {
      absl::StatusOr<std::unique_ptr<PostgresInstance>> pg = PostgresInstance::Start(SR_POSTGRES_SH);
      if (!pg.ok()) return pg.status();
      postgres_ = std::move(*pg);
    }
    out << "database { conninfo: \"" << postgres_->conninfo() << "\" }\n"
        << "global_slurm { job_script: \"" << SR_PLACEHOLDER_SCRIPT << "\" }\n"
        << "audit { spool_dir: \"" << dir_ << "/" << host << "-audit-spool\" }\n";
  }
  return out.good() ? absl::OkStatus() : absl::InternalError("cannot write config for " + host);
}

absl::StatusOr<pid_t> Stack::StartDaemon(const std::string& binary, const std::string& host,
                                         int drain_seconds) {
  if (absl::Status s = WriteConfig(binary, host, drain_seconds); !s.ok()) return s;
  absl::StatusOr<pid_t> pid = rig_->Spawn(host, dir_ + "/logs/" + host + ".log",
                                          {BinaryPath(binary), "--config", dir_ + "/" + host + ".textproto"});
  if (!pid.ok()) return pid.status();
  // Serving means health answers over mTLS from the client host.
  const absl::Time deadline = absl::Now() + absl::Seconds(15);
  while (absl::Now() < deadline) {
    CtlResult r = Ctl(host, Credential::kOperator, {"--server-role", binary, "--timeout", "2", "health"});
    if (r.exit_code == 0) return pid;
    if (ProcessGone(*pid)) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return absl::UnavailableError(
      absl::StrCat(binary, " on ", host, " did not start serving; log:\n", DaemonLog(host)));
}

absl::StatusOr<pid_t> Stack::StartExtraDaemon(const std::string& binary, const std::string& host,
                                              int drain_seconds) {
  if (absl::Status s = rig_->AddHost(host, absl::StrCat("198.51.100.", next_host_octet_++, "/24")); !s.ok()) {
    return s;
  }
  return StartDaemon(binary, host, drain_seconds);
}

std::string Stack::EnrollmentAddress() const {
  return absl::StrCat(DaemonIps().at("vm-controller"), ":", kEnrollmentPort);
}

std::string Stack::MungeKeyFile() const { return dir_ + "/vm-controller-munge.key"; }

std::string Stack::VmControllerStateDb() const { return dir_ + "/vm-controller-state/local-jobs.db"; }

CtlResult Stack::CtlFrom(const std::string& host, const std::string& target, const std::string& cert_prefix,
                         std::vector<std::string> args) {
  std::vector<std::string> argv = {SR_CTL_BIN, "--target",          target, "--trust-domain", kTrustDomain,
                                   "--ca",     dir_ + "/pki/ca.pem"};
  if (cert_prefix.empty()) {
    argv.push_back("--anonymous");
  } else {
    argv.insert(argv.end(), {"--cert", cert_prefix + ".pem", "--key", cert_prefix + ".key"});
  }
  argv.insert(argv.end(), args.begin(), args.end());
  absl::StatusOr<Rig::ExecResult> r = rig_->Exec(host, argv, absl::Seconds(30));
  if (!r.ok()) return {-1, r.status().ToString()};
  return {r->exit_code, r->output};
}

CtlResult Stack::Ctl(const std::string& daemon, Credential credential, std::vector<std::string> args) {
  return CtlAs(daemon, credential == Credential::kAnonymous ? "" : dir_ + "/" + CredentialPrefix(credential),
               std::move(args));
}

CtlResult Stack::CtlAs(const std::string& daemon, const std::string& cert_prefix,
                       std::vector<std::string> args) {
  // The daemon binary behind a host; extra hosts are named "<binary>-<suffix>".
  std::string binary = daemon;
  for (const auto& [name, ip] : DaemonIps()) {
    if (daemon.rfind(name, 0) == 0) binary = name;
  }
  std::vector<std::string> argv = {
      SR_CTL_BIN,          "--target",   absl::StrCat(rig_->Ip(daemon), ":", kGrpcPort),
      "--trust-domain",    kTrustDomain, "--ca",
      dir_ + "/pki/ca.pem"};
  if (cert_prefix.empty()) {
    argv.push_back("--anonymous");
  } else {
    argv.insert(argv.end(), {"--cert", cert_prefix + ".pem", "--key", cert_prefix + ".key"});
  }
  bool has_role = false;
  for (const std::string& a : args) has_role |= a == "--server-role";
  if (!has_role) argv.insert(argv.end(), {"--server-role", binary});
  argv.insert(argv.end(), args.begin(), args.end());
  absl::StatusOr<Rig::ExecResult> r = rig_->Exec("client", argv, absl::Seconds(30));
  if (!r.ok()) return {-1, r.status().ToString()};
  return {r->exit_code, r->output};
}

uint64_t Stack::MetricValue(const std::string& daemon, const std::string& series) {
  // A fixed script; the address comes in as positional arguments, never spliced into it.
  absl::StatusOr<Rig::ExecResult> r = rig_->Exec(
      "client",
      {"bash", "-c",
       "exec 3<>/dev/tcp/$1/$2 && printf 'GET /metrics HTTP/1.0\\r\\n\\r\\n' >&3 && timeout 5 cat <&3",
       "scrape", rig_->Ip(daemon), std::to_string(kMetricsPort)},
      absl::Seconds(10));
  if (!r.ok()) return 0;
  for (absl::string_view line : absl::StrSplit(r->output, '\n')) {
    if (line.rfind(series + " ", 0) == 0) {
      uint64_t value = 0;
      if (absl::SimpleAtoi(line.substr(series.size() + 1), &value)) return value;
    }
  }
  return 0;
}

uint64_t Stack::HandledCount(const std::string& daemon, const std::string& method) {
  uint64_t total = 0;
  for (const char* code : {"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
                           "ALREADY_EXISTS", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
                           "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS"}) {
    total += MetricValue(
        daemon, absl::StrCat("strongroom_rpc_handled_total{method=\"", method, "\",code=\"", code, "\"}"));
  }
  return total;
}

uint64_t Stack::RejectedCount(const std::string& daemon, const std::string& method) {
  uint64_t total = 0;
  for (const char* code : {"UNAUTHENTICATED", "PERMISSION_DENIED"}) {
    total += MetricValue(
        daemon, absl::StrCat("strongroom_rpc_rejected_total{method=\"", method, "\",code=\"", code, "\"}"));
  }
  return total;
}

absl::Status Stack::ReissueServerCertificate(const std::string& daemon) {
  const std::string pki = dir_ + "/pki";
  const std::string fresh = pki + "/reissued-" + daemon;
  if (absl::Status s = Pki({"issue", pki, "--role", daemon, "--instance", daemon, "--out", fresh}); !s.ok()) {
    return s;
  }
  return ReplaceServerCertificate(daemon, fresh);
}

absl::Status Stack::ReplaceServerCertificate(const std::string& daemon, const std::string& prefix) {
  const std::string pki = dir_ + "/pki";
  // rename(2) is atomic, so the watcher never reads a half-written file. The key goes first:
  // a cert/key mismatch in between is rejected by the watcher, which keeps the old pair.
  std::error_code error;
  std::filesystem::rename(prefix + ".key", pki + "/server-" + daemon + ".key", error);
  if (!error) std::filesystem::rename(prefix + ".pem", pki + "/server-" + daemon + ".pem", error);
  if (error)
    return absl::InternalError(
        absl::StrCat("swap the server certificate of ", daemon, ": ", error.message()));
  return absl::OkStatus();
}

bool Stack::WaitForExit(pid_t pid, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    if (ProcessGone(pid)) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}

std::string Stack::DaemonLog(const std::string& host) const {
  return ReadFileOrEmpty(dir_ + "/logs/" + host + ".log");
}

Stack* StackTest::stack_ = nullptr;
std::string* StackTest::skip_reason_ = nullptr;
std::string* StackTest::start_error_ = nullptr;

void StackTest::SetUpTestSuite() {
  skip_reason_ = new std::string();
  start_error_ = new std::string();
  if (::geteuid() != 0) {
    *skip_reason_ = "needs root to create network namespaces";
    return;
  }
  if (::access("/proc/self/ns/net", R_OK) != 0 || ::access("/usr/sbin/ip", X_OK) != 0 ||
      ::access("/usr/bin/nsenter", X_OK) != 0) {
    *skip_reason_ = "the kernel or iproute2 here does not support network namespaces";
    return;
  }
  absl::StatusOr<std::unique_ptr<Stack>> stack = Stack::Start();
  // A failure here must fail every test, not skip it: GoogleTest reports tests of a suite whose SetUpTestSuite
  // failed as skipped, and ctest would count them as not run rather than failed.
  if (!stack.ok()) {
    *start_error_ = stack.status().ToString();
    return;
  }
  stack_ = stack->release();
}

void StackTest::TearDownTestSuite() {
  // The stack's files go with it; keep what a failure needs in the test output.
  const ::testing::TestSuite* suite = ::testing::UnitTest::GetInstance()->current_test_suite();
  if (stack_ != nullptr && suite != nullptr && suite->Failed()) stack_->DumpLogs();
  delete stack_;
  stack_ = nullptr;
}

void StackTest::SetUp() {
  if (!skip_reason_->empty()) GTEST_SKIP() << *skip_reason_;
  ASSERT_TRUE(start_error_->empty()) << "cannot start the test stack: " << *start_error_;
  ASSERT_NE(stack_, nullptr);
}

}  // namespace strongroom::testing
