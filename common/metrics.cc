#include "common/metrics.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace strongroom {
namespace {

// A label value in the text format: a method name comes from the caller's :path, so it may hold anything.
std::string LabelValue(absl::string_view value) {
  std::string out;
  for (char c : value) {
    if (c == '\\' || c == '"') {
      out.push_back('\\');
      out.push_back(c);
    } else if (c == '\n') {
      out.append("\\n");
    } else {
      out.push_back(c);
    }
  }
  return out;
}

std::string Labels(absl::string_view method, absl::string_view code) {
  return absl::StrCat("{method=\"", LabelValue(method), "\",code=\"", code, "\"}");
}

}  // namespace

void AppendPrometheusMetric(std::string* out, absl::string_view name, absl::string_view type,
                            absl::string_view help, double value) {
  absl::StrAppend(out, "# HELP ", name, " ", help, "\n# TYPE ", name, " ", type, "\n", name, " ",
                  absl::StrFormat("%.17g", value), "\n");
}

void RpcMetrics::RecordHandled(absl::string_view method, absl::string_view code, double seconds) {
  absl::MutexLock lock(&mu_);
  ++handled_[{std::string(method), std::string(code)}];
  Histogram& h = latency_[std::string(method)];
  for (size_t i = 0; i < kBuckets.size(); ++i) {
    if (seconds <= kBuckets[i]) ++h.buckets[i];
  }
  ++h.count;
  h.sum += seconds;
}

void RpcMetrics::RecordRejected(absl::string_view method, absl::string_view code) {
  absl::MutexLock lock(&mu_);
  ++rejected_[{std::string(method), std::string(code)}];
}

std::string RpcMetrics::RenderPrometheus() const {
  absl::MutexLock lock(&mu_);
  std::string out =
      "# HELP strongroom_rpc_handled_total RPCs that reached their handler, by final status.\n"
      "# TYPE strongroom_rpc_handled_total counter\n";
  for (const auto& [key, n] : handled_) {
    absl::StrAppend(&out, "strongroom_rpc_handled_total", Labels(key.first, key.second), " ", n, "\n");
  }
  absl::StrAppend(&out,
                  "# HELP strongroom_rpc_rejected_total RPCs refused by authentication or "
                  "authorization before any handler ran.\n"
                  "# TYPE strongroom_rpc_rejected_total counter\n");
  for (const auto& [key, n] : rejected_) {
    absl::StrAppend(&out, "strongroom_rpc_rejected_total", Labels(key.first, key.second), " ", n, "\n");
  }
  absl::StrAppend(&out,
                  "# HELP strongroom_rpc_latency_seconds Handler latency.\n"
                  "# TYPE strongroom_rpc_latency_seconds histogram\n");
  for (const auto& [method, h] : latency_) {
    for (size_t i = 0; i < kBuckets.size(); ++i) {
      absl::StrAppend(&out, "strongroom_rpc_latency_seconds_bucket{method=\"", LabelValue(method), "\",le=\"",
                      absl::StrFormat("%g", kBuckets[i]), "\"} ", h.buckets[i], "\n");
    }
    absl::StrAppend(&out, "strongroom_rpc_latency_seconds_bucket{method=\"", LabelValue(method),
                    "\",le=\"+Inf\"} ", h.count, "\n");
    absl::StrAppend(&out, "strongroom_rpc_latency_seconds_sum{method=\"", LabelValue(method), "\"} ",
                    absl::StrFormat("%.6f", h.sum), "\n");
    absl::StrAppend(&out, "strongroom_rpc_latency_seconds_count{method=\"", LabelValue(method), "\"} ",
                    h.count, "\n");
  }
  return out;
}

}  // namespace strongroom
