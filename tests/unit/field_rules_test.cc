// The shared field rules (common/field_rules.h): patterns, ranges, and that no refused value reaches a
// message with a raw control or bidirectional formatting character.
#include "common/field_rules.h"

#include "common/log.h"
#include "gtest/gtest.h"

namespace strongroom {
namespace {

TEST(FieldRules, PatternsAndRanges) {
  EXPECT_TRUE(IsName("proj_a-1"));
  EXPECT_FALSE(IsName("_proj"));
  EXPECT_FALSE(IsName("Proj"));
  EXPECT_TRUE(IsToken("0a1b2c3d-0000-4000-8000-000000000001"));
  EXPECT_FALSE(IsToken("short"));
  EXPECT_TRUE(CheckProject("project", "", true).ok());
  EXPECT_FALSE(CheckProject("project", "", false).ok());
  EXPECT_TRUE(CheckCpus("cpus", 4096).ok());
  EXPECT_FALSE(CheckCpus("cpus", 4294967295u).ok());
  EXPECT_FALSE(CheckMemoryBytes("memory", uint64_t{1} << 63).ok());
  EXPECT_TRUE(CheckTimeLimitSeconds("time", 0).ok());
  EXPECT_FALSE(CheckTimeLimitSeconds("time", -60).ok());
  EXPECT_FALSE(CheckTimeLimitSeconds("time", 59).ok());
  EXPECT_FALSE(CheckUid("uid", 0).ok());
  EXPECT_FALSE(CheckUid("uid", 4294967294u).ok());
  absl::Status s = CheckCpus("resources.cpus", 5000);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "resources.cpus: \"5000\" is not in 0..4096");
}

TEST(FieldRules, MessagesNeverCarryRawControlOrBidiCharacters) {
  const std::string hostile =
      std::string("a\0b\n\r\x1b[31m\x7f", 10) + "\xe2\x80\xae" + "\xe2\x81\xa6" + "\xc2\x85";
  absl::Status s = CheckProject("project", hostile, true);
  ASSERT_FALSE(s.ok());
  for (unsigned char c : std::string(s.message())) {
    EXPECT_TRUE(c >= 0x20 && c < 0x7f) << "byte " << static_cast<int>(c) << " in " << s.message();
  }
  const std::string text = SanitizeText(hostile + "ok é");
  EXPECT_EQ(text.find('\0'), std::string::npos);
  EXPECT_EQ(text.find('\n'), std::string::npos);
  EXPECT_EQ(text.find("\xe2\x80\xae"), std::string::npos);
  EXPECT_EQ(text.find("\xe2\x81\xa6"), std::string::npos);
  EXPECT_NE(text.find("\\u{202e}"), std::string::npos) << text;
  EXPECT_NE(text.find("ok \xc3\xa9"), std::string::npos) << text;  // ordinary UTF-8 is kept
  EXPECT_EQ(SanitizeText("\xff"), "\\xff");
  EXPECT_TRUE(IsSafeText("plain text"));
  EXPECT_FALSE(IsSafeText("x\xe2\x80\x8f"));
}

TEST(FieldRules, LogLinesEscapeBidiAndC1Characters) {
  const std::string escaped = JsonEscape(
      "a\xe2\x80\xae"
      "b\xe2\x81\xa6"
      "c\xc2\x85"
      "d\x7f\n\xc3\xa9");
  EXPECT_EQ(escaped, "a\\u202eb\\u2066c\\u0085d\\u007f\\n\xc3\xa9");
}

}  // namespace
}  // namespace strongroom
