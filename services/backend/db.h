// PostgreSQL access: a pool of libpqxx connections, transactions with safe retries, and the one mapping of
// PostgreSQL failures to absl::Status. A lost connection is UNAVAILABLE ("database unavailable: ..."); the
// pool drops it and reconnects on the next use, so a database restart heals without restarting backend.
#pragma once

#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <pqxx/pqxx>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace strongroom::backend {

class Database {
 public:
  struct Options {
    std::string conninfo;
    int pool_size = 8;
    int statement_timeout_ms = 10000;
    absl::Duration acquire_timeout = absl::Seconds(10);  // waiting for a free connection
    std::string application_name = "strongroom-backend";
  };

  // Connects once, retrying until `startup_timeout`, so a database that starts after backend is waited for.
  static absl::StatusOr<std::unique_ptr<Database>> Open(Options options, absl::Duration startup_timeout);

  // Registers a prepared statement on every connection (now and future). Call before the first use.
  void Prepare(std::string name, std::string sql);

  using Body = std::function<absl::Status(pqxx::transaction_base&)>;
  // Runs `body` in a transaction and commits when it returns OK (a non-OK status rolls back and is returned
  // as is). A failure before the commit that may pass on a second try (connection lost, serialization
  // failure, deadlock, unique violation from a concurrent insert) is retried, up to `attempts` times with a
  // short backoff, on a fresh connection: nothing of a failed attempt was committed, so this is safe. A
  // connection lost during the commit is UNAVAILABLE "commit outcome unknown" and not retried here. `what`
  // prefixes errors.
  absl::Status Transact(absl::string_view what, const Body& body, int attempts = 3) {
    return Run(what, body, attempts, /*read_only=*/false);
  }
  // For reads: `body` runs without BEGIN/COMMIT (one round trip per statement, autocommit), so it must only
  // read. Retried like Transact; a read has no commit whose outcome could be unknown.
  absl::Status Read(absl::string_view what, const Body& body, int attempts = 3) {
    return Run(what, body, attempts, /*read_only=*/true);
  }

  // Maps an exception thrown by libpqxx (or anything else) to a status.
  static absl::Status StatusOfException(absl::string_view what);

  ~Database();

 private:
  explicit Database(Options options);
  absl::Status Run(absl::string_view what, const Body& body, int attempts, bool read_only);
  absl::StatusOr<std::unique_ptr<pqxx::connection>> Connect();
  absl::StatusOr<std::unique_ptr<pqxx::connection>> Acquire();
  void Release(std::unique_ptr<pqxx::connection> connection, bool healthy);

  const Options options_;
  std::mutex mu_;                                              // guards the members below
  std::condition_variable available_;                          // a connection was released
  std::vector<std::unique_ptr<pqxx::connection>> idle_;        // open, unused connections
  int open_ = 0;                                               // connections that exist (idle or lent out)
  std::vector<std::pair<std::string, std::string>> prepared_;  // (name, sql) to prepare on every connection
};

// Conversions between PostgreSQL's bigint microsecond columns and times.
int64_t MicrosOf(absl::Time t);
absl::Time TimeOfMicros(int64_t micros);

}  // namespace strongroom::backend
