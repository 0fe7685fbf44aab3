// The workload's end of the secure data path against the real controlling VM (issue 14, docs/IPSEC.md "The
// client"): a real vm-controller with its enrollment listener and its own charon (`enrollment { ipsec nfs
// }`), a real handover, and on the workload's rig host (its own netns) a real charon with kernel-libipsec,
// prepared and started the way deploy/image/entrypoint does (`strongroom-enroll --prepare-charon`, then
// charon with STRONGSWAN_CONF; the container's private /run is emulated with a mount namespace and a tmpfs),
// and `strongroom-enroll --tunnel`: it enrolls, loads the key from memory, brings the tunnel up and writes
// the project's secrets. As in workload_enroll_test, only the Local Slurm is absent (slurmd never registers,
// so ProvisionWorkload fails after its registration timeout and the job ends).
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/obj_mac.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <sys/stat.h>

#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/enrollment_ticket.h"
#include "common/ipsec_session.h"
#include "common/project_ca.h"
#include "common/vici.h"
#include "gtest/gtest.h"
#include "tests/integration/handover_job.h"
#include "tests/integration/stack_fixture.h"
#include "tests/rig/files.h"

namespace strongroom::testing {
namespace {

constexpr int kExitEnrollment = 1;
constexpr int kExitTunnel = 3;

// Whether any 32-byte window of `data` is the private scalar of the P-256 public key in `cert_pem`.
class PrivateScalarScanner {
 public:
  explicit PrivateScalarScanner(const std::string& cert_pem) {
    BIO* bio = BIO_new_mem_buf(cert_pem.data(), static_cast<int>(cert_pem.size()));
    X509* cert = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr);
    BIO_free(bio);
    if (cert == nullptr) return;
    EVP_PKEY* pkey = X509_get0_pubkey(cert);
    unsigned char point[133];
    size_t len = 0;
    group_ = EC_GROUP_new_by_curve_name(NID_X9_62_prime256v1);
    public_ = EC_POINT_new(group_);
    if (pkey != nullptr &&
        EVP_PKEY_get_octet_string_param(pkey, OSSL_PKEY_PARAM_PUB_KEY, point, sizeof(point), &len) == 1 &&
        EC_POINT_oct2point(group_, public_, point, len, nullptr) == 1) {
      ok_ = true;
    }
    X509_free(cert);
  }
  ~PrivateScalarScanner() {
    EC_POINT_free(public_);
    EC_GROUP_free(group_);
  }
  bool ok() const { return ok_; }
  bool Contains(const std::string& data) const {
    if (data.size() < 32) return false;
    BN_CTX* ctx = BN_CTX_new();
    BIGNUM* k = BN_new();
    EC_POINT* p = EC_POINT_new(group_);
    bool found = false;
    for (size_t i = 0; i + 32 <= data.size() && !found; ++i) {
      BN_bin2bn(reinterpret_cast<const unsigned char*>(data.data() + i), 32, k);
      if (BN_is_zero(k)) continue;
      found = EC_POINT_mul(group_, p, k, nullptr, nullptr, ctx) == 1 &&
              EC_POINT_cmp(group_, p, public_, ctx) == 0;
    }
    EC_POINT_free(p);
    BN_free(k);
    BN_CTX_free(ctx);
    return found;
  }

 private:
  EC_GROUP* group_ = nullptr;
  EC_POINT* public_ = nullptr;
  bool ok_ = false;
};

std::vector<std::string> FilesUnder(const std::string& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (auto it = std::filesystem::recursive_directory_iterator(dir, ec);
       it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
    if (ec) break;
    if (it->is_regular_file()) out.push_back(it->path().string());
  }
  return out;
}

class WorkloadTunnelTest : public StackTest {
 protected:
  std::string Dir(const std::string& name) { return stack().dir() + "/" + name; }

  // Runs the real strongroom-enroll on rig host `host`.
  CtlResult EnrollOn(const std::string& host, std::vector<std::string> args, absl::Duration timeout) {
    args.insert(args.begin(), SR_ENROLL_BIN);
    absl::StatusOr<Rig::ExecResult> r = stack().rig().Exec(host, args, timeout);
    if (!r.ok()) return {-1, r.status().ToString()};
    return {r->exit_code, r->output};
  }

  // The local job as CreateGlobalJob leaves it on vm-controller `host` (no Local Slurm runs here).
  void InsertLocalJob(const std::string& host, const std::string& workload, const std::string& job,
                      const std::string& token, int64_t local_id) {
    ASSERT_EQ(InsertJobAwaitingHandover(Dir(absl::StrCat(host, "-state/local-jobs.db")), workload, job, token,
                                        local_id),
              absl::OkStatus());
  }

  std::string Provision(const std::string& workload, const std::string& job, const std::string& token,
                        int64_t local_id, const std::string& ip, const std::string& ticket) {
    return absl::StrCat(R"({"globalJobId":")", job, R"(","workloadId":")", workload,
                        R"(","local":{"localCluster":"local","localJobId":)", local_id, R"(,"token":")",
                        token, R"("},"workloadAddresses":[")", ip, R"("],"nodeName":")", workload,
                        R"(","registrationTimeout":"40s","enrollmentTicketSha256":")",
                        EnrollmentTicketSha256(ticket), R"("})");
  }

  // What host-agent puts into the workload's bundle, with the data path on.
  std::string WriteBundle(const std::string& name, const std::string& vm_host, const std::string& job,
                          const std::string& ticket) {
    const std::string path = Dir(name);
    std::ofstream(path) << absl::StrCat(
        "{\n \"localCluster\": \"local\",\n \"enrollmentAddress\": \"", stack().rig().Ip(vm_host),
        ":7444\",\n \"globalJobId\": \"", job, "\",\n \"project\": \"proj-a\",\n \"trustDomain\": \"",
        Stack::kTrustDomain, "\",\n \"ipsecDataPath\": true,\n \"deploymentCaPem\": ",
        JsonString(ReadFileOrEmpty(stack().dir() + "/pki/ca.pem")), ",\n \"enrollmentTicket\": \"", ticket,
        "\"\n}\n");
    return path;
  }

  // The workload's charon, as the entrypoint starts it: prepared by strongroom-enroll (strongswan.conf and
  // the bypass rules in the host's netns), then charon with STRONGSWAN_CONF. The container's own /run is a
  // tmpfs in a mount namespace here.
  absl::StatusOr<pid_t> StartWorkloadCharon(const std::string& host, const std::string& dir) {
    std::filesystem::create_directories(dir);
    CtlResult prepared = EnrollOn(host, {"--prepare-charon", dir + "/charon", "--backend", "kernel-libipsec"},
                                  absl::Seconds(20));
    if (prepared.exit_code != 0)
      return absl::InternalError(absl::StrCat("--prepare-charon: ", prepared.output));
    if (!absl::StrContains(prepared.output, "IPSEC_BACKEND=kernel-libipsec"))
      return absl::InternalError(absl::StrCat("--prepare-charon printed: ", prepared.output));
    return stack().rig().Spawn(
        host, dir + "/charon-stdout.log",
        {"/usr/bin/unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c",
         "mount -t tmpfs -o mode=0755,size=1m wl-run /run && STRONGSWAN_CONF=\"$1\" exec \"$0\"",
         "/usr/lib/ipsec/charon", dir + "/charon/strongswan.conf"});
  }
};

TEST_F(WorkloadTunnelTest, TheRealClientBringsTheTunnelUpWithTheKeyOnlyInMemoryAndCannotEnrollTwice) {
  constexpr char kVmHost[] = "vm-controller-tun";
  constexpr char kVmIp[] = "198.51.100.70";
  constexpr char kWlHost[] = "wl-tun";
  constexpr char kWlIp[] = "198.51.100.71";
  constexpr char kWorkload[] = "wl-tun-1";
  constexpr char kJob[] = "gj-tun-1";
  constexpr char kToken[] = "tok-tun-0001";
  Stack& s = stack();
  ASSERT_TRUE(s.rig().AddHost(kVmHost, absl::StrCat(kVmIp, "/24")).ok());
  ASSERT_TRUE(s.rig().AddHost(kWlHost, absl::StrCat(kWlIp, "/24")).ok());
  const std::string share = Dir("tun-share");
  ASSERT_TRUE(std::filesystem::create_directories(share));
  s.SetEnrollmentExtra(
      kVmHost,
      absl::StrCat("  ipsec {\n    state_dir: \"", Dir("tun-charon"), "\"\n    address: \"", kVmIp,
                   "\"\n  }\n  nfs {\n    state_dir: \"", Dir("tun-ganesha"), "\"\n    share_path: \"", share,
                   "\"\n    export_path: \"/export/proj-a\"\n  }\n"));
  absl::StatusOr<pid_t> daemon = s.StartDaemonOn("vm-controller", kVmHost, 1);
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  InsertLocalJob(kVmHost, kWorkload, kJob, kToken, 4545);

  const std::string ticket = *GenerateEnrollmentTicket();
  const std::string bundle = WriteBundle("tun-bundle.json", kVmHost, kJob, ticket);
  BackgroundProvision provisioning(s, kVmHost, Provision(kWorkload, kJob, kToken, 4545, kWlIp, ticket));
  ASSERT_TRUE(provisioning.WaitHandedOver(kToken)) << s.DaemonLog(kVmHost);

  const std::string wl = Dir("wl-run");
  absl::StatusOr<pid_t> charon = StartWorkloadCharon(kWlHost, wl);
  ASSERT_TRUE(charon.ok()) << charon.status();
  const std::string out = wl + "/enrolled";
  std::filesystem::create_directories(out);
  const std::vector<std::string> args = {"--tunnel",  "--vici",          wl + "/charon/charon.vici",
                                         "--backend", "kernel-libipsec", "--bundle",
                                         bundle,      "--workload-id",   kWorkload,
                                         "--cluster", "vm-controller",   "--out",
                                         out};
  const absl::Time start = absl::Now();
  CtlResult up = EnrollOn(kWlHost, args, absl::Seconds(90));
  std::fprintf(stderr, "enroll + IKE took %s\n", absl::FormatDuration(absl::Now() - start).c_str());
  ASSERT_EQ(up.exit_code, 0) << up.output << "\nworkload's charon:\n"
                             << ReadFileOrEmpty(wl + "/charon/charon.log") << "\nVM's charon:\n"
                             << ReadFileOrEmpty(Dir("tun-charon/charon.log")) << s.DaemonLog(kVmHost);
  EXPECT_TRUE(absl::StrContains(up.output, "kernel-libipsec, ESP:AES_GCM_16-256 in UDP 4500")) << up.output;
  EXPECT_FALSE(absl::StrContains(up.output, ticket));

  // The CHILD_SA, seen by the workload's charon, carries a TCP connection to the VM (its enrollment
  // listener; table 220 -> the TUN device).
  absl::StatusOr<ViciClient> vici = ViciClient::Connect(wl + "/charon/charon.vici", absl::Seconds(10));
  ASSERT_TRUE(vici.ok()) << vici.status();
  absl::StatusOr<Rig::ExecResult> tcp =
      s.rig().Exec(kWlHost,
                   {"/usr/bin/python3", "-c",
                    absl::StrCat("import socket; c = socket.create_connection(('", kVmIp,
                                 "', 7444), 5); c.close(); print('connected')")},
                   absl::Seconds(20));
  ASSERT_TRUE(tcp.ok()) << tcp.status();
  EXPECT_TRUE(absl::StrContains(tcp->output, "connected")) << tcp->output;
  absl::StatusOr<TunnelState> st = GetTunnelState(*vici, kWorkload);
  ASSERT_TRUE(st.ok()) << st.status();
  EXPECT_TRUE(st->ike_established);
  EXPECT_TRUE(st->child_installed);
  EXPECT_EQ(st->encryption, "AES_GCM_16-256");
  EXPECT_TRUE(st->udp_encapsulated);
  EXPECT_GE(st->packets_out, 2);
  EXPECT_GE(st->packets_in, 1);
  // The VM's charon (vm-controller's) has the same SA for this workload.
  absl::StatusOr<ViciClient> vm_vici = ViciClient::Connect(Dir("tun-charon/charon.vici"), absl::Seconds(10));
  ASSERT_TRUE(vm_vici.ok()) << vm_vici.status();
  absl::StatusOr<TunnelState> vm_st = GetTunnelState(*vm_vici, kWorkload);
  ASSERT_TRUE(vm_st.ok()) << vm_st.status();
  EXPECT_TRUE(vm_st->child_installed);
  EXPECT_GE(vm_st->packets_in, 2);
  EXPECT_GE(vm_st->packets_out, 1);

  // The files: the project's munge key (0400), the share, the tunnel; no key file.
  struct stat sb;
  ASSERT_EQ(stat((out + "/munge.key").c_str(), &sb), 0);
  EXPECT_EQ(sb.st_mode & 0777, 0400u);
  EXPECT_EQ(ReadFileOrEmpty(out + "/munge.key"), ReadFileOrEmpty(s.MungeKeyFile()));
  EXPECT_EQ(ReadFileOrEmpty(out + "/nfs.env"),
            absl::StrCat("NFS_SERVER=", s.rig().Ip("vm-controller"),
                         "\nNFS_EXPORT=/export/proj-a\nNFS_MOUNT_POINT=", share, "\n"));
  EXPECT_EQ(ReadFileOrEmpty(out + "/tunnel.env"),
            absl::StrCat("TUNNEL_NAME=", kWorkload, "\nTUNNEL_LOCAL=", kWlIp, "\nTUNNEL_REMOTE=", kVmIp,
                         "\nIPSEC_BACKEND=kernel-libipsec\nTUNNEL_ESP=AES_GCM_16-256\n"));
  EXPECT_FALSE(std::filesystem::exists(out + "/key.pem"));

  // No file the workload side wrote (its out dir, charon's dir and log) or the VM's charon dir holds the
  // private key: neither as PEM nor as its raw 32-byte scalar anywhere.
  const std::string cert = ReadFileOrEmpty(out + "/cert.pem");
  PrivateScalarScanner scanner(cert);
  ASSERT_TRUE(scanner.ok()) << cert;
  {
    // The scanner finds a key it should: a scalar of a key of ours, amid other bytes.
    std::unique_ptr<ProjectCa> ca = *ProjectCa::Create("proj-a", absl::Hours(1));
    EcKey key = *EcKey::Generate();
    const std::string own_cert = *ca->IssueForKey(
        key, CertBinding{"proj-a", "x", "y", "192.0.2.9", absl::Now(), absl::Now() + absl::Hours(1)});
    BIGNUM* priv = nullptr;
    ASSERT_EQ(EVP_PKEY_get_bn_param(static_cast<EVP_PKEY*>(key.native()), OSSL_PKEY_PARAM_PRIV_KEY, &priv),
              1);
    unsigned char raw[32];
    ASSERT_EQ(BN_bn2binpad(priv, raw, sizeof(raw)), 32);
    BN_clear_free(priv);
    PrivateScalarScanner control(own_cert);
    EXPECT_TRUE(control.Contains("header " + std::string(reinterpret_cast<char*>(raw), 32) + " trailer"));
    EXPECT_FALSE(control.Contains(ReadFileOrEmpty(out + "/munge.key") + "some other bytes of no key at all"));
  }
  std::vector<std::string> scanned = FilesUnder(wl);
  for (const std::string& f : FilesUnder(Dir("tun-charon"))) scanned.push_back(f);
  ASSERT_GE(scanned.size(), 8u);
  for (const std::string& f : scanned) {
    const std::string content = ReadFileOrEmpty(f);
    EXPECT_FALSE(absl::StrContains(content, "PRIVATE KEY")) << f;
    EXPECT_FALSE(scanner.Contains(content)) << f << " holds the workload's private key";
  }

  // A second run with the same ticket is a replay: the enrollment's exit code, nothing written.
  const std::string again = wl + "/again";
  std::filesystem::create_directories(again);
  std::vector<std::string> replay_args = args;
  replay_args.back() = again;
  CtlResult replay = EnrollOn(kWlHost, replay_args, absl::Seconds(60));
  EXPECT_EQ(replay.exit_code, kExitEnrollment) << replay.output;
  EXPECT_TRUE(absl::StrContains(replay.output, "ALREADY_EXISTS")) << replay.output;
  EXPECT_FALSE(std::filesystem::exists(again + "/munge.key"));
  // The tunnel it did not touch is still up.
  absl::StatusOr<TunnelState> still = GetTunnelState(*vici, kWorkload);
  ASSERT_TRUE(still.ok());
  EXPECT_TRUE(still->child_installed);

  // Stopping the workload's charon ends the tunnel (the key goes with its memory). slurmd never registers:
  // ProvisionWorkload fails; the rig stops the daemon with the stack.
  ASSERT_TRUE(s.rig().Stop(*charon).ok());
  const CtlResult& provisioned = provisioning.Finish();
  EXPECT_NE(provisioned.exit_code, 0) << provisioned.output;
}

TEST_F(WorkloadTunnelTest, ATunnelToAVmWithoutCharonFailsWithTheTunnelsExitCode) {
  constexpr char kVmHost[] = "vm-controller-noike";
  constexpr char kVmIp[] = "198.51.100.72";
  constexpr char kWlHost[] = "wl-noike";
  constexpr char kWlIp[] = "198.51.100.73";
  constexpr char kWorkload[] = "wl-noike-1";
  constexpr char kJob[] = "gj-noike-1";
  constexpr char kToken[] = "tok-noike-0001";
  Stack& s = stack();
  ASSERT_TRUE(s.rig().AddHost(kVmHost, absl::StrCat(kVmIp, "/24")).ok());
  ASSERT_TRUE(s.rig().AddHost(kWlHost, absl::StrCat(kWlIp, "/24")).ok());
  // vm-controller names an IKE address where no charon answers (a charon "run by someone else" that is not
  // running; no VICI socket, so the handover loads nothing).
  s.SetEnrollmentExtra(kVmHost, absl::StrCat("  ipsec_address: \"", kVmIp, "\"\n"));
  absl::StatusOr<pid_t> daemon = s.StartDaemonOn("vm-controller", kVmHost, 1);
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  InsertLocalJob(kVmHost, kWorkload, kJob, kToken, 4646);
  const std::string ticket = *GenerateEnrollmentTicket();
  const std::string bundle = WriteBundle("noike-bundle.json", kVmHost, kJob, ticket);
  BackgroundProvision provisioning(s, kVmHost, Provision(kWorkload, kJob, kToken, 4646, kWlIp, ticket));
  ASSERT_TRUE(provisioning.WaitHandedOver(kToken)) << s.DaemonLog(kVmHost);

  const std::string wl = Dir("wl-noike");
  absl::StatusOr<pid_t> charon = StartWorkloadCharon(kWlHost, wl);
  ASSERT_TRUE(charon.ok()) << charon.status();
  const std::string out = wl + "/enrolled";
  std::filesystem::create_directories(out);
  CtlResult failed = EnrollOn(
      kWlHost,
      {"--tunnel", "--vici", wl + "/charon/charon.vici", "--backend", "kernel-libipsec", "--tunnel-timeout",
       "6", "--bundle", bundle, "--workload-id", kWorkload, "--cluster", "vm-controller", "--out", out},
      absl::Seconds(60));
  EXPECT_EQ(failed.exit_code, kExitTunnel) << failed.output;
  EXPECT_TRUE(absl::StrContains(failed.output, "could not come up")) << failed.output;
  EXPECT_TRUE(absl::StrContains(failed.output, absl::StrCat("to the controlling VM ", kVmIp)))
      << failed.output;
  // Nothing of the project's written, and the workload's charon holds nothing of ours any more.
  EXPECT_FALSE(std::filesystem::exists(out + "/munge.key"));
  EXPECT_FALSE(std::filesystem::exists(out + "/tunnel.env"));
  absl::StatusOr<ViciClient> vici = ViciClient::Connect(wl + "/charon/charon.vici", absl::Seconds(10));
  ASSERT_TRUE(vici.ok()) << vici.status();
  absl::StatusOr<CharonHoldings> held = GetHoldings(*vici);
  ASSERT_TRUE(held.ok()) << held.status();
  EXPECT_EQ(held->keys, 0u) << failed.output;
  EXPECT_EQ(held->connections, 0u) << failed.output;
  EXPECT_EQ(held->sas, 0u) << failed.output;

  ASSERT_TRUE(s.rig().Stop(*charon).ok());
  provisioning.Finish();
}

}  // namespace
}  // namespace strongroom::testing
