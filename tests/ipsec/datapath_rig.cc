#include "tests/ipsec/datapath_rig.h"

#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "common/status.h"
#include "common/vici.h"
#include "services/host_agent/workload_nfs_mount.h"
#include "tests/rig/files.h"

namespace strongroom {
namespace {

constexpr char kProject[] = "proj-a";
constexpr char kJob[] = "job-1";
constexpr char kExportPseudo[] = "/proj-a";

CertBinding Binding(const std::string& id, const std::string& ip) {
  absl::Time now = absl::Now();
  return CertBinding{kProject, id, kJob, ip, now - absl::Minutes(1), now + absl::Hours(2)};
}

absl::Status MakeDir(const std::string& path) {
  if (mkdir(path.c_str(), 0755) != 0 && errno != EEXIST)
    return absl::InternalError(absl::StrCat("mkdir ", path, ": ", std::strerror(errno)));
  return absl::OkStatus();
}

std::string NamespaceId(const std::string& ns_link) {
  char buf[64] = {};
  ssize_t n = readlink(ns_link.c_str(), buf, sizeof(buf) - 1);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : "";
}

}  // namespace

absl::StatusOr<CaptureCounts> ParseCaptureLine(const std::string& output) {
  for (absl::string_view line : absl::StrSplit(output, '\n', absl::SkipEmpty())) {
    if (!absl::StartsWith(line, "ike_esp=")) continue;
    CaptureCounts c;
    c.line = std::string(line);
    for (absl::string_view field : absl::StrSplit(line, ' ', absl::SkipEmpty())) {
      std::pair<absl::string_view, absl::string_view> kv = absl::StrSplit(field, absl::MaxSplits('=', 1));
      int64_t v = 0;
      if (!absl::SimpleAtoi(kv.second, &v)) continue;
      if (kv.first == "ike_esp") c.ike_esp = v;
      if (kv.first == "other") c.other = v;
      if (kv.first == "sensitive") c.sensitive = v;
      if (kv.first == "raw_esp") c.raw_esp = v;
      if (kv.first == "dropped") c.dropped = v;
    }
    if (c.ike_esp < 0 || c.other < 0 || c.sensitive < 0 || c.raw_esp < 0 || c.dropped < 0)
      return absl::InternalError(absl::StrCat("capture.py: incomplete line: ", line));
    return c;
  }
  return absl::InternalError(absl::StrCat("capture.py printed no counts: ", output));
}

absl::StatusOr<std::unique_ptr<DataPathRig>> DataPathRig::Create(IpsecBackend backend) {
  std::unique_ptr<DataPathRig> d(new DataPathRig(backend));
  absl::Status s = d->Setup();
  if (!s.ok()) {
    absl::Status down = d->Down();
    if (!down.ok())
      std::fprintf(stderr, "DataPathRig: teardown after a failed setup: %s\n", down.ToString().c_str());
    return s;
  }
  return d;
}

absl::Status DataPathRig::Setup() {
  SR_ASSIGN_OR_RETURN(rig_, Rig::Create(SR_RIG_SH));
  SR_RETURN_IF_ERROR(rig_->AddHost("vm", absl::StrCat(kDataPathVmIp, "/24")));
  SR_RETURN_IF_ERROR(rig_->AddHost("wl", absl::StrCat(kDataPathWorkloadIp, "/24")));

  // The controlling VM's share: tmpfs, because FSAL_VFS needs file handles (open_by_handle_at) that the
  // guest's overlay root does not give.
  share_dir_ = rig_->state_dir() + "/share";
  SR_RETURN_IF_ERROR(MakeDir(share_dir_));
  if (mount("strongroom-share", share_dir_.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, "size=768m,mode=0755") !=
      0)
    return absl::InternalError(absl::StrCat("mount tmpfs on ", share_dir_, ": ", std::strerror(errno)));
  share_mounted_ = true;
  std::ofstream(share_dir_ + "/data.txt") << "project data\n";
  workload_target_ = rig_->state_dir() + "/workload-data";
  SR_RETURN_IF_ERROR(MakeDir(workload_target_));

  SR_ASSIGN_OR_RETURN(
      nfs_, GaneshaInstance::Start(
                rig_.get(), "vm", rig_->state_dir() + "/ganesha",
                NfsServerSettings{"", 2049, {{1, share_dir_, kExportPseudo, {kDataPathWorkloadIp}}}}));
  SR_ASSIGN_OR_RETURN(vm_,
                      CharonInstance::Start(rig_.get(), "vm", rig_->state_dir() + "/charon-vm", backend_));
  SR_ASSIGN_OR_RETURN(wl_,
                      CharonInstance::Start(rig_.get(), "wl", rig_->state_dir() + "/charon-wl", backend_));

  // The VM's side as vm-controller runs it: its identity from the project CA, one connection per workload.
  SR_ASSIGN_OR_RETURN(ca_, ProjectCa::Create(kProject, absl::Hours(24)));
  SR_ASSIGN_OR_RETURN(vm_tunnels_, VmTunnels::Create(*ca_, vm_->vici_socket(), kDataPathVmIp, backend_));
  SR_RETURN_IF_ERROR(vm_tunnels_->Add(kDataPathTunnel, kJob, kDataPathWorkloadIp));
  // The workload's side, as enrollment gives it (minus the RPC): its key never leaves it, only its CSR goes
  // to the project CA; its IKE identity is the subject the CA wrote.
  SR_ASSIGN_OR_RETURN(EcKey wl_key, EcKey::Generate());
  SR_ASSIGN_OR_RETURN(std::string csr, wl_key.CsrPem(kDataPathTunnel));
  SR_ASSIGN_OR_RETURN(std::string wl_cert,
                      ca_->IssueFromCsr(csr, Binding(kDataPathTunnel, kDataPathWorkloadIp)));
  SR_ASSIGN_OR_RETURN(ViciClient vici, wl_->Vici());
  SR_RETURN_IF_ERROR(LoadIdentity(vici, wl_key, wl_cert));
  return LoadTunnel(vici, WorkloadSideTunnel(WorkloadTunnelEnds{kProject, kJob, kDataPathTunnel,
                                                                kDataPathWorkloadIp, kDataPathVmIp},
                                             wl_cert, ca_->cert_pem(), backend_));
}

absl::Status DataPathRig::Initiate() {
  SR_ASSIGN_OR_RETURN(ViciClient vici, wl_->Vici());
  absl::Status up = BringUpTunnel(vici, kDataPathTunnel, absl::Seconds(30));
  if (!up.ok())
    return absl::Status(up.code(),
                        absl::StrCat(up.message(), "\nworkload's charon:\n", ReadFileOrEmpty(wl_->log_path()),
                                     "\nvm's charon:\n", ReadFileOrEmpty(vm_->log_path())));
  return up;
}

absl::Status DataPathRig::Terminate() {
  SR_ASSIGN_OR_RETURN(ViciClient vici, wl_->Vici());
  ViciMessage term;
  term.Set("ike", kDataPathTunnel);
  term.Set("timeout", "10000");
  return vici.CallChecked("terminate", term);
}

absl::Status DataPathRig::Unload() {
  SR_ASSIGN_OR_RETURN(ViciClient vici, wl_->Vici());
  SR_RETURN_IF_ERROR(TearDownTunnel(vici, kDataPathTunnel));
  return vm_tunnels_->Remove(kDataPathTunnel);
}

absl::StatusOr<TunnelState> DataPathRig::WorkloadTunnelState() {
  SR_ASSIGN_OR_RETURN(ViciClient vici, wl_->Vici());
  return GetTunnelState(vici, kDataPathTunnel);
}

absl::StatusOr<CharonHoldings> DataPathRig::WorkloadHoldings() {
  SR_ASSIGN_OR_RETURN(ViciClient vici, wl_->Vici());
  return GetHoldings(vici);
}

absl::StatusOr<CharonHoldings> DataPathRig::VmHoldings() {
  SR_ASSIGN_OR_RETURN(ViciClient vici, vm_->Vici());
  return GetHoldings(vici);
}

std::string DataPathRig::workload_mountns() const { return absl::StrCat("/proc/", workload_pid_, "/ns/mnt"); }
std::string DataPathRig::workload_netns() const { return "/run/netns/" + rig_->Netns("wl"); }

absl::Status DataPathRig::StartWorkload() {
  if (workload_pid_ != 0) return absl::FailedPreconditionError("the workload is running already");
  // The workload's mount namespace starts as a copy of the host's: the VM's share (a mount of this emulated
  // "VM") is detached from it, so the job can reach the data only over NFS.
  SR_ASSIGN_OR_RETURN(
      workload_pid_,
      rig_->Spawn("wl", rig_->state_dir() + "/workload.log",
                  {"/usr/bin/unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c",
                   "umount -l \"$1\" && exec /bin/sleep 100000", "workload", share_dir_}));
  const std::string ours = NamespaceId("/proc/self/ns/mnt");
  absl::Time deadline = absl::Now() + absl::Seconds(20);
  while (true) {
    std::string comm(
        absl::StripAsciiWhitespace(ReadFileOrEmpty(absl::StrCat("/proc/", workload_pid_, "/comm"))));
    std::string ns = NamespaceId(workload_mountns());
    if (comm == "sleep" && !ns.empty() && ns != ours) return absl::OkStatus();
    if (ProcessGone(workload_pid_) || absl::Now() > deadline)
      return absl::InternalError(absl::StrCat("the workload's mount namespace holder did not start: ",
                                              ReadFileOrEmpty(rig_->state_dir() + "/workload.log")));
    absl::SleepFor(absl::Milliseconds(20));
  }
}

absl::Status DataPathRig::StopWorkload() {
  if (workload_pid_ == 0) return absl::OkStatus();
  SR_RETURN_IF_ERROR(rig_->Stop(workload_pid_));
  workload_pid_ = 0;
  return absl::OkStatus();
}

absl::Status DataPathRig::MountShare() {
  if (workload_pid_ == 0) return absl::FailedPreconditionError("no workload");
  host_agent::WorkloadNfsMount m{workload_netns(), workload_mountns(), kDataPathVmIp, kExportPseudo,
                                 workload_target_};
  SR_RETURN_IF_ERROR(host_agent::MountNfsInWorkload(m, absl::Seconds(60)));
  share_in_workload_ = true;
  return absl::OkStatus();
}

absl::Status DataPathRig::UnmountShare() {
  if (!share_in_workload_) return absl::OkStatus();
  SR_RETURN_IF_ERROR(host_agent::UnmountInWorkload(workload_mountns(), workload_target_, absl::Seconds(60)));
  share_in_workload_ = false;
  return absl::OkStatus();
}

absl::StatusOr<RunResult> DataPathRig::RunInWorkload(const std::vector<std::string>& argv,
                                                     absl::Duration timeout) {
  if (workload_pid_ == 0) return absl::FailedPreconditionError("no workload");
  std::vector<std::string> full = {
      "/usr/bin/nsenter", "--target", absl::StrCat(workload_pid_), "--mount", "--net", "--uts", "--"};
  full.insert(full.end(), argv.begin(), argv.end());
  return Run(full, timeout);
}

std::string DataPathRig::WorkloadMounts() const {
  return workload_pid_ == 0 ? "" : ReadFileOrEmpty(absl::StrCat("/proc/", workload_pid_, "/mounts"));
}

absl::Status DataPathRig::StartCapture(const std::string& tag) {
  if (capture_pid_ != 0) return absl::FailedPreconditionError("a capture is running");
  capture_log_ = absl::StrCat(rig_->state_dir(), "/capture-", tag, ".log");
  capture_stop_ = absl::StrCat(rig_->state_dir(), "/capture-", tag, ".stop");
  SR_ASSIGN_OR_RETURN(
      capture_pid_, Spawn({"/usr/bin/nsenter", "--net=/run/netns/" + rig_->Netns("sw"), "--",
                           "/usr/bin/python3", SR_CAPTURE, kDataPathWorkloadIp, kDataPathVmIp, capture_stop_},
                          capture_log_));
  absl::Time deadline = absl::Now() + absl::Seconds(30);  // Python starts slowly under TCG
  while (!absl::StrContains(ReadFileOrEmpty(capture_log_), "capturing")) {
    if (absl::Now() > deadline || ProcessGone(capture_pid_))
      return absl::InternalError(absl::StrCat("capture.py did not start: ", ReadFileOrEmpty(capture_log_)));
    absl::SleepFor(absl::Milliseconds(20));
  }
  return absl::OkStatus();
}

absl::StatusOr<CaptureCounts> DataPathRig::FinishCapture() {
  if (capture_pid_ == 0) return absl::FailedPreconditionError("no capture is running");
  std::ofstream(capture_stop_) << "stop\n";
  // capture.py checks the stop file every 50 ms; past the deadline it is killed and the counts are lost.
  absl::Time deadline = absl::Now() + absl::Seconds(60);
  while (waitpid(capture_pid_, nullptr, WNOHANG) == 0) {
    if (absl::Now() > deadline) {
      kill(capture_pid_, SIGKILL);
      WaitChild(capture_pid_);
      break;
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
  capture_pid_ = 0;
  return ParseCaptureLine(ReadFileOrEmpty(capture_log_));
}

absl::Status DataPathRig::Down() {
  absl::Status first;
  auto keep = [&first](absl::Status s) {
    if (!s.ok() && first.ok()) first = s;
  };
  if (capture_pid_ != 0) keep(FinishCapture().status());
  if (workload_pid_ != 0) {
    keep(UnmountShare());
    keep(StopWorkload());
  }
  vm_tunnels_.reset();
  if (wl_) keep(wl_->Stop());
  if (vm_) keep(vm_->Stop());
  if (nfs_) keep(nfs_->Stop());
  wl_.reset();
  vm_.reset();
  nfs_.reset();
  if (share_mounted_) {
    if (umount2(share_dir_.c_str(), 0) == 0) {
      share_mounted_ = false;
    } else {
      keep(absl::InternalError(absl::StrCat("umount ", share_dir_, ": ", std::strerror(errno))));
    }
  }
  if (rig_) keep(rig_->Down());
  return first;
}

DataPathRig::~DataPathRig() {
  absl::Status s = Down();
  if (!s.ok()) std::fprintf(stderr, "DataPathRig: teardown: %s\n", s.ToString().c_str());
}

}  // namespace strongroom
