// Versioned schema migrations (services/backend/migrations/NNNN_name.sql, embedded in the binary at build
// time) and their runner. Applying is safe to repeat and to race: each migration runs in its own transaction
// under an advisory lock, is recorded in schema_migrations with a checksum, and is skipped once recorded.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "services/backend/db.h"

namespace strongroom::backend {

struct EmbeddedMigration {
  const char* version;  // "0001"
  const char* name;     // "initial"
  const char* sql;
};

// Generated from migrations/*.sql, in version order.
const std::vector<EmbeddedMigration>& EmbeddedMigrations();

// Applies what is missing. FAILED_PRECONDITION when an applied migration's SQL changed since (checksum), or
// when the database holds a version this binary does not know (a newer backend migrated it).
absl::Status ApplyMigrations(Database& db, const std::vector<EmbeddedMigration>& migrations);

}  // namespace strongroom::backend
