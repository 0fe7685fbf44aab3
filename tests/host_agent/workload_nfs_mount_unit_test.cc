// services/host_agent/workload_nfs_mount.h without a server: the mount options, the refusals made before any
// namespace is entered. The mount itself is tested in the qemu guest (ctest -R ipsec_guest_kernel_datapath).
#include <gtest/gtest.h>

#include "absl/strings/match.h"
#include "services/host_agent/workload_nfs_mount.h"

namespace strongroom::host_agent {
namespace {

WorkloadNfsMount Sample() { return {"/proc/self/ns/net", "/proc/1/ns/mnt", "192.0.2.1", "/proj-a", "/data"}; }

TEST(WorkloadNfsMountTest, OptionsAreNfsV42OverTcpToTheServerOnly) {
  absl::StatusOr<std::string> o = NfsMountOptions(Sample());
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(*o, "vers=4.2,proto=tcp,port=2049,sec=sys,hard,timeo=600,retrans=2,addr=192.0.2.1");
}

TEST(WorkloadNfsMountTest, ServerMustBeAnIpv4AddressSoNothingCanBeAddedToTheOptions) {
  for (const char* bad : {"", "nfs.example", "192.0.2.1,sec=none", "192.0.2.256", "2001:db8::1"}) {
    WorkloadNfsMount m = Sample();
    m.server_ip = bad;
    EXPECT_EQ(NfsMountOptions(m).status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_EQ(MountNfsInWorkload(m, absl::Seconds(1)).code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

TEST(WorkloadNfsMountTest, RelativeOrOddPathsAreRefused) {
  for (const auto& [exp, target] : std::vector<std::pair<std::string, std::string>>{
           {"proj-a", "/data"}, {"/proj-a,vers=3", "/data"}, {"/proj-a", "data"}, {"", "/data"}}) {
    WorkloadNfsMount m = Sample();
    m.export_path = exp;
    m.target = target;
    EXPECT_EQ(MountNfsInWorkload(m, absl::Seconds(1)).code(), absl::StatusCode::kInvalidArgument)
        << exp << " " << target;
  }
}

TEST(WorkloadNfsMountTest, OurOwnMountNamespaceIsRefused) {
  // The share would land in the compute host's mount table.
  WorkloadNfsMount m = Sample();
  m.mountns_path = "/proc/self/ns/mnt";
  absl::Status s = MountNfsInWorkload(m, absl::Seconds(1));
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "host's mount table")) << s;
  EXPECT_EQ(UnmountInWorkload("/proc/self/ns/mnt", "/data", absl::Seconds(1)).code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST(WorkloadNfsMountTest, MissingNamespaceIsNotFound) {
  WorkloadNfsMount m = Sample();
  m.netns_path = "/run/netns/strongroom-no-such-netns";
  EXPECT_EQ(MountNfsInWorkload(m, absl::Seconds(1)).code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace strongroom::host_agent
