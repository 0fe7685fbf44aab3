// The real workload image (deploy/image/build-rootfs.sh: debootstrap with slurmd, Slurm client tools, munge
// and the provisioning agent), built here once (debs cached in /var/cache/strongroom/debootstrap) and run by
// host-agent with real runc, both as a directory and as a squashfs catalog entry.
#include <unistd.h>

#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "services/host_agent/manager.h"
#include "services/host_agent/mounts.h"
#include "common/subprocess.h"
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
  auto built = strongroom::Run({SR_BUILD_ROOTFS, images, "--squashfs"}, absl::Minutes(15));
  ASSERT_TRUE(built.ok()) << built.status();
  ASSERT_EQ(built->exit_code, 0) << built->output;
  std::printf("%s", built->output.c_str());
  std::filesystem::rename(images + "/strongroom-workload.squashfs", images + "/workload-sq.squashfs");

  ManagerOptions o;
  o.node = "node-a";
  o.agent_id = "spiffe://strongroom.test/host-agent/node-a";
  o.state_dir = dir + "/state";
  o.image_root = images;
  o.allow_unencrypted_scratch = true;  // no device-mapper on this host; the guest test covers dm-crypt
  o.scratch_default_bytes = 256 << 20;
  o.default_grace = absl::Seconds(5);
  std::filesystem::create_directories(o.state_dir + "/runtime");
  auto m = WorkloadManager::Create(o, MakeOciRuntime("runc", "/usr/sbin/runc", o.state_dir + "/runtime"),
                                   MakeLoopbackOnlyNetwork(), std::make_shared<NullAudit>());
  ASSERT_TRUE(m.ok()) << m.status();
  for (const char* image : {"strongroom-workload", "workload-sq"}) {
    SCOPED_TRACE(image);
    const std::string id = absl::StrCat(Id("wl-img-"), image[0] == 's' ? "dir" : "sq");
    v1::WorkloadSpec spec;
    spec.set_workload_id(id);
    spec.set_kind(v1::WORKLOAD_KIND_CONTAINER);
    spec.mutable_image()->set_name(image);
    spec.set_whole_node(true);
    auto started = (*m)->Start(spec, "test");
    ASSERT_TRUE(started.ok()) << started.status();
    const int pid = started->workload.pid();
    EXPECT_EQ(ProcStatusField(pid, "Uid").substr(0, 6), "100000");
    // slurmd from the image runs inside the workload's namespaces.
    auto v = strongroom::Run(
        {"/usr/bin/nsenter", "-t", std::to_string(pid), "-U", "-m", "-n", "--", "/usr/sbin/slurmd", "-V"},
        absl::Seconds(30));
    ASSERT_TRUE(v.ok()) << v.status();
    EXPECT_TRUE(absl::StrContains(v->output, "22.05")) << v->output;
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
