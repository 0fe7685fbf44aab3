#include "common/tls.h"

#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/tls_certificate_provider.h"
#include "grpcpp/security/tls_certificate_verifier.h"
#include "grpcpp/security/tls_credentials_options.h"

namespace strongroom {
namespace {

using grpc::experimental::ExternalCertificateVerifier;
using grpc::experimental::FileWatcherCertificateProvider;
using grpc::experimental::TlsChannelCredentialsOptions;
using grpc::experimental::TlsCustomVerificationCheckRequest;
using grpc::experimental::TlsServerCredentialsOptions;

// Runs after the TLS stack has verified the server's chain against the CA: checks that the
// server is the service the client meant to reach.
class SpiffeServerVerifier : public ExternalCertificateVerifier {
 public:
  explicit SpiffeServerVerifier(ServerExpectation expected) : expected_(std::move(expected)) {}

  bool Verify(TlsCustomVerificationCheckRequest* request, std::function<void(grpc::Status)>,
              grpc::Status* sync_status) override {
    *sync_status = Check(request);
    return true;  // decided synchronously
  }
  void Cancel(TlsCustomVerificationCheckRequest*) override {}

 private:
  grpc::Status Check(TlsCustomVerificationCheckRequest* request) const {
    std::vector<grpc::string_ref> uris = request->uri_names();
    if (uris.size() != 1) {
      return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                          absl::StrCat("server certificate has ", uris.size(),
                                       " SAN URIs; exactly one spiffe:// URI is required"));
    }
    absl::StatusOr<Identity> identity = ParseSpiffeId(std::string(uris[0].data(), uris[0].size()));
    if (!identity.ok()) {
      return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, std::string(identity.status().message()));
    }
    const bool matches = identity->trust_domain == expected_.trust_domain &&
                         identity->role == expected_.role &&
                         (!expected_.instance || *expected_.instance == identity->instance);
    if (!matches) {
      return grpc::Status(
          grpc::StatusCode::UNAUTHENTICATED,
          absl::StrCat("server is ", identity->SpiffeId(), ", expected spiffe://", expected_.trust_domain,
                       "/", RoleName(expected_.role), "/", expected_.instance.value_or("*")));
    }
    return grpc::Status::OK;
  }

  const ServerExpectation expected_;
};

}  // namespace

absl::Status CheckTlsFilesReadable(const v1::TlsFiles& files) {
  for (const auto& [field, path] : {std::pair<const char*, const std::string&>{"ca_file", files.ca_file()},
                                    {"cert_file", files.cert_file()},
                                    {"key_file", files.key_file()}}) {
    if (path.empty()) return absl::FailedPreconditionError(absl::StrCat("tls.", field, " is empty"));
    if (::access(path.c_str(), R_OK) != 0) {
      return absl::FailedPreconditionError(absl::StrCat("tls.", field, " ", path, " is not readable"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const v1::TlsFiles& files, int refresh_seconds, std::shared_ptr<grpc::AuthMetadataProcessor> processor) {
  if (absl::Status readable = CheckTlsFilesReadable(files); !readable.ok()) return readable;
  auto provider =
      std::make_shared<FileWatcherCertificateProvider>(files.key_file(), files.cert_file(), refresh_seconds);
  TlsServerCredentialsOptions options(provider);
  options.watch_identity_key_cert_pairs();
  options.set_cert_request_type(GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_BUT_DONT_VERIFY);
  std::shared_ptr<grpc::ServerCredentials> creds = grpc::experimental::TlsServerCredentials(options);
  creds->SetAuthMetadataProcessor(std::move(processor));
  return creds;
}

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> MakeChannelCredentials(
    const v1::TlsFiles& files, const ServerExpectation& expected, int refresh_seconds) {
  TlsChannelCredentialsOptions options;
  if (files.cert_file().empty() && files.key_file().empty()) {
    // Anonymous: only operators' diagnostics and the tests that prove servers refuse it.
    if (::access(files.ca_file().c_str(), R_OK) != 0) {
      return absl::FailedPreconditionError(absl::StrCat("tls.ca_file ", files.ca_file(), " is not readable"));
    }
    options.set_certificate_provider(
        std::make_shared<FileWatcherCertificateProvider>(files.ca_file(), refresh_seconds));
  } else {
    if (absl::Status readable = CheckTlsFilesReadable(files); !readable.ok()) return readable;
    options.set_certificate_provider(std::make_shared<FileWatcherCertificateProvider>(
        files.key_file(), files.cert_file(), files.ca_file(), refresh_seconds));
    options.watch_identity_key_cert_pairs();
  }
  options.watch_root_certs();
  options.set_verify_server_certs(true);
  // Servers are identified by their SPIFFE URI, not by the host name we dialled.
  options.set_check_call_host(false);
  options.set_certificate_verifier(ExternalCertificateVerifier::Create<SpiffeServerVerifier>(expected));
  return grpc::experimental::TlsCredentials(options);
}

absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeSecureChannel(const std::string& target,
                                                                 const v1::TlsFiles& files,
                                                                 const ServerExpectation& expected) {
  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> creds = MakeChannelCredentials(files, expected);
  if (!creds.ok()) return creds.status();
  return grpc::CreateChannel(target, *creds);
}

}  // namespace strongroom
