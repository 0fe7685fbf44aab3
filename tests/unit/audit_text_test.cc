// How any bytes become storable audit text (common/audit_text.h): verbatim when they already are, escaped and
// marked otherwise, cut with their length and digest when too long, and always recoverable.
#include "common/audit_text.h"

#include <string>

#include "absl/strings/escaping.h"
#include "common/audit.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"

namespace strongroom {
namespace {

TEST(AuditText, ValidUtf8WithoutNulIsStorableAndKeptVerbatim) {
  for (std::string s :
       {std::string(""), std::string("job/gj-1"), std::string("quote \" brace {} back\\slash"),
        std::string("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x94\x92")}) {
    EXPECT_TRUE(IsStorableAuditText(s)) << s;
    v1::AuditRecord r;
    r.set_action("a.b");
    r.set_object(s);
    MakeAuditRecordStorable(&r);
    EXPECT_EQ(r.object(), s);
    EXPECT_EQ(r.details().count("audit.escaped"), 0u);
  }
}

TEST(AuditText, NulInvalidUtf8OverlongAndSurrogatesAreNotStorable) {
  for (std::string s :
       {std::string("a\0b", 3), std::string("\xff"), std::string("\xc3"), std::string("\xc0\xaf"),
        std::string("\xed\xa0\x80"), std::string("\xf4\x90\x80\x80")}) {
    EXPECT_FALSE(IsStorableAuditText(s)) << absl::CHexEscape(s);
  }
}

TEST(AuditText, EscapingRoundTripsEveryByte) {
  std::string all;
  for (int i = 0; i < 256; ++i) all.push_back(static_cast<char>(i));
  all += "\\x41 \\\\ caf\xc3\xa9";
  const std::string escaped = EscapeAuditBytes(all);
  EXPECT_TRUE(IsStorableAuditText(escaped));
  absl::StatusOr<std::string> back = UnescapeAuditBytes(escaped);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, all);
  EXPECT_FALSE(UnescapeAuditBytes("bad \\q").ok());
}

TEST(AuditText, AHostileRecordBecomesStorableMarkedAndRecoverable) {
  v1::AuditRecord r;
  r.set_action("/strongroom.v1.Backend/Get'Job{}");  // a hostile :path
  r.set_object(std::string("job/\0\xff", 6));
  r.mutable_actor()->set_spiffe_id("spiffe://td/operator/alice");
  (*r.mutable_details())["error"] = std::string(64 * 1024, 'x') + std::string("\0", 1);
  (*r.mutable_details())["Bad Key"] = "v";
  MakeAuditRecordStorable(&r);
  EXPECT_EQ(r.action(), "audit.invalid_action");
  EXPECT_EQ(r.details().at("audit.action"), "/strongroom.v1.Backend/Get'Job{}");
  EXPECT_EQ(r.object(), "job/\\x00\\xff");
  EXPECT_EQ(*UnescapeAuditBytes(r.object()), std::string("job/\0\xff", 6));
  EXPECT_LE(r.details().at("error").size(), kMaxAuditDetailBytes);
  EXPECT_EQ(r.details().at("audit.invalid_key.1"), "Bad Key=v");
  const std::string& escaped = r.details().at("audit.escaped");
  EXPECT_NE(escaped.find("object"), std::string::npos) << escaped;
  EXPECT_NE(escaped.find("details.error"), std::string::npos) << escaped;
  const std::string& truncated = r.details().at("audit.truncated");
  EXPECT_NE(truncated.find("details.error=65537:"), std::string::npos) << truncated;
  for (const auto& [key, value] : r.details()) EXPECT_TRUE(IsStorableAuditText(value)) << key;
  // Idempotent: a record made storable once (by its sender) is unchanged by backend doing it again.
  v1::AuditRecord again = r;
  MakeAuditRecordStorable(&again);
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(again, r)) << again.DebugString();
}

TEST(AuditText, ACutNeverSplitsACharacterOrAnEscape) {
  for (size_t pad = 0; pad < 8; ++pad) {
    v1::AuditRecord r;
    r.set_action("a.b");
    std::string object = "job/" + std::string(pad + 240, 'a');
    for (int i = 0; i < 20; ++i) object += "\xe2\x82\xac\xff";  // a 3-byte character, an invalid byte
    r.set_object(object);
    MakeAuditRecordStorable(&r);
    EXPECT_LE(r.object().size(), kMaxAuditObjectBytes);
    EXPECT_TRUE(IsStorableAuditText(r.object()));
    EXPECT_TRUE(UnescapeAuditBytes(r.object()).ok()) << r.object();
  }
}

TEST(AuditText, TooManyDetailsKeepRoomForTheMarkers) {
  v1::AuditRecord r;
  r.set_action("a.b");
  for (int i = 0; i < 40; ++i) (*r.mutable_details())["k" + std::to_string(100 + i)] = "v";
  (*r.mutable_details())["k100"] = std::string("\0", 1);
  MakeAuditRecordStorable(&r);
  EXPECT_LE(r.details_size(), kMaxAuditDetails);
  EXPECT_EQ(r.details().count("audit.escaped"), 1u);
  EXPECT_NE(r.details().at("audit.truncated").find("dropped"), std::string::npos);
}

TEST(AuditText, AnEventBecomesAStorableRecord) {
  AuditEvent e{"spiffe://td/operator/alice", "/strongroom.v1.Backend/GetJob", std::string("job/\0", 5),
               "INVALID_ARGUMENT", std::string("global_job_id: \"\xff\" must match", 30)};
  v1::AuditRecord r = AuditRecordOfEvent(e);
  EXPECT_EQ(r.status_code(), 3);
  EXPECT_EQ(r.outcome(), v1::AUDIT_OUTCOME_FAILURE);
  EXPECT_EQ(r.object(), "job/\\x00");
  EXPECT_TRUE(IsStorableAuditText(r.details().at("error")));
  EXPECT_EQ(r.time().nanos() % 1000, 0);
}

}  // namespace
}  // namespace strongroom
