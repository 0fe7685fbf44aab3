#include "services/vm_controller/local_job_store.h"

#include <sqlite3.h>

#include <algorithm>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "google/protobuf/util/message_differencer.h"
#include "services/vm_controller/local_job_state.h"

namespace strongroom::vm_controller {
namespace {

constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS local_jobs (
  token        TEXT PRIMARY KEY,
  local_job_id INTEGER NOT NULL DEFAULT 0,
  workload_id  TEXT NOT NULL DEFAULT '',
  state        INTEGER NOT NULL,
  submit_us    INTEGER NOT NULL,
  record       BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS local_jobs_by_id ON local_jobs(local_job_id);
CREATE INDEX IF NOT EXISTS local_jobs_by_workload ON local_jobs(workload_id);
CREATE TABLE IF NOT EXISTS local_job_transitions (
  seq        INTEGER PRIMARY KEY AUTOINCREMENT,
  token      TEXT NOT NULL,
  from_state INTEGER NOT NULL,
  to_state   INTEGER NOT NULL,
  at_us      INTEGER NOT NULL,
  reason     TEXT NOT NULL
);
)sql";

absl::Status SqlError(sqlite3* db, absl::string_view what) {
  return absl::InternalError(absl::StrCat("vm-controller state DB: ", what, ": ", sqlite3_errmsg(db)));
}

// A prepared statement that finalizes itself.
class Statement {
 public:
  Statement(sqlite3* db, const std::string& sql) { sqlite3_prepare_v2(db, sql.c_str(), -1, &stmt_, nullptr); }
  ~Statement() { sqlite3_finalize(stmt_); }
  sqlite3_stmt* get() const { return stmt_; }
  bool ok() const { return stmt_ != nullptr; }

 private:
  sqlite3_stmt* stmt_ = nullptr;
};

// The parts of a ConvertLocalJob request that make two submissions "the same".
bool SameRequest(const v1::LocalJob& a, const v1::LocalJob& b) {
  using google::protobuf::util::MessageDifferencer;
  return a.local().local_cluster() == b.local().local_cluster() && MessageDifferencer::Equals(a.user(), b.user()) &&
         a.project() == b.project() && MessageDifferencer::Equals(a.resources(), b.resources()) &&
         a.exclusive() == b.exclusive();
}

int64_t NowMicros() { return absl::ToUnixMicros(absl::Now()); }

}  // namespace

absl::StatusOr<std::unique_ptr<LocalJobStore>> LocalJobStore::Open(const std::string& path) {
  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(path).parent_path(), ec);
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                      nullptr) != SQLITE_OK) {
    absl::Status s = absl::FailedPreconditionError(absl::StrCat("cannot open state DB ", path, ": ",
                                                                db ? sqlite3_errmsg(db) : "out of memory"));
    sqlite3_close(db);
    return s;
  }
  sqlite3_busy_timeout(db, 5000);
  for (const char* sql : {"PRAGMA journal_mode=WAL;", "PRAGMA synchronous=FULL;", kSchema}) {
    if (sqlite3_exec(db, sql, nullptr, nullptr, nullptr) != SQLITE_OK) {
      absl::Status s = SqlError(db, "schema");
      sqlite3_close(db);
      return s;
    }
  }
  return std::unique_ptr<LocalJobStore>(new LocalJobStore(db));
}

LocalJobStore::~LocalJobStore() {
  absl::MutexLock lock(&mu_);
  sqlite3_close(db_);
}

absl::StatusOr<v1::LocalJob> LocalJobStore::GetWhere(const std::string& where, const std::string& value) {
  Statement stmt(db_, absl::StrCat("SELECT record FROM local_jobs WHERE ", where, " = ?1"));
  if (!stmt.ok()) return SqlError(db_, "select");
  sqlite3_bind_text(stmt.get(), 1, value.c_str(), -1, SQLITE_TRANSIENT);
  if (sqlite3_step(stmt.get()) != SQLITE_ROW) {
    return absl::NotFoundError(absl::StrCat("no local job with ", where, " ", value));
  }
  v1::LocalJob job;
  if (!job.ParseFromArray(sqlite3_column_blob(stmt.get(), 0), sqlite3_column_bytes(stmt.get(), 0))) {
    return absl::DataLossError(absl::StrCat("local job ", value, ": stored record does not parse"));
  }
  return job;
}

absl::Status LocalJobStore::Put(const v1::LocalJob& job, bool insert) {
  Statement stmt(db_, insert ? "INSERT INTO local_jobs(token, local_job_id, workload_id, state, submit_us, record) "
                               "VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
                             : "UPDATE local_jobs SET local_job_id = ?2, workload_id = ?3, state = ?4, "
                               "submit_us = ?5, record = ?6 WHERE token = ?1");
  if (!stmt.ok()) return SqlError(db_, "prepare write");
  const std::string record = job.SerializeAsString();
  sqlite3_bind_text(stmt.get(), 1, job.local().token().c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_int64(stmt.get(), 2, job.local().local_job_id());
  sqlite3_bind_text(stmt.get(), 3, job.workload_id().c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_int(stmt.get(), 4, job.state());
  sqlite3_bind_int64(stmt.get(), 5, job.submit_time().seconds() * 1000000 + job.submit_time().nanos() / 1000);
  sqlite3_bind_blob(stmt.get(), 6, record.data(), static_cast<int>(record.size()), SQLITE_TRANSIENT);
  if (sqlite3_step(stmt.get()) != SQLITE_DONE) return SqlError(db_, "write");
  return absl::OkStatus();
}

absl::StatusOr<std::pair<v1::LocalJob, bool>> LocalJobStore::Insert(const v1::LocalJob& job) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<v1::LocalJob> existing = GetWhere("token", job.local().token());
  if (existing.ok()) {
    if (!SameRequest(*existing, job)) {
      return absl::AlreadyExistsError(absl::StrCat("token ", job.local().token(),
                                                   " is already recorded with a different request"));
    }
    return std::make_pair(*existing, false);
  }
  if (!absl::IsNotFound(existing.status())) return existing.status();
  if (absl::Status s = Put(job, /*insert=*/true); !s.ok()) return s;
  return std::make_pair(job, true);
}

absl::StatusOr<v1::LocalJob> LocalJobStore::Get(const std::string& token) {
  absl::MutexLock lock(&mu_);
  return GetWhere("token", token);
}

absl::StatusOr<v1::LocalJob> LocalJobStore::GetByJobId(uint32_t local_job_id) {
  absl::MutexLock lock(&mu_);
  return GetWhere("local_job_id", absl::StrCat(local_job_id));
}

absl::StatusOr<v1::LocalJob> LocalJobStore::GetByWorkload(const std::string& workload_id) {
  absl::MutexLock lock(&mu_);
  return GetWhere("workload_id", workload_id);
}

absl::StatusOr<v1::LocalJob> LocalJobStore::Update(const std::string& token, v1::LocalJobState to,
                                                   const std::function<void(v1::LocalJob*)>& mutate,
                                                   const std::string& reason,
                                                   const std::vector<v1::LocalJobState>& only_from) {
  absl::MutexLock lock(&mu_);
  if (sqlite3_exec(db_, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr) != SQLITE_OK) return SqlError(db_, "begin");
  auto rollback = [&](absl::Status s) {
    sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
    return s;
  };
  absl::StatusOr<v1::LocalJob> job = GetWhere("token", token);
  if (!job.ok()) return rollback(job.status());
  const v1::LocalJobState from = job->state();
  if (!only_from.empty() && std::find(only_from.begin(), only_from.end(), from) == only_from.end()) {
    return rollback(absl::FailedPreconditionError(absl::StrCat("local job ", token, " is ",
                                                               v1::LocalJobState_Name(from), "; cannot ", reason)));
  }
  if (from != to) {
    if (absl::Status s = CheckTransition(from, to); !s.ok()) {
      return rollback(absl::FailedPreconditionError(absl::StrCat("local job ", token, ": ", s.message())));
    }
  }
  if (mutate) mutate(&*job);
  job->set_state(to);
  const int64_t now = NowMicros();
  job->mutable_updated_time()->set_seconds(now / 1000000);
  job->mutable_updated_time()->set_nanos(static_cast<int32_t>(now % 1000000) * 1000);
  if (absl::Status s = Put(*job, /*insert=*/false); !s.ok()) return rollback(s);
  if (from != to) {
    Statement log(db_, "INSERT INTO local_job_transitions(token, from_state, to_state, at_us, reason) "
                       "VALUES (?1, ?2, ?3, ?4, ?5)");
    sqlite3_bind_text(log.get(), 1, token.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_int(log.get(), 2, from);
    sqlite3_bind_int(log.get(), 3, to);
    sqlite3_bind_int64(log.get(), 4, now);
    sqlite3_bind_text(log.get(), 5, reason.c_str(), -1, SQLITE_TRANSIENT);
    if (!log.ok() || sqlite3_step(log.get()) != SQLITE_DONE) return rollback(SqlError(db_, "transition log"));
  }
  if (sqlite3_exec(db_, "COMMIT", nullptr, nullptr, nullptr) != SQLITE_OK) return rollback(SqlError(db_, "commit"));
  return job;
}

absl::StatusOr<std::vector<v1::LocalJob>> LocalJobStore::List(const std::vector<v1::LocalJobState>& states,
                                                             int limit) {
  absl::MutexLock lock(&mu_);
  std::string sql = "SELECT record FROM local_jobs";
  if (!states.empty()) {
    sql += " WHERE state IN (";
    for (size_t i = 0; i < states.size(); ++i) absl::StrAppend(&sql, i ? "," : "", static_cast<int>(states[i]));
    sql += ")";
  }
  absl::StrAppend(&sql, " ORDER BY submit_us DESC LIMIT ", limit);
  Statement stmt(db_, sql);
  if (!stmt.ok()) return SqlError(db_, "list");
  std::vector<v1::LocalJob> jobs;
  while (sqlite3_step(stmt.get()) == SQLITE_ROW) {
    v1::LocalJob job;
    if (job.ParseFromArray(sqlite3_column_blob(stmt.get(), 0), sqlite3_column_bytes(stmt.get(), 0))) {
      jobs.push_back(std::move(job));
    }
  }
  return jobs;
}

}  // namespace strongroom::vm_controller
