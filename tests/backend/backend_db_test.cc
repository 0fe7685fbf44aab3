// backend and its database: losing and regaining PostgreSQL, restarts, migrations, the transition table
// enforced by the database itself, bad input refused precisely with no partial row, and the authorization
// table end to end.
#include <string>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/authz.h"
#include "gtest/gtest.h"
#include "strongroom/v1/backend.pb.h"
#include "tests/backend/backend_stack.h"

namespace strongroom::testing {
namespace {

class BackendDbTest : public BackendTest {
 protected:
  std::string Sql(const std::string& sql) {
    absl::StatusOr<std::string> out = stack().Sql(sql);
    EXPECT_TRUE(out.ok()) << out.status();
    return out.value_or("");
  }
  std::string RowCounts() {
    return Sql(
        "SELECT (SELECT count(*) FROM jobs) || '/' || (SELECT count(*) FROM workloads) || '/' || "
        "(SELECT count(*) FROM job_timeline)");
  }
};

TEST_F(BackendDbTest, LosingTheDatabaseGivesUnavailableAndItsReturnHeals) {
  ASSERT_TRUE(stack().StartBackend().ok());
  ASSERT_EQ(stack().Call("operator", "ListJobs", "{}").exit_code, 0);
  ASSERT_TRUE(stack().db().Stop().ok());
  CtlOutput down = stack().Call("operator", "ListJobs", "{}");
  EXPECT_EQ(down.exit_code, 14) << down.output;  // UNAVAILABLE
  EXPECT_TRUE(absl::StrContains(down.output, "database unavailable")) << down.output;
  CtlOutput create = stack().Call("vmc-c1", "CreateGlobalJob", CreateRequestJson(501));
  EXPECT_EQ(create.exit_code, 14) << create.output;
  ASSERT_TRUE(stack().db().Restart().ok());
  // The pool reconnects on the next use; no backend restart.
  CtlOutput up;
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  do {
    up = stack().Call("operator", "ListJobs", "{}");
  } while (up.exit_code != 0 && absl::Now() < deadline);
  EXPECT_EQ(up.exit_code, 0) << up.output;
  ASSERT_EQ(stack().Call("vmc-c1", "CreateGlobalJob", CreateRequestJson(501)).exit_code, 0);
  // The records of the calls made while the database was down were kept and appended once it was back.
  const absl::Time audit_deadline = absl::Now() + absl::Seconds(20);
  std::string unavailable;
  do {
    unavailable = Sql("SELECT count(*) FROM audit_records WHERE status_code = 14");
  } while (unavailable == "0" && absl::Now() < audit_deadline);
  EXPECT_NE(unavailable, "0");
  EXPECT_EQ(stack().Ctl("operator", {"audit", "verify"}).exit_code, 0);
}

TEST_F(BackendDbTest, MigrationsAreSafeToRerunAndAChangedOneIsRefused) {
  ASSERT_TRUE(stack().StartBackend().ok());
  ASSERT_TRUE(stack().StopBackend().ok());
  ASSERT_TRUE(stack().StartBackend().ok());
  EXPECT_EQ(Sql("SELECT count(*) FROM schema_migrations"), "3");
  EXPECT_EQ(Sql("SELECT version || ':' || name FROM schema_migrations ORDER BY version"),
            "1:initial\n2:audit_spool_positions\n3:enrollment_ticket");
  ASSERT_TRUE(stack().StopBackend().ok());
  Sql("UPDATE schema_migrations SET checksum = 'edited' WHERE version = 1");
  EXPECT_FALSE(stack().StartBackend().ok());
  EXPECT_TRUE(
      absl::StrContains(stack().BackendLog(), "migration 0001_initial was changed after it was applied"))
      << stack().BackendLog();
}

TEST_F(BackendDbTest, TheDatabaseRefusesAnIllegalTransitionNamingBothStates) {
  ASSERT_TRUE(stack().StartBackend().ok());
  v1::CreateGlobalJobResponse created;
  ASSERT_TRUE(stack().CallInto("vmc-c1", "CreateGlobalJob", CreateRequestJson(502), &created).ok());
  const std::string id = created.job().ref().global_job_id();
  ASSERT_TRUE(stack().StopBackend().ok());
  const std::string state = Sql(absl::StrCat("SELECT state FROM jobs WHERE global_job_id = '", id, "'"));
  const std::string name = Sql(absl::StrCat("SELECT name FROM job_states WHERE state = ", state));
  // Even a direct UPDATE cannot skip the state machine.
  absl::StatusOr<std::string> refused =
      stack().Sql(absl::StrCat("UPDATE jobs SET state = 8 WHERE global_job_id = '", id, "'"));
  ASSERT_FALSE(refused.ok());
  EXPECT_TRUE(
      absl::StrContains(refused.status().message(), "illegal state transition " + name + " -> COMPLETED"))
      << refused.status();
  EXPECT_EQ(Sql(absl::StrCat("SELECT state FROM jobs WHERE global_job_id = '", id, "'")), state);
  // An allowed one goes through (the table is not simply frozen).
  EXPECT_TRUE(stack().Sql(absl::StrCat("UPDATE jobs SET state = 9 WHERE global_job_id = '", id, "'")).ok());
}

TEST_F(BackendDbTest, AnIllegalTransitionRequestedByRpcIsRefusedNamingBothStates) {
  // With the no-op Slurm CLIs the job never leaves the queue, whatever the machine's load.
  ASSERT_TRUE(
      stack().StartBackend(Options([](BackendOptions& o) { o.slurm_bin_dir = SR_NOOP_SLURM_DIR; })).ok());
  v1::CreateGlobalJobResponse created;
  ASSERT_TRUE(stack().CallInto("vmc-c1", "CreateGlobalJob", CreateRequestJson(503), &created).ok());
  const v1::Job& job = created.job();
  const std::string id = job.ref().global_job_id();
  WaitForState(id, v1::JOB_STATE_QUEUED);
  // "The workload stopped" for a job the Global Slurm has not placed: no host-agent may report for it (and it
  // would complete a job that never ran).
  const std::string counts = RowCounts();
  CtlOutput stopped = stack().Call(
      "ha-gnode1", "WorkloadStopped",
      absl::StrCat(R"({"workloadId":")", job.workload().workload_id(), R"(","globalJobId":")", id,
                   R"(","node":"gnode1","finalState":"WORKLOAD_STATE_STOPPED","scrub":{"clean":true}})"));
  EXPECT_EQ(stopped.exit_code, 7) << stopped.output;
  EXPECT_TRUE(absl::StrContains(stopped.output, "is not placed on any node")) << stopped.output;
  EXPECT_EQ(RowCounts(), counts);
  // A transition the database's table does not allow (an operator removed QUEUED -> CANCELLING from it): the
  // trigger refuses it, naming both states, and the whole change rolls back.
  Sql("DELETE FROM job_state_transitions WHERE from_state = 2 AND to_state = 7");
  CtlOutput cancel = stack().Call("operator", "CancelJob",
                                  absl::StrCat(R"({"job":{"globalJobId":")", id, R"("},"reason":"x"})"));
  EXPECT_NE(cancel.exit_code, 0) << cancel.output;
  EXPECT_TRUE(absl::StrContains(cancel.output, "illegal state transition QUEUED -> CANCELLING"))
      << cancel.output;
  EXPECT_EQ(RowCounts(), counts);
  EXPECT_EQ(Get(id).state(), v1::JOB_STATE_QUEUED);
}

// GetJob by id is served from backend's read-through cache (job_store.h): after a change that rolls back
// and after one that commits, what it answers is what the database holds.
TEST_F(BackendDbTest, GetJobAnswersWhatTheDatabaseHoldsAfterARolledBackAndACommittedChange) {
  ASSERT_TRUE(
      stack().StartBackend(Options([](BackendOptions& o) { o.slurm_bin_dir = SR_NOOP_SLURM_DIR; })).ok());
  v1::CreateGlobalJobResponse created;
  ASSERT_TRUE(stack().CallInto("vmc-c1", "CreateGlobalJob", CreateRequestJson(504), &created).ok());
  const std::string id = created.job().ref().global_job_id();
  auto state_now = [&] { return static_cast<int>(Get(id).state()); };
  auto state_stored = [&] {
    return Sql(absl::StrCat("SELECT state FROM jobs WHERE global_job_id = '", id, "'"));
  };
  // Wait until submission settled (QUEUED with the no-op sbatch), reading through the cache all along.
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  while (state_now() != v1::JOB_STATE_QUEUED && absl::Now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_EQ(state_now(), v1::JOB_STATE_QUEUED);
  EXPECT_EQ(absl::StrCat(state_now()), state_stored());
  // Rolled back: a change the database refuses (its transition table no longer allows QUEUED -> CANCELLING)
  // changes nothing, in the database or in what GetJob says.
  Sql("DELETE FROM job_state_transitions WHERE from_state = 2 AND to_state = 7");
  CtlOutput refused = stack().Call("operator", "CancelJob",
                                   absl::StrCat(R"({"job":{"globalJobId":")", id, R"("},"reason":"x"})"));
  EXPECT_NE(refused.exit_code, 0) << refused.output;
  EXPECT_EQ(state_now(), v1::JOB_STATE_QUEUED);
  EXPECT_EQ(absl::StrCat(state_now()), state_stored());
  Sql("INSERT INTO job_state_transitions VALUES (2, 7)");
  // Committed: the very next GetJob shows it (CANCELLING, or CANCELLED once the no-op scancel reported).
  ASSERT_EQ(stack()
                .Call("operator", "CancelJob",
                      absl::StrCat(R"({"job":{"globalJobId":")", id, R"("},"reason":"done"})"))
                .exit_code,
            0);
  const int after = state_now();
  EXPECT_TRUE(after == v1::JOB_STATE_CANCELLING || after == v1::JOB_STATE_CANCELLED) << after;
  // The reconciler may move it on between the two reads; they agree once it rests.
  const absl::Time settled = absl::Now() + absl::Seconds(10);
  while (absl::StrCat(state_now()) != state_stored() && absl::Now() < settled) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(absl::StrCat(state_now()), state_stored());
}

TEST_F(BackendDbTest, BadInputIsRefusedPreciselyWithNoPartialRow) {
  ASSERT_TRUE(stack().StartBackend().ok());
  const std::string sql = "x'); DROP TABLE jobs; --";
  struct Case {
    std::string who, json;
    int code;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"vmc-c1", "{}", 3, "local: required"},
      {"vmc-c1", CreateRequestJson(0), 3, "local.local_job_id: \"0\" is not in 1..67108863"},
      {"vmc-c1", CreateRequestJson(601, R"("resources":{"cpus":99999})"), 3,
       "resources.cpus: \"99999\" is not in 0..4096"},
      {"vmc-c1", CreateRequestJson(602, R"("resources":{"timeLimit":"5s"})"), 3, "resources.time_limit"},
      {"vmc-c1", CreateRequestJson(603, R"("resources":{"nodes":4})"), 9, "resources.nodes is 4"},
      {"vmc-c1", CreateRequestJson(604, R"("resources":{"gpus":1})"), 9, "GPU passthrough"},
      // The kind follows exclusive (issue 15): a contradicting one is refused naming workload_kind.
      {"vmc-c1", CreateRequestJson(605, R"("workloadKind":"WORKLOAD_KIND_VM")"), 3,
       "workload_kind: \"WORKLOAD_KIND_VM\" contradicts exclusive true"},
      {"vmc-c1",
       absl::StrCat(
           R"({"local":{"localCluster":"c1","localJobId":606,"token":"sr-test-606"},)",
           R"("user":{"name":"alice","uid":1000},"project":"proj1","slurmctldAddresses":["10.1.1.1:6817"],)",
           R"("workloadKind":"WORKLOAD_KIND_CONTAINER"})"),
       3, "workload_kind: \"WORKLOAD_KIND_CONTAINER\" contradicts exclusive false"},
      {"vmc-c1",
       absl::StrCat(R"({"local":{"localCluster":"c1","localJobId":607,"token":"sr-test-607"},)",
                    R"("user":{"name":"alice","uid":1000},"project":"nope","exclusive":true,)",
                    R"("slurmctldAddresses":["10.1.1.1:6817"]})"),
       5, "project nope is not configured in backend"},
      {"vmc-c1",
       absl::StrCat(R"({"local":{"localCluster":"c1","localJobId":608,"token":"sr-test-608"},)",
                    R"("user":{"name":"alice","uid":1000},"project":"proj2","exclusive":true,)",
                    R"("slurmctldAddresses":["10.1.1.1:6817"]})"),
       7, "project proj2 is not bound to cluster c1"},
      {"vmc-c2", CreateRequestJson(609), 7, "vm-controller c2 may not create jobs for cluster c1"},
      // SQL-ish text in every field with a format: refused, naming the field and quoting the value.
      {"vmc-c1", CreateRequestJson(610).replace(CreateRequestJson(610).find("alice"), 5, sql), 3,
       "user.name: \"x\\'); DROP"},
      {"vmc-c1", CreateRequestJson(611).replace(CreateRequestJson(611).find("proj1"), 5, sql), 3,
       "project: \"x\\');"},
      {"vmc-c1", CreateRequestJson(612).replace(CreateRequestJson(612).find("sr-test-612"), 11, sql), 3,
       "local.token:"},
      {"vmc-c1", CreateRequestJson(613).replace(CreateRequestJson(613).find("\"c1\""), 4, "\"" + sql + "\""),
       3, "local.local_cluster:"},
      {"vmc-c1", CreateRequestJson(614, R"("image":{"name":"../../etc/passwd"})"), 3, "image.name:"},
      {"vmc-c1", CreateRequestJson(615).replace(CreateRequestJson(615).find("10.20.0.2:6817"), 14, sql), 3,
       "slurmctld_addresses[0]:"},
      {"vmc-c1",
       CreateRequestJson(
           616,
           R"("egressAllowlist":[{"destinationCidr":"8.8.8.8/32","protocol":"PROTOCOL_TCP","portStart":53}])"),
       7, "egress_allowlist[0].destination_cidr: 8.8.8.8/32 is outside project proj1's allowlist ceiling"},
      {"vmc-c1",
       CreateRequestJson(
           617,
           R"("egressAllowlist":[{"destinationCidr":"127.0.0.1","protocol":"PROTOCOL_TCP","portStart":53}])"),
       3, "is loopback"},
      {"operator", R"({"job":{"globalJobId":"gj-x"},"reason":""})", 3, "reason: required"},
      {"operator", R"({"job":{}})", 3, "exactly one of global_job_id, local or global_slurm_job_id"},
      {"operator",
       absl::StrCat(R"({"job":{"globalJobId":")", "gj-1'; DELETE FROM jobs", R"("},"reason":"r"})"), 3,
       "job.global_job_id:"},
  };
  const std::string before = RowCounts();
  for (const Case& c : cases) {
    const std::string method = c.who == "operator" ? "CancelJob" : "CreateGlobalJob";
    CtlOutput r = stack().Call(c.who, method, c.json);
    EXPECT_EQ(r.exit_code, c.code) << c.json << "\n" << r.output;
    EXPECT_TRUE(absl::StrContains(r.output, c.message))
        << "expected \"" << c.message << "\" in: " << r.output;
  }
  EXPECT_EQ(RowCounts(), before) << "a refused request left a row behind";
  EXPECT_EQ(Sql("SELECT count(*) FROM jobs"), "0");

  // Free text is accepted and stored verbatim: a rule description and a cancel reason.
  v1::CreateGlobalJobResponse created;
  ASSERT_TRUE(
      stack()
          .CallInto("vmc-c1", "CreateGlobalJob",
                    CreateRequestJson(
                        620, absl::StrCat(R"("egressAllowlist":[{"destinationCidr":"10.9.0.0/16",)",
                                          R"("protocol":"PROTOCOL_TCP","portStart":443,"description":")", sql,
                                          R"("}])")),
                    &created)
          .ok());
  const std::string id = created.job().ref().global_job_id();
  EXPECT_EQ(Sql(absl::StrCat(
                "SELECT spec->'egressAllowlist'->0->>'description' FROM workloads WHERE global_job_id = '",
                id, "'")),
            sql);
  ASSERT_EQ(stack()
                .Call("operator", "CancelJob",
                      absl::StrCat(R"({"job":{"globalJobId":")", id, R"("},"reason":")", sql, R"("})"))
                .exit_code,
            0);
  EXPECT_EQ(
      Sql(absl::StrCat("SELECT message FROM job_timeline WHERE global_job_id = '", id, "' AND to_state = 7")),
      sql);
  EXPECT_EQ(Sql("SELECT count(*) FROM jobs"), "1");  // the table is still there
}

TEST_F(BackendDbTest, EveryBackendRpcAdmitsExactlyTheRolesOfTheAuthorizationTable) {
  ASSERT_TRUE(stack().StartBackend().ok());
  const std::map<std::string, Role> callers = {{"operator", Role::kOperator},
                                               {"vmc-c1", Role::kVmController},
                                               {"ha-gnode1", Role::kHostAgent},
                                               {"netd-gnode1", Role::kNetd},
                                               {"backend", Role::kBackend}};
  int checked = 0;
  for (const AuthzRule& rule : AuthorizationTable()) {
    const std::string method(rule.method);
    if (!absl::StartsWith(method, "/strongroom.v1.Backend/")) continue;
    for (const auto& [who, role] : callers) {
      const bool allowed = std::find(rule.allowed.begin(), rule.allowed.end(), role) != rule.allowed.end();
      CtlOutput r = stack().Ctl(who, {"call", method.substr(1), "{}"});
      // The table's refusal, as strongroomctl prints it (responses may quote such refusals: QueryAudit).
      const bool refused_by_table =
          r.exit_code == 7 &&
          absl::StartsWith(r.output,
                           absl::StrCat("strongroomctl: PERMISSION_DENIED: role ", RoleName(role), " ("));
      EXPECT_EQ(refused_by_table, !allowed) << who << " " << method << ": " << r.output.substr(0, 500);
      EXPECT_NE(r.exit_code, 16) << who << " " << method << ": " << r.output.substr(0, 500);
      ++checked;
    }
    CtlOutput anonymous = stack().Ctl("anonymous", {"call", method.substr(1), "{}"});
    EXPECT_EQ(anonymous.exit_code, 16) << method << ": " << anonymous.output;
  }
  EXPECT_EQ(checked, 13 * 5);
}

TEST_F(BackendDbTest, ListJobsFiltersAndPagesNewestFirst) {
  ASSERT_TRUE(stack().StartBackend().ok());
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i) {
    v1::CreateGlobalJobResponse created;
    ASSERT_TRUE(stack().CallInto("vmc-c1", "CreateGlobalJob", CreateRequestJson(700 + i), &created).ok());
    ids.push_back(created.job().ref().global_job_id());
  }
  v1::ListJobsResponse page;
  ASSERT_TRUE(
      stack().CallInto("operator", "ListJobs", R"({"project":"proj1","page":{"pageSize":2}})", &page).ok());
  ASSERT_EQ(page.jobs_size(), 2);
  EXPECT_EQ(page.jobs(0).ref().global_job_id(), ids[2]);  // newest first
  EXPECT_EQ(page.jobs(1).ref().global_job_id(), ids[1]);
  ASSERT_FALSE(page.page().next_page_token().empty());
  const std::string token = page.page().next_page_token();
  ASSERT_TRUE(
      stack()
          .CallInto("operator", "ListJobs",
                    absl::StrCat(R"({"project":"proj1","page":{"pageSize":2,"pageToken":")", token, R"("}})"),
                    &page)
          .ok());
  ASSERT_EQ(page.jobs_size(), 1);
  EXPECT_EQ(page.jobs(0).ref().global_job_id(), ids[0]);
  EXPECT_TRUE(page.page().next_page_token().empty());
  // The token belongs to its filters.
  CtlOutput other =
      stack().Call("operator", "ListJobs",
                   absl::StrCat(R"({"user":"bob","page":{"pageSize":2,"pageToken":")", token, R"("}})"));
  EXPECT_EQ(other.exit_code, 3) << other.output;
  EXPECT_TRUE(absl::StrContains(other.output, "issued for other filters")) << other.output;
  ASSERT_TRUE(stack().CallInto("operator", "ListJobs", R"({"user":"bob"})", &page).ok());
  EXPECT_EQ(page.jobs_size(), 0);
  ASSERT_TRUE(stack().CallInto("operator", "ListJobs", R"({"states":["JOB_STATE_COMPLETED"]})", &page).ok());
  EXPECT_EQ(page.jobs_size(), 0);
  // strongroomctl's view pages through everything.
  CtlOutput listed = stack().Ctl("operator", {"jobs", "--project", "proj1"});
  EXPECT_EQ(listed.exit_code, 0) << listed.output;
  for (const std::string& id : ids) EXPECT_TRUE(absl::StrContains(listed.output, id)) << listed.output;
}

TEST_F(BackendDbTest, AKilledBackendResumesItsJobsAfterARestart) {
  ASSERT_TRUE(
      stack().StartBackend(Options([](BackendOptions& o) { o.readiness_deadline_seconds = 6; })).ok());
  v1::CreateGlobalJobResponse created;
  ASSERT_TRUE(stack().CallInto("vmc-c1", "CreateGlobalJob", CreateRequestJson(504), &created).ok());
  const std::string id = created.job().ref().global_job_id();
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  while (Sql(absl::StrCat("SELECT state FROM jobs WHERE global_job_id = '", id, "'")) != "3" &&
         absl::Now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  ASSERT_EQ(Sql(absl::StrCat("SELECT state FROM jobs WHERE global_job_id = '", id, "'")), "3");  // STARTING
  ASSERT_TRUE(stack().KillBackend().ok());
  ASSERT_TRUE(
      stack().StartBackend(Options([](BackendOptions& o) { o.readiness_deadline_seconds = 6; })).ok());
  // The restarted backend picks the job up where it was: the readiness deadline still fires and cleans up.
  std::string state;
  const absl::Time end = absl::Now() + absl::Seconds(30);
  while ((state = Sql(absl::StrCat(
              "SELECT state || '/' || end_reason || '/' || need_scancel FROM jobs WHERE global_job_id = '",
              id, "'"))) != "9/12/false" &&
         absl::Now() < end) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  EXPECT_EQ(state, "9/12/false");  // FAILED, READY_DEADLINE_EXCEEDED, scancel done
  EXPECT_EQ(stack().Ctl("operator", {"audit", "verify"}).exit_code, 0);
}

}  // namespace
}  // namespace strongroom::testing
