// A minimal plain-HTTP endpoint that serves GET /metrics for Prometheus. It holds no job data,
// only counters, so it is not behind mTLS; bind it to loopback or a management network.
#pragma once

#include <atomic>
#include <functional>
#include <string>
#include <thread>

#include "absl/status/statusor.h"

namespace strongroom {

class MetricsHttpServer {
 public:
  // Binds `address` ("HOST:PORT", IPv4 literal or "localhost") and starts serving
  // `render()` on its own thread.
  static absl::StatusOr<std::unique_ptr<MetricsHttpServer>> Start(const std::string& address,
                                                                  std::function<std::string()> render);
  ~MetricsHttpServer();

  int port() const { return port_; }

 private:
  MetricsHttpServer(int fd, int port, std::function<std::string()> render);
  void Serve();
  void Answer(int client_fd);

  const int listen_fd_;
  const int port_;
  const std::function<std::string()> render_;
  // Set by the destructor; the serving thread polls it.
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace strongroom
