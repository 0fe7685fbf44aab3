// strongroom-slurm-hook: runs on the Local Slurm controller host. job_submit.lua starts it in the background
// (`convert`, so sbatch never waits on the network) and EpilogSlurmctld runs it (`ended`). It calls vm-controller
// over mTLS with the submit-hook identity, retrying while vm-controller is unreachable.
//
//   strongroom-slurm-hook --config FILE convert --token T --user NAME --uid N [--gid N] [--account A]
//       [--nodes N] [--cpus N] [--mem-per-node-mb M | --mem-per-cpu-mb M] [--time-min T] --exclusive 0|1
//       [--script PATH] [--workdir PATH] [--submit-time UNIX_SECONDS]
//   strongroom-slurm-hook --config FILE ended       (reads SLURM_JOB_ID, SLURM_JOB_COMMENT, SLURM_JOB_EXIT_CODE2)
//
// Exit status: 0 delivered, 1 refused by vm-controller (the reason is logged), 2 usage or config error,
// 3 vm-controller unreachable for longer than retry_seconds.
#include <pwd.h>
#include <signal.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/config.h"
#include "common/field_rules.h"
#include "common/log.h"
#include "common/status.h"
#include "common/tls.h"
#include "strongroom/v1/config.pb.h"
#include "strongroom/v1/vm_controller.grpc.pb.h"

namespace strongroom {
namespace {

constexpr int kUsage = 2;

int Fail(int code, const std::string& message) {
  Log(LogLevel::kError, message);
  return code;
}

// Flags after the command: "--name value" pairs.
absl::StatusOr<std::map<std::string, std::string>> ParsePairs(int argc, char** argv, int first) {
  std::map<std::string, std::string> flags;
  for (int i = first; i < argc; i += 2) {
    const std::string name = argv[i];
    if (name.rfind("--", 0) != 0 || i + 1 >= argc) {
      return absl::InvalidArgumentError(absl::StrCat("expected --flag value, got \"", name, "\""));
    }
    flags[name.substr(2)] = argv[i + 1];
  }
  return flags;
}

absl::StatusOr<uint64_t> Number(const std::map<std::string, std::string>& flags, const std::string& name,
                                uint64_t fallback) {
  auto it = flags.find(name);
  if (it == flags.end() || it->second.empty()) return fallback;
  uint64_t value = 0;
  if (!absl::SimpleAtoi(it->second, &value)) {
    return absl::InvalidArgumentError(absl::StrCat("--", name, ": \"", it->second, "\" is not a number"));
  }
  return value;
}

std::string Get(const std::map<std::string, std::string>& flags, const std::string& name) {
  auto it = flags.find(name);
  return it == flags.end() ? "" : it->second;
}

absl::StatusOr<v1::ConvertLocalJobRequest> ConvertRequest(const v1::SlurmHookConfig& config,
                                                          const std::map<std::string, std::string>& flags) {
  v1::ConvertLocalJobRequest request;
  request.mutable_local()->set_local_cluster(config.cluster_name());
  request.mutable_local()->set_token(Get(flags, "token"));
  request.mutable_user()->set_name(Get(flags, "user"));
  SR_ASSIGN_OR_RETURN(uint64_t uid, Number(flags, "uid", 0));
  SR_ASSIGN_OR_RETURN(uint64_t gid, Number(flags, "gid", 0));
  request.mutable_user()->set_uid(static_cast<uint32_t>(uid));
  if (request.user().name().empty()) {
    // job_submit.lua does not always see the user name; this host resolves uids the same way slurmctld does.
    struct passwd entry {};
    struct passwd* found = nullptr;
    char buffer[4096];
    if (getpwuid_r(static_cast<uid_t>(uid), &entry, buffer, sizeof(buffer), &found) == 0 && found != nullptr) {
      request.mutable_user()->set_name(found->pw_name);
    }
  }
  request.mutable_user()->set_gid(static_cast<uint32_t>(gid));
  request.set_project(Get(flags, "account"));
  SR_ASSIGN_OR_RETURN(uint64_t nodes, Number(flags, "nodes", 0));
  SR_ASSIGN_OR_RETURN(uint64_t cpus, Number(flags, "cpus", 0));
  SR_ASSIGN_OR_RETURN(uint64_t mem_node, Number(flags, "mem-per-node-mb", 0));
  SR_ASSIGN_OR_RETURN(uint64_t mem_cpu, Number(flags, "mem-per-cpu-mb", 0));
  SR_ASSIGN_OR_RETURN(uint64_t minutes, Number(flags, "time-min", 0));
  SR_ASSIGN_OR_RETURN(uint64_t exclusive, Number(flags, "exclusive", 0));
  SR_ASSIGN_OR_RETURN(uint64_t submit_time, Number(flags, "submit-time", 0));
  // The shared rules on the 64-bit values, before anything is narrowed (common/field_rules.h).
  SR_RETURN_IF_ERROR(CheckUid("--uid", uid));
  SR_RETURN_IF_ERROR(CheckGid("--gid", gid));
  SR_RETURN_IF_ERROR(CheckNodes("--nodes", nodes));
  const uint64_t per_node_cpus = nodes > 1 ? (cpus + nodes - 1) / nodes : cpus;
  SR_RETURN_IF_ERROR(CheckCpus("--cpus", per_node_cpus));
  if (mem_node > (kMaxMemoryBytes >> 20) || mem_cpu > (kMaxMemoryBytes >> 20)) {
    return InvalidField("--mem-per-node-mb", absl::StrCat(std::max(mem_node, mem_cpu)), "is more than 2^46 bytes");
  }
  if (minutes > static_cast<uint64_t>(kMaxTimeLimitSeconds / 60)) {
    return InvalidField("--time-min", absl::StrCat(minutes), "is more than 366 days");
  }
  v1::Resources* resources = request.mutable_resources();
  resources->set_nodes(static_cast<uint32_t>(nodes));
  resources->set_cpus(static_cast<uint32_t>(per_node_cpus));
  resources->set_memory_bytes((mem_node > 0 ? mem_node : mem_cpu * std::max<uint64_t>(per_node_cpus, 1)) << 20);
  if (minutes > 0) resources->mutable_time_limit()->set_seconds(static_cast<int64_t>(minutes) * 60);
  request.set_exclusive(exclusive == 1);
  request.set_script_path(Get(flags, "script"));
  request.set_work_dir(Get(flags, "workdir"));
  if (submit_time > 0) request.mutable_submit_time()->set_seconds(static_cast<int64_t>(submit_time));
  return request;
}

absl::StatusOr<v1::LocalJobEndedRequest> EndedRequestFromEnvironment(const v1::SlurmHookConfig& config) {
  v1::LocalJobEndedRequest request;
  request.mutable_local()->set_local_cluster(config.cluster_name());
  const char* job_id = std::getenv("SLURM_JOB_ID");
  uint32_t id = 0;
  if (job_id == nullptr || !absl::SimpleAtoi(job_id, &id)) {
    return absl::InvalidArgumentError("SLURM_JOB_ID is not set: run me as EpilogSlurmctld");
  }
  request.mutable_local()->set_local_job_id(id);
  // job_submit.lua tagged the comment "strongroom:<token>[ user comment]"; other jobs are not ours.
  const std::string comment = std::getenv("SLURM_JOB_COMMENT") ? std::getenv("SLURM_JOB_COMMENT") : "";
  constexpr absl::string_view kTag = "strongroom:";
  if (comment.rfind(kTag.data(), 0) != 0) return absl::NotFoundError("not a Strongroom job");
  request.mutable_local()->set_token(comment.substr(kTag.size(), comment.find(' ') - kTag.size()));
  int exit_code = 0, signal_number = 0;
  const char* exit2 = std::getenv("SLURM_JOB_EXIT_CODE2");
  if (exit2 != nullptr) {
    std::vector<std::string> parts = absl::StrSplit(exit2, ':');
    if (parts.size() == 2) {
      (void)absl::SimpleAtoi(parts[0], &exit_code);
      (void)absl::SimpleAtoi(parts[1], &signal_number);
    }
  }
  v1::LocalJobEnd* end = request.mutable_end();
  end->mutable_exit()->set_exit_code(signal_number != 0 ? -1 : exit_code);
  end->mutable_exit()->set_signal(signal_number);
  // vm-controller refines this with the job's final state as the Local Slurm recorded it.
  end->set_kind(signal_number != 0 ? v1::LOCAL_JOB_END_KIND_CANCELLED_RUNNING
                : exit_code == 0   ? v1::LOCAL_JOB_END_KIND_COMPLETED
                                   : v1::LOCAL_JOB_END_KIND_FAILED);
  return request;
}

// Calls `rpc` until it succeeds, is refused for a reason retrying cannot fix, or retry_seconds pass.
template <typename Rpc>
int Deliver(const v1::SlurmHookConfig& config, const std::string& what, Rpc rpc) {
  const absl::Time give_up = absl::Now() + absl::Seconds(config.has_retry_seconds() ? config.retry_seconds() : 120);
  absl::Duration backoff = absl::Milliseconds(100);
  while (true) {
    grpc::Status status = rpc();
    if (status.ok()) {
      Log(LogLevel::kInfo, "delivered", {{"call", what}});
      return 0;
    }
    const bool transient = status.error_code() == grpc::StatusCode::UNAVAILABLE ||
                           status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED;
    if (!transient) return Fail(1, absl::StrCat(what, " refused: ", status.error_message()));
    if (absl::Now() + backoff > give_up) return Fail(3, absl::StrCat(what, ": vm-controller unreachable: ",
                                                                      status.error_message()));
    absl::SleepFor(backoff);
    backoff = std::min(backoff * 2, absl::Seconds(5));
  }
}

}  // namespace
}  // namespace strongroom

int main(int argc, char** argv) {
  using namespace strongroom;
  // Children of slurmctld inherit a blocked signal mask; a hook that cannot be stopped is worse than none.
  sigset_t all;
  sigfillset(&all);
  sigprocmask(SIG_UNBLOCK, &all, nullptr);
  InitLogging("slurm-hook", LogLevel::kInfo);
  if (argc < 4 || std::string(argv[1]) != "--config") {
    std::fprintf(stderr, "usage: strongroom-slurm-hook --config FILE convert|ended [flags]\n");
    return kUsage;
  }
  v1::SlurmHookConfig config;
  absl::StatusOr<std::unique_ptr<ConfigSource>> source = LoadTextprotoFile(argv[2], &config);
  if (!source.ok()) return Fail(kUsage, std::string(source.status().message()));
  if (absl::Status s = CheckHostPort(config.vm_controller_address()); !s.ok()) {
    return Fail(kUsage, std::string((*source)->Error("vm_controller_address", s.message()).message()));
  }
  if (config.cluster_name().empty()) {
    return Fail(kUsage, std::string((*source)->Error("cluster_name", "required").message()));
  }
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = MakeSecureChannel(
      config.vm_controller_address(), config.tls(),
      ServerExpectation{config.trust_domain(), Role::kVmController, config.cluster_name()});
  if (!channel.ok()) return Fail(kUsage, std::string(channel.status().message()));
  std::unique_ptr<v1::VmController::Stub> stub = v1::VmController::NewStub(*channel);
  auto call_options = [](grpc::ClientContext* context) {
    context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    context->set_wait_for_ready(false);
  };

  const std::string command = argv[3];
  if (command == "convert") {
    absl::StatusOr<std::map<std::string, std::string>> flags = ParsePairs(argc, argv, 4);
    if (!flags.ok()) return Fail(kUsage, std::string(flags.status().message()));
    absl::StatusOr<v1::ConvertLocalJobRequest> request = ConvertRequest(config, *flags);
    if (!request.ok()) return Fail(kUsage, std::string(request.status().message()));
    return Deliver(config, "ConvertLocalJob(" + request->local().token() + ")", [&] {
      grpc::ClientContext context;
      call_options(&context);
      v1::ConvertLocalJobResponse response;
      return stub->ConvertLocalJob(&context, *request, &response);
    });
  }
  if (command == "ended") {
    absl::StatusOr<v1::LocalJobEndedRequest> request = EndedRequestFromEnvironment(config);
    if (absl::IsNotFound(request.status())) return 0;  // not a Strongroom job: nothing to do
    if (!request.ok()) return Fail(kUsage, std::string(request.status().message()));
    return Deliver(config, absl::StrCat("LocalJobEnded(", request->local().local_job_id(), ")"), [&] {
      grpc::ClientContext context;
      call_options(&context);
      v1::LocalJobEndedResponse response;
      return stub->LocalJobEnded(&context, *request, &response);
    });
  }
  std::fprintf(stderr, "strongroom-slurm-hook: unknown command \"%s\"; use convert or ended\n", command.c_str());
  return kUsage;
}
