#include "common/config.h"

#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/bounded_file.h"
#include "common/identity.h"
#include "common/log.h"
#include "common/status.h"
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
  absl::StatusOr<std::string> text = ReadBoundedRegularFile(path, kMaxConfigFileBytes);
  if (!text.ok()) return text.status();
  auto tree = std::make_unique<TextFormat::ParseInfoTree>();
  CollectFirstError errors;
  TextFormat::Parser parser;
  parser.RecordErrorsTo(&errors);
  parser.WriteLocationsTo(tree.get());
  if (!parser.ParseFromString(*text, config)) {
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

absl::Status ValidateTlsFiles(const v1::TlsFiles& tls, const ConfigSource& source, absl::string_view prefix,
                              bool required) {
  const bool any = !tls.ca_file().empty() || !tls.cert_file().empty() || !tls.key_file().empty();
  if (!required && !any && tls.crl_file().empty()) return absl::OkStatus();
  for (const auto& [name, path] : {std::pair<const char*, const std::string&>{"ca_file", tls.ca_file()},
                                   {"cert_file", tls.cert_file()},
                                   {"key_file", tls.key_file()},
                                   {"crl_file", tls.crl_file()}}) {
    const std::string field = absl::StrCat(prefix, ".", name);
    if (path.empty()) {
      if (std::string(name) == "crl_file") continue;  // optional: no revocation check
      return source.Error(field, "required");
    }
    if (absl::Status s = CheckBoundedRegularFile(path, kMaxPemFileBytes); !s.ok()) {
      return source.Error(field, s.message());
    }
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
  SR_RETURN_IF_ERROR(ValidateTlsFiles(server.tls(), source, field("tls"), /*required=*/true));
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
