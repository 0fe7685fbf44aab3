#include "services/host_agent/provisioning.h"

#include <sys/stat.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/enrollment_ticket.h"
#include "common/log.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "services/host_agent/data_path.h"
#include "services/host_agent/spec_validation.h"

namespace strongroom::host_agent {
namespace {

// The host file of the munge key ("" for none): a file:/// ref, or a vmc:// munge-key ref resolved in
// local_cluster_secrets_dir.
absl::StatusOr<std::string> SlurmAuthSource(const v1::WorkloadSpec& spec,
                                            const ProvisioningOptions& options) {
  const std::string& uri = spec.provisioning().slurm_auth_ref().uri();
  if (absl::StartsWith(uri, "file:///")) {
    if (uri.find("/..") != std::string::npos) {
      return absl::InvalidArgumentError(
          "provisioning.slurm_auth_ref: a file:/// path may not contain \"..\"");
    }
    return uri.substr(7);
  }
  constexpr absl::string_view kVmc = "vmc://";
  if (!absl::StartsWith(uri, kVmc) || options.local_cluster_secrets_dir.empty()) return std::string();
  // With the data path the entrypoint (container or VM) takes the key from vm-controller over its enrolled
  // channel: the development stand-in is not used, bound, logged or audited.
  if (spec.provisioning().ipsec_data_path()) return std::string();
  // vmc://<cluster>/munge-key, held for now in a node-local directory (a stand-in: in production the key
  // comes from the project's controlling VM).
  std::vector<std::string> parts = absl::StrSplit(uri.substr(kVmc.size()), '/');
  if (parts.size() != 2 || parts[1] != "munge-key") return std::string();  // another secret: vm-controller's
  if (!IsValidId(parts[0])) {
    return absl::InvalidArgumentError(
        absl::StrCat("provisioning.slurm_auth_ref: cluster \"", parts[0], "\" is not an ID"));
  }
  const std::string path = absl::StrCat(options.local_cluster_secrets_dir, "/", parts[0], "/munge-key");
  struct stat st;
  if (stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) {
    return absl::FailedPreconditionError(absl::StrCat("the munge key of local cluster ", parts[0], " (", uri,
                                                      ") is not on this node: ", path, " is missing"));
  }
  // Container root is host uid uid_base; capabilities do not reach files of unmapped owners.
  if (!((st.st_uid == options.uid_base && (st.st_mode & S_IRUSR) != 0) || (st.st_mode & S_IROTH) != 0)) {
    return absl::FailedPreconditionError(
        absl::StrCat("the munge key ", path, " is not readable by container root (host uid ",
                     options.uid_base, "): make it owned by that uid, mode 0400"));
  }
  return path;
}

}  // namespace

absl::StatusOr<ProvisioningInputs> ResolveProvisioningInputs(const v1::WorkloadSpec& spec,
                                                             const ProvisioningOptions& options) {
  ProvisioningInputs in;
  absl::StatusOr<std::string> slurm_auth = SlurmAuthSource(spec, options);
  if (!slurm_auth.ok()) return slurm_auth.status();
  const std::string& id = spec.workload_id();
  in.env.emplace_back("STRONGROOM_WORKLOAD_ID", id);
  in.env.emplace_back("STRONGROOM_NODE", options.node);
  if (spec.has_provisioning()) {
    google::protobuf::util::JsonPrintOptions jo;
    jo.add_whitespace = true;
    (void)google::protobuf::util::MessageToJsonString(spec.provisioning(), &in.bundle_json, jo);
    in.env.emplace_back("STRONGROOM_PROVISIONING", kProvisioningPath);
    in.slurm_auth_file = *slurm_auth;
    in.slurm_auth_local = !in.slurm_auth_file.empty() && !options.local_cluster_secrets_dir.empty() &&
                          absl::StartsWith(in.slurm_auth_file, options.local_cluster_secrets_dir + "/");
  }
  if (const v1::UserRef& user = spec.job().user(); !user.name().empty()) {
    // The entrypoint creates this user (and group) unless its uid exists: the job's slurmstepd needs a
    // passwd entry. An empty gid means "not known".
    in.env.emplace_back("STRONGROOM_JOB_USER", user.name());
    in.env.emplace_back("STRONGROOM_JOB_UID", absl::StrCat(user.uid()));
    in.env.emplace_back("STRONGROOM_JOB_GID", user.gid() == 0 ? std::string() : absl::StrCat(user.gid()));
  }
  auto share = options.project_shares.find(spec.job().project());
  const bool development_share = !spec.job().project().empty() && share != options.project_shares.end();
  absl::StatusOr<DataPathShare> data_path_share =
      DecideDataPathShare(spec, development_share, options.kernel_has_nfs_client);
  if (!data_path_share.ok()) return data_path_share.status();
  if (development_share) {
    in.project_share = share->second;
    in.env.emplace_back("STRONGROOM_PROJECT_SHARE", in.project_share);
  }
  in.share_over_nfs = *data_path_share == DataPathShare::kNfsOnRequest;
  return in;
}

absl::Status AddEnrollmentInputs(const EnrollmentInputs& e, ProvisioningInputs* inputs) {
  if (!IsHex64(e.ticket))
    return absl::InvalidArgumentError("enrollment ticket: not 64 lower-case hex characters");
  // The bundle is the ProvisioningBundle's JSON; these become more members of it.
  google::protobuf::Struct bundle;
  if (inputs->bundle_json.empty() ||
      !google::protobuf::util::JsonStringToMessage(inputs->bundle_json, &bundle).ok())
    return absl::FailedPreconditionError("enrollment ticket: the workload has no provisioning bundle");
  for (const auto& [name, value] :
       {std::pair<const char*, const std::string&>{"globalJobId", e.global_job_id},
        {"project", e.project},
        {"trustDomain", e.trust_domain},
        {"deploymentCaPem", e.deployment_ca_pem},
        {"enrollmentTicket", e.ticket}}) {
    if (!value.empty()) (*bundle.mutable_fields())[name].set_string_value(value);
  }
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  inputs->bundle_json.clear();
  if (!google::protobuf::util::MessageToJsonString(bundle, &inputs->bundle_json, options).ok())
    return absl::InternalError("enrollment ticket: cannot print the bundle");
  inputs->enrollment_ticket_sha256 = EnrollmentTicketSha256(e.ticket);
  return absl::OkStatus();
}

void AnnounceDevelopmentInputs(const std::string& workload_id, const ProvisioningInputs& inputs,
                               const std::string& agent_id, AuditSink& audit) {
  if (inputs.slurm_auth_local) {
    // Issue 14: in production the munge key comes from vm-controller over the enrolled channel, never from a
    // file on the compute host.
    Log(LogLevel::kWarn,
        "!!! DEVELOPMENT MODE (local_cluster_secrets_dir): the Local Slurm munge key is read from a file on "
        "this compute host; anyone who can read it can forge Local Slurm credentials. Never use this in "
        "production !!!",
        {{"workload", workload_id}, {"path", inputs.slurm_auth_file}});
    audit.Record({agent_id, "host-agent.dev_local_munge_key", "workload/" + workload_id, "OK",
                  "local_cluster_secrets_dir is set; the munge key comes from the compute host"});
  }
  if (!inputs.project_share.empty()) {
    // The stand-in for the project's NFS-over-IPsec mount: where a job's output returns.
    Log(LogLevel::kWarn,
        "!!! DEVELOPMENT MODE (project_shares): the project's data is a directory on this compute host, "
        "readable by the host; in production it is an NFS mount through the workload's IPsec tunnel !!!",
        {{"workload", workload_id}, {"path", inputs.project_share}});
    audit.Record({agent_id, "host-agent.dev_project_share", "workload/" + workload_id, "OK",
                  "project_shares is set; project data is bound from the compute host"});
  }
}

}  // namespace strongroom::host_agent
