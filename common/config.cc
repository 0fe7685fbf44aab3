#include "common/config.h"

#include <fcntl.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/identity.h"
#include "common/log.h"
#include "google/protobuf/io/tokenizer.h"

namespace strongroom {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::TextFormat;

class CollectFirstError : public google::protobuf::io::ErrorCollector {
 public:
  void AddError(int line, int column, const std::string& message) override {
    if (!error_.empty()) return;
    // The parser counts from 0.
    error_ = absl::StrCat(line + 1, ":", column + 1, ": ", message);
  }
  const std::string& error() const { return error_; }

 private:
  std::string error_;
};

}  // namespace

ConfigSource::ConfigSource(std::string path, const google::protobuf::Message& root,
                           std::unique_ptr<TextFormat::ParseInfoTree> tree)
    : path_(std::move(path)), root_(root), tree_(std::move(tree)) {}

int ConfigSource::LineOf(absl::string_view field_path) const {
  const Descriptor* descriptor = root_.GetDescriptor();
  const TextFormat::ParseInfoTree* tree = tree_.get();
  int line = 0;  // 0-based; the top of the file when nothing along the path was written
  for (absl::string_view name : absl::StrSplit(field_path, '.')) {
    if (descriptor == nullptr || tree == nullptr) break;
    const FieldDescriptor* field = descriptor->FindFieldByName(std::string(name));
    if (field == nullptr) break;
    const auto location = tree->GetLocation(field, field->is_repeated() ? 0 : -1);
    if (location.line < 0) break;
    line = location.line;
    if (field->type() != FieldDescriptor::TYPE_MESSAGE) break;
    tree = tree->GetTreeForNested(field, field->is_repeated() ? 0 : -1);
    descriptor = field->message_type();
  }
  return line + 1;
}

absl::Status ConfigSource::Error(absl::string_view field_path, absl::string_view reason) const {
  return absl::InvalidArgumentError(
      absl::StrCat(path_, ":", LineOf(field_path), ": ", field_path, ": ", reason));
}

absl::StatusOr<std::unique_ptr<ConfigSource>> LoadTextprotoFile(const std::string& path,
                                                                google::protobuf::Message* config) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open config file"));
  std::stringstream text;
  text << in.rdbuf();
  auto tree = std::make_unique<TextFormat::ParseInfoTree>();
  CollectFirstError errors;
  TextFormat::Parser parser;
  parser.RecordErrorsTo(&errors);
  parser.WriteLocationsTo(tree.get());
  if (!parser.ParseFromString(text.str(), config)) {
    return absl::InvalidArgumentError(absl::StrCat(path, ":", errors.error()));
  }
  return std::make_unique<ConfigSource>(path, *config, std::move(tree));
}

absl::Status CheckHostPort(absl::string_view address) {
  const size_t colon = address.rfind(':');
  if (colon == absl::string_view::npos || colon == 0) return absl::InvalidArgumentError("must be HOST:PORT");
  uint32_t port = 0;
  if (!absl::SimpleAtoi(address.substr(colon + 1), &port) || port < 1 || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("port \"", address.substr(colon + 1), "\" is not in 1..65535"));
  }
  return absl::OkStatus();
}

absl::Status ValidateServerConfig(const v1::ServerConfig& server, const ConfigSource& source,
                                  absl::string_view prefix) {
  auto field = [&](absl::string_view name) { return absl::StrCat(prefix, ".", name); };
  if (server.listen_address().empty()) return source.Error(field("listen_address"), "required");
  if (absl::Status s = CheckHostPort(server.listen_address()); !s.ok()) {
    return source.Error(field("listen_address"), s.message());
  }
  for (const auto& [name, path] :
       {std::pair<const char*, const std::string&>{"ca_file", server.tls().ca_file()},
        {"cert_file", server.tls().cert_file()},
        {"key_file", server.tls().key_file()}}) {
    if (path.empty()) return source.Error(field(absl::StrCat("tls.", name)), "required");
    if (::access(path.c_str(), R_OK) != 0) {
      return source.Error(field(absl::StrCat("tls.", name)), absl::StrCat(path, " is not readable"));
    }
  }
  if (!IsValidTrustDomain(server.trust_domain())) {
    return source.Error(field("trust_domain"), "must be a lower-case DNS name of 1..253 characters");
  }
  if (!IsValidInstanceName(server.instance())) {
    return source.Error(field("instance"), "must match ^[a-z0-9][a-z0-9.-]{0,62}$");
  }
  if (!server.metrics_listen_address().empty()) {
    if (absl::Status s = CheckHostPort(server.metrics_listen_address()); !s.ok()) {
      return source.Error(field("metrics_listen_address"), s.message());
    }
  }
  if (server.has_drain_seconds() && server.drain_seconds() > 300) {
    return source.Error(field("drain_seconds"), absl::StrCat(server.drain_seconds(), " is not in 0..300"));
  }
  if (server.has_shutdown_grace_seconds() &&
      (server.shutdown_grace_seconds() < 1 || server.shutdown_grace_seconds() > 600)) {
    return source.Error(field("shutdown_grace_seconds"),
                        absl::StrCat(server.shutdown_grace_seconds(), " is not in 1..600"));
  }
  if (server.has_cert_refresh_seconds() &&
      (server.cert_refresh_seconds() < 1 || server.cert_refresh_seconds() > 3600)) {
    return source.Error(field("cert_refresh_seconds"),
                        absl::StrCat(server.cert_refresh_seconds(), " is not in 1..3600"));
  }
  if (!server.log_level().empty()) {
    if (absl::StatusOr<LogLevel> level = ParseLogLevel(server.log_level()); !level.ok()) {
      return source.Error(field("log_level"), level.status().message());
    }
  }
  return absl::OkStatus();
}

}  // namespace strongroom
