// E2eStack's teardown and its check that nothing is left: workloads stopped through their agents, then whatever a
// failed test left of them (container processes, mounts, loops, netns), then the rig.
#include <signal.h>
#include <sys/mount.h>

#include <algorithm>
#include <filesystem>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "common/subprocess.h"
#include "services/host_agent/mounts.h"
#include "services/host_agent/container/netns.h"
#include "strongroom/v1/host_agent.pb.h"
#include "strongroom/v1/netd.pb.h"
#include "tests/e2e/e2e_jobs.h"
#include "tests/e2e/e2e_stack.h"
#include "tests/rig/files.h"

namespace strongroom::e2e {

absl::Status E2eStack::Down() {
  if (down_) return absl::OkStatus();
  down_ = true;
  absl::Status result;
  auto keep = [&](absl::Status s) {
    if (!s.ok() && result.ok()) result = s;
  };
  // host-agents first: a SIGTERMed agent keeps its workloads; the rig's teardown would then kill container
  // processes but not unmount their scratch. Stop what still runs through the agents' own API.
  if (rig_ != nullptr) {
    keep(StopAllWorkloads(absl::Seconds(60)));
    for (pid_t pid : host_agents_) keep(rig_->Stop(pid));
    // What host-agent keeps across its restarts (the private bind of its workloads directory) and anything a
    // failed stop left: container processes first, then the mounts, deepest first.
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator("/proc", ec)) {
      std::error_code link_ec;
      const std::string root = std::filesystem::read_symlink(e.path() / "root", link_ec).string();
      if (!link_ec && absl::StartsWith(root, dir_ + "/")) {
        pid_t pid = 0;
        if (absl::SimpleAtoi(e.path().filename().string(), &pid)) ::kill(pid, SIGKILL);
      }
    }
    KillWorkloadRemains();
    std::vector<std::string> mounts = host_agent::MountsUnder(dir_);
    std::sort(mounts.rbegin(), mounts.rend());
    for (const std::string& m : mounts) umount2(m.c_str(), MNT_DETACH);
    for (const auto& [dev, file] : host_agent::LoopsBackedUnder(dir_ + "/")) {
      (void)Run({"/usr/sbin/losetup", "-d", dev}, absl::Seconds(10));
    }
  }
  local_.reset();
  global_.reset();
  if (rig_ != nullptr) keep(rig_->Down());
  rig_.reset();
  db_.reset();
  return result;
}

namespace {

// Every workload an agent of this stack started has a directory in its state, named by its id.
std::vector<std::string> WorkloadIdsIn(const std::string& agent_state) {
  std::vector<std::string> ids;
  std::error_code ec;
  for (const char* sub : {"/workloads", "/runtime"}) {
    for (const auto& e : std::filesystem::directory_iterator(agent_state + sub, ec)) {
      const std::string id = e.path().filename();
      if (std::find(ids.begin(), ids.end(), id) == ids.end()) ids.push_back(id);
    }
  }
  return ids;
}

// The processes in a workload's container cgroup (cgroupsPath /strongroom-<id>; v1 hierarchy or v2).
std::vector<pid_t> CgroupMembers(const std::string& workload_id) {
  std::vector<pid_t> out;
  for (const char* root : {"/sys/fs/cgroup/pids/strongroom-", "/sys/fs/cgroup/strongroom-"}) {
    std::istringstream pids(ReadFileOrEmpty(absl::StrCat(root, workload_id, "/cgroup.procs")));
    for (pid_t pid = 0; pids >> pid;) out.push_back(pid);
  }
  return out;
}

// The qemu processes libvirtd runs for host-agent's VMs on a node (their pid files), alive.
std::vector<std::pair<std::string, pid_t>> LiveQemus(const std::string& libvirt_dir) {
  std::vector<std::pair<std::string, pid_t>> out;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(libvirt_dir + "/run/qemu", ec)) {
    // sr-<workload id>.pid (libvirt's own driver.pid is there too).
    if (e.path().extension() != ".pid" || !absl::StartsWith(e.path().filename().string(), "sr-")) continue;
    pid_t pid = 0;
    if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(ReadFileOrEmpty(e.path().string())), &pid) || pid <= 0) continue;
    if (::kill(pid, 0) == 0) out.emplace_back(e.path().stem().string(), pid);
  }
  return out;
}

}  // namespace

void E2eStack::KillWorkloadRemains() {
  // A VM whose agent could not destroy it (libvirtd keeps qemu running when it stops itself).
  for (const std::string& node : node_names()) {
    for (const auto& [domain, pid] : LiveQemus(LibvirtDir(node))) ::kill(pid, SIGKILL);
  }
  // The /proc scan in Down misses a container whose root lies in host-agent's private bind of its workloads
  // directory (its path then reads relative to that mount): seen when a test failed with host-agent down. A
  // workload's cgroup, netns and scratch loop are named after its id.
  for (const std::string& node : node_names()) {
    for (const std::string& id : WorkloadIdsIn(dir_ + "/" + node + "/host-agent")) {
      for (pid_t pid : CgroupMembers(id)) ::kill(pid, SIGKILL);
      for (const auto& [dev, file] : host_agent::LoopsBackedUnder("/")) {
        if (absl::EndsWith(file, "/" + id + "/scratch.img")) {
          (void)Run({"/usr/sbin/losetup", "-d", dev}, absl::Seconds(10));
        }
      }
      if (std::filesystem::exists("/run/netns/" + host_agent::NetnsNameFor(id))) {
        (void)Run({"/usr/sbin/ip", "netns", "delete", host_agent::NetnsNameFor(id)}, absl::Seconds(10));
      }
    }
  }
}

absl::Status E2eStack::StopAllWorkloads(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  std::vector<std::string> live;
  do {
    live.clear();
    for (int i = 0; i < options_.nodes; ++i) {
      const std::string node = node_names()[i];
      for (const v1::Workload& w : Workloads(node)) {
        if (w.state() == v1::WORKLOAD_STATE_STOPPED || w.state() == v1::WORKLOAD_STATE_FAILED) continue;
        live.push_back(node + "/" + w.spec().workload_id());
        if (w.state() == v1::WORKLOAD_STATE_STOPPING) continue;
        Ctl("host-agent/" + node, {"call", "strongroom.v1.HostAgent/StopWorkload",
                                   absl::StrCat(R"({"workloadId":")", w.spec().workload_id(), R"("})")});
      }
    }
    if (live.empty()) return absl::OkStatus();
    absl::SleepFor(absl::Milliseconds(200));
  } while (absl::Now() < deadline);
  return absl::DeadlineExceededError("workloads still not stopped: " + absl::StrJoin(live, ", "));
}

std::vector<std::string> E2eStack::Leftovers() {
  std::vector<std::string> out;
  for (int i = 0; i < options_.nodes; ++i) {
    const std::string node = node_names()[i];
    const std::string state = dir_ + "/" + node + "/host-agent";
    for (const v1::Workload& w : Workloads(node)) {
      const std::string& id = w.spec().workload_id();
      if (w.state() != v1::WORKLOAD_STATE_STOPPED && w.state() != v1::WORKLOAD_STATE_FAILED) {
        out.push_back(absl::StrCat(node, ": workload ", id, " is ", v1::WorkloadState_Name(w.state())));
      }
      if (std::filesystem::exists("/run/netns/" + host_agent::NetnsNameFor(id))) {
        out.push_back(node + ": netns " + host_agent::NetnsNameFor(id));
      }
      if (std::filesystem::exists(state + "/runtime/" + id)) out.push_back(node + ": runc container " + id);
      if (!CgroupMembers(id).empty()) out.push_back(node + ": processes in the cgroup of " + id);
      if (std::filesystem::exists(state + "/workloads/" + id)) out.push_back(node + ": workload dir " + id);
    }
    CommandResult ports = Ctl("netd/" + node, {"call", "strongroom.v1.Netd/ListPorts", "{}"});
    v1::ListPortsResponse port_list;
    if (ports.exit_code != 0 || !ParseCtlJson(ports.output, &port_list).ok() || port_list.ports_size() > 0) {
      out.push_back(node + ": netd ports: " + ports.output);
    }
    CommandResult ovs_ports = OnHost(node, {"/usr/bin/ovs-vsctl", "--db=unix:" + dir_ + "/" + node + "/ovs/db.sock",
                                            "list-ports", kBridge});
    if (absl::StripAsciiWhitespace(ovs_ports.output) != "uplink") {
      out.push_back(node + ": br-secure ports: " + ovs_ports.output);
    }
    for (const std::string& m : host_agent::MountsUnder(state)) {
      // host-agent keeps its workloads directory a private bind mount (so no other mount namespace pins a
      // workload's mounts); it is not a workload's.
      if (m != state + "/workloads") out.push_back(node + ": mount " + m);
    }
    for (const auto& [dev, file] : host_agent::LoopsBackedUnder(state + "/")) {
      out.push_back(node + ": loop " + dev + " -> " + file);
    }
    for (const auto& [domain, pid] : LiveQemus(LibvirtDir(node))) {
      out.push_back(absl::StrCat(node, ": VM ", domain, " (qemu ", pid, ")"));
    }
  }
  CommandResult nodes = Local("", {"sinfo", "-h", "-N", "-o", "%N %T"});
  if (!absl::StripAsciiWhitespace(nodes.output).empty()) out.push_back("Local dynamic nodes: " + nodes.output);
  // Processes whose root is a workload's rootfs (anything left of a container).
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/proc", ec)) {
    const std::string name = e.path().filename();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::error_code link_ec;
    const std::string root = std::filesystem::read_symlink(e.path() / "root", link_ec).string();
    if (!link_ec && absl::StartsWith(root, dir_ + "/")) out.push_back("process " + name + " rooted at " + root);
  }
  return out;
}

}  // namespace strongroom::e2e
