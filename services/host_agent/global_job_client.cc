// strongroom-global-job: the node-local client the Global Slurm batch script (deploy/slurm/global-job.sh)
// execs. It starts the workload on this node's host-agent with its own identity (role global-job, instance =
// this node), blocks on WatchWorkload until the workload ends, and stops it on SIGTERM/SIGINT (scancel, time
// limit) or when it must give up. Its exit status reflects the workload's:
//   0        the workload ended normally (STOPPED, main process exit 0, or stopped by backend)
//   N        the workload's main process exited with N (1..125)
//   128+S    this client was told to stop by signal S (Slurm cancel or time limit), after stopping the
//   workload 1        the workload FAILED without an exit code (start failure, teardown failure, ...) 64 bad
//   usage or spec; 69 host-agent unreachable
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "common/tls.h"
#include "google/protobuf/util/json_util.h"
#include "strongroom/v1/host_agent.grpc.pb.h"

namespace {

using strongroom::v1::HostAgent;
namespace v1 = strongroom::v1;

struct Flags {
  std::string agent = "127.0.0.1:7443";
  std::string ca, cert, key, trust_domain, node, spec_b64;
  int grace_seconds = 30;
  int start_timeout_seconds = 600;
};

void Say(const std::string& msg) { std::fprintf(stderr, "strongroom-global-job: %s\n", msg.c_str()); }

int Usage(const std::string& why) {
  Say(why);
  std::fprintf(stderr,
               "usage: strongroom-global-job --agent HOST:PORT --ca CA.pem --cert CERT.pem --key KEY.pem "
               "--trust-domain DOMAIN --node NODE --spec-b64 BASE64(WorkloadSpec) [--grace SECONDS]\n");
  return 64;
}

bool ParseFlags(int argc, char** argv, Flags* f) {
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--agent")
      f->agent = v;
    else if (k == "--ca")
      f->ca = v;
    else if (k == "--cert")
      f->cert = v;
    else if (k == "--key")
      f->key = v;
    else if (k == "--trust-domain")
      f->trust_domain = v;
    else if (k == "--node")
      f->node = v;
    else if (k == "--spec-b64")
      f->spec_b64 = v;
    else if (k == "--grace")
      f->grace_seconds = std::atoi(v.c_str());
    else
      return false;
  }
  return argc % 2 == 1 && !f->ca.empty() && !f->cert.empty() && !f->key.empty() && !f->trust_domain.empty() &&
         !f->node.empty() && !f->spec_b64.empty();
}

int ExitStatusOf(const v1::Workload& w, int stop_signal) {
  if (stop_signal != 0) return 128 + stop_signal;
  if (w.state() == v1::WORKLOAD_STATE_STOPPED) {
    return w.has_exit() && w.exit().exit_code() > 0 ? w.exit().exit_code() : 0;
  }
  if (w.has_exit() && w.exit().exit_code() > 0 && w.exit().exit_code() < 126) return w.exit().exit_code();
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  Flags f;
  if (!ParseFlags(argc, argv, &f)) return Usage("missing or unknown arguments");
  std::string json;
  v1::WorkloadSpec spec;
  // backend exports base64 of the serialized WorkloadSpec (SR_WORKLOAD_SPEC); JSON is accepted for hand use.
  if (!absl::Base64Unescape(f.spec_b64, &json) ||
      (!(spec.ParseFromString(json) && !spec.workload_id().empty()) &&
       !google::protobuf::util::JsonStringToMessage(json, &spec).ok())) {
    return Usage("--spec-b64 is not base64 of a strongroom.v1.WorkloadSpec (serialized or JSON)");
  }
  // Only the signal thread takes SIGTERM/SIGINT (blocked before gRPC starts its threads).
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  v1::TlsFiles tls;
  tls.set_ca_file(f.ca);
  tls.set_cert_file(f.cert);
  tls.set_key_file(f.key);
  strongroom::ServerExpectation expected;
  expected.trust_domain = f.trust_domain;
  expected.role = strongroom::Role::kHostAgent;
  expected.instance = f.node;
  auto channel = strongroom::MakeSecureChannel(f.agent, tls, expected);
  if (!channel.ok()) {
    Say(channel.status().ToString());
    return 69;
  }
  std::unique_ptr<HostAgent::Stub> stub = HostAgent::NewStub(*channel);
  const std::string id = spec.workload_id();

  std::atomic<int> stop_signal{0};
  auto stop = [&](v1::StopReason reason, const std::string& why) {
    v1::StopWorkloadRequest req;
    req.set_workload_id(id);
    req.set_reason(reason);
    req.set_message(why);
    req.mutable_grace_period()->set_seconds(f.grace_seconds);
    for (int attempt = 0; attempt < 5; ++attempt) {
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(f.grace_seconds + 120));
      v1::StopWorkloadResponse resp;
      grpc::Status s = stub->StopWorkload(&ctx, req, &resp);
      if (s.ok() || s.error_code() == grpc::StatusCode::NOT_FOUND) return;
      Say(absl::StrCat("StopWorkload(", id, "): ", s.error_message(), "; retrying"));
      std::this_thread::sleep_for(std::chrono::seconds(2));
    }
  };
  std::thread signal_thread([&] {
    int sig = 0;
    sigwait(&signals, &sig);
    stop_signal = sig;
    Say(absl::StrCat("got signal ", sig, "; stopping workload ", id));
    stop(v1::STOP_REASON_JOB_CANCELLED,
         absl::StrCat("global job got signal ", sig, " (cancel or time limit)"));
  });
  signal_thread.detach();

  {
    // StartWorkload is idempotent on the workload id, so a host-agent restart (a closed socket, UNAVAILABLE)
    // is not a job failure: the same request is sent again, waiting for the agent to come back, until the
    // start deadline. The restarted agent cleans up the interrupted start and this retry begins it again.
    const auto deadline = std::chrono::system_clock::now() + std::chrono::seconds(f.start_timeout_seconds);
    v1::StartWorkloadRequest req;
    *req.mutable_spec() = spec;
    v1::StartWorkloadResponse resp;
    grpc::Status s;
    for (int attempt = 1;; ++attempt) {
      grpc::ClientContext ctx;
      ctx.set_deadline(deadline);
      ctx.set_wait_for_ready(true);
      s = stub->StartWorkload(&ctx, req, &resp);
      if (s.ok() || stop_signal != 0) break;
      if (s.error_code() != grpc::StatusCode::UNAVAILABLE || std::chrono::system_clock::now() >= deadline)
        break;
      Say(absl::StrCat("StartWorkload(", id, ") attempt ", attempt, ": ", s.error_message(),
                       "; retrying (host-agent restarting?)"));
      std::this_thread::sleep_for(std::chrono::milliseconds(std::min(5000, 250 * attempt)));
    }
    if (!s.ok()) {
      Say(absl::StrCat("StartWorkload(", id, "): ", s.error_message()));
      if (stop_signal != 0) return 128 + stop_signal;
      return s.error_code() == grpc::StatusCode::UNAVAILABLE ? 69 : 1;
    }
    Say(absl::StrCat("workload ", id, " is ", v1::WorkloadState_Name(resp.workload().state()), " on ",
                     f.node));
  }

  // Block until the workload is terminal; re-watch if the agent restarts.
  v1::Workload last;
  for (int failures = 0; failures < 30;) {
    grpc::ClientContext ctx;
    ctx.set_wait_for_ready(true);
    v1::WatchWorkloadRequest req;
    req.set_workload_id(id);
    auto reader = stub->WatchWorkload(&ctx, req);
    v1::WatchWorkloadResponse msg;
    while (reader->Read(&msg)) last = msg.workload();
    grpc::Status s = reader->Finish();
    if (last.state() == v1::WORKLOAD_STATE_STOPPED || last.state() == v1::WORKLOAD_STATE_FAILED) break;
    Say(absl::StrCat("WatchWorkload(", id, "): ", s.error_message(), "; watching again"));
    ++failures;
    std::this_thread::sleep_for(std::chrono::seconds(2));
  }
  if (last.state() != v1::WORKLOAD_STATE_STOPPED && last.state() != v1::WORKLOAD_STATE_FAILED) {
    Say("giving up watching; stopping the workload");
    stop(v1::STOP_REASON_GLOBAL_JOB_EXIT, "the global job client lost the host-agent");
    return 1;
  }
  const int code = ExitStatusOf(last, stop_signal);
  Say(absl::StrCat("workload ", id, " ended ", v1::WorkloadState_Name(last.state()),
                   last.has_failure() ? " (" + last.failure().reason() + ")" : std::string(), "; exit ",
                   code));
  return code;
}
