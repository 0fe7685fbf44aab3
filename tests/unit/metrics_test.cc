#include "common/metrics.h"

#include "gtest/gtest.h"

namespace strongroom {
namespace {

TEST(RpcMetrics, RendersCountersAndHistogram) {
  RpcMetrics m;
  m.RecordHandled("/strongroom.v1.Netd/ListPorts", "OK", 0.003);
  m.RecordHandled("/strongroom.v1.Netd/ListPorts", "OK", 0.2);
  m.RecordRejected("/strongroom.v1.Netd/AllocatePort", "PERMISSION_DENIED");
  const std::string text = m.RenderPrometheus();
  EXPECT_NE(text.find("strongroom_rpc_handled_total{method=\"/strongroom.v1.Netd/ListPorts\",code=\"OK\"} 2"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("strongroom_rpc_rejected_total{method=\"/strongroom.v1.Netd/AllocatePort\","
                      "code=\"PERMISSION_DENIED\"} 1"),
            std::string::npos)
      << text;
  EXPECT_NE(
      text.find(
          "strongroom_rpc_latency_seconds_bucket{method=\"/strongroom.v1.Netd/ListPorts\",le=\"0.005\"} 1"),
      std::string::npos)
      << text;
  EXPECT_NE(text.find("strongroom_rpc_latency_seconds_count{method=\"/strongroom.v1.Netd/ListPorts\"} 2"),
            std::string::npos)
      << text;
}

}  // namespace
}  // namespace strongroom
