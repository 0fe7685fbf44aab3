// kind=VM through the host-agent daemon, end to end on one node: the netd test bed (real OVS, netd over
// mTLS), libvirtd (deploy/libvirt/strongroom-libvirtd, in the node's netns) and the host-agent daemon with
// vm_libvirt_uri, driven with strongroomctl as backend. The VM image is a busybox root file system as a
// squashfs plus Debian's kernel and the VM initramfs (deploy/image/vm): read-only root, writable layer
// encrypted inside the guest, the attachment and bundle from the read-only config disk.
//   - StartWorkload(VM) → RUNNING on a netd tap; the guest's console shows its own kernel, hostname and
//     br-secure address; the allowlisted service answers and another port does not; the disk file on the host
//     holds ciphertext and no byte of the plaintext marker the guest wrote;
//   - kill -9 of host-agent and a restart: the VM is adopted; qemu killed behind its back: FAILED with
//     VM_EMULATOR_FAILED, tap released, directory gone;
//   - two VMs on one node cannot reach each other, and each still reaches its allowlist;
//   - StopWorkload: STOPPED, clean scrub, no domain, tap or directory left;
//   - kill -9 (fault_crash_at) while a VM starts or stops, then a restart: cleaned up or finished, nothing
//   left;
//   - bad input: larger than the node, an image without a kernel, libvirt down: clear errors, nothing left.
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "common/subprocess.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "services/host_agent/vm/vm_driver.h"
#include "strongroom/v1/host_agent.pb.h"
#include "tests/host_agent/ctl_call.h"
#include "tests/host_agent/test_env.h"
#include "tests/netd/netd_testbed.h"

namespace strongroom::host_agent::testing {
namespace {

using netd::testing::NetdTestbed;

constexpr char kAgentIp[] = "198.51.100.13";
constexpr int kAgentPort = 7445;
constexpr char kMarker[] = "SR-PLAINTEXT-MARKER-5f2a9c";

// The workload image's entrypoint (PID 1 after the initramfs' switch_root).
std::string Entrypoint() {
  return absl::StrCat(
      "#!/bin/busybox sh\n/bin/busybox --install -s /bin\n",
      "echo \"STRONGROOM-WORKLOAD kernel=$(uname -r) hostname=$(hostname) ip=$(ip -4 -o addr show dev eth0 | "
      "awk "
      "'{print $4}') root=$(awk '$2==\"/\"{print $3}' /proc/mounts)\"\n",
      // The job's data: a plaintext marker on the writable layer, flushed to the disk.
      "i=0; while [ $i -lt 4096 ]; do echo ", kMarker, "; i=$((i+1)); done > /job-output\nsync\n",
      "echo \"STRONGROOM-WORKLOAD-WROTE $(wc -c < /job-output)\"\n", "if echo probe | timeout 6 nc -w 4 ",
      netd::testing::kServiceA, " ", netd::testing::kEchoPort,
      " | grep -q probe; then echo STRONGROOM-WORKLOAD-ALLOWED-OK; else echo "
      "STRONGROOM-WORKLOAD-ALLOWED-FAILED; fi\n",
      "if echo probe | timeout 6 nc -w 4 ", netd::testing::kServiceA, " ", netd::testing::kOtherEchoPort,
      " | grep -q probe; then echo STRONGROOM-WORKLOAD-BLOCKED-LEAKED; else echo "
      "STRONGROOM-WORKLOAD-BLOCKED-OK; fi\n",
      "test -w / && echo STRONGROOM-WORKLOAD-ROOT-WRITABLE-OVERLAY\n",
      // Another job's VM on this node listens here; this one tries every other workload address of the node.
      "nc -ll -p 7000 -e /bin/cat &\n",
      "me=$(ip -4 -o addr show dev eth0 | awk '{print $4}' | cut -d/ -f1)\n",
      "for ip in 203.0.113.10 203.0.113.11; do [ \"$ip\" = \"$me\" ] && continue\n",
      "  if echo peer | timeout 6 nc -w 4 $ip 7000 | grep -q peer; then echo STRONGROOM-PEER-REACHED-TCP "
      "$ip; "
      "else echo STRONGROOM-PEER-UNREACHABLE-TCP $ip; fi\n",
      "  if ping -c 2 -W 2 $ip >/dev/null 2>&1; then echo STRONGROOM-PEER-REACHED-PING $ip; "
      "else echo STRONGROOM-PEER-UNREACHABLE-PING $ip; fi\n",
      "done\n", "echo STRONGROOM-WORKLOAD-READY\nwhile :; do sleep 3600; done\n");
}

class VmHostAgentTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto tb = NetdTestbed::Start();
    ASSERT_TRUE(tb.ok()) << tb.status();
    tb_ = std::move(*tb);
    // Outside the rig's 0700 state dir: container root (uid_base) must traverse to a container's rootfs (the
    // benchmark's container path); removed by TearDown.
    dir_ = MakeTempDir("sr-ha-vm");
    ASSERT_TRUE(std::filesystem::create_directories(dir_ + "/images/vmroot/bin"));
    ASSERT_TRUE(std::filesystem::create_directories(dir_ + "/images/vmroot/usr/libexec/strongroom"));
    // The image: a busybox root file system (squashfs) and its boot files.
    std::filesystem::copy_file("/bin/busybox", dir_ + "/images/vmroot/bin/busybox");
    // Where host-agent's default entrypoint is (the workload image's provisioning entrypoint in production).
    const std::string entrypoint = dir_ + "/images/vmroot/usr/libexec/strongroom/entrypoint";
    std::ofstream(entrypoint) << Entrypoint();
    chmod(entrypoint.c_str(), 0755);
    for (const char* name : {"vmtest", "nokernel"}) {
      auto squash =
          strongroom::Run({"/usr/bin/mksquashfs", dir_ + "/images/vmroot",
                           absl::StrCat(dir_, "/images/", name, ".squashfs"), "-noappend", "-quiet"},
                          absl::Seconds(120));
      ASSERT_TRUE(squash.ok() && squash->exit_code == 0)
          << (squash.ok() ? squash->output : squash.status().ToString());
    }
    auto boot = strongroom::Run({SR_BUILD_VM_BOOT, dir_ + "/images", "vmtest"}, absl::Seconds(300));
    ASSERT_TRUE(boot.ok() && boot->exit_code == 0) << (boot.ok() ? boot->output : boot.status().ToString());
    ASSERT_TRUE(StartLibvirtd());

    pki_ = tb_->rig().state_dir() + "/pki";
    auto issued = strongroom::Run({SR_PKI_TOOL, "issue", pki_, "--role", "host-agent", "--instance",
                                   netd::testing::kNodeName, "--out", pki_ + "/host-agent-server"},
                                  absl::Seconds(30));
    ASSERT_TRUE(issued.ok() && issued->exit_code == 0);
    ASSERT_TRUE(std::filesystem::create_directories(dir_ + "/share"));
    ASSERT_TRUE(std::filesystem::create_directories(dir_ + "/secrets/c1"));
    std::ofstream(dir_ + "/secrets/c1/munge-key") << "SR-TEST-MUNGE-KEY";
    ASSERT_EQ(chown((dir_ + "/secrets/c1/munge-key").c_str(), 100000, 100000), 0);
    ASSERT_EQ(chmod((dir_ + "/secrets/c1/munge-key").c_str(), 0400), 0);
    config_ = dir_ + "/agent.textproto";
    WriteConfig("", -1);
    ASSERT_TRUE(StartAgent());
  }

  void TearDown() override {
    if (HasFailure()) {
      std::fprintf(stderr, "---- host-agent ----\n%s\n", ReadFile(dir_ + "/agent.log").c_str());
      std::fprintf(stderr, "---- libvirtd ----\n%s\n", ReadFile(dir_ + "/libvirt/log/libvirtd.log").c_str());
      for (const std::string& id : ids_) {
        std::fprintf(stderr, "---- %s console ----\n%s\n", id.c_str(), ReadFile(Console(id)).c_str());
        std::fprintf(stderr, "---- %s qemu ----\n%s\n", id.c_str(),
                     ReadFile(absl::StrCat(dir_, "/libvirt/log/qemu/sr-", id, ".log")).c_str());
      }
    }
    for (const std::string& id : ids_)
      (void)Call("StopWorkload", absl::StrCat("{\"workload_id\":\"", id, "\"}"));
    if (agent_pid_ > 0) (void)tb_->rig().Stop(agent_pid_);
    for (const std::string& id : ids_) {
      if (pid_t pid = QemuPid(id); pid > 0) {
        kill(pid, SIGKILL);
        ADD_FAILURE() << "a qemu was left for " << id;
      }
    }
    if (libvirtd_pid_ > 0) (void)tb_->rig().Stop(libvirtd_pid_);
    tb_.reset();
    if (!dir_.empty()) RemoveTree(dir_);
  }

  std::string Uri() const {
    return absl::StrCat("qemu:///system?socket=", dir_, "/libvirt/sock/libvirt-sock");
  }
  std::string Console(const std::string& id) const {
    return absl::StrCat(dir_, "/state/workloads/", id, "/console.log");
  }

  // host-agent's config; `fault` is a fault_crash_at point ("" none), `retry_window` the
  // start_retry_window_seconds (< 0: the default).
  void WriteConfig(const std::string& fault, int retry_window) {
    std::ofstream out(config_);
    out << "server {\n  listen_address: \"" << kAgentIp << ":" << kAgentPort << "\"\n"
        << "  tls { ca_file: \"" << pki_ << "/ca.pem\" cert_file: \"" << pki_
        << "/host-agent-server.pem\" key_file: \"" << pki_ << "/host-agent-server.key\" }\n"
        << "  trust_domain: \"strongroom.test\"\n  instance: \"" << netd::testing::kNodeName
        << "\"\n  drain_seconds: 0\n  cert_refresh_seconds: 1\n}\n"
        << "state_dir: \"" << dir_ << "/state\"\nimage_root: \"" << dir_ << "/images\"\n"
        << "allow_unencrypted_scratch: true\nstop_grace_seconds: 0\n"
        << "vm_libvirt_uri: \"" << Uri() << "\"\nvm_domain_type: \"qemu\"\n"
        << "vm_writable_disk_bytes: 67108864\n"
        << "netd_address: \"" << tb_->NetdAddress() << "\"\n"
        << "netd_tls { ca_file: \"" << pki_ << "/ca.pem\" cert_file: \"" << pki_
        << "/host-agent.pem\" key_file: \"" << pki_
        << "/host-agent.key\" }\n"
        // The development-mode stand-ins a VM gets as 9p shares (ProvisionedSpec).
        << "local_cluster_secrets_dir: \"" << dir_ << "/secrets\"\n"
        << "project_shares { project: \"p-vm\" host_path: \"" << dir_ << "/share\" }\n";
    if (!fault.empty()) out << "fault_crash_at: \"" << fault << "\"\n";
    if (retry_window >= 0) out << "start_retry_window_seconds: " << retry_window << "\n";
  }

  // Waits for the agent (which crashed itself at its fault point) to be gone.
  void WaitForCrash() {
    for (const absl::Time deadline = absl::Now() + absl::Seconds(120); absl::Now() < deadline;) {
      if (kill(agent_pid_, 0) != 0) break;
      int status = 0;
      if (waitpid(agent_pid_, &status, WNOHANG) == agent_pid_) break;
      absl::SleepFor(absl::Milliseconds(100));
    }
    (void)tb_->rig().Stop(agent_pid_);
    agent_pid_ = 0;
  }

  bool StartLibvirtd() {
    auto pid = tb_->rig().Spawn("node", dir_ + "/libvirtd.out", {SR_LIBVIRTD, dir_ + "/libvirt"});
    if (!pid.ok()) return false;
    libvirtd_pid_ = *pid;
    struct stat st;
    for (const absl::Time deadline = absl::Now() + absl::Seconds(60); absl::Now() < deadline;) {
      if (stat((dir_ + "/libvirt/sock/libvirt-sock").c_str(), &st) == 0) return true;
      absl::SleepFor(absl::Milliseconds(100));
    }
    return false;
  }

  bool StartAgent() {
    auto pid = tb_->rig().Spawn("node", dir_ + "/agent.log", {SR_HOST_AGENT_BIN, "--config", config_});
    if (!pid.ok()) return false;
    agent_pid_ = *pid;
    for (int i = 0; i < 200; ++i) {
      if (Call("ListWorkloads", "{}").first == 0) return true;
      absl::SleepFor(absl::Milliseconds(100));
    }
    ADD_FAILURE() << "host-agent did not serve: " << ReadFile(dir_ + "/agent.log");
    return false;
  }

  pid_t QemuPid(const std::string& id) {
    int pid = 0;
    const std::string text = ReadFile(absl::StrCat(dir_, "/libvirt/run/qemu/sr-", id, ".pid"));
    if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(text), &pid) || pid <= 0) return 0;
    return kill(pid, 0) == 0 ? pid : 0;
  }

  std::pair<int, std::string> Call(const std::string& method, const std::string& json) {
    return host_agent::testing::CallHostAgentAsBackend(tb_->rig(), SR_CTL_BIN, absl::StrCat(kAgentIp, ":", kAgentPort),
                                                       pki_, method, json, absl::Seconds(120));
  }

  std::string VmSpec(const std::string& id, const std::string& image = "vmtest", int cpus = 1) {
    ids_.push_back(id);
    return absl::StrCat("{\"spec\":{\"workload_id\":\"", id,
                        "\",\"kind\":\"WORKLOAD_KIND_VM\",\"image\":{\"name\":\"", image,
                        "\"},\"resources\":{\"cpus\":", cpus, ",\"memory_bytes\":268435456},",
                        "\"egress_allowlist\":[{\"destination_cidr\":\"", netd::testing::kServiceA,
                        "\",\"protocol\":\"PROTOCOL_TCP\",\"port_start\":", netd::testing::kEchoPort, "}]}}");
  }

  // VmSpec with every provisioning input: a job user, a project with a (development-mode) share, a bundle
  // whose munge key is in local_cluster_secrets_dir.
  std::string ProvisionedSpec(const std::string& id) {
    std::string spec = VmSpec(id);
    const std::string inputs =
        "\"job\":{\"project\":\"p-vm\",\"user\":{\"name\":\"alice\",\"uid\":1000,\"gid\":1000}},"
        "\"provisioning\":{\"local_cluster\":\"c1\",\"slurmctld_addresses\":[\"203.0.113.1:6817\"],"
        "\"slurm_auth_ref\":{\"uri\":\"vmc://c1/munge-key\"}},";
    return spec.insert(spec.find("\"egress_allowlist\""), inputs);
  }

  v1::Workload Get(const std::string& id) {
    auto [code, body] = Call("GetWorkload", absl::StrCat("{\"workload_id\":\"", id, "\"}"));
    v1::GetWorkloadResponse r;
    EXPECT_EQ(code, 0) << body;
    EXPECT_TRUE(google::protobuf::util::JsonStringToMessage(body, &r).ok()) << body;
    return r.workload();
  }

  bool WaitForConsole(const std::string& id, const std::string& marker) {
    for (const absl::Time deadline = absl::Now() + absl::Seconds(180); absl::Now() < deadline;) {
      if (absl::StrContains(ReadFile(Console(id)), marker)) return true;
      if (absl::StrContains(ReadFile(Console(id)), "STRONGROOM-VM-FAILED")) return false;
      absl::SleepFor(absl::Milliseconds(200));
    }
    return false;
  }

  std::vector<std::string> NodeTaps() { return *tb_->Links(tb_->NodeNetns(), "sr"); }

  std::unique_ptr<NetdTestbed> tb_;
  std::string dir_, pki_, config_;
  pid_t agent_pid_ = 0;
  pid_t libvirtd_pid_ = 0;
  std::vector<std::string> ids_;
};

TEST_F(VmHostAgentTest, AVmWorkloadRunsOnItsTapIsAdoptedAfterARestartAndEndsWithItsReason) {
  const std::string id = Id("wl-vm-1");
  const absl::Time t0 = absl::Now();
  auto [code, body] = Call("StartWorkload", ProvisionedSpec(id));
  ASSERT_EQ(code, 0) << body;
  v1::StartWorkloadResponse started;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(body, &started).ok()) << body;
  EXPECT_EQ(started.workload().state(), v1::WORKLOAD_STATE_RUNNING);
  const v1::NetworkAttachment net = started.workload().network();
  ASSERT_FALSE(net.port_name().empty()) << body;
  EXPECT_EQ(NodeTaps(), std::vector<std::string>{net.port_name()});
  ASSERT_TRUE(WaitForConsole(id, "STRONGROOM-WORKLOAD-READY")) << ReadFile(Console(id));
  std::fprintf(stderr, "StartWorkload(VM) -> workload ready: %.1f s (TCG)\n",
               absl::ToDoubleSeconds(absl::Now() - t0));
  const std::string console = ReadFile(Console(id));
  std::fprintf(stderr, "%s", console.c_str());
  EXPECT_TRUE(absl::StrContains(console, "kernel=6.1.0-")) << console;
  EXPECT_TRUE(absl::StrContains(console, absl::StrCat("hostname=", id))) << console;
  EXPECT_TRUE(absl::StrContains(console, absl::StrCat("ip=", net.ipv4_address(), "/"))) << console;
  EXPECT_TRUE(absl::StrContains(console, "root=overlay")) << console;
  EXPECT_TRUE(absl::StrContains(console, "STRONGROOM-WORKLOAD-ALLOWED-OK")) << console;
  EXPECT_TRUE(absl::StrContains(console, "STRONGROOM-WORKLOAD-BLOCKED-OK")) << console;
  // The job's plaintext went to the writable layer, which the guest encrypted: the host's disk file holds
  // ciphertext (not zeros) and not one copy of the marker.
  const std::string disk_path = absl::StrCat(dir_, "/state/workloads/", id, "/disk.img");
  std::ifstream in(disk_path, std::ios::binary);
  const std::string disk((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  ASSERT_EQ(disk.size(), 67108864u);
  EXPECT_EQ(disk.find(kMarker), std::string::npos) << "plaintext on the host's disk file";
  EXPECT_GT(std::count_if(disk.begin(), disk.end(), [](char c) { return c != 0; }), 1 << 20)
      << "nothing written";
  // host-agent's state, DB and log never held it either.
  for (const std::string& file : {dir_ + "/state/workloads.db", dir_ + "/agent.log"}) {
    EXPECT_FALSE(absl::StrContains(ReadFile(file), kMarker)) << file;
  }
  // The provisioning inputs a container gets, the VM's way: workload.env on the config disk, the project
  // share read-write and the munge key's directory read-only over 9p; the key itself is never copied on the
  // host.
  const std::string config = ReadFile(absl::StrCat(dir_, "/state/workloads/", id, "/config.img"));
  for (const std::string& line :
       {absl::StrCat("STRONGROOM_WORKLOAD_ID='", id, "'\n"),
        absl::StrCat("STRONGROOM_NODE='", netd::testing::kNodeName, "'\n"),
        std::string("STRONGROOM_PROVISIONING='/run/strongroom/provisioning.json'\n"),
        std::string("STRONGROOM_JOB_USER='alice'\nSTRONGROOM_JOB_UID='1000'\nSTRONGROOM_JOB_GID='1000'\n"),
        absl::StrCat("STRONGROOM_PROJECT_SHARE='", dir_, "/share'\n"),
        std::string("SR_SLURM_AUTH_FILE='munge-key'\n")}) {
    EXPECT_TRUE(absl::StrContains(config, line)) << line;
  }
  EXPECT_TRUE(absl::StrContains(config, "workload.env"));
  EXPECT_FALSE(absl::StrContains(config, "SR-TEST-MUNGE-KEY")) << "the key was copied onto the config disk";
  const std::string qemu_args = ReadFile(absl::StrCat("/proc/", QemuPid(id), "/cmdline"));
  EXPECT_TRUE(absl::StrContains(qemu_args, "\"mount_tag\":\"sr_project_share\"")) << qemu_args;
  EXPECT_TRUE(absl::StrContains(qemu_args, "\"mount_tag\":\"sr_slurm_auth\"")) << qemu_args;
  EXPECT_TRUE(absl::StrContains(qemu_args, absl::StrCat("path=", dir_, "/secrets/c1,readonly"))) << qemu_args;
  std::error_code ec;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir_ + "/state", ec)) {
    EXPECT_FALSE(ReadFile(e.path().string()).find("SR-TEST-MUNGE-KEY") != std::string::npos) << e.path();
  }

  // kill -9 of host-agent and a restart: the VM is adopted (its domain runs, its metadata names it).
  const pid_t qemu = QemuPid(id);
  ASSERT_GT(qemu, 0);
  ASSERT_TRUE(tb_->rig().Kill(agent_pid_, SIGKILL).ok());
  (void)tb_->rig().Stop(agent_pid_);
  agent_pid_ = 0;
  EXPECT_EQ(QemuPid(id), qemu) << "the VM must outlive host-agent";
  ASSERT_TRUE(StartAgent());
  v1::Workload adopted = Get(id);
  EXPECT_EQ(adopted.state(), v1::WORKLOAD_STATE_RUNNING) << adopted.ShortDebugString();
  EXPECT_TRUE(adopted.adopted()) << adopted.ShortDebugString();

  // qemu killed behind host-agent's back: the workload ends, FAILED with the VM's reason, and nothing is
  // left.
  ASSERT_EQ(kill(qemu, SIGKILL), 0);
  v1::Workload ended;
  for (const absl::Time deadline = absl::Now() + absl::Seconds(60); absl::Now() < deadline;) {
    ended = Get(id);
    if (ended.state() == v1::WORKLOAD_STATE_FAILED || ended.state() == v1::WORKLOAD_STATE_STOPPED) break;
    absl::SleepFor(absl::Milliseconds(200));
  }
  EXPECT_EQ(ended.state(), v1::WORKLOAD_STATE_FAILED) << ended.ShortDebugString();
  EXPECT_EQ(ended.failure().reason(), "VM_EMULATOR_FAILED") << ended.ShortDebugString();
  EXPECT_TRUE(ended.scrub().clean()) << ended.ShortDebugString();
  EXPECT_TRUE(NodeTaps().empty());
  EXPECT_FALSE(std::filesystem::exists(absl::StrCat(dir_, "/state/workloads/", id)));
}

// Two non-exclusive jobs on one node: two VMs, each on its own tap; the second, started once the first
// listens, can neither connect to nor ping the first (real packets through br-secure).
TEST_F(VmHostAgentTest, TwoVmsOnOneNodeCannotReachEachOther) {
  const std::string first = Id("wl-vm-a"), second = Id("wl-vm-b");
  ASSERT_EQ(Call("StartWorkload", VmSpec(first)).first, 0);
  ASSERT_TRUE(WaitForConsole(first, "STRONGROOM-WORKLOAD-READY")) << ReadFile(Console(first));
  ASSERT_EQ(Call("StartWorkload", VmSpec(second)).first, 0);
  EXPECT_EQ(NodeTaps().size(), 2u);
  ASSERT_TRUE(WaitForConsole(second, "STRONGROOM-WORKLOAD-READY")) << ReadFile(Console(second));
  const v1::Workload a = Get(first);
  const v1::Workload b = Get(second);
  EXPECT_NE(a.network().port_name(), b.network().port_name());
  const std::string console = ReadFile(Console(second));
  std::fprintf(stderr, "%s", console.c_str());
  const std::string peer = a.network().ipv4_address();
  ASSERT_FALSE(peer.empty());
  EXPECT_TRUE(absl::StrContains(console, "STRONGROOM-PEER-UNREACHABLE-TCP " + peer)) << console;
  EXPECT_TRUE(absl::StrContains(console, "STRONGROOM-PEER-UNREACHABLE-PING " + peer)) << console;
  EXPECT_FALSE(absl::StrContains(console, "STRONGROOM-PEER-REACHED")) << console;
  // Each still reaches its allowlist: the isolation is not a dead network.
  EXPECT_TRUE(absl::StrContains(console, "STRONGROOM-WORKLOAD-ALLOWED-OK")) << console;
  for (const std::string& id : {first, second}) {
    auto [code, body] = Call("StopWorkload", absl::StrCat("{\"workload_id\":\"", id, "\"}"));
    EXPECT_EQ(code, 0) << body;
  }
  EXPECT_TRUE(NodeTaps().empty());
}

TEST_F(VmHostAgentTest, StopLeavesNothingAndBadInputIsRefusedClearly) {
  const std::string id = Id("wl-vm-2");
  auto [code, body] = Call("StartWorkload", VmSpec(id));
  ASSERT_EQ(code, 0) << body;
  ASSERT_TRUE(WaitForConsole(id, "STRONGROOM-VM-ROOT")) << ReadFile(Console(id));
  auto [stop_code, stop_body] = Call(
      "StopWorkload", absl::StrCat("{\"workload_id\":\"", id, "\",\"reason\":\"STOP_REASON_JOB_ENDED\"}"));
  ASSERT_EQ(stop_code, 0) << stop_body;
  v1::StopWorkloadResponse stopped;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(stop_body, &stopped).ok()) << stop_body;
  EXPECT_EQ(stopped.workload().state(), v1::WORKLOAD_STATE_STOPPED) << stop_body;
  EXPECT_TRUE(stopped.workload().scrub().clean()) << stop_body;
  EXPECT_EQ(QemuPid(id), 0);
  EXPECT_TRUE(NodeTaps().empty());
  EXPECT_FALSE(std::filesystem::exists(absl::StrCat(dir_, "/state/workloads/", id)));

  // Larger than the node; an image without a kernel: refused before anything exists.
  auto [big_code, big_body] = Call("StartWorkload", VmSpec(Id("wl-vm-big"), "vmtest", 4000));
  EXPECT_EQ(big_code, 9) << big_body;  // FAILED_PRECONDITION
  EXPECT_TRUE(absl::StrContains(big_body, "resources.cpus")) << big_body;
  auto [nok_code, nok_body] = Call("StartWorkload", VmSpec(Id("wl-vm-nok"), "nokernel"));
  EXPECT_EQ(nok_code, 9) << nok_body;
  EXPECT_TRUE(absl::StrContains(nok_body, "has no kernel")) << nok_body;
  // libvirt down: the start fails naming libvirt, and its tap is released again.
  ASSERT_TRUE(tb_->rig().Stop(libvirtd_pid_).ok());
  libvirtd_pid_ = 0;
  auto [down_code, down_body] = Call("StartWorkload", VmSpec(Id("wl-vm-down")));
  EXPECT_EQ(down_code, 14) << down_body;  // UNAVAILABLE
  EXPECT_TRUE(absl::StrContains(down_body, "libvirt")) << down_body;
  EXPECT_TRUE(NodeTaps().empty());
  for (const std::string& bad : {Id("wl-vm-big"), Id("wl-vm-nok"), Id("wl-vm-down")}) {
    EXPECT_FALSE(std::filesystem::exists(absl::StrCat(dir_, "/state/workloads/", bad))) << bad;
  }
}

// kill -9 of host-agent while a VM starts or stops (fault_crash_at), then a restart: an interrupted start
// is cleaned up (domain destroyed, tap released) and FAILED; an interrupted stop is finished; nothing leaks.
class VmCrashTest : public VmHostAgentTest, public ::testing::WithParamInterface<const char*> {};

TEST_P(VmCrashTest, ARestartAfterACrashLeavesNothing) {
  const std::string point = GetParam();
  const bool in_start = absl::StartsWith(point, "start.");
  const std::string id = Id(in_start ? "wl-vm-cs" : "wl-vm-cp");
  (void)tb_->rig().Stop(agent_pid_);
  WriteConfig(in_start ? point : "", 0);
  ASSERT_TRUE(StartAgent());
  auto [code, body] = Call("StartWorkload", VmSpec(id));
  if (in_start) {
    EXPECT_NE(code, 0) << "the agent was to die mid-start: " << body;
  } else {
    ASSERT_EQ(code, 0) << body;
    ASSERT_TRUE(WaitForConsole(id, "STRONGROOM-VM-ROOT")) << ReadFile(Console(id));
    (void)tb_->rig().Stop(agent_pid_);
    WriteConfig(point, 0);
    ASSERT_TRUE(StartAgent());
    (void)Call("StopWorkload", absl::StrCat("{\"workload_id\":\"", id, "\"}"));
  }
  WaitForCrash();
  WriteConfig("", 0);
  ASSERT_TRUE(StartAgent());
  const v1::Workload w = Get(id);
  if (in_start) {
    EXPECT_EQ(w.state(), v1::WORKLOAD_STATE_FAILED) << w.ShortDebugString();
    EXPECT_EQ(w.failure().reason(), "AGENT_RESTARTED_DURING_START") << w.ShortDebugString();
  } else {
    EXPECT_EQ(w.state(), v1::WORKLOAD_STATE_STOPPED) << w.ShortDebugString();
  }
  EXPECT_TRUE(w.scrub().clean()) << w.ShortDebugString();
  EXPECT_EQ(QemuPid(id), 0) << "a domain survived";
  EXPECT_TRUE(NodeTaps().empty());
  EXPECT_FALSE(std::filesystem::exists(absl::StrCat(dir_, "/state/workloads/", id)));
}

INSTANTIATE_TEST_SUITE_P(Points, VmCrashTest,
                         ::testing::Values("start.after_network", "start.after_runtime", "stop.after_kill",
                                           "stop.after_network"),
                         [](const auto& info) {
                           std::string name = info.param;
                           for (char& c : name) c = c == '.' ? '_' : c;
                           return name;
                         });

// The benchmark (docs/PERFORMANCE.md "## VM path"), run by hand:
//   host_agent_vm_host_agent_test --gtest_also_run_disabled_tests --gtest_filter='*Benchmark*'
// Alternating, kSamples times: (a) the anchor, a bare qemu direct-kernel boot of the same image (kernel, VM
// initramfs, squashfs root, a fresh writable disk, the config disk; no libvirt, no netd, no NIC) to the
// entrypoint's first line; (b) StartWorkload(VM) through host-agent, netd and libvirt to the same line;
// (c) StartWorkload(CONTAINER) to RUNNING. Not a pass/fail test: it prints p50 and p99 (max) of each.
TEST_F(VmHostAgentTest, DISABLED_BootBenchmark) {
  constexpr int kSamples = 5;
  ASSERT_TRUE(BuildBusyboxImage(dir_ + "/images", "ctbench", "#!/bin/sh\nsleep 100000\n").ok());
  std::vector<double> bare, vm_path, vm_rpc, container;
  const std::string marker = "STRONGROOM-WORKLOAD kernel=";
  auto wait_file = [&](const std::string& path) {
    for (const absl::Time deadline = absl::Now() + absl::Seconds(180); absl::Now() < deadline;) {
      if (absl::StrContains(ReadFile(path), marker)) return true;
      absl::SleepFor(absl::Milliseconds(20));
    }
    return false;
  };
  for (int i = 0; i < kSamples; ++i) {
    // (a) bare qemu, the same devices as libvirt's domain minus the NIC.
    const std::string run = absl::StrCat(dir_, "/bare", i);
    std::filesystem::create_directories(run);
    {
      std::ofstream disk(run + "/disk.img");
      disk.close();
      std::filesystem::resize_file(run + "/disk.img", 67108864);
      std::ofstream(run + "/config.img", std::ios::binary)
          << vm::ConfigDiskImage({{"network.env",
                                   "SR_HOSTNAME='bare'\nSR_IP='203.0.113.99/24'\nSR_GW='203.0.113.1'\n"
                                   "SR_ENTRYPOINT='/usr/libexec/strongroom/entrypoint'\n"}});
    }
    const absl::Time a0 = absl::Now();
    auto qemu = tb_->rig().Spawn("node", run + "/qemu.out",
                                 {"/usr/bin/qemu-system-x86_64",
                                  "-accel",
                                  "tcg",
                                  "-cpu",
                                  "max",
                                  "-m",
                                  "256",
                                  "-smp",
                                  "1",
                                  "-nodefaults",
                                  "-no-user-config",
                                  "-display",
                                  "none",
                                  "-no-reboot",
                                  "-serial",
                                  "file:" + run + "/console.log",
                                  "-kernel",
                                  dir_ + "/images/vmtest.vmlinux",
                                  "-initrd",
                                  dir_ + "/images/vmtest.initrd",
                                  "-append",
                                  "console=ttyS0 panic=-1 loglevel=3 no_timer_check",
                                  "-drive",
                                  "file=" + dir_ + "/images/vmtest.squashfs,if=virtio,format=raw,readonly=on",
                                  "-drive",
                                  "file=" + run + "/disk.img,if=virtio,format=raw,cache=none,aio=native",
                                  "-drive",
                                  "file=" + run + "/config.img,if=virtio,format=raw,readonly=on",
                                  "-device",
                                  "virtio-rng-pci"});
    ASSERT_TRUE(qemu.ok()) << qemu.status();
    ASSERT_TRUE(wait_file(run + "/console.log")) << ReadFile(run + "/console.log");
    bare.push_back(absl::ToDoubleSeconds(absl::Now() - a0));
    ASSERT_TRUE(tb_->rig().Stop(*qemu).ok());

    // (b) the VM path.
    const std::string id = Id(absl::StrCat("wl-vm-bench", i));
    const absl::Time b0 = absl::Now();
    ASSERT_EQ(Call("StartWorkload", VmSpec(id)).first, 0);
    vm_rpc.push_back(absl::ToDoubleSeconds(absl::Now() - b0));
    ASSERT_TRUE(wait_file(Console(id))) << ReadFile(Console(id));
    vm_path.push_back(absl::ToDoubleSeconds(absl::Now() - b0));
    ASSERT_EQ(Call("StopWorkload", absl::StrCat("{\"workload_id\":\"", id, "\"}")).first, 0);

    // (c) the container path (whole node, unencrypted scratch: this host has no dm-crypt).
    const std::string cid = Id(absl::StrCat("wl-ct-bench", i));
    const absl::Time c0 = absl::Now();
    auto [code, body] =
        Call("StartWorkload", absl::StrCat("{\"spec\":{\"workload_id\":\"", cid,
                                           "\",\"kind\":\"WORKLOAD_KIND_CONTAINER\",\"image\":{"
                                           "\"name\":\"ctbench\"},\"whole_node\":true}}"));
    ASSERT_EQ(code, 0) << body;
    container.push_back(absl::ToDoubleSeconds(absl::Now() - c0));
    ASSERT_EQ(Call("StopWorkload", absl::StrCat("{\"workload_id\":\"", cid, "\"}")).first, 0);
  }
  auto report = [](const char* what, std::vector<double> v) {
    std::sort(v.begin(), v.end());
    std::fprintf(stderr, "BENCH %-58s n=%zu p50=%.2f s p99=%.2f s min=%.2f s\n", what, v.size(),
                 v[v.size() / 2], v.back(), v.front());
  };
  report("bare qemu direct-kernel boot -> entrypoint (TCG)", bare);
  report("StartWorkload(VM) -> entrypoint (host-agent+netd+libvirt, TCG)", vm_path);
  report("StartWorkload(VM) returns (tap, disks, domain created: RUNNING)", vm_rpc);
  report("StartWorkload(CONTAINER) -> RUNNING", container);
}

}  // namespace
}  // namespace strongroom::host_agent::testing
