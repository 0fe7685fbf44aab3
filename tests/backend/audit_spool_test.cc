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
  // The torn record had been issued (the issued mark says 2): it is reported lost and its number not reused.
  EXPECT_EQ(spool->lost().first, 2u);
  EXPECT_EQ(spool->lost().last, 2u);
  EXPECT_GT(spool->lost().bytes_cut, 0u);
  ASSERT_TRUE(spool->Append(Event("next")).ok());
  EXPECT_EQ(spool->pending().back().source_sequence(), 3u);
}

TEST_F(AuditSpoolTest, ARecordsFileTruncatedOutsideIsReportedAsLostRecords) {
  {
    auto spool = *AuditSpool::Open(dir_);
    for (int i = 0; i < 7; ++i) ASSERT_TRUE(spool->Append(Event("o")).ok());
    ASSERT_TRUE(spool->Sync().ok());
    ASSERT_TRUE(spool->Acknowledge(3).ok());
  }
  std::filesystem::resize_file(dir_ + "/records.spool", 0);  // cut at a frame boundary: nothing looks torn
  auto spool = *AuditSpool::Open(dir_);
  EXPECT_TRUE(spool->pending().empty());
  EXPECT_EQ(spool->lost().first, 4u);
  EXPECT_EQ(spool->lost().last, 7u);
  EXPECT_EQ(spool->lost().bytes_cut, 0u);
  EXPECT_NE(spool->lost().reason.find("7 had been issued"), std::string::npos) << spool->lost().reason;
  EXPECT_EQ(spool->next_sequence(), 8u);
}

TEST_F(AuditSpoolTest, NothingLostAfterAnOrdinaryReopen) {
  {
    auto spool = *AuditSpool::Open(dir_);
    for (int i = 0; i < 3; ++i) ASSERT_TRUE(spool->Append(Event("o")).ok());
  }
  auto spool = *AuditSpool::Open(dir_);
  EXPECT_EQ(spool->lost().first, 0u);
  EXPECT_EQ(spool->lost().bytes_cut, 0u);
  EXPECT_EQ(spool->pending().size(), 3u);
}

// A frame written by a build that spooled raw bytes: protobuf refuses its invalid UTF-8, the spool recovers
// it with the strings escaped instead of cutting it and everything after it off.
TEST_F(AuditSpoolTest, ARecordWithInvalidUtf8IsRecoveredEscapedNotDropped) {
  {
    auto spool = *AuditSpool::Open(dir_);
    ASSERT_TRUE(spool->Append(Event("before")).ok());
  }
  v1::AuditRecord bad = Event("");
  bad.set_object(std::string("job/\xff\x00z", 7));
  bad.set_source_sequence(2);
  (*bad.mutable_details())["error"] = "\xc3";
  std::string payload = bad.SerializePartialAsString();
  auto put32 = [](std::string* out, uint32_t v) {
    for (int shift = 24; shift >= 0; shift -= 8) out->push_back(static_cast<char>((v >> shift) & 0xff));
  };
  uint32_t fnv = 2166136261u;
  for (unsigned char c : payload) fnv = (fnv ^ c) * 16777619u;
  std::string frame;
  put32(&frame, static_cast<uint32_t>(payload.size()));
  put32(&frame, fnv);
  frame += payload;
  std::ofstream(dir_ + "/records.spool", std::ios::app | std::ios::binary) << frame;
  {
    auto spool = *AuditSpool::Open(dir_);
    ASSERT_EQ(spool->pending().size(), 2u);
    EXPECT_EQ(spool->recovered(), 1u);
    const v1::AuditRecord& r = spool->pending().back();
    EXPECT_EQ(r.source_sequence(), 2u);
    EXPECT_EQ(r.object(), "job/\\xff\\x00z");
    EXPECT_EQ(r.details().at("error"), "\\xc3");
    EXPECT_EQ(r.details().at("audit.escaped"), "details.error,object");
    ASSERT_TRUE(spool->Append(Event("after")).ok());
    EXPECT_EQ(spool->pending().back().source_sequence(), 3u);
  }
}

TEST_F(AuditSpoolTest, AReplacedRecordKeepsItsNumberAndARemovedOneIsGone) {
  auto spool = *AuditSpool::Open(dir_);
  for (const char* o : {"a", "b", "c"}) ASSERT_TRUE(spool->Append(Event(o)).ok());
  v1::AuditRecord note = Event("note");
  ASSERT_TRUE(spool->Replace(2, &note).ok());
  ASSERT_TRUE(spool->Replace(3, nullptr).ok());
  EXPECT_FALSE(spool->Replace(9, nullptr).ok());
  spool.reset();
  spool = *AuditSpool::Open(dir_);
  ASSERT_EQ(spool->pending().size(), 2u);
  EXPECT_EQ(spool->pending()[1].object(), "note");
  EXPECT_EQ(spool->pending()[1].source_sequence(), 2u);
  EXPECT_EQ(spool->next_sequence(), 4u);  // 3 was issued: never reused
  EXPECT_EQ(spool->lost().first, 3u);     // and the hole it leaves is reported
}

TEST_F(AuditSpoolTest, AnOwnerThatAcknowledgesElsewhereGetsOnlyWhatIsMissing) {
  {
    auto spool = *AuditSpool::OpenAcknowledgedElsewhere(dir_, 0);
    for (int i = 0; i < 5; ++i) ASSERT_TRUE(spool->Append(Event("o" + std::to_string(i))).ok());
    ASSERT_TRUE(spool->Sync().ok());
  }
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/acknowledged.tmp"));
  auto spool = *AuditSpool::OpenAcknowledgedElsewhere(dir_, 3);  // the database holds 1..3
  ASSERT_EQ(spool->pending().size(), 2u);
  EXPECT_EQ(spool->pending().front().object(), "o3");
  EXPECT_EQ(spool->lost().first, 0u);
  ASSERT_TRUE(spool->Acknowledge(5).ok());
  EXPECT_EQ(std::filesystem::file_size(dir_ + "/records.spool"), 0u);
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
