#include "services/backend/job_store.h"

#include <cstring>
#include <set>
#include <string_view>
#include <unordered_map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/status.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "google/protobuf/util/message_differencer.h"
#include "services/backend/job_state.h"
#include "services/backend/proto_time.h"
#include "services/backend/sql_params.h"

namespace strongroom::backend {
namespace {

using google::protobuf::Message;

constexpr char kSelect[] = R"sql(
SELECT j.global_job_id, j.workload_id, j.local_cluster, j.local_job_id, j.token, j.user_name, j.user_uid,
       j.user_gid, j.project, j.nodes, j.cpus, j.memory_bytes, j.gpus, j.time_limit_seconds, j.exclusive, j.state,
       j.end_reason, j.failure, j.local_end, j.global_slurm_job_id, j.slurm_state, j.submit_attempts,
       j.allocated_cpus, j.allocated_nodes, j.local_submit_us, j.created_us, j.updated_us, j.start_us, j.end_us,
       j.need_scancel, j.need_stop_workload, j.need_provision, j.effect_attempts, j.effect_after_us,
       j.effect_since_us, w.kind, w.state AS w_state, w.node, array_to_string(w.addresses, ',') AS addresses,
       w.identity, w.local_node_name, w.ready_us, w.provisioned_us, w.release_us, w.stopped_us, w.exit, w.scrub,
       w.failure AS w_failure, w.enrollment_ticket_sha256
FROM jobs j JOIN workloads w ON w.global_job_id = j.global_job_id
)sql";

std::string JsonOf(const Message& m) {
  std::string json;
  (void)google::protobuf::util::MessageToJsonString(m, &json);
  return json;
}

// A jsonb column into a message; NULL leaves it unset.
void FromJson(const pqxx::field& f, Message* m) {
  if (f.is_null()) return;
  (void)google::protobuf::util::JsonStringToMessage(f.as<std::string>(), m);
}

// NULL for an unset message field, else its JSON.
template <typename M>
std::optional<std::string> JsonOrNull(bool has, const M& m) {
  if (!has) return std::nullopt;
  return JsonOf(m);
}

void SetTime(const pqxx::field& f, google::protobuf::Timestamp* t) {
  if (!f.is_null()) *t = TimestampOfMicros(f.as<int64_t>());
}

// kSelect's fields by name. libpq's PQfnumber copies and lowercases the name and compares it with every
// column, per field and row (about 50 per job): a measurable share of a GetJob. Every query through here
// selects kSelect, so the positions are looked up once.
class Fields {
 public:
  explicit Fields(const pqxx::row& row) : row_(row), positions_(PositionsOf(row)) {}
  pqxx::field operator[](const char* name) const {
    // The cached position is checked (one strcmp), so a query with another column order is still right.
    auto it = positions_.find(name);
    if (it != positions_.end() && it->second < row_.size()) {
      pqxx::field f = row_[it->second];
      if (std::strcmp(f.name(), name) == 0) return f;
    }
    return row_[name];  // throws for an unknown name
  }

 private:
  using Positions = std::unordered_map<std::string_view, pqxx::row::size_type>;
  static const Positions& PositionsOf(const pqxx::row& row) {
    static const Positions* const positions = [&] {
      auto* p = new Positions();
      for (pqxx::row::size_type i = 0; i < row.size(); ++i) {
        // The names live as long as the process: kept in a static set, not in the result.
        static std::set<std::string>* const names = new std::set<std::string>();
        (*p)[*names->insert(row[i].name()).first] = i;
      }
      return p;
    }();
    return *positions;
  }

  const pqxx::row& row_;
  const Positions& positions_;
};

JobRecord RecordOfRow(const pqxx::row& pqrow) {
  const Fields row(pqrow);
  JobRecord r;
  v1::Job& job = r.job;
  v1::JobRef* ref = job.mutable_ref();
  ref->set_global_job_id(row["global_job_id"].as<std::string>());
  if (!row["global_slurm_job_id"].is_null())
    ref->set_global_slurm_job_id(row["global_slurm_job_id"].as<uint32_t>());
  ref->mutable_local()->set_local_cluster(row["local_cluster"].as<std::string>());
  ref->mutable_local()->set_local_job_id(row["local_job_id"].as<uint32_t>());
  ref->mutable_local()->set_token(row["token"].as<std::string>());
  ref->mutable_user()->set_name(row["user_name"].as<std::string>());
  ref->mutable_user()->set_uid(row["user_uid"].as<uint32_t>());
  ref->mutable_user()->set_gid(row["user_gid"].as<uint32_t>());
  ref->set_project(row["project"].as<std::string>());
  v1::Resources* res = job.mutable_resources();
  res->set_nodes(row["nodes"].as<uint32_t>());
  res->set_cpus(row["cpus"].as<uint32_t>());
  res->set_memory_bytes(row["memory_bytes"].as<uint64_t>());
  res->set_gpus(row["gpus"].as<uint32_t>());
  if (const int64_t limit = row["time_limit_seconds"].as<int64_t>(); limit > 0)
    res->mutable_time_limit()->set_seconds(limit);
  job.set_exclusive(row["exclusive"].as<bool>());
  job.set_state(static_cast<v1::JobState>(row["state"].as<int>()));
  job.set_end_reason(static_cast<v1::JobEndReason>(row["end_reason"].as<int>()));
  FromJson(row["failure"], job.mutable_failure());
  if (row["failure"].is_null()) job.clear_failure();
  FromJson(row["local_end"], job.mutable_local_end());
  if (row["local_end"].is_null()) job.clear_local_end();
  job.set_submit_attempts(row["submit_attempts"].as<uint32_t>());
  job.set_allocated_cpus(row["allocated_cpus"].as<uint32_t>());
  SetTime(row["created_us"], job.mutable_created_time());
  SetTime(row["updated_us"], job.mutable_updated_time());
  if (!row["start_us"].is_null()) SetTime(row["start_us"], job.mutable_start_time());
  if (!row["end_us"].is_null()) SetTime(row["end_us"], job.mutable_end_time());

  v1::JobWorkload* w = job.mutable_workload();
  w->set_workload_id(row["workload_id"].as<std::string>());
  w->set_kind(static_cast<v1::WorkloadKind>(row["kind"].as<int>()));
  w->set_state(static_cast<v1::WorkloadState>(row["w_state"].as<int>()));
  w->set_node(row["node"].as<std::string>());
  for (absl::string_view a : absl::StrSplit(row["addresses"].as<std::string>(), ',', absl::SkipEmpty())) {
    w->add_addresses(std::string(a));
  }
  if (!row["identity"].is_null()) FromJson(row["identity"], w->mutable_identity());
  w->set_local_node_name(row["local_node_name"].as<std::string>());
  if (!row["ready_us"].is_null()) SetTime(row["ready_us"], w->mutable_ready_time());
  if (!row["provisioned_us"].is_null()) SetTime(row["provisioned_us"], w->mutable_provisioned_time());
  if (!row["release_us"].is_null()) SetTime(row["release_us"], w->mutable_release_time());
  if (!row["stopped_us"].is_null()) SetTime(row["stopped_us"], w->mutable_stopped_time());
  if (!row["exit"].is_null()) FromJson(row["exit"], w->mutable_exit());
  if (!row["scrub"].is_null()) FromJson(row["scrub"], w->mutable_scrub());
  if (!row["w_failure"].is_null()) FromJson(row["w_failure"], w->mutable_failure());
  w->set_enrollment_ticket_sha256(row["enrollment_ticket_sha256"].as<std::string>());

  r.local_submit_time = TimeOfMicros(row["local_submit_us"].as<int64_t>());
  r.slurm_state = row["slurm_state"].as<std::string>();
  r.need_scancel = row["need_scancel"].as<bool>();
  r.need_stop_workload = row["need_stop_workload"].as<bool>();
  r.need_provision = row["need_provision"].as<bool>();
  r.effect_attempts = row["effect_attempts"].as<int>();
  r.effect_after = TimeOfMicros(row["effect_after_us"].as<int64_t>());
  r.effect_since = TimeOfMicros(row["effect_since_us"].as<int64_t>());
  return r;
}

std::optional<int64_t> MicrosOrNull(bool has, const google::protobuf::Timestamp& t) {
  if (!has) return std::nullopt;
  return MicrosOfTimestamp(t);
}

std::optional<int64_t> StateOrNull(v1::JobState s) {
  if (s == v1::JOB_STATE_UNSPECIFIED) return std::nullopt;
  return static_cast<int64_t>(s);
}

std::string DetailsJson(const std::map<std::string, std::string>& details) {
  google::protobuf::Struct s;
  for (const auto& [k, v] : details) (*s.mutable_fields())[k].set_string_value(v);
  return JsonOf(s);
}

void InsertTimeline(pqxx::transaction_base& t, const std::string& job_id, absl::Time now, v1::JobState from,
                    const TimelineItem& item) {
  const bool transition = item.to != v1::JOB_STATE_UNSPECIFIED;
  SqlParams p;
  p.Text(job_id).Int(MicrosOf(now));
  p.OptionalInt(transition ? StateOrNull(from) : std::nullopt).OptionalInt(StateOrNull(item.to));
  p.OptionalText(transition ? std::nullopt : std::optional<std::string>(item.event));
  p.Text(item.actor)
      .Int(item.outcome)
      .Int(item.status_code)
      .Text(item.message)
      .Text(DetailsJson(item.details));
  t.exec_prepared("insert_timeline", p.Dynamic());
}

}  // namespace

std::string DescribeSelector(const v1::JobSelector& selector) {
  switch (selector.key_case()) {
    case v1::JobSelector::kGlobalJobId:
      return absl::StrCat("global_job_id ", selector.global_job_id());
    case v1::JobSelector::kGlobalSlurmJobId:
      return absl::StrCat("global_slurm_job_id ", selector.global_slurm_job_id());
    case v1::JobSelector::kLocal: {
      const v1::LocalJobKey& key = selector.local();
      return absl::StrCat("local job ", key.local_cluster(), "/",
                          key.local_job_id() != 0 ? absl::StrCat(key.local_job_id()) : key.token());
    }
    case v1::JobSelector::KEY_NOT_SET:
      break;
  }
  return "no selector";
}

JobStore::JobStore(Database* db) : db_(db) {
  // The reads are prepared: planning the two-table select with its optional filters cost more than running
  // it (about 0.2-0.8 ms against 0.1 ms for a page of ListJobs).
  db_->Prepare("select_job_by_id", absl::StrCat(kSelect, " WHERE j.global_job_id = $1"));
  db_->Prepare("select_job_by_slurm_id",
               absl::StrCat(kSelect, " WHERE j.global_slurm_job_id = $1 ORDER BY j.created_us DESC LIMIT 1"));
  db_->Prepare("select_job_by_local",
               absl::StrCat(kSelect,
                            " WHERE j.local_cluster = $1 AND ($2::bigint = 0 OR j.local_job_id = $2) "
                            "AND ($3::text = '' OR j.token = $3) ORDER BY j.created_us DESC LIMIT 1"));
  db_->Prepare("list_jobs", absl::StrCat(kSelect, R"sql(
WHERE (cardinality($1::smallint[]) = 0 OR j.state = ANY($1::smallint[]))
  AND ($2::text = '' OR j.project = $2) AND ($3::text = '' OR j.user_name = $3) AND ($4::text = '' OR j.local_cluster = $4)
  AND ($5::bigint IS NULL OR j.created_us >= $5) AND ($6::bigint IS NULL OR j.created_us < $6)
  AND ($7::bigint IS NULL OR (j.created_us, j.global_job_id) < ($7, $8))
ORDER BY j.created_us DESC, j.global_job_id DESC LIMIT $9)sql"));
  db_->Prepare("select_job_for_update",
               absl::StrCat(kSelect, " WHERE j.global_job_id = $1 FOR UPDATE OF j, w"));
  db_->Prepare(
      "insert_timeline",
      "INSERT INTO job_timeline (global_job_id, time_us, from_state, to_state, event, actor, outcome, "
      "status_code, message, details) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::jsonb)");
  db_->Prepare("insert_job", R"sql(
INSERT INTO jobs (global_job_id, workload_id, local_cluster, local_job_id, token, user_name, user_uid, user_gid,
                  project, nodes, cpus, memory_bytes, gpus, time_limit_seconds, exclusive, state, local_submit_us,
                  created_us, updated_us, request)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, 1, $16, $17, $17, $18)
ON CONFLICT (local_cluster, local_job_id) DO NOTHING RETURNING global_job_id)sql");
  db_->Prepare("insert_workload",
               "INSERT INTO workloads (workload_id, global_job_id, kind, local_node_name, spec) "
               "VALUES ($1, $2, $3, $4, $5::jsonb)");
  db_->Prepare("set_state", "UPDATE jobs SET state = $2 WHERE global_job_id = $1");
  db_->Prepare("update_job", R"sql(
UPDATE jobs SET end_reason = $2, failure = $3::jsonb, local_end = $4::jsonb, global_slurm_job_id = $5,
    slurm_state = $6, submit_attempts = $7, allocated_cpus = $8, allocated_nodes = $9, updated_us = $10,
    start_us = $11, end_us = $12, need_scancel = $13, need_stop_workload = $14, need_provision = $15,
    effect_attempts = $16, effect_after_us = $17, effect_since_us = $18
WHERE global_job_id = $1)sql");
  db_->Prepare("update_workload", R"sql(
UPDATE workloads SET state = $2, node = $3, addresses = string_to_array($4, ','), identity = $5::jsonb,
    ready_us = $6, provisioned_us = $7, release_us = $8, stopped_us = $9, exit = $10::jsonb, scrub = $11::jsonb,
    failure = $12::jsonb, enrollment_ticket_sha256 = $13
WHERE workload_id = $1)sql");
}

absl::Status JobStore::CheckTransitionTable() {
  std::set<std::pair<int, int>> in_db, in_code;
  for (const auto& [from, to] : AllowedTransitions()) in_code.insert({from, to});
  SR_RETURN_IF_ERROR(db_->Read("read job_state_transitions", [&](pqxx::transaction_base& t) {
    for (const pqxx::row& row : t.exec("SELECT from_state, to_state FROM job_state_transitions")) {
      in_db.insert({row[0].as<int>(), row[1].as<int>()});
    }
    return absl::OkStatus();
  }));
  if (in_db == in_code) return absl::OkStatus();
  return absl::FailedPreconditionError(
      "the database's job_state_transitions differs from this build's transition table (job_state.cc); "
      "add a migration that makes them equal");
}

absl::StatusOr<JobStore::Created> JobStore::Create(const NewJob& n) {
  Created out;
  const v1::Job& job = n.record.job;
  const v1::JobRef& ref = job.ref();
  const std::string request = n.request.SerializeAsString();
  SR_RETURN_IF_ERROR(db_->Transact("CreateGlobalJob", [&](pqxx::transaction_base& t) -> absl::Status {
    const auto& res = job.resources();
    SqlParams p;
    p.Text(ref.global_job_id()).Text(job.workload().workload_id()).Text(ref.local().local_cluster());
    p.Int(ref.local().local_job_id()).Text(ref.local().token()).Text(ref.user().name()).Int(ref.user().uid());
    p.Int(ref.user().gid()).Text(ref.project()).Int(res.nodes()).Int(res.cpus());
    p.Int(static_cast<int64_t>(res.memory_bytes())).Int(res.gpus()).Int(res.time_limit().seconds());
    p.Bool(job.exclusive())
        .Int(MicrosOf(n.record.local_submit_time))
        .Int(MicrosOfTimestamp(job.created_time()));
    p.Bytes(request);
    pqxx::result inserted = t.exec_prepared("insert_job", p.Dynamic());
    if (inserted.empty()) {
      pqxx::result existing = t.exec_params(
          "SELECT global_job_id, request FROM jobs WHERE local_cluster = $1 AND local_job_id = $2",
          ref.local().local_cluster(), static_cast<int64_t>(ref.local().local_job_id()));
      if (existing.empty()) return absl::AbortedError("CreateGlobalJob: conflicting job vanished; retry");
      v1::CreateGlobalJobRequest stored;
      stored.ParseFromString(pqxx::binarystring(existing[0][1]).str());
      const std::string existing_id = existing[0][0].as<std::string>();
      if (!google::protobuf::util::MessageDifferencer::Equals(stored, n.request)) {
        return absl::AlreadyExistsError(absl::StrCat("local job ", ref.local().local_cluster(), "/",
                                                     ref.local().local_job_id(), " already has global job ",
                                                     existing_id, ", created from a different request"));
      }
      pqxx::result row = t.exec_prepared("select_job_by_id", existing_id);
      out.record = RecordOfRow(row[0]);
      out.created = false;
      return absl::OkStatus();
    }
    t.exec_prepared("insert_workload", job.workload().workload_id(), ref.global_job_id(),
                    static_cast<int>(job.workload().kind()), job.workload().local_node_name(),
                    JsonOf(n.spec));
    InsertTimeline(t, ref.global_job_id(), TimeOfMicros(MicrosOfTimestamp(job.created_time())),
                   v1::JOB_STATE_UNSPECIFIED, n.created);
    out.record = n.record;
    out.created = true;
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<JobRecord> JobStore::GetById(const std::string& id) {
  v1::JobSelector selector;
  selector.set_global_job_id(id);
  return Get(selector);
}

namespace {
constexpr size_t kCacheMax = 20000;  // jobs; a record is about 1 KB
}  // namespace

std::optional<JobRecord> JobStore::Cached(const std::string& id, uint64_t* generation) {
  std::lock_guard<std::mutex> lock(cache_mu_);
  *generation = generation_;
  auto it = cache_.find(id);
  if (it == cache_.end()) return std::nullopt;
  return it->second;
}

void JobStore::Fill(const std::string& id, uint64_t generation, const JobRecord& record) {
  std::lock_guard<std::mutex> lock(cache_mu_);
  if (generation != generation_ || writing_.count(id) > 0) return;
  if (cache_.size() >= kCacheMax && cache_.count(id) == 0) cache_.erase(cache_.begin());
  cache_[id] = record;
}

void JobStore::BeginWrite(const std::string& id) {
  std::lock_guard<std::mutex> lock(cache_mu_);
  ++writing_[id];
  cache_.erase(id);
}

void JobStore::EndWrite(const std::string& id) {
  std::lock_guard<std::mutex> lock(cache_mu_);
  cache_.erase(id);
  ++generation_;
  if (--writing_[id] == 0) writing_.erase(id);
}

absl::StatusOr<JobRecord> JobStore::Get(const v1::JobSelector& selector) {
  std::optional<JobRecord> found;
  const bool by_id = selector.key_case() == v1::JobSelector::kGlobalJobId;
  uint64_t generation = 0;
  if (by_id) {
    found = Cached(selector.global_job_id(), &generation);
    if (found) return *std::move(found);
  }
  SR_RETURN_IF_ERROR(db_->Read("GetJob", [&](pqxx::transaction_base& t) {
    pqxx::result r;
    switch (selector.key_case()) {
      case v1::JobSelector::kGlobalJobId:
        r = t.exec_prepared("select_job_by_id", selector.global_job_id());
        break;
      case v1::JobSelector::kGlobalSlurmJobId:
        r = t.exec_prepared("select_job_by_slurm_id", static_cast<int64_t>(selector.global_slurm_job_id()));
        break;
      case v1::JobSelector::kLocal: {
        const v1::LocalJobKey& key = selector.local();
        r = t.exec_prepared("select_job_by_local", key.local_cluster(),
                            static_cast<int64_t>(key.local_job_id()), key.token());
        break;
      }
      case v1::JobSelector::KEY_NOT_SET:
        return absl::InvalidArgumentError("job: a selector is required");
    }
    if (!r.empty()) found = RecordOfRow(r[0]);
    return absl::OkStatus();
  }));
  if (!found) return absl::NotFoundError(absl::StrCat("no job with ", DescribeSelector(selector)));
  if (by_id) Fill(selector.global_job_id(), generation, *found);
  return *std::move(found);
}

absl::StatusOr<JobRecord> JobStore::GetByWorkloadId(const std::string& workload_id) {
  std::optional<JobRecord> found;
  SR_RETURN_IF_ERROR(db_->Read("find workload", [&](pqxx::transaction_base& t) {
    pqxx::result r = t.exec_params(absl::StrCat(kSelect, " WHERE w.workload_id = $1"), workload_id);
    if (!r.empty()) found = RecordOfRow(r[0]);
    return absl::OkStatus();
  }));
  if (!found) return absl::NotFoundError(absl::StrCat("no workload ", workload_id));
  return *std::move(found);
}

absl::StatusOr<v1::WorkloadSpec> JobStore::GetSpec(const std::string& global_job_id) {
  v1::WorkloadSpec spec;
  bool found = false;
  SR_RETURN_IF_ERROR(db_->Read("read workload spec", [&](pqxx::transaction_base& t) {
    pqxx::result r = t.exec_params("SELECT spec FROM workloads WHERE global_job_id = $1", global_job_id);
    if (!r.empty()) {
      FromJson(r[0][0], &spec);
      found = true;
    }
    return absl::OkStatus();
  }));
  if (!found) return absl::NotFoundError(absl::StrCat("no workload for job ", global_job_id));
  return spec;
}

absl::StatusOr<std::vector<JobRecord>> JobStore::List(const ListFilter& f,
                                                      std::optional<std::pair<int64_t, std::string>> after,
                                                      int limit) {
  std::vector<int> states;
  for (v1::JobState s : f.states) states.push_back(static_cast<int>(s));
  const std::string state_array = absl::StrCat("{", absl::StrJoin(states, ","), "}");
  SqlParams p;
  p.Text(state_array).Text(f.project).Text(f.user).Text(f.local_cluster);
  p.OptionalInt(f.created_from ? std::optional<int64_t>(MicrosOf(*f.created_from)) : std::nullopt);
  p.OptionalInt(f.created_to ? std::optional<int64_t>(MicrosOf(*f.created_to)) : std::nullopt);
  p.OptionalInt(after ? std::optional<int64_t>(after->first) : std::nullopt);
  p.Text(after ? after->second : std::string()).Int(limit);
  std::vector<JobRecord> out;
  SR_RETURN_IF_ERROR(db_->Read("ListJobs", [&](pqxx::transaction_base& t) {
    pqxx::result r = t.exec_prepared("list_jobs", p.Dynamic());
    for (const pqxx::row& row : r) out.push_back(RecordOfRow(row));
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<std::vector<v1::TimelineEntry>> JobStore::Timeline(const std::string& global_job_id) {
  std::vector<v1::TimelineEntry> out;
  SR_RETURN_IF_ERROR(db_->Read("GetJobTimeline", [&](pqxx::transaction_base& t) {
    pqxx::result r = t.exec_params(
        "SELECT time_us, audit_sequence, from_state, to_state, event, actor, message, details::text "
        "FROM job_timeline WHERE global_job_id = $1 ORDER BY id LIMIT 1000",
        global_job_id);
    for (const pqxx::row& row : r) {
      v1::TimelineEntry e;
      *e.mutable_time() = TimestampOfMicros(row[0].as<int64_t>());
      if (!row[1].is_null()) e.set_audit_sequence(row[1].as<uint64_t>());
      if (!row[2].is_null()) e.set_from_state(static_cast<v1::JobState>(row[2].as<int>()));
      if (!row[3].is_null()) e.set_to_state(static_cast<v1::JobState>(row[3].as<int>()));
      if (!row[4].is_null()) e.set_event(row[4].as<std::string>());
      *e.mutable_actor() = v1::Identity();
      e.mutable_actor()->set_spiffe_id(row[5].as<std::string>());
      e.set_message(row[6].as<std::string>());
      google::protobuf::Struct details;
      (void)google::protobuf::util::JsonStringToMessage(row[7].as<std::string>(), &details);
      for (const auto& [k, v] : details.fields()) (*e.mutable_details())[k] = v.string_value();
      out.push_back(std::move(e));
    }
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<std::vector<JobRecord>> JobStore::Active() {
  std::vector<JobRecord> out;
  SR_RETURN_IF_ERROR(db_->Read("load active jobs", [&](pqxx::transaction_base& t) {
    pqxx::result r = t.exec(absl::StrCat(kSelect,
                                         " WHERE j.state < 8 OR j.need_scancel OR j.need_stop_workload OR "
                                         "j.need_provision ORDER BY j.created_us"));
    for (const pqxx::row& row : r) out.push_back(RecordOfRow(row));
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<std::vector<RunRecord>> JobStore::Runs(const std::string& project, absl::Time from,
                                                      absl::Time to) {
  std::vector<RunRecord> out;
  SR_RETURN_IF_ERROR(db_->Read("UsageReport", [&](pqxx::transaction_base& t) {
    pqxx::result r = t.exec_params(
        "SELECT user_name, state, start_us, end_us, allocated_nodes, allocated_cpus FROM jobs "
        "WHERE project = $1 AND start_us IS NOT NULL AND start_us < $3 AND (end_us IS NULL OR end_us > $2)",
        project, MicrosOf(from), MicrosOf(to));
    for (const pqxx::row& row : r) {
      RunRecord run;
      run.user = row[0].as<std::string>();
      run.state = static_cast<v1::JobState>(row[1].as<int>());
      run.start = TimeOfMicros(row[2].as<int64_t>());
      if (!row[3].is_null()) run.end = TimeOfMicros(row[3].as<int64_t>());
      run.nodes = std::max(1, row[4].as<int>());
      run.cpus = row[5].as<uint32_t>();
      out.push_back(run);
    }
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<JobRecord> JobStore::Update(const std::string& id, absl::string_view what,
                                           const Decide& decide) {
  BeginWrite(id);
  struct End {
    JobStore* store;
    const std::string& id;
    ~End() { store->EndWrite(id); }
  } end{this, id};
  JobRecord result;
  SR_RETURN_IF_ERROR(db_->Transact(what, [&](pqxx::transaction_base& t) -> absl::Status {
    pqxx::result r = t.exec_prepared("select_job_for_update", id);
    if (r.empty()) return absl::NotFoundError(absl::StrCat("no job with global_job_id ", id));
    const JobRecord before = RecordOfRow(r[0]);
    JobRecord after = before;
    SR_ASSIGN_OR_RETURN(std::vector<TimelineItem> items, decide(after));
    const absl::Time now = TimeOfMicros(MicrosOf(absl::Now()));
    v1::JobState state = before.job.state();
    std::vector<v1::JobState> from_states;
    for (const TimelineItem& item : items) {
      from_states.push_back(state);
      if (item.to == v1::JOB_STATE_UNSPECIFIED) continue;
      SR_RETURN_IF_ERROR(CheckTransition(id, state, item.to));
      t.exec_prepared("set_state", id, static_cast<int>(item.to));
      state = item.to;
    }
    after.job.set_state(state);
    if (state != before.job.state()) {
      *after.job.mutable_updated_time() = TimestampOfMicros(MicrosOf(now));
      if (IsTerminal(state) && !after.job.has_end_time())
        *after.job.mutable_end_time() = TimestampOfMicros(MicrosOf(now));
    }
    const bool changed =
        !items.empty() || !google::protobuf::util::MessageDifferencer::Equals(before.job, after.job) ||
        before.slurm_state != after.slurm_state || before.need_scancel != after.need_scancel ||
        before.need_stop_workload != after.need_stop_workload ||
        before.need_provision != after.need_provision || before.effect_attempts != after.effect_attempts ||
        before.effect_after != after.effect_after || before.effect_since != after.effect_since;
    if (!changed) {
      result = before;
      return absl::OkStatus();
    }
    const v1::Job& j = after.job;
    SqlParams job;
    job.Text(id).Int(j.end_reason());
    job.OptionalText(j.has_failure() ? std::optional<std::string>(JsonOf(j.failure())) : std::nullopt);
    job.OptionalText(j.has_local_end() ? std::optional<std::string>(JsonOf(j.local_end())) : std::nullopt);
    job.OptionalInt(j.ref().global_slurm_job_id() == 0
                        ? std::nullopt
                        : std::optional<int64_t>(j.ref().global_slurm_job_id()));
    job.Text(after.slurm_state)
        .Int(j.submit_attempts())
        .Int(j.allocated_cpus())
        .Int(j.allocated_cpus() > 0 ? 1 : 0);
    job.Int(MicrosOfTimestamp(j.updated_time()));
    job.OptionalInt(MicrosOrNull(j.has_start_time(), j.start_time()));
    job.OptionalInt(MicrosOrNull(j.has_end_time(), j.end_time()));
    job.Bool(after.need_scancel).Bool(after.need_stop_workload).Bool(after.need_provision);
    job.Int(after.effect_attempts).Int(MicrosOf(after.effect_after)).Int(MicrosOf(after.effect_since));
    t.exec_prepared("update_job", job.Dynamic());
    const v1::JobWorkload& w = j.workload();
    if (!google::protobuf::util::MessageDifferencer::Equals(before.job.workload(), w)) {
      auto json = [](bool has, const Message& m) {
        return has ? std::optional<std::string>(JsonOf(m)) : std::nullopt;
      };
      SqlParams wp;
      wp.Text(w.workload_id()).Int(w.state()).Text(w.node()).Text(absl::StrJoin(w.addresses(), ","));
      wp.OptionalText(json(w.has_identity(), w.identity()));
      wp.OptionalInt(MicrosOrNull(w.has_ready_time(), w.ready_time()));
      wp.OptionalInt(MicrosOrNull(w.has_provisioned_time(), w.provisioned_time()));
      wp.OptionalInt(MicrosOrNull(w.has_release_time(), w.release_time()));
      wp.OptionalInt(MicrosOrNull(w.has_stopped_time(), w.stopped_time()));
      wp.OptionalText(json(w.has_exit(), w.exit()));
      wp.OptionalText(json(w.has_scrub(), w.scrub()));
      wp.OptionalText(json(w.has_failure(), w.failure()));
      wp.Text(w.enrollment_ticket_sha256());
      t.exec_prepared("update_workload", wp.Dynamic());
    }
    for (size_t i = 0; i < items.size(); ++i) InsertTimeline(t, id, now, from_states[i], items[i]);
    result = std::move(after);
    return absl::OkStatus();
  }));
  return result;
}

}  // namespace strongroom::backend
