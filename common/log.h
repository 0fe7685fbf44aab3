// JSON log lines on stderr, one object per line, written with a single write(2) so lines
// from different threads never interleave.
#pragma once

#include <initializer_list>
#include <string>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace strongroom {

enum class LogLevel { kDebug, kInfo, kWarn, kError };

absl::StatusOr<LogLevel> ParseLogLevel(absl::string_view name);

// Sets the "service" field of every line and the minimum level. Call once in main().
void InitLogging(absl::string_view service, LogLevel min_level);

using LogFields = std::initializer_list<std::pair<absl::string_view, absl::string_view>>;

void Log(LogLevel level, absl::string_view message, LogFields fields = {});

// Routes gRPC's own log lines (gpr_log) into the JSON log, so a daemon's stderr is all JSON.
void RouteGrpcLogsToJson();

// JSON string escaping, shared with the metrics and audit writers.
std::string JsonEscape(absl::string_view text);

}  // namespace strongroom
