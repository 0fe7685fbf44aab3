// hostile_client: sends every string field of every unary request of a service (default
// strongroom.v1.Backend), one at a time, with each hostile value (a NUL byte, invalid UTF-8, 64 KiB,
// quote/brace/backslash), as an authorized caller of that method, plus calls to hostile method paths; for the
// "any input reaches the audit chain" tests of backend and of a daemon that ships its records.
//
//   hostile_client --target H:P --trust-domain TD --ca CA.pem --as ROLE=PREFIX... [--service S --server-role
//   R]
//
// Requests are built with the descriptor and sent as raw bytes (invalid UTF-8 cannot be serialized as a
// string otherwise), so what arrives is exactly what a hostile client could send. String fields are reached
// through singular messages and the first element of repeated ones, up to depth 4. Each call prints one JSON
// line: {"method","field","value","code","message"} (the message escaped). Exit 0 when every call got an
// answer (whatever its status), 1 when the transport failed, 64 for a usage error.
#include <condition_variable>
#include <cstdio>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/authz.h"
#include "common/identity.h"
#include "common/tls.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/dynamic_message.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/support/byte_buffer.h"
#include "strongroom/v1/backend.grpc.pb.h"
#include "strongroom/v1/host_agent.grpc.pb.h"
#include "strongroom/v1/netd.grpc.pb.h"
#include "strongroom/v1/vm_controller.grpc.pb.h"

namespace strongroom {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::Message;

const std::map<std::string, std::string>& HostileValues() {
  static const auto* values = new std::map<std::string, std::string>{
      {"nul", std::string("sr\0hostile", 10)},
      {"invalid-utf8", std::string("sr\xff\xfe\xc3(hostile", 13)},
      {"64k", std::string(64 * 1024, 'h')},
      {"quotes", "sr'\"{}[]\\hostile;--"},
  };
  return *values;
}

// Paths from the request message to each string field it can hold: ({field, field, ...}).
void StringFields(const Descriptor* d, std::vector<const FieldDescriptor*>& prefix,
                  std::vector<std::vector<const FieldDescriptor*>>* out, int depth) {
  for (int i = 0; i < d->field_count(); ++i) {
    const FieldDescriptor* f = d->field(i);
    if (f->is_map()) continue;  // AppendAudit's details: covered through the record's other strings
    prefix.push_back(f);
    if (f->type() == FieldDescriptor::TYPE_STRING) {
      out->push_back(prefix);
    } else if (f->type() == FieldDescriptor::TYPE_MESSAGE && depth < 4 &&
               f->message_type()->file()->package() == "strongroom.v1") {
      StringFields(f->message_type(), prefix, out, depth + 1);
    }
    prefix.pop_back();
  }
}

// Sets the field at `path` of `m` to `value`, creating the messages on the way (first elements of repeated).
void SetPath(Message* m, const std::vector<const FieldDescriptor*>& path, const std::string& value) {
  for (size_t i = 0; i < path.size(); ++i) {
    const FieldDescriptor* f = path[i];
    const auto* r = m->GetReflection();
    const bool last = i + 1 == path.size();
    if (last) {
      if (f->is_repeated()) {
        r->AddString(m, f, value);
      } else {
        r->SetString(m, f, value);
      }
      return;
    }
    if (f->is_repeated()) {
      m = r->FieldSize(*m, f) > 0 ? r->MutableRepeatedMessage(m, f, 0) : r->AddMessage(m, f);
    } else {
      m = r->MutableMessage(m, f);
    }
  }
}

std::string PathName(const std::vector<const FieldDescriptor*>& path) {
  std::vector<std::string> names;
  for (const FieldDescriptor* f : path) names.push_back(f->name());
  return absl::StrJoin(names, ".");
}

std::string Json(const std::string& s) { return absl::StrCat("\"", absl::CHexEscape(s), "\""); }

int Main(int argc, char** argv) {
  std::string target, trust_domain, ca, service_name = v1::Backend::service_full_name(),
                                        server_role = "backend";
  std::map<Role, std::string> certs;  // role -> PREFIX of PREFIX.pem / PREFIX.key
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--target") {
      target = value;
    } else if (flag == "--trust-domain") {
      trust_domain = value;
    } else if (flag == "--ca") {
      ca = value;
    } else if (flag == "--service") {
      service_name = value;
    } else if (flag == "--server-role") {
      server_role = value;
    } else if (flag == "--as") {
      std::vector<std::string> parts = absl::StrSplit(value, absl::MaxSplits('=', 1));
      absl::StatusOr<Role> role = ParseRole(parts[0]);
      if (parts.size() != 2 || !role.ok()) return 64;
      certs[*role] = parts[1];
    } else {
      std::fprintf(stderr, "hostile_client: unknown flag %s\n", flag.c_str());
      return 64;
    }
  }
  if (target.empty() || trust_domain.empty() || ca.empty() || certs.empty()) {
    std::fprintf(stderr,
                 "usage: hostile_client --target H:P --trust-domain TD --ca CA --as ROLE=PREFIX...\n");
    return 64;
  }
  std::map<Role, std::unique_ptr<grpc::GenericStub>> stubs;
  for (const auto& [role, prefix] : certs) {
    v1::TlsFiles tls;
    tls.set_ca_file(ca);
    tls.set_cert_file(prefix + ".pem");
    tls.set_key_file(prefix + ".key");
    absl::StatusOr<Role> expected = ParseRole(server_role);
    if (!expected.ok()) return 64;
    absl::StatusOr<std::shared_ptr<grpc::Channel>> channel =
        MakeSecureChannel(target, tls, {trust_domain, *expected, std::nullopt});
    if (!channel.ok()) {
      std::fprintf(stderr, "hostile_client: %s\n", channel.status().ToString().c_str());
      return 1;
    }
    stubs[role] = std::make_unique<grpc::GenericStub>(*channel);
  }
  bool transport_failed = false;
  uint64_t source_sequence =
      1000000;  // AppendAudit: fresh numbers, so valid records are appended, not skipped
  auto call = [&](Role role, const std::string& method, const std::string& bytes, const std::string& field,
                  const std::string& kind) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    grpc::Slice slice(bytes);
    grpc::ByteBuffer request(&slice, 1), response;
    grpc::Status status;
    std::mutex mu;
    std::condition_variable done_cv;
    bool done = false;
    stubs.at(role)->UnaryCall(&context, method, grpc::StubOptions(), &request, &response,
                              [&](grpc::Status s) {
                                std::lock_guard<std::mutex> lock(mu);
                                status = s;
                                done = true;
                                done_cv.notify_one();
                              });
    std::unique_lock<std::mutex> lock(mu);
    done_cv.wait(lock, [&] { return done; });
    // UNAVAILABLE here means the transport (or the chain stalled): the test treats both as failures.
    if (status.error_code() == grpc::StatusCode::UNAVAILABLE) transport_failed = true;
    std::printf("{\"method\":%s,\"field\":%s,\"value\":%s,\"code\":%d,\"message\":%s}\n",
                Json(method).c_str(), Json(field).c_str(), Json(kind).c_str(),
                static_cast<int>(status.error_code()), Json(status.error_message().substr(0, 300)).c_str());
  };

  const google::protobuf::ServiceDescriptor* service =
      google::protobuf::DescriptorPool::generated_pool()->FindServiceByName(service_name);
  if (service == nullptr) {
    std::fprintf(stderr, "hostile_client: unknown service %s\n", service_name.c_str());
    return 64;
  }
  google::protobuf::DynamicMessageFactory factory;
  for (int m = 0; m < service->method_count(); ++m) {
    const google::protobuf::MethodDescriptor* method = service->method(m);
    if (method->client_streaming() || method->server_streaming()) continue;  // unary calls only
    const std::string path = absl::StrCat("/", service->full_name(), "/", method->name());
    std::optional<Role> role;
    for (const AuthzRule& rule : AuthorizationTable()) {
      if (rule.method != path) continue;
      for (Role r : rule.allowed) {
        // backend's own identity may not append to its chain through AppendAudit.
        const bool self = r == Role::kBackend && service_name == v1::Backend::service_full_name();
        if (!role && certs.count(r) != 0 && !self) role = r;
      }
    }
    if (!role) {
      std::fprintf(stderr, "hostile_client: no certificate may call %s\n", path.c_str());
      return 64;
    }
    std::vector<std::vector<const FieldDescriptor*>> fields;
    std::vector<const FieldDescriptor*> prefix;
    StringFields(method->input_type(), prefix, &fields, 0);
    for (const auto& field : fields) {
      for (const auto& [kind, value] : HostileValues()) {
        std::unique_ptr<Message> request(factory.GetPrototype(method->input_type())->New());
        SetPath(request.get(), field, value);
        if (method->name() == "AppendAudit") {
          // A record that is otherwise valid, so the hostile field is what backend judges. Set by reflection:
          // parsing would check the UTF-8 this test means to send.
          const auto* r = request->GetReflection();
          const FieldDescriptor* records = method->input_type()->FindFieldByName("records");
          Message* record = r->FieldSize(*request, records) > 0
                                ? r->MutableRepeatedMessage(request.get(), records, 0)
                                : r->AddMessage(request.get(), records);
          const Descriptor* d = record->GetDescriptor();
          const auto* rr = record->GetReflection();
          if (rr->GetString(*record, d->FindFieldByName("action")).empty()) {
            rr->SetString(record, d->FindFieldByName("action"), "hostile.probe");
          }
          Message* actor = rr->MutableMessage(record, d->FindFieldByName("actor"));
          const FieldDescriptor* spiffe = actor->GetDescriptor()->FindFieldByName("spiffe_id");
          if (actor->GetReflection()->GetString(*actor, spiffe).empty()) {
            actor->GetReflection()->SetString(actor, spiffe, "spiffe://strongroom.test/operator/probe");
          }
          Message* time = rr->MutableMessage(record, d->FindFieldByName("time"));
          time->GetReflection()->SetInt64(time, time->GetDescriptor()->FindFieldByName("seconds"),
                                          1700000000);
          rr->SetEnumValue(record, d->FindFieldByName("outcome"), v1::AUDIT_OUTCOME_SUCCESS);
          rr->SetUInt64(record, d->FindFieldByName("source_sequence"), ++source_sequence);
        }
        std::string bytes;
        (void)request->SerializePartialToString(&bytes);
        call(*role, path, bytes, PathName(field), kind);
      }
    }
  }
  // Hostile method paths: refused (default deny), and audited with the path they named.
  const Role any = certs.begin()->first;
  for (const auto& [kind, value] : HostileValues()) {
    if (kind == "64k") continue;  // a 64 KiB :path is a header larger than the peer accepts
    call(any, absl::StrCat("/", service_name, "/", value), "", "(method)", kind);
  }
  return transport_failed ? 1 : 0;
}

}  // namespace
}  // namespace strongroom

int main(int argc, char** argv) { return strongroom::Main(argc, argv); }
