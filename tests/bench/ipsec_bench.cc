// The secure data path's costs on this machine (docs/PERFORMANCE.md "## IPsec data path"), in one run:
//   - enrollment: key generation, CSR and issuing by the project CA (in process), p50/p99;
//   - IKE: VICI initiate of the workload's tunnel until the CHILD_SA is installed, p50/p99;
//   - TCP throughput workload -> controlling VM through the tunnel against plaintext on the same rig hosts,
//     alternating rounds (kernel ESP where the kernel has it, else kernel-libipsec; printed).
// Built with everything, never run by ctest. Needs root (the rig). Usage: ipsec_bench [ROUNDS] [MIB]
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/ipsec_tunnel.h"
#include "common/project_ca.h"
#include "common/status.h"
#include "common/vici.h"
#include "tests/rig/charon.h"
#include "tests/rig/files.h"
#include "tests/rig/rig.h"

namespace strongroom {
namespace {

constexpr char kVm[] = "192.0.2.1";
constexpr char kWl[] = "192.0.2.10";

double Pct(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t i = std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size() - 1) + 0.5));
  return v[i];
}

CertBinding Binding(const std::string& id, const std::string& ip) {
  absl::Time now = absl::Now();
  return CertBinding{"proj-a", id, "job-1", ip, now - absl::Minutes(1), now + absl::Hours(1)};
}

absl::Status LoadEnd(CharonInstance& c, const EcKey& key, const std::string& cert, const std::string& local,
                     const std::string& remote, const std::string& ca, IpsecBackend backend) {
  SR_ASSIGN_OR_RETURN(ViciClient vici, c.Vici());
  SR_ASSIGN_OR_RETURN(std::string pem, key.PrivatePem());
  ViciMessage k;
  k.Set("type", "ecdsa");
  k.Set("data", pem);
  SR_RETURN_IF_ERROR(vici.CallChecked("load-key", k));
  SR_ASSIGN_OR_RETURN(ViciMessage conn, BuildLoadConn({"w-1", local, remote, cert, ca, backend}));
  return vici.CallChecked("load-conn", conn);
}

// MB/s of one transfer of `mib` MiB from wl to vm.
absl::StatusOr<double> Throughput(Rig& rig, int mib, int port) {
  std::string log = absl::StrCat(rig.state_dir(), "/sink-", port, ".log");
  SR_ASSIGN_OR_RETURN(
      pid_t sink, rig.Spawn("vm", log, {"/usr/bin/python3", SR_TCP_THROUGHPUT, "sink", absl::StrCat(port)}));
  absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (!absl::StrContains(ReadFileOrEmpty(log), "listening")) {
    if (absl::Now() > deadline) return absl::DeadlineExceededError("sink did not start");
    absl::SleepFor(absl::Milliseconds(20));
  }
  SR_ASSIGN_OR_RETURN(Rig::ExecResult r, rig.Exec("wl",
                                                  {"/usr/bin/python3", SR_TCP_THROUGHPUT, "send", kVm,
                                                   absl::StrCat(port), absl::StrCat(mib)},
                                                  absl::Seconds(300)));
  if (r.exit_code != 0) return absl::InternalError(absl::StrCat("send: ", r.output));
  deadline = absl::Now() + absl::Seconds(30);
  while (!ProcessGone(sink)) {
    if (absl::Now() > deadline) return absl::DeadlineExceededError("sink did not finish");
    absl::SleepFor(absl::Milliseconds(20));
  }
  (void)rig.Stop(sink);
  std::vector<std::string> lines = absl::StrSplit(ReadFileOrEmpty(log), '\n', absl::SkipEmpty());
  std::vector<std::string> f = absl::StrSplit(lines.back(), ' ');
  double bytes = 0, seconds = 0;
  if (f.size() != 2 || !absl::SimpleAtod(f[0], &bytes) || !absl::SimpleAtod(f[1], &seconds) || seconds <= 0)
    return absl::InternalError(absl::StrCat("sink said: ", lines.back()));
  return bytes / seconds / 1e6;
}

absl::Status Main(int rounds, int mib) {
  IpsecBackend backend = ChooseIpsecBackend(ProbeKernelIpsec());
  SR_ASSIGN_OR_RETURN(std::unique_ptr<Rig> rig, Rig::Create(SR_RIG_SH));
  SR_RETURN_IF_ERROR(rig->AddHost("vm", absl::StrCat(kVm, "/24")));
  SR_RETURN_IF_ERROR(rig->AddHost("wl", absl::StrCat(kWl, "/24")));
  SR_ASSIGN_OR_RETURN(auto vm,
                      CharonInstance::Start(rig.get(), "vm", rig->state_dir() + "/charon-vm", backend));
  SR_ASSIGN_OR_RETURN(auto wl,
                      CharonInstance::Start(rig.get(), "wl", rig->state_dir() + "/charon-wl", backend));
  SR_ASSIGN_OR_RETURN(std::unique_ptr<ProjectCa> ca, ProjectCa::Create("proj-a", absl::Hours(24)));

  // Enrollment as the workload and vm-controller do it, minus the RPC.
  std::vector<double> enroll_ms;
  std::string wl_cert;
  std::unique_ptr<EcKey> wl_key;
  for (int i = 0; i < 50; ++i) {
    absl::Time t0 = absl::Now();
    SR_ASSIGN_OR_RETURN(EcKey key, EcKey::Generate());
    SR_ASSIGN_OR_RETURN(std::string csr, key.CsrPem("w-1"));
    SR_ASSIGN_OR_RETURN(wl_cert, ca->IssueFromCsr(csr, Binding("w-1", kWl)));
    enroll_ms.push_back(absl::ToDoubleMilliseconds(absl::Now() - t0));
    wl_key = std::make_unique<EcKey>(std::move(key));
  }
  SR_ASSIGN_OR_RETURN(EcKey vm_key, EcKey::Generate());
  SR_ASSIGN_OR_RETURN(std::string vm_cert, ca->IssueForKey(vm_key, Binding("controlling-vm", kVm)));
  SR_RETURN_IF_ERROR(LoadEnd(*vm, vm_key, vm_cert, kVm, kWl, ca->cert_pem(), backend));
  SR_RETURN_IF_ERROR(LoadEnd(*wl, *wl_key, wl_cert, kWl, kVm, ca->cert_pem(), backend));

  std::vector<double> ike_ms, plain_mbs, tunnel_mbs;
  SR_ASSIGN_OR_RETURN(ViciClient vici, wl->Vici());
  int port = 5001;
  for (int r = 0; r < std::max(rounds, 20); ++r) {
    bool measure = r < rounds;
    if (measure) {
      SR_ASSIGN_OR_RETURN(double p, Throughput(*rig, mib, port++));
      plain_mbs.push_back(p);
    }
    ViciMessage init;
    init.Set("child", "w-1");
    init.Set("ike", "w-1");
    init.Set("timeout", "10000");
    absl::Time t0 = absl::Now();
    SR_RETURN_IF_ERROR(vici.CallChecked("initiate", init));
    ike_ms.push_back(absl::ToDoubleMilliseconds(absl::Now() - t0));
    if (measure) {
      SR_ASSIGN_OR_RETURN(double t, Throughput(*rig, mib, port++));
      tunnel_mbs.push_back(t);
    }
    ViciMessage term;
    term.Set("ike", "w-1");
    term.Set("timeout", "5000");
    SR_RETURN_IF_ERROR(vici.CallChecked("terminate", term));
  }
  std::printf(
      "{\"backend\":\"%s\",\"enroll_ms_p50\":%.2f,\"enroll_ms_p99\":%.2f,\"ike_ms_p50\":%.1f,\"ike_ms_p99\":%"
      ".1f,"
      "\"ike_samples\":%zu,\"plain_MBps_p50\":%.0f,\"tunnel_MBps_p50\":%.0f,\"tunnel_over_plain\":%.3f,"
      "\"rounds\":%d,\"mib\":%d}\n",
      std::string(IpsecBackendName(backend)).c_str(), Pct(enroll_ms, 0.5), Pct(enroll_ms, 0.99),
      Pct(ike_ms, 0.5), Pct(ike_ms, 0.99), ike_ms.size(), Pct(plain_mbs, 0.5), Pct(tunnel_mbs, 0.5),
      Pct(tunnel_mbs, 0.5) / Pct(plain_mbs, 0.5), rounds, mib);
  wl.reset();
  vm.reset();
  return rig->Down();
}

}  // namespace
}  // namespace strongroom

int main(int argc, char** argv) {
  int rounds = argc > 1 ? std::atoi(argv[1]) : 3;
  int mib = argc > 2 ? std::atoi(argv[2]) : 200;
  absl::Status s = strongroom::Main(rounds, mib);
  if (!s.ok()) {
    std::fprintf(stderr, "ipsec_bench: %s\n", s.ToString().c_str());
    return 1;
  }
  return 0;
}
