#include "common/audit.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/audit_text.h"
#include "common/identity.h"
#include "common/log.h"
#include "google/protobuf/descriptor.h"

namespace strongroom {
namespace {

using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;

class LogAuditSink : public AuditSink {
 public:
  void Record(const AuditEvent& e) override {
    Log(LogLevel::kInfo, "audit",
        {{"audit", "true"},
         {"actor", e.actor},
         {"action", e.action},
         {"object", e.object},
         {"outcome", e.outcome},
         {"detail", e.detail}});
  }
};

const FieldDescriptor* FieldNamed(const Message& m, const char* name) {
  return m.GetDescriptor()->FindFieldByName(name);
}

std::string StringField(const Message& m, const char* name) {
  const FieldDescriptor* f = FieldNamed(m, name);
  if (f == nullptr || f->is_repeated() || f->type() != FieldDescriptor::TYPE_STRING) return "";
  return m.GetReflection()->GetString(m, f);
}

const Message* MessageField(const Message& m, const char* name, const char* type) {
  const FieldDescriptor* f = FieldNamed(m, name);
  if (f == nullptr || f->is_repeated() || f->type() != FieldDescriptor::TYPE_MESSAGE) return nullptr;
  if (f->message_type()->full_name() != type) return nullptr;
  if (!m.GetReflection()->HasField(m, f)) return nullptr;
  return &m.GetReflection()->GetMessage(m, f);
}

std::string LocalJobObject(const Message& key) {
  const Reflection* r = key.GetReflection();
  const std::string cluster = StringField(key, "local_cluster");
  const FieldDescriptor* id = FieldNamed(key, "local_job_id");
  const uint32_t job_id = id == nullptr ? 0 : r->GetUInt32(key, id);
  if (job_id != 0) return absl::StrCat("local-job/", cluster, "/", job_id);
  return absl::StrCat("local-job/", cluster, "/", StringField(key, "token"));
}

std::string JobSelectorObject(const Message& selector) {
  if (std::string id = StringField(selector, "global_job_id"); !id.empty()) return "job/" + id;
  if (const Message* local = MessageField(selector, "local", "strongroom.v1.LocalJobKey")) {
    return LocalJobObject(*local);
  }
  const FieldDescriptor* slurm = FieldNamed(selector, "global_slurm_job_id");
  if (slurm != nullptr && selector.GetReflection()->HasField(selector, slurm)) {
    return absl::StrCat("global-slurm-job/", selector.GetReflection()->GetUInt32(selector, slurm));
  }
  return "";
}

std::string ObjectOf(const Message& request) {
  if (std::string id = StringField(request, "global_job_id"); !id.empty()) return "job/" + id;
  if (const Message* job = MessageField(request, "job", "strongroom.v1.JobSelector")) {
    if (std::string o = JobSelectorObject(*job); !o.empty()) return o;
  }
  if (std::string id = StringField(request, "workload_id"); !id.empty()) return "workload/" + id;
  if (const Message* spec = MessageField(request, "spec", "strongroom.v1.WorkloadSpec")) {
    if (std::string id = StringField(*spec, "workload_id"); !id.empty()) return "workload/" + id;
  }
  if (const Message* local = MessageField(request, "local", "strongroom.v1.LocalJobKey")) {
    return LocalJobObject(*local);
  }
  if (std::string project = StringField(request, "project"); !project.empty()) return "project/" + project;
  return "";
}

}  // namespace

v1::Role ProtoRole(Role role) {
  switch (role) {
    case Role::kBackend:
      return v1::ROLE_BACKEND;
    case Role::kVmController:
      return v1::ROLE_VM_CONTROLLER;
    case Role::kHostAgent:
      return v1::ROLE_HOST_AGENT;
    case Role::kNetd:
      return v1::ROLE_NETD;
    case Role::kOperator:
      return v1::ROLE_OPERATOR;
    case Role::kWorkload:
      return v1::ROLE_WORKLOAD;
    case Role::kSubmitHook:
      return v1::ROLE_SUBMIT_HOOK;
    case Role::kGlobalJob:
      return v1::ROLE_GLOBAL_JOB;
  }
  return v1::ROLE_UNSPECIFIED;
}

std::shared_ptr<AuditSink> MakeLogAuditSink() { return std::make_shared<LogAuditSink>(); }

v1::AuditRecord AuditRecordOfEvent(const AuditEvent& e) {
  v1::AuditRecord r;
  const int64_t us = absl::ToUnixMicros(e.time);
  r.mutable_time()->set_seconds(us >= 0 ? us / 1000000 : (us - 999999) / 1000000);
  r.mutable_time()->set_nanos(static_cast<int32_t>((us - r.time().seconds() * 1000000) * 1000));
  *r.mutable_actor() = AuditIdentityOf(e.actor);
  r.set_action(e.action);
  r.set_object(e.object);
  r.set_outcome(AuditOutcomeOfCode(e.outcome));
  r.set_status_code(AuditStatusCodeOf(e.outcome));
  for (const auto& [key, value] : e.details) (*r.mutable_details())[key] = value;
  if (!e.detail.empty()) (*r.mutable_details())["error"] = e.detail;
  MakeAuditRecordStorable(&r);
  return r;
}

std::string AuditObjectOf(const google::protobuf::Message& request) { return ObjectOf(request); }

int AuditStatusCodeOf(absl::string_view code_name) {
  for (int code = 0; code <= 16; ++code) {
    if (absl::StatusCodeToString(static_cast<absl::StatusCode>(code)) == code_name) return code;
  }
  return static_cast<int>(absl::StatusCode::kUnknown);
}

v1::AuditOutcome AuditOutcomeOfCode(absl::string_view code_name) {
  if (code_name == "OK") return v1::AUDIT_OUTCOME_SUCCESS;
  if (code_name == "UNAUTHENTICATED" || code_name == "PERMISSION_DENIED") return v1::AUDIT_OUTCOME_DENIED;
  return v1::AUDIT_OUTCOME_FAILURE;
}

v1::Identity AuditIdentityOf(absl::string_view spiffe_id) {
  v1::Identity identity;
  identity.set_spiffe_id(std::string(spiffe_id));
  if (absl::StatusOr<Identity> parsed = ParseSpiffeId(spiffe_id); parsed.ok()) {
    identity.set_trust_domain(parsed->trust_domain);
    identity.set_instance(parsed->instance);
    identity.set_role(ProtoRole(parsed->role));
  }
  return identity;
}

}  // namespace strongroom
