// vm-controller's config checks (services/vm_controller/config_check.h): the controlling VM's daemons
// (`enrollment { ipsec { } nfs { } }`), each error naming the field and its line.
#include "services/vm_controller/config_check.h"

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace strongroom::vm_controller {
namespace {

class ConfigCheckTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / absl::StrCat("sr-config-check-", getpid());
    std::filesystem::create_directories(dir_ / "share");
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // The error of a config whose enrollment block holds `enrollment` (after `project: "proj-a"`).
  std::string Check(const std::string& enrollment) {
    const std::string path = (dir_ / "vm-controller.textproto").string();
    std::ofstream(path) << "cluster_name: \"local\"\n"
                           "slurm_conf: \"/etc/slurm/slurm.conf\"\n"
                           "state_db: \"/var/lib/strongroom/local-jobs.db\"\n"
                           "backend_address: \"198.51.100.10:7443\"\n"
                           "slurmctld_addresses: \"198.51.100.11:6817\"\n"
                           "enrollment {\n"
                           "  project: \"proj-a\"\n"
                        << enrollment << "}\n";
    v1::VmControllerConfig config;
    absl::StatusOr<std::unique_ptr<ConfigSource>> source = LoadTextprotoFile(path, &config);
    if (!source.ok()) return "parse: " + source.status().ToString();
    absl::Status s = ValidateConfig(config, **source);
    return s.ok() ? "OK" : std::string(s.message()).substr(path.size() + 1);  // "LINE: field: reason"
  }

  std::string Ipsec(const std::string& fields) { return "  ipsec {\n" + fields + "  }\n"; }
  std::string Nfs(const std::string& fields) { return "  nfs {\n" + fields + "  }\n"; }
  std::string Share() const { return (dir_ / "share").string(); }

  std::filesystem::path dir_;
};

TEST_F(ConfigCheckTest, BothBlocksWithTheDefaultBinariesAreValid) {
  if (access("/usr/lib/ipsec/charon", X_OK) != 0 || access("/usr/bin/ganesha.nfsd", X_OK) != 0)
    GTEST_SKIP() << "charon or ganesha.nfsd not installed at the default paths";
  EXPECT_EQ(Check(Ipsec("    state_dir: \"/run/strongroom/charon\"\n    address: \"198.51.100.11\"\n") +
                  Nfs("    state_dir: \"/var/lib/strongroom/ganesha\"\n    share_path: \"" + Share() +
                      "\"\n    export_path: \"/proj-a\"\n") +
                  "  nfs_export: \"/proj-a\"\n"),
            "OK");
}

TEST_F(ConfigCheckTest, ABinaryThatDoesNotExistNamesItsField) {
  EXPECT_EQ(Check(Ipsec("    charon_binary: \"/nonexistent/charon\"\n    state_dir: \"/run/c\"\n"
                        "    address: \"198.51.100.11\"\n")),
            "9: enrollment.ipsec.charon_binary: /nonexistent/charon: no such file");
  EXPECT_EQ(Check(Nfs("    ganesha_binary: \"/nonexistent/ganesha.nfsd\"\n    state_dir: \"/run/g\"\n"
                      "    share_path: \"" +
                      Share() + "\"\n    export_path: \"/proj-a\"\n")),
            "9: enrollment.nfs.ganesha_binary: /nonexistent/ganesha.nfsd: no such file");
}

TEST_F(ConfigCheckTest, ABinaryThatIsNotAnExecutableFileIsRefused) {
  const std::string plain = (dir_ / "not-executable").string();
  std::ofstream(plain) << "#!/bin/sh\n";
  EXPECT_EQ(Check(Ipsec("    charon_binary: \"" + plain +
                        "\"\n    state_dir: \"/run/c\"\n"
                        "    address: \"198.51.100.11\"\n")),
            "9: enrollment.ipsec.charon_binary: " + plain + ": not an executable file");
  EXPECT_EQ(Check(Ipsec("    charon_binary: \"" + dir_.string() +
                        "\"\n    state_dir: \"/run/c\"\n"
                        "    address: \"198.51.100.11\"\n")),
            "9: enrollment.ipsec.charon_binary: " + dir_.string() + ": not an executable file");
  EXPECT_EQ(
      Check(Ipsec(
          "    charon_binary: \"charon\"\n    state_dir: \"/run/c\"\n    address: \"198.51.100.11\"\n")),
      "9: enrollment.ipsec.charon_binary: 'charon' is not an absolute path");
}

TEST_F(ConfigCheckTest, IpsecNeedsAStateDirAndAnAddressAndExcludesAnExternalCharon) {
  const std::string bin = "    charon_binary: \"/bin/true\"\n";
  EXPECT_EQ(Check(Ipsec(bin + "    address: \"198.51.100.11\"\n")),
            "8: enrollment.ipsec.state_dir: required, an absolute path of at most 90 bytes without \"..\"");
  EXPECT_EQ(Check(Ipsec(bin + "    state_dir: \"/run/" + std::string(90, 'x') +
                        "\"\n    address: \"198.51.100.11\"\n")),
            "10: enrollment.ipsec.state_dir: required, an absolute path of at most 90 bytes without \"..\"");
  EXPECT_EQ(Check(Ipsec(bin + "    state_dir: \"/run/c\"\n")),
            "8: enrollment.ipsec.address: required, this VM's IPv4 address on br-secure");
  EXPECT_EQ(Check(Ipsec(bin + "    state_dir: \"/run/c\"\n    address: \"vm.example\"\n")),
            "11: enrollment.ipsec.address: required, this VM's IPv4 address on br-secure");
  EXPECT_EQ(
      Check("  ipsec_vici_socket: \"/run/charon.vici\"\n  ipsec_address: \"198.51.100.11\"\n" +
            Ipsec(bin + "    state_dir: \"/run/c\"\n    address: \"198.51.100.11\"\n")),
      "10: enrollment.ipsec: vm-controller's own charon excludes ipsec_vici_socket and ipsec_address (a "
      "charon run by someone else)");
  EXPECT_EQ(Check(Ipsec(bin + "    state_dir: \"/run/c\"\n    address: \"198.51.100.11\"\n")), "OK");
}

TEST_F(ConfigCheckTest, NfsNeedsAnExistingShareAndAPseudoPath) {
  const std::string head = "    ganesha_binary: \"/bin/true\"\n    state_dir: \"/run/g\"\n";
  EXPECT_EQ(Check(Nfs("    ganesha_binary: \"/bin/true\"\n    share_path: \"" + Share() +
                      "\"\n    export_path: \"/p\"\n")),
            "8: enrollment.nfs.state_dir: required, an absolute path of at most 200 bytes without \"..\"");
  EXPECT_EQ(
      Check(Nfs(head + "    share_path: \"/nonexistent/share\"\n    export_path: \"/p\"\n")),
      "11: enrollment.nfs.share_path: '/nonexistent/share' is not an absolute path of an existing directory "
      "(without \"..\")");
  EXPECT_EQ(Check(Nfs(head + "    share_path: \"" + Share() + "\"\n")),
            "8: enrollment.nfs.export_path: required, an absolute NFSv4 pseudo path other than \"/\" "
            "(without \"..\")");
  EXPECT_EQ(Check(Nfs(head + "    share_path: \"" + Share() + "\"\n    export_path: \"/\"\n")),
            "12: enrollment.nfs.export_path: required, an absolute NFSv4 pseudo path other than \"/\" "
            "(without \"..\")");
  EXPECT_EQ(Check(Nfs(head + "    share_path: \"" + Share() + "\"\n    export_path: \"/p\\\"; }\"\n")),
            "8: enrollment.nfs: nfs: export 1: bad path or pseudo path");
  EXPECT_EQ(Check("  nfs_export: \"/other\"\n" +
                  Nfs(head + "    share_path: \"" + Share() + "\"\n    export_path: \"/p\"\n")),
            "8: enrollment.nfs_export: must equal nfs.export_path (\"/p\") or be empty");
  EXPECT_EQ(Check(Ipsec("    charon_binary: \"/bin/true\"\n    state_dir: \"/run/g\"\n    address: "
                        "\"198.51.100.11\"\n") +
                  Nfs(head + "    share_path: \"" + Share() + "\"\n    export_path: \"/p\"\n")),
            "15: enrollment.nfs.state_dir: must differ from ipsec.state_dir");
  EXPECT_EQ(Check(Nfs(head + "    share_path: \"" + Share() + "\"\n    export_path: \"/p\"\n")), "OK");
}

}  // namespace
}  // namespace strongroom::vm_controller
