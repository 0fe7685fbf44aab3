// The workload <-> controlling VM tunnel against two real charons on rig hosts, configured only through
// common/vici.h: certificates from the project CA, keys generated in memory and loaded over VICI, IKEv2 with
// AES-GCM, data through the tunnel, the project's NFSv4 share (nfs-ganesha) read through it; and the refusals
// charon itself enforces (a deployment-CA certificate with the right IP, a project certificate for another
// IP). Uses kernel ESP where this kernel has it, else kernel-libipsec, and says which.
#include "common/ipsec_tunnel.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <fstream>
#include <memory>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/ipsec_session.h"
#include "common/project_ca.h"
#include "common/status.h"
#include "common/subprocess.h"
#include "common/vici.h"
#include "tests/rig/charon.h"
#include "tests/rig/files.h"
#include "tests/rig/ganesha.h"
#include "tests/rig/rig.h"

namespace strongroom {
namespace {

constexpr char kVmIp[] = "192.0.2.1";
constexpr char kWorkloadIp[] = "192.0.2.10";

class IpsecTunnelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    backend_ = ChooseIpsecBackend(ProbeKernelIpsec());
    std::fprintf(stderr, "IPsec backend in use: %s\n", std::string(IpsecBackendName(backend_)).c_str());
    absl::StatusOr<std::unique_ptr<Rig>> rig = Rig::Create(SR_RIG_SH);
    ASSERT_TRUE(rig.ok()) << rig.status();
    rig_ = std::move(*rig);
    ASSERT_TRUE(rig_->AddHost("vm", absl::StrCat(kVmIp, "/24")).ok());
    ASSERT_TRUE(rig_->AddHost("wl", absl::StrCat(kWorkloadIp, "/24")).ok());
    absl::StatusOr<std::unique_ptr<CharonInstance>> vm =
        CharonInstance::Start(rig_.get(), "vm", rig_->state_dir() + "/charon-vm", backend_);
    ASSERT_TRUE(vm.ok()) << vm.status();
    vm_ = std::move(*vm);
    absl::StatusOr<std::unique_ptr<CharonInstance>> wl =
        CharonInstance::Start(rig_.get(), "wl", rig_->state_dir() + "/charon-wl", backend_);
    ASSERT_TRUE(wl.ok()) << wl.status();
    wl_ = std::move(*wl);
    absl::StatusOr<std::unique_ptr<ProjectCa>> ca = ProjectCa::Create("proj-a", absl::Hours(24));
    ASSERT_TRUE(ca.ok()) << ca.status();
    ca_ = std::move(*ca);
  }

  void TearDown() override {
    if (wl_) {
      EXPECT_TRUE(wl_->Stop().ok());
    }
    if (vm_) {
      EXPECT_TRUE(vm_->Stop().ok());
    }
    if (rig_) {
      EXPECT_TRUE(rig_->Down().ok());
    }
  }

  CertBinding Binding(const std::string& id, const std::string& ip) {
    absl::Time now = absl::Now();
    return CertBinding{"proj-a", id, "job-1", ip, now - absl::Minutes(1), now + absl::Minutes(30)};
  }

  // Loads `key`, `cert` and a tunnel from `local` to `remote` into `charon` (common/ipsec_session.h).
  void LoadEnd(CharonInstance& charon, const EcKey& key, const std::string& cert, const std::string& local,
               const std::string& remote, const std::string& ca_pem) {
    absl::StatusOr<ViciClient> vici = charon.Vici();
    ASSERT_TRUE(vici.ok()) << vici.status();
    absl::Status s = LoadIdentity(*vici, key, cert);
    ASSERT_TRUE(s.ok()) << s;
    s = LoadTunnel(*vici, {"w-1", local, remote, cert, ca_pem, backend_});
    ASSERT_TRUE(s.ok()) << s;
  }

  // Tears both ends down and checks that neither charon holds a connection, key or SA any more, and that no
  // route into the tunnel is left in either host.
  void ExpectNothingLeft() {
    for (CharonInstance* c : {wl_.get(), vm_.get()}) {
      absl::StatusOr<ViciClient> vici = c->Vici();
      ASSERT_TRUE(vici.ok());
      absl::Status s = TearDownTunnel(*vici, "w-1");
      EXPECT_TRUE(s.ok()) << s;
      absl::StatusOr<CharonHoldings> h = GetHoldings(*vici);
      ASSERT_TRUE(h.ok()) << h.status();
      EXPECT_EQ(h->connections, 0u);
      EXPECT_EQ(h->keys, 0u);
      EXPECT_EQ(h->sas, 0u);
    }
    for (const char* host : {"wl", "vm"}) {
      absl::StatusOr<Rig::ExecResult> routes =
          rig_->Exec(host, {"/usr/sbin/ip", "-4", "route", "show", "table", "220"}, absl::Seconds(10));
      ASSERT_TRUE(routes.ok());
      EXPECT_EQ(absl::StripAsciiWhitespace(routes->output).find("192.0.2"), absl::string_view::npos)
          << host << ": " << routes->output;
    }
  }

  // The IKE SAs charon reports, as list-sas events.
  std::vector<ViciMessage> Sas(CharonInstance& charon) {
    absl::StatusOr<ViciClient> vici = charon.Vici();
    EXPECT_TRUE(vici.ok());
    if (!vici.ok()) return {};
    absl::StatusOr<std::vector<ViciMessage>> sas = vici->Stream("list-sas", ViciMessage(), "list-sa");
    EXPECT_TRUE(sas.ok()) << sas.status();
    return sas.ok() ? *sas : std::vector<ViciMessage>{};
  }

  // Both ends enrolled by the project CA, both tunnels loaded, the tunnel up.
  void BringUp() {
    absl::StatusOr<EcKey> vm_key = EcKey::Generate();
    ASSERT_TRUE(vm_key.ok());
    absl::StatusOr<std::string> vm_cert = ca_->IssueForKey(*vm_key, Binding("controlling-vm", kVmIp));
    ASSERT_TRUE(vm_cert.ok()) << vm_cert.status();
    absl::StatusOr<EcKey> wl_key = EcKey::Generate();
    ASSERT_TRUE(wl_key.ok());
    absl::StatusOr<std::string> wl_cert =
        ca_->IssueFromCsr(*wl_key->CsrPem("w-1"), Binding("w-1", kWorkloadIp));
    ASSERT_TRUE(wl_cert.ok()) << wl_cert.status();
    LoadEnd(*vm_, *vm_key, *vm_cert, kVmIp, kWorkloadIp, ca_->cert_pem());
    LoadEnd(*wl_, *wl_key, *wl_cert, kWorkloadIp, kVmIp, ca_->cert_pem());
    absl::Status up = Initiate();
    ASSERT_TRUE(up.ok()) << up << "\nworkload:\n"
                         << ReadFileOrEmpty(wl_->log_path()) << "\nvm:\n"
                         << ReadFileOrEmpty(vm_->log_path());
  }

  // bytes-in of the workload's CHILD_SA.
  int64_t ChildBytesIn() {
    std::vector<ViciMessage> sas = Sas(*wl_);
    if (sas.empty() || sas[0].FindSection("w-1") == nullptr) return -1;
    const ViciMessage* children = sas[0].FindSection("w-1")->FindSection("child-sas");
    if (children == nullptr || children->Sections().empty()) return -1;
    int64_t n = -1;
    if (!absl::SimpleAtoi(children->Sections()[0].second->ValueOr("bytes-in", ""), &n)) return -1;
    return n;
  }

  // A packet capture on every port of the rig's switch, counting what passes between the workload and the VM
  // (tests/ipsec/capture.py). Start, then Finish for its "ike_esp=N other=M sensitive=K" line.
  struct Capture {
    pid_t pid = 0;
    std::string log, stop;
  };
  Capture StartCapture(const std::string& tag) {
    Capture c{0, rig_->state_dir() + "/capture-" + tag + ".log",
              rig_->state_dir() + "/capture-" + tag + ".stop"};
    absl::StatusOr<pid_t> pid = Spawn({"/usr/bin/nsenter", "--net=/run/netns/" + rig_->Netns("sw"), "--",
                                       "/usr/bin/python3", SR_CAPTURE, kWorkloadIp, kVmIp, c.stop},
                                      c.log);
    EXPECT_TRUE(pid.ok()) << pid.status();
    if (!pid.ok()) return c;
    c.pid = *pid;
    for (int i = 0; i < 500 && !absl::StrContains(ReadFileOrEmpty(c.log), "capturing"); ++i)
      absl::SleepFor(absl::Milliseconds(10));
    EXPECT_TRUE(absl::StrContains(ReadFileOrEmpty(c.log), "capturing")) << ReadFileOrEmpty(c.log);
    return c;
  }
  std::string FinishCapture(const Capture& c) {
    if (c.pid == 0) return "";
    std::ofstream(c.stop) << "stop\n";
    WaitChild(c.pid);
    return ReadFileOrEmpty(c.log);
  }

  absl::Status Initiate() {
    SR_ASSIGN_OR_RETURN(ViciClient vici, wl_->Vici());
    return BringUpTunnel(vici, "w-1", absl::Seconds(8));
  }

  IpsecBackend backend_ = IpsecBackend::kLibipsec;
  std::unique_ptr<Rig> rig_;
  std::unique_ptr<CharonInstance> vm_;
  std::unique_ptr<CharonInstance> wl_;
  std::unique_ptr<ProjectCa> ca_;
};

TEST_F(IpsecTunnelTest, EnrolledWorkloadReachesItsVmOnlyThroughAnAesGcmTunnel) {
  // The workload's key is made "inside it" and only its CSR goes to the CA (BringUp).
  ASSERT_NO_FATAL_FAILURE(BringUp());

  for (CharonInstance* c : {vm_.get(), wl_.get()}) {
    std::vector<ViciMessage> sas = Sas(*c);
    ASSERT_EQ(sas.size(), 1u);
    const ViciMessage* ike = sas[0].FindSection("w-1");
    ASSERT_NE(ike, nullptr) << sas[0].DebugString();
    EXPECT_EQ(ike->ValueOr("state", ""), "ESTABLISHED");
    EXPECT_EQ(ike->ValueOr("version", ""), "2");
    EXPECT_EQ(ike->ValueOr("encr-alg", ""), "AES_GCM_16");
    EXPECT_EQ(ike->ValueOr("encr-keysize", ""), "256");
    const ViciMessage* children = ike->FindSection("child-sas");
    ASSERT_NE(children, nullptr);
    ASSERT_EQ(children->Sections().size(), 1u);
    const ViciMessage* child = children->Sections()[0].second;
    EXPECT_EQ(child->ValueOr("state", ""), "INSTALLED");
    EXPECT_EQ(child->ValueOr("mode", ""), "TUNNEL");
    EXPECT_EQ(child->ValueOr("protocol", ""), "ESP");
    EXPECT_EQ(child->ValueOr("encr-alg", ""), "AES_GCM_16");
    EXPECT_EQ(child->ValueOr("encap", "no"), "yes");  // ESP in UDP 4500: what netd's allowlist lets through
  }
  // The certificate identities, not a PSK: the VM sees the workload's IP identity.
  const ViciMessage* vm_side = Sas(*vm_)[0].FindSection("w-1");
  EXPECT_EQ(vm_side->ValueOr("remote-id", ""), kWorkloadIp);

  // Traffic flows inside the SA: ping, then charon's byte counters for the CHILD_SA moved.
  absl::StatusOr<Rig::ExecResult> ping =
      rig_->Exec("wl", {"/bin/busybox", "ping", "-c", "3", "-W", "2", kVmIp}, absl::Seconds(20));
  ASSERT_TRUE(ping.ok());
  EXPECT_EQ(ping->exit_code, 0) << ping->output;
  const ViciMessage* child = Sas(*wl_)[0].FindSection("w-1")->FindSection("child-sas")->Sections()[0].second;
  int64_t packets_out = 0, packets_in = 0;
  ASSERT_TRUE(absl::SimpleAtoi(child->ValueOr("packets-out", "0"), &packets_out));
  ASSERT_TRUE(absl::SimpleAtoi(child->ValueOr("packets-in", "0"), &packets_in));
  EXPECT_GE(packets_out, 3);
  EXPECT_GE(packets_in, 3);

  absl::StatusOr<ViciClient> vici = wl_->Vici();
  ASSERT_TRUE(vici.ok());
  absl::StatusOr<TunnelState> st = GetTunnelState(*vici, "w-1");
  ASSERT_TRUE(st.ok()) << st.status();
  EXPECT_TRUE(st->child_installed);
  EXPECT_EQ(st->encryption, "AES_GCM_16-256");
  EXPECT_TRUE(st->udp_encapsulated);
  EXPECT_GE(st->packets_in, 3);

  // Charon's answers the client must understand: an unknown command, an unknown event.
  EXPECT_EQ(vici->Call("no-such-command", ViciMessage()).status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_EQ(vici->Stream("list-sas", ViciMessage(), "no-such-event").status().code(),
            absl::StatusCode::kUnimplemented);
  EXPECT_TRUE(vici->Call("version", ViciMessage()).ok());  // the connection is still usable

  // Teardown: the tunnel, the connection, the key and the certificate go, on both ends.
  ExpectNothingLeft();
}

TEST_F(IpsecTunnelTest, TunnelThatCannotComeUpFailsWithTheReasonAndLeavesNothing) {
  // The controlling VM has its identity but no tunnel for this workload (e.g. it was never enrolled there).
  absl::StatusOr<EcKey> vm_key = EcKey::Generate();
  absl::StatusOr<std::string> vm_cert = ca_->IssueForKey(*vm_key, Binding("controlling-vm", kVmIp));
  ASSERT_TRUE(vm_cert.ok());
  absl::StatusOr<ViciClient> vm_vici = vm_->Vici();
  ASSERT_TRUE(vm_vici.ok());
  ASSERT_TRUE(LoadIdentity(*vm_vici, *vm_key, *vm_cert).ok());
  absl::StatusOr<EcKey> wl_key = EcKey::Generate();
  absl::StatusOr<std::string> wl_cert =
      ca_->IssueFromCsr(*wl_key->CsrPem("w-1"), Binding("w-1", kWorkloadIp));
  ASSERT_TRUE(wl_cert.ok());
  LoadEnd(*wl_, *wl_key, *wl_cert, kWorkloadIp, kVmIp, ca_->cert_pem());
  absl::Status up = Initiate();
  EXPECT_FALSE(up.ok());
  EXPECT_TRUE(absl::StrContains(up.message(), "bringing up tunnel w-1")) << up;
  // Nothing reaches the VM outside the tunnel: no route was installed, and plain ping has no SA to use.
  ExpectNothingLeft();
}

TEST_F(IpsecTunnelTest, ProjectShareIsServedOverNfsV4ThroughTheTunnelOnlyToTheWorkload) {
  const std::string share = rig_->state_dir() + "/share";
  ASSERT_EQ(mkdir(share.c_str(), 0755), 0);
  {
    std::ofstream f(share + "/data.txt");
    f << "project data\n";
  }
  absl::StatusOr<std::unique_ptr<GaneshaInstance>> nfs =
      GaneshaInstance::Start(rig_.get(), "vm", rig_->state_dir() + "/ganesha",
                             NfsServerSettings{"", 2049, {{1, share, "/proj-a", {kWorkloadIp}}}});
  ASSERT_TRUE(nfs.ok()) << nfs.status();
  Capture tunnel_capture = StartCapture("tunnel");
  ASSERT_NO_FATAL_FAILURE(BringUp());
  int64_t before = ChildBytesIn();
  ASSERT_GE(before, 0);
  absl::StatusOr<Rig::ExecResult> probe =
      rig_->Exec("wl", {"/usr/bin/python3", SR_NFS_PROBE, kVmIp, "proj-a/data.txt"}, absl::Seconds(30));
  ASSERT_TRUE(probe.ok()) << probe.status();
  EXPECT_EQ(probe->exit_code, 0) << probe->output << ReadFileOrEmpty((*nfs)->log_path());
  EXPECT_TRUE(absl::StrContains(probe->output, "status=0 size=13")) << probe->output;
  // The NFS replies came in through the CHILD_SA (the workload's route to the VM is the tunnel).
  EXPECT_GT(ChildBytesIn(), before + 100);
  // On the wire between the two: only IKE and ESP-in-UDP, not one plaintext NFS packet.
  std::string seen = FinishCapture(tunnel_capture);
  std::fprintf(stderr, "capture with the tunnel: %s", seen.c_str());
  EXPECT_TRUE(absl::StrContains(seen, "other=0 sensitive=0")) << seen;
  EXPECT_FALSE(absl::StrContains(seen, "ike_esp=0 ")) << seen;

  // The capture does see plaintext: without the tunnel the same read crosses the switch as NFS (what netd's
  // IPsec allowlist stops on a real node; docs/IPSEC.md).
  ExpectNothingLeft();
  Capture plain_capture = StartCapture("plain");
  absl::StatusOr<Rig::ExecResult> plain =
      rig_->Exec("wl", {"/usr/bin/python3", SR_NFS_PROBE, kVmIp, "proj-a/data.txt"}, absl::Seconds(30));
  ASSERT_TRUE(plain.ok());
  seen = FinishCapture(plain_capture);
  std::fprintf(stderr, "capture without it: %s", seen.c_str());
  EXPECT_FALSE(absl::StrContains(seen, "sensitive=0")) << seen;

  // Another host, not in the export's client list and without a tunnel, gets nothing of the share.
  ASSERT_TRUE(rig_->AddHost("other", "192.0.2.20/24").ok());
  absl::StatusOr<Rig::ExecResult> other =
      rig_->Exec("other", {"/usr/bin/python3", SR_NFS_PROBE, kVmIp, "proj-a/data.txt"}, absl::Seconds(30));
  ASSERT_TRUE(other.ok());
  EXPECT_NE(other->exit_code, 0) << other->output;
  EXPECT_FALSE(absl::StrContains(other->output, "status=0")) << other->output;
  EXPECT_TRUE((*nfs)->Stop().ok());
}

// vm-controller's GaneshaExports: the share is exported to a workload only between Grant (its handover) and
// Revoke (its end), on the running server (config rewritten, SIGHUP), through the tunnel.
TEST_F(IpsecTunnelTest, ShareIsGrantedToTheWorkloadAndRevokedAtItsEndOnTheRunningServer) {
  const std::string share = rig_->state_dir() + "/share";
  ASSERT_EQ(mkdir(share.c_str(), 0755), 0);
  std::ofstream(share + "/data.txt") << "project data\n";
  NfsServerSettings nobody{"", 2049, {{1, share, "/proj-a", {}}}};
  absl::StatusOr<std::unique_ptr<GaneshaInstance>> nfs =
      GaneshaInstance::Start(rig_.get(), "vm", rig_->state_dir() + "/ganesha", nobody);
  ASSERT_TRUE(nfs.ok()) << nfs.status();
  ASSERT_NO_FATAL_FAILURE(BringUp());
  auto probe = [&]() {
    absl::StatusOr<Rig::ExecResult> r =
        rig_->Exec("wl", {"/usr/bin/python3", SR_NFS_PROBE, kVmIp, "proj-a/data.txt"}, absl::Seconds(30));
    return r.ok() ? r->output : r.status().ToString();
  };
  // ganesha applies a SIGHUP asynchronously: wait (bounded) for the expected answer.
  auto eventually = [&](const std::string& want) {
    std::string got;
    for (int i = 0; i < 100; ++i) {
      got = probe();
      if (absl::StrContains(got, want)) return got;
      absl::SleepFor(absl::Milliseconds(100));
    }
    return got;
  };
  EXPECT_FALSE(absl::StrContains(probe(), "status=0")) << "exported before the handover";
  NfsServerSettings settings = nobody;
  settings.recovery_dir = rig_->state_dir() + "/ganesha/recovery";
  GaneshaExports exports((*nfs)->conf_path(), (*nfs)->pid_file(), settings);
  ASSERT_TRUE(exports.Grant(kWorkloadIp).ok());
  std::string granted = eventually("status=0 size=13");
  EXPECT_TRUE(absl::StrContains(granted, "status=0 size=13"))
      << granted << ReadFileOrEmpty((*nfs)->log_path());
  ASSERT_TRUE(exports.Revoke(kWorkloadIp).ok());
  std::string revoked = eventually("status=2 ");
  EXPECT_FALSE(absl::StrContains(revoked, "status=0")) << revoked;
  EXPECT_TRUE((*nfs)->Stop().ok());
}

TEST_F(IpsecTunnelTest, DeploymentCaCertificateWithTheRightIpIsRefused) {
  absl::StatusOr<EcKey> vm_key = EcKey::Generate();
  absl::StatusOr<std::string> vm_cert = ca_->IssueForKey(*vm_key, Binding("controlling-vm", kVmIp));
  ASSERT_TRUE(vm_cert.ok());
  LoadEnd(*vm_, *vm_key, *vm_cert, kVmIp, kWorkloadIp, ca_->cert_pem());
  // The infrastructure's CA (here: another CA, same project name) vouches for the workload's IP.
  absl::StatusOr<std::unique_ptr<ProjectCa>> deployment = ProjectCa::Create("proj-a", absl::Hours(24));
  ASSERT_TRUE(deployment.ok());
  absl::StatusOr<EcKey> wl_key = EcKey::Generate();
  absl::StatusOr<std::string> wl_cert = (*deployment)->IssueForKey(*wl_key, Binding("w-1", kWorkloadIp));
  ASSERT_TRUE(wl_cert.ok());
  // The workload trusts the project CA for the VM; only its own certificate is foreign.
  LoadEnd(*wl_, *wl_key, *wl_cert, kWorkloadIp, kVmIp, ca_->cert_pem());
  EXPECT_FALSE(Initiate().ok());
  EXPECT_TRUE(Sas(*vm_).empty());
  std::string log = ReadFileOrEmpty(vm_->log_path());
  EXPECT_TRUE(absl::StrContains(log, "no trusted") || absl::StrContains(log, "constraint") ||
              absl::StrContains(log, "not trusted") || absl::StrContains(log, "no issuer"))
      << log;
}

TEST_F(IpsecTunnelTest, ProjectCertificateForAnotherIpIsRefused) {
  absl::StatusOr<EcKey> vm_key = EcKey::Generate();
  absl::StatusOr<std::string> vm_cert = ca_->IssueForKey(*vm_key, Binding("controlling-vm", kVmIp));
  ASSERT_TRUE(vm_cert.ok());
  LoadEnd(*vm_, *vm_key, *vm_cert, kVmIp, kWorkloadIp, ca_->cert_pem());
  // Enrolled as 192.0.2.11, speaking from 192.0.2.10 and claiming .10 as its identity.
  absl::StatusOr<EcKey> wl_key = EcKey::Generate();
  absl::StatusOr<std::string> wl_cert = ca_->IssueForKey(*wl_key, Binding("w-1", "192.0.2.11"));
  ASSERT_TRUE(wl_cert.ok());
  LoadEnd(*wl_, *wl_key, *wl_cert, kWorkloadIp, kVmIp, ca_->cert_pem());
  EXPECT_FALSE(Initiate().ok());
  EXPECT_TRUE(Sas(*vm_).empty());
}

}  // namespace
}  // namespace strongroom
