// Enrollment (services/vm_controller/enrollment.h): the one good path, and each abuse of issue 14 refused and
// audited: unknown, ended and expired workloads, a replayed or second enrollment, another IP, another job,
// another project, another caller identity, a missing, wrong or borrowed enrollment ticket, a deployment-CA
// certificate on the secrets channel, re-enrollment of an ended id. Time is a parameter, so nothing here
// waits.
#include "services/vm_controller/enrollment.h"

#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "common/enrollment_ticket.h"

namespace strongroom {
namespace {

class RecordingAudit : public AuditSink {
 public:
  void Record(const AuditEvent& e) override {
    std::lock_guard<std::mutex> lock(mu);
    events.push_back(e);
  }
  std::mutex mu;  // Record may be called from several threads
  std::vector<AuditEvent> events;
};

constexpr char kTd[] = "example.edu";

class EnrollmentTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<ProjectCa>> ca = ProjectCa::Create("proj-a", absl::Hours(48));
    ASSERT_TRUE(ca.ok()) << ca.status();
    auth_ = std::make_unique<EnrollmentAuthority>(
        std::move(*ca), kTd, ProjectSecrets{"MUNGE-KEY-BYTES", "192.0.2.1", "/export/proj-a"},
        absl::Minutes(10), &audit_);
    ASSERT_TRUE(auth_->Expect(Handed("w-1", "gj-1", "192.0.2.10"), now_).ok());
    key_ = std::make_unique<EcKey>(*EcKey::Generate());
  }

  // Each workload's one-time ticket, as host-agent would draw it.
  const std::string& TicketOf(const std::string& id) {
    std::string& t = tickets_[id];
    if (t.empty()) t = *GenerateEnrollmentTicket();
    return t;
  }

  HandedOverWorkload Handed(const std::string& id, const std::string& job, const std::string& ip) {
    return HandedOverWorkload{
        id, job, "proj-a", ip, now_ + absl::Hours(1), EnrollmentTicketSha256(TicketOf(id))};
  }

  // On the main listener (with the caller's deployment identity).
  EnrollRequest Request(const std::string& id = "w-1") {
    return EnrollRequest{absl::StrCat("spiffe://", kTd, "/workload/", id),
                         "192.0.2.10",
                         id,
                         "gj-1",
                         "proj-a",
                         *key_->CsrPem(id),
                         TicketOf(id)};
  }

  // On the enrollment listener: the ticket alone.
  EnrollRequest TicketRequest(const std::string& id = "w-1") {
    EnrollRequest r = Request(id);
    r.caller_spiffe_id.clear();
    return r;
  }

  // No audit record carries a ticket (or its hash).
  void ExpectNoTicketAudited() {
    for (const AuditEvent& ev : audit_.events) {
      for (const auto& [id, ticket] : tickets_) {
        EXPECT_FALSE(absl::StrContains(ev.detail, ticket) || absl::StrContains(ev.actor, ticket) ||
                     absl::StrContains(ev.object, ticket))
            << "a ticket reached the audit: " << ev.action;
        for (const auto& [k, v] : ev.details) EXPECT_FALSE(absl::StrContains(v, ticket)) << k;
      }
    }
  }

  // The last audit record is a refusal of `step` with `code`, mentioning `reason`.
  void ExpectRefusalAudited(const std::string& step, absl::StatusCode code, const std::string& reason) {
    ASSERT_FALSE(audit_.events.empty());
    const AuditEvent& e = audit_.events.back();
    EXPECT_EQ(e.action, "enrollment/" + step);
    EXPECT_EQ(e.outcome, absl::StatusCodeToString(code));
    EXPECT_TRUE(absl::StrContains(e.detail, reason)) << e.detail;
  }

  // Whole seconds (certificates carry seconds); "now" because the project CA is valid from its creation.
  absl::Time now_ = absl::FromUnixSeconds(absl::ToUnixSeconds(absl::Now()));
  RecordingAudit audit_;
  std::unique_ptr<EnrollmentAuthority> auth_;
  std::unique_ptr<EcKey> key_;
  std::map<std::string, std::string> tickets_;  // workload id -> its ticket
};

TEST_F(EnrollmentTest, HandedOverWorkloadEnrollsOnceAndGetsTheProjectSecretsWithItsCertificate) {
  absl::StatusOr<Enrollment> e = auth_->Enroll(Request(), now_);
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(e->not_after, now_ + absl::Hours(1) + absl::Minutes(10));  // time limit + margin
  EXPECT_TRUE(VerifyIssuedBy(e->certificate_pem, e->project_ca_pem, now_).ok());
  absl::StatusOr<CertBinding> b = ReadBinding(e->certificate_pem);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->workload_id, "w-1");
  EXPECT_EQ(b->job_id, "gj-1");
  EXPECT_EQ(b->project, "proj-a");
  EXPECT_EQ(b->ip, "192.0.2.10");
  EXPECT_EQ(audit_.events.back().action, "enrollment/Enroll");
  EXPECT_EQ(audit_.events.back().outcome, "OK");

  absl::StatusOr<ProjectSecrets> s = auth_->Secrets(e->certificate_pem, "192.0.2.10", now_);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->munge_key, "MUNGE-KEY-BYTES");
  EXPECT_EQ(s->nfs_export, "/export/proj-a");
  for (const AuditEvent& ev : audit_.events) {
    EXPECT_FALSE(absl::StrContains(ev.detail, "MUNGE-KEY")) << "a secret reached the audit";
  }
}

TEST_F(EnrollmentTest, ReplayedOrSecondEnrollmentIsRefused) {
  EnrollRequest r = Request();
  ASSERT_TRUE(auth_->Enroll(r, now_).ok());
  EXPECT_EQ(auth_->Enroll(r, now_).status().code(),
            absl::StatusCode::kAlreadyExists);  // the same bytes again
  ExpectRefusalAudited("Enroll", absl::StatusCode::kAlreadyExists, "already enrolled");
  r.csr_pem = *EcKey::Generate()->CsrPem("w-1");  // a fresh key: still the second enrollment
  EXPECT_EQ(auth_->Enroll(r, now_).status().code(), absl::StatusCode::kAlreadyExists);
  ExpectRefusalAudited("Enroll", absl::StatusCode::kAlreadyExists, "already enrolled");
}

TEST_F(EnrollmentTest, ConcurrentReplaysYieldExactlyOneCertificate) {
  const EnrollRequest r = Request();
  std::atomic<int> issued{0}, refused{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&] {
      absl::StatusOr<Enrollment> e = auth_->Enroll(r, now_);
      (e.ok() ? issued : refused)++;
      if (!e.ok()) {
        EXPECT_EQ(e.status().code(), absl::StatusCode::kAlreadyExists);
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(issued.load(), 1);
  EXPECT_EQ(refused.load(), 7);
}

TEST_F(EnrollmentTest, AnotherIpIsRefused) {
  EnrollRequest r = Request();
  r.peer_ip = "192.0.2.11";
  EXPECT_EQ(auth_->Enroll(r, now_).status().code(), absl::StatusCode::kPermissionDenied);
  ExpectRefusalAudited("Enroll", absl::StatusCode::kPermissionDenied, "not the workload's address");
}

TEST_F(EnrollmentTest, UnknownWorkloadIsRefused) {
  EXPECT_EQ(auth_->Enroll(Request("w-9"), now_).status().code(), absl::StatusCode::kNotFound);
  ExpectRefusalAudited("Enroll", absl::StatusCode::kNotFound, "not handed over");
}

TEST_F(EnrollmentTest, EndedWorkloadIsRefusedAndItsIdCanNeverEnrollAgain) {
  auth_->End("w-1", now_);
  EXPECT_EQ(auth_->LiveCount(), 0u);
  EXPECT_EQ(auth_->Enroll(Request(), now_).status().code(), absl::StatusCode::kFailedPrecondition);
  ExpectRefusalAudited("Enroll", absl::StatusCode::kFailedPrecondition, "ended");
  // A new handover of the same id is refused too.
  EXPECT_EQ(auth_->Expect(Handed("w-1", "gj-1", "192.0.2.10"), now_).code(),
            absl::StatusCode::kAlreadyExists);
  ExpectRefusalAudited("Expect", absl::StatusCode::kAlreadyExists, "ended");
}

TEST_F(EnrollmentTest, EnrolledThenEndedWorkloadLosesTheSecrets) {
  absl::StatusOr<Enrollment> e = auth_->Enroll(Request(), now_);
  ASSERT_TRUE(e.ok());
  auth_->End("w-1", now_);
  EXPECT_EQ(auth_->Secrets(e->certificate_pem, "192.0.2.10", now_).status().code(),
            absl::StatusCode::kFailedPrecondition);
  ExpectRefusalAudited("Secrets", absl::StatusCode::kFailedPrecondition, "ended");
}

TEST_F(EnrollmentTest, ExpiredWorkloadIsRefused) {
  EXPECT_EQ(auth_->Enroll(Request(), now_ + absl::Hours(2)).status().code(),
            absl::StatusCode::kFailedPrecondition);
  ExpectRefusalAudited("Enroll", absl::StatusCode::kFailedPrecondition, "time limit");
}

TEST_F(EnrollmentTest, ExpiredCertificateGetsNoSecrets) {
  absl::StatusOr<Enrollment> e = auth_->Enroll(Request(), now_);
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(auth_->Secrets(e->certificate_pem, "192.0.2.10", now_ + absl::Hours(2)).status().code(),
            absl::StatusCode::kPermissionDenied);
  ExpectRefusalAudited("Secrets", absl::StatusCode::kPermissionDenied, "not a project certificate");
}

TEST_F(EnrollmentTest, WorkloadOfAnotherJobIsRefused) {
  EnrollRequest r = Request();
  r.global_job_id = "gj-2";
  EXPECT_EQ(auth_->Enroll(r, now_).status().code(), absl::StatusCode::kPermissionDenied);
  ExpectRefusalAudited("Enroll", absl::StatusCode::kPermissionDenied, "belongs to job gj-1");
}

TEST_F(EnrollmentTest, WorkloadOfAnotherProjectIsRefused) {
  EnrollRequest r = Request();
  r.project = "proj-b";
  EXPECT_EQ(auth_->Enroll(r, now_).status().code(), absl::StatusCode::kPermissionDenied);
  ExpectRefusalAudited("Enroll", absl::StatusCode::kPermissionDenied, "project proj-b");
  HandedOverWorkload other = Handed("w-2", "gj-2", "192.0.2.12");
  other.project = "proj-b";
  EXPECT_EQ(auth_->Expect(other, now_).code(), absl::StatusCode::kPermissionDenied);
  ExpectRefusalAudited("Expect", absl::StatusCode::kPermissionDenied, "project proj-b");
}

TEST_F(EnrollmentTest, AnotherCallerIdentityIsRefused) {
  for (const std::string& caller :
       {std::string("spiffe://example.edu/workload/w-2"), std::string("spiffe://example.edu/host-agent/w-1"),
        std::string("spiffe://other.example/workload/w-1"), std::string("not-a-spiffe-id")}) {
    EnrollRequest r = Request();
    r.caller_spiffe_id = caller;
    EXPECT_EQ(auth_->Enroll(r, now_).status().code(), absl::StatusCode::kPermissionDenied) << caller;
    ExpectRefusalAudited("Enroll", absl::StatusCode::kPermissionDenied, "not this workload's identity");
  }
  EXPECT_TRUE(auth_->Enroll(Request(), now_).ok());  // none of them used up the slot
}

TEST_F(EnrollmentTest, DeploymentCaCertificateGetsNoSecrets) {
  ASSERT_TRUE(auth_->Enroll(Request(), now_).ok());
  // The deployment CA (another CA) issues a certificate with the very same binding.
  absl::StatusOr<std::unique_ptr<ProjectCa>> deployment = ProjectCa::Create("proj-a", absl::Hours(48));
  ASSERT_TRUE(deployment.ok());
  absl::StatusOr<std::string> forged =
      (*deployment)
          ->IssueForKey(*key_, CertBinding{"proj-a", "w-1", "gj-1", "192.0.2.10", now_ - absl::Minutes(1),
                                           now_ + absl::Hours(1)});
  ASSERT_TRUE(forged.ok());
  EXPECT_EQ(auth_->Secrets(*forged, "192.0.2.10", now_).status().code(), absl::StatusCode::kPermissionDenied);
  ExpectRefusalAudited("Secrets", absl::StatusCode::kPermissionDenied, "not a project certificate");
}

TEST_F(EnrollmentTest, ProjectCertificateFromAnotherAddressGetsNoSecrets) {
  absl::StatusOr<Enrollment> e = auth_->Enroll(Request(), now_);
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(auth_->Secrets(e->certificate_pem, "192.0.2.11", now_).status().code(),
            absl::StatusCode::kPermissionDenied);
  ExpectRefusalAudited("Secrets", absl::StatusCode::kPermissionDenied, "used from 192.0.2.11");
}

TEST_F(EnrollmentTest, HandoverIsIdempotentButNotRebindable) {
  EXPECT_TRUE(auth_->Expect(Handed("w-1", "gj-1", "192.0.2.10"), now_).ok());
  EXPECT_EQ(auth_->Expect(Handed("w-1", "gj-1", "192.0.2.99"), now_).code(),
            absl::StatusCode::kAlreadyExists);
  ExpectRefusalAudited("Expect", absl::StatusCode::kAlreadyExists, "another job, address or ticket");
  HandedOverWorkload rehashed = Handed("w-1", "gj-1", "192.0.2.10");
  rehashed.ticket_sha256 = EnrollmentTicketSha256(*GenerateEnrollmentTicket());
  EXPECT_EQ(auth_->Expect(rehashed, now_).code(), absl::StatusCode::kAlreadyExists);
}

// ---- the one-time enrollment ticket (the enrollment listener's only credential) ---------------------------

TEST_F(EnrollmentTest, TicketAloneEnrollsOnTheEnrollmentListener) {
  absl::StatusOr<Enrollment> e = auth_->Enroll(TicketRequest(), now_);
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_TRUE(VerifyIssuedBy(e->certificate_pem, e->project_ca_pem, now_).ok());
  EXPECT_EQ(audit_.events.back().actor, "ticket-holder@192.0.2.10");
  EXPECT_TRUE(auth_->Secrets(e->certificate_pem, "192.0.2.10", now_).ok());
  ExpectNoTicketAudited();
}

TEST_F(EnrollmentTest, MissingTicketIsRefused) {
  for (EnrollRequest r : {Request(), TicketRequest()}) {
    r.ticket.clear();
    EXPECT_EQ(auth_->Enroll(r, now_).status().code(), absl::StatusCode::kPermissionDenied);
    ExpectRefusalAudited("Enroll", absl::StatusCode::kPermissionDenied, "enrollment_ticket: missing");
  }
  EXPECT_TRUE(auth_->Enroll(TicketRequest(), now_).ok());  // the slot is still there
}

TEST_F(EnrollmentTest, WrongTicketIsRefusedAndDoesNotUseUpTheSlot) {
  for (const std::string& wrong : {*GenerateEnrollmentTicket(), EnrollmentTicketSha256(TicketOf("w-1")),
                                   std::string("not hex"), TicketOf("w-1") + "0"}) {
    EnrollRequest r = TicketRequest();
    r.ticket = wrong;
    EXPECT_EQ(auth_->Enroll(r, now_).status().code(), absl::StatusCode::kPermissionDenied);
    ExpectRefusalAudited("Enroll", absl::StatusCode::kPermissionDenied, "not this workload's ticket");
  }
  EXPECT_TRUE(auth_->Enroll(TicketRequest(), now_).ok());
  ExpectNoTicketAudited();
}

TEST_F(EnrollmentTest, TicketOfAnotherWorkloadIsRefused) {
  ASSERT_TRUE(auth_->Expect(Handed("w-2", "gj-1", "192.0.2.10"), now_).ok());
  EnrollRequest r = TicketRequest("w-1");
  r.ticket = TicketOf("w-2");
  EXPECT_EQ(auth_->Enroll(r, now_).status().code(), absl::StatusCode::kPermissionDenied);
  ExpectRefusalAudited("Enroll", absl::StatusCode::kPermissionDenied, "not this workload's ticket");
  EXPECT_TRUE(auth_->Enroll(TicketRequest("w-2"), now_).ok());
  EXPECT_TRUE(auth_->Enroll(TicketRequest("w-1"), now_).ok());
  ExpectNoTicketAudited();
}

TEST_F(EnrollmentTest, ReplayWithTheRightTicketAfterSuccessIsRefused) {
  ASSERT_TRUE(auth_->Enroll(TicketRequest(), now_).ok());
  EnrollRequest replay = TicketRequest();
  replay.csr_pem = *EcKey::Generate()->CsrPem("w-1");  // the attacker's own key
  EXPECT_EQ(auth_->Enroll(replay, now_).status().code(), absl::StatusCode::kAlreadyExists);
  ExpectRefusalAudited("Enroll", absl::StatusCode::kAlreadyExists, "already enrolled");
  // From another address too (the ticket is right, the slot is gone either way).
  replay.peer_ip = "192.0.2.66";
  EXPECT_EQ(auth_->Enroll(replay, now_).status().code(), absl::StatusCode::kAlreadyExists);
  ExpectNoTicketAudited();
}

TEST_F(EnrollmentTest, TicketFromAnotherAddressIsRefusedWithoutUsingUpTheSlot) {
  EnrollRequest r = TicketRequest();
  r.peer_ip = "192.0.2.66";
  EXPECT_EQ(auth_->Enroll(r, now_).status().code(), absl::StatusCode::kPermissionDenied);
  ExpectRefusalAudited("Enroll", absl::StatusCode::kPermissionDenied, "not the workload's address");
  EXPECT_TRUE(auth_->Enroll(TicketRequest(), now_).ok());
}

TEST_F(EnrollmentTest, HandoverWithoutAWellFormedTicketHashIsRefused) {
  for (const std::string& hash : {std::string(""), std::string("abc"), std::string(64, 'G')}) {
    HandedOverWorkload w = Handed("w-3", "gj-3", "192.0.2.13");
    w.ticket_sha256 = hash;
    EXPECT_EQ(auth_->Expect(w, now_).code(), absl::StatusCode::kInvalidArgument) << hash;
    ExpectRefusalAudited("Expect", absl::StatusCode::kInvalidArgument, "enrollment_ticket_sha256");
  }
}

TEST_F(EnrollmentTest, SecretsWithoutAClientCertificateAreRefused) {
  ASSERT_TRUE(auth_->Enroll(TicketRequest(), now_).ok());
  EXPECT_EQ(auth_->Secrets("", "192.0.2.10", now_).status().code(), absl::StatusCode::kPermissionDenied);
  ExpectRefusalAudited("Secrets", absl::StatusCode::kPermissionDenied, "no client certificate");
}

TEST_F(EnrollmentTest, BadCsrIsRefusedAndAudited) {
  EnrollRequest r = Request();
  r.csr_pem = "garbage";
  EXPECT_EQ(auth_->Enroll(r, now_).status().code(), absl::StatusCode::kInvalidArgument);
  ExpectRefusalAudited("Enroll", absl::StatusCode::kInvalidArgument, "CSR");
}

}  // namespace
}  // namespace strongroom

// The address enrollment binds to comes from gRPC's peer string.
#include "services/vm_controller/service.h"

namespace strongroom::vm_controller {
namespace {

TEST(PeerIpv4Test, ParsesGrpcPeerStrings) {
  EXPECT_EQ(PeerIpv4("ipv4:192.0.2.10:41234"), "192.0.2.10");
  EXPECT_EQ(PeerIpv4("ipv6:[::ffff:192.0.2.10]:41234"), "192.0.2.10");
  EXPECT_EQ(PeerIpv4("ipv6:[2001:db8::1]:41234"), "");
  EXPECT_EQ(PeerIpv4("unix:/run/x.sock"), "");
  EXPECT_EQ(PeerIpv4(""), "");
}

}  // namespace
}  // namespace strongroom::vm_controller
