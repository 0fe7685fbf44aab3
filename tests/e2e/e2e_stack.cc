#include "tests/e2e/e2e_stack.h"

#include "tests/rig/files.h"

#include <pwd.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/status.h"
#include "common/subprocess.h"
#include "openssl/sha.h"
#include "services/host_agent/mounts.h"
#include "services/host_agent/container/netns.h"
#include "strongroom/v1/host_agent.pb.h"
#include "strongroom/v1/netd.pb.h"
#include "tests/e2e/e2e_jobs.h"

namespace strongroom::e2e {
namespace {

constexpr int kGrpcPort = 7443;
constexpr int kNetdPort = 7444;
constexpr int kEnrollmentPort = 7445;
constexpr const char* kBackendIp = "198.51.100.10";
constexpr const char* kClientIp = "198.51.100.20";
constexpr const char* kGlobalCtlIp = "198.51.100.2";
constexpr const char* kLocalCtlIp = "198.51.100.40";
// host-agent maps container uid 0 to this host uid (HostAgentConfig.uid_base default).
constexpr uint32_t kUidBase = 100000;

absl::Status WriteFile(const std::string& path, const std::string& text, mode_t mode = 0644) {
  std::ofstream out(path);
  out << text;
  out.close();
  if (!out) return absl::InternalError("cannot write " + path);
  chmod(path.c_str(), mode);
  return absl::OkStatus();
}

std::string Tail(const std::string& text, size_t n) {
  return text.size() <= n ? text : "..." + text.substr(text.size() - n);
}

std::string NodeName(int index) { return absl::StrCat("gnode", index + 1); }
std::string NodeIp(int index) { return absl::StrCat("198.51.100.", 3 + index); }
std::string Gateway(int index) { return absl::StrCat("203.0.113.", 16 * index + 1); }
// gw0's MAC on node `index`, which netd pins workload frames to (gateway_mac).
std::string GatewayMac(int index) { return absl::StrFormat("02:00:00:00:%02x:01", index); }

absl::StatusOr<std::string> Sha256Hex(const std::vector<std::string>& files) {
  SHA256_CTX ctx;
  SHA256_Init(&ctx);
  for (const std::string& f : files) {
    if (!std::filesystem::exists(f)) return absl::NotFoundError("image recipe file missing: " + f);
    const std::string text = ReadFileOrEmpty(f);
    SHA256_Update(&ctx, text.data(), text.size());
  }
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256_Final(digest, &ctx);
  std::string hex;
  for (int i = 0; i < 8; ++i) absl::StrAppend(&hex, absl::Hex(digest[i], absl::kZeroPad2));
  return hex;
}

}  // namespace

std::string E2eStack::NodeSubnet(int i) { return absl::StrCat("203.0.113.", 16 * i, "/28"); }
std::string E2eStack::EnrollmentAddress() { return absl::StrCat(kLocalCtlIp, ":", kEnrollmentPort); }
std::string E2eStack::ControllingVmIp() { return kLocalCtlIp; }

absl::StatusOr<std::string> EnsureWorkloadImage(const std::string& cache_root) {
  const std::string image_dir = SR_SOURCE_DIR "/deploy/image";
  // strongroom-enroll, installed into the image from the build tree. Part of the cache key, so a rebuilt client
  // never runs from a stale image (build-rootfs.sh caches the debootstrapped base by its package list, so such a
  // rebuild only copies the base and adds our files).
  const std::string enroll_bin = SR_ENROLL_BIN;
  SR_ASSIGN_OR_RETURN(std::string key,
                      Sha256Hex({image_dir + "/build-rootfs.sh", image_dir + "/entrypoint", image_dir + "/vm/build-vm-boot.sh",
                                 image_dir + "/vm/init", enroll_bin}));
  const std::string catalog = cache_root + "/" + key;
  // The container's rootfs, the VM's squashfs root (the same image) and the VM's boot files; the initrd last.
  if (std::filesystem::exists(catalog + "/strongroom-workload/usr/libexec/strongroom/entrypoint") &&
      std::filesystem::exists(catalog + "/strongroom-workload.initrd")) {
    return catalog;
  }
  std::fprintf(stderr, "e2e: building the workload image into %s (debootstrap; debs cached)\n", catalog.c_str());
  SR_ASSIGN_OR_RETURN(RunResult built,
                      Run({image_dir + "/build-rootfs.sh", catalog, "--squashfs", "--enroll-bin", enroll_bin},
                          absl::Minutes(20)));
  if (built.exit_code != 0) {
    return absl::InternalError(absl::StrCat("build-rootfs.sh failed (", built.exit_code, "): ", Tail(built.output, 3000)));
  }
  SR_ASSIGN_OR_RETURN(RunResult boot,
                      Run({image_dir + "/vm/build-vm-boot.sh", catalog, "strongroom-workload"}, absl::Minutes(10)));
  if (boot.exit_code != 0) {
    return absl::InternalError(absl::StrCat("build-vm-boot.sh failed (", boot.exit_code, "): ", Tail(boot.output, 3000)));
  }
  return catalog;
}

absl::StatusOr<std::unique_ptr<E2eStack>> E2eStack::Start(E2eOptions options) {
  std::unique_ptr<E2eStack> s(new E2eStack());
  s->options_ = std::move(options);
  if (s->options_.nodes < 1 || s->options_.nodes > 8) return absl::InvalidArgumentError("nodes: 1..8");
  if (s->options_.image_root.empty()) {
    SR_ASSIGN_OR_RETURN(s->options_.image_root, EnsureWorkloadImage());
  }
  if (absl::Status st = s->Setup(); !st.ok()) {
    s->DumpLogs();
    return st;
  }
  return s;
}

absl::Status E2eStack::Pki(std::vector<std::string> args) {
  args.insert(args.begin(), SR_PKI_TOOL);
  SR_ASSIGN_OR_RETURN(RunResult r, Run(args, absl::Seconds(30)));
  if (r.exit_code != 0) return absl::InternalError(absl::StrCat("strongroom-pki ", args[1], ": ", r.output));
  return absl::OkStatus();
}

std::string E2eStack::TlsBlock(const std::string& field, const std::string& cert) const {
  const std::string pki = dir_ + "/pki/";
  return absl::StrCat(field, " { ca_file: \"", pki, "ca.pem\" cert_file: \"", pki, cert, ".pem\" key_file: \"", pki,
                      cert, ".key\" }\n");
}

std::string E2eStack::ServerBlock(const std::string& listen, const std::string& cert,
                                  const std::string& instance) const {
  return absl::StrCat("server {\n  listen_address: \"", listen, "\"\n  ", TlsBlock("tls", cert),
                      "  trust_domain: \"", kTrustDomain, "\"\n  instance: \"", instance,
                      "\"\n  drain_seconds: 0\n  shutdown_grace_seconds: 5\n}\n");
}

absl::StatusOr<pid_t> E2eStack::SpawnDaemon(const std::string& host, const std::string& name,
                                            const std::vector<std::string>& argv) {
  return rig_->Spawn(host, dir_ + "/logs/" + name + ".log", argv);
}

absl::Status E2eStack::WaitHealthy(const std::string& daemon, pid_t pid, const std::string& log) {
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  while (absl::Now() < deadline) {
    if (Ctl(daemon, {"--timeout", "2", "health"}, absl::Seconds(10)).exit_code == 0) return absl::OkStatus();
    if (ProcessGone(pid)) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return absl::UnavailableError(
      absl::StrCat(daemon, " did not become healthy; log tail:\n", Tail(ReadFileOrEmpty(dir_ + "/logs/" + log), 4000)));
}

absl::Status E2eStack::Setup() {
  // Non-root users submit on the Local Slurm, whose files live in the rig: the directories above them must be
  // traversable (not listable, not writable).
  std::filesystem::create_directories(options_.root);
  chmod(options_.root.c_str(), 0711);
  SR_ASSIGN_OR_RETURN(rig_, Rig::Create(SR_RIG_SH, options_.root));
  chmod(rig_->state_dir().c_str(), 0711);
  dir_ = rig_->state_dir() + "/e2e";
  share_ = dir_ + "/share";
  for (const std::string& sub : {"", "/logs", "/pki", "/secrets", "/share"}) {
    std::filesystem::create_directories(dir_ + sub);
  }
  chmod(dir_.c_str(), 0711);
  chmod(share_.c_str(), 0755);
  chmod((dir_ + "/secrets").c_str(), 0700);
  SR_RETURN_IF_ERROR(rig_->AddHost("client", absl::StrCat(kClientIp, "/24")));
  SR_RETURN_IF_ERROR(rig_->AddHost("backend", absl::StrCat(kBackendIp, "/24")));

  // PKI: one certificate per service instance, the node-local global-job identities, the submit hook, an operator.
  const std::string pki = dir_ + "/pki";
  SR_RETURN_IF_ERROR(Pki({"init-ca", pki, "--trust-domain", kTrustDomain}));
  std::vector<std::vector<std::string>> certs = {{"backend", "backend", "be1"},
                                                 {"vm-controller", "vm-controller", kLocalCluster},
                                                 {"submit-hook", "submit-hook", kLocalCluster},
                                                 {"operator", "operator", "alice"}};
  for (int i = 0; i < options_.nodes; ++i) {
    const std::string node = NodeName(i);
    certs.push_back({"host-agent-" + node, "host-agent", node});
    certs.push_back({"netd-" + node, "netd", node});
    certs.push_back({"global-job-" + node, "global-job", node});
  }
  for (const auto& c : certs) {
    SR_RETURN_IF_ERROR(Pki({"issue", pki, "--role", c[1], "--instance", c[2], "--out", pki + "/" + c[0]}));
  }

  SR_ASSIGN_OR_RETURN(db_, PostgresInstance::Start(SR_POSTGRES_SH));

  SlurmClusterOptions global;
  global.cluster_name = "global";
  global.controller_host = "gctl";
  global.controller_ip = kGlobalCtlIp;
  for (int i = 0; i < options_.nodes; ++i) global.nodes.push_back({NodeName(i), NodeIp(i)});
  SR_ASSIGN_OR_RETURN(global_, SlurmCluster::Start(rig_.get(), dir_ + "/global-slurm", global));

  SlurmClusterOptions local;
  local.cluster_name = kLocalCluster;
  local.controller_host = "lctl";
  local.controller_ip = kLocalCtlIp;
  local.dynamic_nodes = true;
  local.dynamic_feature = "strongroom";  // what backend gives every workload's node
  local.nodes_in_workloads = true;
  // STRONGROOM_TEST_OLD_JOB_SUBMIT_LUA: another build's job_submit.lua (the "fails without the fix" runs).
  const char* old_lua = std::getenv("STRONGROOM_TEST_OLD_JOB_SUBMIT_LUA");
  local.files = {{"job_submit.lua", old_lua != nullptr ? old_lua : SR_SOURCE_DIR "/deploy/slurm/job_submit.lua"},
                 {"epilog-slurmctld", SR_SOURCE_DIR "/deploy/slurm/epilog-slurmctld"}};
  const std::string local_dir = dir_ + "/local-slurm";
  local.extra_config = {"JobSubmitPlugins=lua", "EpilogSlurmctld=" + local_dir + "/epilog-slurmctld",
                        "SlurmctldParameters=enable_configless", "JobRequeue=0",
                        // No nodes: job_submit.lua's operator-only hold (docs/VM_CONTROLLER.md, "Pinning").
                        "PartitionName=wait MaxTime=INFINITE State=UP"};
  // The hook settings must exist before slurmctld runs the plugin for the first job; written right after Start.
  SR_ASSIGN_OR_RETURN(local_, SlurmCluster::Start(rig_.get(), local_dir, local));
  SR_RETURN_IF_ERROR(WriteHookFiles());

  // The Local munge key for the workloads (host-agent's development-mode local_cluster_secrets_dir); with the data
  // path they get it from vm-controller by enrollment instead.
  if (!options_.data_path) {
    std::filesystem::create_directories(dir_ + "/secrets/" + kLocalCluster);
    std::error_code ec;
    std::filesystem::copy_file(local_dir + "/munge/munge.key", dir_ + "/secrets/" + kLocalCluster + "/munge-key",
                               ec);
    if (ec) return absl::InternalError("copy the Local munge key: " + ec.message());
    // Read by the workload's munged as container root, i.e. host-agent's uid base.
    const std::string key = dir_ + "/secrets/" + kLocalCluster + "/munge-key";
    if (chown(key.c_str(), kUidBase, kUidBase) != 0 || chmod(key.c_str(), 0400) != 0) {
      return absl::InternalError("cannot hand the munge key to the uid base: " + key);
    }
  }

  // Packets between the Local controller and workloads cross veths into OVS's userspace datapath: checksum
  // offload off on every kernel end that sends to a workload (notes/ovs.md).
  if (CommandResult r = OnHost("lctl", {"/usr/sbin/ethtool", "-K", "eth0", "tx", "off"}); r.exit_code != 0) {
    return absl::InternalError("lctl: ethtool -K eth0 tx off: " + r.output);
  }
  for (int i = 0; i < options_.nodes; ++i) {
    SR_RETURN_IF_ERROR(StartNodeNetwork(i));
    CommandResult route = OnHost("lctl", {"/usr/sbin/ip", "route", "add", NodeSubnet(i), "via", NodeIp(i)});
    if (route.exit_code != 0) return absl::InternalError("route on lctl: " + route.output);
    SR_RETURN_IF_ERROR(StartNetd(i));
  }
  SR_RETURN_IF_ERROR(StartBackend());
  SR_RETURN_IF_ERROR(StartVmController());
  for (int i = 0; i < options_.nodes; ++i) {
    SR_RETURN_IF_ERROR(StartLibvirtd(i));
    SR_RETURN_IF_ERROR(StartHostAgent(i));
  }
  return absl::OkStatus();
}

absl::Status E2eStack::StartLibvirtd(int index) {
  // In the node's netns, where netd makes the VMs' taps (deploy/libvirt/strongroom-libvirtd).
  const std::string node = NodeName(index);
  const std::string dir = LibvirtDir(node);
  SR_ASSIGN_OR_RETURN(pid_t pid, SpawnDaemon(node, node + "-libvirtd", {SR_LIBVIRTD, dir}));
  daemons_["libvirtd/" + node] = pid;
  for (const absl::Time deadline = absl::Now() + absl::Seconds(60); absl::Now() < deadline;) {
    if (std::filesystem::exists(dir + "/sock/libvirt-sock")) return absl::OkStatus();
    if (ProcessGone(pid)) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return absl::UnavailableError(absl::StrCat(node, ": libvirtd did not start; log tail:\n",
                                             Tail(ReadFileOrEmpty(dir_ + "/logs/" + node + "-libvirtd.log"), 3000)));
}

absl::Status E2eStack::WriteHookFiles() {
  const std::string local_dir = dir_ + "/local-slurm";
  const std::string hook_config = dir_ + "/slurm-hook.textproto";
  SR_RETURN_IF_ERROR(WriteFile(hook_config,
                               absl::StrCat("vm_controller_address: \"", kLocalCtlIp, ":", kGrpcPort, "\"\n",
                                            TlsBlock("tls", "submit-hook"), "trust_domain: \"", kTrustDomain,
                                            "\"\ncluster_name: \"", kLocalCluster, "\"\n"),
                               0600));
  // The site's limits are the Global nodes' size (tests/rig/slurm_cluster.h: 8 CPUs, 4000 MB).
  return WriteFile(local_dir + "/strongroom-hook.conf",
                   absl::StrCat("hook=", SR_SLURM_HOOK_BIN, "\nconfig=", hook_config, "\ncheck=", SR_SUBMIT_CHECK_BIN,
                                "\naccounts=", options_.project, ",", E2eOptions::kBrokenProject,
                                "\ndefault_account=", options_.project, "\nmax_cpus=", kGlobalCpusPerNode,
                                "\nmax_memory_mb=", kGlobalMemoryMb, "\nmax_time_minutes=", kMaxTimeMinutes, "\n"));
}

absl::Status E2eStack::StartNodeNetwork(int index) {
  const std::string node = NodeName(index);
  const std::string ovs = dir_ + "/" + node + "/ovs";
  std::filesystem::create_directories(ovs);
  // OVS_* in the daemons' environment, or they look for /var/run/openvswitch (notes/ovs.md).
  const std::vector<std::string> env = {"/usr/bin/env", "OVS_RUNDIR=" + ovs, "OVS_DBDIR=" + ovs, "OVS_LOGDIR=" + ovs,
                                        "OVS_SYSCONFDIR=" + ovs};
  auto vsctl = [&](std::vector<std::string> args) {
    std::vector<std::string> argv = {"/usr/bin/ovs-vsctl", "--db=unix:" + ovs + "/db.sock", "--timeout=10"};
    argv.insert(argv.end(), args.begin(), args.end());
    return OnHost(node, argv);
  };
  SR_ASSIGN_OR_RETURN(RunResult created, Run({"/usr/bin/ovsdb-tool", "create", ovs + "/conf.db",
                                                     "/usr/share/openvswitch/vswitch.ovsschema"},
                                                    absl::Seconds(10)));
  if (created.exit_code != 0) return absl::InternalError("ovsdb-tool create: " + created.output);
  std::vector<std::string> argv = env;
  argv.insert(argv.end(), {"/usr/sbin/ovsdb-server", ovs + "/conf.db", "--remote=punix:" + ovs + "/db.sock",
                           "--unixctl=" + ovs + "/ovsdb-server.ctl", "--pidfile=" + ovs + "/ovsdb-server.pid",
                           "--log-file=" + ovs + "/ovsdb-server.log", "-vconsole:off"});
  SR_ASSIGN_OR_RETURN(pid_t ovsdb, SpawnDaemon(node, node + "-ovsdb-server", argv));
  ovs_.push_back(ovsdb);
  const absl::Time deadline = absl::Now() + absl::Seconds(15);
  while (vsctl({"--no-wait", "init"}).exit_code != 0) {
    if (absl::Now() > deadline) return absl::UnavailableError(node + ": ovsdb-server did not start");
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  argv = env;
  argv.insert(argv.end(), {"/usr/sbin/ovs-vswitchd", "unix:" + ovs + "/db.sock", "--unixctl=" + ovs + "/ovs-vswitchd.ctl",
                           "--pidfile=" + ovs + "/ovs-vswitchd.pid", "--log-file=" + ovs + "/ovs-vswitchd.log",
                           "-vconsole:off"});
  SR_ASSIGN_OR_RETURN(pid_t vswitchd, SpawnDaemon(node, node + "-ovs-vswitchd", argv));
  ovs_.push_back(vswitchd);
  CommandResult br = vsctl({"add-br", kBridge, "--", "set", "bridge", kBridge, "datapath_type=netdev",
                            "fail-mode=secure"});
  if (br.exit_code != 0) return absl::InternalError(node + ": add-br: " + br.output);
  // The uplink: a veth whose node end (gw0) is the workloads' gateway; the node routes on to the rig bridge.
  const std::string netns = rig_->Netns(node);
  for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
           {"/usr/sbin/ip", "link", "add", "uplink", "type", "veth", "peer", "name", "gw0", "address", GatewayMac(index)},
           {"/usr/sbin/ip", "link", "set", "uplink", "up"},
           {"/usr/sbin/ip", "addr", "add", Gateway(index) + "/28", "dev", "gw0"},
           {"/usr/sbin/ip", "link", "set", "gw0", "up"},
           {"/usr/sbin/ethtool", "-K", "gw0", "tx", "off"},
           {"/usr/sbin/ethtool", "-K", "eth0", "tx", "off"},
           {"/usr/sbin/sysctl", "-qw", "net.ipv4.ip_forward=1"},
       }) {
    CommandResult r = OnHost(node, args);
    if (r.exit_code != 0) return absl::InternalError(absl::StrCat(node, ": ", absl::StrJoin(args, " "), ": ", r.output));
  }
  CommandResult up = vsctl({"add-port", kBridge, "uplink"});
  if (up.exit_code != 0) return absl::InternalError(node + ": add-port uplink: " + up.output);
  return absl::OkStatus();
}

absl::Status E2eStack::StartNetd(int index) {
  const std::string node = NodeName(index);
  const std::string ovs = dir_ + "/" + node + "/ovs";
  const std::string config = dir_ + "/" + node + "/netd.textproto";
  SR_RETURN_IF_ERROR(WriteFile(
      config,
      absl::StrCat(ServerBlock(absl::StrCat(NodeIp(index), ":", kNetdPort), "netd-" + node, node),
                   "ovsdb_remote: \"unix:", ovs, "/db.sock\"\nbridge: \"", kBridge, "\"\nopenflow_remote: \"unix:",
                   ovs, "/", kBridge, ".mgmt\"\nuplink_port: \"uplink\"\nsubnet: \"", NodeSubnet(index),
                   "\"\ngateway: \"", Gateway(index), "\"\ngateway_mac: \"", GatewayMac(index),
                   "\"\novs_timeout_ms: 5000\n", "backend_address: \"", kBackendIp,
                   ":", kGrpcPort, "\"\n", TlsBlock("backend_tls", "netd-" + node), "audit_spool_dir: \"", dir_, "/",
                   node, "/netd-audit-spool\"\n")));
  SR_ASSIGN_OR_RETURN(pid_t pid, SpawnDaemon(node, node + "-netd", {SR_NETD_BIN, "--config", config}));
  daemons_["netd/" + node] = pid;
  return WaitHealthy("netd/" + node, pid, node + "-netd.log");
}

absl::Status E2eStack::StartHostAgent(int index) {
  const std::string node = NodeName(index);
  const std::string config = dir_ + "/" + node + "/host-agent.textproto";
  SR_RETURN_IF_ERROR(WriteFile(
      config,
      absl::StrCat(ServerBlock(absl::StrCat("0.0.0.0:", kGrpcPort), "host-agent-" + node, node), "state_dir: \"",
                   dir_, "/", node, "/host-agent\"\nimage_root: \"", options_.image_root, "\"\n",
                   // No device-mapper in this kernel; tests/guest covers dm-crypt. Logged and audited loudly.
                   "allow_unencrypted_scratch: true\nnetd_address: \"", NodeIp(index), ":", kNetdPort, "\"\n",
                   TlsBlock("netd_tls", "host-agent-" + node), "backend_address: \"", kBackendIp, ":", kGrpcPort,
                   "\"\n", TlsBlock("backend_tls", "host-agent-" + node),
                   // With the data path no compute host holds the Local munge key: the workload enrolls for it.
                   options_.data_path ? "" : absl::StrCat("local_cluster_secrets_dir: \"", dir_, "/secrets\"\n"),
                   "project_shares { project: \"", options_.project, "\" host_path: \"", share_,
                   "\" }\nstop_grace_seconds: 5\n",
                   // Non-exclusive jobs' VMs: TCG (this host's /dev/kvm cannot run stock kernels).
                   "vm_libvirt_uri: \"qemu:///system?socket=", LibvirtDir(node),
                   "/sock/libvirt-sock\"\nvm_domain_type: \"qemu\"\nvm_writable_disk_bytes: ", kVmWritableDiskBytes,
                   "\n")));
  SR_ASSIGN_OR_RETURN(pid_t pid, SpawnDaemon(node, node + "-host-agent", {SR_HOST_AGENT_BIN, "--config", config}));
  if (static_cast<int>(host_agents_.size()) > index) {
    host_agents_[index] = pid;  // a restart
  } else {
    host_agents_.push_back(pid);
  }
  daemons_["host-agent/" + node] = pid;
  return WaitHealthy("host-agent/" + node, pid, node + "-host-agent.log");
}

absl::Status E2eStack::StartBackend() {
  // The Global job script: the node-local settings of deploy/slurm/global-job.sh, then the script itself.
  const std::string pki = dir_ + "/pki";
  SR_RETURN_IF_ERROR(WriteFile(dir_ + "/global-job.conf",
                               absl::StrCat("SR_AGENT=127.0.0.1:", kGrpcPort, "\nSR_TRUST_DOMAIN=", kTrustDomain,
                                            "\nSR_CA=", pki, "/ca.pem\nSR_CERT=", pki,
                                            "/global-job-${SLURMD_NODENAME}.pem\nSR_KEY=", pki,
                                            "/global-job-${SLURMD_NODENAME}.key\nSR_STOP_GRACE=10\nSR_CLIENT=",
                                            SR_GLOBAL_JOB_BIN, "\n")));
  SR_RETURN_IF_ERROR(WriteFile(dir_ + "/global-job-wrapper.sh",
                               absl::StrCat("#!/bin/bash\nexport STRONGROOM_GLOBAL_JOB_CONF=",
                                            dir_, "/global-job.conf\nexec ", SR_SOURCE_DIR,
                                            "/deploy/slurm/global-job.sh \"$@\"\n"),
                               0755));
  std::string peers;
  for (int i = 0; i < options_.nodes; ++i) {
    absl::StrAppend(&peers, "host_agents { name: \"", NodeName(i), "\" address: \"", NodeIp(i), ":", kGrpcPort,
                    "\" }\n");
  }
  const std::string config = dir_ + "/backend.textproto";
  SR_RETURN_IF_ERROR(WriteFile(
      config,
      absl::StrCat(ServerBlock(absl::StrCat(kBackendIp, ":", kGrpcPort), "backend", "be1"), "database { conninfo: \"",
                   db_->conninfo(), "\" }\nglobal_slurm {\n  slurm_conf: \"", global_->conf(), "\"\n  job_script: \"",
                   dir_, "/global-job-wrapper.sh\"\n  poll_interval_seconds: 1\n  job_output: \"", dir_,
                   "/logs/global-job-%j.out\"\n}\nvm_controllers { name: \"", kLocalCluster, "\" address: \"",
                   kLocalCtlIp, ":", kGrpcPort, "\"",
                   options_.data_path ? absl::StrCat(" enrollment_address: \"", EnrollmentAddress(), "\"") : "",
                   " }\n", peers, TlsBlock("client_tls", "backend"),
                   "readiness_deadline_seconds: 120\naudit { spool_dir: \"", dir_, "/backend-audit-spool\" }\n",
                   "projects { name: \"", options_.project, "\" local_clusters: \"",
                   kLocalCluster,
                   "\" default_image: \"strongroom-workload\" egress_ceiling: \"198.51.100.0/24\" "
                   "ingress_ceiling: \"198.51.100.0/24\"", options_.data_path ? " ipsec_data_path: true" : "", " }\n",
                   // A project whose image no node has: its workloads can never start (failure-path tests).
                   "projects { name: \"", E2eOptions::kBrokenProject, "\" local_clusters: \"", kLocalCluster,
                   "\" default_image: \"no-such-image\" }\n")));
  SR_ASSIGN_OR_RETURN(pid_t pid, SpawnDaemon("backend", "backend", {SR_BACKEND_BIN, "--config", config}));
  return WaitHealthy("backend", pid, "backend.log");
}

absl::Status E2eStack::StartVmController() {
  std::filesystem::create_directories(dir_ + "/vm-controller");
  const std::string config = dir_ + "/vm-controller.textproto";
  // The controlling VM's side of the data path (docs/IPSEC.md "The controlling VM's daemons"): vm-controller
  // starts and supervises its charon and nfs-ganesha in lctl's netns, and hands out the Local munge key.
  std::string enrollment;
  if (options_.data_path) {
    enrollment = absl::StrCat("enrollment {\n  project: \"", options_.project, "\"\n  listen_address: \"",
                              EnrollmentAddress(), "\"\n  munge_key_file: \"", dir_,
                              "/local-slurm/munge/munge.key\"\n  ipsec {\n    state_dir: \"", dir_,
                              "/vm-controller/charon\"\n    address: \"", kLocalCtlIp,
                              "\"\n    workload_subnets: \"203.0.113.0/24\"\n  }\n  nfs {\n    state_dir: \"", dir_, "/vm-controller/ganesha\"\n    share_path: \"",
                              share_, "\"\n    export_path: \"/", options_.project, "\"\n  }\n}\n");
  }
  SR_RETURN_IF_ERROR(WriteFile(
      config, absl::StrCat(ServerBlock(absl::StrCat(kLocalCtlIp, ":", kGrpcPort), "vm-controller", kLocalCluster),
                           "cluster_name: \"", kLocalCluster, "\"\nslurm_conf: \"", local_->conf(),
                           "\"\nstate_db: \"", dir_, "/vm-controller/local-jobs.db\"\nbackend_address: \"", kBackendIp,
                           ":", kGrpcPort, "\"\nslurmctld_addresses: \"", kLocalCtlIp, ":6817\"\nmunge_socket: \"",
                           dir_, "/local-slurm/munge/munge.sock\"\npoll_interval_ms: 500\n", enrollment)));
  // STRONGROOM_TEST_OLD_VM_CONTROLLER_BIN: another build's vm-controller (the "fails without the fix" runs).
  const char* old_bin = std::getenv("STRONGROOM_TEST_OLD_VM_CONTROLLER_BIN");
  SR_ASSIGN_OR_RETURN(pid_t pid, SpawnDaemon("lctl", "vm-controller",
                                             {old_bin != nullptr ? old_bin : SR_VM_CONTROLLER_BIN, "--config", config}));
  return WaitHealthy("vm-controller", pid, "vm-controller.log");
}

E2eStack::~E2eStack() {
  if (absl::Status s = Down(); !s.ok()) std::fprintf(stderr, "E2eStack: teardown: %s\n", s.ToString().c_str());
}

CommandResult E2eStack::OnHost(const std::string& host, std::vector<std::string> argv, absl::Duration timeout) {
  absl::StatusOr<Rig::ExecResult> r = rig_->Exec(host, argv, timeout);
  if (!r.ok()) return {-1, r.status().ToString()};
  return {r->exit_code, r->output};
}

CommandResult E2eStack::Local(const std::string& user, std::vector<std::string> argv, absl::Duration timeout) {
  argv[0] = "/usr/bin/" + argv[0];
  std::vector<std::string> full = {"/usr/bin/env", "-i", "PATH=/usr/bin:/bin", "SLURM_CONF=" + local_->conf()};
  if (!user.empty()) full.insert(full.begin(), {"/usr/sbin/runuser", "-u", user, "--"});
  full.insert(full.end(), argv.begin(), argv.end());
  return OnHost("lctl", full, timeout);
}

CommandResult E2eStack::Global(std::vector<std::string> argv, absl::Duration timeout) {
  absl::StatusOr<Rig::ExecResult> r = global_->Command("gctl", argv, timeout);
  if (!r.ok()) return {-1, r.status().ToString()};
  return {r->exit_code, r->output};
}

CommandResult E2eStack::Ctl(const std::string& daemon, std::vector<std::string> args, absl::Duration timeout) {
  std::string target, role;
  if (daemon == "backend") {
    target = absl::StrCat(kBackendIp, ":", kGrpcPort), role = "backend";
  } else if (daemon == "vm-controller") {
    target = absl::StrCat(kLocalCtlIp, ":", kGrpcPort), role = "vm-controller";
  } else if (absl::StartsWith(daemon, "host-agent/")) {
    target = absl::StrCat(rig_->Ip(daemon.substr(11)), ":", kGrpcPort), role = "host-agent";
  } else if (absl::StartsWith(daemon, "netd/")) {
    target = absl::StrCat(rig_->Ip(daemon.substr(5)), ":", kNetdPort), role = "netd";
  } else {
    return {-1, "unknown daemon " + daemon};
  }
  const std::string pki = dir_ + "/pki/";
  std::vector<std::string> argv = {SR_CTL_BIN,         "--target", target,           "--trust-domain",
                                   kTrustDomain,       "--ca",     pki + "ca.pem",   "--cert",
                                   pki + "operator.pem", "--key",  pki + "operator.key", "--server-role",
                                   role};
  argv.insert(argv.end(), args.begin(), args.end());
  return OnHost("client", argv, timeout);
}

absl::StatusOr<std::string> E2eStack::UserDir(const std::string& user) {
  struct passwd* pw = getpwnam(user.c_str());
  if (pw == nullptr) return absl::NotFoundError("no such user: " + user);
  const std::string path = share_ + "/" + user;
  std::filesystem::create_directories(path);
  // The job writes as the user inside the workload, i.e. as the shifted uid on this host; vm-controller writes a
  // refused job's output as the user's own uid (on a real cluster both are the same uid, through NFS): both may
  // create files here.
  if (chown(path.c_str(), kUidBase + pw->pw_uid, kUidBase + pw->pw_gid) != 0 || chmod(path.c_str(), 01777) != 0) {
    return absl::InternalError("cannot prepare " + path);
  }
  return path;
}

std::vector<v1::Workload> E2eStack::Workloads(const std::string& node) {
  CommandResult list = Ctl("host-agent/" + node, {"call", "strongroom.v1.HostAgent/ListWorkloads", "{}"});
  v1::ListWorkloadsResponse response;
  if (list.exit_code != 0 || !ParseCtlJson(list.output, &response).ok()) return {};
  return {response.workloads().begin(), response.workloads().end()};
}

std::vector<std::string> E2eStack::node_names() const {
  std::vector<std::string> names;
  for (int i = 0; i < options_.nodes; ++i) names.push_back(NodeName(i));
  return names;
}

void E2eStack::DumpLogs() const {
  if (dir_.empty()) return;
  std::vector<std::string> files;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir_ + "/logs", ec)) files.push_back(entry.path());
  for (const char* cluster : {"/local-slurm/logs", "/global-slurm/logs"}) {
    for (const auto& entry : std::filesystem::directory_iterator(dir_ + cluster, ec)) files.push_back(entry.path());
  }
  for (const std::string& f : files) {
    std::fprintf(stderr, "---- %s ----\n%s\n", f.c_str(), Tail(ReadFileOrEmpty(f), 6000).c_str());
  }
}

}  // namespace strongroom::e2e
