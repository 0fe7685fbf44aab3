#include "services/host_agent/store.h"

#include <sqlite3.h>

#include "absl/strings/str_cat.h"

namespace strongroom::host_agent {
namespace {

constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS workloads (
  id              TEXT PRIMARY KEY,
  state           INTEGER NOT NULL,
  kind            INTEGER NOT NULL,
  global_job_id   TEXT NOT NULL,
  created_ns      INTEGER NOT NULL,
  runtime         TEXT NOT NULL,
  runtime_id      TEXT NOT NULL,
  workload_dir    TEXT NOT NULL,
  netns           TEXT NOT NULL,
  port_name       TEXT NOT NULL,
  netd_generation INTEGER NOT NULL,
  scratch_loop    TEXT NOT NULL,
  crypt_name      TEXT NOT NULL,
  image_loop      TEXT NOT NULL,
  mounts          TEXT NOT NULL,
  init_pid        INTEGER NOT NULL,
  init_start      INTEGER NOT NULL,
  stage           TEXT NOT NULL,
  record          BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS workloads_by_state ON workloads(state);
CREATE TABLE IF NOT EXISTS outbox (
  seq         INTEGER PRIMARY KEY AUTOINCREMENT,
  workload_id TEXT NOT NULL,
  kind        TEXT NOT NULL,
  payload     BLOB NOT NULL
);
)sql";

absl::Status SqlError(sqlite3* db, absl::string_view what) {
  return absl::InternalError(absl::StrCat("tracking DB: ", what, ": ", sqlite3_errmsg(db)));
}

// A prepared statement, finalized on scope exit.
class Stmt {
 public:
  Stmt(sqlite3* db, const char* sql) { sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr); }
  ~Stmt() { sqlite3_finalize(stmt_); }
  sqlite3_stmt* get() { return stmt_; }
  bool ok() const { return stmt_ != nullptr; }

 private:
  sqlite3_stmt* stmt_ = nullptr;  // owned
};

std::string Text(sqlite3_stmt* s, int col) {
  const unsigned char* t = sqlite3_column_text(s, col);
  return t == nullptr ? std::string() : std::string(reinterpret_cast<const char*>(t));
}

constexpr const char* kColumns =
    "record, workload_dir, netns, port_name, netd_generation, scratch_loop, crypt_name, image_loop, mounts, "
    "init_pid, init_start, stage";

absl::StatusOr<TrackedWorkload> RowOf(sqlite3* db, sqlite3_stmt* s) {
  TrackedWorkload w;
  const void* blob = sqlite3_column_blob(s, 0);
  if (!w.record.ParseFromArray(blob, sqlite3_column_bytes(s, 0))) {
    return absl::DataLossError("tracking DB: a workload record does not parse");
  }
  TrackedResources& r = w.resources;
  r.workload_dir = Text(s, 1);
  r.netns = Text(s, 2);
  r.port_name = Text(s, 3);
  r.netd_generation = static_cast<uint64_t>(sqlite3_column_int64(s, 4));
  r.scratch_loop = Text(s, 5);
  r.crypt_name = Text(s, 6);
  r.image_loop = Text(s, 7);
  r.mounts = Text(s, 8);
  r.init_pid = sqlite3_column_int(s, 9);
  r.init_start = static_cast<uint64_t>(sqlite3_column_int64(s, 10));
  r.stage = Text(s, 11);
  return w;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Store>> Store::Open(const std::string& path) {
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                      nullptr) != SQLITE_OK) {
    absl::Status s = SqlError(db, absl::StrCat("open ", path));
    sqlite3_close(db);
    return s;
  }
  std::unique_ptr<Store> store(new Store(db));
  sqlite3_busy_timeout(db, 5000);
  for (const char* sql : {"PRAGMA journal_mode=WAL;", "PRAGMA synchronous=FULL;", kSchema}) {
    char* err = nullptr;
    if (sqlite3_exec(db, sql, nullptr, nullptr, &err) != SQLITE_OK) {
      absl::Status s = absl::InternalError(absl::StrCat("tracking DB ", path, ": ", err ? err : "?"));
      sqlite3_free(err);
      return s;
    }
  }
  return store;
}

Store::~Store() { sqlite3_close(db_); }

absl::Status Store::Put(const TrackedWorkload& w, const std::vector<OutboxEntry>& reports) {
  absl::MutexLock lock(&mu_);
  if (reports.empty()) return PutLocked(w);
  if (sqlite3_exec(db_, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr) != SQLITE_OK)
    return SqlError(db_, "begin");
  absl::Status status = PutLocked(w);
  for (const OutboxEntry& r : reports) {
    if (!status.ok()) break;
    Stmt s(db_, "INSERT INTO outbox (workload_id, kind, payload) VALUES (?,?,?)");
    if (!s.ok()) {
      status = SqlError(db_, "prepare outbox insert");
      break;
    }
    sqlite3_bind_text(s.get(), 1, r.workload_id.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s.get(), 2, r.kind.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_blob(s.get(), 3, r.payload.data(), static_cast<int>(r.payload.size()), SQLITE_TRANSIENT);
    if (sqlite3_step(s.get()) != SQLITE_DONE) status = SqlError(db_, "outbox insert");
  }
  if (!status.ok()) {
    sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
    return status;
  }
  if (sqlite3_exec(db_, "COMMIT", nullptr, nullptr, nullptr) != SQLITE_OK) {
    absl::Status s = SqlError(db_, "commit");
    sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
    return s;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<OutboxEntry>> Store::PendingReports() {
  absl::MutexLock lock(&mu_);
  Stmt s(db_, "SELECT seq, workload_id, kind, payload FROM outbox ORDER BY seq");
  if (!s.ok()) return SqlError(db_, "prepare outbox list");
  std::vector<OutboxEntry> out;
  int rc;
  while ((rc = sqlite3_step(s.get())) == SQLITE_ROW) {
    OutboxEntry e;
    e.seq = sqlite3_column_int64(s.get(), 0);
    e.workload_id = Text(s.get(), 1);
    e.kind = Text(s.get(), 2);
    const void* blob = sqlite3_column_blob(s.get(), 3);
    if (blob != nullptr)
      e.payload.assign(static_cast<const char*>(blob), static_cast<size_t>(sqlite3_column_bytes(s.get(), 3)));
    out.push_back(std::move(e));
  }
  if (rc != SQLITE_DONE) return SqlError(db_, "outbox list");
  return out;
}

absl::Status Store::DeleteReport(int64_t seq) {
  absl::MutexLock lock(&mu_);
  Stmt s(db_, "DELETE FROM outbox WHERE seq = ?");
  if (!s.ok()) return SqlError(db_, "prepare outbox delete");
  sqlite3_bind_int64(s.get(), 1, seq);
  if (sqlite3_step(s.get()) != SQLITE_DONE) return SqlError(db_, "outbox delete");
  return absl::OkStatus();
}

absl::Status Store::PutLocked(const TrackedWorkload& w) {
  Stmt s(db_,
         "INSERT OR REPLACE INTO workloads (id, state, kind, global_job_id, created_ns, runtime, runtime_id, "
         "workload_dir, netns, port_name, netd_generation, scratch_loop, crypt_name, image_loop, mounts, "
         "init_pid, "
         "init_start, stage, record) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)");
  if (!s.ok()) return SqlError(db_, "prepare put");
  const v1::Workload& rec = w.record;
  const TrackedResources& r = w.resources;
  const std::string blob = rec.SerializeAsString();
  sqlite3_stmt* st = s.get();
  sqlite3_bind_text(st, 1, rec.spec().workload_id().c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_int(st, 2, rec.state());
  sqlite3_bind_int(st, 3, rec.spec().kind());
  sqlite3_bind_text(st, 4, rec.spec().job().global_job_id().c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_int64(st, 5, rec.created_time().seconds() * 1000000000LL + rec.created_time().nanos());
  sqlite3_bind_text(st, 6, rec.runtime().c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_text(st, 7, rec.runtime_id().c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_text(st, 8, r.workload_dir.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_text(st, 9, r.netns.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_text(st, 10, r.port_name.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_int64(st, 11, static_cast<int64_t>(r.netd_generation));
  sqlite3_bind_text(st, 12, r.scratch_loop.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_text(st, 13, r.crypt_name.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_text(st, 14, r.image_loop.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_text(st, 15, r.mounts.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_int(st, 16, r.init_pid);
  sqlite3_bind_int64(st, 17, static_cast<int64_t>(r.init_start));
  sqlite3_bind_text(st, 18, r.stage.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_blob(st, 19, blob.data(), static_cast<int>(blob.size()), SQLITE_TRANSIENT);
  if (sqlite3_step(st) != SQLITE_DONE) return SqlError(db_, "put");
  return absl::OkStatus();
}

absl::StatusOr<TrackedWorkload> Store::Get(const std::string& id) {
  absl::MutexLock lock(&mu_);
  Stmt s(db_, absl::StrCat("SELECT ", kColumns, " FROM workloads WHERE id = ?").c_str());
  if (!s.ok()) return SqlError(db_, "prepare get");
  sqlite3_bind_text(s.get(), 1, id.c_str(), -1, SQLITE_TRANSIENT);
  const int rc = sqlite3_step(s.get());
  if (rc == SQLITE_DONE)
    return absl::NotFoundError(absl::StrCat("workload ", id, " is unknown on this node"));
  if (rc != SQLITE_ROW) return SqlError(db_, "get");
  return RowOf(db_, s.get());
}

absl::StatusOr<std::vector<TrackedWorkload>> Store::List() {
  absl::MutexLock lock(&mu_);
  Stmt s(db_, absl::StrCat("SELECT ", kColumns, " FROM workloads ORDER BY created_ns DESC, id").c_str());
  if (!s.ok()) return SqlError(db_, "prepare list");
  std::vector<TrackedWorkload> out;
  int rc;
  while ((rc = sqlite3_step(s.get())) == SQLITE_ROW) {
    absl::StatusOr<TrackedWorkload> w = RowOf(db_, s.get());
    if (!w.ok()) return w.status();
    out.push_back(std::move(*w));
  }
  if (rc != SQLITE_DONE) return SqlError(db_, "list");
  return out;
}

}  // namespace strongroom::host_agent
