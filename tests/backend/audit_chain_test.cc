#include "common/audit_chain.h"

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace strongroom {
namespace {

// A valid chain of n records.
std::vector<v1::AuditRecord> Chain(int n) {
  std::vector<v1::AuditRecord> chain;
  std::string prev = AuditGenesisHash();
  for (int i = 1; i <= n; ++i) {
    v1::AuditRecord r;
    r.set_sequence(i);
    r.mutable_time()->set_seconds(1700000000 + i);
    r.mutable_actor()->set_spiffe_id("spiffe://td/operator/alice");
    r.set_action("/strongroom.v1.Backend/GetJob");
    r.set_object(absl::StrCat("job/gj-", i));
    r.set_outcome(v1::AUDIT_OUTCOME_SUCCESS);
    (*r.mutable_details())["peer"] = "ipv4:1.2.3.4:5";
    (*r.mutable_details())["a"] = "first";
    r.mutable_recorded_by()->set_spiffe_id("spiffe://td/backend/b");
    r.set_source_sequence(i);
    r.set_prev_hash(prev);
    r.set_hash(AuditRecordHash(r));
    prev = r.hash();
    chain.push_back(r);
  }
  return chain;
}

AuditVerdict Verify(const std::vector<v1::AuditRecord>& chain, std::vector<v1::AuditAnchor> anchors = {}) {
  AuditChainVerifier verifier(1, AuditGenesisHash(), std::move(anchors));
  for (const auto& r : chain) {
    if (!verifier.Add(r)) break;
  }
  return verifier.Finish();
}

TEST(AuditChainTest, TheHashCoversEveryFieldButItselfAndIgnoresMapOrder) {
  v1::AuditRecord r = Chain(1)[0];
  const std::string h = AuditRecordHash(r);
  EXPECT_EQ(h.size(), kAuditHashBytes);
  v1::AuditRecord same = r;
  same.set_hash("anything");
  EXPECT_EQ(AuditRecordHash(same), h);
  for (auto change : std::vector<std::function<void(v1::AuditRecord&)>>{
           [](auto& x) { x.set_sequence(2); }, [](auto& x) { x.mutable_time()->set_nanos(1000); },
           [](auto& x) { x.mutable_actor()->set_spiffe_id("spiffe://td/operator/bob"); },
           [](auto& x) { x.set_action("x"); }, [](auto& x) { x.set_object("job/other"); },
           [](auto& x) { x.set_outcome(v1::AUDIT_OUTCOME_DENIED); }, [](auto& x) { x.set_status_code(7); },
           [](auto& x) { (*x.mutable_details())["a"] = "second"; },
           [](auto& x) { x.set_prev_hash(std::string(32, 1)); },
           [](auto& x) { x.mutable_recorded_by()->set_spiffe_id("y"); },
           [](auto& x) { x.set_source_sequence(9); },
           [](auto& x) { x.mutable_received_time()->set_seconds(1); }}) {
    v1::AuditRecord changed = r;
    change(changed);
    EXPECT_NE(AuditRecordHash(changed), h);
  }
  // Length prefixes: moving bytes from one field to the next changes the hash.
  v1::AuditRecord a = r, b = r;
  a.set_action("ab");
  a.set_object("c");
  b.set_action("a");
  b.set_object("bc");
  EXPECT_NE(AuditRecordHash(a), AuditRecordHash(b));
}

TEST(AuditChainTest, AnIntactChainVerifies) {
  const AuditVerdict v = Verify(Chain(10));
  EXPECT_TRUE(v.ok) << v.reason;
  EXPECT_EQ(v.records_checked, 10u);
  EXPECT_EQ(v.last_sequence, 10u);
}

TEST(AuditChainTest, AnEditIsAHashMismatchAtThatRecord) {
  auto chain = Chain(10);
  chain[4].set_object("job/forged");
  const AuditVerdict v = Verify(chain);
  EXPECT_FALSE(v.ok);
  EXPECT_EQ(v.first_bad_sequence, 5u);
  EXPECT_EQ(v.violation, v1::AUDIT_VIOLATION_HASH_MISMATCH);
}

TEST(AuditChainTest, AnEditWithARecomputedHashBreaksTheNextLink) {
  auto chain = Chain(10);
  chain[4].set_object("job/forged");
  chain[4].set_hash(AuditRecordHash(chain[4]));
  const AuditVerdict v = Verify(chain);
  EXPECT_EQ(v.first_bad_sequence, 6u);
  EXPECT_EQ(v.violation, v1::AUDIT_VIOLATION_CHAIN_BROKEN);
}

TEST(AuditChainTest, ADeletionIsAGapNamingTheMissingRecord) {
  auto chain = Chain(10);
  chain.erase(chain.begin() + 6);
  const AuditVerdict v = Verify(chain);
  EXPECT_EQ(v.first_bad_sequence, 7u);
  EXPECT_EQ(v.violation, v1::AUDIT_VIOLATION_SEQUENCE_GAP);
}

TEST(AuditChainTest, ReorderingIsDetected) {
  auto chain = Chain(10);
  std::swap(chain[3], chain[5]);  // stored order, sequence numbers travel with the records
  AuditVerdict v = Verify(chain);
  EXPECT_EQ(v.first_bad_sequence, 4u);
  EXPECT_EQ(v.violation, v1::AUDIT_VIOLATION_SEQUENCE_GAP);
  chain = Chain(10);
  std::swap(chain[3], chain[5]);
  chain[3].set_sequence(4);  // renumbered in place: the links give it away
  chain[5].set_sequence(6);
  v = Verify(chain);
  EXPECT_EQ(v.first_bad_sequence, 4u);
  EXPECT_EQ(v.violation, v1::AUDIT_VIOLATION_CHAIN_BROKEN);
  chain = Chain(3);
  chain.push_back(chain[1]);  // a duplicate
  v = Verify(chain);
  EXPECT_EQ(v.violation, v1::AUDIT_VIOLATION_SEQUENCE_DISORDER);
}

TEST(AuditChainTest, TruncationAndRewritingNeedAnAnchor) {
  auto chain = Chain(10);
  v1::AuditAnchor anchor;
  anchor.set_sequence(10);
  anchor.set_hash(chain[9].hash());
  chain.resize(7);
  EXPECT_TRUE(Verify(chain).ok);  // a shorter chain is consistent in itself
  AuditVerdict v = Verify(chain, {anchor});
  EXPECT_EQ(v.violation, v1::AUDIT_VIOLATION_TRUNCATED);
  EXPECT_EQ(v.first_bad_sequence, 8u);
  auto rewritten = Chain(10);
  rewritten[9].set_object("job/rewritten");
  rewritten[9].set_hash(AuditRecordHash(rewritten[9]));
  v = Verify(rewritten, {anchor});
  EXPECT_EQ(v.violation, v1::AUDIT_VIOLATION_ANCHOR_MISMATCH);
  EXPECT_EQ(v.first_bad_sequence, 10u);
}

TEST(AuditChainTest, Hex) {
  std::string bytes;
  EXPECT_EQ(HexOf(std::string("\x00\xff", 2)), "00ff");
  EXPECT_TRUE(BytesOfHex("00FF", &bytes));
  EXPECT_EQ(bytes, std::string("\x00\xff", 2));
  EXPECT_FALSE(BytesOfHex("0g", &bytes));
}

}  // namespace
}  // namespace strongroom
