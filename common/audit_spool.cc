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

namespace strongroom {
namespace {

constexpr char kRecords[] = "/records.spool";
constexpr char kAcknowledged[] = "/acknowledged";
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

AuditSpool::AuditSpool(std::string dir, int fd) : dir_(std::move(dir)), fd_(fd) {}
AuditSpool::~AuditSpool() {
  if (fd_ >= 0) {
    fdatasync(fd_);
    close(fd_);
  }
}

absl::StatusOr<std::unique_ptr<AuditSpool>> AuditSpool::Open(const std::string& dir) {
  if (mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) return Errno("mkdir " + dir);
  const std::string path = dir + kRecords;
  const int fd = open(path.c_str(), O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (fd < 0) return Errno("open " + path);
  std::unique_ptr<AuditSpool> spool(new AuditSpool(dir, fd));

  std::ifstream ack(dir + kAcknowledged);
  if (ack) {
    std::stringstream text;
    text << ack.rdbuf();
    if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(text.str()), &spool->acknowledged_)) {
      return absl::DataLossError(absl::StrCat(dir, kAcknowledged, ": not a number"));
    }
    spool->fresh_ = false;
  }
  spool->next_ = spool->acknowledged_ + 1;

  std::ifstream in(path, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  size_t offset = 0;
  while (offset + 8 <= bytes.size()) {
    const uint32_t length = GetU32(bytes.data() + offset);
    const uint32_t checksum = GetU32(bytes.data() + offset + 4);
    if (length > kMaxFrame || offset + 8 + length > bytes.size()) break;
    const std::string payload = bytes.substr(offset + 8, length);
    v1::AuditRecord record;
    if (Fnv1a(payload) != checksum || !record.ParseFromString(payload)) break;
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
  if (spool->fresh_) {
    // Persist "nothing acknowledged yet" right away, so that after a crash a spool that shipped records
    // without seeing the acknowledgement is not mistaken for a wiped one (see Renumber).
    spool->fresh_ = offset == 0;
    const bool was_fresh = spool->fresh_;
    if (absl::Status s = spool->WriteAcknowledged(0); !s.ok()) return s;
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
  pending_bytes_ += frame.size() - 8;
  pending_.push_back(std::move(record));
  return absl::OkStatus();
}

absl::Status AuditSpool::Sync() {
  if (!dirty_) return absl::OkStatus();
  if (fdatasync(fd_) != 0) return Errno("fdatasync " + dir_ + kRecords);
  dirty_ = false;
  return absl::OkStatus();
}

absl::Status AuditSpool::WriteAcknowledged(uint64_t sequence) {
  const std::string tmp = dir_ + kAcknowledged + ".tmp";
  const int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return Errno("open " + tmp);
  absl::Status s = WriteAll(fd, absl::StrCat(sequence, "\n"), "write " + tmp);
  if (s.ok() && fsync(fd) != 0) s = Errno("fsync " + tmp);
  close(fd);
  if (!s.ok()) return s;
  if (rename(tmp.c_str(), (dir_ + kAcknowledged).c_str()) != 0) return Errno("rename " + tmp);
  return absl::OkStatus();
}

absl::Status AuditSpool::Acknowledge(uint64_t sequence) {
  if (sequence <= acknowledged_) return absl::OkStatus();
  // Persist first: a crash between the two steps only re-ships records backend then skips as duplicates.
  if (absl::Status s = WriteAcknowledged(sequence); !s.ok()) return s;
  acknowledged_ = sequence;
  fresh_ = false;
  while (!pending_.empty() && pending_.front().source_sequence() <= sequence) {
    pending_bytes_ -= pending_.front().ByteSizeLong();
    pending_.pop_front();
  }
  if (pending_.empty() && ftruncate(fd_, 0) != 0) return Errno("empty " + dir_ + kRecords);
  return absl::OkStatus();
}

absl::Status AuditSpool::Renumber(uint64_t first) {
  uint64_t next = first;
  for (v1::AuditRecord& r : pending_) r.set_source_sequence(next++);
  next_ = next;
  return Rewrite();
}

absl::Status AuditSpool::Rewrite() {
  std::string bytes;
  for (const v1::AuditRecord& r : pending_) bytes += Frame(r);
  if (ftruncate(fd_, 0) != 0) return Errno("truncate " + dir_ + kRecords);
  if (absl::Status s = WriteAll(fd_, bytes, "rewrite " + dir_ + kRecords); !s.ok()) return s;
  dirty_ = true;
  return Sync();
}

}  // namespace strongroom
