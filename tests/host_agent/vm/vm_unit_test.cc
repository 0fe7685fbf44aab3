// The VM driver's pure parts: the domain XML (with its 9p shares), workload.env's quoting, the metadata a
// domain is recognised by, and the check of whether this node can run a domain type.
#include <sys/stat.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "services/host_agent/vm/domain_xml.h"
#include "services/host_agent/vm/libvirt_client.h"
#include "services/host_agent/vm/vm_driver.h"

namespace strongroom::host_agent::vm {
namespace {

VmDomainSpec Sample() {
  VmDomainSpec spec;
  spec.workload_id = "wl-17";
  spec.domain_type = "qemu";
  spec.vcpus = 2;
  spec.memory_mib = 768;
  spec.kernel = "/var/lib/strongroom/images/a/vmlinux";
  spec.initrd = "/var/lib/strongroom/images/a/initrd";
  spec.cmdline = "console=ttyS0 quiet sr_ip=203.0.113.10/24 <&>";
  spec.disks = {{"/var/lib/strongroom/images/a/root.squashfs", true, "root"},
                {"/var/lib/strongroom/workloads/wl-17/disk.img", false, "scratch"}};
  spec.tap = "sr0123456789ab";
  spec.mac = "02:53:cb:00:71:0a";
  spec.serial_log = "/var/lib/strongroom/workloads/wl-17/console.log";
  return spec;
}

TEST(VmDomainXmlTest, ATransientDirectKernelDomainOnNetdsTap) {
  absl::StatusOr<std::string> xml = DomainXml(Sample());
  ASSERT_TRUE(xml.ok()) << xml.status();
  for (const char* expected :
       {"<domain type='qemu'>", "<name>sr-wl-17</name>",
        "<sr:workload xmlns:sr='https://strongroom.dev/xmlns/libvirt/workload/1' id='wl-17'/>",
        "<memory unit='MiB'>768</memory>", "<vcpu placement='static'>2</vcpu>",
        "<kernel>/var/lib/strongroom/images/a/vmlinux</kernel>",
        "<cmdline>console=ttyS0 quiet sr_ip=203.0.113.10/24 &lt;&amp;&gt;</cmdline>",
        "<cpu mode='maximum'/>",  // TCG refuses host-passthrough
        "<target dev='vda' bus='virtio'/>\n      <serial>root</serial>\n      <readonly/>",
        "<target dev='vdb' bus='virtio'/>\n      <serial>scratch</serial>\n    </disk>",
        // netd's tap, unmanaged: no libvirt network, no bridge, no dnsmasq, no NAT.
        "<interface type='ethernet'>\n      <mac address='02:53:cb:00:71:0a'/>\n      <target "
        "dev='sr0123456789ab' "
        "managed='no'/>",
        "<serial type='file'>\n      <source path='/var/lib/strongroom/workloads/wl-17/console.log'/>",
        "<on_reboot>destroy</on_reboot>", "<on_crash>destroy</on_crash>"}) {
    EXPECT_TRUE(absl::StrContains(*xml, expected)) << expected << "\n" << *xml;
  }
  EXPECT_FALSE(absl::StrContains(*xml, "<interface type='network'")) << *xml;
  EXPECT_FALSE(absl::StrContains(*xml, "<interface type='bridge'")) << *xml;
  EXPECT_FALSE(absl::StrContains(*xml, "virtualport")) << "libvirt must not touch OVS";
  VmDomainSpec with_uuid = Sample();
  with_uuid.uuid = "0f8fad5b-d9cb-469f-a165-70867728950e";
  EXPECT_TRUE(absl::StrContains(*DomainXml(with_uuid), "<uuid>0f8fad5b-d9cb-469f-a165-70867728950e</uuid>"));
  VmDomainSpec kvm = Sample();
  kvm.domain_type = "kvm";
  EXPECT_TRUE(absl::StrContains(*DomainXml(kvm), "<cpu mode='host-passthrough'/>"));
}

TEST(VmDomainXmlTest, BadSpecsNameTheField) {
  auto error = [](auto mutate) {
    VmDomainSpec spec = Sample();
    mutate(spec);
    return std::string(DomainXml(spec).status().message());
  };
  EXPECT_TRUE(absl::StartsWith(error([](VmDomainSpec& s) { s.domain_type = "xen"; }), "domain_type: "));
  EXPECT_TRUE(absl::StartsWith(error([](VmDomainSpec& s) { s.workload_id = "../x"; }), "workload_id: "));
  EXPECT_TRUE(absl::StartsWith(error([](VmDomainSpec& s) { s.vcpus = 0; }), "vcpus: "));
  EXPECT_TRUE(absl::StartsWith(error([](VmDomainSpec& s) { s.uuid = "x'/><devices>"; }), "uuid: "));
  EXPECT_TRUE(absl::StartsWith(error([](VmDomainSpec& s) { s.memory_mib = 1; }), "memory_mib: "));
  EXPECT_TRUE(absl::StartsWith(error([](VmDomainSpec& s) { s.kernel = ""; }), "kernel: "));
  EXPECT_TRUE(absl::StartsWith(error([](VmDomainSpec& s) { s.tap = "a b'"; }), "tap: "));
  EXPECT_TRUE(absl::StartsWith(error([](VmDomainSpec& s) { s.mac = "02:53:CB:00:71:0A'"; }), "mac: "));
  EXPECT_TRUE(absl::StartsWith(error([](VmDomainSpec& s) { s.disks[1].path = "rel"; }), "disks[1].path: "));
}

TEST(VmDomainXmlTest, FilesystemsArePassthrough9pSharesReadOnlyWhenAsked) {
  VmDomainSpec spec = Sample();
  spec.filesystems = {{"/srv/projects/p1 & 'co'", "sr_project_share", false},
                      {"/etc/strongroom/local-clusters/c1", "sr_slurm_auth", true}};
  absl::StatusOr<std::string> xml = DomainXml(spec);
  ASSERT_TRUE(xml.ok()) << xml.status();
  EXPECT_TRUE(
      absl::StrContains(*xml,
                        "<filesystem type='mount' accessmode='passthrough'>\n      <driver type='path'/>\n"
                        "      <source dir='/srv/projects/p1 &amp; &apos;co&apos;'/>\n"
                        "      <target dir='sr_project_share'/>\n    </filesystem>"))
      << *xml;
  EXPECT_TRUE(absl::StrContains(*xml,
                                "<source dir='/etc/strongroom/local-clusters/c1'/>\n"
                                "      <target dir='sr_slurm_auth'/>\n      <readonly/>\n    </filesystem>"))
      << *xml;
  EXPECT_FALSE(absl::StrContains(*DomainXml(Sample()), "<filesystem")) << "no share unless asked";
}

TEST(VmDomainXmlTest, BadFilesystemsNameTheField) {
  auto refused = [](std::vector<VmFilesystem> filesystems) {
    VmDomainSpec spec = Sample();
    spec.filesystems = std::move(filesystems);
    absl::StatusOr<std::string> xml = DomainXml(spec);
    EXPECT_EQ(xml.status().code(), absl::StatusCode::kInvalidArgument) << (xml.ok() ? *xml : "");
    return std::string(xml.status().message());
  };
  const VmFilesystem ok{"/srv/p1", "sr_project_share", false};
  EXPECT_TRUE(absl::StartsWith(refused({{"srv/p1", "sr_project_share", false}}), "filesystems[0].host_dir"));
  EXPECT_TRUE(absl::StartsWith(refused({{"", "sr_project_share", false}}), "filesystems[0].host_dir"));
  EXPECT_TRUE(absl::StartsWith(refused({ok, {"/srv/p\n1", "t", true}}), "filesystems[1].host_dir"));
  EXPECT_TRUE(absl::StartsWith(refused({{std::string("/srv/p\x01"), "t", true}}), "filesystems[0].host_dir"));
  EXPECT_TRUE(absl::StartsWith(refused({{"/srv/../etc", "t", true}}), "filesystems[0].host_dir"));
  EXPECT_TRUE(absl::StartsWith(refused({{"/srv/p1", "", true}}), "filesystems[0].tag"));
  EXPECT_TRUE(absl::StartsWith(refused({ok, {"/srv/p2", "a'b", true}}), "filesystems[1].tag"));
  EXPECT_TRUE(absl::StartsWith(refused({{"/srv/p1", std::string(32, 'a'), true}}), "filesystems[0].tag"));
}

TEST(VmWorkloadEnvTest, ValuesAreShellSingleQuotedAndReadBackExactly) {
  const std::vector<std::pair<std::string, std::string>> vars = {
      {"STRONGROOM_WORKLOAD_ID", "wl-17"},
      {"STRONGROOM_JOB_GID", ""},
      {"STRONGROOM_PROJECT_SHARE", "/srv/it's $(reboot) `x` \\ \"q\"\nline2"}};
  absl::StatusOr<std::string> env = WorkloadEnvFile(vars);
  ASSERT_TRUE(env.ok()) << env.status();
  EXPECT_EQ(*env,
            "STRONGROOM_WORKLOAD_ID='wl-17'\nSTRONGROOM_JOB_GID=''\n"
            "STRONGROOM_PROJECT_SHARE='/srv/it'\\''s $(reboot) `x` \\ \"q\"\nline2'\n");
  // What the guest's init does with it: source it with sh.
  const std::string file = std::filesystem::temp_directory_path() / "sr-workload-env-test";
  std::ofstream(file) << *env;
  const std::string cmd = "sh -c '. " + file + " && printf %s \"$STRONGROOM_PROJECT_SHARE\"'";
  FILE* p = popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string out;
  char buf[256];
  for (size_t n; (n = fread(buf, 1, sizeof(buf), p)) > 0;) out.append(buf, n);
  EXPECT_EQ(pclose(p), 0);
  std::filesystem::remove(file);
  EXPECT_EQ(out, vars[2].second);
  EXPECT_EQ(WorkloadEnvFile({{"BAD-NAME", "x"}}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(WorkloadEnvFile({{"X", std::string("a\0b", 3)}}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(VmDomainXmlTest, MetadataIsRecognisedInWhateverFormLibvirtReturnsIt) {
  EXPECT_EQ(WorkloadIdFromMetadata(
                "<sr:workload xmlns:sr=\"https://strongroom.dev/xmlns/libvirt/workload/1\" id=\"wl-17\"/>"),
            "wl-17");
  EXPECT_EQ(WorkloadIdFromMetadata(
                "<workload id='wl-17' xmlns='https://strongroom.dev/xmlns/libvirt/workload/1'/>\n"),
            "wl-17");
  EXPECT_EQ(WorkloadIdFromMetadata("<sr:workload xmlns:sr=\"https://example.org/other\" id=\"wl-17\"/>"),
            std::nullopt);
  EXPECT_EQ(WorkloadIdFromMetadata(
                "<sr:workload xmlns:sr=\"https://strongroom.dev/xmlns/libvirt/workload/1\" id=\"../etc\"/>"),
            std::nullopt);
  // What libvirt 9.0 returns for a lookup by our URI.
  EXPECT_EQ(WorkloadIdFromMetadata("<workload id=\"vm2\"/>"), "vm2");
  EXPECT_EQ(WorkloadIdFromMetadata("<workload/>"), std::nullopt);
  EXPECT_EQ(WorkloadIdFromMetadata("<other id=\"vm2\"/>"), std::nullopt);
  EXPECT_EQ(WorkloadIdFromMetadata(""), std::nullopt);
}

TEST(VmDomainTypeTest, KvmOnAPvmBackendIsRefusedWithTheCause) {
  EXPECT_TRUE(CheckDomainType("qemu", "/k", "/nonexistent", "/nonexistent").ok());
  absl::Status bad = CheckDomainType("hvf", "/k");
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument);
  absl::Status no_kvm = CheckDomainType("kvm", "/k", "/nonexistent", "/nonexistent/kvm");
  EXPECT_EQ(no_kvm.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(no_kvm.message(), "/nonexistent/kvm")) << no_kvm;
  // A fake sysfs with kvm_pvm loaded, and a "/dev/kvm" that opens.
  char dir[] = "/tmp/sr-vm-unit-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  const std::string root = dir;
  ASSERT_EQ(mkdir((root + "/module").c_str(), 0700), 0);
  const std::string kvm = root + "/kvm";
  std::ofstream(kvm) << "";
  EXPECT_TRUE(CheckDomainType("kvm", "/k", root, kvm).ok());
  ASSERT_EQ(mkdir((root + "/module/kvm_pvm").c_str(), 0700), 0);
  absl::Status pvm = CheckDomainType("kvm", "/images/a/vmlinux", root, kvm);
  EXPECT_EQ(pvm.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(pvm.message(), "PVM backend")) << pvm;
  EXPECT_TRUE(absl::StrContains(pvm.message(), "/images/a/vmlinux")) << pvm;
  EXPECT_TRUE(absl::StrContains(pvm.message(), "vm_domain_type: \"qemu\"")) << pvm;
  rmdir((root + "/module/kvm_pvm").c_str());
  rmdir((root + "/module").c_str());
  unlink(kvm.c_str());
  rmdir(dir);
}

}  // namespace
}  // namespace strongroom::host_agent::vm
