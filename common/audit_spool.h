// The local disk spool of a daemon that ships its audit records to backend (audit_client.h). Records are
// appended here before they are shipped and stay until backend acknowledges them, so a backend outage or a
// crash of the daemon loses nothing (a crash of the whole host may lose what was written since the last
// Sync()). What is lost anyway (a truncated or damaged file, a host crash) is detected at the next Open and
// reported through lost(), so the owner can chain a record of the gap.
//
// Files in the spool directory (mode 0700):
//   records.spool  frames of [u32 length][u32 FNV-1a of the payload][payload: a serialized AuditRecord],
//                  appended with one write(2) each; a torn last frame (crash mid-write) is cut off at the
//                  next Open. A frame whose record does not parse as UTF-8 text (written by an older build)
//                  is recovered with its strings escaped (audit_text.h) instead of being dropped.
//   acknowledged   the highest source_sequence backend holds for this daemon, replaced atomically (rename).
//   issued         the highest source_sequence ever appended, replaced atomically at each Sync() that follows
//                  an append: a records file that ends before it lost records.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "strongroom/v1/backend.pb.h"

namespace strongroom {

// Records the spool had issued and no longer holds, found at Open.
struct AuditSpoolLoss {
  uint64_t first = 0;      // first lost source_sequence (0: unknown, only bytes were cut)
  uint64_t last = 0;       // last lost source_sequence
  uint64_t bytes_cut = 0;  // bytes of damaged or torn frames cut from the end of the records file
  std::string reason;      // for the record of the loss
};

// The event that records `loss` in the chain ("audit.records_lost", DATA_LOSS, first/last/count/bytes_cut),
// as `actor` (the spool's owner).
struct AuditEvent;
AuditEvent LostRecordsEvent(const AuditSpoolLoss& loss, const std::string& actor);

class AuditSpool {
 public:
  // Opens (creating if needed) the spool in `dir` and loads the records not yet acknowledged.
  static absl::StatusOr<std::unique_ptr<AuditSpool>> Open(const std::string& dir);
  // The same for an owner that keeps the acknowledgement elsewhere, atomically with what it acknowledges
  // (backend: in the database, in the transaction that appends the records): `acknowledged` stands in for the
  // acknowledged file, and Acknowledge() writes no file.
  static absl::StatusOr<std::unique_ptr<AuditSpool>> OpenAcknowledgedElsewhere(const std::string& dir,
                                                                               uint64_t acknowledged);
  ~AuditSpool();

  // Gives `record` the next source_sequence and appends it (not yet synced).
  absl::Status Append(v1::AuditRecord record);
  // fdatasync of the records file and the issued mark, when something was appended since the last call.
  absl::Status Sync();
  // Backend holds everything up to `sequence`: those records leave the spool. Once nothing is pending the
  // records file is emptied; a file mostly made of acknowledged records is rewritten with the pending ones.
  absl::Status Acknowledge(uint64_t sequence);
  // Gives the pending records new sequence numbers from `first` on and rewrites the file. For a daemon whose
  // spool was wiped while backend still holds its earlier records (their numbers would be taken as
  // duplicates).
  absl::Status Renumber(uint64_t first);
  // Replaces the pending record with `sequence` by `replacement` (which keeps that sequence), or removes it
  // when `replacement` is null, and rewrites the file. For a record backend refuses.
  absl::Status Replace(uint64_t sequence, const v1::AuditRecord* replacement);

  const std::deque<v1::AuditRecord>& pending() const { return pending_; }
  uint64_t acknowledged() const { return acknowledged_; }
  uint64_t next_sequence() const { return next_; }
  // True for a spool created empty by this process that has seen no acknowledgement yet: if backend already
  // holds records of this daemon, the spool was wiped (Renumber).
  bool fresh() const { return fresh_; }
  uint64_t pending_bytes() const { return pending_bytes_; }
  // What Open found missing; empty (first == 0 && bytes_cut == 0) when nothing.
  const AuditSpoolLoss& lost() const { return lost_; }
  // Frames recovered with escaped strings at Open.
  uint64_t recovered() const { return recovered_; }

 private:
  AuditSpool(std::string dir, int fd);
  static absl::StatusOr<std::unique_ptr<AuditSpool>> OpenWith(const std::string& dir,
                                                              std::optional<uint64_t> acknowledged);
  absl::Status Rewrite();
  absl::Status WriteNumber(const char* file, uint64_t value);

  const std::string dir_;
  int fd_;                               // records.spool, O_APPEND
  std::deque<v1::AuditRecord> pending_;  // appended, not acknowledged, in order
  uint64_t pending_bytes_ = 0;           // their serialized size
  uint64_t file_bytes_ = 0;              // size of records.spool
  bool acknowledged_file_ = true;        // Acknowledge() persists to the acknowledged file
  uint64_t acknowledged_ = 0;
  uint64_t next_ = 1;
  uint64_t issued_synced_ = 0;  // the value in the issued file
  bool fresh_ = true;
  bool dirty_ = false;  // appended since the last Sync
  AuditSpoolLoss lost_;
  uint64_t recovered_ = 0;
};

}  // namespace strongroom
