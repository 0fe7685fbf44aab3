// The provisioning inputs are computed once for every kind, and each driver delivers the same ones: the VM's
// workload.env and 9p shares say what the container's environment and bind mounts say for the same spec.
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "common/enrollment_ticket.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "services/host_agent/container/container_workload_driver.h"
#include "services/host_agent/provisioning.h"
#include "services/host_agent/vm/vm_driver.h"
#include "services/host_agent/vm/vm_workload_driver.h"

namespace strongroom::host_agent {
namespace {

v1::WorkloadSpec SpecWithEverything(const std::string& slurm_auth_uri) {
  v1::WorkloadSpec spec;
  spec.set_workload_id("wl-17");
  spec.mutable_provisioning()->set_node_name("n-17");
  spec.mutable_provisioning()->mutable_slurm_auth_ref()->set_uri(slurm_auth_uri);
  spec.mutable_job()->set_project("p1");
  spec.mutable_job()->mutable_user()->set_name("alice");
  spec.mutable_job()->mutable_user()->set_uid(1000);
  return spec;  // gid 0: "not known"
}

ProvisioningOptions Options() {
  ProvisioningOptions o;
  o.node = "node-a";
  o.project_shares = {{"p1", "/srv/projects/p1"}};
  return o;
}

TEST(ProvisioningInputs, OnceForEveryKindInTheDocumentedOrder) {
  absl::StatusOr<ProvisioningInputs> in =
      ResolveProvisioningInputs(SpecWithEverything("file:///etc/strongroom/munge/munge.key"), Options());
  ASSERT_TRUE(in.ok()) << in.status();
  const std::vector<std::pair<std::string, std::string>> expected = {
      {"STRONGROOM_WORKLOAD_ID", "wl-17"},
      {"STRONGROOM_NODE", "node-a"},
      {"STRONGROOM_PROVISIONING", "/run/strongroom/provisioning.json"},
      {"STRONGROOM_JOB_USER", "alice"},
      {"STRONGROOM_JOB_UID", "1000"},
      {"STRONGROOM_JOB_GID", ""},
      {"STRONGROOM_PROJECT_SHARE", "/srv/projects/p1"}};
  EXPECT_EQ(in->env, expected);
  EXPECT_TRUE(absl::StrContains(in->bundle_json, "\"nodeName\": \"n-17\"")) << in->bundle_json;
  EXPECT_EQ(in->slurm_auth_file, "/etc/strongroom/munge/munge.key");
  EXPECT_FALSE(in->slurm_auth_local);
  EXPECT_EQ(in->project_share, "/srv/projects/p1");

  v1::WorkloadSpec bare;
  bare.set_workload_id("wl-18");
  absl::StatusOr<ProvisioningInputs> none = ResolveProvisioningInputs(bare, Options());
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_EQ(none->env.size(), 2u);
  EXPECT_TRUE(none->bundle_json.empty());
  EXPECT_TRUE(none->slurm_auth_file.empty());
  EXPECT_TRUE(none->project_share.empty());

  EXPECT_EQ(
      ResolveProvisioningInputs(SpecWithEverything("file:///etc/../root/key"), Options()).status().code(),
      absl::StatusCode::kInvalidArgument);
  ProvisioningOptions local = Options();
  local.local_cluster_secrets_dir = "/nonexistent/secrets";
  EXPECT_EQ(ResolveProvisioningInputs(SpecWithEverything("vmc://c1/munge-key"), local).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(ResolveProvisioningInputs(SpecWithEverything("vmc://C_1/munge-key"), local).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// Issue 14: the one-time enrollment ticket goes into the bundle (which both kinds deliver) and nowhere else;
// only its SHA-256 is kept. The bundle stays one JSON object the entrypoint and strongroom-enroll can read.
TEST(ProvisioningInputs, TheEnrollmentTicketIsInTheBundleOnly) {
  v1::WorkloadSpec spec = SpecWithEverything("");
  spec.mutable_provisioning()->set_local_cluster("c1");
  spec.mutable_provisioning()->set_enrollment_address("198.51.100.11:7444");
  spec.mutable_job()->set_global_job_id("gj-17");
  absl::StatusOr<ProvisioningInputs> in = ResolveProvisioningInputs(spec, Options());
  ASSERT_TRUE(in.ok()) << in.status();
  const std::string ticket = *GenerateEnrollmentTicket();
  EnrollmentInputs e{ticket, "gj-17", "p1", "strongroom.test", "-----BEGIN CERTIFICATE-----\nAAA\n"};
  ASSERT_TRUE(AddEnrollmentInputs(e, &*in).ok());
  EXPECT_EQ(in->enrollment_ticket_sha256, EnrollmentTicketSha256(ticket));
  google::protobuf::Struct bundle;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(in->bundle_json, &bundle).ok()) << in->bundle_json;
  const auto& f = bundle.fields();
  EXPECT_EQ(f.at("enrollmentTicket").string_value(), ticket);
  EXPECT_EQ(f.at("globalJobId").string_value(), "gj-17");
  EXPECT_EQ(f.at("project").string_value(), "p1");
  EXPECT_EQ(f.at("trustDomain").string_value(), "strongroom.test");
  EXPECT_EQ(f.at("deploymentCaPem").string_value(), "-----BEGIN CERTIFICATE-----\nAAA\n");
  EXPECT_EQ(f.at("enrollmentAddress").string_value(), "198.51.100.11:7444");
  EXPECT_EQ(f.at("nodeName").string_value(), "n-17");
  // Not in the environment of either kind.
  for (const auto& [name, value] : in->env) EXPECT_FALSE(absl::StrContains(value, ticket)) << name;
  const VmProvisioning vm = VmProvisioningFor(*in);
  for (const auto& [name, value] : vm.env) EXPECT_FALSE(absl::StrContains(value, ticket)) << name;
  for (const std::string& kv : ContainerProvisioningFor(*in, "/b/p.json").env)
    EXPECT_FALSE(absl::StrContains(kv, ticket)) << kv;

  EnrollmentInputs bad = e;
  bad.ticket = "short";
  EXPECT_EQ(AddEnrollmentInputs(bad, &*in).code(), absl::StatusCode::kInvalidArgument);
  ProvisioningInputs no_bundle;
  EXPECT_EQ(AddEnrollmentInputs(e, &no_bundle).code(), absl::StatusCode::kFailedPrecondition);
}

TEST(ProvisioningInputs, AVmGetsWhatAContainerGetsForTheSameSpec) {
  // A development-mode munge key in local_cluster_secrets_dir, readable by container root.
  const std::string secrets = std::filesystem::temp_directory_path() / "sr-provisioning-unit-secrets";
  std::filesystem::create_directories(secrets + "/c1");
  std::ofstream(secrets + "/c1/munge-key") << "key";
  chmod((secrets + "/c1/munge-key").c_str(), 0444);
  ProvisioningOptions o = Options();
  o.local_cluster_secrets_dir = secrets;
  absl::StatusOr<ProvisioningInputs> in =
      ResolveProvisioningInputs(SpecWithEverything("vmc://c1/munge-key"), o);
  std::filesystem::remove_all(secrets);
  ASSERT_TRUE(in.ok()) << in.status();
  EXPECT_TRUE(in->slurm_auth_local);

  const ContainerProvisioning container =
      ContainerProvisioningFor(*in, "/state/workloads/wl-17/bundle/p.json");
  const VmProvisioning vm = VmProvisioningFor(*in);

  // Every STRONGROOM_* variable of the container is in workload.env with the same value, and nothing else is
  // but the munge key's name.
  std::map<std::string, std::string> container_env;
  for (const std::string& kv : container.env) {
    std::pair<std::string, std::string> p = absl::StrSplit(kv, absl::MaxSplits('=', 1));
    if (absl::StartsWith(p.first, "STRONGROOM_")) container_env.insert(p);
  }
  std::map<std::string, std::string> vm_env(vm.env.begin(), vm.env.end());
  EXPECT_EQ(vm_env.count("SR_SLURM_AUTH_FILE"), 1u);
  EXPECT_EQ(vm_env["SR_SLURM_AUTH_FILE"], "munge-key");
  vm_env.erase("SR_SLURM_AUTH_FILE");
  EXPECT_EQ(vm_env, container_env);
  EXPECT_EQ(container_env.size(), 7u);
  absl::StatusOr<std::string> file = vm::WorkloadEnvFile(vm.env);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_TRUE(absl::StrContains(*file, "STRONGROOM_PROJECT_SHARE='/srv/projects/p1'\n")) << *file;
  EXPECT_TRUE(absl::StrContains(*file, "SR_SLURM_AUTH_FILE='munge-key'\n")) << *file;

  // The container's binds and the VM's shares: the same host paths, the same access, never a copy of the key.
  std::map<std::string, BindMount> binds;
  for (const BindMount& b : container.binds) binds[b.destination] = b;
  std::map<std::string, vm::VmFilesystem> shares;
  for (const vm::VmFilesystem& f : vm.filesystems) shares[f.tag] = f;
  ASSERT_EQ(shares.size(), 2u);
  ASSERT_EQ(binds.count("/run/strongroom/slurm-auth"), 1u);
  ASSERT_EQ(binds.count("/srv/projects/p1"), 1u);
  const BindMount& key = binds["/run/strongroom/slurm-auth"];
  EXPECT_EQ(key.source, secrets + "/c1/munge-key");
  EXPECT_TRUE(key.read_only);
  EXPECT_EQ(shares[kSlurmAuthTag].host_dir, std::filesystem::path(key.source).parent_path().string());
  EXPECT_TRUE(shares[kSlurmAuthTag].read_only);
  const BindMount& share = binds["/srv/projects/p1"];
  EXPECT_EQ(shares[kProjectShareTag].host_dir, share.source);
  EXPECT_FALSE(share.read_only);
  EXPECT_FALSE(shares[kProjectShareTag].read_only);
  // The bundle: a read-only bind for the container, provisioning.json on the VM's config disk.
  ASSERT_EQ(binds.count("/run/strongroom/provisioning.json"), 1u);
  EXPECT_TRUE(binds["/run/strongroom/provisioning.json"].read_only);

  // Without the stand-ins, neither kind gets a share.
  ProvisioningOptions plain;
  plain.node = "node-a";
  v1::WorkloadSpec spec = SpecWithEverything("");
  absl::StatusOr<ProvisioningInputs> bare = ResolveProvisioningInputs(spec, plain);
  ASSERT_TRUE(bare.ok()) << bare.status();
  EXPECT_TRUE(VmProvisioningFor(*bare).filesystems.empty());
  EXPECT_EQ(ContainerProvisioningFor(*bare, "/b/p.json").binds.size(), 1u);  // the bundle only
}

}  // namespace
}  // namespace strongroom::host_agent
