// A C++ handle on tests/rig/postgres.sh: a throw-away PostgreSQL listening only on a unix socket in its own
// directory under /tmp/strongroom-pg/. Reachable from every rig host (the socket is a file). The destructor
// removes it; if the test process dies first, `postgres.sh sweep /tmp/strongroom-pg` (the postgres_sweep
// ctest fixture) does.
//
//   SR_ASSIGN_OR_RETURN(std::unique_ptr<PostgresInstance> pg, PostgresInstance::Start(SR_POSTGRES_SH));
//   config << "database { conninfo: \"" << pg->conninfo() << "\" }";
//   SR_ASSIGN_OR_RETURN(std::string rows, pg->Psql("SELECT count(*) FROM jobs"));
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace strongroom {

class PostgresInstance {
 public:
  static constexpr absl::string_view kDefaultRoot = "/tmp/strongroom-pg";

  static absl::StatusOr<std::unique_ptr<PostgresInstance>> Start(
      std::string postgres_sh, const std::string& root = std::string(kDefaultRoot));
  static absl::Status Sweep(const std::string& postgres_sh,
                            const std::string& root = std::string(kDefaultRoot));

  PostgresInstance(const PostgresInstance&) = delete;
  PostgresInstance& operator=(const PostgresInstance&) = delete;
  ~PostgresInstance();  // Down(); a failure is reported on stderr

  // libpq connection string of database "strongroom" as the superuser.
  const std::string& conninfo() const { return conninfo_; }
  const std::string& dir() const { return dir_; }

  // Runs SQL as superuser; returns psql's unaligned, tuples-only output. An SQL error is an error.
  absl::StatusOr<std::string> Psql(const std::string& sql) const;
  // The whole database as pg_dump writes it (schema and every row).
  absl::StatusOr<std::string> Dump() const;
  // Stops the server (fast shutdown), keeping the data: clients see their connections drop.
  absl::Status Stop();
  // Starts a stopped server again.
  absl::Status Restart();
  // Stops it for good and deletes its directory. Idempotent.
  absl::Status Down();

 private:
  PostgresInstance(std::string postgres_sh, std::string dir, std::string conninfo);
  absl::StatusOr<std::string> Run(const std::vector<std::string>& args) const;

  const std::string postgres_sh_;  // the script every call runs
  const std::string dir_;          // the instance directory
  const std::string conninfo_;
  bool down_ = false;
};

}  // namespace strongroom
