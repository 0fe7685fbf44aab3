// mTLS credentials for servers and clients, built on gRPC's TLS credentials with a
// file-watcher certificate provider, so rotated PEM files are picked up without a restart. TLS 1.3 only; the
// peer's leaf certificate is checked against the CRL and the leaf policy on both ends (PeerVerifier).
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "common/identity.h"
#include "grpcpp/security/auth_metadata_processor.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/security/server_credentials.h"
#include "strongroom/v1/config.pb.h"

namespace strongroom {

// Server side: the handshake asks for a client certificate but leaves its verification to
// `processor` (see PeerVerifier for why), which also enforces the authorization table.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const v1::TlsFiles& files, int refresh_seconds, std::shared_ptr<grpc::AuthMetadataProcessor> processor);

// Whom a client expects to reach. The server certificate must chain to the CA and carry
// exactly one SPIFFE URI in `trust_domain` with `role` (and `instance`, when set).
struct ServerExpectation {
  std::string trust_domain;
  Role role = Role::kBackend;
  std::optional<std::string> instance;
};

// Empty cert_file and key_file make an anonymous client (used to prove servers refuse it).
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> MakeChannelCredentials(
    const v1::TlsFiles& files, const ServerExpectation& expected, int refresh_seconds = 60);

// A client identity held only in memory (PEM), e.g. a workload's project key and certificate.
struct InMemoryIdentity {
  std::string key_pem;
  std::string cert_pem;
};

// The same server checks as MakeChannelCredentials (chain to `ca_file`, leaf policy, `expected` SPIFFE id),
// with the client certificate from memory, or none (`identity` null: the handshake sends no certificate).
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> MakeChannelCredentialsWithIdentity(
    const std::string& ca_file, const InMemoryIdentity* identity, const ServerExpectation& expected);

// A channel to `target` ("host:port") with the credentials above.
absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeSecureChannel(const std::string& target,
                                                                 const v1::TlsFiles& files,
                                                                 const ServerExpectation& expected);

// FAILED_PRECONDITION naming the first file (ca, cert, key and the optional crl) that is not a readable
// regular file of at most kMaxPemFileBytes.
absl::Status CheckTlsFilesReadable(const v1::TlsFiles& files);

// Restricts every TLS context this process creates from now on to TLS 1.3 (servers and clients alike). Called
// by the credential factories above and by RunDaemon before anything else; idempotent. Aborts the process if
// OpenSSL refuses the restriction (it must never serve below policy).
void RequireTls13();

}  // namespace strongroom
