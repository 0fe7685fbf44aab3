#include "services/host_agent/spec_validation.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "common/config.h"
#include "common/field_rules.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"

namespace strongroom::host_agent {
namespace {

constexpr uint64_t kMiB = uint64_t{1} << 20;
constexpr uint64_t kMinScratch = uint64_t{1} << 26;  // 64 MiB
constexpr uint64_t kMaxScratch = uint64_t{1} << 44;  // 16 TiB
constexpr uint64_t kMaxMemory = uint64_t{1} << 46;   // 64 TiB
constexpr uint32_t kMaxCpus = 4096;
constexpr int kMaxEgress = 1024;
constexpr int kMaxIngress = 64;
constexpr size_t kMaxFeatures = 16;

bool LowerAlnum(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }

absl::Status Invalid(absl::string_view field, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat("spec.", field, ": ", why));
}

std::string Serialize(const v1::WorkloadSpec& spec) {
  std::string out;
  google::protobuf::io::StringOutputStream stream(&out);
  google::protobuf::io::CodedOutputStream coded(&stream);
  coded.SetSerializationDeterministic(true);
  spec.SerializeToCodedStream(&coded);
  coded.Trim();
  return out;
}

absl::Status CheckRules(const v1::WorkloadSpec& spec) {
  if (spec.egress_allowlist_size() > kMaxEgress) {
    return Invalid("egress_allowlist",
                   absl::StrCat(spec.egress_allowlist_size(), " rules; at most ", kMaxEgress));
  }
  if (spec.ingress_allowlist_size() > kMaxIngress) {
    return Invalid("ingress_allowlist",
                   absl::StrCat(spec.ingress_allowlist_size(), " rules; at most ", kMaxIngress));
  }
  // Address syntax and semantics are netd's to judge (it owns the pool); ports are checked here so an
  // obviously bad rule is refused before anything is created.
  for (int i = 0; i < spec.egress_allowlist_size(); ++i) {
    const auto& r = spec.egress_allowlist(i);
    if (r.port_start() < 1 || r.port_start() > 65535 || r.port_end() > 65535 ||
        (r.port_end() != 0 && r.port_end() < r.port_start())) {
      return Invalid(absl::StrCat("egress_allowlist[", i, "]"),
                     "ports must satisfy 1 <= start <= end <= 65535");
    }
    if (r.protocol() == v1::PROTOCOL_UNSPECIFIED) {
      return Invalid(absl::StrCat("egress_allowlist[", i, "].protocol"), "required (TCP or UDP)");
    }
  }
  for (int i = 0; i < spec.ingress_allowlist_size(); ++i) {
    const auto& r = spec.ingress_allowlist(i);
    if (r.port_start() < 1 || r.port_start() > 65535 || r.port_end() > 65535 ||
        (r.port_end() != 0 && r.port_end() < r.port_start())) {
      return Invalid(absl::StrCat("ingress_allowlist[", i, "]"),
                     "ports must satisfy 1 <= start <= end <= 65535");
    }
    if (r.protocol() == v1::PROTOCOL_UNSPECIFIED) {
      return Invalid(absl::StrCat("ingress_allowlist[", i, "].protocol"), "required (TCP or UDP)");
    }
  }
  return absl::OkStatus();
}

absl::Status CheckProvisioning(const v1::ProvisioningBundle& p) {
  if (!IsValidId(p.local_cluster())) return Invalid("provisioning.local_cluster", "must be an ID");
  if (!p.node_name().empty() && !IsValidId(p.node_name())) {
    return Invalid("provisioning.node_name", "must be an ID");
  }
  if (p.slurmctld_addresses_size() < 1 || p.slurmctld_addresses_size() > 4) {
    return Invalid("provisioning.slurmctld_addresses", "1 to 4 entries");
  }
  for (const std::string& a : p.slurmctld_addresses()) {
    if (a.empty() || a.size() > 260 || a.find_first_of(" /\n\t\"'\\") != std::string::npos ||
        a.find(':') == std::string::npos) {
      return Invalid("provisioning.slurmctld_addresses",
                     absl::StrCat("\"", QuoteValue(a), "\" is not host:port"));
    }
  }
  if (static_cast<size_t>(p.features_size()) > kMaxFeatures) {
    return Invalid("provisioning.features", "at most 16");
  }
  for (const std::string& f : p.features()) {
    bool ok = !f.empty() && f.size() <= 63;
    for (char c : f) ok = ok && (LowerAlnum(c) || (c >= 'A' && c <= 'Z') || c == '_' || c == '.' || c == '-');
    if (!ok)
      return Invalid("provisioning.features", absl::StrCat("\"", QuoteValue(f), "\" is not a feature"));
  }
  if (p.slurmd_port() > 65535) return Invalid("provisioning.slurmd_port", "1 to 65535");
  if (p.slurm_auth_ref().uri().size() > 1024) return Invalid("provisioning.slurm_auth_ref.uri", "too long");
  const std::string& socket = p.munge_socket();
  if (!socket.empty() && (socket[0] != '/' || socket.size() > 255 || socket.find("..") != std::string::npos ||
                          socket.find_first_of(" \n\t\"'\\") != std::string::npos)) {
    return Invalid("provisioning.munge_socket", "must be an absolute path of at most 255 bytes without \"..\"");
  }
  if (absl::string_view a = p.enrollment_address(); !a.empty() && !CheckHostPort(a).ok()) {
    return Invalid("provisioning.enrollment_address",
                   absl::StrCat("\"", QuoteValue(std::string(a)), "\" is not HOST:PORT"));
  }
  if (p.ipsec_data_path() && p.enrollment_address().empty()) {
    // The workload enrolls there for its certificate, its munge key and its share (docs/IPSEC.md). A VM
    // workload with the data path is accepted as well: its guest sets the tunnel and the mount up itself.
    return Invalid("provisioning.enrollment_address", "required with provisioning.ipsec_data_path");
  }
  return absl::OkStatus();
}

}  // namespace

bool IsValidId(absl::string_view id) { return ::strongroom::IsId(id); }  // common/field_rules.h

bool IsValidImageName(absl::string_view name) {
  if (name.empty() || name.size() > 128 || !LowerAlnum(name[0])) return false;
  for (char c : name) {
    if (!LowerAlnum(c) && c != '.' && c != '_' && c != '-') return false;
  }
  return name.find("..") == absl::string_view::npos;
}

absl::Status ValidateSpec(const v1::WorkloadSpec& spec, const NodeLimits& limits) {
  if (!IsValidId(spec.workload_id())) {
    return Invalid("workload_id", absl::StrCat("\"", QuoteValue(spec.workload_id()),
                                               "\" is not an ID (^[a-z0-9][a-z0-9-]{0,62}$)"));
  }
  switch (spec.kind()) {
    case v1::WORKLOAD_KIND_CONTAINER:
      break;
    case v1::WORKLOAD_KIND_VM:  // whether this node runs VMs is the manager's check (vm_libvirt_uri)
      break;
    default:
      return Invalid("kind", "required (WORKLOAD_KIND_CONTAINER or WORKLOAD_KIND_VM)");
  }
  if (!IsValidImageName(spec.image().name())) {
    return Invalid("image.name",
                   absl::StrCat("\"", QuoteValue(spec.image().name()),
                                "\" is not a catalog name (^[a-z0-9][a-z0-9._-]{0,127}$, no \"..\")"));
  }
  const std::string& digest = spec.image().digest();
  if (!digest.empty()) {
    bool ok = digest.size() == 71 && digest.rfind("sha256:", 0) == 0;
    for (size_t i = 7; ok && i < digest.size(); ++i) {
      ok = (digest[i] >= '0' && digest[i] <= '9') || (digest[i] >= 'a' && digest[i] <= 'f');
    }
    if (!ok) return Invalid("image.digest", "must be sha256: followed by 64 lower-case hex digits");
  }
  const v1::Resources& r = spec.resources();
  if (r.cpus() > kMaxCpus)
    return Invalid("resources.cpus", absl::StrCat(r.cpus(), " is not in 0..", kMaxCpus));
  if (r.memory_bytes() > kMaxMemory) {
    return Invalid("resources.memory_bytes", absl::StrCat(r.memory_bytes(), " is above 2^46 (64 TiB)"));
  }
  if (r.nodes() > 1024) return Invalid("resources.nodes", absl::StrCat(r.nodes(), " is not in 0..1024"));
  if (r.gpus() > 64) return Invalid("resources.gpus", absl::StrCat(r.gpus(), " is not in 0..64"));
  if (r.time_limit().seconds() < 0 || r.time_limit().nanos() < 0) {
    return Invalid("resources.time_limit", "negative durations are refused");
  }
  if (spec.job().global_job_id().size() > 0 && !IsValidId(spec.job().global_job_id())) {
    return Invalid("job.global_job_id", "must be an ID");
  }
  if (const v1::UserRef& u = spec.job().user(); !u.name().empty() || u.uid() != 0) {
    // The entrypoint creates this user inside the container: a strict name, never root.
    const std::string& n = u.name();
    const bool name_ok = !n.empty() && n.size() <= 32 && (n[0] == '_' || (n[0] >= 'a' && n[0] <= 'z')) &&
                         n.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789_.-") == std::string::npos;
    if (!name_ok) return Invalid("job.user.name", "must match ^[a-z_][a-z0-9_.-]{0,31}$");
    if (u.uid() == 0 || u.uid() > 4294967293u) return Invalid("job.user.uid", "1 to 4294967293 (never root)");
    if (u.gid() > 4294967293u) return Invalid("job.user.gid", "0 to 4294967293");
  }
  const uint64_t scratch = spec.scratch().size_bytes();
  if (scratch != 0 && (scratch < kMinScratch || scratch > kMaxScratch)) {
    return Invalid("scratch.size_bytes", absl::StrCat(scratch, " is not in 64 MiB..16 TiB"));
  }
  if (spec.scratch().encryption() < 0 || spec.scratch().encryption() > v1::SCRATCH_ENCRYPTION_NONE) {
    return Invalid("scratch.encryption", "unknown value");
  }
  if (absl::Status s = CheckRules(spec); !s.ok()) return s;
  if (spec.has_provisioning()) {
    if (absl::Status s = CheckProvisioning(spec.provisioning()); !s.ok()) return s;
  }
  // Well-formed; now what this node and this version can do.
  if (r.nodes() > 1) {
    return absl::FailedPreconditionError(
        absl::StrCat("spec.resources.nodes: ", r.nodes(), " nodes; the v1 exclusive path runs exactly 1"));
  }
  if (r.gpus() > 0)
    return absl::FailedPreconditionError("spec.resources.gpus: GPU passthrough is not supported in v1");
  if (!spec.whole_node() && (r.cpus() == 0 || r.memory_bytes() == 0)) {
    return Invalid("resources", "cpus and memory_bytes are required unless whole_node is set");
  }
  if (limits.cpus != 0 && r.cpus() > limits.cpus) {
    return absl::FailedPreconditionError(
        absl::StrCat("spec.resources.cpus: ", r.cpus(), " asked, this node has ", limits.cpus));
  }
  if (limits.memory_bytes != 0 && r.memory_bytes() > limits.memory_bytes) {
    return absl::FailedPreconditionError(absl::StrCat("spec.resources.memory_bytes: ", r.memory_bytes(),
                                                      " asked, this node has ", limits.memory_bytes));
  }
  if (limits.scratch_max_bytes != 0 && scratch > limits.scratch_max_bytes) {
    return absl::FailedPreconditionError(absl::StrCat(
        "spec.scratch.size_bytes: ", scratch, " is above this node's maximum ", limits.scratch_max_bytes));
  }
  return absl::OkStatus();
}

uint64_t EffectiveScratchBytes(const v1::WorkloadSpec& spec, uint64_t default_bytes) {
  uint64_t size = spec.scratch().size_bytes() != 0 ? spec.scratch().size_bytes() : default_bytes;
  return (size + kMiB - 1) / kMiB * kMiB;
}

bool SameSpec(const v1::WorkloadSpec& a, const v1::WorkloadSpec& b) { return Serialize(a) == Serialize(b); }

}  // namespace strongroom::host_agent
