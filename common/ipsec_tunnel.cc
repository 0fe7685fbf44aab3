#include "common/ipsec_tunnel.h"

#include <arpa/inet.h>
#include <linux/netlink.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <fstream>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace strongroom {
namespace {

bool ValidIpv4(const std::string& ip) {
  in_addr a{};
  return inet_pton(AF_INET, ip.c_str(), &a) == 1;
}

bool ValidName(const std::string& name) {
  if (name.empty() || name.size() > 64) return false;
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
              c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

bool PathExists(const std::string& path) {
  struct stat st {};
  return stat(path.c_str(), &st) == 0;
}

bool ModulesBuiltinHasEsp4() {
  utsname u{};
  if (uname(&u) != 0) return false;
  std::ifstream in(absl::StrCat("/lib/modules/", u.release, "/modules.builtin"));
  std::string line;
  while (std::getline(in, line)) {
    if (absl::EndsWith(line, "/esp4.ko")) return true;
  }
  return false;
}

}  // namespace

absl::string_view IpsecBackendName(IpsecBackend backend) {
  return backend == IpsecBackend::kKernelEsp ? "kernel-esp" : "kernel-libipsec";
}

absl::StatusOr<IpsecBackend> ParseIpsecBackend(absl::string_view name) {
  if (name == "kernel-esp") return IpsecBackend::kKernelEsp;
  if (name == "kernel-libipsec") return IpsecBackend::kLibipsec;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown IPsec backend '", name, "' (kernel-esp, kernel-libipsec)"));
}

KernelIpsecFacts ProbeKernelIpsec() {
  KernelIpsecFacts f;
  int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_XFRM);
  if (fd >= 0) {
    f.xfrm_netlink = true;
    close(fd);
  }
  f.esp4 = PathExists("/sys/module/esp4") || ModulesBuiltinHasEsp4();
  return f;
}

IpsecBackend ChooseIpsecBackend(const KernelIpsecFacts& facts) {
  return facts.xfrm_netlink && facts.esp4 ? IpsecBackend::kKernelEsp : IpsecBackend::kLibipsec;
}

std::string CharonConf(const CharonSettings& s) {
  // Plugin order matters: the first kernel-ipsec interface registered wins, so kernel-libipsec goes before
  // kernel-netlink (which stays for routes and addresses).
  std::string kernel =
      s.backend == IpsecBackend::kLibipsec ? "kernel-libipsec kernel-netlink" : "kernel-netlink";
  std::string out = absl::StrCat(
      "# Written by Strongroom; charon is configured over VICI only.\n"
      "charon {\n"
      "  load = random nonce openssl pem pkcs1 pkcs8 x509 revocation constraints pubkey gcm aes sha2 hmac "
      "kdf ",
      kernel,
      " socket-default vici\n"
      "  install_virtual_ip = no\n"
      "  filelog {\n"
      "    main {\n"
      "      path = ",
      s.log_path, "\n",
      "      time_format = %F %T\n"
      "      flush_line = yes\n"
      "      default = 1\n"
      "    }\n"
      "  }\n"
      "  plugins {\n"
      "    vici {\n"
      "      socket = unix://",
      s.vici_socket, "\n", "    }\n");
  if (s.backend == IpsecBackend::kLibipsec) {
    absl::StrAppend(&out,
                    "    kernel-libipsec {\n"
                    "      allow_peer_ts = yes\n"
                    "    }\n");
  }
  absl::StrAppend(&out, "  }\n}\n");
  return out;
}

std::vector<std::vector<std::string>> LibipsecBypassRules(IpsecBackend backend) {
  if (backend != IpsecBackend::kLibipsec) return {};
  return {{"pref", "210", "ipproto", "udp", "sport", "4500", "lookup", "main"},
          {"pref", "211", "ipproto", "udp", "sport", "500", "lookup", "main"}};
}

std::string WorkloadIkeId(const std::string& project, const std::string& job_id,
                          const std::string& workload_id) {
  return absl::StrCat("O=", project, ", OU=", job_id, ", CN=", workload_id);
}

TunnelSpec VmSideTunnel(const WorkloadTunnelEnds& ends, const std::string& cert_pem,
                        const std::string& ca_pem, IpsecBackend backend) {
  TunnelSpec spec{ends.workload_id, ends.vm_ip, ends.workload_ip, cert_pem, ca_pem, backend, "", ""};
  spec.remote_id = WorkloadIkeId(ends.project, ends.job_id, ends.workload_id);
  return spec;
}

TunnelSpec WorkloadSideTunnel(const WorkloadTunnelEnds& ends, const std::string& cert_pem,
                              const std::string& ca_pem, IpsecBackend backend) {
  TunnelSpec spec{ends.workload_id, ends.workload_ip, ends.vm_ip, cert_pem, ca_pem, backend, "", ""};
  spec.local_id = WorkloadIkeId(ends.project, ends.job_id, ends.workload_id);
  return spec;
}

absl::StatusOr<ViciMessage> BuildLoadConn(const TunnelSpec& spec) {
  if (!ValidName(spec.name))
    return absl::InvalidArgumentError(absl::StrCat("tunnel: bad name '", spec.name, "'"));
  if (!ValidIpv4(spec.local_ip) || !ValidIpv4(spec.remote_ip))
    return absl::InvalidArgumentError(
        absl::StrCat("tunnel ", spec.name, ": bad address ", spec.local_ip, " / ", spec.remote_ip));
  if (spec.local_ip == spec.remote_ip)
    return absl::InvalidArgumentError(absl::StrCat("tunnel ", spec.name, ": both ends are ", spec.local_ip));
  if (!absl::StrContains(spec.local_cert_pem, "BEGIN CERTIFICATE") ||
      !absl::StrContains(spec.project_ca_pem, "BEGIN CERTIFICATE"))
    return absl::InvalidArgumentError(
        absl::StrCat("tunnel ", spec.name, ": certificate or project CA missing"));

  ViciMessage m;
  ViciMessage& conn = m.Section(spec.name);
  conn.Set("version", "2");
  conn.SetList("local_addrs", {spec.local_ip});
  conn.SetList("remote_addrs", {spec.remote_ip});
  conn.SetList("proposals", {std::string(kIkeProposal)});
  // Always ESP in UDP 4500: kernel-libipsec needs it, and one shape means one netd allowlist (UDP 500/4500 to
  // the controlling VM) for both backends.
  conn.Set("encap", "yes");
  conn.Set("mobike", "no");
  conn.Set("dpd_delay", "10s");
  conn.Set("unique", "replace");
  ViciMessage& local = conn.Section("local");
  local.Set("auth", "pubkey");
  local.Set("id", spec.local_id.empty() ? spec.local_ip : spec.local_id);
  local.SetList("certs", {spec.local_cert_pem});
  ViciMessage& remote = conn.Section("remote");
  remote.Set("auth", "pubkey");
  remote.Set("id", spec.remote_id.empty() ? spec.remote_ip : spec.remote_id);
  remote.SetList("cacerts", {spec.project_ca_pem});
  remote.Set("revocation", "relaxed");
  ViciMessage& child = conn.Section("children").Section(spec.name);
  child.SetList("local_ts", {absl::StrCat(spec.local_ip, "/32")});
  child.SetList("remote_ts", {absl::StrCat(spec.remote_ip, "/32")});
  child.Set("mode", "tunnel");
  child.SetList("esp_proposals", {std::string(kEspProposal)});
  child.Set("start_action", "none");
  child.Set("dpd_action", "clear");
  return m;
}

}  // namespace strongroom
