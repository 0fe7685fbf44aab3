// strongroomctl's shared pieces: flags, the mTLS channel to a daemon, printing, exit codes. Each command
// family lives in its own file: call.cc (call, health, authz), audit_commands.cc, report_commands.cc.
#pragma once

#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/identity.h"
#include "google/protobuf/message.h"
#include "grpcpp/grpcpp.h"

namespace strongroom::ctl {

constexpr int kUsageExit = 64;
// `audit verify` found a bad record (65 is EX_DATAERR; gRPC codes stop at 16).
constexpr int kVerificationFailedExit = 65;

struct Flags {
  std::string target, trust_domain, ca, cert, key, crl, server_role, server_instance;
  double timeout_seconds = 10;
  bool show_peer = false;
  bool anonymous = false;
  bool raw = false;
  std::vector<std::string> args;  // the command and its arguments
};

// Returns "" on success, the problem otherwise. Values also come from STRONGROOM_* environment variables.
std::string ParseFlags(int argc, char** argv, Flags* flags);

// Prints the problem and the usage text; returns kUsageExit.
int UsageError(const std::string& problem);
// Prints "strongroomctl: CODE: message"; returns the gRPC code as the exit status.
int PrintStatusAndExit(const grpc::Status& status);
int PrintStatusAndExit(const absl::Status& status);

// A channel to --target that checks the server proves `role` (and --server-instance when given).
absl::StatusOr<std::shared_ptr<grpc::Channel>> OpenChannel(const Flags& flags, Role role);
// A client context with the --timeout deadline.
std::unique_ptr<grpc::ClientContext> NewContext(const Flags& flags);
// One JSON line on stdout, every field printed.
void PrintJson(const google::protobuf::Message& message);

// A time argument: RFC 3339 ("2026-11-22T10:00:00Z"), "@<unix seconds>", "now", or "now" plus or minus a
// duration ("-24h", "-90m").
absl::StatusOr<absl::Time> ParseTimeArgument(const std::string& text);

// A command's own options: "--name value" (repeatable) and bare switches.
struct CommandOptions {
  std::map<std::string, std::vector<std::string>> values;
  std::set<std::string> switches;
  std::string Get(const std::string& name) const;  // the last value, or ""
};
// Parses `args` (after the command words); `error` names the first unknown or incomplete option.
CommandOptions ParseCommandOptions(const std::vector<std::string>& args,
                                   const std::set<std::string>& with_value,
                                   const std::set<std::string>& switches, std::string* error);

// Command families. `args` starts after the command word.
int CallCommand(const Flags& flags, std::string method, const std::string& request_json,
                std::string role_service = "");
int PrintAuthzTable();
int AuditCommand(const Flags& flags, const std::vector<std::string>& args);
int ReportCommand(const Flags& flags, const std::vector<std::string>& args);
int JobsCommand(const Flags& flags, const std::string& command, const std::vector<std::string>& args);

}  // namespace strongroom::ctl
