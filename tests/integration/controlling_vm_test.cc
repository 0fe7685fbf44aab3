// The controlling VM's daemons owned by the real vm-controller (issue 14, docs/IPSEC.md "The controlling VM's
// daemons"): with `enrollment { ipsec { } nfs { } }` it starts charon (its own mount namespace, private /run,
// configured only over VICI) and nfs-ganesha, a real handover (ProvisionWorkload from backend's certificate
// over mTLS) loads the workload's connection into that charon and grants its address on that ganesha, the
// job's end removes both, and stopping vm-controller leaves no charon, ganesha, mount namespace or bypass
// rule. As in workload_enroll_test, only the Local Slurm is absent: slurmd never registers, so
// ProvisionWorkload fails after its registration timeout and the job ends.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/enrollment_ticket.h"
#include "common/vici.h"
#include "gtest/gtest.h"
#include "tests/integration/handover_job.h"
#include "tests/integration/stack_fixture.h"
#include "tests/rig/files.h"

namespace strongroom::testing {
namespace {

constexpr char kHost[] = "vm-controller-vm";  // extra hosts are "<binary>-<suffix>" (Stack::CtlAs)
constexpr char kVmIp[] = "198.51.100.40";
constexpr char kWorkload[] = "wl-ctlvm-1";
constexpr char kJob[] = "gj-ctlvm-1";
constexpr char kToken[] = "tok-ctlvm-0001";
constexpr char kWorkloadIp[] = "198.51.100.41";

// The "pid" of the first log line with `message` (vm-controller's JSON log).
pid_t PidFromLog(const std::string& log, const std::string& message) {
  for (absl::string_view line : absl::StrSplit(log, '\n')) {
    if (!absl::StrContains(line, absl::StrCat("\"", message, "\""))) continue;
    const size_t at = line.find("\"pid\":\"");
    if (at == absl::string_view::npos) continue;
    absl::string_view rest = line.substr(at + 7);
    int pid = 0;
    if (absl::SimpleAtoi(rest.substr(0, rest.find('"')), &pid)) return pid;
  }
  return 0;
}

std::string MountNs(pid_t pid) {
  std::error_code ec;
  return std::filesystem::read_symlink(absl::StrCat("/proc/", pid, "/ns/mnt"), ec).string();
}

std::string ParentOf(pid_t pid) {
  for (absl::string_view line :
       absl::StrSplit(ReadFileOrEmpty(absl::StrCat("/proc/", pid, "/status")), '\n')) {
    if (absl::StartsWith(line, "PPid:")) return std::string(absl::StripAsciiWhitespace(line.substr(5)));
  }
  return "";
}

// Every process in mount namespace `ns`.
std::vector<std::string> ProcessesIn(const std::string& ns) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/proc", ec)) {
    const std::string name = entry.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::error_code ignored;
    if (std::filesystem::read_symlink(entry.path() / "ns/mnt", ignored).string() == ns) out.push_back(name);
  }
  return out;
}

class ControllingVmTest : public StackTest {
 protected:
  std::string Dir(const std::string& name) { return stack().dir() + "/" + name; }

  // The connections loaded in the VM's charon, by name, with their remote_addrs.
  std::map<std::string, std::string> Connections() {
    std::map<std::string, std::string> out;
    absl::StatusOr<ViciClient> vici = ViciClient::Connect(Dir("ctlvm-charon/charon.vici"), absl::Seconds(10));
    if (!vici.ok()) {
      out["<error>"] = vici.status().ToString();
      return out;
    }
    absl::StatusOr<std::vector<ViciMessage>> conns = vici->Stream("list-conns", ViciMessage(), "list-conn");
    if (!conns.ok()) {
      out["<error>"] = conns.status().ToString();
      return out;
    }
    for (const ViciMessage& m : *conns) {
      for (const auto& [name, conn] : m.Sections()) {
        const std::vector<std::string>* remote = conn->List("remote_addrs");
        out[name] = remote != nullptr && !remote->empty() ? (*remote)[0] : "";
      }
    }
    return out;
  }

  // nfs_probe.py from the workload's host (plain NFSv4, no tunnel: the grant is by source address).
  std::string Probe() {
    absl::StatusOr<Rig::ExecResult> r = stack().rig().Exec(
        "wl-ctlvm", {"/usr/bin/python3", SR_NFS_PROBE, kVmIp, "export/proj-a/data.txt"}, absl::Seconds(30));
    return r.ok() ? r->output : r.status().ToString();
  }
  // ganesha applies a SIGHUP asynchronously: the probe's answer once it contains (or, `negate`, lacks)
  // `want`.
  std::string EventuallyProbe(const std::string& want, bool negate) {
    std::string got;
    for (int i = 0; i < 100; ++i) {
      got = Probe();
      if (absl::StrContains(got, want) != negate) return got;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return got;
  }

  std::string Audit() {
    CtlResult r =
        stack().Ctl("backend", Credential::kOperator,
                    {"audit", "query", "--object", absl::StrCat("workload/", kWorkload), "--limit", "1000"});
    return r.output;
  }
  // Backend's audit records of the workload once they contain every one of `actions`.
  std::string EventuallyAudited(const std::vector<std::string>& actions) {
    std::string audit;
    const absl::Time deadline = absl::Now() + absl::Seconds(20);
    while (absl::Now() < deadline) {
      audit = Audit();
      bool all = true;
      for (const std::string& a : actions) all = all && absl::StrContains(audit, a);
      if (all) return audit;
      std::this_thread::sleep_for(std::chrono::milliseconds(250));
    }
    return audit;
  }
};

TEST_F(ControllingVmTest, VmControllerRunsCharonAndGaneshaGrantsAtHandoverRevokesAtTheEndAndStopsThem) {
  Stack& s = stack();
  ASSERT_TRUE(s.rig().AddHost(kHost, absl::StrCat(kVmIp, "/24")).ok());
  ASSERT_TRUE(s.rig().AddHost("wl-ctlvm", absl::StrCat(kWorkloadIp, "/24")).ok());
  const std::string share = Dir("ctlvm-share");
  ASSERT_TRUE(std::filesystem::create_directories(share));
  std::ofstream(share + "/data.txt") << "project data\n";
  s.SetEnrollmentExtra(
      kHost, absl::StrCat("  ipsec {\n    state_dir: \"", Dir("ctlvm-charon"), "\"\n    address: \"", kVmIp,
                          "\"\n  }\n  nfs {\n    state_dir: \"", Dir("ctlvm-ganesha"),
                          "\"\n    share_path: \"", share, "\"\n    export_path: \"/export/proj-a\"\n  }\n"));
  absl::StatusOr<pid_t> daemon = s.StartDaemonOn("vm-controller", kHost, 1);
  ASSERT_TRUE(daemon.ok()) << daemon.status();

  // Both are vm-controller's children; charon in its own mount namespace with its private /run.
  const std::string log = s.DaemonLog(kHost);
  const pid_t charon = PidFromLog(log, "charon started");
  const pid_t ganesha = PidFromLog(log, "nfs-ganesha started");
  ASSERT_GT(charon, 1) << log;
  ASSERT_GT(ganesha, 1) << log;
  EXPECT_EQ(ParentOf(charon), absl::StrCat(*daemon));
  EXPECT_EQ(ParentOf(ganesha), absl::StrCat(*daemon));
  EXPECT_TRUE(absl::StrContains(ReadFileOrEmpty(absl::StrCat("/proc/", charon, "/cmdline")), "charon"));
  const std::string charon_ns = MountNs(charon);
  ASSERT_FALSE(charon_ns.empty());
  EXPECT_NE(charon_ns, MountNs(*daemon));
  EXPECT_TRUE(absl::StrContains(ReadFileOrEmpty(absl::StrCat("/proc/", charon, "/mountinfo")), " /run rw,") &&
              absl::StrContains(ReadFileOrEmpty(absl::StrCat("/proc/", charon, "/mountinfo")),
                                "strongroom-charon-run"))
      << ReadFileOrEmpty(absl::StrCat("/proc/", charon, "/mountinfo"));
  EXPECT_FALSE(absl::StrContains(ReadFileOrEmpty("/proc/self/mountinfo"), "strongroom-charon-run"));
  // Configured only through VICI, from the generated strongswan.conf.
  EXPECT_TRUE(absl::StrContains(ReadFileOrEmpty(absl::StrCat("/proc/", charon, "/environ")),
                                absl::StrCat("STRONGSWAN_CONF=", Dir("ctlvm-charon/strongswan.conf"))));

  EXPECT_EQ(Connections().count(kWorkload), 0u);
  EXPECT_FALSE(absl::StrContains(ReadFileOrEmpty(Dir("ctlvm-ganesha/ganesha.conf")), kWorkloadIp));
  EXPECT_FALSE(absl::StrContains(Probe(), "status=0")) << "exported before the handover";

  // The local job as CreateGlobalJob leaves it (no Local Slurm runs here).
  ASSERT_EQ(InsertJobAwaitingHandover(Dir(absl::StrCat(kHost, "-state/local-jobs.db")), kWorkload, kJob,
                                      kToken, 4343),
            absl::OkStatus());
  const std::string ticket = *GenerateEnrollmentTicket();
  const std::string provision = absl::StrCat(
      R"({"globalJobId":")", kJob, R"(","workloadId":")", kWorkload,
      R"(","local":{"localCluster":"local","localJobId":4343,"token":")", kToken,
      R"("},"workloadAddresses":[")", kWorkloadIp, R"("],"nodeName":")", kWorkload,
      R"(","registrationTimeout":"10s","enrollmentTicketSha256":")", EnrollmentTicketSha256(ticket), R"("})");
  BackgroundProvision provisioning(s, kHost, provision);
  // The handover has happened once the job is PROVISIONING (Expect and the data path come first).
  ASSERT_TRUE(provisioning.WaitHandedOver(kToken))
      << "ProvisionWorkload did not hand the workload over" << s.DaemonLog(kHost);

  // The workload's connection is in the real charon (only its address), its address granted on the real
  // ganesha.
  std::map<std::string, std::string> conns = Connections();
  ASSERT_EQ(conns.count(kWorkload), 1u) << (conns.count("<error>") ? conns["<error>"] : "no connection");
  EXPECT_EQ(conns[kWorkload], kWorkloadIp);
  EXPECT_TRUE(absl::StrContains(ReadFileOrEmpty(Dir("ctlvm-ganesha/ganesha.conf")),
                                absl::StrCat("Clients = ", kWorkloadIp, ";")))
      << ReadFileOrEmpty(Dir("ctlvm-ganesha/ganesha.conf"));
  const std::string granted = EventuallyProbe("status=0 size=13", false);
  EXPECT_TRUE(absl::StrContains(granted, "status=0 size=13")) << granted;

  // slurmd never registers: ProvisionWorkload fails, the job ends, and nothing of the workload stays.
  const CtlResult& provisioned = provisioning.Finish();
  EXPECT_NE(provisioned.exit_code, 0) << provisioned.output;
  const absl::Time end_deadline = absl::Now() + absl::Seconds(60);
  while (absl::Now() < end_deadline &&
         (Connections().count(kWorkload) != 0 ||
          absl::StrContains(ReadFileOrEmpty(Dir("ctlvm-ganesha/ganesha.conf")), kWorkloadIp))) {
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
  conns = Connections();
  EXPECT_EQ(conns.count(kWorkload), 0u) << "the ended workload's connection is still loaded";
  EXPECT_EQ(conns.count("<error>"), 0u) << conns["<error>"];
  EXPECT_FALSE(absl::StrContains(ReadFileOrEmpty(Dir("ctlvm-ganesha/ganesha.conf")), kWorkloadIp));
  const std::string revoked = EventuallyProbe("status=0", true);
  EXPECT_FALSE(absl::StrContains(revoked, "status=0")) << revoked;

  // Each step is in backend's audit chain.
  const std::string audit =
      EventuallyAudited({"ipsec/LoadConnection", "nfs/Grant", "ipsec/UnloadConnection", "nfs/Revoke"});
  for (const char* action : {"ipsec/LoadConnection", "nfs/Grant", "ipsec/UnloadConnection", "nfs/Revoke"})
    EXPECT_TRUE(absl::StrContains(audit, action)) << action << "\n" << audit;

  // Stopping vm-controller stops both (only them) and leaves no namespace or bypass rule of theirs.
  ASSERT_TRUE(s.rig().Kill(*daemon, SIGTERM).ok());
  ASSERT_TRUE(s.WaitForExit(*daemon, absl::Seconds(30))) << s.DaemonLog(kHost);
  const std::string final_log = s.DaemonLog(kHost);
  EXPECT_TRUE(absl::StrContains(final_log, "\"charon stopped\"")) << final_log;
  EXPECT_TRUE(absl::StrContains(final_log, "\"nfs-ganesha stopped\"")) << final_log;
  EXPECT_FALSE(absl::StrContains(final_log, "a process of the controlling VM exited")) << final_log;
  for (pid_t pid : {charon, ganesha}) {
    const std::string cmdline = ReadFileOrEmpty(absl::StrCat("/proc/", pid, "/cmdline"));
    EXPECT_FALSE(absl::StrContains(cmdline, "charon") || absl::StrContains(cmdline, "ganesha"))
        << pid << " still runs: " << cmdline;
  }
  EXPECT_TRUE(ProcessesIn(charon_ns).empty()) << "charon's mount namespace still has processes";
  absl::StatusOr<Rig::ExecResult> rules =
      s.rig().Exec(kHost, {"/usr/sbin/ip", "-4", "rule", "show"}, absl::Seconds(10));
  ASSERT_TRUE(rules.ok()) << rules.status();
  EXPECT_FALSE(absl::StrContains(rules->output, "210:")) << rules->output;
  EXPECT_FALSE(absl::StrContains(rules->output, "211:")) << rules->output;
}

// Supervision (docs/IPSEC.md): a daemon-run process that dies is logged and audited, and every later handover
// is refused naming it; jobs can still end; stopping vm-controller stops the one still running.
TEST_F(ControllingVmTest, WhenGaneshaDiesHandoversAreRefusedNamingIt) {
  Stack& s = stack();
  const std::string host = "vm-controller-dies";
  ASSERT_TRUE(s.rig().AddHost(host, "198.51.100.43/24").ok());
  const std::string share = Dir("dies-share");
  ASSERT_TRUE(std::filesystem::create_directories(share));
  s.SetEnrollmentExtra(
      host,
      absl::StrCat("  ipsec {\n    state_dir: \"", Dir("dies-charon"),
                   "\"\n    address: \"198.51.100.43\"\n  }\n  nfs {\n    state_dir: \"", Dir("dies-ganesha"),
                   "\"\n    share_path: \"", share, "\"\n    export_path: \"/export/proj-a\"\n  }\n"));
  absl::StatusOr<pid_t> daemon = s.StartDaemonOn("vm-controller", host, 1);
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  const pid_t charon = PidFromLog(s.DaemonLog(host), "charon started");
  const pid_t ganesha = PidFromLog(s.DaemonLog(host), "nfs-ganesha started");
  ASSERT_GT(charon, 1);
  ASSERT_GT(ganesha, 1);
  ASSERT_EQ(ParentOf(ganesha),
            absl::StrCat(*daemon));  // vm-controller's child, started by this test's daemon
  ASSERT_EQ(kill(ganesha, SIGKILL), 0);
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (absl::Now() < deadline &&
         !absl::StrContains(s.DaemonLog(host), "a process of the controlling VM exited"))
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_TRUE(absl::StrContains(s.DaemonLog(host),
                                absl::StrCat("nfs-ganesha (pid ", ganesha, ") exited with status 137")))
      << s.DaemonLog(host);

  ASSERT_EQ(InsertJobAwaitingHandover(Dir(host + "-state/local-jobs.db"), "wl-ctlvm-2", "gj-ctlvm-2",
                                      "tok-ctlvm-0002", 4444),
            absl::OkStatus());
  CtlResult refused =
      s.Ctl(host, Credential::kBackend,
            {"call", "strongroom.v1.VmController/ProvisionWorkload",
             absl::StrCat(
                 R"({"globalJobId":"gj-ctlvm-2","workloadId":"wl-ctlvm-2","local":{"localCluster":"local",)",
                 R"("localJobId":4444,"token":"tok-ctlvm-0002"},"workloadAddresses":["198.51.100.44"],)",
                 R"("nodeName":"wl-ctlvm-2","registrationTimeout":"10s","enrollmentTicketSha256":")",
                 EnrollmentTicketSha256(*GenerateEnrollmentTicket()), R"("})")});
  EXPECT_EQ(refused.exit_code, 9) << refused.output;  // FAILED_PRECONDITION
  EXPECT_TRUE(absl::StrContains(refused.output, absl::StrCat("the controlling VM's nfs-ganesha (pid ",
                                                             ganesha, ") exited with status 137")))
      << refused.output;

  CtlResult audit;
  const absl::Time audit_deadline = absl::Now() + absl::Seconds(20);
  do {
    audit = s.Ctl("backend", Credential::kOperator,
                  {"audit", "query", "--object", "process/nfs-ganesha", "--limit", "100"});
    if (absl::StrContains(audit.output, "controlling-vm/ProcessExited")) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  } while (absl::Now() < audit_deadline);
  EXPECT_TRUE(absl::StrContains(audit.output, "controlling-vm/ProcessExited")) << audit.output;

  const std::string charon_ns = MountNs(charon);
  ASSERT_TRUE(s.rig().Kill(*daemon, SIGTERM).ok());
  ASSERT_TRUE(s.WaitForExit(*daemon, absl::Seconds(30))) << s.DaemonLog(host);
  EXPECT_TRUE(absl::StrContains(s.DaemonLog(host), "\"charon stopped\"")) << s.DaemonLog(host);
  EXPECT_FALSE(absl::StrContains(ReadFileOrEmpty(absl::StrCat("/proc/", charon, "/cmdline")), "charon"));
  EXPECT_TRUE(ProcessesIn(charon_ns).empty());
}

// A vm-controller killed without its shutdown (SIGKILL) leaves no charon or ganesha running: both get the
// parent-death signal (common/supervised_process.h).
TEST_F(ControllingVmTest, KillingVmControllerTakesCharonAndGaneshaWithIt) {
  Stack& s = stack();
  const std::string host = "vm-controller-killed";
  ASSERT_TRUE(s.rig().AddHost(host, "198.51.100.45/24").ok());
  const std::string share = Dir("killed-share");
  ASSERT_TRUE(std::filesystem::create_directories(share));
  s.SetEnrollmentExtra(host,
                       absl::StrCat("  ipsec {\n    state_dir: \"", Dir("killed-charon"),
                                    "\"\n    address: \"198.51.100.45\"\n  }\n  nfs {\n    state_dir: \"",
                                    Dir("killed-ganesha"), "\"\n    share_path: \"", share,
                                    "\"\n    export_path: \"/export/proj-a\"\n  }\n"));
  absl::StatusOr<pid_t> daemon = s.StartDaemonOn("vm-controller", host, 1);
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  const pid_t charon = PidFromLog(s.DaemonLog(host), "charon started");
  const pid_t ganesha = PidFromLog(s.DaemonLog(host), "nfs-ganesha started");
  ASSERT_GT(charon, 1);
  ASSERT_GT(ganesha, 1);
  const std::string charon_ns = MountNs(charon);
  ASSERT_TRUE(s.rig().Kill(*daemon, SIGKILL).ok());
  ASSERT_TRUE(s.WaitForExit(*daemon, absl::Seconds(10)));
  auto running = [](pid_t pid, const char* name) {
    return absl::StrContains(ReadFileOrEmpty(absl::StrCat("/proc/", pid, "/cmdline")), name);
  };
  const absl::Time deadline = absl::Now() + absl::Seconds(15);
  while (absl::Now() < deadline &&
         (running(charon, "charon") || running(ganesha, "ganesha") || !ProcessesIn(charon_ns).empty()))
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_FALSE(running(charon, "charon"));
  EXPECT_FALSE(running(ganesha, "ganesha"));
  EXPECT_TRUE(ProcessesIn(charon_ns).empty());
}

TEST_F(ControllingVmTest, ABinaryThatDoesNotExistOrFailsIsAStartupErrorNamingItsFieldAndLeavesNothing) {
  Stack& s = stack();
  ASSERT_TRUE(s.rig().AddHost("vm-controller-bad", "198.51.100.42/24").ok());
  const std::string share = Dir("ctlvm-bad-share");
  std::filesystem::create_directories(share);
  s.SetEnrollmentExtra("vm-controller-bad",
                       absl::StrCat("  ipsec {\n    charon_binary: \"/nonexistent/charon\"\n"
                                    "    state_dir: \"",
                                    Dir("bad-charon"), "\"\n    address: \"198.51.100.42\"\n  }\n"));
  absl::StatusOr<pid_t> charonless = s.StartDaemonOn("vm-controller", "vm-controller-bad", 1);
  EXPECT_FALSE(charonless.ok());
  EXPECT_TRUE(absl::StrContains(s.DaemonLog("vm-controller-bad"),
                                "enrollment.ipsec.charon_binary: /nonexistent/charon: no such file"))
      << s.DaemonLog("vm-controller-bad");
  s.SetEnrollmentExtra("vm-controller-bad",
                       absl::StrCat("  nfs {\n    ganesha_binary: \"/nonexistent/ganesha.nfsd\"\n"
                                    "    state_dir: \"",
                                    Dir("bad-ganesha"), "\"\n    share_path: \"", share,
                                    "\"\n    export_path: \"/export/proj-a\"\n  }\n"));
  absl::StatusOr<pid_t> ganeshaless = s.StartDaemonOn("vm-controller", "vm-controller-bad", 1);
  EXPECT_FALSE(ganeshaless.ok());
  EXPECT_TRUE(absl::StrContains(s.DaemonLog("vm-controller-bad"),
                                "enrollment.nfs.ganesha_binary: /nonexistent/ganesha.nfsd: no such file"))
      << s.DaemonLog("vm-controller-bad");
  EXPECT_FALSE(std::filesystem::exists(Dir("bad-charon")));  // nothing was started

  // A ganesha that exits at once: vm-controller does not start, naming it, and stops the charon it had
  // started.
  s.SetEnrollmentExtra(
      "vm-controller-bad",
      absl::StrCat("  ipsec {\n    state_dir: \"", Dir("bad-charon"),
                   "\"\n    address: \"198.51.100.42\"\n  }\n  nfs {\n    ganesha_binary: \"/bin/false\"\n"
                   "    state_dir: \"",
                   Dir("bad-ganesha"), "\"\n    share_path: \"", share,
                   "\"\n    export_path: \"/export/proj-a\"\n  }\n"));
  absl::StatusOr<pid_t> failing = s.StartDaemonOn("vm-controller", "vm-controller-bad", 1);
  EXPECT_FALSE(failing.ok());
  const std::string log = s.DaemonLog("vm-controller-bad");
  EXPECT_TRUE(
      absl::StrContains(log, "enrollment.nfs (vm-controller's nfs-ganesha): ganesha exited before it served"))
      << log;
  const pid_t charon = PidFromLog(log, "charon started");
  ASSERT_GT(charon, 1) << log;
  EXPECT_TRUE(absl::StrContains(log, "\"charon stopped\"")) << log;
  EXPECT_FALSE(absl::StrContains(ReadFileOrEmpty(absl::StrCat("/proc/", charon, "/cmdline")), "charon"));
}

}  // namespace
}  // namespace strongroom::testing
