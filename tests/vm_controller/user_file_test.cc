// AppendAsUser (services/vm_controller/user_file.h) on the real filesystem, as root dropping to `nobody`: the
// refused job's output is written with the user's rights only, whatever the user put at that path.
#include "services/vm_controller/user_file.h"

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "gtest/gtest.h"

namespace strongroom::vm_controller {
namespace {

constexpr uid_t kNobody = 65534;
constexpr gid_t kNogroup = 65534;

std::string Read(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

class UserFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "dropping to another user needs root";
    char pattern[] = "/tmp/strongroom-user-file-XXXXXX";
    ASSERT_NE(mkdtemp(pattern), nullptr);
    dir_ = pattern;
    user_dir_ = dir_ + "/home";
    std::filesystem::create_directory(user_dir_);
    ASSERT_EQ(chown(user_dir_.c_str(), kNobody, kNogroup), 0);
    ASSERT_EQ(chmod(dir_.c_str(), 0755), 0);
    secret_ = dir_ + "/root-only";
    std::ofstream(secret_) << "root's\n";
    ASSERT_EQ(chmod(secret_.c_str(), 0600), 0);
  }
  void TearDown() override {
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }

  std::string dir_, user_dir_, secret_;
};

TEST_F(UserFileTest, CreatesTheFileAsTheUserAndAppends) {
  const std::string path = user_dir_ + "/slurm-7.out";
  ASSERT_TRUE(AppendAsUser(path, kNobody, kNogroup, "one\n").ok());
  ASSERT_TRUE(AppendAsUser(path, kNobody, kNogroup, "two\n").ok());
  EXPECT_EQ(Read(path), "one\ntwo\n");
  struct stat st;
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, kNobody);
  EXPECT_EQ(st.st_gid, kNogroup);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
}

TEST_F(UserFileTest, NeverWritesWithRootsRights) {
  // A symlink the user planted towards root's file, root's file itself, and a directory the user cannot write.
  const std::string link = user_dir_ + "/slurm-8.out";
  std::filesystem::create_symlink(secret_, link);
  EXPECT_FALSE(AppendAsUser(link, kNobody, kNogroup, "planted\n").ok());
  absl::Status own = AppendAsUser(secret_, kNobody, kNogroup, "planted\n");
  EXPECT_FALSE(own.ok());
  EXPECT_NE(own.message().find("cannot open"), std::string::npos) << own;
  EXPECT_FALSE(AppendAsUser(dir_ + "/new.out", kNobody, kNogroup, "planted\n").ok());
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/new.out"));
  EXPECT_EQ(Read(secret_), "root's\n");
  EXPECT_EQ(AppendAsUser(user_dir_ + "/x", 0, 0, "as root\n").code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(AppendAsUser("relative.out", kNobody, kNogroup, "x\n").code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(UserFileTest, AFifoADirectoryOrADeviceIsRefusedWithoutBlocking) {
  const std::string fifo = user_dir_ + "/fifo.out";
  ASSERT_EQ(mkfifo(fifo.c_str(), 0666), 0);
  ASSERT_EQ(chown(fifo.c_str(), kNobody, kNogroup), 0);
  EXPECT_FALSE(AppendAsUser(fifo, kNobody, kNogroup, "x\n", absl::Seconds(30)).ok());
  const std::string sub = user_dir_ + "/sub";
  std::filesystem::create_directory(sub);
  ASSERT_EQ(chown(sub.c_str(), kNobody, kNogroup), 0);
  EXPECT_FALSE(AppendAsUser(sub, kNobody, kNogroup, "x\n").ok());
  absl::Status null_device = AppendAsUser("/dev/null", kNobody, kNogroup, "x\n");
  EXPECT_FALSE(null_device.ok());
  EXPECT_NE(null_device.message().find("not a regular file"), std::string::npos) << null_device;
}

}  // namespace
}  // namespace strongroom::vm_controller
