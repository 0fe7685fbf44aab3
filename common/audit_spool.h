// The local disk spool of a daemon that ships its audit records to backend (audit_client.h). Records are
// appended here before they are shipped and stay until backend acknowledges them, so a backend outage or a
// crash of the daemon loses nothing (a crash of the whole host may lose what was written since the last
// Sync()).
//
// Files in the spool directory (mode 0700):
//   records.spool  frames of [u32 length][u32 FNV-1a of the payload][payload: a serialized AuditRecord],
//   appended
//                  with one write(2) each; a torn last frame (crash mid-write) is cut off at the next Open.
//   acknowledged   the highest source_sequence backend holds for this daemon, replaced atomically (rename).
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "strongroom/v1/backend.pb.h"

namespace strongroom {

class AuditSpool {
 public:
  // Opens (creating if needed) the spool in `dir` and loads the records not yet acknowledged.
  static absl::StatusOr<std::unique_ptr<AuditSpool>> Open(const std::string& dir);
  ~AuditSpool();

  // Gives `record` the next source_sequence and appends it (not yet synced).
  absl::Status Append(v1::AuditRecord record);
  // fdatasync of the records file, when something was appended since the last call.
  absl::Status Sync();
  // Backend holds everything up to `sequence`: those records leave the spool. Once nothing is pending the
  // records file is emptied.
  absl::Status Acknowledge(uint64_t sequence);
  // Gives the pending records new sequence numbers from `first` on and rewrites the file. For a daemon whose
  // spool was wiped while backend still holds its earlier records (their numbers would be taken as
  // duplicates).
  absl::Status Renumber(uint64_t first);

  const std::deque<v1::AuditRecord>& pending() const { return pending_; }
  uint64_t acknowledged() const { return acknowledged_; }
  uint64_t next_sequence() const { return next_; }
  // True for a spool created empty by this process that has seen no acknowledgement yet: if backend already
  // holds records of this daemon, the spool was wiped (Renumber).
  bool fresh() const { return fresh_; }
  uint64_t pending_bytes() const { return pending_bytes_; }

 private:
  AuditSpool(std::string dir, int fd);
  absl::Status Rewrite();
  absl::Status WriteAcknowledged(uint64_t sequence);

  const std::string dir_;
  int fd_;                               // records.spool, O_APPEND
  std::deque<v1::AuditRecord> pending_;  // appended, not acknowledged, in order
  uint64_t pending_bytes_ = 0;           // their serialized size
  uint64_t acknowledged_ = 0;
  uint64_t next_ = 1;
  bool fresh_ = true;
  bool dirty_ = false;  // appended since the last Sync
};

}  // namespace strongroom
