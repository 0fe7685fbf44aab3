// Tests of the rig itself (needs root: it creates network namespaces). The rig.sh under test is
// $STRONGROOM_RIG_SH, else SR_RIG_SH (a compile definition), else rig.sh next to this source file.
#include "tests/rig/rig.h"

#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace strongroom {
namespace {

std::string RigSh() {
  if (const char* env = getenv("STRONGROOM_RIG_SH"); env != nullptr && *env != '\0') return env;
#ifdef SR_RIG_SH
  return SR_RIG_SH;
#endif
  std::string here = __FILE__;
  return here.substr(0, here.rfind('/') + 1) + "rig.sh";
}

bool NetnsExists(const std::string& name) { return access(("/run/netns/" + name).c_str(), F_OK) == 0; }

bool ProcessRunning(pid_t pid) {
  std::string stat_path = absl::StrCat("/proc/", pid, "/stat");
  FILE* f = fopen(stat_path.c_str(), "r");
  if (f == nullptr) return false;
  char buf[512] = {};
  size_t n = fread(buf, 1, sizeof(buf) - 1, f);
  fclose(f);
  std::string s(buf, n);
  size_t paren = s.rfind(") ");
  return paren != std::string::npos && s.size() > paren + 2 && s[paren + 2] != 'Z';
}

class RigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "the rig needs root";
    absl::StatusOr<std::unique_ptr<Rig>> rig = Rig::Create(RigSh());
    ASSERT_TRUE(rig.ok()) << rig.status();
    rig_ = std::move(*rig);
    ASSERT_TRUE(rig_->AddHost("alpha", "198.51.100.10/24").ok());
    ASSERT_TRUE(rig_->AddHost("beta", "198.51.100.11/24").ok());
  }

  std::unique_ptr<Rig> rig_;
};

TEST_F(RigTest, EachHostHasItsOwnHostnameAndAddress) {
  absl::StatusOr<Rig::ExecResult> r =
      rig_->Exec("alpha", {"cat", "/proc/sys/kernel/hostname"}, absl::Seconds(10));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->exit_code, 0);
  EXPECT_EQ(r->output, "alpha\n");
  EXPECT_EQ(rig_->Ip("beta"), "198.51.100.11");
  EXPECT_EQ(rig_->Ip("nosuch"), "");
  r = rig_->Exec("beta", {"ip", "-4", "-o", "addr", "show", "dev", "eth0"}, absl::Seconds(10));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(absl::StrContains(r->output, "198.51.100.11/24")) << r->output;
}

TEST_F(RigTest, RealTcpBetweenHosts) {
  if (access("/usr/bin/busybox", X_OK) != 0) GTEST_SKIP() << "needs /usr/bin/busybox";
  std::string log = rig_->state_dir() + "/alpha.log";
  absl::StatusOr<pid_t> server =
      rig_->Spawn("alpha", log, {"busybox", "nc", "-l", "-p", "7000", "-e", "sh", "-c", "hostname; cat"});
  ASSERT_TRUE(server.ok()) << server.status();
  // The listener needs a moment; retry the connection briefly.
  absl::StatusOr<Rig::ExecResult> r;
  for (int i = 0; i < 50; ++i) {
    r = rig_->Exec("beta",
                   {"bash", "-c", "exec 3<>/dev/tcp/198.51.100.10/7000 && echo ping >&3 && head -n 2 <&3"},
                   absl::Seconds(10));
    ASSERT_TRUE(r.ok()) << r.status();
    if (r->exit_code == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(r->exit_code, 0) << r->output;
  EXPECT_EQ(r->output, "alpha\nping\n");
}

TEST_F(RigTest, ExitCodePassesThrough) {
  absl::StatusOr<Rig::ExecResult> r =
      rig_->Exec("alpha", {"sh", "-c", "echo out; echo err >&2; exit 7"}, absl::Seconds(10));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->exit_code, 7);
  EXPECT_TRUE(absl::StrContains(r->output, "out")) << r->output;
  EXPECT_TRUE(absl::StrContains(r->output, "err")) << r->output;
}

TEST_F(RigTest, ExecTimesOut) {
  auto start = std::chrono::steady_clock::now();
  absl::StatusOr<Rig::ExecResult> r = rig_->Exec("alpha", {"sleep", "30"}, absl::Milliseconds(300));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDeadlineExceeded) << r.status();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
}

TEST_F(RigTest, UnknownHostIsAnError) {
  absl::StatusOr<Rig::ExecResult> r = rig_->Exec("gamma", {"true"}, absl::Seconds(10));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
  EXPECT_FALSE(rig_->AddHost("alpha", "198.51.100.12/24").ok());  // duplicate name
  EXPECT_FALSE(rig_->AddHost("gamma", "198.51.100.10/24").ok());  // duplicate address
  EXPECT_FALSE(rig_->AddHost("Bad_Name", "198.51.100.13/24").ok());
}

TEST_F(RigTest, KillStopAndDown) {
  std::string log = rig_->state_dir() + "/sleep.log";
  absl::StatusOr<pid_t> a = rig_->Spawn("alpha", log, {"sleep", "300"});
  absl::StatusOr<pid_t> b = rig_->Spawn("beta", log, {"sh", "-c", "trap '' TERM; sleep 300"});
  absl::StatusOr<pid_t> c = rig_->Spawn("beta", log, {"sleep", "300"});
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  EXPECT_FALSE(rig_->Kill(getpid(), SIGTERM).ok());  // not spawned by the rig
  ASSERT_TRUE(rig_->Kill(*a, SIGKILL).ok());
  ASSERT_TRUE(rig_->Stop(*c).ok());
  EXPECT_FALSE(ProcessRunning(*c));
  std::string sw = rig_->Netns("sw");
  std::string alpha = rig_->Netns("alpha");
  ASSERT_TRUE(NetnsExists(sw) && NetnsExists(alpha));
  ASSERT_TRUE(rig_->Down().ok());  // b ignores SIGTERM: Down has to escalate
  EXPECT_FALSE(ProcessRunning(*b));
  EXPECT_FALSE(NetnsExists(sw));
  EXPECT_FALSE(NetnsExists(alpha));
  EXPECT_TRUE(rig_->Down().ok());  // idempotent
}

// A test process that dies without tearing down leaves a rig that `sweep` removes.
TEST(RigSweepTest, CrashedOwnerIsSwept) {
  if (geteuid() != 0) GTEST_SKIP() << "the rig needs root";
  char root_tmpl[] = "/tmp/strongroom-rig-sweeptest-XXXXXX";
  ASSERT_NE(mkdtemp(root_tmpl), nullptr);
  std::string root = root_tmpl;
  struct RemoveRoot {
    ~RemoveRoot() { std::filesystem::remove_all(path); }
    std::string path;
  } remove_root{root};
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    close(fds[0]);
    absl::StatusOr<std::unique_ptr<Rig>> rig = Rig::Create(RigSh(), root);
    if (!rig.ok() || !(*rig)->AddHost("orphan", "198.51.100.20/24").ok() ||
        !(*rig)->Spawn("orphan", root + "/orphan.log", {"sleep", "300"}).ok()) {
      _exit(1);
    }
    std::string id = (*rig)->id();
    (void)!write(fds[1], id.data(), id.size());
    _exit(0);  // "crash": no destructor runs
  }
  close(fds[1]);
  char id[16] = {};
  ssize_t n = read(fds[0], id, sizeof(id) - 1);
  close(fds[0]);
  int status = 0;
  waitpid(child, &status, 0);
  ASSERT_EQ(n, 5) << "child failed to set up a rig";
  std::string sw = absl::StrCat("sr", id, "-sw");
  std::string orphan = absl::StrCat("sr", id, "-orphan");
  EXPECT_TRUE(NetnsExists(sw) && NetnsExists(orphan));
  absl::Status s = Rig::Sweep(RigSh(), root);
  EXPECT_TRUE(s.ok()) << s;
  EXPECT_FALSE(NetnsExists(sw));
  EXPECT_FALSE(NetnsExists(orphan));
}

}  // namespace
}  // namespace strongroom
