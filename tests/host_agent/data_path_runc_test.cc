// The secure data path of a container (issue 14) with real runc: host-agent creates the workload's user and
// network namespaces together, so container root can configure its own network for charon (addresses,
// table-220 routes, policy rules, a TUN device, UDP/TCP ports below 1024); the same container without the
// data path cannot (today's layout: EPERM). Also: no development munge key, the share request reaching the
// mounter (a fake: this host has no NFS client) and unmounted before the kill, a malformed request and the
// entrypoint's data-path exit codes failing the workload with their reasons, and the refusal without an NFS
// client. Every test checks that teardown leaves nothing (userns bind, TUN node, netns, mounts, dirs).
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "services/host_agent/container/netns.h"
#include "services/host_agent/container/oci_config.h"
#include "services/host_agent/container/runtime.h"
#include "services/host_agent/container/share_request_watcher.h"
#include "services/host_agent/manager.h"
#include "tests/host_agent/test_env.h"

namespace strongroom::host_agent {
namespace {

using testing::Id;
using testing::kUidBase;

class NullAudit : public AuditSink {
 public:
  void Record(const AuditEvent& e) override {
    absl::MutexLock lock(&mu_);
    actions_.push_back(e.action);
  }
  bool Has(const std::string& action) {
    absl::MutexLock lock(&mu_);
    return std::find(actions_.begin(), actions_.end(), action) != actions_.end();
  }

 private:
  absl::Mutex mu_;
  std::vector<std::string> actions_;
};

// What host-agent would mount; notes whether the workload's init still ran at the unmount.
class RecordingMounter : public ShareMounter {
 public:
  absl::Status Mount(const WorkloadNfsMount& m) override {
    absl::MutexLock lock(&mu_);
    mounts_.push_back(m);
    return absl::OkStatus();
  }
  absl::Status Unmount(const std::string& mountns_path, const std::string& target) override {
    absl::MutexLock lock(&mu_);
    unmounts_.push_back(absl::StrCat(mountns_path, " ", target,
                                     access(mountns_path.c_str(), F_OK) == 0 ? " alive" : " gone"));
    return absl::OkStatus();
  }
  std::vector<WorkloadNfsMount> mounts() {
    absl::MutexLock lock(&mu_);
    return mounts_;
  }
  std::vector<std::string> unmounts() {
    absl::MutexLock lock(&mu_);
    return unmounts_;
  }

 private:
  absl::Mutex mu_;
  std::vector<WorkloadNfsMount> mounts_;
  std::vector<std::string> unmounts_;
};

// What container root can do to its network: each line NAME=ok or NAME=fail:<error>. busybox has no
// `ip tuntap` and no `ip rule ... ipproto`, so `tunctl` (TUNSETIFF on /dev/net/tun) and a `from` rule stand
// in; its nc has no UDP listen, so the privileged-port check is TCP 500 (the kernel's check,
// CAP_NET_BIND_SERVICE in the netns's owner, is the same for UDP). Then it asks for the project share.
constexpr char kNetProbe[] =
    "#!/bin/sh\n"
    "trap 'exit 0' TERM\n"
    "try() { n=$1; shift; if o=$(\"$@\" 2>&1); then echo \"$n=ok\"; else echo \"$n=fail:$o\"; fi; }\n"
    "{\n"
    "  grep '^CapEff:' /proc/self/status\n"
    "  try addr ip addr add 192.0.2.77/24 dev lo\n"
    "  try route ip route add 198.51.100.0/24 dev lo table 220\n"
    "  try rule ip rule add pref 210 from 192.0.2.77 table main\n"
    "  try tun tunctl -t t0\n"
    "  ip -o link show t0 >/dev/null 2>&1 && echo tundev=present || echo tundev=absent\n"
    "  stat -c 'tunnode=%F %u:%g %a %t:%T' /dev/net/tun 2>&1\n"
    "  nc -l -p 500 >/dev/null 2>/nc.err & p=$!\n"
    "  sleep 0.5\n"
    "  if cat /proc/net/tcp /proc/net/tcp6 | grep -q ':01F4 [0:]*0000 0A'; then echo bind500=ok; else "
    "echo \"bind500=fail:$(cat /nc.err)\"; fi\n"
    "  kill $p 2>/dev/null\n"
    "  test -e /run/strongroom/slurm-auth && echo munge=bound || echo munge=absent\n"
    "} > /netprobe 2>&1\n"
    "printf 'server=192.0.2.1\\nexport=/proj-a\\nmountpoint=/data\\n' > /run/strongroom/nfs-request\n"
    "echo ready >> /netprobe\n"
    "sleep 100000 &\n"
    "wait\n";

class DataPathRuncTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(geteuid(), 0u) << "needs root (runc, loop devices, mounts, namespaces)";
    dir_ = testing::MakeTempDir("sr-ha-dp");
    ASSERT_FALSE(dir_.empty());
    std::filesystem::create_directories(dir_ + "/images");
    ASSERT_TRUE(testing::BuildBusyboxImage(dir_ + "/images", "netprobe", kNetProbe).ok());
    ASSERT_TRUE(testing::BuildBusyboxImage(dir_ + "/images", "exit71", "#!/bin/sh\nsleep 1\nexit 71\n").ok());
    ASSERT_TRUE(testing::BuildBusyboxImage(
                    dir_ + "/images", "badrequest",
                    "#!/bin/sh\nprintf 'server=192.0.2.1\\nexport=/p\\nmountpoint=/proc/x\\n' > "
                    "/run/strongroom/nfs-request\nsleep 100000 &\nwait\n")
                    .ok());
    // Asks for its share only after the agent that started it is gone.
    ASSERT_TRUE(testing::BuildBusyboxImage(
                    dir_ + "/images", "latereq",
                    "#!/bin/sh\ntrap 'exit 0' TERM\nsleep 3\n"
                    "printf 'server=192.0.2.1\\nexport=/proj-a\\nmountpoint=/data\\n' > "
                    "/run/strongroom/nfs-request\nsleep 100000 &\nwait\n")
                    .ok());
    // A development munge key that a data-path workload must not get.
    std::filesystem::create_directories(dir_ + "/secrets/c1");
    const std::string key = dir_ + "/secrets/c1/munge-key";
    std::ofstream(key) << "not-a-real-munge-key";
    ASSERT_EQ(chown(key.c_str(), kUidBase, kUidBase), 0);
    chmod(key.c_str(), 0400);
    audit_ = std::make_shared<NullAudit>();
    mounter_ = std::make_shared<RecordingMounter>();
  }

  void NewManager(bool nfs_client) {
    ManagerOptions o;
    o.node = "node-a";
    o.agent_id = "spiffe://strongroom.test/host-agent/node-a";
    o.state_dir = dir_ + "/state";
    o.image_root = dir_ + "/images";
    o.allow_unencrypted_scratch = true;  // no device-mapper here
    o.scratch_default_bytes = 256 << 20;
    o.local_cluster_secrets_dir = dir_ + "/secrets";
    o.kernel_has_nfs_client = [nfs_client] { return nfs_client; };
    o.share_mounter = mounter_;
    std::filesystem::create_directories(runc_root());
    auto m = WorkloadManager::Create(o, MakeOciRuntime("runc", "/usr/sbin/runc", runc_root()),
                                     MakeLoopbackOnlyNetwork(), audit_);
    ASSERT_TRUE(m.ok()) << m.status();
    manager_ = std::move(*m);
  }

  void TearDown() override {
    if (manager_ != nullptr) {
      for (const v1::Workload& w : manager_->List())
        (void)manager_->Stop(w.spec().workload_id(), v1::STOP_REASON_OPERATOR, "", absl::Seconds(1), "test");
    }
    manager_.reset();
    testing::RemoveTree(dir_);
  }

  std::string runc_root() const { return dir_ + "/state/runtime"; }
  std::string workload_dir(const std::string& id) const { return dir_ + "/state/workloads/" + id; }

  v1::WorkloadSpec Spec(const std::string& id, const std::string& image, bool data_path) {
    v1::WorkloadSpec s;
    s.set_workload_id(id);
    s.set_kind(v1::WORKLOAD_KIND_CONTAINER);
    s.mutable_image()->set_name(image);
    s.set_whole_node(true);
    s.mutable_job()->set_project("proj1");
    v1::ProvisioningBundle* p = s.mutable_provisioning();
    p->set_local_cluster("c1");
    p->add_slurmctld_addresses("192.0.2.1:6817");
    p->set_enrollment_address("192.0.2.1:7443");
    p->mutable_slurm_auth_ref()->set_uri("vmc://c1/munge-key");
    p->set_ipsec_data_path(data_path);
    return s;
  }

  std::string WaitForNetProbe(const std::string& id) {
    const std::string probe = workload_dir(id) + "/scratch/upper/netprobe";
    std::string text;
    for (int i = 0; i < 300 && !absl::StrContains(text, "ready"); ++i) {
      absl::SleepFor(absl::Milliseconds(20));
      text = testing::ReadFile(probe);
    }
    return text;
  }

  v1::Workload WaitForEnd(const std::string& id) {
    v1::Workload w;
    for (int i = 0; i < 500; ++i) {
      w = *manager_->Get(id);
      if (w.state() == v1::WORKLOAD_STATE_FAILED || w.state() == v1::WORKLOAD_STATE_STOPPED) break;
      absl::SleepFor(absl::Milliseconds(20));
    }
    return w;
  }

  std::string dir_;
  std::shared_ptr<NullAudit> audit_;
  std::shared_ptr<RecordingMounter> mounter_;
  std::unique_ptr<WorkloadManager> manager_;
};

TEST_F(DataPathRuncTest, ContainerRootConfiguresItsOwnNetworkAndTeardownLeavesNothing) {
  NewManager(/*nfs_client=*/true);
  const std::string id = Id("wl-dp-net");
  auto started = manager_->Start(Spec(id, "netprobe", true), "test");
  ASSERT_TRUE(started.ok()) << started.status();
  const pid_t init = started->workload.pid();
  // Host side while it runs: the userns bind, the TUN node (uid_base, 0600), and the netns owned by it.
  const std::string dir = workload_dir(id);
  struct stat tun;
  ASSERT_EQ(stat((dir + "/tun").c_str(), &tun), 0);
  EXPECT_TRUE(S_ISCHR(tun.st_mode));
  EXPECT_EQ(tun.st_mode & 07777, 0600u);
  EXPECT_EQ(tun.st_uid, kUidBase);
  struct stat a, b;
  ASSERT_EQ(stat((dir + "/userns").c_str(), &a), 0);
  ASSERT_EQ(stat(absl::StrCat("/proc/", init, "/ns/user").c_str(), &b), 0);
  EXPECT_EQ(a.st_ino, b.st_ino) << "the container runs in the user namespace host-agent made";
  ASSERT_EQ(stat(NetnsPath(NetnsNameFor(id)).c_str(), &a), 0);
  ASSERT_EQ(stat(absl::StrCat("/proc/", init, "/ns/net").c_str(), &b), 0);
  EXPECT_EQ(a.st_ino, b.st_ino);

  const std::string probe = WaitForNetProbe(id);
  const std::string caps = absl::StrCat(absl::Hex(KeptCapabilityMask(true), absl::kZeroPad16));
  EXPECT_TRUE(absl::StrContains(probe, "CapEff:\t" + caps)) << probe;
  for (const char* ok : {"addr=ok", "route=ok", "rule=ok", "tun=ok", "tundev=present", "bind500=ok"})
    EXPECT_TRUE(absl::StrContains(probe, ok)) << ok << "\n" << probe;
  // Container root owns it (host uid_base), 0600, c 10:200.
  EXPECT_TRUE(absl::StrContains(probe, "tunnode=character special file 0:0 600 a:c8")) << probe;
  // The munge key comes from the controlling VM: no development key, no audit of that mode.
  EXPECT_TRUE(absl::StrContains(probe, "munge=absent")) << probe;
  EXPECT_FALSE(audit_->Has("host-agent.dev_local_munge_key"));

  // The share request reached the mounter with the workload's namespaces.
  std::vector<WorkloadNfsMount> mounts;
  for (int i = 0; i < 200 && mounts.empty(); ++i) {
    absl::SleepFor(absl::Milliseconds(20));
    mounts = mounter_->mounts();
  }
  ASSERT_EQ(mounts.size(), 1u);
  EXPECT_EQ(mounts[0].netns_path, NetnsPath(NetnsNameFor(id)));
  EXPECT_EQ(mounts[0].mountns_path, absl::StrCat("/proc/", init, "/ns/mnt"));
  EXPECT_EQ(mounts[0].server_ip, "192.0.2.1");
  EXPECT_EQ(mounts[0].export_path, "/proj-a");
  EXPECT_EQ(mounts[0].target, "/data");

  auto stopped = manager_->Stop(id, v1::STOP_REASON_JOB_ENDED, "done", absl::Seconds(5), "test");
  ASSERT_TRUE(stopped.ok()) << stopped.status();
  EXPECT_EQ(stopped->state(), v1::WORKLOAD_STATE_STOPPED) << stopped->DebugString();
  EXPECT_TRUE(stopped->scrub().clean()) << stopped->scrub().DebugString();
  // Unmounted inside the workload while its mount namespace still existed (before the kill).
  EXPECT_EQ(mounter_->unmounts(),
            std::vector<std::string>{absl::StrCat("/proc/", init, "/ns/mnt /data alive")});
  EXPECT_EQ(testing::Leftovers(dir_ + "/state", id, runc_root()), std::vector<std::string>{});
  EXPECT_FALSE(std::filesystem::exists(dir + "/userns"));
  EXPECT_FALSE(std::filesystem::exists(dir + "/tun"));
}

TEST_F(DataPathRuncTest, WithoutTheDataPathContainerRootCannot) {
  NewManager(/*nfs_client=*/true);
  const std::string id = Id("wl-dp-off");
  auto started = manager_->Start(Spec(id, "netprobe", false), "test");
  ASSERT_TRUE(started.ok()) << started.status();
  const std::string probe = WaitForNetProbe(id);
  const std::string caps = absl::StrCat(absl::Hex(KeptCapabilityMask(false), absl::kZeroPad16));
  EXPECT_TRUE(absl::StrContains(probe, "CapEff:\t" + caps)) << probe;
  for (const char* denied : {"addr=fail:ip: RTNETLINK answers: Operation not permitted",
                             "route=fail:ip: RTNETLINK answers: Operation not permitted",
                             "rule=fail:ip: RTNETLINK answers: Operation not permitted"})
    EXPECT_TRUE(absl::StrContains(probe, denied)) << denied << "\n" << probe;
  EXPECT_TRUE(absl::StrContains(probe, "tun=fail:")) << probe;  // no /dev/net/tun at all
  EXPECT_TRUE(absl::StrContains(probe, "tundev=absent")) << probe;
  EXPECT_TRUE(absl::StrContains(probe, "bind500=fail:nc: bind: Permission denied")) << probe;
  EXPECT_TRUE(absl::StrContains(probe, "munge=bound")) << probe;  // today's development key
  EXPECT_FALSE(std::filesystem::exists(workload_dir(id) + "/userns"));
  absl::SleepFor(absl::Milliseconds(200));
  EXPECT_TRUE(mounter_->mounts().empty());  // nobody polls for a share request
  auto stopped = manager_->Stop(id, v1::STOP_REASON_JOB_ENDED, "done", absl::Seconds(5), "test");
  ASSERT_TRUE(stopped.ok()) << stopped.status();
  EXPECT_TRUE(stopped->scrub().clean()) << stopped->scrub().DebugString();
  EXPECT_EQ(testing::Leftovers(dir_ + "/state", id, runc_root()), std::vector<std::string>{});
}

TEST_F(DataPathRuncTest, RefusedWithoutAnNfsClientOrADevelopmentShare) {
  NewManager(/*nfs_client=*/false);
  const std::string id = Id("wl-dp-nonfs");
  auto started = manager_->Start(Spec(id, "netprobe", true), "test");
  ASSERT_EQ(started.status().code(), absl::StatusCode::kFailedPrecondition) << started.status();
  EXPECT_TRUE(absl::StrContains(started.status().message(), "provisioning.ipsec_data_path"));
  EXPECT_TRUE(absl::StrContains(started.status().message(), "no NFS client"));
  const v1::Workload w = *manager_->Get(id);
  EXPECT_EQ(w.state(), v1::WORKLOAD_STATE_FAILED);
  EXPECT_EQ(w.failure().reason(), "NFS_CLIENT_UNAVAILABLE");
  EXPECT_EQ(testing::Leftovers(dir_ + "/state", id, runc_root()), std::vector<std::string>{});
}

TEST_F(DataPathRuncTest, AMalformedShareRequestFailsTheWorkload) {
  NewManager(/*nfs_client=*/true);
  const std::string id = Id("wl-dp-bad");
  auto started = manager_->Start(Spec(id, "badrequest", true), "test");
  ASSERT_TRUE(started.ok()) << started.status();
  const v1::Workload w = WaitForEnd(id);
  EXPECT_EQ(w.state(), v1::WORKLOAD_STATE_FAILED) << w.DebugString();
  EXPECT_EQ(w.failure().phase(), v1::FAILURE_PHASE_EXECUTION);
  EXPECT_EQ(w.failure().reason(), "PROJECT_SHARE_MOUNT") << w.DebugString();
  EXPECT_TRUE(absl::StrContains(w.failure().message(), "mountpoint")) << w.DebugString();
  EXPECT_TRUE(w.scrub().clean()) << w.DebugString();
  EXPECT_TRUE(mounter_->mounts().empty());
  EXPECT_EQ(testing::Leftovers(dir_ + "/state", id, runc_root()), std::vector<std::string>{});
}

TEST_F(DataPathRuncTest, TheEntrypointsTunnelExitCodeIsTheReason) {
  NewManager(/*nfs_client=*/true);
  const std::string id = Id("wl-dp-71");
  auto started = manager_->Start(Spec(id, "exit71", true), "test");
  ASSERT_TRUE(started.ok()) << started.status();
  const v1::Workload w = WaitForEnd(id);
  EXPECT_EQ(w.state(), v1::WORKLOAD_STATE_FAILED) << w.DebugString();
  EXPECT_EQ(w.exit().exit_code(), 71);
  EXPECT_EQ(w.failure().reason(), "DATA_PATH_TUNNEL") << w.DebugString();
  EXPECT_TRUE(absl::StrContains(w.failure().message(), "(entrypoint exit 71)")) << w.DebugString();
  EXPECT_TRUE(w.scrub().clean()) << w.DebugString();
  EXPECT_EQ(testing::Leftovers(dir_ + "/state", id, runc_root()), std::vector<std::string>{});
}

TEST_F(DataPathRuncTest, AnAdoptedWorkloadIsHealthyAndItsShareRequestIsStillServed) {
  NewManager(/*nfs_client=*/true);
  const std::string id = Id("wl-dp-adopt");
  auto started = manager_->Start(Spec(id, "latereq", true), "test");
  ASSERT_TRUE(started.ok()) << started.status();
  const pid_t init = started->workload.pid();
  manager_.reset();  // the agent stops; the workload runs on (a restart adopts it)
  EXPECT_EQ(kill(init, 0), 0);
  NewManager(/*nfs_client=*/true);
  ASSERT_TRUE(manager_->Reconcile().ok());
  v1::Workload w = *manager_->Get(id);
  EXPECT_EQ(w.state(), v1::WORKLOAD_STATE_RUNNING) << w.DebugString();
  EXPECT_TRUE(w.adopted()) << w.DebugString();  // the userns bind and the TUN node were found
  std::vector<WorkloadNfsMount> mounts;
  for (int i = 0; i < 300 && mounts.empty(); ++i) {
    absl::SleepFor(absl::Milliseconds(20));
    mounts = mounter_->mounts();
  }
  ASSERT_EQ(mounts.size(), 1u);
  EXPECT_EQ(mounts[0].mountns_path, absl::StrCat("/proc/", init, "/ns/mnt"));
  auto stopped = manager_->Stop(id, v1::STOP_REASON_JOB_ENDED, "done", absl::Seconds(5), "test");
  ASSERT_TRUE(stopped.ok()) << stopped.status();
  EXPECT_TRUE(stopped->scrub().clean()) << stopped->scrub().DebugString();
  EXPECT_EQ(mounter_->unmounts().size(), 1u);
  EXPECT_EQ(testing::Leftovers(dir_ + "/state", id, runc_root()), std::vector<std::string>{});
}

}  // namespace
}  // namespace strongroom::host_agent
