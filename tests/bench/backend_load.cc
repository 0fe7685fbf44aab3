// backend_load: drives one unary RPC of any Strongroom service over mTLS, N times from C concurrent callers,
// and reports throughput and latency percentiles as one JSON line. The request is JSON; every "{i}" in it is
// replaced by the call's index (first + 0, 1, ...), so each create can carry its own local job id.
//
//   backend_load --target 198.51.100.10:7443 --trust-domain td --ca ca.pem --cert c.pem --key c.key
//     --method strongroom.v1.Backend/GetJob --request '{"job":{"globalJobId":"gj-1"}}' --count 10000
//     --concurrency 32
//
// Each caller is a thread making blocking calls; a request without "{i}" is serialized once. The generator
// shares the machine's cores with backend in the benchmark, so it reports its own CPU time per call
// ("client_cpu_us_per_call").
//
// Exit status: 0 when every call returned OK, 1 otherwise, 64 for a usage error.
#include <sys/resource.h>

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
#include "common/identity.h"
#include "common/tls.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/dynamic_message.h"
#include "google/protobuf/util/json_util.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/impl/client_unary_call.h"
#include "grpcpp/impl/rpc_method.h"

namespace strongroom {
namespace {

struct Options {
  std::string target, trust_domain, ca, cert, key, method, request = "{}", server_role = "backend";
  int count = 1000;
  int concurrency = 16;
  int channels = 4;
  int64_t first = 1;
  double timeout_seconds = 30;
  bool empty_request = false;  // send zero bytes; the method need not be in the descriptor pool
};

int Usage(const std::string& problem) {
  std::fprintf(stderr,
               "backend_load: %s\nusage: backend_load --target H:P --trust-domain TD --ca F --cert F --key F "
               "--method pkg.Service/Method [--request JSON] [--count N] [--concurrency C] [--channels M] "
               "[--first K] [--server-role ROLE] [--timeout S] [--empty-request]\n",
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
    if (flag == "--empty-request") {  // no value
      o.empty_request = true;
      --i;
      continue;
    }
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
  if (method == nullptr && !o.empty_request) return Usage("unknown method " + o.method);
  absl::StatusOr<Role> role = ParseRole(o.server_role);
  if (!role.ok()) return Usage(std::string(role.status().message()));

  v1::TlsFiles files;
  files.set_ca_file(o.ca);
  files.set_cert_file(o.cert);
  files.set_key_file(o.key);
  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> creds =
      MakeChannelCredentials(files, {o.trust_domain, *role, std::nullopt});
  if (!creds.ok()) return Usage(creds.status().ToString());
  std::vector<std::shared_ptr<grpc::Channel>> channels;
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
    channels.push_back(std::move(channel));
  }

  google::protobuf::DynamicMessageFactory factory(pool);
  const google::protobuf::Message* prototype =
      method != nullptr ? factory.GetPrototype(method->input_type()) : nullptr;
  std::atomic<int> next{0};
  std::mutex mu;
  std::vector<double> latencies_ms;
  std::map<std::string, int> errors;
  std::string first_error;
  const std::string path = "/" + o.method;
  const grpc::internal::RpcMethod rpc(path.c_str(), grpc::internal::RpcMethod::NORMAL_RPC);
  // The same bytes for every call unless the request varies with {i}.
  std::string fixed_wire;
  const bool varies = !o.empty_request && o.request.find("{i}") != std::string::npos;
  if (!varies && !o.empty_request) {
    std::unique_ptr<google::protobuf::Message> request(prototype->New());
    if (!google::protobuf::util::JsonStringToMessage(o.request, request.get()).ok() ||
        !request->SerializeToString(&fixed_wire)) {
      return Usage("--request is not a valid " + method->input_type()->full_name());
    }
  }
  auto cpu_seconds = [] {
    struct rusage u {};
    getrusage(RUSAGE_SELF, &u);
    return u.ru_utime.tv_sec + u.ru_stime.tv_sec + (u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
  };
  const double cpu0 = cpu_seconds();
  const auto start = std::chrono::steady_clock::now();
  std::vector<std::thread> workers;
  for (int w = 0; w < o.concurrency; ++w) {
    workers.emplace_back([&, w] {
      grpc::ChannelInterface* channel = channels[w % channels.size()].get();
      std::vector<double> mine;
      for (int i = next++; i < o.count; i = next++) {
        std::string wire = fixed_wire;
        if (varies) {
          const std::string json = absl::StrReplaceAll(o.request, {{"{i}", absl::StrCat(o.first + i)}});
          std::unique_ptr<google::protobuf::Message> request(prototype->New());
          if (!google::protobuf::util::JsonStringToMessage(json, request.get()).ok() ||
              !request->SerializeToString(&wire)) {
            std::lock_guard<std::mutex> lock(mu);
            ++errors["BAD_REQUEST_JSON"];
            continue;
          }
        }
        grpc::ClientContext context;
        context.set_deadline(std::chrono::system_clock::now() +
                             std::chrono::milliseconds(static_cast<int64_t>(o.timeout_seconds * 1000)));
        grpc::Slice slice(wire);
        grpc::ByteBuffer request_buffer(&slice, 1), response_buffer;
        const auto t0 = std::chrono::steady_clock::now();
        const grpc::Status status = grpc::internal::BlockingUnaryCall<grpc::ByteBuffer, grpc::ByteBuffer>(
            channel, rpc, &context, request_buffer, &response_buffer);
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
  const double client_cpu_us = (cpu_seconds() - cpu0) * 1e6 / o.count;
  std::sort(latencies_ms.begin(), latencies_ms.end());
  int failed = 0;
  std::string error_json;
  for (const auto& [code, n] : errors) {
    failed += n;
    absl::StrAppend(&error_json, error_json.empty() ? "" : ",", "\"", code, "\":", n);
  }
  std::printf(
      "{\"method\":\"%s\",\"count\":%d,\"concurrency\":%d,\"ok\":%d,\"errors\":{%s},\"seconds\":%.3f,"
      "\"per_second\":%.1f,\"p50_ms\":%s,\"p90_ms\":%s,\"p99_ms\":%s,\"max_ms\":%s,\"client_cpu_us_per_"
      "call\":%d,"
      "\"first_error\":\"%s\"}\n",
      o.method.c_str(), o.count, o.concurrency, o.count - failed, error_json.c_str(), seconds,
      o.count / seconds, Percentile(latencies_ms, 0.50).c_str(), Percentile(latencies_ms, 0.90).c_str(),
      Percentile(latencies_ms, 0.99).c_str(), Percentile(latencies_ms, 1.0).c_str(),
      static_cast<int>(client_cpu_us),
      absl::StrReplaceAll(first_error.substr(0, 300), {{"\"", "'"}, {"\n", " "}}).c_str());
  return failed == 0 ? 0 : 1;
}

}  // namespace
}  // namespace strongroom

int main(int argc, char** argv) { return strongroom::Main(argc, argv); }
