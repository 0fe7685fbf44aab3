// Per-RPC counters and latency histograms, rendered in the Prometheus text format.
#pragma once

#include <array>
#include <map>
#include <string>
#include <utility>

#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"

namespace strongroom {

// One unlabelled series with its HELP and TYPE lines ("gauge" or "counter"), e.g. an audit sink's lag.
void AppendPrometheusMetric(std::string* out, absl::string_view name, absl::string_view type,
                            absl::string_view help, double value);

class RpcMetrics {
 public:
  // An RPC that reached its handler (whatever the handler answered).
  void RecordHandled(absl::string_view method, absl::string_view code, double seconds);
  // An RPC refused before its handler: bad/missing certificate or not in the authz table.
  void RecordRejected(absl::string_view method, absl::string_view code);

  std::string RenderPrometheus() const;

  // Upper bounds of the latency histogram buckets, in seconds.
  static constexpr std::array<double, 14> kBuckets = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                      0.1,    0.25,  0.5,    1,     2.5,  5,     10};

 private:
  struct Histogram {
    std::array<uint64_t, kBuckets.size()> buckets{};
    uint64_t count = 0;
    double sum = 0;
  };
  mutable absl::Mutex mu_;
  // (method, status code) -> calls that reached the handler.
  std::map<std::pair<std::string, std::string>, uint64_t> handled_ ABSL_GUARDED_BY(mu_);
  // (method, status code) -> calls refused by authentication/authorization.
  std::map<std::pair<std::string, std::string>, uint64_t> rejected_ ABSL_GUARDED_BY(mu_);
  // method -> handler latency.
  std::map<std::string, Histogram> latency_ ABSL_GUARDED_BY(mu_);
};

}  // namespace strongroom
