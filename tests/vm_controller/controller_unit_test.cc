// The controller's decisions, driven through fakes of the Local Slurm and backend. The real Local Slurm and the
// real store are exercised by local_slurm_test.cc and local_job_store_test.cc.
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <map>

#include "absl/strings/str_cat.h"
#include "common/enrollment_ticket.h"
#include "gtest/gtest.h"
#include "services/vm_controller/controller.h"
#include "services/vm_controller/job_conversion.h"

namespace strongroom::vm_controller {
namespace {

class FakeLocalSlurm : public LocalSlurm {
 public:
  absl::StatusOr<std::optional<uint32_t>> FindJobByComment(const std::string& comment) override {
    for (const auto& [id, job] : jobs) {
      if (job.comment.substr(0, job.comment.find(' ')) == comment) return std::optional<uint32_t>(id);
    }
    return std::optional<uint32_t>();
  }
  absl::StatusOr<SlurmJob> ShowJob(uint32_t id) override {
    auto it = jobs.find(id);
    if (it == jobs.end()) return absl::NotFoundError("no such job");
    return it->second;
  }
  absl::Status PinAndRelease(uint32_t id, const std::string& feature, const std::string& partition) override {
    jobs[id].features = feature;
    jobs[id].partition = partition;
    jobs[id].priority = 1;
    released.push_back(id);
    return absl::OkStatus();
  }
  absl::Status RefuseJob(uint32_t id, const std::string& comment) override {
    jobs[id].comment = comment;
    return CancelJob(id);
  }
  absl::StatusOr<std::vector<QueuedJob>> PendingJobsIn(const std::string& partition) override {
    std::vector<QueuedJob> list;
    for (const auto& [id, job] : jobs) {
      if (job.partition == partition && job.state == "PENDING") list.push_back({id, job.comment, submitted[id]});
    }
    return list;
  }
  absl::StatusOr<std::vector<SlurmNode>> ListNodes() override {
    std::vector<SlurmNode> list;
    for (const auto& [name, state] : nodes) list.push_back({name, state, node_features[name]});
    return list;
  }
  absl::StatusOr<std::optional<std::string>> NodeState(const std::string& node) override {
    if (nodes.count(node) == 0) return std::optional<std::string>();
    return std::optional<std::string>(nodes[node]);
  }
  absl::Status DeleteNode(const std::string& node, bool down_only) override {
    if (nodes.count(node) == 0) return absl::OkStatus();
    nodes[node] = "DOWN+DYNAMIC_NORM";
    if (busy_nodes.count(node)) return absl::FailedPreconditionError("busy");
    if (down_only) return absl::OkStatus();
    nodes.erase(node);
    deleted_nodes.push_back(node);
    return absl::OkStatus();
  }
  absl::Status CancelJob(uint32_t id) override {
    jobs[id].state = "CANCELLED";
    cancelled.push_back(id);
    return absl::OkStatus();
  }

  std::map<uint32_t, SlurmJob> jobs;
  std::map<std::string, std::string> nodes;
  std::map<std::string, std::string> node_features;
  std::map<uint32_t, absl::Time> submitted;
  std::set<std::string> busy_nodes;
  std::vector<uint32_t> released, cancelled;
  std::vector<std::string> deleted_nodes;
};

class FakeGlobalJobs : public GlobalJobs {
 public:
  absl::StatusOr<v1::CreateGlobalJobResponse> CreateGlobalJob(const v1::CreateGlobalJobRequest& r) override {
    if (!available) return absl::UnavailableError("backend down");
    if (refuse) return absl::InvalidArgumentError("project: unknown project proj-a");
    creates.push_back(r);
    v1::CreateGlobalJobResponse response;
    response.mutable_job()->mutable_ref()->set_global_job_id("gj-1");
    response.mutable_job()->mutable_workload()->set_workload_id("wl-1");
    response.set_created(true);
    return response;
  }
  absl::StatusOr<v1::ReleaseWorkloadResponse> ReleaseWorkload(const v1::ReleaseWorkloadRequest& r) override {
    releases.push_back(r);
    return v1::ReleaseWorkloadResponse();
  }
  absl::StatusOr<v1::CancelJobResponse> CancelJob(const v1::CancelJobRequest& r) override {
    cancels.push_back(r);
    return v1::CancelJobResponse();
  }
  absl::StatusOr<v1::GetJobResponse> GetJob(const v1::GetJobRequest& r) override {
    v1::GetJobResponse response;
    response.mutable_job()->mutable_ref()->set_global_job_id(r.job().global_job_id());
    // Once it took a release or cancel, backend's global job ends (its workload stops).
    const bool stopped = global_state == v1::JOB_STATE_QUEUED && (!releases.empty() || !cancels.empty());
    response.mutable_job()->set_state(stopped ? v1::JOB_STATE_COMPLETED : global_state);
    *response.mutable_job()->mutable_failure() = global_failure;
    return response;
  }
  v1::JobState global_state = v1::JOB_STATE_QUEUED;
  v1::FailureInfo global_failure;
  bool available = true;
  bool refuse = false;
  std::vector<v1::CreateGlobalJobRequest> creates;
  std::vector<v1::ReleaseWorkloadRequest> releases;
  std::vector<v1::CancelJobRequest> cancels;
};

constexpr const char* kToken = "0a1b2c3d-0000-4000-8000-000000000001";

class ControllerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("vmctl-unit-" + std::to_string(getpid()));
    std::filesystem::create_directories(dir_);
    store_ = *LocalJobStore::Open((dir_ / "jobs.db").string());
    ControllerOptions options;
    options.cluster = "local";
    options.slurmctld_addresses = {"198.51.100.1:6817"};
    options.register_deadline = absl::Milliseconds(300);
    controller_ = std::make_unique<Controller>(options, store_.get(), &slurm_, &backend_);
  }
  void TearDown() override {
    controller_.reset();
    store_.reset();
    std::filesystem::remove_all(dir_);
  }

  v1::ConvertLocalJobRequest Request() {
    v1::ConvertLocalJobRequest r;
    r.mutable_local()->set_local_cluster("local");
    r.mutable_local()->set_token(kToken);
    r.mutable_user()->set_name("alice");
    r.mutable_user()->set_uid(1001);
    r.set_exclusive(true);
    return r;
  }

  // Puts the Slurm side of a freshly submitted job in place.
  void Submitted(uint32_t id, uint32_t uid = 1001) {
    SlurmJob job;
    job.job_id = id;
    job.state = "PENDING";
    job.uid = uid;
    job.user = "alice";
    job.account = "proj-a";
    job.num_nodes = 1;
    job.num_cpus = 4;
    job.exclusive = true;
    job.comment = CommentTag(kToken);
    job.partition = "wait";  // job_submit.lua's operator-only hold
    job.priority = 100;
    job.eligible_time = absl::Now() - absl::Seconds(1);
    slurm_.jobs[id] = job;
  }

  v1::LocalJob Job() { return *store_->Get(kToken); }

  v1::ProvisionWorkloadRequest Provision() {
    v1::ProvisionWorkloadRequest r;
    r.set_global_job_id("gj-1");
    r.set_workload_id("wl-1");
    r.mutable_local()->set_local_cluster("local");
    r.mutable_local()->set_token(kToken);
    r.set_node_name("wl-1");
    return r;
  }

  std::filesystem::path dir_;
  std::unique_ptr<LocalJobStore> store_;
  FakeLocalSlurm slurm_;
  FakeGlobalJobs backend_;
  std::unique_ptr<Controller> controller_;
};

// Issue 14: ProvisionWorkload hands the workload over to the project's enrollment authority, bound to its
// netd address; only then can it enroll, and the job's end tombstones it (no re-enrollment, nothing kept).
TEST_F(ControllerTest, ProvisionHandsTheWorkloadOverForEnrollmentAndTheEndTombstonesIt) {
  struct Recording : AuditSink {
    void Record(const AuditEvent& e) override { events.push_back(e); }
    std::vector<AuditEvent> events;
  } audit;
  EnrollmentAuthority enrollment(*ProjectCa::Create("proj-a", absl::Hours(48)), "example.edu",
                                 ProjectSecrets{"k", "198.51.100.1", "/export"}, absl::Minutes(10), &audit);
  ControllerOptions options;
  options.cluster = "local";
  options.slurmctld_addresses = {"198.51.100.1:6817"};
  options.register_deadline = absl::Milliseconds(300);
  options.enrollment = &enrollment;
  controller_ = std::make_unique<Controller>(options, store_.get(), &slurm_, &backend_);
  ASSERT_TRUE(controller_->Convert(Request()).ok());
  Submitted(7);
  controller_->Tick();
  ASSERT_EQ(Job().state(), v1::LOCAL_JOB_STATE_GLOBAL_REQUESTED);

  EcKey key = *EcKey::Generate();
  const std::string ticket = *GenerateEnrollmentTicket();  // host-agent's, reported as its hash
  EnrollRequest enroll{"", "198.51.100.7", "wl-1", "gj-1", "proj-a", *key.CsrPem("wl-1"), ticket};
  // Before ProvisionWorkload nothing can enroll.
  EXPECT_EQ(enrollment.Enroll(enroll, absl::Now()).status().code(), absl::StatusCode::kNotFound);

  v1::ProvisionWorkloadRequest without_address = Provision();
  EXPECT_EQ(controller_->Provision(without_address, absl::Now() + absl::Seconds(5)).status().code(),
            absl::StatusCode::kInvalidArgument);
  slurm_.nodes["wl-1"] = "IDLE+DYNAMIC_NORM";
  v1::ProvisionWorkloadRequest provision = Provision();
  provision.add_workload_addresses("198.51.100.7");
  // Without the ticket's hash the handover is refused: nothing could ever enroll.
  EXPECT_EQ(controller_->Provision(provision, absl::Now() + absl::Seconds(5)).status().code(),
            absl::StatusCode::kInvalidArgument);
  provision.set_enrollment_ticket_sha256(EnrollmentTicketSha256(ticket));
  auto provisioned = controller_->Provision(provision, absl::Now() + absl::Seconds(5));
  ASSERT_TRUE(provisioned.ok()) << provisioned.status();
  EXPECT_EQ(enrollment.LiveCount(), 1u);
  EXPECT_TRUE(controller_->Provision(provision, absl::Now() + absl::Seconds(5)).ok());  // a repeat
  absl::StatusOr<Enrollment> enrolled = enrollment.Enroll(enroll, absl::Now());
  ASSERT_TRUE(enrolled.ok()) << enrolled.status();
  EXPECT_EQ(ReadBinding(enrolled->certificate_pem)->ip, "198.51.100.7");

  v1::LocalJobEndedRequest ended;
  ended.mutable_local()->set_local_cluster("local");
  ended.mutable_local()->set_local_job_id(7);
  ended.mutable_end()->set_kind(v1::LOCAL_JOB_END_KIND_COMPLETED);
  slurm_.jobs[7].state = "COMPLETED";
  ASSERT_TRUE(controller_->LocalJobEnded(ended).ok());
  EXPECT_EQ(Job().state(), v1::LOCAL_JOB_STATE_COMPLETED);
  EXPECT_EQ(enrollment.LiveCount(), 0u);
  EXPECT_FALSE(enrollment.Secrets(enrolled->certificate_pem, "198.51.100.7", absl::Now()).ok());
  EXPECT_EQ(audit.events.back().action, "enrollment/Secrets");
  EXPECT_EQ(audit.events.back().outcome, "FAILED_PRECONDITION");
  controller_.reset();  // before `enrollment` goes
}

// The controlling VM's data path (controlling_vm.h): opened at the handover, closed at the job's end (retried until
// it succeeds), and a handover it refuses (a dead charon or ganesha) fails ProvisionWorkload.
TEST_F(ControllerTest, ProvisionOpensTheWorkloadsDataPathAndTheEndClosesIt) {
  struct FakeDataPath : WorkloadDataPath {
    absl::Status Open(const std::string& id, const std::string& job, const std::string& ip) override {
      calls.push_back(absl::StrCat("open ", id, " ", job, " ", ip));
      return open_result;
    }
    absl::Status Close(const std::string& id) override {
      calls.push_back(absl::StrCat("close ", id));
      return close_results.empty() ? absl::OkStatus() : [&] {
        absl::Status s = close_results.front();
        close_results.erase(close_results.begin());
        return s;
      }();
    }
    absl::Status open_result;
    std::vector<absl::Status> close_results;
    std::vector<std::string> calls;
  } data_path;
  EnrollmentAuthority enrollment(*ProjectCa::Create("proj-a", absl::Hours(48)), "example.edu",
                                 ProjectSecrets{"k", "198.51.100.1", "/export"}, absl::Minutes(10), nullptr);
  ControllerOptions options;
  options.cluster = "local";
  options.slurmctld_addresses = {"198.51.100.1:6817"};
  options.register_deadline = absl::Milliseconds(300);
  options.enrollment = &enrollment;
  options.data_path = &data_path;
  controller_ = std::make_unique<Controller>(options, store_.get(), &slurm_, &backend_);
  ASSERT_TRUE(controller_->Convert(Request()).ok());
  Submitted(7);
  controller_->Tick();
  v1::ProvisionWorkloadRequest provision = Provision();
  provision.add_workload_addresses("198.51.100.7");
  provision.set_enrollment_ticket_sha256(EnrollmentTicketSha256(*GenerateEnrollmentTicket()));

  data_path.open_result = absl::FailedPreconditionError("the controlling VM's charon (pid 9) exited");
  absl::Status refused = controller_->Provision(provision, absl::Now() + absl::Seconds(5)).status();
  EXPECT_EQ(refused.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(refused.message(), "the controlling VM's charon (pid 9) exited");
  EXPECT_EQ(Job().state(), v1::LOCAL_JOB_STATE_GLOBAL_REQUESTED);  // not provisioned

  data_path.open_result = absl::OkStatus();
  slurm_.nodes["wl-1"] = "IDLE+DYNAMIC_NORM";
  ASSERT_TRUE(controller_->Provision(provision, absl::Now() + absl::Seconds(5)).ok());
  EXPECT_EQ(data_path.calls.back(), "open wl-1 gj-1 198.51.100.7");

  // The first close fails (charon did not answer): the job stays ENDING and the next pass retries.
  data_path.close_results = {absl::UnavailableError("charon: no answer")};
  v1::LocalJobEndedRequest ended;
  ended.mutable_local()->set_local_cluster("local");
  ended.mutable_local()->set_local_job_id(7);
  ended.mutable_end()->set_kind(v1::LOCAL_JOB_END_KIND_COMPLETED);
  slurm_.jobs[7].state = "COMPLETED";
  ASSERT_TRUE(controller_->LocalJobEnded(ended).ok());
  EXPECT_EQ(data_path.calls.back(), "close wl-1");
  EXPECT_EQ(Job().state(), v1::LOCAL_JOB_STATE_ENDING);
  controller_->Tick();
  EXPECT_EQ(Job().state(), v1::LOCAL_JOB_STATE_COMPLETED);
  EXPECT_EQ(std::count(data_path.calls.begin(), data_path.calls.end(), "close wl-1"), 2);
  controller_.reset();  // before `enrollment` and `data_path` go
}

TEST_F(ControllerTest, ConvertIsIdempotentOnToken) {
  auto first = controller_->Convert(Request());
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_TRUE(first->second);
  auto again = controller_->Convert(Request());
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(again->second);
  v1::ConvertLocalJobRequest other = Request();
  other.mutable_user()->set_uid(1002);
  EXPECT_EQ(controller_->Convert(other).status().code(), absl::StatusCode::kAlreadyExists);
}

TEST_F(ControllerTest, PolicyRefusals) {
  v1::ConvertLocalJobRequest two_nodes = Request();
  two_nodes.mutable_resources()->set_nodes(2);
  EXPECT_EQ(controller_->Convert(two_nodes).status().code(), absl::StatusCode::kFailedPrecondition);
  two_nodes.set_exclusive(false);  // a VM job: the same refusal
  absl::Status s = controller_->Convert(two_nodes).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("resources.nodes: 2 nodes requested"), absl::string_view::npos) << s;
  v1::ConvertLocalJobRequest gpus = Request();
  gpus.set_exclusive(false);
  gpus.mutable_resources()->set_gpus(1);
  EXPECT_EQ(controller_->Convert(gpus).status().code(), absl::StatusCode::kFailedPrecondition);
  v1::ConvertLocalJobRequest root = Request();
  root.mutable_user()->set_uid(0);
  EXPECT_EQ(controller_->Convert(root).status().code(), absl::StatusCode::kFailedPrecondition);
  v1::ConvertLocalJobRequest bad_token = Request();
  bad_token.mutable_local()->set_token("../x");
  EXPECT_EQ(controller_->Convert(bad_token).status().code(), absl::StatusCode::kInvalidArgument);
  v1::ConvertLocalJobRequest other_cluster = Request();
  other_cluster.mutable_local()->set_local_cluster("elsewhere");
  EXPECT_EQ(controller_->Convert(other_cluster).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(ControllerTest, MainPathHoldsConvertsProvisionsAndReleases) {
  ASSERT_TRUE(controller_->Convert(Request()).ok());
  Submitted(7);
  controller_->Tick();
  EXPECT_EQ(Job().state(), v1::LOCAL_JOB_STATE_GLOBAL_REQUESTED);
  EXPECT_EQ(Job().local().local_job_id(), 7u);
  EXPECT_EQ(Job().project(), "proj-a");  // the Local Slurm's account
  ASSERT_EQ(backend_.creates.size(), 1u);
  EXPECT_EQ(backend_.creates[0].resources().cpus(), 4u);
  EXPECT_TRUE(backend_.creates[0].exclusive());
  EXPECT_EQ(backend_.creates[0].slurmctld_addresses(0), "198.51.100.1:6817");

  slurm_.nodes["wl-1"] = "IDLE+DYNAMIC_NORM";
  auto provisioned = controller_->Provision(Provision(), absl::Now() + absl::Seconds(5));
  ASSERT_TRUE(provisioned.ok()) << provisioned.status();
  EXPECT_EQ(provisioned->local_job_state(), v1::LOCAL_JOB_STATE_RUNNING);
  EXPECT_EQ(slurm_.jobs[7].features, kToken);
  EXPECT_EQ(slurm_.released, std::vector<uint32_t>{7});
  // A repeat is answered from the record.
  EXPECT_TRUE(controller_->Provision(Provision(), absl::Now() + absl::Seconds(5)).ok());
  EXPECT_EQ(slurm_.released.size(), 1u);

  v1::LocalJobEndedRequest ended;
  ended.mutable_local()->set_local_cluster("local");
  ended.mutable_local()->set_local_job_id(7);
  ended.mutable_end()->set_kind(v1::LOCAL_JOB_END_KIND_COMPLETED);
  // While the Local Slurm still has the job COMPLETING, how it ended is not settled: nothing is decided yet.
  slurm_.jobs[7].state = "COMPLETING";
  auto job = controller_->LocalJobEnded(ended);
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->state(), v1::LOCAL_JOB_STATE_RUNNING);
  EXPECT_TRUE(slurm_.deleted_nodes.empty());
  slurm_.jobs[7].state = "COMPLETED";
  job = controller_->LocalJobEnded(ended);
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->state(), v1::LOCAL_JOB_STATE_COMPLETED);
  EXPECT_EQ(slurm_.deleted_nodes, std::vector<std::string>{"wl-1"});
  ASSERT_EQ(backend_.releases.size(), 1u);
  EXPECT_EQ(backend_.releases[0].global_job_id(), "gj-1");
}

// Issue 15: a non-exclusive job takes the same path; its global job asks for a VM of the Local job's size.
TEST_F(ControllerTest, ANonExclusiveJobIsConvertedAndAsksForAVm) {
  v1::ConvertLocalJobRequest shared = Request();
  shared.set_exclusive(false);
  shared.mutable_resources()->set_cpus(2);
  ASSERT_TRUE(ValidateConvertRequest(shared, "local").ok());
  ASSERT_TRUE(controller_->Convert(shared).ok());
  EXPECT_FALSE(Job().exclusive());
  Submitted(8);
  slurm_.jobs[8].exclusive = false;  // OverSubscribe=OK / USER / MCS: the Local Slurm's record wins
  slurm_.jobs[8].num_cpus = 3;
  slurm_.jobs[8].memory_bytes_per_node = uint64_t{1500} << 20;
  controller_->Tick();
  EXPECT_EQ(Job().state(), v1::LOCAL_JOB_STATE_GLOBAL_REQUESTED);
  ASSERT_EQ(backend_.creates.size(), 1u);
  EXPECT_FALSE(backend_.creates[0].exclusive());
  EXPECT_EQ(backend_.creates[0].workload_kind(), v1::WORKLOAD_KIND_VM);
  EXPECT_EQ(backend_.creates[0].resources().cpus(), 3u);
  EXPECT_EQ(backend_.creates[0].resources().memory_bytes(), uint64_t{1500} << 20);
  EXPECT_EQ(backend_.creates[0].resources().nodes(), 1u);
}

TEST_F(ControllerTest, AnExclusiveJobAsksForAContainer) {
  ASSERT_TRUE(controller_->Convert(Request()).ok());
  Submitted(9);
  controller_->Tick();
  ASSERT_EQ(backend_.creates.size(), 1u);
  EXPECT_TRUE(backend_.creates[0].exclusive());
  EXPECT_EQ(backend_.creates[0].workload_kind(), v1::WORKLOAD_KIND_CONTAINER);
}

TEST(JobConversionTest, KindFollowsExclusiveAndCpusAreAtLeastOne) {
  EXPECT_EQ(WorkloadKindOf(true), v1::WORKLOAD_KIND_CONTAINER);
  EXPECT_EQ(WorkloadKindOf(false), v1::WORKLOAD_KIND_VM);
  SlurmJob job;
  job.num_nodes = 1;
  job.num_cpus = 0;
  EXPECT_EQ(ResourcesFromSlurm(job).cpus(), 1u);
  job.num_cpus = 6;
  job.memory_bytes_per_node = 700u << 20;
  EXPECT_EQ(ResourcesFromSlurm(job).cpus(), 6u);
  EXPECT_EQ(ResourcesFromSlurm(job).memory_bytes(), 700u << 20);
}

TEST_F(ControllerTest, CancelledWhilePendingCancelsTheGlobalJob) {
  ASSERT_TRUE(controller_->Convert(Request()).ok());
  Submitted(8);
  controller_->Tick();
  ASSERT_EQ(Job().state(), v1::LOCAL_JOB_STATE_GLOBAL_REQUESTED);
  slurm_.jobs[8].state = "CANCELLED";  // scancel while pending: no epilog runs
  controller_->Tick();
  EXPECT_EQ(Job().state(), v1::LOCAL_JOB_STATE_CANCELLED);
  EXPECT_EQ(Job().end().kind(), v1::LOCAL_JOB_END_KIND_CANCELLED_PENDING);
  ASSERT_EQ(backend_.cancels.size(), 1u);
  EXPECT_EQ(backend_.cancels[0].job().global_job_id(), "gj-1");
}

TEST_F(ControllerTest, GlobalJobFailureCancelsTheHeldLocalJob) {
  ASSERT_TRUE(controller_->Convert(Request()).ok());
  Submitted(12);
  controller_->Tick();
  ASSERT_EQ(Job().state(), v1::LOCAL_JOB_STATE_GLOBAL_REQUESTED);
  controller_->Tick();  // backend still has it queued: nothing changes
  EXPECT_EQ(Job().state(), v1::LOCAL_JOB_STATE_GLOBAL_REQUESTED);
  backend_.global_state = v1::JOB_STATE_FAILED;
  backend_.global_failure.set_reason("SLURM_AUTH_UNAVAILABLE");
  controller_->Tick();
  EXPECT_EQ(Job().state(), v1::LOCAL_JOB_STATE_FAILED);
  EXPECT_EQ(Job().failure().reason(), "GLOBAL_JOB_FAILED");
  EXPECT_NE(Job().failure().message().find("SLURM_AUTH_UNAVAILABLE"), std::string::npos);
  EXPECT_EQ(slurm_.cancelled, std::vector<uint32_t>{12});
}

TEST_F(ControllerTest, BackendOutageIsRetriedNotFailed) {
  backend_.available = false;
  ASSERT_TRUE(controller_->Convert(Request()).ok());
  Submitted(9);
  controller_->Tick();
  EXPECT_EQ(Job().state(), v1::LOCAL_JOB_STATE_HELD);
  backend_.available = true;
  controller_->Tick();
  EXPECT_EQ(Job().state(), v1::LOCAL_JOB_STATE_GLOBAL_REQUESTED);
}

TEST_F(ControllerTest, SubmitterMismatchFailsAndCancels) {
  ASSERT_TRUE(controller_->Convert(Request()).ok());
  Submitted(10, /*uid=*/2000);
  controller_->Tick();
  EXPECT_EQ(Job().state(), v1::LOCAL_JOB_STATE_FAILED);
  EXPECT_EQ(Job().failure().reason(), "USER_MISMATCH");
  EXPECT_EQ(slurm_.cancelled, std::vector<uint32_t>{10});
  EXPECT_TRUE(backend_.creates.empty());
}

TEST_F(ControllerTest, SlurmdThatNeverRegistersFailsTheJob) {
  ASSERT_TRUE(controller_->Convert(Request()).ok());
  Submitted(11);
  controller_->Tick();
  auto provisioned = controller_->Provision(Provision(), absl::Now() + absl::Seconds(5));
  EXPECT_EQ(provisioned.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(Job().state(), v1::LOCAL_JOB_STATE_FAILED);
  EXPECT_EQ(Job().failure().reason(), "SLURMD_REGISTRATION_TIMEOUT");
  EXPECT_EQ(slurm_.cancelled, std::vector<uint32_t>{11});
  EXPECT_EQ(backend_.cancels.size(), 1u);
}

TEST_F(ControllerTest, BusyNodeDeletionIsRetriedByTick) {
  ASSERT_TRUE(controller_->Convert(Request()).ok());
  Submitted(12);
  controller_->Tick();
  slurm_.nodes["wl-1"] = "IDLE";
  ASSERT_TRUE(controller_->Provision(Provision(), absl::Now() + absl::Seconds(5)).ok());
  slurm_.busy_nodes.insert("wl-1");
  slurm_.jobs[12].state = "COMPLETED";
  controller_->Tick();
  EXPECT_EQ(Job().state(), v1::LOCAL_JOB_STATE_ENDING);
  slurm_.busy_nodes.clear();
  controller_->Tick();
  EXPECT_EQ(Job().state(), v1::LOCAL_JOB_STATE_COMPLETED);
  EXPECT_EQ(backend_.releases.size(), 1u);
}

TEST_F(ControllerTest, AWaitingJobVmControllerNeverReceivedIsCancelledWithAReason) {
  Submitted(40);  // no Convert: the hook never got through
  slurm_.submitted[40] = absl::Now();
  controller_->RefuseUnannounced();
  EXPECT_TRUE(slurm_.cancelled.empty());  // it may still arrive
  slurm_.submitted[40] = absl::Now() - absl::Minutes(5);
  controller_->RefuseUnannounced();
  EXPECT_EQ(slurm_.cancelled, std::vector<uint32_t>{40});
  EXPECT_NE(slurm_.jobs[40].comment.find("NOT_ANNOUNCED"), std::string::npos) << slurm_.jobs[40].comment;
}

TEST_F(ControllerTest, TheNodeIsDeletedOnlyAfterTheWorkloadStopped) {
  ASSERT_TRUE(controller_->Convert(Request()).ok());
  Submitted(30);
  controller_->Tick();
  slurm_.nodes["wl-1"] = "IDLE+DYNAMIC_NORM";
  ASSERT_TRUE(controller_->Provision(Provision(), absl::Now() + absl::Seconds(5)).ok());
  backend_.global_state = v1::JOB_STATE_RUNNING;  // the workload is still stopping
  slurm_.jobs[30].state = "COMPLETED";
  controller_->Tick();
  EXPECT_EQ(Job().state(), v1::LOCAL_JOB_STATE_ENDING);
  EXPECT_EQ(backend_.releases.size(), 1u);
  EXPECT_EQ(slurm_.nodes["wl-1"], "DOWN+DYNAMIC_NORM");  // drained, not deleted
  EXPECT_TRUE(slurm_.deleted_nodes.empty());
  controller_->Tick();
  EXPECT_EQ(backend_.releases.size(), 1u);  // released once
  backend_.global_state = v1::JOB_STATE_COMPLETED;
  controller_->Tick();
  EXPECT_EQ(Job().state(), v1::LOCAL_JOB_STATE_COMPLETED);
  EXPECT_EQ(slurm_.deleted_nodes, std::vector<std::string>{"wl-1"});
}

TEST_F(ControllerTest, OutOfRangeResourcesAreRefusedNamingTheField) {
  v1::ConvertLocalJobRequest cpus = Request();
  cpus.mutable_resources()->set_cpus(4294967295u);
  absl::Status s = controller_->Convert(cpus).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("resources.cpus"), absl::string_view::npos) << s;
  v1::ConvertLocalJobRequest memory = Request();
  memory.mutable_resources()->set_memory_bytes(uint64_t{1} << 63);
  s = controller_->Convert(memory).status();
  EXPECT_NE(s.message().find("resources.memory_bytes"), absl::string_view::npos) << s;
  v1::ConvertLocalJobRequest time = Request();
  time.mutable_resources()->mutable_time_limit()->set_seconds(-60);
  s = controller_->Convert(time).status();
  EXPECT_NE(s.message().find("resources.time_limit"), absl::string_view::npos) << s;
  v1::ConvertLocalJobRequest project = Request();
  project.set_project("a\nb\xe2\x80\xae");
  s = controller_->Convert(project).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message().find('\n'), absl::string_view::npos) << s;
  EXPECT_EQ(s.message().find("\xe2\x80\xae"), absl::string_view::npos) << s;
  EXPECT_TRUE(store_->List({}, 10)->empty());  // nothing kept
  v1::ConvertLocalJobRequest underscore = Request();
  underscore.set_project("proj_a");  // backend's pattern, now everyone's
  EXPECT_TRUE(controller_->Convert(underscore).ok());
}

TEST_F(ControllerTest, UserHoldBeginAndDependencyAreWaitedOutBeforeTheGlobalJob) {
  ASSERT_TRUE(controller_->Convert(Request()).ok());
  Submitted(20);
  slurm_.jobs[20].priority = 0;  // --hold
  slurm_.jobs[20].reason = "JobHeldUser";
  controller_->Tick();
  EXPECT_EQ(Job().state(), v1::LOCAL_JOB_STATE_HELD);
  EXPECT_TRUE(backend_.creates.empty());
  slurm_.jobs[20].priority = 100;  // released, but --begin in the future
  slurm_.jobs[20].reason = "BeginTime";
  slurm_.jobs[20].eligible_time = absl::Now() + absl::Hours(1);
  controller_->Tick();
  EXPECT_TRUE(backend_.creates.empty());
  slurm_.jobs[20].reason = "Dependency";
  slurm_.jobs[20].dependency = "afterok:19(unfulfilled)";
  slurm_.jobs[20].eligible_time = absl::InfiniteFuture();
  controller_->Tick();
  EXPECT_TRUE(backend_.creates.empty());
  slurm_.jobs[20].reason = "PartitionConfig";  // now only the wait partition keeps it
  slurm_.jobs[20].dependency.clear();
  slurm_.jobs[20].eligible_time = absl::Now() - absl::Seconds(1);
  controller_->Tick();
  EXPECT_EQ(Job().state(), v1::LOCAL_JOB_STATE_GLOBAL_REQUESTED);
  EXPECT_EQ(backend_.creates.size(), 1u);
}

TEST_F(ControllerTest, NeverSatisfiableDependencyIsCancelledWithTheReasonInTheComment) {
  ASSERT_TRUE(controller_->Convert(Request()).ok());
  Submitted(21);
  slurm_.jobs[21].reason = "DependencyNeverSatisfied";
  slurm_.jobs[21].dependency = "afterok:19(failed)";
  controller_->Tick();
  EXPECT_EQ(Job().state(), v1::LOCAL_JOB_STATE_FAILED);
  EXPECT_EQ(Job().failure().reason(), "DEPENDENCY_NEVER_SATISFIED");
  EXPECT_EQ(slurm_.cancelled, std::vector<uint32_t>{21});
  EXPECT_EQ(slurm_.jobs[21].comment.rfind(CommentTag(kToken) + " refused by the enclave: DEPENDENCY_NEVER_SATISFIED", 0),
            0u)
      << slurm_.jobs[21].comment;
  EXPECT_TRUE(backend_.creates.empty());
}

TEST_F(ControllerTest, AJobOutsideTheWaitPartitionIsRefused) {
  ASSERT_TRUE(controller_->Convert(Request()).ok());
  Submitted(22);
  slurm_.jobs[22].partition = "batch";  // moved by someone other than vm-controller
  controller_->Tick();
  EXPECT_EQ(Job().failure().reason(), "NOT_PINNED");
  EXPECT_EQ(slurm_.cancelled, std::vector<uint32_t>{22});
  EXPECT_TRUE(backend_.creates.empty());
}

TEST_F(ControllerTest, BackendRefusalCancelsWithTheReasonVisible) {
  backend_.refuse = true;
  ASSERT_TRUE(controller_->Convert(Request()).ok());
  Submitted(23);
  controller_->Tick();
  EXPECT_EQ(Job().failure().reason(), "GLOBAL_JOB_REFUSED");
  EXPECT_NE(slurm_.jobs[23].comment.find("unknown project proj-a"), std::string::npos) << slurm_.jobs[23].comment;
  EXPECT_EQ(slurm_.cancelled, std::vector<uint32_t>{23});
}

TEST_F(ControllerTest, NodesWithoutALiveJobAreDeleted) {
  ASSERT_TRUE(controller_->Convert(Request()).ok());
  Submitted(24);
  controller_->Tick();
  slurm_.nodes["wl-1"] = "IDLE+DYNAMIC_NORM";
  slurm_.node_features["wl-1"] = std::string("strongroom,") + kToken;
  slurm_.nodes["stale"] = "DOWN+DYNAMIC_NORM+NOT_RESPONDING";  // registered again after its deletion
  slurm_.node_features["stale"] = "strongroom,0a1b2c3d-0000-4000-8000-0000000000ff";
  slurm_.nodes["static1"] = "IDLE";  // not a dynamic node: not ours
  controller_->ReconcileNodes();
  EXPECT_EQ(slurm_.deleted_nodes, std::vector<std::string>{"stale"});
  ASSERT_TRUE(controller_->Provision(Provision(), absl::Now() + absl::Seconds(5)).ok());
  slurm_.jobs[24].state = "COMPLETED";
  controller_->Tick();
  EXPECT_EQ(Job().state(), v1::LOCAL_JOB_STATE_COMPLETED);
  slurm_.nodes["wl-1"] = "IDLE+DYNAMIC_NORM";  // slurmd of the stopping workload registers again
  controller_->ReconcileNodes();
  EXPECT_EQ(slurm_.nodes.count("wl-1"), 0u);
  EXPECT_EQ(slurm_.nodes.count("static1"), 1u);
}

}  // namespace
}  // namespace strongroom::vm_controller
