// The store against a real SQLite file.
#include "services/vm_controller/local_job_store.h"

#include <unistd.h>

#include <filesystem>

#include "gtest/gtest.h"

namespace strongroom::vm_controller {
namespace {

class LocalJobStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("vmctl-store-" + std::to_string(getpid()));
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string Path() const { return (dir_ / "state" / "jobs.db").string(); }

  static v1::LocalJob Job(const std::string& token) {
    v1::LocalJob job;
    job.mutable_local()->set_local_cluster("local");
    job.mutable_local()->set_token(token);
    job.mutable_user()->set_name("alice");
    job.mutable_user()->set_uid(1001);
    job.set_state(v1::LOCAL_JOB_STATE_RECEIVED);
    return job;
  }

  std::filesystem::path dir_;
};

TEST_F(LocalJobStoreTest, TransitionsAreCheckedAndSurviveReopen) {
  {
    auto store = LocalJobStore::Open(Path());
    ASSERT_TRUE(store.ok()) << store.status();
    ASSERT_TRUE((*store)->Insert(Job("token-0001")).ok());
    auto held = (*store)->Update("token-0001", v1::LOCAL_JOB_STATE_HELD,
                                 [](v1::LocalJob* j) { j->mutable_local()->set_local_job_id(42); }, "held");
    ASSERT_TRUE(held.ok()) << held.status();
    absl::Status illegal =
        (*store)->Update("token-0001", v1::LOCAL_JOB_STATE_COMPLETED, nullptr, "skip ahead").status();
    EXPECT_EQ(illegal.code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_NE(illegal.message().find("LOCAL_JOB_STATE_HELD -> LOCAL_JOB_STATE_COMPLETED"), absl::string_view::npos)
        << illegal;
    absl::Status not_from =
        (*store)->Update("token-0001", v1::LOCAL_JOB_STATE_ENDING, nullptr, "end", {v1::LOCAL_JOB_STATE_RUNNING})
            .status();
    EXPECT_EQ(not_from.code(), absl::StatusCode::kFailedPrecondition);
  }
  auto reopened = LocalJobStore::Open(Path());
  ASSERT_TRUE(reopened.ok());
  auto job = (*reopened)->GetByJobId(42);
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->state(), v1::LOCAL_JOB_STATE_HELD);
  EXPECT_EQ((*reopened)->List({v1::LOCAL_JOB_STATE_HELD}, 10)->size(), 1u);
  EXPECT_TRUE((*reopened)->List({v1::LOCAL_JOB_STATE_RUNNING}, 10)->empty());
  EXPECT_EQ((*reopened)->Get("token-9999").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(LocalJobStoreTest, FailedUpdateChangesNothing) {
  auto store = *LocalJobStore::Open(Path());
  ASSERT_TRUE(store->Insert(Job("token-0002")).ok());
  EXPECT_FALSE(store->Update("token-0002", v1::LOCAL_JOB_STATE_RUNNING,
                             [](v1::LocalJob* j) { j->set_node_name("should-not-stick"); }, "illegal")
                   .ok());
  EXPECT_EQ(store->Get("token-0002")->node_name(), "");
  EXPECT_EQ(store->Get("token-0002")->state(), v1::LOCAL_JOB_STATE_RECEIVED);
}

}  // namespace
}  // namespace strongroom::vm_controller
