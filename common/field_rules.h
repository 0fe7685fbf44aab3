// The one definition of each request field's rule (issue 12, "one validation per field"): the patterns of
// ids, names and tokens (common.proto's conventions), the ranges of resources, and how a refused value is
// quoted in a message. backend's validation, vm-controller's ConvertLocalJob and the Local Slurm's submit
// check (strongroom-submit-check, run by job_submit.lua) all call these, so one field has one rule
// everywhere.
//
// Every error is INVALID_ARGUMENT "<field>: "<value>" <reason>" with the value escaped by QuoteValue: no raw
// control character (NUL, newline, ...), DEL, C1 control or bidirectional formatting character can reach a
// message, a log line or the Local Slurm's job record through a refused value.
//
// Depends only on Abseil (the submit check links it statically, so job_submit.lua's fork+exec stays cheap).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace strongroom {

// Ranges. 0 means "not set" for cpus, memory and the time limit (the site's default applies).
constexpr uint32_t kMaxNodesPerJob = 1024;
constexpr uint64_t kMaxCpusPerNode = 4096;
constexpr uint64_t kMaxMemoryBytes = uint64_t{1} << 46;  // 64 TiB per node
constexpr uint64_t kMaxGpusPerNode = 64;
constexpr int64_t kMinTimeLimitSeconds = 60;
constexpr int64_t kMaxTimeLimitSeconds = int64_t{366} * 24 * 3600;
constexpr uint64_t kMaxUid = 4294967293u;      // Slurm's NO_VAL - 1
constexpr uint32_t kMaxSlurmJobId = 67108863;  // Slurm's MAX_JOB_ID (0x03FFFFFF)
constexpr size_t kQuotedValueBytes = 64;       // how much of a refused value a message quotes

// The character classes and the shape test the patterns below are made of, for rules of other fields.
inline bool IsLowerAscii(char c) { return c >= 'a' && c <= 'z'; }
inline bool IsUpperAscii(char c) { return c >= 'A' && c <= 'Z'; }
inline bool IsDigitAscii(char c) { return c >= '0' && c <= '9'; }
// first(c) for the first character, rest(c) for the others, length in [min_len, max_len].
template <typename First, typename Rest>
bool MatchesShape(absl::string_view s, size_t min_len, size_t max_len, First first, Rest rest) {
  if (s.size() < min_len || s.size() > max_len || s.empty() || !first(s[0])) return false;
  for (size_t i = 1; i < s.size(); ++i) {
    if (!rest(s[i])) return false;
  }
  return true;
}

// Patterns (the text in each comment is what the error message states).
bool IsId(absl::string_view s);          // ^[a-z0-9][a-z0-9-]{0,62}$
bool IsName(absl::string_view s);        // ^[a-z0-9][a-z0-9_-]{0,62}$  (projects = Slurm accounts, images)
bool IsToken(absl::string_view s);       // ^[a-z0-9][a-z0-9-]{7,62}$
bool IsUserName(absl::string_view s);    // ^[a-z_][a-z0-9_.-]{0,31}$
bool IsReasonCode(absl::string_view s);  // ^[A-Z][A-Z0-9_]{0,63}$
inline constexpr const char* kIdPattern = "^[a-z0-9][a-z0-9-]{0,62}$";
inline constexpr const char* kNamePattern = "^[a-z0-9][a-z0-9_-]{0,62}$";
inline constexpr const char* kTokenPattern = "^[a-z0-9][a-z0-9-]{7,62}$";
inline constexpr const char* kUserNamePattern = "^[a-z_][a-z0-9_.-]{0,31}$";

// The value as a message may quote it: at most kQuotedValueBytes, every byte outside printable ASCII and
// every quote or backslash escaped C-style (\xNN, \", \\), "..." when cut.
std::string QuoteValue(absl::string_view value);

// Text for a log line or a Slurm job field: valid UTF-8 is kept except C0 controls, DEL, C1 controls and the
// bidirectional formatting characters (U+061C, U+200E, U+200F, U+202A..U+202E, U+2066..U+2069), which become
// \u{XXXX}; bytes that are not valid UTF-8 become \xNN; a backslash becomes \\.
std::string SanitizeText(absl::string_view text);
// Whether `text` has no character SanitizeText would change.
bool IsSafeText(absl::string_view text);

// INVALID_ARGUMENT "<field>: "<QuoteValue(value)>" <reason>".
absl::Status InvalidField(absl::string_view field, absl::string_view value, absl::string_view reason);

// A project (the Slurm account on both clusters). Empty is allowed only where it means "the user's default
// account" (allow_empty).
absl::Status CheckProject(absl::string_view field, absl::string_view project, bool allow_empty);
absl::Status CheckToken(absl::string_view field, absl::string_view token);
absl::Status CheckUserName(absl::string_view field, absl::string_view name);
// 1..kMaxUid; 0 (root) is refused.
absl::Status CheckUid(absl::string_view field, uint64_t uid);
absl::Status CheckGid(absl::string_view field, uint64_t gid);
// Values as they arrive (64 bits wide, before any narrowing): 0 = not set.
absl::Status CheckNodes(absl::string_view field, uint64_t nodes);
absl::Status CheckCpus(absl::string_view field, uint64_t cpus_per_node);
absl::Status CheckMemoryBytes(absl::string_view field, uint64_t bytes_per_node);
absl::Status CheckGpus(absl::string_view field, uint64_t gpus_per_node);
// 0 = not set (the partition's limit); otherwise kMinTimeLimitSeconds..kMaxTimeLimitSeconds. Negative
// refused.
absl::Status CheckTimeLimitSeconds(absl::string_view field, int64_t seconds, int32_t nanos = 0);
absl::Status CheckSlurmJobId(absl::string_view field, uint64_t job_id, bool required);

}  // namespace strongroom
