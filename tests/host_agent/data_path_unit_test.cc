// The secure data path's pure parts in host-agent (issue 14): the OCI config of a data-path container, the
// share rules, the workload's share request (hostile inputs, and the safe read through its root), the
// entrypoint's exit codes, and the watcher with a fake mounter (this host has no NFS client).
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "services/host_agent/container/oci_config.h"
#include "services/host_agent/container/share_request_watcher.h"
#include "services/host_agent/data_path.h"
#include "services/host_agent/provisioning.h"
#include "services/host_agent/spec_validation.h"
#include "services/host_agent/workload_nfs_mount.h"
#include "tests/host_agent/test_env.h"

namespace strongroom::host_agent {
namespace {

ContainerParams Params() {
  ContainerParams p;
  p.id = "wl-1";
  p.rootfs = "/var/lib/strongroom/host-agent/workloads/wl-1/rootfs";
  p.args = {"/usr/libexec/strongroom/entrypoint"};
  p.hostname = "wl-1";
  p.netns_path = "/run/netns/sr-wl-1";
  p.uid_base = 100000;
  p.uid_count = 65536;
  return p;
}

v1::WorkloadSpec DataPathSpec() {
  v1::WorkloadSpec s;
  s.set_workload_id("wl-dp");
  s.set_kind(v1::WORKLOAD_KIND_CONTAINER);
  s.mutable_job()->set_project("p1");
  v1::ProvisioningBundle* p = s.mutable_provisioning();
  p->set_local_cluster("c1");
  p->add_slurmctld_addresses("192.0.2.1:6817");
  p->set_enrollment_address("192.0.2.1:7443");
  p->set_ipsec_data_path(true);
  p->mutable_slurm_auth_ref()->set_uri("vmc://c1/munge-key");
  return s;
}

TEST(DataPathOciConfig, JoinsTheUserNamespaceAddsTwoCapabilitiesAndBindsTheTunNode) {
  ContainerParams p = Params();
  p.userns_path = "/var/lib/strongroom/host-agent/workloads/wl-1/userns";
  p.data_path = true;
  p.tun_node = "/var/lib/strongroom/host-agent/workloads/wl-1/tun";
  const std::string json = BuildOciConfig(p);
  EXPECT_TRUE(absl::StrContains(
      json, "{\"type\":\"user\",\"path\":\"/var/lib/strongroom/host-agent/workloads/wl-1/userns\"}"))
      << json;
  EXPECT_TRUE(absl::StrContains(json, "{\"type\":\"network\",\"path\":\"/run/netns/sr-wl-1\"}"));
  // Still new: pid, ipc, uts, mount, cgroup; the same id mappings (runc checks them against the userns).
  for (const char* ns : {"pid", "ipc", "uts", "mount", "cgroup"})
    EXPECT_TRUE(absl::StrContains(json, absl::StrCat("{\"type\":\"", ns, "\"}"))) << ns;
  EXPECT_TRUE(
      absl::StrContains(json, "\"uidMappings\":[{\"containerID\":0,\"hostID\":100000,\"size\":65536}]"));
  EXPECT_TRUE(
      absl::StrContains(json, "\"gidMappings\":[{\"containerID\":0,\"hostID\":100000,\"size\":65536}]"));
  // The TUN node without nodev (a device node), nowhere else.
  EXPECT_TRUE(absl::StrContains(json,
                                "{\"destination\":\"/dev/net/tun\",\"type\":\"none\",\"source\":\"/var/lib/"
                                "strongroom/host-agent/workloads/wl-1/tun\",\"options\":[\"bind\",\"nosuid\","
                                "\"noexec\"]}"))
      << json;
  EXPECT_FALSE(absl::StrContains(json, "\"devices\""));
  EXPECT_TRUE(absl::StrContains(json, "CAP_NET_ADMIN"));
  EXPECT_TRUE(absl::StrContains(json, "CAP_NET_BIND_SERVICE"));
  EXPECT_FALSE(absl::StrContains(json, "CAP_SYS_ADMIN"));
  EXPECT_FALSE(absl::StrContains(json, "CAP_NET_RAW"));
  EXPECT_TRUE(absl::StrContains(json, "\"noNewPrivileges\":true"));
  EXPECT_TRUE(absl::StrContains(json, "\"defaultAction\":\"SCMP_ACT_ALLOW\""));
  // CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID SETUID + NET_BIND_SERVICE (10) + NET_ADMIN (12).
  EXPECT_EQ(KeptCapabilityMask(true), 0x14fbULL);  // the measured CapEff (docs/IPSEC.md)
  for (const KeptCapability& c : DataPathCapabilities()) EXPECT_FALSE(c.reason.empty()) << c.name;
}

TEST(DataPathOciConfig, WithoutTheDataPathNothingChanges) {
  const std::string json = BuildOciConfig(Params());
  EXPECT_TRUE(absl::StrContains(json, "{\"type\":\"user\"},"));
  EXPECT_FALSE(absl::StrContains(json, "/dev/net/tun"));
  EXPECT_FALSE(absl::StrContains(json, "CAP_NET_ADMIN"));
  EXPECT_FALSE(absl::StrContains(json, "CAP_NET_BIND_SERVICE"));
  EXPECT_EQ(KeptCapabilityMask(false), 0xfbULL);
}

TEST(DataPathShareRules, DevelopmentShareThenNfsClientElseRefused) {
  const v1::WorkloadSpec spec = DataPathSpec();
  EXPECT_EQ(*DecideDataPathShare(spec, true, false), DataPathShare::kDevelopmentBind);  // (a)
  EXPECT_EQ(*DecideDataPathShare(spec, true, true), DataPathShare::kDevelopmentBind);   // (a)
  EXPECT_EQ(*DecideDataPathShare(spec, false, true), DataPathShare::kNfsOnRequest);     // (b)
  absl::StatusOr<DataPathShare> refused = DecideDataPathShare(spec, false, false);      // (c)
  ASSERT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(refused.status().message(), "provisioning.ipsec_data_path"));
  EXPECT_TRUE(absl::StrContains(refused.status().message(), "no NFS client"));
  EXPECT_TRUE(absl::StrContains(refused.status().message(), "development only"));
  // Not a data-path container: today's rules; a VM is left as it is.
  v1::WorkloadSpec plain = spec;
  plain.mutable_provisioning()->set_ipsec_data_path(false);
  EXPECT_EQ(*DecideDataPathShare(plain, false, false), DataPathShare::kNone);
  v1::WorkloadSpec vm = spec;
  vm.set_kind(v1::WORKLOAD_KIND_VM);
  EXPECT_FALSE(IsContainerDataPath(vm));
  EXPECT_EQ(*DecideDataPathShare(vm, false, false), DataPathShare::kNone);
}

TEST(DataPathShareRules, KernelNfsClientFromProcFilesystems) {
  const std::string dir = testing::MakeTempDir("sr-dp-fs");
  std::ofstream(dir + "/without") << "nodev\tsysfs\nnodev\ttmpfs\n\text4\nnodev\tnfsd\n";
  std::ofstream(dir + "/with") << "nodev\tsysfs\nnodev\tnfs\nnodev\tnfs4\n";
  EXPECT_FALSE(KernelHasNfsClient(dir + "/without"));
  EXPECT_TRUE(KernelHasNfsClient(dir + "/with"));
  EXPECT_FALSE(KernelHasNfsClient(dir + "/missing"));
  testing::RemoveTree(dir);
}

TEST(DataPathProvisioning, NoLocalMungeKeyAndTheShareOverNfs) {
  ProvisioningOptions o;
  o.node = "node-a";
  o.local_cluster_secrets_dir = "/nonexistent/secrets";  // would be FAILED_PRECONDITION if it were used
  o.kernel_has_nfs_client = true;
  absl::StatusOr<ProvisioningInputs> in = ResolveProvisioningInputs(DataPathSpec(), o);
  ASSERT_TRUE(in.ok()) << in.status();
  EXPECT_EQ(in->slurm_auth_file, "");
  EXPECT_FALSE(in->slurm_auth_local);
  EXPECT_TRUE(in->share_over_nfs);
  EXPECT_EQ(in->project_share, "");
  // (a) a development share is still bound as today.
  o.project_shares = {{"p1", "/srv/p1"}};
  in = ResolveProvisioningInputs(DataPathSpec(), o);
  ASSERT_TRUE(in.ok()) << in.status();
  EXPECT_EQ(in->project_share, "/srv/p1");
  EXPECT_FALSE(in->share_over_nfs);
  // (c)
  o.project_shares.clear();
  o.kernel_has_nfs_client = false;
  EXPECT_EQ(ResolveProvisioningInputs(DataPathSpec(), o).status().code(),
            absl::StatusCode::kFailedPrecondition);
  // Without the data path the development key is still looked up (and here missing).
  v1::WorkloadSpec plain = DataPathSpec();
  plain.mutable_provisioning()->set_ipsec_data_path(false);
  EXPECT_EQ(ResolveProvisioningInputs(plain, o).status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(DataPathValidation, RequiresTheEnrollmentAddress) {
  NodeLimits limits;
  limits.cpus = 4;
  limits.memory_bytes = uint64_t{8} << 30;
  limits.scratch_max_bytes = uint64_t{1} << 40;
  v1::WorkloadSpec spec = DataPathSpec();
  spec.mutable_image()->set_name("debian");
  spec.set_whole_node(true);
  EXPECT_TRUE(ValidateSpec(spec, limits).ok()) << ValidateSpec(spec, limits);
  spec.mutable_provisioning()->clear_enrollment_address();
  absl::Status s = ValidateSpec(spec, limits);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(s.message(), "provisioning.enrollment_address")) << s;
}

TEST(DataPathExitCodes, NameTheStepThatFailed) {
  EXPECT_EQ(DataPathExitFailure(70)->reason, "DATA_PATH_ENROLLMENT");
  EXPECT_EQ(DataPathExitFailure(71)->reason, "DATA_PATH_TUNNEL");
  EXPECT_EQ(DataPathExitFailure(72)->reason, "DATA_PATH_SHARE");
  EXPECT_TRUE(absl::StrContains(DataPathExitFailure(71)->message, "(entrypoint exit 71)"));
  EXPECT_TRUE(absl::StrContains(DataPathExitFailure(70)->message, "enroll"));
  for (int code : {0, 1, 3, 69, 73, 137}) EXPECT_FALSE(DataPathExitFailure(code).has_value()) << code;
}

TEST(NfsShareRequest, ParsesTheThreeFields) {
  absl::StatusOr<NfsShareRequest> r =
      ParseNfsShareRequest("server=192.0.2.1\nexport=/proj-a\nmountpoint=/data/proj-a\n");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->server, "192.0.2.1");
  EXPECT_EQ(r->export_path, "/proj-a");
  EXPECT_EQ(r->mountpoint, "/data/proj-a");
  EXPECT_TRUE(ParseNfsShareRequest("\nmountpoint=/m\n\nexport=/\nserver=198.51.100.7").ok());
}

TEST(NfsShareRequest, RefusesHostileInputNamingTheField) {
  const std::string ok_export = "export=/proj-a\n", ok_mp = "mountpoint=/data\n",
                    ok_srv = "server=192.0.2.1\n";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"", "server: missing"},
      {ok_export + ok_mp, "server: missing"},
      {ok_srv + ok_mp, "export: missing"},
      {ok_srv + ok_export, "mountpoint: missing"},
      {ok_srv + ok_export + ok_mp + ok_srv, "server: given twice"},
      {ok_srv + ok_export + ok_mp + "mountpoint=/other\n", "mountpoint: given twice"},
      {ok_srv + ok_export + ok_mp + "options=rw\n", "unknown key"},
      {ok_srv + ok_export + ok_mp + "garbage\n", "without \"=\""},
      {std::string("server=192.0.2.1\0\n", 18) + ok_export + ok_mp, "NUL"},
      {"server=192.0.2.1\r\n" + ok_export + ok_mp, "carriage return"},
      {"server=vm.example\n" + ok_export + ok_mp, "server: not an IPv4"},
      {"server=192.0.2.1,addr=203.0.113.9\n" + ok_export + ok_mp, "server: not an IPv4"},
      {"server=::1\n" + ok_export + ok_mp, "server: not an IPv4"},
      {ok_srv + "export=proj-a\n" + ok_mp, "export: must be an absolute path"},
      {ok_srv + "export=/proj/../etc\n" + ok_mp, "export: \".\" and \"..\""},
      {ok_srv + "export=/proj,vers=3\n" + ok_mp, "export: only"},
      {ok_srv + "export=/a b\n" + ok_mp, "export: only"},
      {ok_srv + ok_export + "mountpoint=data\n", "mountpoint: must be an absolute path"},
      {ok_srv + ok_export + "mountpoint=/\n", "mountpoint: \"/\""},
      {ok_srv + ok_export + "mountpoint=/data/../proc\n", "mountpoint: \".\" and \"..\""},
      {ok_srv + ok_export + "mountpoint=/data/./x\n", "mountpoint: \".\" and \"..\""},
      {ok_srv + ok_export + "mountpoint=//data\n", "mountpoint: empty path component"},
      {ok_srv + ok_export + "mountpoint=/data/\n", "mountpoint: empty path component"},
      {ok_srv + ok_export + "mountpoint=/proc\n", "mountpoint: may not be /proc"},
      {ok_srv + ok_export + "mountpoint=/proc/self/root\n", "mountpoint: may not be /proc"},
      {ok_srv + ok_export + "mountpoint=/sys/fs\n", "mountpoint: may not be /sys"},
      {ok_srv + ok_export + "mountpoint=/dev/shm\n", "mountpoint: may not be /dev"},
      {ok_srv + ok_export + "mountpoint=/run/strongroom\n", "mountpoint: may not be /run"},
      {ok_srv + ok_export + "mountpoint=/" + std::string(300, 'a') + "\n", "mountpoint: longer than"},
      {std::string(2000, 'x'), "too large"},
  };
  for (const auto& [text, want] : cases) {
    absl::StatusOr<NfsShareRequest> r = ParseNfsShareRequest(text);
    ASSERT_FALSE(r.ok()) << "accepted: " << text;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_TRUE(absl::StrContains(r.status().message(), want)) << r.status() << " want " << want;
  }
  // /procfs and /devices are not /proc and /dev.
  EXPECT_TRUE(ParseNfsShareRequest(ok_srv + ok_export + "mountpoint=/procfs\n").ok());
  EXPECT_TRUE(ParseNfsShareRequest(ok_srv + ok_export + "mountpoint=/devices/x\n").ok());
}

class ReadFileInRootTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::MakeTempDir("sr-dp-root");
    root_ = dir_ + "/root";
    std::filesystem::create_directories(root_ + "/run/strongroom");
    std::ofstream(dir_ + "/outside") << "host secret";
  }
  void TearDown() override { testing::RemoveTree(dir_); }
  std::string dir_, root_;
};

TEST_F(ReadFileInRootTest, ReadsARegularFileInsideTheRootOnly) {
  std::ofstream(root_ + "/run/strongroom/nfs-request") << "server=192.0.2.1\n";
  absl::StatusOr<std::string> r = ReadFileInRoot(root_, kNfsRequestPath, kMaxNfsRequestBytes);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, "server=192.0.2.1\n");
  EXPECT_TRUE(absl::IsNotFound(ReadFileInRoot(root_, "/run/strongroom/absent", 1024).status()));
}

TEST_F(ReadFileInRootTest, SymlinksFifosDirectoriesAndLargeFilesAreRefused) {
  const std::string req = root_ + kNfsRequestPath;
  // A symlink as the request itself: refused (O_NOFOLLOW), whatever it points at.
  std::filesystem::create_symlink(dir_ + "/outside", req);
  EXPECT_FALSE(ReadFileInRoot(root_, kNfsRequestPath, 1024).ok());
  unlink(req.c_str());
  // A symlinked directory pointing out of the root with an absolute path resolves inside the root (not
  // found).
  std::filesystem::remove_all(root_ + "/run/strongroom");
  std::filesystem::create_directories(dir_ + "/escape");
  std::ofstream(dir_ + "/escape/nfs-request") << "server=203.0.113.9\n";
  std::filesystem::create_symlink(dir_ + "/escape", root_ + "/run/strongroom");
  absl::StatusOr<std::string> escaped = ReadFileInRoot(root_, kNfsRequestPath, 1024);
  EXPECT_FALSE(escaped.ok() && absl::StrContains(*escaped, "203.0.113.9")) << *escaped;
  unlink((root_ + "/run/strongroom").c_str());
  // "../.." stays in the root too.
  std::filesystem::create_symlink("../../../escape", root_ + "/run/strongroom");
  escaped = ReadFileInRoot(root_, kNfsRequestPath, 1024);
  EXPECT_FALSE(escaped.ok() && absl::StrContains(*escaped, "203.0.113.9")) << *escaped;
  unlink((root_ + "/run/strongroom").c_str());
  std::filesystem::create_directories(root_ + "/run/strongroom");
  // A FIFO: refused at once (never opened for reading, so it cannot block).
  ASSERT_EQ(mkfifo(req.c_str(), 0600), 0);
  const absl::Time t0 = absl::Now();
  EXPECT_EQ(ReadFileInRoot(root_, kNfsRequestPath, 1024).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_LT(absl::Now() - t0, absl::Seconds(1));
  unlink(req.c_str());
  // A directory; a file over the bound.
  std::filesystem::create_directories(req);
  EXPECT_EQ(ReadFileInRoot(root_, kNfsRequestPath, 1024).status().code(), absl::StatusCode::kInvalidArgument);
  std::filesystem::remove(req);
  std::ofstream(req) << std::string(1025, 'x');
  EXPECT_EQ(ReadFileInRoot(root_, kNfsRequestPath, 1024).status().code(), absl::StatusCode::kInvalidArgument);
}

// Records what host-agent would mount; fails when told to.
class FakeMounter : public ShareMounter {
 public:
  absl::Status Mount(const WorkloadNfsMount& m) override {
    absl::MutexLock lock(&mu_);
    mounts.push_back(m);
    return mount_result;
  }
  absl::Status Unmount(const std::string& mountns_path, const std::string& target) override {
    absl::MutexLock lock(&mu_);
    unmounts.push_back(mountns_path + " " + target);
    return absl::OkStatus();
  }
  size_t mount_count() {
    absl::MutexLock lock(&mu_);
    return mounts.size();
  }
  absl::Mutex mu_;
  std::vector<WorkloadNfsMount> mounts;
  std::vector<std::string> unmounts;
  absl::Status mount_result = absl::OkStatus();
};

class ShareWatcherTest : public ReadFileInRootTest {
 protected:
  ShareWatch Watch() {
    ShareWatch w;
    w.workload_id = "wl-dp";
    w.root_dir = root_;
    w.netns_path = "/run/netns/sr-wl-dp";
    w.mountns_path = "/proc/4242/ns/mnt";
    w.record_file = dir_ + "/share-mount";
    w.poll_interval = absl::Milliseconds(10);
    w.fail = [this](const std::string& reason, const std::string& message) {
      absl::MutexLock lock(&mu_);
      failures_.push_back(reason + ": " + message);
    };
    return w;
  }
  std::vector<std::string> Failures() {
    absl::MutexLock lock(&mu_);
    return failures_;
  }
  absl::Mutex mu_;
  std::vector<std::string> failures_;
};

TEST_F(ShareWatcherTest, MountsWhenAskedAndUnmountsAtRelease) {
  auto mounter = std::make_shared<FakeMounter>();
  ShareRequestWatcher watcher(mounter);
  watcher.Watch(Watch());
  absl::SleepFor(absl::Milliseconds(60));
  EXPECT_EQ(mounter->mount_count(), 0u);  // nothing asked yet
  std::ofstream(root_ + kNfsRequestPath) << "server=192.0.2.1\nexport=/proj-a\nmountpoint=/data\n";
  for (int i = 0; i < 200 && mounter->mount_count() == 0; ++i) absl::SleepFor(absl::Milliseconds(10));
  ASSERT_EQ(mounter->mount_count(), 1u);
  const WorkloadNfsMount m = mounter->mounts[0];
  EXPECT_EQ(m.netns_path, "/run/netns/sr-wl-dp");
  EXPECT_EQ(m.mountns_path, "/proc/4242/ns/mnt");
  EXPECT_EQ(m.server_ip, "192.0.2.1");
  EXPECT_EQ(m.export_path, "/proj-a");
  EXPECT_EQ(m.target, "/data");
  EXPECT_TRUE(m.create_target);
  EXPECT_EQ(testing::ReadFile(dir_ + "/share-mount"), "/data\n");
  absl::SleepFor(absl::Milliseconds(50));
  EXPECT_EQ(mounter->mount_count(), 1u);  // once
  EXPECT_TRUE(Failures().empty());
  // The fake's "mount namespace" must exist for the unmount to be attempted.
  EXPECT_TRUE(watcher.Release("wl-dp", root_, dir_ + "/share-mount").ok());
  ASSERT_EQ(mounter->unmounts.size(), 1u);
  EXPECT_EQ(mounter->unmounts[0], root_ + " /data");
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/share-mount"));
  // Released again (or never mounted): nothing to do.
  EXPECT_TRUE(watcher.Release("wl-dp", root_, dir_ + "/share-mount").ok());
  EXPECT_EQ(mounter->unmounts.size(), 1u);
}

TEST_F(ShareWatcherTest, AMalformedRequestOrAFailedMountFailsTheWorkload) {
  auto mounter = std::make_shared<FakeMounter>();
  {
    ShareRequestWatcher watcher(mounter);
    std::ofstream(root_ + kNfsRequestPath) << "server=192.0.2.1\nexport=/proj-a\nmountpoint=/proc/x\n";
    watcher.Watch(Watch());
    for (int i = 0; i < 200 && Failures().empty(); ++i) absl::SleepFor(absl::Milliseconds(10));
    ASSERT_EQ(Failures().size(), 1u);
    EXPECT_TRUE(absl::StartsWith(Failures()[0], "PROJECT_SHARE_MOUNT: ")) << Failures()[0];
    EXPECT_TRUE(absl::StrContains(Failures()[0], "mountpoint")) << Failures()[0];
    EXPECT_EQ(mounter->mount_count(), 0u);
    EXPECT_TRUE(watcher.Release("wl-dp", "", dir_ + "/share-mount").ok());
  }
  failures_.clear();
  mounter->mount_result = absl::DeadlineExceededError("no answer within 30s");
  ShareRequestWatcher watcher(mounter);
  std::ofstream(root_ + kNfsRequestPath, std::ios::trunc)
      << "server=192.0.2.1\nexport=/proj-a\nmountpoint=/data\n";
  watcher.Watch(Watch());
  for (int i = 0; i < 200 && Failures().empty(); ++i) absl::SleepFor(absl::Milliseconds(10));
  ASSERT_EQ(Failures().size(), 1u);
  EXPECT_TRUE(absl::StrContains(Failures()[0], "no answer within 30s")) << Failures()[0];
  // The workload's init is gone (""): the record is dropped without an unmount.
  EXPECT_TRUE(watcher.Release("wl-dp", "", dir_ + "/share-mount").ok());
  EXPECT_TRUE(mounter->unmounts.empty());
}

TEST_F(ShareWatcherTest, StopsPollingAtTheBoundOrWhenReleased) {
  auto mounter = std::make_shared<FakeMounter>();
  ShareRequestWatcher watcher(mounter);
  ShareWatch w = Watch();
  w.give_up_after = absl::Milliseconds(50);
  watcher.Watch(w);
  absl::SleepFor(absl::Milliseconds(150));
  std::ofstream(root_ + kNfsRequestPath) << "server=192.0.2.1\nexport=/proj-a\nmountpoint=/data\n";
  absl::SleepFor(absl::Milliseconds(100));
  EXPECT_EQ(mounter->mount_count(), 0u);
  EXPECT_TRUE(Failures().empty());
  const absl::Time t0 = absl::Now();
  EXPECT_TRUE(watcher.Release("wl-dp", "", dir_ + "/share-mount").ok());
  EXPECT_LT(absl::Now() - t0, absl::Seconds(1));
}

TEST(WorkloadNfsMountCreateTarget, TheMountPointIsMadeInsideTheWorkloadsMountNamespaceOnly) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root (a mount namespace)";
  const std::string dir = testing::MakeTempDir("sr-dp-mntns");
  // A stand-in workload: its own mount namespace with a tmpfs over `dir`.
  int ready[2], hold[2];
  ASSERT_EQ(pipe(ready), 0);
  ASSERT_EQ(pipe(hold), 0);
  const char* d = dir.c_str();
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    close(ready[0]);
    close(hold[1]);
    char c = 1;
    if (unshare(CLONE_NEWNS) != 0 || mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0 ||
        mount("tmpfs", d, "tmpfs", 0, "size=1m") != 0)
      _exit(1);
    (void)!write(ready[1], &c, 1);
    (void)!read(hold[0], &c, 1);
    _exit(0);
  }
  close(ready[1]);
  close(hold[0]);
  char c = 0;
  ASSERT_EQ(read(ready[0], &c, 1), 1);
  WorkloadNfsMount m{absl::StrCat("/proc/", pid, "/ns/net"), absl::StrCat("/proc/", pid, "/ns/mnt"),
                     "192.0.2.1", "/proj-a", dir + "/share/data"};
  m.create_target = true;
  // This kernel has no NFS client: the mount itself fails, after the mount point was made.
  absl::Status s = MountNfsInWorkload(m, absl::Seconds(10));
  EXPECT_FALSE(s.ok());
  EXPECT_TRUE(absl::StrContains(s.message(), "mount")) << s;
  struct stat st;
  EXPECT_EQ(stat(absl::StrCat("/proc/", pid, "/root", dir, "/share/data").c_str(), &st), 0);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
  EXPECT_FALSE(std::filesystem::exists(dir + "/share")) << "made in the host's mount namespace";
  close(hold[1]);
  close(ready[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  testing::RemoveTree(dir);
}

}  // namespace
}  // namespace strongroom::host_agent
