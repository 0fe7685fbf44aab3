// strongroom-enroll: enrolls this workload with its controlling VM's vm-controller and writes what the
// project gives it into a directory (docs/IPSEC.md "The client"). Run by the workload's entrypoint:
//
//   strongroom-enroll --bundle /run/strongroom/provisioning.json --out /run/strongroom/enrolled
//
// The secure data path (the bundle's ipsecDataPath; deploy/image/entrypoint) uses two more modes:
//
//   strongroom-enroll --prepare-charon DIR [--backend auto|kernel-esp|kernel-libipsec]
//       writes DIR/strongswan.conf for the backend (auto: ProbeKernelIpsec), adds kernel-libipsec's two
//       bypass `ip rule`s in this network namespace, and prints IPSEC_BACKEND=, STRONGSWAN_CONF=,
//       VICI_SOCKET=, CHARON_LOG= (also written to DIR/charon.env). The entrypoint then starts charon.
//   strongroom-enroll --tunnel --vici SOCKET --bundle ... --out DIR [--backend ...] [--tunnel-timeout S]
//       enrolls (the key generated in memory), loads key (load-key, from memory: no key.pem is written),
//       certificate and connection into that charon, brings the tunnel to GetProjectSecrets' ipsec_address
//       up, requires an installed UDP-encapsulated CHILD_SA, then writes cert.pem, project-ca.pem, munge.key,
//       nfs.env (NFS_SERVER, NFS_EXPORT, NFS_MOUNT_POINT) and tunnel.env (TUNNEL_NAME, TUNNEL_LOCAL,
//       TUNNEL_REMOTE, IPSEC_BACKEND, TUNNEL_ESP).
//
// The bundle (host-agent's) supplies every option not given: enrollmentAddress (--target), localCluster
// (--cluster), globalJobId, project, trustDomain, deploymentCaPem (--ca) and the ticket.
// STRONGROOM_WORKLOAD_ID supplies --workload-id. The ticket is never taken from the command line (other
// processes can read argv). Exit codes: 0 done; 2 bad usage or options; 1 enrollment refused or failed (the
// step and vm-controller's reason on stderr); 3 the tunnel could not be prepared or brought up (the step and
// charon's reason). The entrypoint maps 1 and 2 to its 70, 3 to its 71.
#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/bounded_file.h"
#include "common/log.h"
#include "openssl/crypto.h"
#include "services/workload_enroll/enroll_client.h"
#include "services/workload_enroll/workload_tunnel.h"

namespace {

constexpr int kExitEnrollment = 1;
constexpr int kExitUsage = 2;
constexpr int kExitTunnel = 3;

constexpr char kUsage[] =
    "usage: strongroom-enroll --out DIR [--bundle FILE] [--ticket-file FILE] [--target HOST:PORT]\n"
    "                         [--ca FILE] [--trust-domain TD] [--cluster NAME] [--workload-id ID]\n"
    "                         [--global-job-id ID] [--project NAME] [--timeout SECONDS]\n"
    "                         [--handover-wait SECONDS]\n"
    "                         [--tunnel --vici SOCKET [--backend B] [--tunnel-timeout SECONDS]]\n"
    "       strongroom-enroll --prepare-charon DIR [--backend auto|kernel-esp|kernel-libipsec]\n"
    "                         [--charon-binary PATH]\n";

int Fail(int code, const std::string& message) {
  std::fprintf(stderr, "strongroom-enroll: %s\n", message.c_str());
  return code;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace strongroom;
  using namespace strongroom::workload_enroll;
  EnrollOptions options;
  std::string out_dir, bundle_file, ticket_file, prepare_dir, vici_socket, backend_name = "auto";
  std::string charon_binary(kDefaultCharonBinary);
  bool tunnel = false;
  absl::Duration tunnel_timeout = absl::Seconds(30);
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    }
    if (arg == "--tunnel") {
      tunnel = true;
      continue;
    }
    if (i + 1 >= argc) return Fail(kExitUsage, absl::StrCat(arg, ": a value is required\n", kUsage));
    const std::string value = argv[++i];
    if (arg == "--out") {
      out_dir = value;
    } else if (arg == "--bundle") {
      bundle_file = value;
    } else if (arg == "--ticket-file") {
      ticket_file = value;
    } else if (arg == "--target") {
      options.target = value;
    } else if (arg == "--ca") {
      options.ca_file = value;
    } else if (arg == "--trust-domain") {
      options.trust_domain = value;
    } else if (arg == "--cluster") {
      options.cluster = value;
    } else if (arg == "--workload-id") {
      options.workload_id = value;
    } else if (arg == "--global-job-id") {
      options.global_job_id = value;
    } else if (arg == "--project") {
      options.project = value;
    } else if (arg == "--prepare-charon") {
      prepare_dir = value;
    } else if (arg == "--vici") {
      vici_socket = value;
    } else if (arg == "--backend") {
      backend_name = value;
    } else if (arg == "--charon-binary") {
      charon_binary = value;
    } else if (arg == "--timeout" || arg == "--tunnel-timeout") {
      int seconds = 0;
      if (!absl::SimpleAtoi(value, &seconds) || seconds < 1 || seconds > 600)
        return Fail(kExitUsage, absl::StrCat(arg, ": seconds in 1..600"));
      (arg == "--timeout" ? options.rpc_timeout : tunnel_timeout) = absl::Seconds(seconds);
    } else if (arg == "--handover-wait") {
      int seconds = -1;
      if (!absl::SimpleAtoi(value, &seconds) || seconds < 0 || seconds > 600)
        return Fail(kExitUsage, absl::StrCat(arg, ": seconds in 0..600"));
      options.handover_wait = absl::Seconds(seconds);
    } else {
      return Fail(kExitUsage, absl::StrCat("unknown argument \"", arg, "\"\n", kUsage));
    }
  }

  IpsecBackend backend = ChooseIpsecBackend(ProbeKernelIpsec());
  if (backend_name != "auto") {
    absl::StatusOr<IpsecBackend> parsed = ParseIpsecBackend(backend_name);
    if (!parsed.ok()) return Fail(kExitUsage, absl::StrCat("--backend: ", parsed.status().message()));
    backend = *parsed;
  }

  if (!prepare_dir.empty()) {
    if (tunnel || !out_dir.empty())
      return Fail(kExitUsage, "--prepare-charon: a mode of its own (no --tunnel, no --out)");
    absl::StatusOr<CharonRun> run = PrepareWorkloadCharon(prepare_dir, backend, charon_binary);
    if (!run.ok())
      return Fail(kExitTunnel,
                  absl::StrCat("preparing charon in ", prepare_dir, ": ", run.status().ToString()));
    const std::string env = CharonEnv(*run);
    if (absl::Status s = WriteFileAtomically(prepare_dir, "charon.env", env, 0644); !s.ok())
      return Fail(kExitTunnel, absl::StrCat("preparing charon in ", prepare_dir, ": ", s.ToString()));
    std::fputs(env.c_str(), stdout);
    return 0;
  }

  if (out_dir.empty()) return Fail(kExitUsage, absl::StrCat("--out: required\n", kUsage));
  if (tunnel && vici_socket.empty())
    return Fail(kExitUsage, "--tunnel: --vici SOCKET (the workload's charon) required");
  if (!tunnel && !vici_socket.empty()) return Fail(kExitUsage, "--vici: only with --tunnel");
  if (!ticket_file.empty()) {
    absl::StatusOr<std::string> ticket = ReadBoundedRegularFile(ticket_file, 4096);
    if (!ticket.ok()) return Fail(kExitUsage, absl::StrCat("--ticket-file: ", ticket.status().message()));
    options.ticket = std::string(absl::StripAsciiWhitespace(*ticket));
  }
  if (options.workload_id.empty()) {
    if (const char* id = std::getenv("STRONGROOM_WORKLOAD_ID"); id != nullptr) options.workload_id = id;
  }
  if (!bundle_file.empty()) {
    absl::StatusOr<std::string> bundle = ReadBoundedRegularFile(bundle_file, 1 << 20);
    if (!bundle.ok()) return Fail(kExitUsage, absl::StrCat("--bundle: ", bundle.status().message()));
    if (absl::Status s = FillFromBundle(*bundle, out_dir + "/deployment-ca.pem", &options); !s.ok())
      return Fail(kExitUsage, absl::StrCat("--bundle ", bundle_file, ": ", s.message()));
  }
  if (absl::Status s = ValidateOptions(options); !s.ok()) return Fail(kExitUsage, std::string(s.message()));

  absl::StatusOr<EnrolledWorkload> enrolled = Enroll(options);
  if (!enrolled.ok()) {
    return Fail(kExitEnrollment,
                absl::StrCat("enrollment of workload ", options.workload_id, " at ", options.target,
                             " refused or failed: ", enrolled.status().ToString()));
  }
  if (tunnel) {
    // The PEM copy is not needed any more: the key goes to charon from the EcKey (load-key).
    OPENSSL_cleanse(enrolled->key_pem.data(), enrolled->key_pem.size());
    enrolled->key_pem.clear();
    TunnelOptions t{vici_socket,         backend,       options.project, options.global_job_id,
                    options.workload_id, tunnel_timeout};
    absl::StatusOr<WorkloadTunnel> up = BringUpWorkloadTunnel(*enrolled, t);
    if (!up.ok()) {
      return Fail(kExitTunnel,
                  absl::StrCat("tunnel of workload ", options.workload_id, " (", IpsecBackendName(backend),
                               ") could not come up: ", up.status().ToString()));
    }
    if (absl::Status s = WriteEnrollment(*enrolled, out_dir, /*write_key=*/false); !s.ok())
      return Fail(kExitEnrollment,
                  absl::StrCat("cannot write the enrollment into ", out_dir, ": ", s.ToString()));
    if (absl::Status s = WriteTunnelEnv(*up, out_dir); !s.ok())
      return Fail(kExitTunnel, absl::StrCat("cannot write tunnel.env into ", out_dir, ": ", s.ToString()));
    std::fprintf(
        stderr,
        "strongroom-enroll: workload %s enrolled; tunnel %s up: %s === %s, %s, ESP:%s%s; files in %s\n",
        options.workload_id.c_str(), up->spec.name.c_str(), up->spec.local_ip.c_str(),
        up->spec.remote_ip.c_str(), std::string(IpsecBackendName(backend)).c_str(),
        up->state.encryption.c_str(), up->state.udp_encapsulated ? " in UDP 4500" : "", out_dir.c_str());
    return 0;
  }
  if (absl::Status s = WriteEnrollment(*enrolled, out_dir); !s.ok()) {
    return Fail(kExitEnrollment,
                absl::StrCat("cannot write the enrollment into ", out_dir, ": ", s.ToString()));
  }
  std::fprintf(stderr, "strongroom-enroll: workload %s enrolled; certificate valid until %s; files in %s\n",
               options.workload_id.c_str(), absl::FormatTime(enrolled->not_after).c_str(), out_dir.c_str());
  return 0;
}
