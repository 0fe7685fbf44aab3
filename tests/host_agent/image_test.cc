// The real workload image (deploy/image/build-rootfs.sh: debootstrap with slurmd, Slurm client tools, munge
// and the provisioning agent), built here once (debs cached in /var/cache/strongroom/debootstrap) and run by
// host-agent with real runc, both as a directory and as a squashfs catalog entry.
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/subprocess.h"
#include "gtest/gtest.h"
#include "services/host_agent/manager.h"
#include "services/host_agent/mounts.h"
#include "tests/host_agent/test_env.h"

namespace strongroom::host_agent::testing {
namespace {

class NullAudit : public AuditSink {
 public:
  void Record(const AuditEvent&) override {}
};

TEST(WorkloadImage, BuildsAndRunsAsDirectoryAndSquashfs) {
  ASSERT_EQ(geteuid(), 0u);
  const std::string dir = MakeTempDir("sr-ha-image");
  const std::string images = dir + "/images";
  auto built = strongroom::Run({SR_BUILD_ROOTFS, images, "--squashfs", "--enroll-bin", SR_ENROLL_BIN},
                               absl::Minutes(15));
  ASSERT_TRUE(built.ok()) << built.status();
  ASSERT_EQ(built->exit_code, 0) << built->output;
  std::printf("%s", built->output.c_str());
  // build-rootfs.sh's squashfs is the VM's root (unshifted: a VM has no user namespace), and a container
  // refuses it (IMAGE_NOT_SHIFTED); a container's squashfs is the shifted directory packed.
  auto packed = strongroom::Run({"/usr/bin/mksquashfs", images + "/strongroom-workload", images + "/workload-sq.squashfs",
                                 "-noappend", "-comp", "zstd", "-quiet"},
                                absl::Minutes(5));
  ASSERT_TRUE(packed.ok() && packed->exit_code == 0) << (packed.ok() ? packed->output : packed.status().ToString());

  // A project share (world-writable, sticky: files show the job user's host uid) and the node-local munge key
  // that "vmc://c1/munge-key" resolves to (owned by container root's host uid, 0400).
  const std::string share = dir + "/share";
  std::filesystem::create_directories(share);
  chmod(share.c_str(), 01777);
  std::filesystem::create_directories(dir + "/secrets/c1");
  const std::string key = dir + "/secrets/c1/munge-key";
  ASSERT_EQ(strongroom::Run({"/usr/bin/dd", "if=/dev/urandom", "of=" + key, "bs=1024", "count=1"},
                            absl::Seconds(10))
                ->exit_code,
            0);
  ASSERT_EQ(chown(key.c_str(), kUidBase, kUidBase), 0);
  chmod(key.c_str(), 0400);

  ManagerOptions o;
  o.node = "node-a";
  o.agent_id = "spiffe://strongroom.test/host-agent/node-a";
  o.state_dir = dir + "/state";
  o.image_root = images;
  o.allow_unencrypted_scratch = true;  // no device-mapper on this host; the guest test covers dm-crypt
  o.scratch_default_bytes = 256 << 20;
  o.default_grace = absl::Seconds(5);
  o.local_cluster_secrets_dir = dir + "/secrets";
  o.project_shares["proj1"] = share;
  std::filesystem::create_directories(o.state_dir + "/runtime");
  auto m = WorkloadManager::Create(o, MakeOciRuntime("runc", "/usr/sbin/runc", o.state_dir + "/runtime"),
                                   MakeLoopbackOnlyNetwork(), std::make_shared<NullAudit>());
  ASSERT_TRUE(m.ok()) << m.status();
  struct Case {
    const char* image;
    const char* user;  // the job user: created by the entrypoint, or already in the image (nobody)
    uint32_t uid;
    bool provisioning;  // a bundle: munged with the vmc:// key, slurmd -Z started (no controller here)
  };
  for (const Case& c :
       {Case{"strongroom-workload", "alice", 1000, true}, Case{"workload-sq", "nobody", 65534, false}}) {
    SCOPED_TRACE(c.image);
    const std::string id = absl::StrCat(Id("wl-img-"), c.image[0] == 's' ? "dir" : "sq");
    v1::WorkloadSpec spec;
    spec.set_workload_id(id);
    spec.set_kind(v1::WORKLOAD_KIND_CONTAINER);
    spec.mutable_image()->set_name(c.image);
    spec.set_whole_node(true);
    v1::JobRef* job = spec.mutable_job();
    job->set_global_job_id("gj-img-1");
    job->set_project("proj1");
    job->mutable_user()->set_name(c.user);
    job->mutable_user()->set_uid(c.uid);
    job->mutable_user()->set_gid(c.uid);
    if (c.provisioning) {
      v1::ProvisioningBundle* p = spec.mutable_provisioning();
      p->set_local_cluster("c1");
      p->add_slurmctld_addresses("127.0.0.1:6817");
      p->set_node_name("img-node-1");
      p->add_features("sr-tok-1");
      p->mutable_slurm_auth_ref()->set_uri("vmc://c1/munge-key");
    }
    auto started = (*m)->Start(spec, "test");
    ASSERT_TRUE(started.ok()) << started.status();
    const int pid = started->workload.pid();
    EXPECT_EQ(ProcStatusField(pid, "Uid").substr(0, 6), "100000");
    auto inside = [&](std::vector<std::string> argv) {
      argv.insert(argv.begin(), {"/usr/bin/nsenter", "-t", std::to_string(pid), "-U", "-m", "-n", "--"});
      absl::StatusOr<RunResult> r = strongroom::Run(argv, absl::Seconds(30));
      return r.ok() ? *r : RunResult{-1, r.status().ToString()};
    };
    // slurmd from the image runs inside the workload's namespaces.
    RunResult v = inside({"/usr/sbin/slurmd", "-V"});
    EXPECT_TRUE(absl::StrContains(v.output, "22.05")) << v.output;
    // The job user exists (created by the entrypoint unless the image has it).
    RunResult pw;
    for (int i = 0; i < 100; ++i) {
      pw = inside({"/usr/bin/getent", "passwd", std::to_string(c.uid)});
      if (pw.exit_code == 0) break;
      absl::SleepFor(absl::Milliseconds(100));
    }
    EXPECT_TRUE(absl::StartsWith(pw.output, absl::StrCat(c.user, ":x:", c.uid, ":"))) << pw.output;
    // The project share is bound read-write at the same path: the job user writes there, and the file shows
    // up on the host as the user's mapped uid.
    const std::string out = absl::StrCat(share, "/out-", id);
    RunResult w =
        inside({"/usr/bin/setpriv", "--reuid", std::to_string(c.uid), "--regid", std::to_string(c.uid),
                "--clear-groups", "--", "/bin/sh", "-c", absl::StrCat("echo from-job > ", out)});
    EXPECT_EQ(w.exit_code, 0) << w.output;
    struct stat st;
    ASSERT_EQ(stat(out.c_str(), &st), 0) << "nothing written to the share";
    EXPECT_EQ(st.st_uid, kUidBase + c.uid);
    EXPECT_EQ(ReadFile(out), "from-job\n");
    const std::string runtime_log = absl::StrCat(o.state_dir, "/workloads/", id, "/scratch/runtime.log");
    if (c.provisioning) {
      // munged runs; slurmd -Z was started with the bundle's node name and features. (It cannot reach a
      // controller in this loopback-only netns: Slurm resolves nothing without a non-loopback address, so it
      // exits; registration with a real Local slurmctld is the end-to-end test's.)
      bool munged = false;
      for (int i = 0; i < 100 && !munged; ++i) {
        munged = inside({"/usr/bin/pgrep", "-x", "munged"}).exit_code == 0 &&
                 absl::StrContains(ReadFile(runtime_log), "]: slurmd -Z -N img-node-1");
        if (!munged) absl::SleepFor(absl::Milliseconds(100));
      }
      EXPECT_TRUE(munged) << ReadFile(runtime_log);
      EXPECT_TRUE(absl::StrContains(ReadFile(runtime_log), "--conf 'Features=sr-tok-1'"))
          << ReadFile(runtime_log);
      RunResult k = inside({"/usr/bin/cmp", "/run/strongroom/slurm-auth", "/etc/munge/munge.key"});
      // The hostname (the bundle's node name) resolves inside: munged's origin, slurmd's lookups.
      RunResult h = inside({"/usr/bin/getent", "hosts", "img-node-1"});
      EXPECT_EQ(h.exit_code, 0) << h.output << ReadFile(runtime_log);
      EXPECT_EQ(k.exit_code, 0) << k.output;
      RunResult ro = inside({"/bin/sh", "-c", "echo x >> /run/strongroom/slurm-auth"});
      EXPECT_NE(ro.exit_code, 0) << "the munge key must be read-only";
      std::printf("---- runtime.log of %s ----\n%s\n", id.c_str(), ReadFile(runtime_log).c_str());
    }
    auto stopped = (*m)->Stop(id, v1::STOP_REASON_JOB_ENDED, "", absl::Seconds(5), "test");
    ASSERT_TRUE(stopped.ok()) << stopped.status();
    EXPECT_EQ(stopped->state(), v1::WORKLOAD_STATE_STOPPED) << stopped->DebugString();
    EXPECT_TRUE(stopped->scrub().clean()) << stopped->DebugString();
    EXPECT_EQ(Leftovers(o.state_dir, id, o.state_dir + "/runtime"), std::vector<std::string>{});
  }
  EXPECT_TRUE(LoopsBackedUnder(images + "/").empty()) << "the squashfs loop device was not detached";
  m->reset();
  RemoveTree(dir);
}

}  // namespace
}  // namespace strongroom::host_agent::testing
