#include "tests/host_agent/test_env.h"

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "services/host_agent/container/netns.h"
#include "services/host_agent/mounts.h"

namespace strongroom::host_agent::testing {

std::string Id(const std::string& base) { return absl::StrCat(base, "-", absl::Hex(getpid())); }

std::string MakeTempDir(const std::string& prefix) {
  std::string tmpl = "/tmp/" + prefix + "-XXXXXX";
  char* d = mkdtemp(tmpl.data());
  if (d == nullptr) return std::string();
  chmod(d, 0711);  // container root (host uid 100000) must traverse to its rootfs
  return std::string(d);
}

void RemoveTree(const std::string& dir) {
  if (dir.empty()) return;
  for (const std::string& m : MountsUnder(dir)) (void)Unmount(m);
  for (const auto& [dev, file] : LoopsBackedUnder(dir + "/")) (void)DetachLoop(dev, file);
  std::error_code ec;
  if (MountsUnder(dir).empty()) std::filesystem::remove_all(dir, ec);
}

absl::Status BuildBusyboxImage(const std::string& image_root, const std::string& name,
                               const std::string& script) {
  namespace fs = std::filesystem;
  const std::string root = image_root + "/" + name;
  std::error_code ec;
  for (const char* d : {"bin", "sbin", "usr/bin", "usr/libexec/strongroom", "proc", "sys", "dev", "run",
                        "tmp", "root", "etc", "var"}) {
    fs::create_directories(root + "/" + d, ec);
  }
  fs::copy_file("/bin/busybox", root + "/bin/busybox", fs::copy_options::overwrite_existing, ec);
  if (ec) return absl::InternalError("copy busybox: " + ec.message());
  for (const char* applet :
       {"sh",   "sleep", "id", "cat",      "grep", "echo",  "dd", "sync", "ls",   "touch", "mkdir",
        "head", "wc",    "ip", "hostname", "true", "false", "nc", "stat", "kill", "ps",    "rm"}) {
    fs::create_symlink("busybox", root + "/bin/" + applet, ec);
  }
  std::ofstream(root + "/etc/passwd") << "root:x:0:0:root:/root:/bin/sh\n";
  std::ofstream(root + "/etc/group") << "root:x:0:\n";
  const std::string entry = root + "/usr/libexec/strongroom/entrypoint";
  std::ofstream(entry) << script;
  chmod(entry.c_str(), 0755);
  chmod((root + "/tmp").c_str(), 01777);
  for (const auto& e : fs::recursive_directory_iterator(root, ec)) {
    lchown(e.path().c_str(), kUidBase, kUidBase);
  }
  lchown(root.c_str(), kUidBase, kUidBase);
  return absl::OkStatus();
}

std::string ProbeScript() {
  return "#!/bin/sh\n"
         "trap 'echo term >> /probe; exit 0' TERM\n"
         "{ echo \"uid=$(id -u)\"; grep -E '^(CapEff|CapBnd|CapPrm|NoNewPrivs|Seccomp):' /proc/self/status;\n"
         "  echo \"hostname=$(hostname)\"; ip -o link; } > /probe 2>&1\n"
         "echo marker-from-inside > /marker\n"
         "sync\n"
         "echo ready >> /probe\n"
         "sleep 100000 &\n"
         "wait\n";
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string ProcStatusField(pid_t pid, const std::string& field) {
  for (absl::string_view line : absl::StrSplit(ReadFile(absl::StrCat("/proc/", pid, "/status")), '\n')) {
    if (absl::StartsWith(line, field + ":")) {
      return std::string(absl::StripAsciiWhitespace(line.substr(field.size() + 1)));
    }
  }
  return "";
}

std::vector<std::string> Leftovers(const std::string& state_dir, const std::string& id,
                                   const std::string& runc_root) {
  std::vector<std::string> out;
  for (const std::string& m : MountsUnder(state_dir)) {
    if (m == state_dir + "/workloads")
      continue;  // the agent's private anchor (EnsurePrivateMountPoint), not a workload's
    out.push_back("mount " + m);
  }
  for (const auto& [dev, file] : LoopsBackedUnder(state_dir + "/"))
    out.push_back("loop " + dev + " -> " + file);
  if (access(NetnsPath(NetnsNameFor(id)).c_str(), F_OK) == 0) out.push_back("netns " + NetnsNameFor(id));
  if (access((state_dir + "/workloads/" + id).c_str(), F_OK) == 0) out.push_back("dir workloads/" + id);
  if (access(("/dev/mapper/strongroom-" + id).c_str(), F_OK) == 0) out.push_back("dm strongroom-" + id);
  if (access((runc_root + "/" + id).c_str(), F_OK) == 0) out.push_back("runc container " + id);
  // The workload's cgroup (runc: cgroupsPath /strongroom-<id>, in every v1 controller and the unified tree).
  std::error_code cg_ec;
  for (const auto& c : std::filesystem::directory_iterator("/sys/fs/cgroup", cg_ec)) {
    if (std::filesystem::exists(c.path() / ("strongroom-" + id)))
      out.push_back("cgroup " + c.path().string());
  }
  if (std::filesystem::exists("/sys/fs/cgroup/strongroom-" + id)) out.push_back("cgroup (unified)");
  // Any process still referring to the state dir (a `runc run` supervisor, a container process).
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/proc", ec)) {
    const std::string name = e.path().filename();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    const std::string cmdline = ReadFile(e.path().string() + "/cmdline");
    if (cmdline.find(state_dir + "/") != std::string::npos) out.push_back("process " + name + " " + cmdline);
  }
  return out;
}

}  // namespace strongroom::host_agent::testing
