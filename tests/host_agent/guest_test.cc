// The dm-crypt path, in ONE qemu TCG guest boot (tests/guest/run-guest.sh runs this binary there; this host's
// kernel has no device-mapper). For LUKS2-without-keyslot and for plain dm-crypt: start a real runc workload
// with encrypted scratch, write a known marker from inside, and assert that
//   - the marker is readable through the mounted scratch (so the next check means something),
//   - the backing file holds no plaintext marker,
//   - the volume key (read back from the kernel with `dmsetup table --showkeys`) appears nowhere in the state
//   dir,
//     the tracking DB (and its WAL) or the agent's log, neither raw nor in hex,
// then stop and assert the dm device, the mounts, the loop device and the backing file are gone.
#include <fcntl.h>
#include <unistd.h>

#include <filesystem>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/subprocess.h"
#include "gtest/gtest.h"
#include "services/host_agent/container/scratch.h"
#include "services/host_agent/manager.h"
#include "services/host_agent/mounts.h"
#include "tests/host_agent/test_env.h"

namespace strongroom::host_agent {
namespace {

class NullAudit : public AuditSink {
 public:
  void Record(const AuditEvent&) override {}
};

std::string MarkerScript() {
  return "#!/bin/sh\n"
         "trap 'exit 0' TERM\n"
         "m=\"SRMARKER-$(hostname)-PLAINTEXT\"\n"
         "i=0; while [ $i -lt 4000 ]; do echo \"$m $i\"; i=$((i+1)); done > /data.txt\n"
         "sync\n"
         "echo ready > /probe\n"
         "sleep 100000 &\n"
         "wait\n";
}

// Every regular file under `dir`, not descending into mount points (the live scratch, rootfs, image).
std::vector<std::string> FilesOutsideMounts(const std::string& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (auto it = std::filesystem::recursive_directory_iterator(dir, ec);
       it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
    if (it->is_directory() && IsMountPoint(it->path())) {
      it.disable_recursion_pending();
      continue;
    }
    if (it->is_regular_file()) out.push_back(it->path());
  }
  return out;
}

class GuestTest : public ::testing::TestWithParam<v1::ScratchEncryption> {};

TEST_P(GuestTest, EncryptedScratchLeavesNoPlaintextNoKeyAndNothingAfterStop) {
  ASSERT_TRUE(CheckDmCrypt().ok()) << "run me inside the guest: tests/guest/run-guest.sh -- "
                                   << "<this binary>";
  const bool luks = GetParam() == v1::SCRATCH_ENCRYPTION_LUKS2_NO_KEYSLOT;
  const std::string id = luks ? "wl-guest-luks" : "wl-guest-plain";
  const std::string dir = testing::MakeTempDir("sr-ha-guest");
  std::filesystem::create_directories(dir + "/images");
  ASSERT_TRUE(testing::BuildBusyboxImage(dir + "/images", "busybox", MarkerScript()).ok());

  // The agent's log goes to a file we can search.
  const std::string log_path = dir + "/agent.log";
  const int saved_stderr = dup(2);
  const int log_fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  dup2(log_fd, 2);

  ManagerOptions o;
  o.node = "guest";
  o.agent_id = "spiffe://strongroom.test/host-agent/guest";
  o.state_dir = dir + "/state";
  o.image_root = dir + "/images";
  o.allow_unencrypted_scratch = false;
  o.scratch_default_bytes = 96 << 20;
  std::filesystem::create_directories(o.state_dir + "/runtime");
  auto m = WorkloadManager::Create(o, MakeOciRuntime("runc", "/usr/sbin/runc", o.state_dir + "/runtime"),
                                   MakeLoopbackOnlyNetwork(), std::make_shared<NullAudit>());
  ASSERT_TRUE(m.ok()) << m.status();
  WorkloadManager& manager = **m;

  v1::WorkloadSpec spec;
  spec.set_workload_id(id);
  spec.set_kind(v1::WORKLOAD_KIND_CONTAINER);
  spec.mutable_image()->set_name("busybox");
  spec.set_whole_node(true);
  spec.mutable_scratch()->set_encryption(GetParam());
  const absl::Time t0 = absl::Now();
  auto started = manager.Start(spec, "test");
  ASSERT_TRUE(started.ok()) << started.status() << "\n" << testing::ReadFile(log_path);
  const absl::Duration start_time = absl::Now() - t0;
  EXPECT_EQ(started->workload.scratch_encryption(), GetParam());

  const std::string wdir = o.state_dir + "/workloads/" + id;
  const std::string upper = wdir + "/scratch/upper";
  for (int i = 0; i < 500 && !absl::StrContains(testing::ReadFile(upper + "/probe"), "ready"); ++i) {
    absl::SleepFor(absl::Milliseconds(50));
  }
  const std::string marker = absl::StrCat("SRMARKER-", id, "-PLAINTEXT");
  ASSERT_TRUE(absl::StrContains(testing::ReadFile(upper + "/data.txt"), marker))
      << "the workload wrote no marker";
  sync();

  const std::string backing = testing::ReadFile(wdir + "/scratch.img");
  EXPECT_GT(backing.size(), 0u);
  EXPECT_FALSE(absl::StrContains(backing, marker)) << "plaintext marker found in the backing file";
  EXPECT_FALSE(absl::StrContains(backing, "SRMARKER-")) << "plaintext found in the backing file";
  if (luks) {
    EXPECT_TRUE(absl::StartsWith(backing, "LUKS\xba\xbe")) << "no LUKS2 header";
  }

  // The key as the kernel holds it.
  auto table =
      strongroom::Run({"/usr/sbin/dmsetup", "table", "--showkeys", "strongroom-" + id}, absl::Seconds(20));
  ASSERT_TRUE(table.ok() && table->exit_code == 0)
      << (table.ok() ? table->output : table.status().ToString());
  std::vector<std::string> fields = absl::StrSplit(table->output, ' ', absl::SkipEmpty());
  ASSERT_GE(fields.size(), 5u) << table->output;
  const std::string hex_key = fields[4];
  ASSERT_EQ(hex_key.size(), 128u) << "expected a 512-bit key: " << table->output;
  const std::string raw_key = absl::HexStringToBytes(hex_key);
  std::string upper_hex = absl::AsciiStrToUpper(hex_key);
  EXPECT_FALSE(absl::StrContains(backing, raw_key)) << "the volume key is in the backing file";
  std::vector<std::string> searched = FilesOutsideMounts(dir);
  for (const std::string& f : searched) {
    if (f == wdir + "/scratch.img") continue;
    const std::string text = testing::ReadFile(f);
    EXPECT_FALSE(absl::StrContains(text, raw_key)) << "raw key bytes in " << f;
    EXPECT_FALSE(absl::StrContains(text, hex_key)) << "hex key in " << f;
    EXPECT_FALSE(absl::StrContains(text, upper_hex)) << "hex key in " << f;
  }
  bool db_searched = false;
  for (const std::string& f : searched) db_searched |= absl::EndsWith(f, "workloads.db");
  EXPECT_TRUE(db_searched);

  const absl::Time t1 = absl::Now();
  auto stopped = manager.Stop(id, v1::STOP_REASON_JOB_ENDED, "", absl::Seconds(5), "test");
  const absl::Duration stop_time = absl::Now() - t1;
  ASSERT_TRUE(stopped.ok()) << stopped.status();
  EXPECT_EQ(stopped->state(), v1::WORKLOAD_STATE_STOPPED) << stopped->DebugString();
  EXPECT_TRUE(stopped->scrub().clean()) << stopped->scrub().DebugString();
  EXPECT_NE(access(("/dev/mapper/strongroom-" + id).c_str(), F_OK), 0) << "dm device still there";
  EXPECT_FALSE(std::filesystem::exists(wdir + "/scratch.img"));
  EXPECT_EQ(testing::Leftovers(o.state_dir, id, o.state_dir + "/runtime"), std::vector<std::string>{});

  // The log, after everything happened, also holds no key.
  const std::string log = testing::ReadFile(log_path);
  EXPECT_FALSE(absl::StrContains(log, raw_key));
  EXPECT_FALSE(absl::StrContains(log, hex_key));
  dup2(saved_stderr, 2);
  close(log_fd);
  std::printf("GUEST-TIMING %s start_ms=%.0f stop_ms=%.0f scratch_ms=%.0f\n", luks ? "luks2" : "plain",
              absl::ToDoubleMilliseconds(start_time), absl::ToDoubleMilliseconds(stop_time),
              absl::ToDoubleMilliseconds(manager.last_start_timings().scratch));
  m->reset();  // joins the monitors before the files go
  testing::RemoveTree(dir);
}

INSTANTIATE_TEST_SUITE_P(Modes, GuestTest,
                         ::testing::Values(v1::SCRATCH_ENCRYPTION_LUKS2_NO_KEYSLOT,
                                           v1::SCRATCH_ENCRYPTION_PLAIN_DMCRYPT));

}  // namespace
}  // namespace strongroom::host_agent
