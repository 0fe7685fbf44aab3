#include "services/strongroomctl/ctl.h"

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <map>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "common/tls.h"
#include "google/protobuf/util/json_util.h"

namespace strongroom::ctl {
namespace {

constexpr const char* kUsage = R"(usage: strongroomctl [flags] COMMAND

commands:
  call METHOD [JSON]   call any RPC, e.g. call strongroom.v1.Netd/ListPorts '{}'
  health [SERVICE]     grpc.health.v1 Check of the whole server or one service
  authz                print the per-RPC authorization table (no network)
  jobs [--state S]... [--project P] [--user U] [--cluster C] [--limit N]
                       list backend's jobs, newest first (one JSON line each)
  job ID               show one job (a global job id)
  timeline ID          show a job's state transitions and events
  audit verify [--from N] [--to N] [--anchor SEQ:HEX]... [--anchors-file F] [--save-anchor F] [--server]
                       fetch the audit chain and recompute it here (--server: let backend do it); names the
                       first edited, deleted or reordered record; anchors kept outside the system detect
                       truncation. Exit 0 when intact, 65 when not.
  audit query [--actor A] [--object O] [--action X] [--from TIME] [--to TIME] [--outcome O]... [--limit N]
                       audit records, oldest first; a trailing "/" in --actor or --object matches a prefix
  report usage --project P --from TIME --to TIME
                       jobs, node-hours and core-hours of a project in a window, per user too
  TIME is RFC 3339 (2026-11-22T10:00:00Z), @UNIX_SECONDS, now, or now-DURATION (now-24h).
  jobs, job, timeline, audit and report talk to backend (--target is backend's address).

flags (each also read from the environment variable shown):
  --target HOST:PORT        daemon to call                      STRONGROOM_TARGET
  --trust-domain DOMAIN     SPIFFE trust domain                 STRONGROOM_TRUST_DOMAIN
  --ca FILE                 deployment CA bundle (PEM)          STRONGROOM_CA
  --cert FILE               your certificate (PEM)              STRONGROOM_CERT
  --key FILE                your private key (PEM)              STRONGROOM_KEY
  --crl FILE                the deployment's CRL (PEM): refuse a revoked server   STRONGROOM_CRL
  --server-role ROLE        role the server must prove; inferred from METHOD when omitted
  --server-instance NAME    instance the server must prove (default: any)
  --timeout SECONDS         deadline of each call (default 10)
  --show-peer               print the server's verified identity and certificate serial
  --anonymous               present no client certificate (servers must refuse: a check)
  --raw                     call METHOD even if this build does not know it, with an empty
                            request; prints the response size (checks default-deny)

exit status: the gRPC status code of the (failed) call, 64 for a usage error, 65 when `audit verify`
finds the chain broken.
)";

std::string EnvOr(const char* name) {
  const char* value = std::getenv(name);
  return value == nullptr ? "" : value;
}

}  // namespace

int UsageError(const std::string& problem) {
  std::fprintf(stderr, "strongroomctl: %s\n%s", problem.c_str(), kUsage);
  return kUsageExit;
}

std::string ParseFlags(int argc, char** argv, Flags* flags) {
  flags->target = EnvOr("STRONGROOM_TARGET");
  flags->trust_domain = EnvOr("STRONGROOM_TRUST_DOMAIN");
  flags->ca = EnvOr("STRONGROOM_CA");
  flags->cert = EnvOr("STRONGROOM_CERT");
  flags->key = EnvOr("STRONGROOM_KEY");
  flags->crl = EnvOr("STRONGROOM_CRL");
  const std::map<std::string, std::string*> string_flags = {{"--target", &flags->target},
                                                            {"--trust-domain", &flags->trust_domain},
                                                            {"--ca", &flags->ca},
                                                            {"--cert", &flags->cert},
                                                            {"--key", &flags->key},
                                                            {"--crl", &flags->crl},
                                                            {"--server-role", &flags->server_role},
                                                            {"--server-instance", &flags->server_instance}};
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    // Flags stop at the command; what follows belongs to it.
    if (!flags->args.empty() || arg.rfind("--", 0) != 0) {
      flags->args.push_back(arg);
      continue;
    }
    if (arg == "--show-peer" || arg == "--anonymous" || arg == "--raw") {
      (arg == "--show-peer" ? flags->show_peer : arg == "--anonymous" ? flags->anonymous : flags->raw) = true;
      continue;
    }
    if (i + 1 >= argc) return absl::StrCat(arg, " needs a value");
    const std::string value = argv[++i];
    if (auto it = string_flags.find(arg); it != string_flags.end()) {
      *it->second = value;
    } else if (arg == "--timeout") {
      if (!absl::SimpleAtod(value, &flags->timeout_seconds) || flags->timeout_seconds <= 0) {
        return absl::StrCat("--timeout: \"", value, "\" is not a positive number of seconds");
      }
    } else {
      return absl::StrCat("unknown flag ", arg);
    }
  }
  return "";
}

int PrintStatusAndExit(const grpc::Status& status) {
  const std::string code = absl::StatusCodeToString(static_cast<absl::StatusCode>(status.error_code()));
  std::fprintf(stderr, "strongroomctl: %s: %s\n", code.c_str(), status.error_message().c_str());
  return static_cast<int>(status.error_code());
}

int PrintStatusAndExit(const absl::Status& status) {
  std::fprintf(stderr, "strongroomctl: %s: %s\n", absl::StatusCodeToString(status.code()).c_str(),
               std::string(status.message()).c_str());
  return static_cast<int>(status.code());
}

absl::StatusOr<std::shared_ptr<grpc::Channel>> OpenChannel(const Flags& flags, Role role) {
  if (flags.target.empty()) return absl::InvalidArgumentError("--target is required");
  if (!IsValidTrustDomain(flags.trust_domain))
    return absl::InvalidArgumentError("--trust-domain is missing or invalid");
  v1::TlsFiles files;
  files.set_ca_file(flags.ca);
  files.set_crl_file(flags.crl);
  if (!flags.anonymous) {
    files.set_cert_file(flags.cert);
    files.set_key_file(flags.key);
  }
  ServerExpectation expected{flags.trust_domain, role, std::nullopt};
  if (!flags.server_instance.empty()) expected.instance = flags.server_instance;
  return MakeSecureChannel(flags.target, files, expected);
}

std::unique_ptr<grpc::ClientContext> NewContext(const Flags& flags) {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(std::chrono::system_clock::now() +
                        std::chrono::milliseconds(static_cast<int64_t>(flags.timeout_seconds * 1000)));
  return context;
}

void PrintJson(const google::protobuf::Message& message) {
  std::string json;
  google::protobuf::util::JsonPrintOptions options;
  options.always_print_primitive_fields = true;
  (void)google::protobuf::util::MessageToJsonString(message, &json, options);
  std::cout << json << std::endl;
}

absl::StatusOr<absl::Time> ParseTimeArgument(const std::string& text) {
  absl::string_view rest = text;
  if (absl::ConsumePrefix(&rest, "now")) {
    if (rest.empty()) return absl::Now();
    absl::Duration offset;
    if (absl::ParseDuration(rest, &offset)) return absl::Now() + offset;
  } else if (absl::ConsumePrefix(&rest, "@")) {
    int64_t seconds = 0;
    if (absl::SimpleAtoi(rest, &seconds)) return absl::FromUnixSeconds(seconds);
  } else {
    absl::Time t;
    std::string error;
    if (absl::ParseTime(absl::RFC3339_full, text, &t, &error)) return t;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("\"", text, "\" is not a time (RFC 3339, @UNIX_SECONDS, now or now-DURATION)"));
}

std::string CommandOptions::Get(const std::string& name) const {
  auto it = values.find(name);
  return it == values.end() || it->second.empty() ? "" : it->second.back();
}

CommandOptions ParseCommandOptions(const std::vector<std::string>& args,
                                   const std::set<std::string>& with_value,
                                   const std::set<std::string>& switches, std::string* error) {
  CommandOptions options;
  for (size_t i = 0; i < args.size(); ++i) {
    if (switches.count(args[i]) != 0) {
      options.switches.insert(args[i]);
    } else if (with_value.count(args[i]) != 0 && i + 1 < args.size()) {
      options.values[args[i]].push_back(args[i + 1]);
      ++i;
    } else {
      *error =
          with_value.count(args[i]) != 0 ? args[i] + " needs a value" : "unknown option \"" + args[i] + "\"";
      return options;
    }
  }
  return options;
}

}  // namespace strongroom::ctl
