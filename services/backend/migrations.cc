#include "services/backend/migrations.h"

#include <openssl/evp.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/audit_chain.h"
#include "common/log.h"

namespace strongroom::backend {
namespace {

// pg_advisory_xact_lock key serialising migrations of concurrent backends ("sr-migr").
constexpr int64_t kMigrationLock = 0x73722d6d696772;

std::string Sha256Hex(const std::string& text) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  EVP_Digest(text.data(), text.size(), digest, &length, EVP_sha256(), nullptr);
  return HexOf(std::string(reinterpret_cast<const char*>(digest), length));
}

}  // namespace

absl::Status ApplyMigrations(Database& db, const std::vector<EmbeddedMigration>& migrations) {
  int newest_known = 0;
  for (const EmbeddedMigration& m : migrations) {
    int version = 0;
    if (!absl::SimpleAtoi(m.version, &version))
      return absl::InternalError(absl::StrCat("bad migration version ", m.version));
    newest_known = std::max(newest_known, version);
  }
  for (const EmbeddedMigration& m : migrations) {
    int version = 0;
    (void)absl::SimpleAtoi(m.version, &version);
    const std::string label = absl::StrCat(m.version, "_", m.name);
    const std::string checksum = Sha256Hex(m.sql);
    bool applied_now = false;
    absl::Status s =
        db.Transact(absl::StrCat("migration ", label), [&](pqxx::transaction_base& t) -> absl::Status {
          t.exec_params("SELECT pg_advisory_xact_lock($1)", kMigrationLock);
          t.exec(
              "CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, name text NOT "
              "NULL, "
              "checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())");
          pqxx::result newer =
              t.exec_params("SELECT max(version) FROM schema_migrations WHERE version > $1", newest_known);
          if (!newer[0][0].is_null()) {
            return absl::FailedPreconditionError(absl::StrCat("the database schema is at version ",
                                                              newer[0][0].as<int>(),
                                                              ", newer than this backend's ", newest_known));
          }
          pqxx::result done =
              t.exec_params("SELECT checksum FROM schema_migrations WHERE version = $1", version);
          if (!done.empty()) {
            if (done[0][0].as<std::string>() != checksum) {
              return absl::FailedPreconditionError(absl::StrCat(
                  "migration ", label, " was changed after it was applied (checksum ",
                  done[0][0].as<std::string>(), " in the database, ", checksum, " in this build)"));
            }
            return absl::OkStatus();
          }
          t.exec(m.sql);
          t.exec_params("INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                        version, m.name, checksum);
          applied_now = true;
          return absl::OkStatus();
        });
    if (!s.ok()) return s;
    if (applied_now) Log(LogLevel::kInfo, "schema migration applied", {{"migration", label}});
  }
  return absl::OkStatus();
}

}  // namespace strongroom::backend
