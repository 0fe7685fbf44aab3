#include "common/tls.h"

#include <openssl/conf.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include <cstdlib>

#include "absl/base/call_once.h"
#include "absl/strings/str_cat.h"
#include "common/bounded_file.h"
#include "common/log.h"
#include "common/peer_verifier.h"
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

// Runs after the TLS stack has verified the server's chain against the CA: checks the server certificate the
// way servers check clients (CRL, leaf policy with serverAuth, SPIFFE id; PeerVerifier), and that the server
// is the service the client meant to reach.
class SpiffeServerVerifier : public ExternalCertificateVerifier {
 public:
  SpiffeServerVerifier(ServerExpectation expected, std::shared_ptr<PeerVerifier> verifier)
      : expected_(std::move(expected)), verifier_(std::move(verifier)) {}

  bool Verify(TlsCustomVerificationCheckRequest* request, std::function<void(grpc::Status)>,
              grpc::Status* sync_status) override {
    *sync_status = Check(request);
    return true;  // decided synchronously
  }
  void Cancel(TlsCustomVerificationCheckRequest*) override {}

 private:
  grpc::Status Check(TlsCustomVerificationCheckRequest* request) const {
    const grpc::string_ref leaf = request->peer_cert();
    const grpc::string_ref chain = request->peer_cert_full_chain();
    absl::StatusOr<Identity> identity =
        verifier_->Verify(absl::string_view(leaf.data(), leaf.size()),
                          absl::string_view(chain.data(), chain.size()), PeerKind::kServer);
    if (!identity.ok())
      return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, std::string(identity.status().message()));
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
  const std::shared_ptr<PeerVerifier> verifier_;  // the CA bundle and CRL of the client's TlsFiles
};

// OpenSSL settings applied to every SSL_CTX this process creates from now on (OpenSSL's "system_default"):
// TLS 1.3 only. gRPC 1.51 sets TLS 1.2 as its minimum protocol version on each context and has no API to
// raise it; the SSL_OP_NO_TLSv1_2 option set here survives that call, so a TLS 1.2 peer fails the handshake.
constexpr char kTls13OnlyConfig[] =
    "openssl_conf = strongroom_init\n"
    "[strongroom_init]\n"
    "ssl_conf = strongroom_ssl\n"
    "[strongroom_ssl]\n"
    "system_default = strongroom_tls\n"
    "[strongroom_tls]\n"
    "MinProtocol = TLSv1.3\n"
    "Protocol = -ALL, TLSv1.3\n"
    // Debian's own system default, which this section replaces.
    "CipherString = DEFAULT:@SECLEVEL=2\n";

}  // namespace

void RequireTls13() {
  static absl::once_flag once;
  absl::call_once(once, [] {
    // The system configuration first (OpenSSL loads it once per process): loaded later, its ssl_conf section
    // would replace ours.
    OPENSSL_init_ssl(OPENSSL_INIT_LOAD_CONFIG, nullptr);
    BIO* bio = BIO_new_mem_buf(kTls13OnlyConfig, -1);
    CONF* conf = NCONF_new(nullptr);
    long error_line = 0;
    const bool loaded = bio != nullptr && conf != nullptr && NCONF_load_bio(conf, bio, &error_line) > 0 &&
                        CONF_modules_load(conf, nullptr, 0) > 0;
    NCONF_free(conf);
    BIO_free(bio);
    ERR_clear_error();
    if (!loaded) {
      // Without it TLS 1.2 would be accepted: refuse to run rather than serve below policy.
      Log(LogLevel::kError, "cannot restrict OpenSSL to TLS 1.3; exiting");
      std::abort();
    }
  });
}

absl::Status CheckTlsFilesReadable(const v1::TlsFiles& files) {
  for (const auto& [field, path] : {std::pair<const char*, const std::string&>{"ca_file", files.ca_file()},
                                    {"cert_file", files.cert_file()},
                                    {"key_file", files.key_file()},
                                    {"crl_file", files.crl_file()}}) {
    if (path.empty()) {
      if (std::string(field) == "crl_file") continue;
      return absl::FailedPreconditionError(absl::StrCat("tls.", field, " is empty"));
    }
    if (absl::Status s = CheckBoundedRegularFile(path, kMaxPemFileBytes); !s.ok()) {
      return absl::FailedPreconditionError(absl::StrCat("tls.", field, " ", s.message()));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const v1::TlsFiles& files, int refresh_seconds, std::shared_ptr<grpc::AuthMetadataProcessor> processor) {
  if (absl::Status readable = CheckTlsFilesReadable(files); !readable.ok()) return readable;
  RequireTls13();
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
  RequireTls13();
  TlsChannelCredentialsOptions options;
  if (files.cert_file().empty() && files.key_file().empty()) {
    // Anonymous: only operators' diagnostics and the tests that prove servers refuse it.
    if (absl::Status s = CheckBoundedRegularFile(files.ca_file(), kMaxPemFileBytes); !s.ok()) {
      return absl::FailedPreconditionError(absl::StrCat("tls.ca_file ", s.message()));
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
  auto verifier = std::make_shared<PeerVerifier>(files.ca_file(), expected.trust_domain, files.crl_file());
  options.set_certificate_verifier(
      ExternalCertificateVerifier::Create<SpiffeServerVerifier>(expected, verifier));
  return grpc::experimental::TlsCredentials(options);
}

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> MakeChannelCredentialsWithIdentity(
    const std::string& ca_file, const InMemoryIdentity* identity, const ServerExpectation& expected) {
  RequireTls13();
  absl::StatusOr<std::string> ca_pem = ReadBoundedRegularFile(ca_file, kMaxPemFileBytes);
  if (!ca_pem.ok()) return absl::FailedPreconditionError(absl::StrCat("ca_file ", ca_pem.status().message()));
  std::vector<grpc::experimental::IdentityKeyCertPair> pairs;
  if (identity != nullptr) pairs.push_back({identity->key_pem, identity->cert_pem});
  TlsChannelCredentialsOptions options;
  options.set_certificate_provider(
      std::make_shared<grpc::experimental::StaticDataCertificateProvider>(*ca_pem, pairs));
  options.watch_root_certs();
  if (identity != nullptr) options.watch_identity_key_cert_pairs();
  options.set_verify_server_certs(true);
  options.set_check_call_host(false);
  auto verifier = std::make_shared<PeerVerifier>(ca_file, expected.trust_domain);
  options.set_certificate_verifier(
      ExternalCertificateVerifier::Create<SpiffeServerVerifier>(expected, verifier));
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
