// call, health and authz: reach any RPC of any daemon with a JSON request (also how the integration tests
// drive the daemons from inside the rig's hosts).
#include <cstdio>
#include <iostream>
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/notification.h"
#include "common/authz.h"
#include "common/log.h"
#include "common/peer_verifier.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/dynamic_message.h"
#include "google/protobuf/util/json_util.h"
#include "grpc/grpc_security_constants.h"
#include "grpcpp/generic/generic_stub.h"
#include "services/strongroomctl/ctl.h"

namespace strongroom::ctl {
namespace {

// "strongroom.v1.Netd" -> netd: each daemon serves exactly one Strongroom service.
absl::StatusOr<Role> RoleServing(absl::string_view service) {
  static const std::map<std::string, Role> kServing = {
      {"strongroom.v1.Backend", Role::kBackend},
      {"strongroom.v1.VmController", Role::kVmController},
      {"strongroom.v1.WorkloadEnrollment", Role::kVmController},
      {"strongroom.v1.HostAgent", Role::kHostAgent},
      {"strongroom.v1.Netd", Role::kNetd}};
  auto it = kServing.find(std::string(service));
  if (it == kServing.end()) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot infer the server role for ", service, "; pass --server-role"));
  }
  return it->second;
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

}  // namespace

// `role_service` names the Strongroom service whose daemon we expect when --server-role is not given; by
// default the service of METHOD.
int CallCommand(const Flags& flags, std::string method, const std::string& request_json,
                std::string role_service) {
  if (!method.empty() && method[0] == '/') method.erase(0, 1);
  std::vector<std::string> parts = absl::StrSplit(method, '/');
  if (parts.size() != 2)
    return UsageError(absl::StrCat("METHOD \"", method, "\" must be package.Service/Method"));
  const google::protobuf::DescriptorPool* pool = google::protobuf::DescriptorPool::generated_pool();
  const google::protobuf::MethodDescriptor* descriptor =
      pool->FindMethodByName(absl::StrCat(parts[0], ".", parts[1]));
  if (descriptor == nullptr && !flags.raw) return UsageError(absl::StrCat("unknown method ", method));
  if (descriptor != nullptr && (descriptor->client_streaming() || descriptor->server_streaming())) {
    return UsageError(absl::StrCat(method, " is a streaming RPC; call supports unary RPCs"));
  }
  absl::StatusOr<Role> role = flags.server_role.empty()
                                  ? RoleServing(role_service.empty() ? parts[0] : role_service)
                                  : ParseRole(flags.server_role);
  if (!role.ok()) return UsageError(absl::StrCat("--server-role: ", role.status().message()));

  google::protobuf::DynamicMessageFactory factory(pool);
  std::unique_ptr<google::protobuf::Message> request, response;
  std::string wire;
  if (descriptor != nullptr) {
    request.reset(factory.GetPrototype(descriptor->input_type())->New());
    response.reset(factory.GetPrototype(descriptor->output_type())->New());
    if (auto parsed = google::protobuf::util::JsonStringToMessage(request_json, request.get());
        !parsed.ok()) {
      return UsageError(absl::StrCat("request JSON for ", descriptor->input_type()->full_name(), ": ",
                                     parsed.message().as_string()));
    }
    request->SerializeToString(&wire);
  }
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = OpenChannel(flags, *role);
  if (!channel.ok()) return UsageError(std::string(channel.status().message()));

  grpc::GenericStub stub(*channel);
  std::unique_ptr<grpc::ClientContext> context = NewContext(flags);
  grpc::Slice slice(wire);
  grpc::ByteBuffer request_buffer(&slice, 1);
  grpc::ByteBuffer response_buffer;
  grpc::Status status;
  absl::Notification done;
  stub.UnaryCall(context.get(), absl::StrCat("/", method), grpc::StubOptions(), &request_buffer,
                 &response_buffer, [&](grpc::Status s) {
                   status = std::move(s);
                   done.Notify();
                 });
  done.WaitForNotification();
  if (flags.show_peer) ShowPeer(*context);
  if (!status.ok()) return PrintStatusAndExit(status);

  std::vector<grpc::Slice> slices;
  (void)response_buffer.Dump(&slices);
  std::string response_wire;
  for (const grpc::Slice& s : slices)
    response_wire.append(reinterpret_cast<const char*>(s.begin()), s.size());
  if (response == nullptr) {
    std::cout << "{\"raw_response_bytes\":" << response_wire.size() << "}" << std::endl;
    return 0;
  }
  if (!response->ParseFromString(response_wire)) {
    std::fprintf(stderr, "strongroomctl: response is not a valid %s\n",
                 descriptor->output_type()->full_name().c_str());
    return static_cast<int>(grpc::StatusCode::INTERNAL);
  }
  PrintJson(*response);
  return 0;
}

int PrintAuthzTable() {
  for (const AuthzRule& rule : AuthorizationTable()) {
    std::string roles;
    for (Role role : rule.allowed) absl::StrAppend(&roles, roles.empty() ? "" : ",", RoleName(role));
    // The enrollment listener's RPCs name no role: their handler authenticates the caller.
    if (rule.auth == CallerAuth::kEnrollmentTicket) roles = "(enrollment listener: enrollment ticket)";
    if (rule.auth == CallerAuth::kProjectCertificate) roles = "(enrollment listener: project-CA certificate)";
    std::printf("%-64s %s\n", std::string(rule.method).c_str(), roles.c_str());
  }
  return 0;
}

}  // namespace strongroom::ctl
