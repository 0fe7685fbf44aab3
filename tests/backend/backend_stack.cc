#include "tests/backend/backend_stack.h"

#include "tests/rig/files.h"

#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "common/status.h"

namespace strongroom::testing {
namespace {

constexpr int kGrpcPort = 7443;
constexpr const char* kClientIp = "198.51.100.20";
constexpr const char* kVmControllerIp = "198.51.100.11";

std::string ServerBlock(const std::string& dir, const std::string& ip, const std::string& cert,
                        const std::string& instance) {
  return absl::StrCat("server {\n  listen_address: \"", ip, ":", kGrpcPort, "\"\n  tls { ca_file: \"", dir,
                      "/pki/ca.pem\" cert_file: \"", dir, "/pki/", cert, ".pem\" key_file: \"", dir, "/pki/",
                      cert, ".key\" }\n  trust_domain: \"", BackendStack::kTrustDomain, "\"\n  instance: \"",
                      instance, "\"\n  metrics_listen_address: \"", ip, ":9464\"\n  drain_seconds: 0\n",
                      "  shutdown_grace_seconds: 5\n}\n");
}

}  // namespace

std::string CreateRequestJson(int local_job_id, const std::string& extra_fields) {
  return absl::StrCat(
      R"({"local":{"localCluster":"c1","localJobId":)", local_job_id, R"(,"token":"sr-test-)", local_job_id,
      R"("},"user":{"name":"alice","uid":1000,"gid":1000},"project":"proj1","exclusive":true,)",
      R"("slurmctldAddresses":["10.20.0.2:6817"])", extra_fields.empty() ? "" : ",", extra_fields, "}");
}

absl::Status BackendStack::Pki(std::vector<std::string> args) {
  args.insert(args.begin(), SR_PKI_TOOL);
  absl::StatusOr<Rig::ExecResult> r = rig_->Exec("client", args, absl::Seconds(30));
  if (!r.ok()) return r.status();
  if (r->exit_code != 0)
    return absl::InternalError(absl::StrCat("strongroom-pki ", args[1], ": ", r->output));
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<BackendStack>> BackendStack::Start() {
  std::unique_ptr<BackendStack> s(new BackendStack());
  SR_ASSIGN_OR_RETURN(s->rig_, Rig::Create(SR_RIG_SH));
  s->dir_ = s->rig_->state_dir() + "/backend-stack";
  std::filesystem::create_directories(s->dir_ + "/logs");
  if (absl::Status st = s->rig_->AddHost("client", absl::StrCat(kClientIp, "/24")); !st.ok()) return st;
  if (absl::Status st = s->rig_->AddHost("backend", absl::StrCat(kBackendIp, "/24")); !st.ok()) return st;
  if (absl::Status st = s->rig_->AddHost("vmc", absl::StrCat(kVmControllerIp, "/24")); !st.ok()) return st;

  const std::string pki = s->dir_ + "/pki";
  struct Cert {
    const char* file;
    const char* role;
    const char* instance;
  };
  if (absl::Status st = s->Pki({"init-ca", pki, "--trust-domain", kTrustDomain}); !st.ok()) return st;
  for (const Cert& c : {Cert{"backend", "backend", "be1"},
                        {"operator", "operator", "alice"},
                        {"vmc-c1", "vm-controller", "c1"},
                        {"vmc-c2", "vm-controller", "c2"},
                        {"ha-gnode1", "host-agent", "gnode1"},
                        {"ha-gnode2", "host-agent", "gnode2"},
                        {"netd-gnode1", "netd", "gnode1"}}) {
    if (absl::Status st =
            s->Pki({"issue", pki, "--role", c.role, "--instance", c.instance, "--out", pki + "/" + c.file});
        !st.ok()) {
      return st;
    }
  }
  SR_ASSIGN_OR_RETURN(s->db_, PostgresInstance::Start(SR_POSTGRES_SH));

  SlurmClusterOptions o;
  o.cluster_name = "global";
  o.controller_ip = "198.51.100.2";
  o.nodes = {{"gnode1", "198.51.100.3"}, {"gnode2", "198.51.100.4"}};
  SR_ASSIGN_OR_RETURN(s->slurm_, SlurmCluster::Start(s->rig_.get(), s->dir_ + "/global-slurm", o));

  if (absl::Status st = s->StartPeer("vmc", "vm-controller", "c1"); !st.ok()) return st;
  for (const char* node : {"gnode1", "gnode2"}) {
    if (absl::Status st = s->StartPeer(node, "host-agent", node); !st.ok()) return st;
  }
  return s;
}

absl::Status BackendStack::StartPeer(const std::string& host, const std::string& role,
                                     const std::string& instance) {
  const std::string cert = "peer-" + host;
  if (absl::Status st = Pki(
          {"issue", dir_ + "/pki", "--role", role, "--instance", instance, "--out", dir_ + "/pki/" + cert});
      !st.ok()) {
    return st;
  }
  const std::string config = dir_ + "/" + cert + ".textproto";
  std::ofstream(config) << ServerBlock(dir_, rig_->Ip(host), cert, instance);
  absl::StatusOr<pid_t> pid =
      rig_->Spawn(host, dir_ + "/logs/" + cert + ".log", {SR_PEER_BIN, "--config", config});
  return pid.status();
}

BackendStack::~BackendStack() {
  slurm_.reset();                           // its daemons first, gracefully, while the rig still knows them
  if (rig_ != nullptr) (void)rig_->Down();  // then backend and the peers; removes dir_
  db_.reset();
}

absl::StatusOr<pid_t> BackendStack::StartBackend(const BackendOptions& options) {
  // STRONGROOM_TEST_OLD_BACKEND_BIN: run another build's backend (the "fails without the fix" runs of
  // docs/TESTING.md); it gets no audit block, which builds before the audit spool do not know.
  const char* old_backend = std::getenv("STRONGROOM_TEST_OLD_BACKEND_BIN");
  const std::string binary = old_backend != nullptr        ? std::string(old_backend)
                             : options.backend_bin.empty() ? std::string(SR_BACKEND_BIN)
                                                           : options.backend_bin;
  const std::string config = dir_ + "/backend.textproto";
  std::ofstream out(config);
  out << ServerBlock(dir_, kBackendIp, "backend", "be1") << "database { conninfo: \"" << db_->conninfo()
      << "\" statement_timeout_ms: 20000 }\n"
      << "global_slurm {\n  slurm_conf: \"" << slurm_->conf() << "\"\n  job_script: \""
      << (options.job_script.empty() ? SR_PLACEHOLDER_SCRIPT : options.job_script) << "\"\n"
      << "  poll_interval_seconds: " << options.poll_interval_seconds << "\n  command_timeout_seconds: 20\n"
      << (options.time_limit_margin_minutes < 0
              ? ""
              : absl::StrCat("  time_limit_margin_minutes: ", options.time_limit_margin_minutes, "\n"))
      << (options.slurm_bin_dir.empty() ? "" : "  bin_dir: \"" + options.slurm_bin_dir + "\"\n")
      << "  job_output: \"" << dir_ << "/logs/global-job-%j.out\"\n}\n"
      << "vm_controllers { name: \"c1\" address: \"" << kVmControllerIp << ":" << kGrpcPort << "\" }\n"
      << "host_agents { name: \"gnode1\" address: \"" << rig_->Ip("gnode1") << ":" << kGrpcPort << "\" }\n"
      << "host_agents { name: \"gnode2\" address: \"" << rig_->Ip("gnode2") << ":" << kGrpcPort << "\" }\n"
      << "readiness_deadline_seconds: " << options.readiness_deadline_seconds << "\n"
      << "peer_retry_window_seconds: " << options.peer_retry_window_seconds << "\n"
      << "projects { name: \"proj1\" local_clusters: \"c1\" default_image: \"base\" egress_ceiling: "
         "\"10.0.0.0/8\" "
         "ingress_ceiling: \"10.0.0.0/8\" }\n"
      << "projects { name: \"proj2\" local_clusters: \"c2\" default_image: \"base\" }\n"
      << (old_backend != nullptr ? ""
                                 : absl::StrCat("audit { spool_dir: \"", dir_, "/backend-audit-spool\" ",
                                                options.audit_config, " }\n"));
  if (!options.fault_stop_at.empty()) out << "fault_stop_at: \"" << options.fault_stop_at << "\"\n";
  out << options.extra_config << "\n";
  out.close();
  SR_ASSIGN_OR_RETURN(backend_pid_,
                      rig_->Spawn("backend", dir_ + "/logs/backend.log", {binary, "--config", config}));
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  while (absl::Now() < deadline) {
    CtlOutput r = Ctl("operator", {"--timeout", "2", "health"}, absl::Seconds(10));
    if (r.exit_code == 0) return backend_pid_;
    if (ProcessGone(backend_pid_)) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return absl::UnavailableError(absl::StrCat("backend did not start serving; log:\n", BackendLog()));
}

absl::Status BackendStack::StopBackend() {
  if (backend_pid_ == 0) return absl::OkStatus();
  absl::Status s = rig_->Stop(backend_pid_);
  backend_pid_ = 0;
  return s;
}

absl::Status BackendStack::KillBackend() {
  if (backend_pid_ == 0) return absl::OkStatus();
  if (absl::Status s = rig_->Kill(backend_pid_, SIGKILL); !s.ok()) return s;
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (!ProcessGone(backend_pid_) && absl::Now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  absl::Status s = rig_->Stop(backend_pid_);  // forgets the PID (its group is gone already)
  backend_pid_ = 0;
  return s;
}

bool BackendStack::WaitForLog(const std::string& needle, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    if (absl::StrContains(BackendLog(), needle)) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

std::string BackendStack::BackendLog() const { return ReadFileOrEmpty(dir_ + "/logs/backend.log"); }

CtlOutput BackendStack::Ctl(const std::string& who, std::vector<std::string> args, absl::Duration timeout) {
  std::vector<std::string> argv = {
      SR_CTL_BIN,           "--target",      absl::StrCat(kBackendIp, ":", kGrpcPort),
      "--trust-domain",     kTrustDomain,    "--ca",
      dir_ + "/pki/ca.pem", "--server-role", "backend"};
  if (who == "anonymous") {
    argv.push_back("--anonymous");
  } else {
    argv.insert(argv.end(), {"--cert", CertPrefix(who) + ".pem", "--key", CertPrefix(who) + ".key"});
  }
  argv.insert(argv.end(), args.begin(), args.end());
  absl::StatusOr<Rig::ExecResult> r = rig_->Exec("client", argv, timeout);
  if (!r.ok()) return {-1, r.status().ToString()};
  return {r->exit_code, r->output};
}

CtlOutput BackendStack::Call(const std::string& who, const std::string& method, const std::string& json) {
  return Ctl(who, {"call", "strongroom.v1.Backend/" + method, json});
}

absl::Status BackendStack::CallInto(const std::string& who, const std::string& method,
                                    const std::string& json, google::protobuf::Message* response) {
  CtlOutput r = Call(who, method, json);
  if (r.exit_code != 0) {
    return absl::Status(static_cast<absl::StatusCode>(r.exit_code), absl::StrCat(method, ": ", r.output));
  }
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = true;
  auto parsed = google::protobuf::util::JsonStringToMessage(r.output, response, options);
  if (!parsed.ok()) return absl::InternalError(absl::StrCat(method, ": unparsable response: ", r.output));
  return absl::OkStatus();
}

absl::StatusOr<Rig::ExecResult> BackendStack::RunOnClient(std::vector<std::string> argv,
                                                          absl::Duration timeout) {
  return rig_->Exec("client", argv, timeout);
}

std::string BackendStack::Metrics() {
  // A fixed script; the address comes in as positional arguments, never spliced into it.
  absl::StatusOr<Rig::ExecResult> r = rig_->Exec(
      "client",
      {"bash", "-c",
       "exec 3<>/dev/tcp/$1/$2 && printf 'GET /metrics HTTP/1.0\\r\\n\\r\\n' >&3 && timeout 5 cat <&3",
       "scrape", kBackendIp, "9464"},
      absl::Seconds(10));
  return r.ok() ? r->output : "";
}

double BackendStack::MetricValue(const std::string& series) {
  for (absl::string_view line : absl::StrSplit(Metrics(), '\n')) {
    double value = 0;
    if (absl::ConsumePrefix(&line, series + " ") && absl::SimpleAtod(line, &value)) return value;
  }
  return -1;
}

void BackendStack::DumpLogs() const {
  std::error_code ignored;
  for (const auto& entry : std::filesystem::directory_iterator(dir_ + "/logs", ignored)) {
    std::string text = ReadFileOrEmpty(entry.path().string());
    if (text.size() > 20000) text = "..." + text.substr(text.size() - 20000);
    std::fprintf(stderr, "---- %s ----\n%s\n", entry.path().filename().c_str(), text.c_str());
  }
  std::string slurmctld = ReadFileOrEmpty(dir_ + "/global-slurm/logs/slurmctld.log");
  if (slurmctld.size() > 4000) slurmctld = "..." + slurmctld.substr(slurmctld.size() - 4000);
  std::fprintf(stderr, "---- slurmctld.log (tail) ----\n%s\n", slurmctld.c_str());
}

v1::Job BackendTest::Get(const std::string& global_job_id) {
  v1::GetJobResponse response;
  absl::Status s = stack().CallInto(
      "operator", "GetJob", absl::StrCat(R"({"job":{"globalJobId":")", global_job_id, R"("}})"), &response);
  EXPECT_TRUE(s.ok()) << s;
  return response.job();
}

v1::Job BackendTest::WaitFor(const std::string& global_job_id, const std::function<bool(const v1::Job&)>& done,
                             absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  v1::Job job;
  while (absl::Now() < deadline) {
    job = Get(global_job_id);
    if (done(job)) return job;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  return job;
}

v1::Job BackendTest::WaitForState(const std::string& global_job_id, v1::JobState state, absl::Duration timeout) {
  v1::Job job = WaitFor(global_job_id, [&](const v1::Job& j) { return j.state() == state; }, timeout);
  EXPECT_EQ(v1::JobState_Name(job.state()), v1::JobState_Name(state)) << job.DebugString();
  return job;
}

void BackendTest::SetUp() {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (network namespaces, PostgreSQL as the postgres user)";
  absl::StatusOr<std::unique_ptr<BackendStack>> stack = BackendStack::Start();
  ASSERT_TRUE(stack.ok()) << stack.status();
  stack_ = std::move(*stack);
}

void BackendTest::TearDown() {
  if (stack_ != nullptr && HasFailure()) stack_->DumpLogs();
  stack_.reset();
}

}  // namespace strongroom::testing
