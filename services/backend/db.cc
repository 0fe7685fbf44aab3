#include "services/backend/db.h"

#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/log.h"

namespace strongroom::backend {
namespace {

constexpr absl::Duration kConnectRetryDelay = absl::Milliseconds(200);

bool Retryable(const absl::Status& s) {
  return s.code() == absl::StatusCode::kUnavailable || s.code() == absl::StatusCode::kAborted;
}

// A short, growing pause between attempts.
void Backoff(int attempt) { std::this_thread::sleep_for(std::chrono::milliseconds(20 * (1 << attempt))); }

}  // namespace

Database::Database(Options options) : options_(std::move(options)) {}
Database::~Database() = default;

absl::StatusOr<std::unique_ptr<Database>> Database::Open(Options options, absl::Duration startup_timeout) {
  std::unique_ptr<Database> db(new Database(std::move(options)));
  const absl::Time deadline = absl::Now() + startup_timeout;
  absl::Time last_log = absl::InfinitePast();
  while (true) {
    absl::StatusOr<std::unique_ptr<pqxx::connection>> c = db->Connect();
    if (c.ok()) {
      std::lock_guard<std::mutex> lock(db->mu_);
      db->idle_.push_back(std::move(*c));
      db->open_ = 1;
      return db;
    }
    if (absl::Now() + kConnectRetryDelay > deadline) {
      return absl::UnavailableError(absl::StrCat("database not reachable within ",
                                                 absl::FormatDuration(startup_timeout), ": ",
                                                 c.status().message()));
    }
    if (absl::Now() - last_log > absl::Seconds(5)) {
      Log(LogLevel::kWarn, "waiting for the database", {{"error", c.status().ToString()}});
      last_log = absl::Now();
    }
    absl::SleepFor(kConnectRetryDelay);
  }
}

void Database::Prepare(std::string name, std::string sql) {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& c : idle_) c->prepare(name, sql);
  prepared_.emplace_back(std::move(name), std::move(sql));
}

absl::StatusOr<std::unique_ptr<pqxx::connection>> Database::Connect() {
  try {
    auto c = std::make_unique<pqxx::connection>(options_.conninfo);
    pqxx::nontransaction setup(*c);
    setup.exec(absl::StrCat("SET statement_timeout = ", options_.statement_timeout_ms));
    setup.exec(absl::StrCat("SET application_name = ", setup.quote(options_.application_name)));
    setup.commit();
    std::vector<std::pair<std::string, std::string>> prepared;
    {
      std::lock_guard<std::mutex> lock(mu_);
      prepared = prepared_;
    }
    for (const auto& [name, sql] : prepared) c->prepare(name, sql);
    return c;
  } catch (...) {
    return StatusOfException("connect");
  }
}

absl::StatusOr<std::unique_ptr<pqxx::connection>> Database::Acquire() {
  std::unique_lock<std::mutex> lock(mu_);
  const auto deadline =
      std::chrono::steady_clock::now() + absl::ToChronoMilliseconds(options_.acquire_timeout);
  while (idle_.empty() && open_ >= options_.pool_size) {
    if (available_.wait_until(lock, deadline) == std::cv_status::timeout && idle_.empty() &&
        open_ >= options_.pool_size) {
      return absl::UnavailableError(
          absl::StrCat("all ", options_.pool_size, " database connections are busy"));
    }
  }
  if (!idle_.empty()) {
    std::unique_ptr<pqxx::connection> c = std::move(idle_.back());
    idle_.pop_back();
    return c;
  }
  ++open_;
  lock.unlock();
  absl::StatusOr<std::unique_ptr<pqxx::connection>> c = Connect();
  if (!c.ok()) {
    lock.lock();
    --open_;
    available_.notify_one();
  }
  return c;
}

void Database::Release(std::unique_ptr<pqxx::connection> connection, bool healthy) {
  std::lock_guard<std::mutex> lock(mu_);
  if (healthy && connection->is_open()) {
    idle_.push_back(std::move(connection));
  } else {
    --open_;
  }
  available_.notify_one();
}

absl::Status Database::Run(absl::string_view what, const Body& body, int attempts, bool read_only) {
  absl::Status last;
  for (int attempt = 0; attempt < attempts; ++attempt) {
    if (attempt > 0) Backoff(attempt);
    absl::StatusOr<std::unique_ptr<pqxx::connection>> c = Acquire();
    if (!c.ok()) {
      last = absl::Status(c.status().code(),
                          absl::StrCat(what, ": database unavailable: ", c.status().message()));
      if (Retryable(last)) continue;
      return last;
    }
    bool healthy = true;
    bool committing = false;
    try {
      std::unique_ptr<pqxx::transaction_base> txn;
      if (read_only) {
        txn = std::make_unique<pqxx::nontransaction>(**c);
      } else {
        txn = std::make_unique<pqxx::work>(**c);
      }
      absl::Status s = body(*txn);
      if (!s.ok()) {
        txn->abort();
        txn.reset();
        Release(std::move(*c), true);
        return s;
      }
      committing = !read_only;
      txn->commit();
      txn.reset();
      Release(std::move(*c), true);
      return absl::OkStatus();
    } catch (const pqxx::in_doubt_error& e) {
      healthy = false;
      last = absl::UnavailableError(
          absl::StrCat(what, ": database connection lost during commit; outcome unknown, retry: ", e.what()));
      Release(std::move(*c), false);
      return last;
    } catch (...) {
      last = StatusOfException(what);
      healthy = last.code() != absl::StatusCode::kUnavailable;
      if (committing && !healthy) {
        last =
            absl::UnavailableError(absl::StrCat(last.message(), " (during commit; outcome unknown, retry)"));
      }
    }
    Release(std::move(*c), healthy);
    if (committing || !Retryable(last)) return last;
  }
  return last;
}

absl::Status Database::StatusOfException(absl::string_view what) {
  try {
    throw;
  } catch (const pqxx::broken_connection& e) {
    return absl::UnavailableError(absl::StrCat(what, ": database unavailable: ", e.what()));
  } catch (const pqxx::sql_error& e) {
    const std::string& state = e.sqlstate();
    const std::string message = absl::StrCat(what, ": ", e.what());
    if (state == "40001" || state == "40P01" || state == "23505") return absl::AbortedError(message);
    if (state == "57014") return absl::DeadlineExceededError(message);
    if (state.rfind("08", 0) == 0 || state.rfind("57P", 0) == 0 || state.rfind("53", 0) == 0) {
      return absl::UnavailableError(absl::StrCat(what, ": database unavailable: ", e.what()));
    }
    if (state == "23514") return absl::FailedPreconditionError(message);  // our triggers' refusals
    return absl::InternalError(absl::StrCat(message, " (SQLSTATE ", state, ")"));
  } catch (const pqxx::failure& e) {
    return absl::UnavailableError(absl::StrCat(what, ": database unavailable: ", e.what()));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(what, ": ", e.what()));
  } catch (...) {
    return absl::InternalError(absl::StrCat(what, ": unknown exception"));
  }
}

int64_t MicrosOf(absl::Time t) { return absl::ToUnixMicros(t); }
absl::Time TimeOfMicros(int64_t micros) { return absl::FromUnixMicros(micros); }

}  // namespace strongroom::backend
