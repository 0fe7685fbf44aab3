#include "common/audit_spool.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "gtest/gtest.h"

namespace strongroom {
namespace {

class AuditSpoolTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir[] = "/tmp/strongroom-spool-test-XXXXXX";
    dir_ = mkdtemp(dir);
    dir_ += "/spool";
  }
  void TearDown() override { std::filesystem::remove_all(std::filesystem::path(dir_).parent_path()); }

  static v1::AuditRecord Event(const std::string& object) {
    v1::AuditRecord r;
    r.set_action("probe.event");
    r.set_object(object);
    return r;
  }

  std::string dir_;
};

TEST_F(AuditSpoolTest, RecordsSurviveAReopenUntilAcknowledged) {
  {
    auto spool = *AuditSpool::Open(dir_);
    EXPECT_TRUE(spool->fresh());
    for (int i = 0; i < 5; ++i) ASSERT_TRUE(spool->Append(Event("o/" + std::to_string(i))).ok());
    ASSERT_TRUE(spool->Sync().ok());
    ASSERT_TRUE(spool->Acknowledge(2).ok());
  }
  auto spool = *AuditSpool::Open(dir_);
  EXPECT_FALSE(spool->fresh());
  EXPECT_EQ(spool->acknowledged(), 2u);
  ASSERT_EQ(spool->pending().size(), 3u);
  EXPECT_EQ(spool->pending().front().source_sequence(), 3u);
  EXPECT_EQ(spool->pending().front().object(), "o/2");
  EXPECT_EQ(spool->next_sequence(), 6u);
  ASSERT_TRUE(spool->Acknowledge(5).ok());
  EXPECT_TRUE(spool->pending().empty());
  EXPECT_EQ(std::filesystem::file_size(dir_ + "/records.spool"), 0u);  // emptied once all is acknowledged
  ASSERT_TRUE(spool->Append(Event("o/5")).ok());
  EXPECT_EQ(spool->pending().back().source_sequence(), 6u);  // numbering goes on
}

TEST_F(AuditSpoolTest, ATornLastFrameIsCutOff) {
  {
    auto spool = *AuditSpool::Open(dir_);
    ASSERT_TRUE(spool->Append(Event("whole")).ok());
    ASSERT_TRUE(spool->Append(Event("torn")).ok());
  }
  const auto size = std::filesystem::file_size(dir_ + "/records.spool");
  std::filesystem::resize_file(dir_ + "/records.spool", size - 3);  // a crash in the middle of write(2)
  auto spool = *AuditSpool::Open(dir_);
  ASSERT_EQ(spool->pending().size(), 1u);
  EXPECT_EQ(spool->pending().front().object(), "whole");
  ASSERT_TRUE(spool->Append(Event("next")).ok());
  EXPECT_EQ(spool->pending().back().source_sequence(), 2u);
}

TEST_F(AuditSpoolTest, ACrashBeforeTheFirstAcknowledgementIsNotAWipedSpool) {
  {
    auto spool = *AuditSpool::Open(dir_);
    ASSERT_TRUE(spool->Append(Event("a")).ok());
  }
  auto spool = *AuditSpool::Open(dir_);
  EXPECT_FALSE(spool->fresh());  // records may already be in backend: they must keep their numbers
  ASSERT_TRUE(spool->Renumber(10).ok());
  EXPECT_EQ(spool->pending().front().source_sequence(), 10u);
  EXPECT_EQ(spool->next_sequence(), 11u);
}

}  // namespace
}  // namespace strongroom
