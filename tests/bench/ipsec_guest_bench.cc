// The data path's throughput in the qemu guest with kernel ESP (docs/PERFORMANCE.md "Issue 14 in the guest"),
// on the same rig as the acceptance test (tests/ipsec/datapath_rig.h), alternating in every round:
//   - NFSv4 write (dd conv=fsync) and read (page cache dropped first) of MIB MiB by the job inside the
//   workload,
//     mounted by host-agent's MountNfsInWorkload, without IPsec and through the tunnel;
//   - TCP workload -> controlling VM (tests/bench/tcp_throughput.py), without IPsec and through the tunnel.
// Built with everything, never run by ctest. Runs inside the guest only:
//   tests/guest/run-guest.sh --timeout 1800 --modules "esp4 xfrm_user gcm ghash-generic ctr seqiv veth bridge
//   nfsv4"
//     -- build/tests/ipsec/ipsec_guest_bench [ROUNDS] [MIB]
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
#include "common/status.h"
#include "tests/ipsec/datapath_rig.h"
#include "tests/rig/files.h"

namespace strongroom {
namespace {

// Nearest rank. Throughput's tail is its low end: "p99slow" is the 99th percentile of the time per byte, i.e.
// the 1st percentile of MB/s (with few rounds: the slowest round).
double Pct(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t i = std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size() - 1) + 0.5));
  return v[i];
}

// MB/s from dd's last line: "67108864 bytes (67 MB, 64 MiB) copied, 3.21 s, 20.9 MB/s".
absl::StatusOr<double> DdMBps(const std::string& output) {
  for (absl::string_view line : absl::StrSplit(output, '\n', absl::SkipEmpty())) {
    if (!absl::StrContains(line, " copied, ")) continue;
    std::vector<absl::string_view> f = absl::StrSplit(line, ' ');
    std::vector<absl::string_view> after = absl::StrSplit(line.substr(line.find(" copied, ") + 9), ' ');
    double bytes = 0, seconds = 0;
    if (!f.empty() && !after.empty() && absl::SimpleAtod(f[0], &bytes) &&
        absl::SimpleAtod(after[0], &seconds) && seconds > 0)
      return bytes / seconds / 1e6;
  }
  return absl::InternalError(absl::StrCat("no dd summary in: ", output));
}

struct NfsFigures {
  double write_mbps = 0, read_mbps = 0;
};

// One write and one read of `mib` MiB through the workload's mount (mounted here, unmounted after).
absl::StatusOr<NfsFigures> NfsRound(DataPathRig& d, int mib) {
  SR_RETURN_IF_ERROR(d.MountShare());
  const std::string file = d.workload_target() + "/bench.bin";
  NfsFigures f;
  SR_ASSIGN_OR_RETURN(RunResult w, d.RunInWorkload({"/bin/dd", "if=/dev/zero", "of=" + file, "bs=1M",
                                                    absl::StrCat("count=", mib), "conv=fsync"},
                                                   absl::Seconds(600)));
  if (w.exit_code != 0) return absl::InternalError(absl::StrCat("dd write: ", w.output));
  SR_ASSIGN_OR_RETURN(f.write_mbps, DdMBps(w.output));
  // Drop the client's page cache, so the read crosses the wire (the server's tmpfs is memory either way).
  SR_ASSIGN_OR_RETURN(RunResult drop,
                      Run({"/bin/sh", "-c", "sync && echo 3 > /proc/sys/vm/drop_caches"}, absl::Seconds(60)));
  if (drop.exit_code != 0) return absl::InternalError(absl::StrCat("drop_caches: ", drop.output));
  SR_ASSIGN_OR_RETURN(
      RunResult r, d.RunInWorkload({"/bin/dd", "if=" + file, "of=/dev/null", "bs=1M"}, absl::Seconds(600)));
  if (r.exit_code != 0) return absl::InternalError(absl::StrCat("dd read: ", r.output));
  SR_ASSIGN_OR_RETURN(f.read_mbps, DdMBps(r.output));
  SR_ASSIGN_OR_RETURN(RunResult rm, d.RunInWorkload({"/bin/rm", "-f", file}, absl::Seconds(60)));
  if (rm.exit_code != 0) return absl::InternalError(absl::StrCat("rm: ", rm.output));
  SR_RETURN_IF_ERROR(d.UnmountShare());
  return f;
}

// MB/s of one TCP transfer of `mib` MiB from the workload to the VM.
absl::StatusOr<double> TcpRound(DataPathRig& d, int mib, int port) {
  Rig& rig = d.rig();
  std::string log = absl::StrCat(rig.state_dir(), "/sink-", port, ".log");
  SR_ASSIGN_OR_RETURN(
      pid_t sink, rig.Spawn("vm", log, {"/usr/bin/python3", SR_TCP_THROUGHPUT, "sink", absl::StrCat(port)}));
  absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (!absl::StrContains(ReadFileOrEmpty(log), "listening")) {
    if (absl::Now() > deadline) return absl::DeadlineExceededError("sink did not start");
    absl::SleepFor(absl::Milliseconds(20));
  }
  SR_ASSIGN_OR_RETURN(Rig::ExecResult r, rig.Exec("wl",
                                                  {"/usr/bin/python3", SR_TCP_THROUGHPUT, "send",
                                                   kDataPathVmIp, absl::StrCat(port), absl::StrCat(mib)},
                                                  absl::Seconds(600)));
  if (r.exit_code != 0) return absl::InternalError(absl::StrCat("send: ", r.output));
  deadline = absl::Now() + absl::Seconds(60);
  while (!ProcessGone(sink)) {
    if (absl::Now() > deadline) return absl::DeadlineExceededError("sink did not finish");
    absl::SleepFor(absl::Milliseconds(20));
  }
  SR_RETURN_IF_ERROR(rig.Stop(sink));
  std::vector<std::string> lines = absl::StrSplit(ReadFileOrEmpty(log), '\n', absl::SkipEmpty());
  std::vector<std::string> f = absl::StrSplit(lines.back(), ' ');
  double bytes = 0, seconds = 0;
  if (f.size() != 2 || !absl::SimpleAtod(f[0], &bytes) || !absl::SimpleAtod(f[1], &seconds) || seconds <= 0)
    return absl::InternalError(absl::StrCat("sink said: ", lines.back()));
  return bytes / seconds / 1e6;
}

absl::Status Main(int rounds, int mib) {
  const IpsecBackend backend = ChooseIpsecBackend(ProbeKernelIpsec());
  std::fprintf(stderr, "IPsec backend in use: %s\n", std::string(IpsecBackendName(backend)).c_str());
  if (backend != IpsecBackend::kKernelEsp)
    return absl::FailedPreconditionError("no kernel ESP here: run this in the guest with esp4 loaded");
  SR_ASSIGN_OR_RETURN(std::unique_ptr<DataPathRig> d, DataPathRig::Create(backend));
  SR_RETURN_IF_ERROR(d->StartWorkload());
  std::vector<double> plain_w, plain_r, tunnel_w, tunnel_r, plain_tcp, tunnel_tcp;
  int port = 5001;
  for (int round = 0; round < rounds; ++round) {
    SR_ASSIGN_OR_RETURN(NfsFigures p, NfsRound(*d, mib));
    SR_ASSIGN_OR_RETURN(double ptcp, TcpRound(*d, mib, port++));
    SR_RETURN_IF_ERROR(d->Initiate());
    SR_ASSIGN_OR_RETURN(NfsFigures t, NfsRound(*d, mib));
    SR_ASSIGN_OR_RETURN(double ttcp, TcpRound(*d, mib, port++));
    SR_ASSIGN_OR_RETURN(TunnelState st, d->WorkloadTunnelState());
    if (st.bytes_out < static_cast<int64_t>(mib) << 20)
      return absl::InternalError(
          absl::StrCat("round ", round, ": only ", st.bytes_out, " bytes went out through the CHILD_SA"));
    SR_RETURN_IF_ERROR(d->Terminate());
    plain_w.push_back(p.write_mbps);
    plain_r.push_back(p.read_mbps);
    tunnel_w.push_back(t.write_mbps);
    tunnel_r.push_back(t.read_mbps);
    plain_tcp.push_back(ptcp);
    tunnel_tcp.push_back(ttcp);
    std::fprintf(
        stderr,
        "round %d MB/s: nfs write plain %.1f tunnel %.1f | nfs read plain %.1f tunnel %.1f | tcp plain %.1f "
        "tunnel %.1f (CHILD_SA out %lld bytes)\n",
        round, p.write_mbps, t.write_mbps, p.read_mbps, t.read_mbps, ptcp, ttcp,
        static_cast<long long>(st.bytes_out));
  }
  std::printf(
      "{\"backend\":\"%s\",\"rounds\":%d,\"mib\":%d,"
      "\"nfs_write_plain_MBps_p50\":%.1f,\"nfs_write_plain_MBps_p99slow\":%.1f,"
      "\"nfs_write_tunnel_MBps_p50\":%.1f,\"nfs_write_tunnel_MBps_p99slow\":%.1f,"
      "\"nfs_read_plain_MBps_p50\":%.1f,\"nfs_read_plain_MBps_p99slow\":%.1f,"
      "\"nfs_read_tunnel_MBps_p50\":%.1f,\"nfs_read_tunnel_MBps_p99slow\":%.1f,"
      "\"tcp_plain_MBps_p50\":%.1f,\"tcp_plain_MBps_p99slow\":%.1f,"
      "\"tcp_tunnel_MBps_p50\":%.1f,\"tcp_tunnel_MBps_p99slow\":%.1f,"
      "\"nfs_write_tunnel_over_plain\":%.3f,\"nfs_read_tunnel_over_plain\":%.3f,\"tcp_tunnel_over_plain\":%."
      "3f}\n",
      std::string(IpsecBackendName(backend)).c_str(), rounds, mib, Pct(plain_w, 0.5), Pct(plain_w, 0.01),
      Pct(tunnel_w, 0.5), Pct(tunnel_w, 0.01), Pct(plain_r, 0.5), Pct(plain_r, 0.01), Pct(tunnel_r, 0.5),
      Pct(tunnel_r, 0.01), Pct(plain_tcp, 0.5), Pct(plain_tcp, 0.01), Pct(tunnel_tcp, 0.5),
      Pct(tunnel_tcp, 0.01), Pct(tunnel_w, 0.5) / Pct(plain_w, 0.5), Pct(tunnel_r, 0.5) / Pct(plain_r, 0.5),
      Pct(tunnel_tcp, 0.5) / Pct(plain_tcp, 0.5));
  SR_RETURN_IF_ERROR(d->StopWorkload());
  return d->Down();
}

}  // namespace
}  // namespace strongroom

int main(int argc, char** argv) {
  int rounds = argc > 1 ? std::atoi(argv[1]) : 5;
  int mib = argc > 2 ? std::atoi(argv[2]) : 64;
  absl::Status s = strongroom::Main(rounds, mib);
  if (!s.ok()) {
    std::fprintf(stderr, "ipsec_guest_bench: %s\n", s.ToString().c_str());
    return 1;
  }
  return 0;
}
