// strongroomctl: the operator's command line (DESIGN.md §6). It speaks mTLS with an operator
// (or any other role's) certificate. `call` reaches any RPC of any daemon with a JSON request,
// which is also how the integration tests drive the daemons from inside the rig's hosts.
//
// Exit status: the gRPC status code of the call (0 = OK, 7 = PERMISSION_DENIED, ...), or 64
// for a usage error.
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/notification.h"
#include "common/authz.h"
#include "common/identity.h"
#include "common/log.h"
#include "common/peer_verifier.h"
#include "common/tls.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/dynamic_message.h"
#include "google/protobuf/util/json_util.h"
#include "grpc/grpc_security_constants.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"

namespace strongroom {
namespace {

constexpr int kUsageExit = 64;

constexpr const char* kUsage = R"(usage: strongroomctl [flags] COMMAND

commands:
  call METHOD [JSON]   call any RPC, e.g. call strongroom.v1.Netd/ListPorts '{}'
  health [SERVICE]     grpc.health.v1 Check of the whole server or one service
  authz                print the per-RPC authorization table (no network)

flags (each also read from the environment variable shown):
  --target HOST:PORT        daemon to call                      STRONGROOM_TARGET
  --trust-domain DOMAIN     SPIFFE trust domain                 STRONGROOM_TRUST_DOMAIN
  --ca FILE                 deployment CA bundle (PEM)          STRONGROOM_CA
  --cert FILE               your certificate (PEM)              STRONGROOM_CERT
  --key FILE                your private key (PEM)              STRONGROOM_KEY
  --server-role ROLE        role the server must prove; inferred from METHOD when omitted
  --server-instance NAME    instance the server must prove (default: any)
  --timeout SECONDS         deadline of the call (default 10)
  --show-peer               print the server's verified identity and certificate serial
  --anonymous               present no client certificate (servers must refuse: a check)
  --raw                     call METHOD even if this build does not know it, with an empty
                            request; prints the response size (checks default-deny)
)";

struct Flags {
  std::string target, trust_domain, ca, cert, key, server_role, server_instance;
  double timeout_seconds = 10;
  bool show_peer = false;
  bool anonymous = false;
  bool raw = false;
  std::vector<std::string> args;  // command and its arguments
};

std::string EnvOr(const char* name) {
  const char* value = std::getenv(name);
  return value == nullptr ? "" : value;
}

int UsageError(const std::string& problem) {
  std::fprintf(stderr, "strongroomctl: %s\n%s", problem.c_str(), kUsage);
  return kUsageExit;
}

// Returns an empty string on success, the problem otherwise.
std::string ParseFlags(int argc, char** argv, Flags* flags) {
  flags->target = EnvOr("STRONGROOM_TARGET");
  flags->trust_domain = EnvOr("STRONGROOM_TRUST_DOMAIN");
  flags->ca = EnvOr("STRONGROOM_CA");
  flags->cert = EnvOr("STRONGROOM_CERT");
  flags->key = EnvOr("STRONGROOM_KEY");
  const std::map<std::string, std::string*> string_flags = {
      {"--target", &flags->target},           {"--trust-domain", &flags->trust_domain},
      {"--ca", &flags->ca},                   {"--cert", &flags->cert},
      {"--key", &flags->key},                 {"--server-role", &flags->server_role},
      {"--server-instance", &flags->server_instance}};
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
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

// "strongroom.v1.Netd" -> netd: each daemon serves exactly one Strongroom service.
absl::StatusOr<Role> RoleServing(absl::string_view service) {
  static const std::map<std::string, Role> kServing = {{"strongroom.v1.Backend", Role::kBackend},
                                                       {"strongroom.v1.VmController", Role::kVmController},
                                                       {"strongroom.v1.HostAgent", Role::kHostAgent},
                                                       {"strongroom.v1.Netd", Role::kNetd}};
  auto it = kServing.find(std::string(service));
  if (it == kServing.end()) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot infer the server role for ", service, "; pass --server-role"));
  }
  return it->second;
}

int PrintStatusAndExit(const grpc::Status& status) {
  const std::string code = absl::StatusCodeToString(static_cast<absl::StatusCode>(status.error_code()));
  std::fprintf(stderr, "strongroomctl: %s: %s\n", code.c_str(), status.error_message().c_str());
  return static_cast<int>(status.error_code());
}

void ShowPeer(const grpc::ClientContext& context) {
  std::shared_ptr<const grpc::AuthContext> auth = context.auth_context();
  if (auth == nullptr) return;
  std::vector<grpc::string_ref> pem = auth->FindPropertyValues(GRPC_X509_PEM_CERT_PROPERTY_NAME);
  if (pem.empty()) return;
  absl::StatusOr<CertificateSummary> summary =
      SummarizeCertificatePem(absl::string_view(pem[0].data(), pem[0].size()));
  if (!summary.ok()) return;
  std::fprintf(stderr, "{\"peer\":\"%s\",\"serial\":\"%s\",\"not_after\":\"%s\"}\n",
               JsonEscape(summary->spiffe_id).c_str(), summary->serial_hex.c_str(),
               JsonEscape(summary->not_after).c_str());
}

// `role_service` names the Strongroom service whose daemon we expect when --server-role is
// not given; by default the service of METHOD.
int Call(const Flags& flags, std::string method, const std::string& request_json,
         std::string role_service = "") {
  if (!method.empty() && method[0] == '/') method.erase(0, 1);
  std::vector<std::string> parts = absl::StrSplit(method, '/');
  if (parts.size() != 2) return UsageError(absl::StrCat("METHOD \"", method, "\" must be package.Service/Method"));
  const google::protobuf::DescriptorPool* pool = google::protobuf::DescriptorPool::generated_pool();
  const google::protobuf::MethodDescriptor* descriptor =
      pool->FindMethodByName(absl::StrCat(parts[0], ".", parts[1]));
  if (descriptor == nullptr && !flags.raw) return UsageError(absl::StrCat("unknown method ", method));
  if (descriptor != nullptr && (descriptor->client_streaming() || descriptor->server_streaming())) {
    return UsageError(absl::StrCat(method, " is a streaming RPC; call supports unary RPCs"));
  }

  Role server_role;
  if (!flags.server_role.empty()) {
    absl::StatusOr<Role> role = ParseRole(flags.server_role);
    if (!role.ok()) return UsageError(absl::StrCat("--server-role: ", role.status().message()));
    server_role = *role;
  } else {
    absl::StatusOr<Role> role = RoleServing(role_service.empty() ? parts[0] : role_service);
    if (!role.ok()) return UsageError(std::string(role.status().message()));
    server_role = *role;
  }
  if (flags.target.empty()) return UsageError("--target is required");
  if (!IsValidTrustDomain(flags.trust_domain)) return UsageError("--trust-domain is missing or invalid");

  google::protobuf::DynamicMessageFactory factory(pool);
  std::unique_ptr<google::protobuf::Message> request, response;
  std::string wire;
  if (descriptor != nullptr) {
    request.reset(factory.GetPrototype(descriptor->input_type())->New());
    response.reset(factory.GetPrototype(descriptor->output_type())->New());
    if (auto parsed = google::protobuf::util::JsonStringToMessage(request_json, request.get()); !parsed.ok()) {
      return UsageError(absl::StrCat("request JSON for ", descriptor->input_type()->full_name(), ": ",
                                     parsed.message().as_string()));
    }
    request->SerializeToString(&wire);
  }

  v1::TlsFiles files;
  files.set_ca_file(flags.ca);
  if (!flags.anonymous) {
    files.set_cert_file(flags.cert);
    files.set_key_file(flags.key);
  }
  ServerExpectation expected{flags.trust_domain, server_role, std::nullopt};
  if (!flags.server_instance.empty()) expected.instance = flags.server_instance;
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = MakeSecureChannel(flags.target, files, expected);
  if (!channel.ok()) return UsageError(std::string(channel.status().message()));

  grpc::GenericStub stub(*channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::milliseconds(static_cast<int64_t>(flags.timeout_seconds * 1000)));
  grpc::Slice slice(wire);
  grpc::ByteBuffer request_buffer(&slice, 1);
  grpc::ByteBuffer response_buffer;
  grpc::Status status;
  absl::Notification done;
  stub.UnaryCall(&context, absl::StrCat("/", method), grpc::StubOptions(), &request_buffer,
                 &response_buffer, [&](grpc::Status s) {
                   status = std::move(s);
                   done.Notify();
                 });
  done.WaitForNotification();
  if (flags.show_peer) ShowPeer(context);
  if (!status.ok()) return PrintStatusAndExit(status);

  std::vector<grpc::Slice> slices;
  (void)response_buffer.Dump(&slices);
  std::string response_wire;
  for (const grpc::Slice& s : slices) response_wire.append(reinterpret_cast<const char*>(s.begin()), s.size());
  if (response == nullptr) {
    std::cout << "{\"raw_response_bytes\":" << response_wire.size() << "}" << std::endl;
    return 0;
  }
  if (!response->ParseFromString(response_wire)) {
    std::fprintf(stderr, "strongroomctl: response is not a valid %s\n",
                 descriptor->output_type()->full_name().c_str());
    return static_cast<int>(grpc::StatusCode::INTERNAL);
  }
  std::string json;
  google::protobuf::util::JsonPrintOptions options;
  options.always_print_primitive_fields = true;
  (void)google::protobuf::util::MessageToJsonString(*response, &json, options);
  std::cout << json << std::endl;
  return 0;
}

int PrintAuthzTable() {
  for (const AuthzRule& rule : AuthorizationTable()) {
    std::string roles;
    for (Role role : rule.allowed) absl::StrAppend(&roles, roles.empty() ? "" : ",", RoleName(role));
    std::printf("%-64s %s\n", std::string(rule.method).c_str(), roles.c_str());
  }
  return 0;
}

}  // namespace
}  // namespace strongroom

int main(int argc, char** argv) {
  using namespace strongroom;
  Flags flags;
  if (std::string problem = ParseFlags(argc, argv, &flags); !problem.empty()) return UsageError(problem);
  if (flags.args.empty()) return UsageError("no command");
  const std::string& command = flags.args[0];
  if (command == "call") {
    if (flags.args.size() < 2 || flags.args.size() > 3) return UsageError("call METHOD [JSON]");
    return Call(flags, flags.args[1], flags.args.size() == 3 ? flags.args[2] : "{}");
  }
  if (command == "health") {
    if (flags.args.size() > 2) return UsageError("health [SERVICE]");
    const std::string service = flags.args.size() == 2 ? flags.args[1] : "";
    return Call(flags, "grpc.health.v1.Health/Check",
                absl::StrCat("{\"service\":\"", JsonEscape(service), "\"}"), service);
  }
  if (command == "authz") return PrintAuthzTable();
  return UsageError(absl::StrCat("unknown command \"", command, "\""));
}
