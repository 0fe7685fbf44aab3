// host-agent pure logic: spec validation, the state machine, config.json generation, the Apptainer command
// line (the only test the Apptainer driver has: Apptainer cannot be installed here), the tracking DB and
// SecureKey.
#include <sys/mman.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/config.h"
#include "gtest/gtest.h"
#include "services/host_agent/agent_config.h"
#include "services/host_agent/container/apptainer.h"
#include "services/host_agent/container/netns.h"
#include "services/host_agent/container/oci_config.h"
#include "services/host_agent/container/secure_key.h"
#include "services/host_agent/spec_validation.h"
#include "services/host_agent/state_machine.h"
#include "services/host_agent/store.h"
#include "tests/host_agent/test_env.h"

namespace strongroom::host_agent {
namespace {

v1::WorkloadSpec Valid() {
  v1::WorkloadSpec s;
  s.set_workload_id("wl-1");
  s.set_kind(v1::WORKLOAD_KIND_CONTAINER);
  s.mutable_image()->set_name("debian-12.slurm");
  s.set_whole_node(true);
  return s;
}

const NodeLimits kNode{64, uint64_t{256} << 30, uint64_t{1} << 40};

TEST(SpecValidation, AcceptsAMinimalWholeNodeSpec) { EXPECT_TRUE(ValidateSpec(Valid(), kNode).ok()); }

TEST(SpecValidation, RefusesEachBadFieldWithItsName) {
  struct Case {
    std::function<void(v1::WorkloadSpec&)> mutate;
    absl::StatusCode code;
    std::string field;
  };
  const std::vector<Case> cases = {
      {[](auto& s) { s.set_workload_id(""); }, absl::StatusCode::kInvalidArgument, "workload_id"},
      {[](auto& s) { s.set_workload_id("a/../b"); }, absl::StatusCode::kInvalidArgument, "workload_id"},
      {[](auto& s) { s.set_workload_id(std::string(64, 'a')); }, absl::StatusCode::kInvalidArgument,
       "workload_id"},
      {[](auto& s) { s.set_kind(v1::WORKLOAD_KIND_UNSPECIFIED); }, absl::StatusCode::kInvalidArgument,
       "kind"},
      {[](auto& s) { s.set_kind(v1::WORKLOAD_KIND_UNSPECIFIED); }, absl::StatusCode::kInvalidArgument, "kind"},
      {[](auto& s) { s.mutable_image()->set_name(""); }, absl::StatusCode::kInvalidArgument, "image.name"},
      {[](auto& s) { s.mutable_image()->set_name("../etc"); }, absl::StatusCode::kInvalidArgument,
       "image.name"},
      {[](auto& s) { s.mutable_image()->set_name("a/b"); }, absl::StatusCode::kInvalidArgument, "image.name"},
      {[](auto& s) { s.mutable_image()->set_name("a..b"); }, absl::StatusCode::kInvalidArgument,
       "image.name"},
      {[](auto& s) { s.mutable_image()->set_digest("md5:1"); }, absl::StatusCode::kInvalidArgument, "digest"},
      {[](auto& s) { s.mutable_resources()->set_cpus(5000); }, absl::StatusCode::kInvalidArgument, "cpus"},
      {[](auto& s) { s.mutable_resources()->set_memory_bytes(uint64_t{1} << 47); },
       absl::StatusCode::kInvalidArgument, "memory_bytes"},
      {[](auto& s) { s.mutable_resources()->set_nodes(2); }, absl::StatusCode::kFailedPrecondition, "nodes"},
      {[](auto& s) { s.mutable_resources()->set_gpus(1); }, absl::StatusCode::kFailedPrecondition, "gpus"},
      {[](auto& s) { s.mutable_resources()->set_cpus(128); }, absl::StatusCode::kFailedPrecondition, "cpus"},
      {[](auto& s) { s.mutable_resources()->mutable_time_limit()->set_seconds(-1); },
       absl::StatusCode::kInvalidArgument, "time_limit"},
      {[](auto& s) { s.mutable_scratch()->set_size_bytes(1 << 20); }, absl::StatusCode::kInvalidArgument,
       "scratch.size_bytes"},
      {[](auto& s) { s.mutable_scratch()->set_size_bytes(uint64_t{1} << 42); },
       absl::StatusCode::kFailedPrecondition, "scratch.size_bytes"},
      {[](auto& s) { s.set_whole_node(false); }, absl::StatusCode::kInvalidArgument, "resources"},
      {[](auto& s) {
         for (int i = 0; i < 1025; ++i) s.add_egress_allowlist()->set_port_start(1);
       },
       absl::StatusCode::kInvalidArgument, "egress_allowlist"},
      {[](auto& s) {
         auto* r = s.add_egress_allowlist();
         r->set_protocol(v1::PROTOCOL_TCP);
         r->set_port_start(70000);
       },
       absl::StatusCode::kInvalidArgument, "egress_allowlist[0]"},
      {[](auto& s) { s.mutable_provisioning()->set_local_cluster("Bad Cluster"); },
       absl::StatusCode::kInvalidArgument, "provisioning.local_cluster"},
      // The job user reaches the entrypoint's useradd: a strict name, never root.
      {[](auto& s) {
         s.mutable_job()->mutable_user()->set_name("alice;rm -rf /");
         s.mutable_job()->mutable_user()->set_uid(1000);
       },
       absl::StatusCode::kInvalidArgument, "job.user.name"},
      {[](auto& s) {
         s.mutable_job()->mutable_user()->set_name("-alice");
         s.mutable_job()->mutable_user()->set_uid(1000);
       },
       absl::StatusCode::kInvalidArgument, "job.user.name"},
      {[](auto& s) { s.mutable_job()->mutable_user()->set_uid(1000); }, absl::StatusCode::kInvalidArgument,
       "job.user.name"},
      {[](auto& s) { s.mutable_job()->mutable_user()->set_name("root"); }, absl::StatusCode::kInvalidArgument,
       "job.user.uid"},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    v1::WorkloadSpec s = Valid();
    cases[i].mutate(s);
    absl::Status st = ValidateSpec(s, kNode);
    EXPECT_EQ(st.code(), cases[i].code) << "case " << i << ": " << st;
    EXPECT_TRUE(absl::StrContains(st.message(), cases[i].field)) << "case " << i << ": " << st;
  }
}

TEST(SpecValidation, AcceptsAJobUser) {
  v1::WorkloadSpec s = Valid();
  s.mutable_job()->mutable_user()->set_name("nobody");
  s.mutable_job()->mutable_user()->set_uid(65534);
  s.mutable_job()->mutable_user()->set_gid(65534);
  EXPECT_TRUE(ValidateSpec(s, kNode).ok());
  s.mutable_job()->mutable_user()->set_name("_svc.job-1");
  s.mutable_job()->mutable_user()->set_gid(0);  // "not known"
  EXPECT_TRUE(ValidateSpec(s, kNode).ok());
}

TEST(SpecValidation, ScratchSizeAndSameSpec) {
  v1::WorkloadSpec s = Valid();
  EXPECT_EQ(EffectiveScratchBytes(s, 1 << 30), uint64_t{1} << 30);
  s.mutable_scratch()->set_size_bytes((64 << 20) + 1);
  EXPECT_EQ(EffectiveScratchBytes(s, 1 << 30), uint64_t{65} << 20);
  v1::WorkloadSpec a = Valid(), b = Valid();
  EXPECT_TRUE(SameSpec(a, b));
  b.mutable_image()->set_name("other");
  EXPECT_FALSE(SameSpec(a, b));
}

TEST(StateMachine, AllowsOnlyTheDocumentedTransitions) {
  using S = v1::WorkloadState;
  EXPECT_TRUE(CheckTransition(S::WORKLOAD_STATE_UNSPECIFIED, S::WORKLOAD_STATE_STARTING).ok());
  EXPECT_TRUE(CheckTransition(S::WORKLOAD_STATE_STARTING, S::WORKLOAD_STATE_RUNNING).ok());
  EXPECT_TRUE(CheckTransition(S::WORKLOAD_STATE_STARTING, S::WORKLOAD_STATE_FAILED).ok());
  EXPECT_TRUE(CheckTransition(S::WORKLOAD_STATE_RUNNING, S::WORKLOAD_STATE_STOPPING).ok());
  EXPECT_TRUE(CheckTransition(S::WORKLOAD_STATE_STOPPING, S::WORKLOAD_STATE_STOPPED).ok());
  EXPECT_TRUE(CheckTransition(S::WORKLOAD_STATE_STOPPING, S::WORKLOAD_STATE_FAILED).ok());
  EXPECT_FALSE(CheckTransition(S::WORKLOAD_STATE_STOPPED, S::WORKLOAD_STATE_RUNNING).ok());
  EXPECT_FALSE(CheckTransition(S::WORKLOAD_STATE_FAILED, S::WORKLOAD_STATE_STOPPED).ok());
  EXPECT_FALSE(CheckTransition(S::WORKLOAD_STATE_RUNNING, S::WORKLOAD_STATE_STOPPED).ok());
  EXPECT_FALSE(CheckTransition(S::WORKLOAD_STATE_RUNNING, S::WORKLOAD_STATE_STARTING).ok());
  EXPECT_TRUE(IsTerminal(S::WORKLOAD_STATE_STOPPED));
  EXPECT_FALSE(IsTerminal(S::WORKLOAD_STATE_STOPPING));
}

ContainerParams Params() {
  ContainerParams p;
  p.id = "wl-1";
  p.rootfs = "/var/lib/strongroom/host-agent/workloads/wl-1/rootfs";
  p.args = {"/usr/libexec/strongroom/entrypoint"};
  p.env = {"A=\"quoted\""};
  p.hostname = "wl-1";
  p.netns_path = "/run/netns/sr-wl-1";
  p.uid_base = 100000;
  p.uid_count = 65536;
  p.binds = {{"/x/provisioning.json", "/run/strongroom/provisioning.json", true}};
  p.image_path = "/images/debian";
  p.overlay_dir = "/scratch/upper";
  return p;
}

TEST(OciConfig, FakerootMinimalCapabilitiesAndHardening) {
  const std::string json = BuildOciConfig(Params());
  EXPECT_TRUE(
      absl::StrContains(json, "\"uidMappings\":[{\"containerID\":0,\"hostID\":100000,\"size\":65536}]"));
  EXPECT_TRUE(
      absl::StrContains(json, "\"gidMappings\":[{\"containerID\":0,\"hostID\":100000,\"size\":65536}]"));
  EXPECT_TRUE(absl::StrContains(json, "{\"type\":\"user\"}"));
  EXPECT_TRUE(absl::StrContains(json, "{\"type\":\"network\",\"path\":\"/run/netns/sr-wl-1\"}"));
  EXPECT_TRUE(absl::StrContains(json, "\"noNewPrivileges\":true"));
  EXPECT_TRUE(absl::StrContains(json, "\"defaultAction\":\"SCMP_ACT_ALLOW\""));
  EXPECT_TRUE(absl::StrContains(json, "\"kexec_load\""));
  EXPECT_TRUE(absl::StrContains(json, "\"maskedPaths\":[\"/proc/acpi\""));
  EXPECT_TRUE(absl::StrContains(json, "\"readonlyPaths\":[\"/proc/bus\""));
  EXPECT_TRUE(absl::StrContains(json, "\"A=\\\"quoted\\\"\""));  // escaped
  EXPECT_FALSE(absl::StrContains(json, "CAP_SYS_ADMIN"));
  EXPECT_FALSE(absl::StrContains(json, "CAP_NET_ADMIN"));
  EXPECT_TRUE(absl::StrContains(json, "\"ambient\":[]"));
  for (const KeptCapability& c : KeptCapabilities()) {
    EXPECT_TRUE(absl::StrContains(json, c.name)) << c.name;
    EXPECT_FALSE(c.reason.empty()) << c.name << " has no reason";
  }
  EXPECT_EQ(KeptCapabilityMask(), 0xfbULL);  // CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID SETUID
  EXPECT_TRUE(absl::StrContains(json, "\"resources\":{}"));  // whole node: no limits
  ContainerParams limited = Params();
  limited.whole_node = false;
  limited.cpus = 2;
  limited.memory_bytes = 1 << 30;
  EXPECT_TRUE(absl::StrContains(BuildOciConfig(limited), "\"memory\":{\"limit\":1073741824}"));
  EXPECT_TRUE(absl::StrContains(BuildOciConfig(limited), "\"quota\":200000"));
}

TEST(Apptainer, StartCommandLine) {
  ApptainerParams a;
  const std::vector<std::string> argv = ApptainerStartArgv(a, Params());
  const std::string line = absl::StrJoin(argv, " ");
  EXPECT_EQ(argv[0], "/usr/bin/nsenter");
  EXPECT_EQ(argv[1], "--net=/run/netns/sr-wl-1");
  EXPECT_TRUE(absl::StrContains(line,
                                "/usr/bin/apptainer instance start --fakeroot --contain --cleanenv --no-home "
                                "--overlay /scratch/upper --hostname wl-1 --drop-caps "))
      << line;
  EXPECT_TRUE(absl::StrContains(line, "--bind /x/provisioning.json:/run/strongroom/provisioning.json:ro"))
      << line;
  EXPECT_TRUE(absl::EndsWith(line, "/images/debian wl-1 /usr/libexec/strongroom/entrypoint")) << line;
  EXPECT_FALSE(absl::StrContains(line, "--network=none"));  // netd's netns is shared instead
  const std::string dropped = ApptainerDroppedCaps();
  EXPECT_TRUE(absl::StrContains(dropped, "CAP_SYS_ADMIN"));
  EXPECT_TRUE(absl::StrContains(dropped, "CAP_NET_ADMIN"));
  EXPECT_FALSE(absl::StrContains(dropped, "CAP_SETUID"));
  EXPECT_FALSE(absl::StrContains(dropped, "CAP_CHOWN,"));

  ContainerParams isolated = Params();
  isolated.netns_path.clear();
  const std::string iso = absl::StrJoin(ApptainerStartArgv(a, isolated), " ");
  EXPECT_TRUE(absl::StartsWith(iso, "/usr/bin/apptainer instance start"));
  EXPECT_TRUE(absl::StrContains(iso, "--net --network=none")) << iso;
  EXPECT_EQ(absl::StrJoin(ApptainerStopArgv(a, "wl-1", 15), " "),
            "/usr/bin/apptainer instance stop --signal 15 wl-1");
}

TEST(Netns, NamesFitNetdsLimit) {
  EXPECT_EQ(NetnsNameFor("wl-1"), "sr-wl-1");
  const std::string long_id(63, 'a');
  EXPECT_LE(NetnsNameFor(long_id).size(), 64u);
  EXPECT_NE(NetnsNameFor(long_id), NetnsNameFor(std::string(62, 'a') + "b"));
}

TEST(Store, RoundTripsEveryColumnInWalMode) {
  char tmpl[] = "/tmp/sr-ha-store-XXXXXX";
  const std::string dir = mkdtemp(tmpl);
  {
    auto store = Store::Open(dir + "/w.db");
    ASSERT_TRUE(store.ok()) << store.status();
    TrackedWorkload w;
    *w.record.mutable_spec() = Valid();
    w.record.set_state(v1::WORKLOAD_STATE_RUNNING);
    w.record.set_revision(3);
    w.resources = {"/d", "sr-wl-1", "sr0123", 7, "/dev/loop3", "strongroom-wl-1", "", "/d/scratch\n/d/rootfs",
                   4242, 99,        "running"};
    ASSERT_TRUE((*store)->Put(w).ok());
    auto got = (*store)->Get("wl-1");
    ASSERT_TRUE(got.ok());
    EXPECT_EQ(got->record.revision(), 3u);
    EXPECT_EQ(got->resources.scratch_loop, "/dev/loop3");
    EXPECT_EQ(got->resources.mounts, "/d/scratch\n/d/rootfs");
    EXPECT_EQ(got->resources.init_pid, 4242);
    EXPECT_EQ(got->resources.netd_generation, 7u);
    EXPECT_EQ((*store)->Get("nope").status().code(), absl::StatusCode::kNotFound);
    EXPECT_EQ((*store)->List()->size(), 1u);
  }
  EXPECT_TRUE(std::filesystem::exists(dir + "/w.db"));
  std::filesystem::remove_all(dir);
}

TEST(SecureKey, RandomLockedAndWiped) {
  auto a = SecureKey::Generate(64);
  auto b = SecureKey::Generate(64);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_NE(std::string(a->data(), 64), std::string(b->data(), 64));
  unsigned char vec = 0;
  ASSERT_EQ(mincore(const_cast<char*>(a->data()), 1, &vec), 0);
  EXPECT_TRUE(vec & 1);  // resident (locked)
  a->Wipe();
  EXPECT_EQ(std::string(a->data(), 64), std::string(64, '\0'));
}

// HostAgentConfig checks of the fields reports and provisioning added (errors name the field).
TEST(Config, BackendSecretsDirProjectSharesAndUidCount) {
  const std::string dir = testing::MakeTempDir("sr-ha-config");
  std::filesystem::create_directories(dir + "/share");
  const std::string base = absl::StrCat("state_dir: \"", dir, "/state\"\nimage_root: \"", dir, "/images\"\n");
  auto check = [&](const std::string& extra) {
    const std::string path = dir + "/agent.textproto";
    std::ofstream(path) << base << extra;
    v1::HostAgentConfig config;
    absl::StatusOr<std::unique_ptr<ConfigSource>> source = LoadTextprotoFile(path, &config);
    if (!source.ok()) return source.status();
    return ValidateConfig(config, **source);
  };
  EXPECT_TRUE(check("").ok());
  EXPECT_TRUE(
      check(absl::StrCat("backend_address: \"10.0.0.1:7443\"\nbackend_tls { ca_file: \"/a\" cert_file: "
                         "\"/b\" key_file: \"/c\" }\nlocal_cluster_secrets_dir: \"/etc/x\"\n",
                         "project_shares { project: \"proj1\" host_path: \"", dir, "/share\" }\n",
                         "uid_count: 65536\n"))
          .ok());
  struct Case {
    std::string extra, field;
  };
  for (const Case& c : std::vector<Case>{
           {"backend_address: \"nope\"\n", "backend_address"},
           {"backend_address: \"10.0.0.1:7443\"\n", "backend_tls"},
           {"local_cluster_secrets_dir: \"relative\"\n", "local_cluster_secrets_dir"},
           {absl::StrCat("project_shares { project: \"a b\" host_path: \"", dir, "/share\" }\n"),
            "project_shares"},
           {"project_shares { project: \"p\" host_path: \"/does/not/exist\" }\n", "project_shares"},
           {"project_shares { project: \"p\" host_path: \"/proc\" }\n", "project_shares"},
           {absl::StrCat("project_shares { project: \"p\" host_path: \"", dir, "/share\" }\n",
                         "project_shares { project: \"p\" host_path: \"", dir, "/share\" }\n"),
            "project_shares"},
           {"uid_count: 1000\n", "uid_count"},
       }) {
    absl::Status st = check(c.extra);
    EXPECT_FALSE(st.ok()) << c.extra;
    EXPECT_TRUE(absl::StrContains(st.message(), c.field)) << c.extra << " -> " << st;
  }
  testing::RemoveTree(dir);
}

}  // namespace
}  // namespace strongroom::host_agent
