#include "common/log.h"

#include <unistd.h>

#include <atomic>
#include <cstdio>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "google/protobuf/stubs/logging.h"
#include "grpc/support/log.h"

namespace strongroom {
namespace {

std::atomic<int> g_min_level{static_cast<int>(LogLevel::kInfo)};
// Written once by InitLogging before any thread logs.
std::string* g_service = new std::string("strongroom");

absl::string_view LevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug:
      return "debug";
    case LogLevel::kInfo:
      return "info";
    case LogLevel::kWarn:
      return "warn";
    case LogLevel::kError:
      return "error";
  }
  return "info";
}

}  // namespace

absl::StatusOr<LogLevel> ParseLogLevel(absl::string_view name) {
  for (LogLevel level : {LogLevel::kDebug, LogLevel::kInfo, LogLevel::kWarn, LogLevel::kError}) {
    if (LevelName(level) == name) return level;
  }
  return absl::InvalidArgumentError(absl::StrCat("\"", name, "\" is not one of debug, info, warn, error"));
}

void InitLogging(absl::string_view service, LogLevel min_level) {
  *g_service = std::string(service);
  g_min_level = static_cast<int>(min_level);
}

// The code point of a C1 control or a bidirectional formatting character (U+061C, U+200E, U+200F,
// U+202A..U+202E, U+2066..U+2069) encoded at text[i] in `*len` bytes, or 0: a log line never carries them raw
// (common/field_rules.h, SanitizeText, has the same set).
uint32_t UnsafeCharAt(absl::string_view text, size_t i, size_t* len) {
  const auto b = [&](size_t k) { return i + k < text.size() ? static_cast<unsigned char>(text[i + k]) : 0; };
  if (b(0) == 0xC2 && b(1) >= 0x80 && b(1) <= 0x9F) return *len = 2, b(1);
  if (b(0) == 0xD8 && b(1) == 0x9C) return *len = 2, 0x061C;
  if (b(0) == 0xE2 && b(1) == 0x80 && (b(2) == 0x8E || b(2) == 0x8F || (b(2) >= 0xAA && b(2) <= 0xAE))) {
    return *len = 3, 0x2000 + (b(2) & 0x3F);
  }
  if (b(0) == 0xE2 && b(1) == 0x81 && b(2) >= 0xA6 && b(2) <= 0xA9) return *len = 3, 0x2040 + (b(2) & 0x3F);
  return 0;
}

std::string JsonEscape(absl::string_view text) {
  std::string out;
  out.reserve(text.size() + 2);
  for (size_t i = 0; i < text.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    size_t len = 0;
    if (const uint32_t cp = UnsafeCharAt(text, i, &len); cp != 0) {
      out += absl::StrFormat("\\u%04x", cp);
      i += len - 1;
      continue;
    }
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20 || c == 0x7F) {
          out += absl::StrFormat("\\u%04x", c);
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out;
}

void Log(LogLevel level, absl::string_view message, LogFields fields) {
  if (static_cast<int>(level) < g_min_level.load(std::memory_order_relaxed)) return;
  std::string line =
      absl::StrCat("{\"ts\":\"", absl::FormatTime("%Y-%m-%dT%H:%M:%E6SZ", absl::Now(), absl::UTCTimeZone()),
                   "\",\"level\":\"", LevelName(level), "\",\"service\":\"", JsonEscape(*g_service),
                   "\",\"msg\":\"", JsonEscape(message), "\"");
  for (const auto& [key, value] : fields) {
    absl::StrAppend(&line, ",\"", JsonEscape(key), "\":\"", JsonEscape(value), "\"");
  }
  line += "}\n";
  // A short write to stderr is not worth retrying; the line is best effort.
  [[maybe_unused]] ssize_t written = ::write(STDERR_FILENO, line.data(), line.size());
}

void RouteGrpcLogsToJson() {
  gpr_set_log_function([](gpr_log_func_args* args) {
    absl::string_view message = args->message;
    LogLevel level = args->severity == GPR_LOG_SEVERITY_ERROR  ? LogLevel::kError
                     : args->severity == GPR_LOG_SEVERITY_INFO ? LogLevel::kInfo
                                                               : LogLevel::kDebug;
    // Clients dial by address and verify the server's SPIFFE URI, so a TLS SNI that matches
    // no DNS name in our certificate is expected on every connection, not an error.
    if (absl::StrContains(message, "No match found for server name")) level = LogLevel::kDebug;
    Log(level, message, {{"source", "grpc"}, {"at", absl::StrCat(args->file, ":", args->line)}});
  });
  // protobuf's own complaints too (e.g. a request whose string field is not UTF-8, which gRPC then refuses):
  // one JSON line each instead of free text on stderr.
  google::protobuf::SetLogHandler(
      [](google::protobuf::LogLevel severity, const char* file, int line, const std::string& message) {
        LogLevel level = severity >= google::protobuf::LOGLEVEL_ERROR     ? LogLevel::kError
                         : severity == google::protobuf::LOGLEVEL_WARNING ? LogLevel::kWarn
                                                                          : LogLevel::kInfo;
        // A hostile or broken peer's bytes, refused and audited with the call: not an error of this daemon.
        if (absl::StrContains(message, "invalid UTF-8")) level = LogLevel::kWarn;
        Log(level, message, {{"source", "protobuf"}, {"at", absl::StrCat(file, ":", line)}});
      });
}

}  // namespace strongroom
