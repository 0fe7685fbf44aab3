#include "services/backend/validation.h"

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "tests/backend/sample_requests.h"

namespace strongroom::backend {
namespace {

v1::CreateGlobalJobRequest ValidRequest() { return testing::SampleCreateRequest(true, "10.0.0.5:6817"); }

void ExpectInvalid(const v1::CreateGlobalJobRequest& r, const std::string& message) {
  absl::Status s = ValidateCreateRequest(r);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), message)) << s;
}

TEST(ValidationTest, AValidRequestPasses) { EXPECT_TRUE(ValidateCreateRequest(ValidRequest()).ok()); }

TEST(ValidationTest, PatternsOfTheConventions) {
  EXPECT_TRUE(IsId("gj-01abc"));
  EXPECT_FALSE(IsId("Gj"));
  EXPECT_FALSE(IsId("a/b"));
  EXPECT_FALSE(IsId(std::string(64, 'a')));
  EXPECT_TRUE(IsToken("sr-12345678"));
  EXPECT_FALSE(IsToken("short"));
  EXPECT_TRUE(IsUserName("_svc.x-1"));
  EXPECT_FALSE(IsUserName("1abc"));
  EXPECT_TRUE(IsName("proj_1"));
  EXPECT_FALSE(IsName("proj 1"));
  EXPECT_TRUE(IsAuditAction("/strongroom.v1.Backend/GetJob"));
  EXPECT_FALSE(IsAuditAction("drop table;"));
  EXPECT_TRUE(IsDetailKey("peer.addr"));
  EXPECT_FALSE(IsDetailKey("Peer"));
}

TEST(ValidationTest, SqlInAFieldWithAFormatIsRefusedQuotingTheValue) {
  v1::CreateGlobalJobRequest r = ValidRequest();
  r.mutable_user()->set_name("x'; DROP TABLE jobs; --");
  ExpectInvalid(r, "user.name: \"x\\'; DROP TABLE jobs; --\" must match");
}

TEST(ValidationTest, EachFieldIsNamed) {
  v1::CreateGlobalJobRequest r = ValidRequest();
  r.clear_local();
  ExpectInvalid(r, "local: required");
  r = ValidRequest();
  r.mutable_local()->set_local_job_id(0);
  ExpectInvalid(r, "local.local_job_id");
  r = ValidRequest();
  r.mutable_user()->set_uid(0);
  ExpectInvalid(r, "user.uid: \"0\" is root");
  r = ValidRequest();
  r.mutable_resources()->set_cpus(5000);
  ExpectInvalid(r, "resources.cpus");
  r = ValidRequest();
  r.mutable_resources()->mutable_time_limit()->set_seconds(-5);
  ExpectInvalid(r, "resources.time_limit");
  r = ValidRequest();
  r.mutable_resources()->mutable_time_limit()->set_seconds(30);
  ExpectInvalid(r, "is not in 60 s..366 days");
  r = ValidRequest();
  r.clear_slurmctld_addresses();
  ExpectInvalid(r, "slurmctld_addresses: 0 given");
  r = ValidRequest();
  r.set_slurmctld_addresses(0, "host:99999");
  ExpectInvalid(r, "slurmctld_addresses[0]");
  r = ValidRequest();
  r.mutable_image()->set_name("../etc");
  ExpectInvalid(r, "image.name");
  r = ValidRequest();
  r.mutable_image()->set_digest("sha256:XYZ");
  ExpectInvalid(r, "image.digest");
  r = ValidRequest();
  r.mutable_scratch()->set_size_bytes(1024);
  ExpectInvalid(r, "scratch.size_bytes");
}

TEST(ValidationTest, AllowlistRules) {
  v1::CreateGlobalJobRequest r = ValidRequest();
  v1::EgressRule* rule = r.add_egress_allowlist();
  rule->set_destination_cidr("10.1.2.0/24");
  rule->set_protocol(v1::PROTOCOL_TCP);
  rule->set_port_start(443);
  rule->set_description("licence server'); --");
  EXPECT_TRUE(ValidateCreateRequest(r).ok());
  rule->set_destination_cidr("10.1.2.1/24");
  ExpectInvalid(r, "host bits");
  rule->set_destination_cidr("10.0.0.0/8");
  ExpectInvalid(r, "shorter than /16");
  rule->set_destination_cidr("127.0.0.1");
  ExpectInvalid(r, "loopback");
  rule->set_destination_cidr("169.254.1.1");
  ExpectInvalid(r, "link-local");
  rule->set_destination_cidr("10.1.2.0/24");
  rule->set_port_end(10);
  ExpectInvalid(r, "port_end");
  rule->set_port_end(0);
  rule->set_description(std::string(300, 'x'));
  ExpectInvalid(r, "description");
  rule->set_description(std::string("nul\0byte", 8));
  ExpectInvalid(r, "NUL");
}

TEST(ValidationTest, CidrContainment) {
  const Ipv4Cidr outer = *ParseIpv4Cidr("10.0.0.0/8");
  EXPECT_TRUE(outer.Contains(*ParseIpv4Cidr("10.1.2.3")));
  EXPECT_FALSE(outer.Contains(*ParseIpv4Cidr("11.0.0.0/16")));
  EXPECT_FALSE(ParseIpv4Cidr("256.0.0.1").ok());
  EXPECT_FALSE(ParseIpv4Cidr("1.2.3").ok());
  EXPECT_FALSE(ParseIpv4Cidr("01.2.3.4").ok());
}

TEST(ValidationTest, SelectorsAndRanges) {
  v1::JobSelector selector;
  EXPECT_FALSE(ValidateSelector(selector, "job").ok());
  selector.set_global_slurm_job_id(67108864);
  EXPECT_TRUE(absl::StrContains(ValidateSelector(selector, "job").message(), "job.global_slurm_job_id"));
  selector.set_global_job_id("gj-1");
  EXPECT_TRUE(ValidateSelector(selector, "job").ok());
  v1::TimeRange range;
  range.mutable_start()->set_seconds(10);
  range.mutable_end()->set_seconds(5);
  EXPECT_FALSE(ValidateTimeRange(range, "window", false).ok());
  range.clear_end();
  EXPECT_TRUE(ValidateTimeRange(range, "window", false).ok());
  EXPECT_FALSE(ValidateTimeRange(range, "window", true).ok());
}

TEST(ValidationTest, SenderAuditRecords) {
  v1::AuditRecord r;
  EXPECT_TRUE(
      absl::StrContains(ValidateSenderRecord(r, "records[0]").message(), "records[0].time: required"));
  r.mutable_time()->set_seconds(1);
  r.mutable_actor()->set_spiffe_id("spiffe://td/netd/n1");
  r.set_action("/strongroom.v1.Netd/AllocatePort");
  r.set_outcome(v1::AUDIT_OUTCOME_SUCCESS);
  r.set_source_sequence(1);
  EXPECT_TRUE(ValidateSenderRecord(r, "records[0]").ok());
  (*r.mutable_details())["Bad Key"] = "v";
  EXPECT_FALSE(ValidateSenderRecord(r, "records[0]").ok());
  r.clear_details();
  r.set_object(std::string(300, 'o'));
  EXPECT_FALSE(ValidateSenderRecord(r, "records[0]").ok());
}

}  // namespace
}  // namespace strongroom::backend
