#include "services/workload_enroll/enroll_client.h"

#include <stdlib.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "absl/strings/match.h"
#include "common/enrollment_ticket.h"
#include "gtest/gtest.h"
#include "services/workload_enroll/workload_tunnel.h"

namespace strongroom::workload_enroll {
namespace {

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

class EnrollClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/sr-enroll-client-XXXXXX";
    dir_ = mkdtemp(tmpl);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string dir_;
};

EnrollOptions Valid() {
  EnrollOptions o;
  o.target = "198.51.100.11:7444";
  o.ca_file = "/run/strongroom/ca.pem";
  o.trust_domain = "strongroom.test";
  o.cluster = "local";
  o.workload_id = "wl-1";
  o.global_job_id = "gj-1";
  o.project = "proj-a";
  o.ticket = std::string(64, 'a');
  return o;
}

TEST_F(EnrollClientTest, OptionsNameWhatIsMissingOrMalformed) {
  EXPECT_TRUE(ValidateOptions(Valid()).ok());
  struct Case {
    void (*edit)(EnrollOptions*);
    const char* named;
  };
  for (const Case& c : std::initializer_list<Case>{
           {[](EnrollOptions* o) { o->target.clear(); }, "--target"},
           {[](EnrollOptions* o) { o->target = "no-port"; }, "--target"},
           {[](EnrollOptions* o) { o->ca_file.clear(); }, "--ca"},
           {[](EnrollOptions* o) { o->trust_domain.clear(); }, "--trust-domain"},
           {[](EnrollOptions* o) { o->cluster = "Bad_Cluster"; }, "--cluster"},
           {[](EnrollOptions* o) { o->workload_id.clear(); }, "--workload-id"},
           {[](EnrollOptions* o) { o->global_job_id = "../x"; }, "--global-job-id"},
           {[](EnrollOptions* o) { o->project.clear(); }, "--project"},
           {[](EnrollOptions* o) { o->ticket.clear(); }, "enrollment ticket"},
           {[](EnrollOptions* o) { o->ticket = "ABC"; }, "enrollment ticket"},
       }) {
    EnrollOptions o = Valid();
    c.edit(&o);
    absl::Status s = ValidateOptions(o);
    EXPECT_FALSE(s.ok()) << c.named;
    EXPECT_TRUE(absl::StrContains(s.message(), c.named)) << s;
  }
}

TEST_F(EnrollClientTest, TheBundleFillsWhatTheCommandLineLeftEmpty) {
  const std::string ticket = *GenerateEnrollmentTicket();
  const std::string bundle =
      "{\n \"localCluster\": \"c1\",\n \"slurmdPort\": 6818,\n \"enrollmentAddress\": "
      "\"198.51.100.11:7444\",\n \"globalJobId\": \"gj-9\",\n \"project\": \"proj-a\",\n "
      "\"trustDomain\": \"strongroom.test\",\n \"deploymentCaPem\": \"-----BEGIN "
      "CERTIFICATE-----\\nAAA\\n\",\n \"enrollmentTicket\": \"" +
      ticket + "\"\n}\n";
  EnrollOptions o;
  o.workload_id = "wl-9";
  o.cluster = "override";  // given on the command line: kept
  ASSERT_TRUE(FillFromBundle(bundle, dir_ + "/deployment-ca.pem", &o).ok());
  EXPECT_EQ(o.target, "198.51.100.11:7444");
  EXPECT_EQ(o.cluster, "override");
  EXPECT_EQ(o.global_job_id, "gj-9");
  EXPECT_EQ(o.project, "proj-a");
  EXPECT_EQ(o.trust_domain, "strongroom.test");
  EXPECT_EQ(o.ticket, ticket);
  EXPECT_EQ(o.ca_file, dir_ + "/deployment-ca.pem");
  EXPECT_EQ(ReadAll(o.ca_file), "-----BEGIN CERTIFICATE-----\nAAA\n");
  EXPECT_TRUE(ValidateOptions(o).ok());

  EnrollOptions bad;
  absl::Status s = FillFromBundle("{\"project\": 7}", dir_ + "/x.pem", &bad);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(s.message(), "project")) << s;
  EXPECT_EQ(FillFromBundle("not json", dir_ + "/x.pem", &bad).code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(EnrollClientTest, WritesEachFileWithItsModeAndRefusesUnsafeNfsValues) {
  EnrolledWorkload e;
  e.key_pem = "KEY";
  e.cert_pem = "CERT";
  e.project_ca_pem = "CA";
  e.munge_key = std::string("mu\0nge", 6);
  e.nfs_server = "198.51.100.11";
  e.nfs_export = "/export/proj-a";
  e.nfs_mount_point = "/srv/proj-a";
  ASSERT_TRUE(WriteEnrollment(e, dir_).ok());
  for (const auto& [name, mode, content] :
       {std::tuple<const char*, mode_t, std::string>{"key.pem", 0600, "KEY"},
        {"cert.pem", 0644, "CERT"},
        {"project-ca.pem", 0644, "CA"},
        {"munge.key", 0400, std::string("mu\0nge", 6)},
        {"nfs.env", 0644,
         "NFS_SERVER=198.51.100.11\nNFS_EXPORT=/export/proj-a\nNFS_MOUNT_POINT=/srv/proj-a\n"}}) {
    struct stat st;
    ASSERT_EQ(stat((dir_ + "/" + name).c_str(), &st), 0) << name;
    EXPECT_EQ(st.st_mode & 0777, mode) << name;
    EXPECT_EQ(ReadAll(dir_ + "/" + name), content) << name;
  }
  // A rerun replaces the files (the 0400 key included: rename, not open-for-write).
  e.key_pem = "KEY2";
  ASSERT_TRUE(WriteEnrollment(e, dir_).ok());
  EXPECT_EQ(ReadAll(dir_ + "/key.pem"), "KEY2");

  EnrolledWorkload hostile = e;
  hostile.nfs_export = "/x\nLD_PRELOAD=/tmp/evil.so";
  absl::Status s = WriteEnrollment(hostile, dir_);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(s.message(), "nfs_export")) << s;
  EXPECT_EQ(WriteEnrollment(e, dir_ + "/missing").code(), absl::StatusCode::kFailedPrecondition);
  EnrolledWorkload relative = e;
  relative.nfs_mount_point = "srv/../etc";
  s = WriteEnrollment(relative, dir_);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(s.message(), "nfs_mount_point")) << s;
}

TEST_F(EnrollClientTest, TunnelModeWritesNoKeyFile) {
  EnrolledWorkload e;
  e.key_pem = "KEY";
  e.cert_pem = "CERT";
  e.project_ca_pem = "CA";
  e.munge_key = "MUNGE";
  ASSERT_TRUE(WriteEnrollment(e, dir_, /*write_key=*/false).ok());
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/key.pem"));
  EXPECT_EQ(ReadAll(dir_ + "/munge.key"), "MUNGE");
  EXPECT_EQ(ReadAll(dir_ + "/nfs.env"), "NFS_SERVER=\nNFS_EXPORT=\nNFS_MOUNT_POINT=\n");
}

TEST(WorkloadTunnelSpec, MirrorsTheVmsConnectionFromTheCertificateAndTheSecrets) {
  std::unique_ptr<ProjectCa> ca = *ProjectCa::Create("proj-a", absl::Hours(1));
  EcKey key = *EcKey::Generate();
  const absl::Time now = absl::Now();
  EnrolledWorkload e;
  e.cert_pem = *ca->IssueFromCsr(
      *key.CsrPem("wl-1"), CertBinding{"proj-a", "wl-1", "gj-1", "198.51.100.41", now, now + absl::Hours(1)});
  e.project_ca_pem = ca->cert_pem();
  e.key = std::make_shared<EcKey>(std::move(key));
  e.ipsec_address = "198.51.100.40";
  TunnelOptions o;
  o.project = "proj-a";
  o.global_job_id = "gj-1";
  o.workload_id = "wl-1";
  absl::StatusOr<TunnelSpec> spec = WorkloadTunnelSpec(e, o);
  ASSERT_TRUE(spec.ok()) << spec.status();
  const TunnelSpec vm =
      VmSideTunnel(WorkloadTunnelEnds{"proj-a", "gj-1", "wl-1", "198.51.100.41", "198.51.100.40"}, "VMCERT",
                   ca->cert_pem(), IpsecBackend::kLibipsec);
  EXPECT_EQ(spec->name, vm.name);
  EXPECT_EQ(spec->local_ip, vm.remote_ip);
  EXPECT_EQ(spec->remote_ip, vm.local_ip);
  EXPECT_EQ(spec->local_id, vm.remote_id);
  EXPECT_EQ(spec->local_cert_pem, e.cert_pem);
  EXPECT_TRUE(BuildLoadConn(*spec).ok());

  EnrolledWorkload no_vm = e;
  no_vm.ipsec_address.clear();
  absl::Status s = WorkloadTunnelSpec(no_vm, o).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(s.message(), "ipsec_address")) << s;
  TunnelOptions other = o;
  other.workload_id = "wl-2";
  EXPECT_EQ(WorkloadTunnelSpec(e, other).status().code(), absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace strongroom::workload_enroll
