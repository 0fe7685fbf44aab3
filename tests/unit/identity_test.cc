#include "common/identity.h"

#include "gtest/gtest.h"

namespace strongroom {
namespace {

TEST(SpiffeId, ParsesRoleAndInstance) {
  absl::StatusOr<Identity> id = ParseSpiffeId("spiffe://lab.example.edu/host-agent/node017");
  ASSERT_TRUE(id.ok()) << id.status();
  EXPECT_EQ(id->trust_domain, "lab.example.edu");
  EXPECT_EQ(id->role, Role::kHostAgent);
  EXPECT_EQ(id->instance, "node017");
  EXPECT_EQ(id->SpiffeId(), "spiffe://lab.example.edu/host-agent/node017");
}

TEST(SpiffeId, RejectsMalformedIds) {
  for (const char* bad :
       {"", "https://lab/netd/a", "spiffe://lab/netd", "spiffe://lab/netd/a/b", "spiffe://lab/root/a",
        "spiffe://LAB/netd/a", "spiffe://lab/netd/-a", "spiffe:///netd/a", "spiffe://lab/netd/"}) {
    EXPECT_FALSE(ParseSpiffeId(bad).ok()) << bad;
  }
}

TEST(SpiffeId, EveryRoleRoundTrips) {
  for (Role role : {Role::kBackend, Role::kVmController, Role::kHostAgent, Role::kNetd, Role::kOperator,
                    Role::kWorkload, Role::kSubmitHook, Role::kGlobalJob}) {
    absl::StatusOr<Role> parsed = ParseRole(RoleName(role));
    ASSERT_TRUE(parsed.ok());
    EXPECT_EQ(*parsed, role);
  }
}

}  // namespace
}  // namespace strongroom
