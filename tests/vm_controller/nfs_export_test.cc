// The controlling VM's NFS server configuration (services/vm_controller/nfs_export.h): NFSv4 over TCP only,
// the listed workloads only, and nothing in a field can rewrite the file.
#include "services/vm_controller/nfs_export.h"

#include <gtest/gtest.h>

#include "absl/strings/match.h"

namespace strongroom {
namespace {

TEST(NfsExportTest, OnlyNfsV4OverTcpAndOnlyTheListedWorkloads) {
  absl::StatusOr<std::string> conf = GaneshaConf(
      {"/var/lib/strongroom/nfs-recovery", 2049, {{1, "/srv/proj-a", "/proj-a", {"192.0.2.10"}}}});
  ASSERT_TRUE(conf.ok()) << conf.status();
  EXPECT_TRUE(absl::StrContains(*conf, "Protocols = 4;"));
  EXPECT_TRUE(absl::StrContains(*conf, "Enable_UDP = false"));
  EXPECT_TRUE(absl::StrContains(*conf, "EXPORT_DEFAULTS { Access_Type = None;"));
  EXPECT_TRUE(absl::StrContains(*conf, "CLIENT { Clients = 192.0.2.10; Access_Type = RW; }"));
  absl::StatusOr<std::string> nobody = GaneshaConf({"/r", 2049, {{1, "/srv/p", "/p", {}}}});
  ASSERT_TRUE(nobody.ok());
  EXPECT_FALSE(absl::StrContains(*nobody, "CLIENT"));
}

TEST(NfsExportTest, RefusesWhatWouldChangeTheConfigFile) {
  EXPECT_FALSE(GaneshaConf({"/r", 2049, {{1, "/srv/p\"; } EXPORT { Path = \"/", "/p", {}}}}).ok());
  EXPECT_FALSE(GaneshaConf({"/r", 2049, {{1, "relative", "/p", {}}}}).ok());
  EXPECT_FALSE(GaneshaConf({"/r", 2049, {{1, "/srv/p", "/", {}}}}).ok());
  EXPECT_FALSE(GaneshaConf({"/r", 2049, {{1, "/srv/p", "/p", {"192.0.2.0/24; Access_Type = RW"}}}}).ok());
  EXPECT_FALSE(GaneshaConf({"/r", 2049, {{1, "/a", "/p", {}}, {1, "/b", "/q", {}}}}).ok());
  EXPECT_FALSE(GaneshaConf({"/r", 2049, {{1, "/a", "/p", {}}, {2, "/b", "/p", {}}}}).ok());
}

}  // namespace
}  // namespace strongroom
