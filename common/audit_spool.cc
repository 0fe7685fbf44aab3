#include "common/audit_spool.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "common/audit.h"
#include "common/audit_text.h"
#include "google/protobuf/unknown_field_set.h"

namespace strongroom {
namespace {

constexpr char kRecords[] = "/records.spool";
constexpr char kAcknowledged[] = "/acknowledged";
constexpr char kIssued[] = "/issued";
constexpr uint32_t kMaxFrame = 1 << 20;

uint32_t Fnv1a(const std::string& bytes) {
  uint32_t h = 2166136261u;
  for (unsigned char c : bytes) h = (h ^ c) * 16777619u;
  return h;
}

void PutU32(std::string* out, uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) out->push_back(static_cast<char>((v >> shift) & 0xff));
}

uint32_t GetU32(const char* p) {
  return (uint32_t{static_cast<unsigned char>(p[0])} << 24) |
         (uint32_t{static_cast<unsigned char>(p[1])} << 16) |
         (uint32_t{static_cast<unsigned char>(p[2])} << 8) | uint32_t{static_cast<unsigned char>(p[3])};
}

std::string Frame(const v1::AuditRecord& record) {
  const std::string payload = record.SerializeAsString();
  std::string frame;
  PutU32(&frame, static_cast<uint32_t>(payload.size()));
  PutU32(&frame, Fnv1a(payload));
  return frame + payload;
}

// A record whose strings are not valid UTF-8 (protobuf refuses to parse it as an AuditRecord), rebuilt from
// its wire fields with every string made storable (audit_text.h). False if the payload is not a record at
// all.
bool RecoverRecord(const std::string& payload, v1::AuditRecord* out) {
  google::protobuf::UnknownFieldSet fields;
  if (!fields.ParseFromString(payload)) return false;
  v1::AuditRecord r;
  auto text = [](const google::protobuf::UnknownField& f) { return f.length_delimited(); };
  for (int i = 0; i < fields.field_count(); ++i) {
    const google::protobuf::UnknownField& f = fields.field(i);
    const bool bytes = f.type() == google::protobuf::UnknownField::TYPE_LENGTH_DELIMITED;
    const bool number = f.type() == google::protobuf::UnknownField::TYPE_VARINT;
    switch (f.number()) {
      case 2:  // time
        if (bytes) (void)r.mutable_time()->ParseFromString(text(f));
        break;
      case 3:  // actor: only its spiffe_id (field 1) matters, the rest is derived
        if (bytes) {
          google::protobuf::UnknownFieldSet actor;
          if (actor.ParseFromString(text(f))) {
            for (int k = 0; k < actor.field_count(); ++k) {
              if (actor.field(k).number() == 1 &&
                  actor.field(k).type() == google::protobuf::UnknownField::TYPE_LENGTH_DELIMITED) {
                r.mutable_actor()->set_spiffe_id(actor.field(k).length_delimited());
              }
            }
          }
        }
        break;
      case 4:
        if (bytes) r.set_action(text(f));
        break;
      case 5:
        if (bytes) r.set_object(text(f));
        break;
      case 6:
        if (number) r.set_outcome(static_cast<v1::AuditOutcome>(f.varint()));
        break;
      case 7:
        if (number) r.set_status_code(static_cast<int32_t>(f.varint()));
        break;
      case 8:  // a details entry: key 1, value 2
        if (bytes) {
          google::protobuf::UnknownFieldSet entry;
          std::string key, value;
          if (entry.ParseFromString(text(f))) {
            for (int k = 0; k < entry.field_count(); ++k) {
              if (entry.field(k).type() != google::protobuf::UnknownField::TYPE_LENGTH_DELIMITED) continue;
              (entry.field(k).number() == 1 ? key : value) = entry.field(k).length_delimited();
            }
          }
          (*r.mutable_details())[key] = value;
        }
        break;
      case 12:
        if (number) r.set_source_sequence(f.varint());
        break;
      default:
        break;
    }
  }
  if (r.source_sequence() == 0) return false;
  MakeAuditRecordStorable(&r);
  *r.mutable_actor() = AuditIdentityOf(r.actor().spiffe_id());
  *out = std::move(r);
  return true;
}

absl::Status Errno(const std::string& what) {
  return absl::InternalError(absl::StrCat(what, ": ", std::strerror(errno)));
}

absl::Status WriteAll(int fd, const std::string& bytes, const std::string& what) {
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Errno(what);
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

}  // namespace

AuditEvent LostRecordsEvent(const AuditSpoolLoss& loss, const std::string& actor) {
  AuditEvent gap{actor, "audit.records_lost", "", "DATA_LOSS", loss.reason};
  if (loss.first != 0) {
    gap.details["first"] = absl::StrCat(loss.first);
    gap.details["last"] = absl::StrCat(loss.last);
    gap.details["count"] = absl::StrCat(loss.last - loss.first + 1);
  }
  if (loss.bytes_cut != 0) gap.details["bytes_cut"] = absl::StrCat(loss.bytes_cut);
  return gap;
}

AuditSpool::AuditSpool(std::string dir, int fd) : dir_(std::move(dir)), fd_(fd) {}
AuditSpool::~AuditSpool() {
  if (fd_ >= 0) {
    (void)Sync();
    close(fd_);
  }
}

absl::StatusOr<std::unique_ptr<AuditSpool>> AuditSpool::Open(const std::string& dir) {
  return OpenWith(dir, std::nullopt);
}

absl::StatusOr<std::unique_ptr<AuditSpool>> AuditSpool::OpenAcknowledgedElsewhere(const std::string& dir,
                                                                                  uint64_t acknowledged) {
  return OpenWith(dir, acknowledged);
}

absl::StatusOr<std::unique_ptr<AuditSpool>> AuditSpool::OpenWith(const std::string& dir,
                                                                 std::optional<uint64_t> acknowledged) {
  if (mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) return Errno("mkdir " + dir);
  const std::string path = dir + kRecords;
  const int fd = open(path.c_str(), O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (fd < 0) return Errno("open " + path);
  std::unique_ptr<AuditSpool> spool(new AuditSpool(dir, fd));

  std::ifstream ack(dir + kAcknowledged);
  if (acknowledged.has_value()) {
    spool->acknowledged_ = *acknowledged;
    spool->acknowledged_file_ = false;
    spool->fresh_ = false;
  } else if (ack) {
    std::stringstream text;
    text << ack.rdbuf();
    if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(text.str()), &spool->acknowledged_)) {
      return absl::DataLossError(absl::StrCat(dir, kAcknowledged, ": not a number"));
    }
    spool->fresh_ = false;
  }
  spool->next_ = spool->acknowledged_ + 1;
  std::ifstream issued(dir + kIssued);
  if (issued) {
    std::stringstream text;
    text << issued.rdbuf();
    if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(text.str()), &spool->issued_synced_)) {
      return absl::DataLossError(absl::StrCat(dir, kIssued, ": not a number"));
    }
  }

  std::ifstream in(path, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  size_t offset = 0;
  while (offset + 8 <= bytes.size()) {
    const uint32_t length = GetU32(bytes.data() + offset);
    const uint32_t checksum = GetU32(bytes.data() + offset + 4);
    if (length > kMaxFrame || offset + 8 + length > bytes.size()) break;
    const std::string payload = bytes.substr(offset + 8, length);
    v1::AuditRecord record;
    if (Fnv1a(payload) != checksum) break;
    if (!record.ParseFromString(payload)) {
      if (!RecoverRecord(payload, &record)) break;
      ++spool->recovered_;
    }
    offset += 8 + length;
    spool->next_ = std::max(spool->next_, record.source_sequence() + 1);
    if (record.source_sequence() > spool->acknowledged_) {
      spool->pending_bytes_ += payload.size();
      spool->pending_.push_back(std::move(record));
    }
  }
  if (offset != bytes.size() && ftruncate(fd, static_cast<off_t>(offset)) != 0) {
    return Errno("cut the torn tail of " + path);
  }
  spool->file_bytes_ = offset;
  // Numbers issued before and no longer held: the file lost its tail (cut above, or truncated outside).
  const uint64_t held = spool->next_ - 1;
  AuditSpoolLoss& lost = spool->lost_;
  lost.bytes_cut = bytes.size() - offset;
  if (spool->issued_synced_ > held) {
    lost.first = held + 1;
    lost.last = spool->issued_synced_;
    spool->next_ = spool->issued_synced_ + 1;
  }
  if (lost.first != 0 || lost.bytes_cut != 0) {
    lost.reason = absl::StrCat(path, " ends at source_sequence ", held);
    if (lost.first != 0) absl::StrAppend(&lost.reason, " but ", spool->issued_synced_, " had been issued");
    if (lost.bytes_cut != 0)
      absl::StrAppend(&lost.reason, "; ", lost.bytes_cut, " damaged or torn bytes were cut");
  }
  if (spool->fresh_) {
    // Persist "nothing acknowledged yet" right away, so that after a crash a spool that shipped records
    // without seeing the acknowledgement is not mistaken for a wiped one (see Renumber).
    spool->fresh_ = offset == 0;
    const bool was_fresh = spool->fresh_;
    if (absl::Status s = spool->WriteNumber(kAcknowledged, 0); !s.ok()) return s;
    spool->fresh_ = was_fresh;
  }
  return spool;
}

absl::Status AuditSpool::Append(v1::AuditRecord record) {
  record.set_source_sequence(next_);
  const std::string frame = Frame(record);
  if (absl::Status s = WriteAll(fd_, frame, "append to " + dir_ + kRecords); !s.ok()) return s;
  ++next_;
  dirty_ = true;
  file_bytes_ += frame.size();
  pending_bytes_ += frame.size() - 8;
  pending_.push_back(std::move(record));
  return absl::OkStatus();
}

absl::Status AuditSpool::Sync() {
  if (!dirty_) return absl::OkStatus();
  if (fdatasync(fd_) != 0) return Errno("fdatasync " + dir_ + kRecords);
  dirty_ = false;
  // After the records: the mark never claims more than the synced file holds, except what a later cut loses.
  if (next_ - 1 > issued_synced_) {
    if (absl::Status s = WriteNumber(kIssued, next_ - 1); !s.ok()) return s;
    issued_synced_ = next_ - 1;
  }
  return absl::OkStatus();
}

absl::Status AuditSpool::WriteNumber(const char* file, uint64_t sequence) {
  const std::string tmp = dir_ + file + ".tmp";
  const int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return Errno("open " + tmp);
  absl::Status s = WriteAll(fd, absl::StrCat(sequence, "\n"), "write " + tmp);
  if (s.ok() && fsync(fd) != 0) s = Errno("fsync " + tmp);
  close(fd);
  if (!s.ok()) return s;
  if (rename(tmp.c_str(), (dir_ + file).c_str()) != 0) return Errno("rename " + tmp);
  return absl::OkStatus();
}

absl::Status AuditSpool::Acknowledge(uint64_t sequence) {
  if (sequence <= acknowledged_) return absl::OkStatus();
  // Persist first: a crash between the two steps only re-ships records backend then skips as duplicates.
  if (acknowledged_file_) {
    if (absl::Status s = WriteNumber(kAcknowledged, sequence); !s.ok()) return s;
  }
  acknowledged_ = sequence;
  fresh_ = false;
  while (!pending_.empty() && pending_.front().source_sequence() <= sequence) {
    pending_bytes_ -= pending_.front().ByteSizeLong();
    pending_.pop_front();
  }
  if (pending_.empty()) {
    if (ftruncate(fd_, 0) != 0) return Errno("empty " + dir_ + kRecords);
    file_bytes_ = 0;
  } else if (file_bytes_ > (uint64_t{4} << 20) && file_bytes_ > 4 * pending_bytes_) {
    return Rewrite();  // under steady load the queue is never empty: keep the file near what is pending
  }
  return absl::OkStatus();
}

absl::Status AuditSpool::Renumber(uint64_t first) {
  uint64_t next = first;
  for (v1::AuditRecord& r : pending_) r.set_source_sequence(next++);
  next_ = next;
  return Rewrite();
}

absl::Status AuditSpool::Replace(uint64_t sequence, const v1::AuditRecord* replacement) {
  for (auto it = pending_.begin(); it != pending_.end(); ++it) {
    if (it->source_sequence() != sequence) continue;
    pending_bytes_ -= it->ByteSizeLong();
    if (replacement == nullptr) {
      pending_.erase(it);
    } else {
      *it = *replacement;
      it->set_source_sequence(sequence);
      pending_bytes_ += it->ByteSizeLong();
    }
    return Rewrite();
  }
  return absl::NotFoundError(absl::StrCat("source_sequence ", sequence, " is not pending in ", dir_));
}

// A new file beside the old one, synced, then renamed over it: a crash at any point leaves either file whole.
absl::Status AuditSpool::Rewrite() {
  std::string bytes;
  for (const v1::AuditRecord& r : pending_) bytes += Frame(r);
  const std::string path = dir_ + kRecords, tmp = path + ".tmp";
  const int fd = open(tmp.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600);
  if (fd < 0) return Errno("open " + tmp);
  absl::Status s = WriteAll(fd, bytes, "rewrite " + tmp);
  if (s.ok() && fdatasync(fd) != 0) s = Errno("fdatasync " + tmp);
  if (s.ok() && rename(tmp.c_str(), path.c_str()) != 0) s = Errno("rename " + tmp);
  if (!s.ok()) {
    close(fd);
    return s;
  }
  close(fd_);
  fd_ = fd;
  file_bytes_ = bytes.size();
  dirty_ = true;  // the issued mark follows at the next Sync
  return absl::OkStatus();
}

}  // namespace strongroom
