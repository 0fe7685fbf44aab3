// VICI message encoding against byte strings built by hand from the protocol README, the tunnel shape, and
// the project CA's certificates (pure: no charon, no network).
#include "common/vici.h"

#include <gtest/gtest.h>

#include "absl/strings/match.h"
#include "common/ipsec_tunnel.h"
#include "common/project_ca.h"

namespace strongroom {
namespace {

TEST(ViciMessage, EncodesTheReadmeExample) {
  // README: key1 = value1, section1 { sub-section { key2 = value2 } list1 = [item1, item2] }
  ViciMessage m;
  m.Set("key1", "value1");
  ViciMessage& s1 = m.Section("section1");
  s1.Section("sub-section").Set("key2", "value2");
  s1.SetList("list1", {"item1", "item2"});
  absl::StatusOr<std::string> bytes = m.Encode();
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  std::string want = std::string("\x03\x04key1\x00\x06value1", 14) + std::string("\x01\x08section1", 10) +
                     std::string("\x01\x0bsub-section", 13) + std::string("\x03\x04key2\x00\x06value2", 14) +
                     std::string("\x02", 1) + std::string("\x04\x05list1", 7) +
                     std::string("\x05\x00\x05item1\x05\x00\x05item2\x06", 17) + std::string("\x02", 1);
  EXPECT_EQ(*bytes, want);
  absl::StatusOr<ViciMessage> back = ViciMessage::Decode(*bytes);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->ValueOr("key1", ""), "value1");
  ASSERT_NE(back->FindSection("section1"), nullptr);
  EXPECT_EQ(back->FindSection("section1")->FindSection("sub-section")->ValueOr("key2", ""), "value2");
  EXPECT_EQ(*back->FindSection("section1")->List("list1"), (std::vector<std::string>{"item1", "item2"}));
}

TEST(ViciMessage, RefusesMalformedInput) {
  EXPECT_FALSE(ViciMessage::Decode(std::string("\x03\x04key1\x00\x09value1", 14)).ok());  // value truncated
  EXPECT_FALSE(
      ViciMessage::Decode(std::string("\x01\x01s\x03\x01k\x00\x00", 8)).ok());  // section unterminated
  EXPECT_FALSE(ViciMessage::Decode(std::string("\x02", 1)).ok());               // end without start
  EXPECT_FALSE(ViciMessage::Decode(std::string("\x09", 1)).ok());               // unknown element
  EXPECT_FALSE(ViciMessage::Decode(std::string("\x04\x01l\x03", 4)).ok());      // kv inside a list
  ViciMessage big;
  big.Set("k", std::string(70000, 'x'));
  EXPECT_FALSE(big.Encode().ok());
}

TEST(ViciMessage, CopiesAreDeepAndDebugStringElidesLongValues) {
  ViciMessage a;
  a.Section("s").Set("k", "v");
  ViciMessage b = a;
  const_cast<ViciMessage*>(b.FindSection("s"))->Set("k2", "v2");
  EXPECT_EQ(a.FindSection("s")->Value("k2"), nullptr);
  ViciMessage key;
  key.Set("data", std::string(100, 'S'));
  EXPECT_EQ(key.DebugString(), "data=<100 bytes>");
}

TEST(IpsecTunnel, BackendFollowsTheKernel) {
  EXPECT_EQ(ChooseIpsecBackend({.xfrm_netlink = true, .esp4 = true}), IpsecBackend::kKernelEsp);
  EXPECT_EQ(ChooseIpsecBackend({.xfrm_netlink = true, .esp4 = false}), IpsecBackend::kLibipsec);
  EXPECT_EQ(ChooseIpsecBackend({.xfrm_netlink = false, .esp4 = true}), IpsecBackend::kLibipsec);
  EXPECT_TRUE(LibipsecBypassRules(IpsecBackend::kKernelEsp).empty());
  EXPECT_EQ(LibipsecBypassRules(IpsecBackend::kLibipsec).size(), 2u);
  EXPECT_TRUE(absl::StrContains(CharonConf({"/run/x.vici", "/var/log/c.log", IpsecBackend::kLibipsec}),
                                "kernel-libipsec kernel-netlink"));
  EXPECT_FALSE(
      absl::StrContains(CharonConf({"/run/x.vici", "/var/log/c.log", IpsecBackend::kKernelEsp}), "libipsec"));
}

TEST(IpsecTunnel, LoadConnIsAeadCertificatesOnlyAndPinsTheProjectCa) {
  TunnelSpec spec{"w-17",
                  "192.0.2.10",
                  "192.0.2.1",
                  "-----BEGIN CERTIFICATE-----me",
                  "-----BEGIN CERTIFICATE-----ca",
                  IpsecBackend::kLibipsec};
  absl::StatusOr<ViciMessage> m = BuildLoadConn(spec);
  ASSERT_TRUE(m.ok()) << m.status();
  const ViciMessage* conn = m->FindSection("w-17");
  ASSERT_NE(conn, nullptr);
  EXPECT_EQ(conn->ValueOr("version", ""), "2");
  EXPECT_EQ(*conn->List("proposals"), std::vector<std::string>{"aes256gcm16-prfsha384-ecp384"});
  EXPECT_EQ(conn->ValueOr("encap", ""), "yes");
  EXPECT_EQ(conn->FindSection("local")->ValueOr("auth", ""), "pubkey");
  EXPECT_EQ(conn->FindSection("remote")->ValueOr("auth", ""), "pubkey");
  EXPECT_EQ(conn->FindSection("remote")->ValueOr("id", ""), "192.0.2.1");  // default: the address
  TunnelSpec by_dn = spec;
  by_dn.remote_id = WorkloadIkeId("proj-a", "gj-1", "w-17");
  EXPECT_EQ(BuildLoadConn(by_dn)->FindSection("w-17")->FindSection("remote")->ValueOr("id", ""),
            "O=proj-a, OU=gj-1, CN=w-17");
  EXPECT_EQ(*conn->FindSection("remote")->List("cacerts"), std::vector<std::string>{spec.project_ca_pem});
  const ViciMessage* child = conn->FindSection("children")->FindSection("w-17");
  EXPECT_EQ(*child->List("esp_proposals"), std::vector<std::string>{"aes256gcm16"});
  EXPECT_EQ(child->ValueOr("mode", ""), "tunnel");
  EXPECT_FALSE(absl::StrContains(m->DebugString(), "psk"));
  spec.backend = IpsecBackend::kKernelEsp;
  EXPECT_EQ(BuildLoadConn(spec)->FindSection("w-17")->ValueOr("encap", ""), "yes");  // one allowlist for both

  TunnelSpec bad = spec;
  bad.name = "a b";
  EXPECT_FALSE(BuildLoadConn(bad).ok());
  bad = spec;
  bad.remote_ip = "192.0.2.10";
  EXPECT_FALSE(BuildLoadConn(bad).ok());
  bad = spec;
  bad.project_ca_pem = "";
  EXPECT_FALSE(BuildLoadConn(bad).ok());
}

TEST(ProjectCa, IssuesBoundShortLivedCertificatesFromCsrs) {
  absl::StatusOr<std::unique_ptr<ProjectCa>> ca = ProjectCa::Create("proj-a", absl::Hours(24));
  ASSERT_TRUE(ca.ok()) << ca.status();
  absl::StatusOr<EcKey> key = EcKey::Generate();
  ASSERT_TRUE(key.ok());
  absl::StatusOr<std::string> csr = key->CsrPem("anything the workload likes");
  ASSERT_TRUE(csr.ok()) << csr.status();
  absl::Time now = absl::Now();
  CertBinding b{"proj-a", "w-17", "job-5", "192.0.2.10", now - absl::Minutes(1), now + absl::Hours(1)};
  absl::StatusOr<std::string> cert = (*ca)->IssueFromCsr(*csr, b);
  ASSERT_TRUE(cert.ok()) << cert.status();
  EXPECT_TRUE(VerifyIssuedBy(*cert, (*ca)->cert_pem(), now).ok());
  EXPECT_FALSE(VerifyIssuedBy(*cert, (*ca)->cert_pem(), now + absl::Hours(2)).ok());  // expired
  absl::StatusOr<std::unique_ptr<ProjectCa>> other = ProjectCa::Create("proj-a", absl::Hours(24));
  ASSERT_TRUE(other.ok());
  EXPECT_FALSE(VerifyIssuedBy(*cert, (*other)->cert_pem(), now).ok());  // another CA, same name

  CertBinding wrong = b;
  wrong.project = "proj-b";
  EXPECT_EQ((*ca)->IssueFromCsr(*csr, wrong).status().code(), absl::StatusCode::kPermissionDenied);
  std::string tampered = *csr;
  tampered[tampered.size() / 2] = tampered[tampered.size() / 2] == 'A' ? 'B' : 'A';
  EXPECT_FALSE((*ca)->IssueFromCsr(tampered, b).ok());
  EXPECT_FALSE((*ca)->IssueFromCsr("not a csr", b).ok());
  absl::StatusOr<std::string> pem = key->PrivatePem();
  ASSERT_TRUE(pem.ok());
  EXPECT_TRUE(absl::StrContains(*pem, "PRIVATE KEY"));
}

TEST(IpsecTunnel, TheWorkloadsEndMirrorsTheVmsEnd) {
  const WorkloadTunnelEnds ends{"proj-a", "gj-1", "wl-1", "198.51.100.41", "198.51.100.40"};
  const TunnelSpec vm = VmSideTunnel(ends, "VMCERT", "CA", IpsecBackend::kLibipsec);
  const TunnelSpec wl = WorkloadSideTunnel(ends, "WLCERT", "CA", IpsecBackend::kLibipsec);
  EXPECT_EQ(vm.name, "wl-1");
  EXPECT_EQ(wl.name, vm.name);
  EXPECT_EQ(wl.local_ip, vm.remote_ip);
  EXPECT_EQ(wl.remote_ip, vm.local_ip);
  EXPECT_EQ(wl.local_ip, "198.51.100.41");
  // The workload presents its subject DN, which the VM's connection requires; the VM is its address.
  EXPECT_EQ(wl.local_id, "O=proj-a, OU=gj-1, CN=wl-1");
  EXPECT_EQ(vm.remote_id, wl.local_id);
  EXPECT_EQ(vm.local_id, "");
  EXPECT_EQ(wl.remote_id, "");
  EXPECT_EQ(wl.local_cert_pem, "WLCERT");
  EXPECT_EQ(vm.local_cert_pem, "VMCERT");
}

}  // namespace
}  // namespace strongroom
