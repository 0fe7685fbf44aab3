// strongroomctl: the operator's command line (DESIGN.md §6). It speaks mTLS with an operator (or any other
// role's) certificate: `call` reaches any RPC of any daemon with a JSON request; jobs, timeline, audit and
// report are the operator's views of backend (see ctl.cc for the usage text).
#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "services/strongroomctl/ctl.h"

int main(int argc, char** argv) {
  using namespace strongroom;
  using namespace strongroom::ctl;
  Flags flags;
  if (std::string problem = ParseFlags(argc, argv, &flags); !problem.empty()) return UsageError(problem);
  if (flags.args.empty()) return UsageError("no command");
  const std::string& command = flags.args[0];
  const std::vector<std::string> rest(flags.args.begin() + 1, flags.args.end());
  if (command == "call") {
    if (rest.empty() || rest.size() > 2) return UsageError("call METHOD [JSON]");
    return CallCommand(flags, rest[0], rest.size() == 2 ? rest[1] : "{}");
  }
  if (command == "health") {
    if (rest.size() > 1) return UsageError("health [SERVICE]");
    const std::string service = rest.empty() ? "" : rest[0];
    return CallCommand(flags, "grpc.health.v1.Health/Check",
                       absl::StrCat("{\"service\":\"", JsonEscape(service), "\"}"), service);
  }
  if (command == "authz") return PrintAuthzTable();
  if (command == "audit") return AuditCommand(flags, rest);
  if (command == "report") return ReportCommand(flags, rest);
  if (command == "jobs" || command == "job" || command == "timeline")
    return JobsCommand(flags, command, rest);
  return UsageError(absl::StrCat("unknown command \"", command, "\""));
}
