// google.protobuf.Timestamp <-> microseconds since the epoch (what the database stores) and absl::Time.
#pragma once

#include <cstdint>

#include "absl/time/time.h"
#include "google/protobuf/timestamp.pb.h"

namespace strongroom::backend {

inline google::protobuf::Timestamp TimestampOfMicros(int64_t micros) {
  google::protobuf::Timestamp t;
  int64_t seconds = micros / 1000000;
  int64_t rest = micros % 1000000;
  if (rest < 0) {
    rest += 1000000;
    --seconds;
  }
  t.set_seconds(seconds);
  t.set_nanos(static_cast<int32_t>(rest * 1000));
  return t;
}

// Sub-microsecond digits are dropped (towards the past).
inline int64_t MicrosOfTimestamp(const google::protobuf::Timestamp& t) {
  return t.seconds() * 1000000 + t.nanos() / 1000;
}

inline absl::Time TimeOfTimestamp(const google::protobuf::Timestamp& t) {
  return absl::FromUnixSeconds(t.seconds()) + absl::Nanoseconds(t.nanos());
}

inline google::protobuf::Timestamp TimestampOfTime(absl::Time t) {
  return TimestampOfMicros(absl::ToUnixMicros(t));
}

}  // namespace strongroom::backend
