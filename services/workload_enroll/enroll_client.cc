#include "services/workload_enroll/enroll_client.h"

#include <algorithm>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/config.h"
#include "common/enrollment_ticket.h"
#include "common/field_rules.h"
#include "common/identity.h"
#include "common/project_ca.h"
#include "common/status.h"
#include "common/tls.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "grpcpp/create_channel.h"
#include "strongroom/v1/vm_controller.grpc.pb.h"

namespace strongroom::workload_enroll {
namespace {

absl::Status Missing(const char* option) {
  return absl::InvalidArgumentError(absl::StrCat(option, ": required"));
}

template <typename Request, typename Response, typename Call>
absl::Status Rpc(const char* step, absl::Duration timeout, const Request& request, Response* response,
                 Call call) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::milliseconds(absl::ToInt64Milliseconds(timeout)));
  const grpc::Status status = call(&context, request, response);
  if (status.ok()) return absl::OkStatus();
  return Annotate(FromGrpcStatus(status), step);
}

}  // namespace

// Characters safe in a sourced KEY=value line without quoting.
bool SafeEnvValue(const std::string& v) {
  if (v.empty() || v.size() > 1024) return false;
  for (char c : v) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                    c == '_' || c == '-' || c == '/' || c == ':' || c == '[' || c == ']';
    if (!ok) return false;
  }
  return true;
}

// Writes `content` to dir/name with `mode`, atomically (a temporary file, fsync, rename).
absl::Status WriteFileAtomically(const std::string& dir, const std::string& name, const std::string& content,
                                 mode_t mode) {
  const std::string path = absl::StrCat(dir, "/", name);
  const std::string tmp = absl::StrCat(path, ".tmp.", getpid());
  int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return absl::InternalError(absl::StrCat("cannot create ", tmp, ": ", strerror(errno)));
  size_t done = 0;
  while (done < content.size()) {
    ssize_t n = write(fd, content.data() + done, content.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int err = errno;
      close(fd);
      unlink(tmp.c_str());
      return absl::InternalError(absl::StrCat("cannot write ", tmp, ": ", strerror(err)));
    }
    done += static_cast<size_t>(n);
  }
  if (fchmod(fd, mode) != 0 || fsync(fd) != 0 || close(fd) != 0) {
    const int err = errno;
    unlink(tmp.c_str());
    return absl::InternalError(absl::StrCat("cannot finish ", tmp, ": ", strerror(err)));
  }
  if (rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    unlink(tmp.c_str());
    return absl::InternalError(absl::StrCat("cannot rename ", tmp, " to ", path, ": ", strerror(err)));
  }
  return absl::OkStatus();
}

absl::Status ValidateOptions(const EnrollOptions& o) {
  if (o.target.empty()) return Missing("--target (the enrollment listener, HOST:PORT)");
  if (absl::Status s = CheckHostPort(o.target); !s.ok())
    return absl::InvalidArgumentError(absl::StrCat("--target: ", s.message()));
  if (o.ca_file.empty()) return Missing("--ca (the deployment CA bundle)");
  if (o.trust_domain.empty()) return Missing("--trust-domain");
  if (!IsId(o.cluster))
    return absl::InvalidArgumentError("--cluster: required, an ID (the Local Slurm cluster)");
  if (!IsId(o.workload_id)) return absl::InvalidArgumentError("--workload-id: required, an ID");
  if (!IsId(o.global_job_id)) return absl::InvalidArgumentError("--global-job-id: required, an ID");
  if (!IsName(o.project)) return absl::InvalidArgumentError("--project: required, a NAME");
  if (o.ticket.empty())
    return Missing("the enrollment ticket (--ticket-file or the bundle's enrollmentTicket)");
  if (!IsHex64(o.ticket))
    return absl::InvalidArgumentError("the enrollment ticket: not 64 lower-case hex characters");
  if (o.rpc_timeout <= absl::ZeroDuration()) return absl::InvalidArgumentError("--timeout: must be positive");
  return absl::OkStatus();
}

absl::Status FillFromBundle(const std::string& bundle_json, const std::string& ca_out, EnrollOptions* o) {
  google::protobuf::Struct bundle;
  google::protobuf::util::JsonParseOptions parse;
  parse.ignore_unknown_fields = true;
  if (auto s = google::protobuf::util::JsonStringToMessage(bundle_json, &bundle, parse); !s.ok())
    return absl::InvalidArgumentError(absl::StrCat("the bundle is not a JSON object: ", s.ToString()));
  auto member = [&](const char* name, std::string* out) -> absl::Status {
    auto it = bundle.fields().find(name);
    if (it == bundle.fields().end() || !out->empty()) return absl::OkStatus();
    if (it->second.kind_case() != google::protobuf::Value::kStringValue)
      return absl::InvalidArgumentError(absl::StrCat("the bundle's ", name, ": not a string"));
    *out = it->second.string_value();
    return absl::OkStatus();
  };
  SR_RETURN_IF_ERROR(member("enrollmentAddress", &o->target));
  SR_RETURN_IF_ERROR(member("localCluster", &o->cluster));
  SR_RETURN_IF_ERROR(member("globalJobId", &o->global_job_id));
  SR_RETURN_IF_ERROR(member("project", &o->project));
  SR_RETURN_IF_ERROR(member("trustDomain", &o->trust_domain));
  SR_RETURN_IF_ERROR(member("enrollmentTicket", &o->ticket));
  if (o->ca_file.empty()) {
    std::string ca_pem;
    SR_RETURN_IF_ERROR(member("deploymentCaPem", &ca_pem));
    if (!ca_pem.empty()) {
      const size_t slash = ca_out.rfind('/');
      SR_RETURN_IF_ERROR(WriteFileAtomically(slash == std::string::npos ? "." : ca_out.substr(0, slash),
                                             ca_out.substr(slash + 1), ca_pem, 0644));
      o->ca_file = ca_out;
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<EnrolledWorkload> Enroll(const EnrollOptions& o) {
  SR_RETURN_IF_ERROR(ValidateOptions(o));
  const ServerExpectation expected{o.trust_domain, Role::kVmController, o.cluster};
  EnrolledWorkload out;

  // 1. The key, in memory; the CSR's subject is ignored by the CA (it writes the binding).
  SR_ASSIGN_OR_RETURN(EcKey key, EcKey::Generate());
  SR_ASSIGN_OR_RETURN(std::string csr, key.CsrPem(o.workload_id));
  SR_ASSIGN_OR_RETURN(out.key_pem, key.PrivatePem());
  auto held = std::make_shared<EcKey>(std::move(key));

  // 2. EnrollWorkload: no client certificate, the ticket authenticates.
  {
    SR_ASSIGN_OR_RETURN(std::shared_ptr<grpc::ChannelCredentials> creds,
                        MakeChannelCredentialsWithIdentity(o.ca_file, nullptr, expected));
    auto stub = v1::WorkloadEnrollment::NewStub(grpc::CreateChannel(o.target, creds));
    v1::EnrollWorkloadRequest request;
    request.set_workload_id(o.workload_id);
    request.set_global_job_id(o.global_job_id);
    request.set_project(o.project);
    request.set_csr_pem(csr);
    request.set_enrollment_ticket(o.ticket);
    v1::EnrollWorkloadResponse response;
    const absl::Time handover_deadline = absl::Now() + o.handover_wait;
    for (absl::Duration pause = absl::Milliseconds(25);; pause = std::min(pause * 2, absl::Seconds(1))) {
      absl::Status enrolled = Rpc(
          "EnrollWorkload", o.rpc_timeout, request, &response,
          [&](grpc::ClientContext* c, const auto& rq, auto* rs) { return stub->EnrollWorkload(c, rq, rs); });
      // Only NOT_FOUND: UNAVAILABLE includes a server certificate that is not vm-controller's, which is final.
      if (enrolled.ok() || !absl::IsNotFound(enrolled) || absl::Now() + pause > handover_deadline) {
        SR_RETURN_IF_ERROR(enrolled);
        break;
      }
      absl::SleepFor(pause);
    }
    if (response.certificate_pem().empty() || response.project_ca_pem().empty())
      return absl::InternalError("EnrollWorkload: the answer has no certificate_pem or project_ca_pem");
    // The certificate must be for this key's holder and chain to the CA it came with.
    SR_RETURN_IF_ERROR(
        Annotate(VerifyIssuedBy(response.certificate_pem(), response.project_ca_pem(), absl::Now()),
                 "EnrollWorkload: the issued certificate"));
    out.cert_pem = response.certificate_pem();
    out.project_ca_pem = response.project_ca_pem();
    out.not_after = absl::FromUnixSeconds(response.not_after().seconds());
  }

  // 3. GetProjectSecrets: the project certificate is the TLS client certificate.
  {
    const InMemoryIdentity identity{out.key_pem, out.cert_pem};
    SR_ASSIGN_OR_RETURN(std::shared_ptr<grpc::ChannelCredentials> creds,
                        MakeChannelCredentialsWithIdentity(o.ca_file, &identity, expected));
    auto stub = v1::WorkloadEnrollment::NewStub(grpc::CreateChannel(o.target, creds));
    v1::GetProjectSecretsRequest request;
    v1::GetProjectSecretsResponse response;
    SR_RETURN_IF_ERROR(Rpc("GetProjectSecrets", o.rpc_timeout, request, &response,
                           [&](grpc::ClientContext* c, const auto& rq, auto* rs) {
                             return stub->GetProjectSecrets(c, rq, rs);
                           }));
    out.munge_key = response.munge_key();
    out.nfs_server = response.nfs_server();
    out.nfs_export = response.nfs_export();
    out.ipsec_address = response.ipsec_address();
    out.nfs_mount_point = response.nfs_mount_point();
  }
  out.key = std::move(held);
  return out;
}

absl::Status WriteEnrollment(const EnrolledWorkload& e, const std::string& dir, bool write_key) {
  struct stat st;
  if (stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
    return absl::FailedPreconditionError(absl::StrCat("--out ", dir, ": not an existing directory"));
  if (!e.nfs_server.empty() && !SafeEnvValue(e.nfs_server))
    return absl::InvalidArgumentError("GetProjectSecrets: nfs_server has characters nfs.env cannot carry");
  if (!e.nfs_export.empty() && !SafeEnvValue(e.nfs_export))
    return absl::InvalidArgumentError("GetProjectSecrets: nfs_export has characters nfs.env cannot carry");
  if (!e.nfs_mount_point.empty() && (!SafeEnvValue(e.nfs_mount_point) || e.nfs_mount_point[0] != '/' ||
                                     absl::StrContains(e.nfs_mount_point, "..")))
    return absl::InvalidArgumentError(
        "GetProjectSecrets: nfs_mount_point is not an absolute path nfs.env can carry");
  if (write_key) SR_RETURN_IF_ERROR(WriteFileAtomically(dir, "key.pem", e.key_pem, 0600));
  SR_RETURN_IF_ERROR(WriteFileAtomically(dir, "cert.pem", e.cert_pem, 0644));
  SR_RETURN_IF_ERROR(WriteFileAtomically(dir, "project-ca.pem", e.project_ca_pem, 0644));
  if (!e.munge_key.empty()) SR_RETURN_IF_ERROR(WriteFileAtomically(dir, "munge.key", e.munge_key, 0400));
  SR_RETURN_IF_ERROR(
      WriteFileAtomically(dir, "nfs.env",
                          absl::StrCat("NFS_SERVER=", e.nfs_server, "\nNFS_EXPORT=", e.nfs_export,
                                       "\nNFS_MOUNT_POINT=", e.nfs_mount_point, "\n"),
                          0644));
  return absl::OkStatus();
}

}  // namespace strongroom::workload_enroll
