// Enrollment end to end at the daemon level (issue 14, docs/IPSEC.md "Enrollment"): the real vm-controller
// with its enrollment listener, a real handover (ProvisionWorkload from backend's certificate over mTLS), and
// the real strongroom-enroll run from a rig host that has the workload's address. Only the Local Slurm is
// absent: the local job is recorded in vm-controller's store as CreateGlobalJob would leave it, and slurmd
// never registers, so ProvisionWorkload ends with DEADLINE_EXCEEDED after its registration timeout; the
// workload enrolls during that window (as a real one does: it enrolls before it starts slurmd), and the end
// of the job tombstones it afterwards.
#include <sys/stat.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/enrollment_ticket.h"
#include "gtest/gtest.h"
#include "tests/integration/handover_job.h"
#include "tests/integration/stack_fixture.h"
#include "tests/rig/files.h"

namespace strongroom::testing {
namespace {

constexpr int kPermissionDenied = 7;
constexpr int kFailedPrecondition = 9;

constexpr char kWorkload[] = "wl-enroll-2";
constexpr char kJob[] = "gj-enroll-2";
constexpr char kToken[] = "tok-enroll-0002";
constexpr char kWorkloadIp[] = "198.51.100.60";
constexpr char kIntruderIp[] = "198.51.100.61";

class WorkloadEnrollTest : public StackTest {
 protected:
  // Runs strongroom-enroll on rig host `host`.
  CtlResult Enroll(const std::string& host, std::vector<std::string> args) {
    // Refusals are what these runs check: no waiting for a handover that is not coming.
    args.insert(args.begin(), {SR_ENROLL_BIN, "--handover-wait", "0"});
    absl::StatusOr<Rig::ExecResult> r = stack().rig().Exec(host, args, absl::Seconds(30));
    if (!r.ok()) return {-1, r.status().ToString()};
    return {r->exit_code, r->output};
  }

  // What host-agent puts into the workload's bundle (services/host_agent/provisioning.cc).
  std::string Bundle(const std::string& ticket) {
    return absl::StrCat(
        "{\n \"localCluster\": \"local\",\n \"nodeName\": \"", kWorkload, "\",\n \"enrollmentAddress\": \"",
        stack().EnrollmentAddress(), "\",\n \"globalJobId\": \"", kJob,
        "\",\n \"project\": \"proj-a\",\n \"trustDomain\": \"", Stack::kTrustDomain,
        "\",\n \"deploymentCaPem\": ", JsonString(ReadFileOrEmpty(stack().dir() + "/pki/ca.pem")),
        ",\n \"enrollmentTicket\": \"", ticket, "\"\n}\n");
  }

  std::string Write(const std::string& name, const std::string& content) {
    const std::string path = stack().dir() + "/" + name;
    std::ofstream(path) << content;
    return path;
  }

  // The backend's audit records about the workload (vm-controller ships them there), once `action` with
  // `outcome` appeared at least `count` times.
  std::string AuditOfWorkload(const std::string& action_outcome, int count) {
    const absl::Time deadline = absl::Now() + absl::Seconds(20);
    CtlResult r;
    while (absl::Now() < deadline) {
      r = stack().Ctl(
          "backend", Credential::kOperator,
          {"audit", "query", "--object", absl::StrCat("workload/", kWorkload), "--limit", "1000"});
      int seen = 0;
      for (size_t at = r.output.find(action_outcome); at != std::string::npos;
           at = r.output.find(action_outcome, at + 1)) {
        ++seen;
      }
      if (r.exit_code == 0 && seen >= count) return r.output;
      std::this_thread::sleep_for(std::chrono::milliseconds(250));
    }
    ADD_FAILURE() << "fewer than " << count << " \"" << action_outcome << "\" records: " << r.output;
    return r.output;
  }
};

TEST_F(WorkloadEnrollTest, TheRealClientEnrollsOnceWithItsTicketAndEverythingElseIsRefusedAndAudited) {
  Stack& s = stack();
  ASSERT_TRUE(s.rig().AddHost("wl-enroll", absl::StrCat(kWorkloadIp, "/24")).ok());
  ASSERT_TRUE(s.rig().AddHost("intruder", absl::StrCat(kIntruderIp, "/24")).ok());

  // The local job as CreateGlobalJob leaves it (no Local Slurm runs here).
  ASSERT_EQ(InsertJobAwaitingHandover(s.VmControllerStateDb(), kWorkload, kJob, kToken, 4242),
            absl::OkStatus());

  // host-agent's part: the ticket (into the bundle only) and its hash (reported, forwarded by backend).
  const std::string ticket = *GenerateEnrollmentTicket();
  const std::string wrong_ticket = *GenerateEnrollmentTicket();
  const std::string bundle = Write("bundle.json", Bundle(ticket));
  const std::string wrong_ticket_file = Write("wrong-ticket", wrong_ticket + "\n");
  const std::string munge_key = ReadFileOrEmpty(s.MungeKeyFile());
  ASSERT_FALSE(munge_key.empty());

  // backend's ProvisionWorkload, which blocks until slurmd registers (never, here: 10 s, plus the Slurm CLI
  // timeouts of the cleanup that follows).
  const std::string provision = absl::StrCat(
      R"({"globalJobId":")", kJob, R"(","workloadId":")", kWorkload,
      R"(","local":{"localCluster":"local","localJobId":4242,"token":")", kToken,
      R"("},"workloadAddresses":[")", kWorkloadIp, R"("],"nodeName":")", kWorkload,
      R"(","registrationTimeout":"10s","enrollmentTicketSha256":")", EnrollmentTicketSha256(ticket), R"("})");
  BackgroundProvision provisioning(s, "vm-controller", provision);
  // The handover has happened once the job is PROVISIONING (Expect runs first).
  ASSERT_TRUE(provisioning.WaitHandedOver(kToken)) << "ProvisionWorkload did not hand the workload over";

  const std::string out = s.dir() + "/enrolled";
  const std::string intruder_out = s.dir() + "/intruder-out";
  std::filesystem::create_directories(out);
  std::filesystem::create_directories(intruder_out);
  // The stack's certificates name the daemon ("vm-controller"), not the cluster ("local") as in production.
  const std::vector<std::string> args = {"--bundle",  bundle,          "--workload-id", kWorkload,
                                         "--cluster", "vm-controller", "--out",         out};

  // The client checks whom it reaches: with the bundle's cluster the stack's vm-controller is not it.
  CtlResult not_it = Enroll("wl-enroll", {"--bundle", bundle, "--workload-id", kWorkload, "--out", out});
  EXPECT_EQ(not_it.exit_code, 1) << not_it.output;
  EXPECT_TRUE(absl::StrContains(not_it.output, "expected spiffe://strongroom.test/vm-controller/local"))
      << not_it.output;

  // A wrong ticket, from the right address: refused, nothing written, the slot still there.
  std::vector<std::string> wrong = args;
  wrong.insert(wrong.end(), {"--ticket-file", wrong_ticket_file});
  CtlResult bad = Enroll("wl-enroll", wrong);
  EXPECT_EQ(bad.exit_code, 1) << bad.output;
  EXPECT_TRUE(absl::StrContains(bad.output, "PERMISSION_DENIED")) << bad.output;
  EXPECT_TRUE(absl::StrContains(bad.output, "not this workload's ticket")) << bad.output;
  EXPECT_FALSE(std::filesystem::exists(out + "/key.pem"));

  // No ticket at all (straight at the listener, past the client's own check).
  const std::string csr_request = absl::StrCat(R"({"workloadId":")", kWorkload, R"(","globalJobId":")", kJob,
                                               R"(","project":"proj-a","csrPem":"x"})");
  CtlResult missing = s.CtlFrom("wl-enroll", s.EnrollmentAddress(), "",
                                {"--server-role", "vm-controller", "call",
                                 "strongroom.v1.WorkloadEnrollment/EnrollWorkload", csr_request});
  EXPECT_EQ(missing.exit_code, kPermissionDenied) << missing.output;
  EXPECT_TRUE(absl::StrContains(missing.output, "enrollment_ticket: missing")) << missing.output;
  // The client refuses to run without one.
  CtlResult no_ticket = Enroll(
      "wl-enroll", {"--target", s.EnrollmentAddress(), "--ca", s.dir() + "/pki/ca.pem", "--trust-domain",
                    Stack::kTrustDomain, "--cluster", "vm-controller", "--workload-id", kWorkload,
                    "--global-job-id", kJob, "--project", "proj-a", "--out", out});
  EXPECT_EQ(no_ticket.exit_code, 2) << no_ticket.output;
  EXPECT_TRUE(absl::StrContains(no_ticket.output, "enrollment ticket")) << no_ticket.output;

  // The right ticket from another address: refused, the slot still there.
  std::vector<std::string> elsewhere = {"--bundle",  bundle,          "--workload-id", kWorkload,
                                        "--cluster", "vm-controller", "--out",         intruder_out};
  CtlResult stolen = Enroll("intruder", elsewhere);
  EXPECT_EQ(stolen.exit_code, 1) << stolen.output;
  EXPECT_TRUE(absl::StrContains(stolen.output, "not the workload's address")) << stolen.output;

  // The workload itself: enrolled, and the project's secrets written.
  CtlResult ok = Enroll("wl-enroll", args);
  ASSERT_EQ(ok.exit_code, 0) << ok.output;
  struct stat st;
  ASSERT_EQ(stat((out + "/key.pem").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ASSERT_EQ(stat((out + "/munge.key").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0400u);
  EXPECT_EQ(ReadFileOrEmpty(out + "/munge.key"), munge_key);
  EXPECT_EQ(ReadFileOrEmpty(out + "/nfs.env"),
            absl::StrCat("NFS_SERVER=198.51.100.11\nNFS_EXPORT=/export/proj-a\nNFS_MOUNT_POINT=\n"));
  EXPECT_TRUE(absl::StrContains(ReadFileOrEmpty(out + "/cert.pem"), "BEGIN CERTIFICATE"));
  EXPECT_TRUE(absl::StrContains(ReadFileOrEmpty(out + "/project-ca.pem"), "BEGIN CERTIFICATE"));
  EXPECT_TRUE(absl::StrContains(ReadFileOrEmpty(out + "/key.pem"), "PRIVATE KEY"));
  EXPECT_FALSE(absl::StrContains(ok.output, ticket)) << ok.output;

  // A second run (the same ticket, a fresh key): a replay.
  const std::string again_out = s.dir() + "/again";
  std::filesystem::create_directories(again_out);
  CtlResult replay = Enroll("wl-enroll", {"--bundle", bundle, "--workload-id", kWorkload, "--cluster",
                                          "vm-controller", "--out", again_out});
  EXPECT_EQ(replay.exit_code, 1) << replay.output;
  EXPECT_TRUE(absl::StrContains(replay.output, "ALREADY_EXISTS")) << replay.output;
  EXPECT_FALSE(std::filesystem::exists(again_out + "/munge.key"));

  // GetProjectSecrets: only the project certificate, only from the workload's address.
  const std::string secrets = "strongroom.v1.WorkloadEnrollment/GetProjectSecrets";
  const std::vector<std::string> call = {"--server-role", "vm-controller", "call", secrets, "{}"};
  CtlResult deployment = s.CtlFrom("wl-enroll", s.EnrollmentAddress(), s.dir() + "/pki/operator", call);
  EXPECT_EQ(deployment.exit_code, kPermissionDenied) << deployment.output;
  EXPECT_TRUE(absl::StrContains(deployment.output, "not a project certificate")) << deployment.output;
  CtlResult anonymous = s.CtlFrom("wl-enroll", s.EnrollmentAddress(), "", call);
  EXPECT_EQ(anonymous.exit_code, kPermissionDenied) << anonymous.output;
  EXPECT_TRUE(absl::StrContains(anonymous.output, "no client certificate")) << anonymous.output;
  std::filesystem::copy_file(out + "/cert.pem", out + "/project.pem");
  std::filesystem::copy_file(out + "/key.pem", out + "/project.key");
  CtlResult from_elsewhere = s.CtlFrom("intruder", s.EnrollmentAddress(), out + "/project", call);
  EXPECT_EQ(from_elsewhere.exit_code, kPermissionDenied) << from_elsewhere.output;
  EXPECT_TRUE(absl::StrContains(from_elsewhere.output, "used from " + std::string(kIntruderIp)))
      << from_elsewhere.output;
  CtlResult own = s.CtlFrom("wl-enroll", s.EnrollmentAddress(), out + "/project", call);
  EXPECT_EQ(own.exit_code, 0) << own.output;
  EXPECT_TRUE(absl::StrContains(own.output, "/export/proj-a")) << own.output;

  // The main listener does not serve it, and the enrollment listener serves nothing else.
  CtlResult main_listener = s.Ctl("vm-controller", Credential::kOperator, {"call", secrets, "{}"});
  EXPECT_EQ(main_listener.exit_code, kPermissionDenied) << main_listener.output;
  EXPECT_TRUE(absl::StrContains(main_listener.output, "only on vm-controller's enrollment listener"))
      << main_listener.output;
  CtlResult other_rpc =
      s.CtlFrom("client", s.EnrollmentAddress(), s.dir() + "/pki/operator",
                {"--server-role", "vm-controller", "call", "strongroom.v1.VmController/ListLocalJobs", "{}"});
  EXPECT_EQ(other_rpc.exit_code, kPermissionDenied) << other_rpc.output;
  EXPECT_TRUE(absl::StrContains(other_rpc.output, "not served on the enrollment listener"))
      << other_rpc.output;

  // slurmd never registered: ProvisionWorkload fails, the job ends, the workload is tombstoned.
  const CtlResult& provisioned = provisioning.Finish();
  EXPECT_NE(provisioned.exit_code, 0) << provisioned.output;
  CtlResult ended;
  const absl::Time end_deadline = absl::Now() + absl::Seconds(60);
  do {
    ended = s.CtlFrom("wl-enroll", s.EnrollmentAddress(), out + "/project", call);
    if (ended.exit_code == 0) std::this_thread::sleep_for(std::chrono::milliseconds(500));
  } while (ended.exit_code == 0 && absl::Now() < end_deadline);
  EXPECT_EQ(ended.exit_code, kFailedPrecondition) << ended.output;
  EXPECT_TRUE(absl::StrContains(ended.output, "ended")) << ended.output;
  // And the ticket can never enroll again.
  const std::string after_out = s.dir() + "/after-end";
  std::filesystem::create_directories(after_out);
  CtlResult after = Enroll("wl-enroll", {"--bundle", bundle, "--workload-id", kWorkload, "--cluster",
                                         "vm-controller", "--out", after_out});
  EXPECT_EQ(after.exit_code, 1) << after.output;
  EXPECT_TRUE(absl::StrContains(after.output, "FAILED_PRECONDITION")) << after.output;

  // Every refusal is in backend's audit chain; neither the ticket nor the munge key is anywhere in it, nor in
  // vm-controller's log.
  const std::string audit = AuditOfWorkload("enrollment/Enroll", 6);
  for (const char* reason : {"not this workload's ticket", "enrollment_ticket: missing",
                             "not the workload's address", "already enrolled", "workload has ended"}) {
    EXPECT_TRUE(absl::StrContains(audit, reason)) << reason << "\n" << audit;
  }
  const std::string secrets_audit = AuditOfWorkload("enrollment/Secrets", 3);
  EXPECT_TRUE(absl::StrContains(secrets_audit, "used from")) << secrets_audit;
  CtlResult everything = s.Ctl("backend", Credential::kOperator, {"audit", "query", "--limit", "100000"});
  ASSERT_EQ(everything.exit_code, 0) << everything.output;
  EXPECT_TRUE(absl::StrContains(everything.output, "not a project certificate")) << "deployment-CA refusal";
  EXPECT_TRUE(absl::StrContains(everything.output, "no client certificate")) << "anonymous refusal";
  for (const std::string& secret : {ticket, wrong_ticket, munge_key}) {
    EXPECT_FALSE(absl::StrContains(everything.output, secret)) << "a secret reached the audit chain";
    EXPECT_FALSE(absl::StrContains(s.DaemonLog("vm-controller"), secret)) << "a secret reached the log";
  }
}

}  // namespace
}  // namespace strongroom::testing
