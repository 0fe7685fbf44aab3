// backend_load: drives one unary RPC of any Strongroom service over mTLS, N times from C concurrent callers,
// and reports throughput and latency percentiles as one JSON line. The request is JSON; every "{i}" in it is
// replaced by the call's index (first + 0, 1, ...), so each create can carry its own local job id.
//
//   backend_load --target 198.51.100.10:7443 --trust-domain td --ca ca.pem --cert c.pem --key c.key
//     --method strongroom.v1.Backend/GetJob --request '{"job":{"globalJobId":"gj-1"}}' --count 10000
//     --concurrency 32
//
// Exit status: 0 when every call returned OK, 1 otherwise, 64 for a usage error.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/notification.h"
#include "common/identity.h"
#include "common/tls.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/dynamic_message.h"
#include "google/protobuf/util/json_util.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"

namespace strongroom {
namespace {

struct Options {
  std::string target, trust_domain, ca, cert, key, method, request = "{}", server_role = "backend";
  int count = 1000;
  int concurrency = 16;
  int channels = 4;
  int64_t first = 1;
  double timeout_seconds = 30;
};

int Usage(const std::string& problem) {
  std::fprintf(stderr,
               "backend_load: %s\nusage: backend_load --target H:P --trust-domain TD --ca F --cert F --key F "
               "--method pkg.Service/Method [--request JSON] [--count N] [--concurrency C] [--channels M] "
               "[--first K] [--server-role ROLE] [--timeout S]\n",
               problem.c_str());
  return 64;
}

std::string Percentile(std::vector<double>& sorted_ms, double p) {
  if (sorted_ms.empty()) return "0";
  const size_t index = std::min(sorted_ms.size() - 1, static_cast<size_t>(p * (sorted_ms.size() - 1) + 0.5));
  return absl::StrCat(sorted_ms[index]);
}

int Main(int argc, char** argv) {
  Options o;
  std::map<std::string, std::string*> strings = {
      {"--target", &o.target},   {"--trust-domain", &o.trust_domain},
      {"--ca", &o.ca},           {"--cert", &o.cert},
      {"--key", &o.key},         {"--method", &o.method},
      {"--request", &o.request}, {"--server-role", &o.server_role}};
  for (int i = 1; i < argc; i += 2) {
    const std::string flag = argv[i];
    if (i + 1 >= argc) return Usage(flag + " needs a value");
    const std::string value = argv[i + 1];
    if (auto it = strings.find(flag); it != strings.end()) {
      *it->second = value;
    } else if (flag == "--count"         ? !absl::SimpleAtoi(value, &o.count)
               : flag == "--concurrency" ? !absl::SimpleAtoi(value, &o.concurrency)
               : flag == "--channels"    ? !absl::SimpleAtoi(value, &o.channels)
               : flag == "--first"       ? !absl::SimpleAtoi(value, &o.first)
               : flag == "--timeout"     ? !absl::SimpleAtod(value, &o.timeout_seconds)
                                         : true) {
      return Usage("bad flag or value: " + flag + " " + value);
    }
  }
  if (o.target.empty() || o.method.empty() || o.count < 1 || o.concurrency < 1 || o.channels < 1) {
    return Usage("--target, --method, and positive counts are required");
  }
  std::vector<std::string> parts = absl::StrSplit(o.method, '/');
  const google::protobuf::DescriptorPool* pool = google::protobuf::DescriptorPool::generated_pool();
  const google::protobuf::MethodDescriptor* method =
      parts.size() == 2 ? pool->FindMethodByName(parts[0] + "." + parts[1]) : nullptr;
  if (method == nullptr) return Usage("unknown method " + o.method);
  absl::StatusOr<Role> role = ParseRole(o.server_role);
  if (!role.ok()) return Usage(std::string(role.status().message()));

  v1::TlsFiles files;
  files.set_ca_file(o.ca);
  files.set_cert_file(o.cert);
  files.set_key_file(o.key);
  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> creds =
      MakeChannelCredentials(files, {o.trust_domain, *role, std::nullopt});
  if (!creds.ok()) return Usage(creds.status().ToString());
  std::vector<std::unique_ptr<grpc::GenericStub>> stubs;
  for (int c = 0; c < o.channels; ++c) {
    grpc::ChannelArguments args;
    // Separate TCP connections, so the load spreads over the server's pollers like independent clients.
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    args.SetInt("strongroom.load.channel", c);
    std::shared_ptr<grpc::Channel> channel = grpc::CreateCustomChannel(o.target, *creds, args);
    // Connect before the clock starts: the TLS credentials load their files asynchronously, and a connection
    // attempted before that fails at once.
    const auto connect_deadline = std::chrono::system_clock::now() + std::chrono::seconds(20);
    while (!channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::milliseconds(500)) &&
           std::chrono::system_clock::now() < connect_deadline) {
    }
    stubs.push_back(std::make_unique<grpc::GenericStub>(channel));
  }

  google::protobuf::DynamicMessageFactory factory(pool);
  const google::protobuf::Message* prototype = factory.GetPrototype(method->input_type());
  std::atomic<int> next{0};
  std::mutex mu;
  std::vector<double> latencies_ms;
  std::map<std::string, int> errors;
  std::string first_error;
  const std::string path = "/" + o.method;
  const auto start = std::chrono::steady_clock::now();
  std::vector<std::thread> workers;
  for (int w = 0; w < o.concurrency; ++w) {
    workers.emplace_back([&, w] {
      grpc::GenericStub& stub = *stubs[w % stubs.size()];
      std::vector<double> mine;
      for (int i = next++; i < o.count; i = next++) {
        const std::string json = absl::StrReplaceAll(o.request, {{"{i}", absl::StrCat(o.first + i)}});
        std::unique_ptr<google::protobuf::Message> request(prototype->New());
        std::string wire;
        if (!google::protobuf::util::JsonStringToMessage(json, request.get()).ok() ||
            !request->SerializeToString(&wire)) {
          std::lock_guard<std::mutex> lock(mu);
          ++errors["BAD_REQUEST_JSON"];
          continue;
        }
        grpc::ClientContext context;
        context.set_deadline(std::chrono::system_clock::now() +
                             std::chrono::milliseconds(static_cast<int64_t>(o.timeout_seconds * 1000)));
        grpc::Slice slice(wire);
        grpc::ByteBuffer request_buffer(&slice, 1), response_buffer;
        grpc::Status status;
        absl::Notification done;
        const auto t0 = std::chrono::steady_clock::now();
        stub.UnaryCall(&context, path, grpc::StubOptions(), &request_buffer, &response_buffer,
                       [&](grpc::Status s) {
                         status = std::move(s);
                         done.Notify();
                       });
        done.WaitForNotification();
        mine.push_back(
            std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
        if (!status.ok()) {
          std::lock_guard<std::mutex> lock(mu);
          ++errors[absl::StatusCodeToString(static_cast<absl::StatusCode>(status.error_code()))];
          if (first_error.empty()) first_error = status.error_message();
        }
      }
      std::lock_guard<std::mutex> lock(mu);
      latencies_ms.insert(latencies_ms.end(), mine.begin(), mine.end());
    });
  }
  for (std::thread& t : workers) t.join();
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::sort(latencies_ms.begin(), latencies_ms.end());
  int failed = 0;
  std::string error_json;
  for (const auto& [code, n] : errors) {
    failed += n;
    absl::StrAppend(&error_json, error_json.empty() ? "" : ",", "\"", code, "\":", n);
  }
  std::printf(
      "{\"method\":\"%s\",\"count\":%d,\"concurrency\":%d,\"ok\":%d,\"errors\":{%s},\"seconds\":%.3f,"
      "\"per_second\":%.1f,\"p50_ms\":%s,\"p90_ms\":%s,\"p99_ms\":%s,\"max_ms\":%s,\"first_error\":\"%s\"}\n",
      o.method.c_str(), o.count, o.concurrency, o.count - failed, error_json.c_str(), seconds,
      o.count / seconds, Percentile(latencies_ms, 0.50).c_str(), Percentile(latencies_ms, 0.90).c_str(),
      Percentile(latencies_ms, 0.99).c_str(), Percentile(latencies_ms, 1.0).c_str(),
      absl::StrReplaceAll(first_error.substr(0, 300), {{"\"", "'"}, {"\n", " "}}).c_str());
  return failed == 0 ? 0 : 1;
}

}  // namespace
}  // namespace strongroom

int main(int argc, char** argv) { return strongroom::Main(argc, argv); }
