#include "tests/host_agent/daemon_fixture.h"

#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/tls.h"
#include "common/subprocess.h"
#include "tests/host_agent/test_env.h"

namespace strongroom::host_agent::testing {
namespace {

constexpr const char* kTrustDomain = "strongroom.test";

int FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  close(fd);
  return ntohs(a.sin_port);
}

}  // namespace

v1::WorkloadSpec ProbeSpec(const std::string& id) {
  v1::WorkloadSpec s;
  s.set_workload_id(id);
  s.set_kind(v1::WORKLOAD_KIND_CONTAINER);
  s.mutable_image()->set_name("busybox");
  s.set_whole_node(true);
  return s;
}

absl::StatusOr<std::unique_ptr<AgentDaemon>> AgentDaemon::Create() {
  std::unique_ptr<AgentDaemon> d(new AgentDaemon());
  d->dir_ = MakeTempDir("sr-ha-daemon");
  if (d->dir_.empty()) return absl::InternalError("mkdtemp");
  std::filesystem::create_directories(d->dir_ + "/images");
  if (absl::Status s = BuildBusyboxImage(d->dir_ + "/images", "busybox", ProbeScript()); !s.ok()) return s;
  if (absl::Status s = BuildBusyboxImage(d->dir_ + "/images", "exit3", "#!/bin/sh\nsleep 0.5\nexit 3\n");
      !s.ok()) {
    return s;
  }
  const std::string pki = d->dir_ + "/pki";
  auto run = [&](std::vector<std::string> args) -> absl::Status {
    args.insert(args.begin(), SR_PKI_TOOL);
    absl::StatusOr<RunResult> r = Run(args, absl::Seconds(30));
    if (!r.ok()) return r.status();
    if (r->exit_code != 0) return absl::InternalError("strongroom-pki: " + r->output);
    return absl::OkStatus();
  };
  if (absl::Status s = run({"init-ca", pki, "--trust-domain", kTrustDomain}); !s.ok()) return s;
  for (const auto& [role, instance, name] : std::vector<std::tuple<std::string, std::string, std::string>>{
           {"host-agent", "node-a", "server"},
           {"backend", "backend-1", "backend"},
           {"operator", "alice", "operator"},
           {"global-job", "node-a", "global-job-node-a"},
           {"global-job", "node-b", "global-job-node-b"}}) {
    if (absl::Status s = run({"issue", pki, "--role", role, "--instance", instance, "--ip", "127.0.0.1",
                              "--out", pki + "/" + name});
        !s.ok()) {
      return s;
    }
  }
  d->port_ = FreePort();
  return d;
}

absl::StatusOr<std::string> AgentDaemon::Issue(const std::string& role, const std::string& instance) {
  const std::string prefix = dir_ + "/pki/" + role + "-" + instance;
  absl::StatusOr<RunResult> r = Run({SR_PKI_TOOL, "issue", dir_ + "/pki", "--role", role, "--instance",
                                     instance, "--ip", "127.0.0.1", "--out", prefix},
                                    absl::Seconds(30));
  if (!r.ok()) return r.status();
  if (r->exit_code != 0) return absl::InternalError(r->output);
  return prefix;
}

absl::Status AgentDaemon::Start(const std::string& extra) {
  const std::string pki = dir_ + "/pki";
  const std::string config = dir_ + "/agent.textproto";
  std::ofstream(config) << "server {\n"
                        << "  listen_address: \"127.0.0.1:" << port_ << "\"\n"
                        << "  tls { ca_file: \"" << pki << "/ca.pem\" cert_file: \"" << pki
                        << "/server.pem\" key_file: \"" << pki << "/server.key\" }\n"
                        << "  trust_domain: \"" << kTrustDomain << "\"\n  instance: \"node-a\"\n"
                        << "  drain_seconds: 0\n  shutdown_grace_seconds: 2\n  cert_refresh_seconds: 1\n}\n"
                        << "state_dir: \"" << state_dir() << "\"\n"
                        << "image_root: \"" << dir_ << "/images\"\n"
                        << "allow_unencrypted_scratch: true\n"
                        << "scratch_default_bytes: 268435456\n"
                        << "stop_grace_seconds: 5\n"
                        << extra;
  // STRONGROOM_TEST_OLD_HOST_AGENT_BIN: another build's agent, for the "fails without the fix" runs.
  const char* old_agent = std::getenv("STRONGROOM_TEST_OLD_HOST_AGENT_BIN");
  absl::StatusOr<pid_t> pid =
      Spawn({old_agent != nullptr ? old_agent : SR_HOST_AGENT_BIN, "--config", config}, dir_ + "/agent.log");
  if (!pid.ok()) return pid.status();
  pid_ = *pid;
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (absl::Now() < deadline) {
    auto stub = Stub("operator");  // a fresh channel each time: no reconnect back-off
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
    v1::ListWorkloadsRequest req;
    v1::ListWorkloadsResponse resp;
    if (stub->ListWorkloads(&ctx, req, &resp).ok()) return absl::OkStatus();
    int status;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = 0;
      return absl::InternalError("host-agent exited at start; log:\n" + log());
    }
    absl::SleepFor(absl::Milliseconds(50));
  }
  return absl::DeadlineExceededError("host-agent did not serve within 30 s; log:\n" + log());
}

void AgentDaemon::Kill9() {
  if (pid_ <= 0) return;
  kill(pid_, SIGKILL);
  waitpid(pid_, nullptr, 0);
  pid_ = 0;
}

bool AgentDaemon::WaitForDeath(int seconds) {
  if (pid_ <= 0) return true;
  for (int i = 0; i < seconds * 20; ++i) {
    if (waitpid(pid_, nullptr, WNOHANG) == pid_) {
      pid_ = 0;
      return true;
    }
    absl::SleepFor(absl::Milliseconds(50));
  }
  return false;
}

std::unique_ptr<v1::HostAgent::Stub> AgentDaemon::Stub(const std::string& client) {
  v1::TlsFiles files;
  files.set_ca_file(dir_ + "/pki/ca.pem");
  files.set_cert_file(dir_ + "/pki/" + client + ".pem");
  files.set_key_file(dir_ + "/pki/" + client + ".key");
  ServerExpectation expected;
  expected.trust_domain = kTrustDomain;
  expected.role = Role::kHostAgent;
  expected.instance = "node-a";
  auto channel = MakeSecureChannel(absl::StrCat("127.0.0.1:", port_), files, expected);
  return v1::HostAgent::NewStub(*channel);
}

std::string AgentDaemon::log() const { return ReadFile(dir_ + "/agent.log"); }

AgentDaemon::~AgentDaemon() {
  if (pid_ > 0) {
    // Whatever a failed test left running is stopped through the agent, the way it must be.
    auto stub = Stub("backend");
    grpc::ClientContext ctx;
    v1::ListWorkloadsResponse list;
    if (stub->ListWorkloads(&ctx, v1::ListWorkloadsRequest(), &list).ok()) {
      for (const v1::Workload& w : list.workloads()) {
        if (w.state() == v1::WORKLOAD_STATE_STOPPED || w.state() == v1::WORKLOAD_STATE_FAILED) continue;
        grpc::ClientContext stop_ctx;
        v1::StopWorkloadRequest req;
        req.set_workload_id(w.spec().workload_id());
        req.mutable_grace_period()->set_seconds(1);
        v1::StopWorkloadResponse resp;
        (void)stub->StopWorkload(&stop_ctx, req, &resp);
      }
    }
    kill(pid_, SIGTERM);
    if (!WaitForDeath(10)) Kill9();
  }
  RemoveTree(dir_);
}

}  // namespace strongroom::host_agent::testing
