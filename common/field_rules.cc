#include "common/field_rules.h"

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace strongroom {
namespace {



// The length of the valid UTF-8 sequence at s[i] and its code point, or 0 if none starts there.
size_t Utf8At(absl::string_view s, size_t i, uint32_t* cp) {
  const auto b = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = b(i);
  size_t len = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0;
  if (len == 0 || i + len > s.size()) return 0;
  uint32_t v = len == 1 ? c : len == 2 ? (c & 0x1F) : len == 3 ? (c & 0x0F) : (c & 0x07);
  for (size_t k = 1; k < len; ++k) {
    if ((b(i + k) & 0xC0) != 0x80) return 0;
    v = (v << 6) | (b(i + k) & 0x3F);
  }
  static constexpr uint32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
  if (v < kMin[len] || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) return 0;  // overlong, range, surrogate
  *cp = v;
  return len;
}

bool IsUnsafeCodePoint(uint32_t cp) {
  return cp < 0x20 || cp == 0x7F || (cp >= 0x80 && cp <= 0x9F) || cp == 0x061C || cp == 0x200E ||
         cp == 0x200F || (cp >= 0x202A && cp <= 0x202E) || (cp >= 0x2066 && cp <= 0x2069);
}

}  // namespace

bool IsId(absl::string_view s) {
  return MatchesShape(
      s, 1, 63, [](char c) { return IsLowerAscii(c) || IsDigitAscii(c); },
      [](char c) { return IsLowerAscii(c) || IsDigitAscii(c) || c == '-'; });
}
bool IsName(absl::string_view s) {
  return MatchesShape(
      s, 1, 63, [](char c) { return IsLowerAscii(c) || IsDigitAscii(c); },
      [](char c) { return IsLowerAscii(c) || IsDigitAscii(c) || c == '-' || c == '_'; });
}
bool IsToken(absl::string_view s) {
  return MatchesShape(
      s, 8, 63, [](char c) { return IsLowerAscii(c) || IsDigitAscii(c); },
      [](char c) { return IsLowerAscii(c) || IsDigitAscii(c) || c == '-'; });
}
bool IsUserName(absl::string_view s) {
  return MatchesShape(
      s, 1, 32, [](char c) { return IsLowerAscii(c) || c == '_'; },
      [](char c) { return IsLowerAscii(c) || IsDigitAscii(c) || c == '_' || c == '.' || c == '-'; });
}
bool IsReasonCode(absl::string_view s) {
  return MatchesShape(s, 1, 64, IsUpperAscii, [](char c) { return IsUpperAscii(c) || IsDigitAscii(c) || c == '_'; });
}

std::string QuoteValue(absl::string_view value) {
  std::string quoted = absl::CHexEscape(value.substr(0, kQuotedValueBytes));
  if (value.size() > kQuotedValueBytes) quoted += "...";
  return quoted;
}

std::string SanitizeText(absl::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    uint32_t cp = 0;
    const size_t len = Utf8At(text, i, &cp);
    if (len == 0) {
      absl::StrAppendFormat(&out, "\\x%02x", static_cast<unsigned char>(text[i]));
      ++i;
      continue;
    }
    if (cp == '\\') {
      out += "\\\\";
    } else if (IsUnsafeCodePoint(cp)) {
      absl::StrAppendFormat(&out, "\\u{%04x}", cp);
    } else {
      out.append(text.data() + i, len);
    }
    i += len;
  }
  return out;
}

bool IsSafeText(absl::string_view text) { return SanitizeText(text) == text; }

absl::Status InvalidField(absl::string_view field, absl::string_view value, absl::string_view reason) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": \"", QuoteValue(value), "\" ", reason));
}

absl::Status CheckProject(absl::string_view field, absl::string_view project, bool allow_empty) {
  if (project.empty() && allow_empty) return absl::OkStatus();
  if (!IsName(project)) {
    return InvalidField(field, project,
                        absl::StrCat("must ", allow_empty ? "be empty (the user's default account) or " : "",
                                     "match ", kNamePattern));
  }
  return absl::OkStatus();
}

absl::Status CheckToken(absl::string_view field, absl::string_view token) {
  if (!IsToken(token)) return InvalidField(field, token, absl::StrCat("must match ", kTokenPattern));
  return absl::OkStatus();
}

absl::Status CheckUserName(absl::string_view field, absl::string_view name) {
  if (!IsUserName(name)) return InvalidField(field, name, absl::StrCat("must match ", kUserNamePattern));
  return absl::OkStatus();
}

absl::Status CheckUid(absl::string_view field, uint64_t uid) {
  if (uid == 0) return InvalidField(field, "0", "is root, which is refused");
  if (uid > kMaxUid) return InvalidField(field, absl::StrCat(uid), absl::StrCat("is not in 1..", kMaxUid));
  return absl::OkStatus();
}

absl::Status CheckGid(absl::string_view field, uint64_t gid) {
  if (gid > kMaxUid) return InvalidField(field, absl::StrCat(gid), absl::StrCat("is not in 0..", kMaxUid));
  return absl::OkStatus();
}

absl::Status CheckNodes(absl::string_view field, uint64_t nodes) {
  if (nodes > kMaxNodesPerJob) {
    return InvalidField(field, absl::StrCat(nodes), absl::StrCat("is not in 0..", kMaxNodesPerJob));
  }
  return absl::OkStatus();
}

absl::Status CheckCpus(absl::string_view field, uint64_t cpus_per_node) {
  if (cpus_per_node > kMaxCpusPerNode) {
    return InvalidField(field, absl::StrCat(cpus_per_node), absl::StrCat("is not in 0..", kMaxCpusPerNode));
  }
  return absl::OkStatus();
}

absl::Status CheckMemoryBytes(absl::string_view field, uint64_t bytes_per_node) {
  if (bytes_per_node > kMaxMemoryBytes) {
    return InvalidField(field, absl::StrCat(bytes_per_node), "is not in 0..2^46 (64 TiB)");
  }
  return absl::OkStatus();
}

absl::Status CheckGpus(absl::string_view field, uint64_t gpus_per_node) {
  if (gpus_per_node > kMaxGpusPerNode) {
    return InvalidField(field, absl::StrCat(gpus_per_node), absl::StrCat("is not in 0..", kMaxGpusPerNode));
  }
  return absl::OkStatus();
}

absl::Status CheckTimeLimitSeconds(absl::string_view field, int64_t seconds, int32_t nanos) {
  if (seconds < 0 || nanos < 0) return InvalidField(field, absl::StrCat(seconds, "s"), "is negative");
  if (seconds == 0 && nanos == 0) return absl::OkStatus();
  if (seconds < kMinTimeLimitSeconds || seconds > kMaxTimeLimitSeconds ||
      (seconds == kMaxTimeLimitSeconds && nanos > 0)) {
    return InvalidField(field, absl::StrCat(seconds, "s"), "is not in 60 s..366 days");
  }
  return absl::OkStatus();
}

absl::Status CheckSlurmJobId(absl::string_view field, uint64_t job_id, bool required) {
  if (job_id > kMaxSlurmJobId || (required && job_id == 0)) {
    return InvalidField(field, absl::StrCat(job_id), absl::StrCat("is not in 1..", kMaxSlurmJobId));
  }
  return absl::OkStatus();
}

}  // namespace strongroom
