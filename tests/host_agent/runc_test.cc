// host-agent against the real world, in-process: real runc containers, real loop devices, ext4 and overlayfs,
// a real netns (loopback-only here; tests/host_agent/netd_test.cc attaches real netd). This host has no
// device-mapper, so these tests use the development-only unencrypted scratch, and assert that the default
// (encrypted) refuses; the dm-crypt path runs in the qemu guest (tests/guest/).
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/enrollment_ticket.h"
#include "gtest/gtest.h"
#include "services/host_agent/container/oci_config.h"
#include "services/host_agent/container/runtime.h"
#include "services/host_agent/container/scratch.h"
#include "services/host_agent/manager.h"
#include "tests/host_agent/test_env.h"

namespace strongroom::host_agent {
namespace {

using testing::Id;
using testing::kUidBase;

class RecordingAudit : public AuditSink {
 public:
  void Record(const AuditEvent& e) override {
    absl::MutexLock lock(&mu_);
    events_.push_back(e);
  }
  bool Has(const std::string& action) {
    absl::MutexLock lock(&mu_);
    for (const AuditEvent& e : events_) {
      if (e.action == action) return true;
    }
    return false;
  }
  // Whether any record carries `text` anywhere.
  bool Mentions(const std::string& text) {
    absl::MutexLock lock(&mu_);
    for (const AuditEvent& e : events_) {
      if (absl::StrContains(absl::StrCat(e.actor, e.action, e.object, e.outcome, e.detail), text))
        return true;
      for (const auto& [k, v] : e.details) {
        if (absl::StrContains(v, text)) return true;
      }
    }
    return false;
  }

 private:
  absl::Mutex mu_;
  std::vector<AuditEvent> events_;
};

class RuncTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(geteuid(), 0u) << "needs root (runc, loop devices, mounts); CI runs as root";
    dir_ = testing::MakeTempDir("sr-ha-runc");
    ASSERT_FALSE(dir_.empty());
    std::filesystem::create_directories(dir_ + "/images");
    ASSERT_TRUE(testing::BuildBusyboxImage(dir_ + "/images", "busybox", testing::ProbeScript()).ok());
    ASSERT_TRUE(testing::BuildBusyboxImage(dir_ + "/images", "exit3", "#!/bin/sh\nexit 3\n").ok());
    audit_ = std::make_shared<RecordingAudit>();
    manager_ = NewManager(true);
    ASSERT_NE(manager_, nullptr);
  }

  std::unique_ptr<WorkloadManager> NewManager(bool allow_unencrypted,
                                              const std::function<void(ManagerOptions&)>& tweak = nullptr) {
    ManagerOptions o;
    o.node = "node-a";
    o.agent_id = "spiffe://strongroom.test/host-agent/node-a";
    o.state_dir = dir_ + "/state";
    o.image_root = dir_ + "/images";
    o.allow_unencrypted_scratch = allow_unencrypted;
    o.scratch_default_bytes = 256 << 20;
    o.default_grace = absl::Seconds(5);
    if (tweak) tweak(o);
    std::filesystem::create_directories(runc_root());
    auto m = WorkloadManager::Create(o, MakeOciRuntime("runc", "/usr/sbin/runc", runc_root()),
                                     MakeLoopbackOnlyNetwork(), audit_);
    EXPECT_TRUE(m.ok()) << m.status();
    return m.ok() ? std::move(*m) : nullptr;
  }

  void TearDown() override {
    if (manager_ != nullptr) {
      for (const v1::Workload& w : manager_->List()) {
        (void)manager_->Stop(w.spec().workload_id(), v1::STOP_REASON_OPERATOR, "", absl::Seconds(1), "test");
      }
    }
    manager_.reset();
    testing::RemoveTree(dir_);
  }

  std::string runc_root() const { return dir_ + "/state/runtime"; }

  v1::WorkloadSpec Spec(const std::string& id, const std::string& image = "busybox") {
    v1::WorkloadSpec s;
    s.set_workload_id(id);
    s.set_kind(v1::WORKLOAD_KIND_CONTAINER);
    s.mutable_image()->set_name(image);
    s.set_whole_node(true);
    return s;
  }

  // Waits until the container has written its probe.
  std::string WaitForProbe(const std::string& id) {
    const std::string probe = dir_ + "/state/workloads/" + id + "/scratch/upper/probe";
    for (int i = 0; i < 200; ++i) {
      std::string text = testing::ReadFile(probe);
      if (absl::StrContains(text, "ready")) return text;
      absl::SleepFor(absl::Milliseconds(20));
    }
    return testing::ReadFile(probe);
  }

  std::string dir_;
  std::shared_ptr<RecordingAudit> audit_;
  std::unique_ptr<WorkloadManager> manager_;
};

TEST_F(RuncTest, FakerootCapabilitiesOverlayAndCleanStop) {
  auto started = manager_->Start(Spec(Id("wl-runc-1")), "test");
  ASSERT_TRUE(started.ok()) << started.status();
  const v1::Workload& w = started->workload;
  EXPECT_TRUE(started->created);
  EXPECT_EQ(w.state(), v1::WORKLOAD_STATE_RUNNING);
  EXPECT_EQ(w.scratch_encryption(), v1::SCRATCH_ENCRYPTION_NONE);
  EXPECT_EQ(w.host_uid_base(), kUidBase);
  ASSERT_GT(w.pid(), 0);
  EXPECT_TRUE(audit_->Has("host-agent.scratch_unencrypted"));

  const std::string probe = WaitForProbe(Id("wl-runc-1"));
  // Inside: uid 0, exactly the documented capabilities, no_new_privs, seccomp filter on.
  EXPECT_TRUE(absl::StrContains(probe, "uid=0\n")) << probe;
  const std::string caps = absl::StrCat(absl::Hex(KeptCapabilityMask(), absl::kZeroPad16));
  EXPECT_TRUE(absl::StrContains(probe, "CapEff:\t" + caps)) << probe << " want " << caps;
  EXPECT_TRUE(absl::StrContains(probe, "CapBnd:\t" + caps)) << probe;
  EXPECT_TRUE(absl::StrContains(probe, "NoNewPrivs:\t1")) << probe;
  EXPECT_TRUE(absl::StrContains(probe, "Seccomp:\t2")) << probe;
  EXPECT_TRUE(absl::StrContains(probe, (std::string("hostname=") + Id("wl-runc-1")))) << probe;
  // Loopback only (no netd attached in this test): lo and nothing else.
  EXPECT_TRUE(absl::StrContains(probe, "lo:")) << probe;
  EXPECT_FALSE(absl::StrContains(probe, "eth0")) << probe;
  // Outside: an unprivileged host uid.
  EXPECT_EQ(testing::ProcStatusField(w.pid(), "Uid").substr(0, 6), "100000")
      << testing::ProcStatusField(w.pid(), "Uid");
  // The write landed in the overlay's upper dir (on the scratch), not in the image.
  EXPECT_EQ(testing::ReadFile(dir_ + (std::string("/state/workloads/") + Id("wl-runc-1") +
                                      std::string("/scratch/upper/marker"))),
            "marker-from-inside\n");
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/images/busybox/marker"));

  auto stopped = manager_->Stop(Id("wl-runc-1"), v1::STOP_REASON_JOB_ENDED, "done", absl::Seconds(5), "test");
  ASSERT_TRUE(stopped.ok()) << stopped.status();
  EXPECT_EQ(stopped->state(), v1::WORKLOAD_STATE_STOPPED) << stopped->DebugString();
  EXPECT_TRUE(stopped->scrub().clean()) << stopped->scrub().DebugString();
  EXPECT_EQ(stopped->exit().exit_code(), 0);  // the entrypoint trapped SIGTERM and exited 0
  EXPECT_EQ(kill(w.pid(), 0), -1);
  EXPECT_EQ(testing::Leftovers(dir_ + "/state", Id("wl-runc-1"), runc_root()), std::vector<std::string>{});
  // Idempotent stop; a stopped id is never reused.
  EXPECT_EQ(manager_->Stop(Id("wl-runc-1"), v1::STOP_REASON_JOB_ENDED, "", absl::Seconds(1), "t")->revision(),
            stopped->revision());
  EXPECT_EQ(manager_->Start(Spec(Id("wl-runc-1")), "test").status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_F(RuncTest, IdempotentStartAndDuplicateIdWithDifferentSpec) {
  auto first = manager_->Start(Spec(Id("wl-idem")), "test");
  ASSERT_TRUE(first.ok()) << first.status();
  auto again = manager_->Start(Spec(Id("wl-idem")), "test");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_FALSE(again->created);
  EXPECT_EQ(again->workload.pid(), first->workload.pid());
  v1::WorkloadSpec other = Spec(Id("wl-idem"));
  other.mutable_scratch()->set_size_bytes(128 << 20);
  EXPECT_EQ(manager_->Start(other, "test").status().code(), absl::StatusCode::kAlreadyExists);
  // A second whole-node workload is refused while this one runs.
  EXPECT_EQ(manager_->Start(Spec(Id("wl-idem-2")), "test").status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(manager_->Get(Id("wl-idem"))->revision(), first->workload.revision());
}

TEST_F(RuncTest, MainProcessExitEndsTheWorkloadWithItsStatus) {
  auto started = manager_->Start(Spec(Id("wl-exit3"), "exit3"), "test");
  // The entrypoint may exit before or after RUNNING is recorded; either way the workload ends FAILED (exit
  // 3).
  if (!started.ok()) {
    GTEST_LOG_(INFO) << "start raced with exit: " << started.status();
  }
  v1::Workload w;
  for (int i = 0; i < 200; ++i) {
    w = *manager_->Get(Id("wl-exit3"));
    if (w.state() == v1::WORKLOAD_STATE_FAILED || w.state() == v1::WORKLOAD_STATE_STOPPED) break;
    absl::SleepFor(absl::Milliseconds(20));
  }
  EXPECT_EQ(w.state(), v1::WORKLOAD_STATE_FAILED) << w.DebugString();
  if (started.ok()) {
    EXPECT_EQ(w.exit().exit_code(), 3) << w.DebugString();
    EXPECT_EQ(w.failure().phase(), v1::FAILURE_PHASE_EXECUTION);
  }
  EXPECT_TRUE(w.scrub().clean()) << w.DebugString();
  EXPECT_EQ(testing::Leftovers(dir_ + "/state", Id("wl-exit3"), runc_root()), std::vector<std::string>{});
}

TEST_F(RuncTest, BadInputChangesNothing) {
  struct Case {
    v1::WorkloadSpec spec;
    absl::StatusCode code;
    std::string needle;
  };
  std::vector<Case> cases;
  cases.push_back(
      {Spec(Id("wl-bad-image"), "no-such-image"), absl::StatusCode::kNotFound, "not in this node's catalog"});
  cases.push_back(
      {Spec(Id("wl-bad-trav"), "../images/busybox"), absl::StatusCode::kInvalidArgument, "image.name"});
  cases.push_back({Spec(Id("wl-bad-dots"), "busybox..x"), absl::StatusCode::kInvalidArgument, "image.name"});
  cases.push_back({Spec("../../etc"), absl::StatusCode::kInvalidArgument, "workload_id"});
  cases.push_back({Spec("WL-Upper"), absl::StatusCode::kInvalidArgument, "workload_id"});
  v1::WorkloadSpec cpus = Spec(Id("wl-bad-cpus"));
  cpus.mutable_resources()->set_cpus(100000);
  cases.push_back({cpus, absl::StatusCode::kInvalidArgument, "resources.cpus"});
  v1::WorkloadSpec mem = Spec(Id("wl-bad-mem"));
  mem.mutable_resources()->set_memory_bytes(uint64_t{1} << 60);
  cases.push_back({mem, absl::StatusCode::kInvalidArgument, "resources.memory_bytes"});
  v1::WorkloadSpec neg = Spec(Id("wl-bad-time"));
  neg.mutable_resources()->mutable_time_limit()->set_seconds(-5);
  cases.push_back({neg, absl::StatusCode::kInvalidArgument, "negative"});
  v1::WorkloadSpec big = Spec(Id("wl-bad-node"));
  big.mutable_resources()->set_cpus(4000);
  cases.push_back({big, absl::StatusCode::kFailedPrecondition, "this node has"});
  v1::WorkloadSpec scratch = Spec(Id("wl-bad-scratch"));
  scratch.mutable_scratch()->set_size_bytes(1000);
  cases.push_back({scratch, absl::StatusCode::kInvalidArgument, "scratch.size_bytes"});
  v1::WorkloadSpec vm = Spec(Id("wl-bad-vm"));
  vm.set_kind(v1::WORKLOAD_KIND_VM);
  cases.push_back({vm, absl::StatusCode::kFailedPrecondition, "vm_libvirt_uri"});
  for (const Case& c : cases) {
    absl::Status s = manager_->Start(c.spec, "test").status();
    EXPECT_EQ(s.code(), c.code) << c.spec.ShortDebugString() << " -> " << s;
    EXPECT_TRUE(absl::StrContains(s.message(), c.needle)) << s;
  }
  EXPECT_TRUE(manager_->List().empty());
  EXPECT_TRUE(std::filesystem::is_empty(dir_ + "/state/workloads"));
}

TEST_F(RuncTest, EncryptedScratchFailsClosedWithoutDeviceMapper) {
  if (CheckDmCrypt().ok()) GTEST_SKIP() << "this kernel has device-mapper; the guest test covers it";
  std::unique_ptr<WorkloadManager> strict = NewManager(false);
  absl::Status s = strict->Start(Spec(Id("wl-strict")), "test").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "device-mapper")) << s;
  v1::WorkloadSpec none = Spec(Id("wl-strict-none"));
  none.mutable_scratch()->set_encryption(v1::SCRATCH_ENCRYPTION_NONE);
  EXPECT_EQ(strict->Start(none, "test").status().code(), absl::StatusCode::kFailedPrecondition);
  v1::WorkloadSpec luks = Spec(Id("wl-luks"));
  luks.mutable_scratch()->set_encryption(v1::SCRATCH_ENCRYPTION_LUKS2_NO_KEYSLOT);
  // Even with the development flag, an explicit encryption request is never silently downgraded.
  EXPECT_EQ(manager_->Start(luks, "test").status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(strict->List().empty());
}

// The provisioning inputs host-agent resolves (docs/HOST_AGENT.md "Provisioning"): the job user reaches the
// entrypoint, the project's share is bound read-write at its own path, a vmc:// munge-key ref resolves in
// local_cluster_secrets_dir (read-only bind), and a missing or malformed one fails the workload. Both sources
// are development mode (issue 14) and audited as such.
TEST_F(RuncTest, ProjectShareJobUserAndLocalMungeKey) {
  const std::string share = dir_ + "/share";
  std::filesystem::create_directories(share);
  chmod(share.c_str(), 01777);
  std::filesystem::create_directories(dir_ + "/secrets/c1");
  const std::string key = dir_ + "/secrets/c1/munge-key";
  std::ofstream(key) << "not-a-real-munge-key";
  ASSERT_EQ(chown(key.c_str(), kUidBase, kUidBase), 0);
  chmod(key.c_str(), 0400);
  ASSERT_TRUE(
      testing::BuildBusyboxImage(
          dir_ + "/images", "envprobe",
          "#!/bin/sh\n"
          "export -p > /env\n"
          "echo written-inside > \"$STRONGROOM_PROJECT_SHARE/out\" && echo share-ok >> /env\n"
          "grep -q not-a-real-munge-key /run/strongroom/slurm-auth && echo key-ok >> /env\n"
          "echo x >> /run/strongroom/slurm-auth 2>/dev/null || echo key-ro >> /env\n"
          "sed -n 's/.*\"enrollmentTicket\": \"\\([0-9a-f]*\\)\".*/\\1/p' /run/strongroom/provisioning.json"
          " > /ticket && echo bundle-ok >> /env\n"
          "echo ready >> /env\n"
          "sleep 100000 &\nwait\n")
          .ok());
  manager_.reset();
  manager_ = NewManager(true, [&](ManagerOptions& o) {
    o.local_cluster_secrets_dir = dir_ + "/secrets";
    o.project_shares["proj1"] = share;
  });
  ASSERT_NE(manager_, nullptr);

  const std::string id = Id("wl-prov");
  v1::WorkloadSpec spec = Spec(id, "envprobe");
  spec.mutable_job()->set_global_job_id("gj-prov-1");
  spec.mutable_job()->set_project("proj1");
  spec.mutable_job()->mutable_user()->set_name("alice");
  spec.mutable_job()->mutable_user()->set_uid(1000);
  spec.mutable_provisioning()->set_local_cluster("c1");
  spec.mutable_provisioning()->add_slurmctld_addresses("127.0.0.1:6817");
  spec.mutable_provisioning()->mutable_slurm_auth_ref()->set_uri("vmc://c1/munge-key");
  auto started = manager_->Start(spec, "test");
  ASSERT_TRUE(started.ok()) << started.status();
  const std::string env_file = dir_ + "/state/workloads/" + id + "/scratch/upper/env";
  std::string env;
  for (int i = 0; i < 200 && !absl::StrContains(env, "ready"); ++i) {
    absl::SleepFor(absl::Milliseconds(20));
    env = testing::ReadFile(env_file);
  }
  EXPECT_TRUE(absl::StrContains(env, "STRONGROOM_JOB_USER='alice'")) << env;
  EXPECT_TRUE(absl::StrContains(env, "STRONGROOM_JOB_UID='1000'")) << env;
  EXPECT_TRUE(absl::StrContains(env, "STRONGROOM_JOB_GID=''")) << env;
  EXPECT_TRUE(absl::StrContains(env, "share-ok")) << env;
  EXPECT_TRUE(absl::StrContains(env, "key-ok")) << env;
  EXPECT_TRUE(absl::StrContains(env, "key-ro")) << env;
  EXPECT_EQ(testing::ReadFile(share + "/out"), "written-inside\n");
  // Issue 14: the one-time enrollment ticket is in the bundle (which container root reads), its SHA-256 in
  // the record; it is not in the environment or any audit record, and the bundle file on the host is
  // container root's, 0400.
  EXPECT_TRUE(absl::StrContains(env, "bundle-ok")) << env;
  const std::string ticket(absl::StripAsciiWhitespace(
      testing::ReadFile(dir_ + "/state/workloads/" + id + "/scratch/upper/ticket")));
  ASSERT_TRUE(IsHex64(ticket)) << "\"" << ticket << "\"";
  absl::StatusOr<v1::Workload> running = manager_->Get(id);
  ASSERT_TRUE(running.ok()) << running.status();
  EXPECT_EQ(running->enrollment_ticket_sha256(), EnrollmentTicketSha256(ticket));
  EXPECT_FALSE(absl::StrContains(env, ticket)) << "the ticket reached the environment";
  EXPECT_FALSE(audit_->Mentions(ticket)) << "the ticket reached the audit";
  struct stat bundle_st;
  ASSERT_EQ(stat((dir_ + "/state/workloads/" + id + "/bundle/provisioning.json").c_str(), &bundle_st), 0);
  EXPECT_EQ(bundle_st.st_uid, kUidBase);
  EXPECT_EQ(bundle_st.st_mode & 0777, 0400u);
  // Both are development mode since issue 14: each use is audited (and logged loudly).
  EXPECT_TRUE(audit_->Has("host-agent.dev_local_munge_key"));
  EXPECT_TRUE(audit_->Has("host-agent.dev_project_share"));
  struct stat st;
  ASSERT_EQ(stat((share + "/out").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, kUidBase) << "container root writes as the mapped host uid";
  auto stopped = manager_->Stop(id, v1::STOP_REASON_JOB_ENDED, "", absl::Seconds(2), "test");
  ASSERT_TRUE(stopped.ok()) << stopped.status();
  EXPECT_EQ(stopped->state(), v1::WORKLOAD_STATE_STOPPED);
  EXPECT_EQ(testing::Leftovers(dir_ + "/state", id, runc_root()), std::vector<std::string>{});

  // A munge key this node does not hold: the workload fails (reported to backend as WorkloadFailed).
  const std::string missing = Id("wl-nokey");
  v1::WorkloadSpec no_key = Spec(missing);
  no_key.mutable_job()->set_global_job_id("gj-prov-2");
  no_key.mutable_provisioning()->set_local_cluster("c2");
  no_key.mutable_provisioning()->add_slurmctld_addresses("127.0.0.1:6817");
  no_key.mutable_provisioning()->mutable_slurm_auth_ref()->set_uri("vmc://c2/munge-key");
  auto failed = manager_->Start(no_key, "test");
  ASSERT_FALSE(failed.ok());
  EXPECT_EQ(failed.status().code(), absl::StatusCode::kFailedPrecondition) << failed.status();
  EXPECT_TRUE(absl::StrContains(failed.status().message(), "secrets/c2/munge-key")) << failed.status();
  auto record = manager_->Get(missing);
  ASSERT_TRUE(record.ok());
  EXPECT_EQ(record->state(), v1::WORKLOAD_STATE_FAILED);
  EXPECT_EQ(record->failure().phase(), v1::FAILURE_PHASE_PROVISIONING);
  EXPECT_EQ(record->failure().reason(), "SLURM_AUTH_UNAVAILABLE");
  EXPECT_EQ(testing::Leftovers(dir_ + "/state", missing, runc_root()), std::vector<std::string>{});

  // A cluster name that is not an ID (traversal) is refused the same way, never resolved.
  const std::string bad = Id("wl-badref");
  v1::WorkloadSpec traversal = Spec(bad);
  traversal.mutable_provisioning()->set_local_cluster("c1");
  traversal.mutable_provisioning()->add_slurmctld_addresses("127.0.0.1:6817");
  traversal.mutable_provisioning()->mutable_slurm_auth_ref()->set_uri("vmc://../munge-key");
  auto refused = manager_->Start(traversal, "test");
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument) << refused.status();
}

}  // namespace
}  // namespace strongroom::host_agent
