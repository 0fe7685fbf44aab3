// Textproto configuration files, validated against a proto message. Every error is one line:
// "FILE:LINE: field.path: reason".
#pragma once

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "google/protobuf/message.h"
#include "google/protobuf/text_format.h"
#include "strongroom/v1/config.pb.h"

namespace strongroom {

// Maps field paths of a parsed file back to their lines, for validation messages.
class ConfigSource {
 public:
  ConfigSource(std::string path, const google::protobuf::Message& root,
               std::unique_ptr<google::protobuf::TextFormat::ParseInfoTree> tree);

  // INVALID_ARGUMENT "FILE:LINE: field_path: reason". `field_path` is dotted, e.g.
  // "server.tls.ca_file"; the line is where that field (or, when it is absent, the closest
  // enclosing message that is present) was written.
  absl::Status Error(absl::string_view field_path, absl::string_view reason) const;

 private:
  int LineOf(absl::string_view field_path) const;

  const std::string path_;
  const google::protobuf::Message& root_;
  // Parse locations of every field, owned here so they outlive the parse.
  std::unique_ptr<google::protobuf::TextFormat::ParseInfoTree> tree_;
};

// Reads `path` into `config`; syntax and unknown-field errors name the line and column. Only a regular file
// of at most kMaxConfigFileBytes (1 MiB) is read (common/bounded_file.h); anything else is
// FAILED_PRECONDITION "PATH: why" before a byte is read.
absl::StatusOr<std::unique_ptr<ConfigSource>> LoadTextprotoFile(const std::string& path,
                                                                google::protobuf::Message* config);

// Checks a TlsFiles block at `prefix` (e.g. "server.tls"): ca_file, cert_file and key_file are required when
// `required` or when any of them is set; crl_file is optional. Each set path must be a regular file of at
// most kMaxPemFileBytes that this process can open.
absl::Status ValidateTlsFiles(const v1::TlsFiles& tls, const ConfigSource& source, absl::string_view prefix,
                              bool required);

// Checks the fields every daemon shares. `prefix` is the field path of `server` in the file.
absl::Status ValidateServerConfig(const v1::ServerConfig& server, const ConfigSource& source,
                                  absl::string_view prefix = "server");

// Checks "HOST:PORT" with PORT 1..65535; returns the reason it is not, or OK.
absl::Status CheckHostPort(absl::string_view address);

}  // namespace strongroom
