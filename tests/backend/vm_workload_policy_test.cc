// Issue 15: a non-exclusive job's global job asks for a VM. The kind follows exclusive (an explicit kind that
// contradicts it is INVALID_ARGUMENT naming workload_kind); the VM's WorkloadSpec and its Global job's sbatch
// ask for the job's CPUs (at least 1) and its memory plus vm_memory_overhead_mb; an exclusive job keeps the
// whole node.
#include <algorithm>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "tests/backend/sample_requests.h"
#include "services/backend/job_policy.h"
#include "services/backend/slurm_commands.h"
#include "services/backend/validation.h"

namespace strongroom::backend {
namespace {

constexpr uint64_t kMiB = uint64_t{1} << 20;

v1::CreateGlobalJobRequest Request(bool exclusive) {
  v1::CreateGlobalJobRequest r = testing::SampleCreateRequest(exclusive);
  r.mutable_resources()->set_nodes(1);
  r.mutable_resources()->set_cpus(2);
  r.mutable_resources()->set_memory_bytes(1000 * kMiB);
  r.mutable_resources()->mutable_time_limit()->set_seconds(600);
  return r;
}

BackendSettings Settings() {
  BackendSettings s;
  ProjectPolicy& p = s.projects["proj1"];
  p.name = "proj1";
  p.local_clusters = {"c1"};
  p.default_image = "img";
  return s;
}

const Identity kCaller{"example.edu", Role::kVmController, "c1"};

bool Has(const std::vector<std::string>& args, const std::string& arg) {
  return std::find(args.begin(), args.end(), arg) != args.end();
}

bool HasPrefix(const std::vector<std::string>& args, const std::string& prefix) {
  return std::any_of(args.begin(), args.end(),
                     [&](const std::string& a) { return absl::StartsWith(a, prefix); });
}

TEST(VmWorkloadPolicyTest, BothKindsPassThePolicy) {
  for (bool exclusive : {true, false}) {
    v1::CreateGlobalJobRequest r = Request(exclusive);
    EXPECT_TRUE(ValidateCreateRequest(r).ok()) << exclusive;
    EXPECT_TRUE(CheckCreatePolicy(r, Settings(), kCaller).ok()) << exclusive;
    r.set_workload_kind(WorkloadKindFor(exclusive));  // explicit and agreeing
    EXPECT_TRUE(ValidateCreateRequest(r).ok()) << exclusive;
    EXPECT_TRUE(CheckCreatePolicy(r, Settings(), kCaller).ok()) << exclusive;
  }
  EXPECT_EQ(WorkloadKindFor(true), v1::WORKLOAD_KIND_CONTAINER);
  EXPECT_EQ(WorkloadKindFor(false), v1::WORKLOAD_KIND_VM);
}

TEST(VmWorkloadPolicyTest, AKindThatContradictsExclusiveIsInvalidNamingWorkloadKind) {
  v1::CreateGlobalJobRequest vm_but_exclusive = Request(true);
  vm_but_exclusive.set_workload_kind(v1::WORKLOAD_KIND_VM);
  absl::Status s = ValidateCreateRequest(vm_but_exclusive);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StartsWith(s.message(), "workload_kind: ")) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "WORKLOAD_KIND_VM")) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "exclusive true")) << s;

  v1::CreateGlobalJobRequest container_but_shared = Request(false);
  container_but_shared.set_workload_kind(v1::WORKLOAD_KIND_CONTAINER);
  s = ValidateCreateRequest(container_but_shared);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StartsWith(s.message(), "workload_kind: ")) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "exclusive false")) << s;
}

TEST(VmWorkloadPolicyTest, OtherRefusalsHoldForVmsToo) {
  v1::CreateGlobalJobRequest two = Request(false);
  two.mutable_resources()->set_nodes(2);
  EXPECT_EQ(CheckCreatePolicy(two, Settings(), kCaller).code(), absl::StatusCode::kFailedPrecondition);
  v1::CreateGlobalJobRequest gpu = Request(false);
  gpu.mutable_resources()->set_gpus(1);
  EXPECT_EQ(CheckCreatePolicy(gpu, Settings(), kCaller).code(), absl::StatusCode::kFailedPrecondition);
  BackendSettings no_image = Settings();
  no_image.projects["proj1"].default_image = "";
  EXPECT_EQ(CheckCreatePolicy(Request(false), no_image, kCaller).code(), absl::StatusCode::kInvalidArgument);
}

TEST(VmWorkloadPolicyTest, AVmSpecHasTheJobsCpusAndMemoryPlusTheOverhead) {
  const BackendSettings s = Settings();
  v1::WorkloadSpec vm =
      BuildWorkloadSpec(Request(false), s.projects.at("proj1"), NewJobIds(), "example.edu", "",
                        /*vm_memory_overhead_mb=*/384);
  EXPECT_EQ(vm.kind(), v1::WORKLOAD_KIND_VM);
  EXPECT_FALSE(vm.whole_node());
  EXPECT_EQ(vm.image().name(), "img");  // the project's default image, as for a container
  EXPECT_EQ(vm.resources().nodes(), 1u);
  EXPECT_EQ(vm.resources().cpus(), 2u);
  EXPECT_EQ(vm.resources().memory_bytes(), (1000 + 384) * kMiB);
  EXPECT_EQ(vm.resources().time_limit().seconds(), 600);
  // The provisioning is the same as a container's: B1, the Local Slurm cannot tell them apart.
  EXPECT_EQ(vm.provisioning().features_size(), 2);

  v1::WorkloadSpec container =
      BuildWorkloadSpec(Request(true), s.projects.at("proj1"), NewJobIds(), "example.edu", "", 384);
  EXPECT_EQ(container.kind(), v1::WORKLOAD_KIND_CONTAINER);
  EXPECT_TRUE(container.whole_node());
  EXPECT_EQ(container.resources().memory_bytes(), 1000 * kMiB);  // a minimum the node must meet, no overhead
  EXPECT_EQ(container.image().name(), "img");
}

TEST(VmWorkloadPolicyTest, VmResourcesNeverFallBelowTheOverheadAndOneCpu) {
  v1::Resources none;  // the job named neither CPUs nor memory
  v1::Resources vm = VmResources(none, 384);
  EXPECT_EQ(vm.cpus(), 1u);
  EXPECT_EQ(vm.nodes(), 1u);
  EXPECT_EQ(vm.memory_bytes(), 384 * kMiB);
  v1::Resources odd;
  odd.set_cpus(3);
  odd.set_memory_bytes(100 * kMiB + 1);  // rounded up to whole MiB before the overhead is added
  vm = VmResources(odd, 512);
  EXPECT_EQ(vm.cpus(), 3u);
  EXPECT_EQ(vm.memory_bytes(), (101 + 512) * kMiB);
}

SubmitSpec Submit(bool exclusive, const v1::Resources& resources) {
  SubmitSpec s = testing::SampleSubmitSpec();
  s.exclusive = exclusive;
  s.resources = resources;
  return s;
}

TEST(VmWorkloadPolicyTest, SbatchOfAVmAsksForItsCpusAndMemoryAndNotTheWholeNode) {
  const std::vector<std::string> args =
      SbatchArgs(Submit(false, VmResources(Request(false).resources(), 384)));
  EXPECT_FALSE(Has(args, "--exclusive"));
  EXPECT_FALSE(HasPrefix(args, "--mincpus"));
  EXPECT_FALSE(HasPrefix(args, "--exclusive"));
  EXPECT_TRUE(Has(args, "--nodes=1"));
  EXPECT_TRUE(Has(args, "--ntasks=1"));
  EXPECT_TRUE(Has(args, "--cpus-per-task=2"));
  EXPECT_TRUE(Has(args, "--mem=1384M"));
  EXPECT_TRUE(Has(args, "--time=10"));
  EXPECT_TRUE(Has(args, "--no-requeue"));
  EXPECT_TRUE(Has(args, "--export=ALL"));
  EXPECT_EQ(args.back(), "/opt/strongroom/global-job");

  // Nothing named: one CPU and the overhead, never Slurm's DefMemPerCPU.
  const std::vector<std::string> bare = SbatchArgs(Submit(false, VmResources(v1::Resources(), 384)));
  EXPECT_TRUE(Has(bare, "--cpus-per-task=1"));
  EXPECT_TRUE(Has(bare, "--mem=384M"));
  EXPECT_FALSE(Has(bare, "--mem=0"));
}

TEST(VmWorkloadPolicyTest, SbatchOfAContainerKeepsTheWholeNode) {
  const std::vector<std::string> args = SbatchArgs(Submit(true, Request(true).resources()));
  EXPECT_TRUE(Has(args, "--exclusive"));
  EXPECT_TRUE(Has(args, "--nodes=1"));
  EXPECT_TRUE(Has(args, "--mincpus=2"));
  EXPECT_TRUE(Has(args, "--mem=1000M"));
  EXPECT_FALSE(HasPrefix(args, "--ntasks"));
  EXPECT_FALSE(HasPrefix(args, "--cpus-per-task"));
  EXPECT_TRUE(Has(SbatchArgs(Submit(true, v1::Resources())), "--mem=0"));
}

}  // namespace
}  // namespace strongroom::backend
