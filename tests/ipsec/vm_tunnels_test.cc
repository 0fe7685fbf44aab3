// The controlling VM's side against real charons (services/vm_controller/vm_tunnels.h): a workload enrolled
// by the project's enrollment authority and handed over to the VM's charon brings its tunnel up with the
// certificate it got; one not handed over cannot; after the workload's end nothing of it is left in the VM's
// charon (only the VM's own identity) and the workload cannot come back.
#include "services/vm_controller/vm_tunnels.h"

#include <gtest/gtest.h>

#include <memory>

#include "absl/strings/str_cat.h"
#include "common/enrollment_ticket.h"
#include "common/ipsec_session.h"
#include "common/status.h"
#include "services/vm_controller/enrollment.h"
#include "tests/rig/charon.h"
#include "tests/rig/files.h"
#include "tests/rig/rig.h"

namespace strongroom {
namespace {

constexpr char kVmIp[] = "192.0.2.1";
constexpr char kWorkloadIp[] = "192.0.2.10";

struct RecordingAudit : AuditSink {
  void Record(const AuditEvent& e) override { events.push_back(e); }
  std::vector<AuditEvent> events;
};

TEST(VmTunnelsTest, HandedOverWorkloadEnrollsAndConnectsAndLeavesNothingAfterItsEnd) {
  const IpsecBackend backend = ChooseIpsecBackend(ProbeKernelIpsec());
  absl::StatusOr<std::unique_ptr<Rig>> rig = Rig::Create(SR_RIG_SH);
  ASSERT_TRUE(rig.ok()) << rig.status();
  ASSERT_TRUE((*rig)->AddHost("vm", absl::StrCat(kVmIp, "/24")).ok());
  ASSERT_TRUE((*rig)->AddHost("wl", absl::StrCat(kWorkloadIp, "/24")).ok());
  {
    absl::StatusOr<std::unique_ptr<CharonInstance>> vm =
        CharonInstance::Start(rig->get(), "vm", (*rig)->state_dir() + "/charon-vm", backend);
    ASSERT_TRUE(vm.ok()) << vm.status();
    absl::StatusOr<std::unique_ptr<CharonInstance>> wl =
        CharonInstance::Start(rig->get(), "wl", (*rig)->state_dir() + "/charon-wl", backend);
    ASSERT_TRUE(wl.ok()) << wl.status();

    RecordingAudit audit;
    EnrollmentAuthority authority(*ProjectCa::Create("proj-a", absl::Hours(24)), "example.edu",
                                  ProjectSecrets{"k", kVmIp, "/proj-a"}, absl::Minutes(10), &audit);
    absl::StatusOr<std::unique_ptr<VmTunnels>> tunnels =
        VmTunnels::Create(authority.ca(), (*vm)->vici_socket(), kVmIp, backend);
    ASSERT_TRUE(tunnels.ok()) << tunnels.status();

    // Each workload's one-time enrollment ticket (host-agent's in production), and its hash for the handover.
    auto ticket = [](const std::string& id) { return EnrollmentTicketSha256("ticket-of-" + id); };
    auto hash = [&](const std::string& id) { return EnrollmentTicketSha256(ticket(id)); };
    // The workload's side: enrollment, then its tunnel with what enrollment returned.
    auto connect = [&](const std::string& id) -> absl::Status {
      absl::StatusOr<EcKey> key = EcKey::Generate();
      if (!key.ok()) return key.status();
      absl::StatusOr<Enrollment> e =
          authority.Enroll({absl::StrCat("spiffe://example.edu/workload/", id), kWorkloadIp, id, "gj-1",
                            "proj-a", *key->CsrPem(id), ticket(id)},
                           absl::Now());
      if (!e.ok()) return e.status();
      SR_ASSIGN_OR_RETURN(ViciClient vici, (*wl)->Vici());
      SR_RETURN_IF_ERROR(TearDownTunnel(vici, id));  // a fresh start for each attempt
      SR_RETURN_IF_ERROR(LoadIdentity(vici, *key, e->certificate_pem));
      TunnelSpec spec{id, kWorkloadIp, kVmIp, e->certificate_pem, e->project_ca_pem, backend};
      spec.local_id = WorkloadIkeId("proj-a", "gj-1", id);
      SR_RETURN_IF_ERROR(LoadTunnel(vici, spec));
      return BringUpTunnel(vici, id, absl::Seconds(8));
    };

    ASSERT_TRUE(
        authority
            .Expect({"wl-1", "gj-1", "proj-a", kWorkloadIp, absl::Now() + absl::Hours(1), hash("wl-1")},
                    absl::Now())
            .ok());
    ASSERT_TRUE((*tunnels)->Add("wl-1", "gj-1", kWorkloadIp).ok());
    absl::Status up = connect("wl-1");
    ASSERT_TRUE(up.ok()) << up << "\n" << ReadFileOrEmpty((*vm)->log_path());
    absl::StatusOr<ViciClient> vm_vici = (*vm)->Vici();
    ASSERT_TRUE(vm_vici.ok());
    absl::StatusOr<TunnelState> st = GetTunnelState(*vm_vici, "wl-1");
    ASSERT_TRUE(st.ok());
    EXPECT_TRUE(st->child_installed);

    // Handed over for enrollment but without a tunnel on the VM: enrollment works, IKE does not, although
    // wl-1's connection is loaded for the very same address (as after netd reuses an address): the VM accepts
    // only the certificate naming wl-1 of gj-1 there.
    ASSERT_TRUE(
        authority
            .Expect({"wl-2", "gj-1", "proj-a", kWorkloadIp, absl::Now() + absl::Hours(1), hash("wl-2")},
                    absl::Now())
            .ok());
    EXPECT_FALSE(connect("wl-2").ok());

    // The end: tombstone and tunnel removal. The VM keeps only its own identity.
    authority.End("wl-1", absl::Now());
    ASSERT_TRUE((*tunnels)->Remove("wl-1").ok());
    EXPECT_TRUE((*tunnels)->Remove("wl-1").ok());  // idempotent
    absl::StatusOr<CharonHoldings> h = GetHoldings(*vm_vici);
    ASSERT_TRUE(h.ok());
    EXPECT_EQ(h->connections, 0u);
    EXPECT_EQ(h->sas, 0u);
    EXPECT_EQ(h->keys, 1u);  // the VM's own key
    // The workload cannot come back: no re-enrollment of the id, and no connection for it.
    EXPECT_EQ(connect("wl-1").code(), absl::StatusCode::kFailedPrecondition);
    absl::StatusOr<ViciClient> wl_vici = (*wl)->Vici();
    ASSERT_TRUE(wl_vici.ok());
    EXPECT_FALSE(BringUpTunnel(*wl_vici, "wl-1", absl::Seconds(3)).ok());
    EXPECT_TRUE(TearDownTunnel(*wl_vici, "wl-1").ok());
    EXPECT_TRUE(TearDownTunnel(*wl_vici, "wl-2").ok());
  }
  EXPECT_TRUE((*rig)->Down().ok());
}

}  // namespace
}  // namespace strongroom
