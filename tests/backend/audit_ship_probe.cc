// audit_ship_probe: a daemon's audit shipping (common/audit_client.h) in a small process, for backend's
// integration tests: records COUNT events through MakeShippingAuditSink with the given certificate and spool,
// waits up to --flush-timeout for backend's acknowledgement, and prints {"acknowledged":..,"pending":..}.
// --poison N first writes N records backend refuses straight into the spool (an action with spaces, an object
// with a NUL byte: what an older or broken sender could have spooled), ahead of the COUNT good ones.
// Exit 0 when nothing is left pending, 3 otherwise, 64 for a usage error.
#include <cstdio>
#include <map>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/audit_client.h"
#include "common/audit_spool.h"
#include "common/log.h"

int main(int argc, char** argv) {
  using namespace strongroom;
  std::map<std::string, std::string> flags;
  for (int i = 1; i + 1 < argc; i += 2) flags[argv[i]] = argv[i + 1];
  int count = 0;
  double flush_seconds = 30;
  if (!absl::SimpleAtoi(flags["--count"], &count) ||
      !absl::SimpleAtod(flags["--flush-timeout"], &flush_seconds)) {
    std::fprintf(stderr,
                 "usage: audit_ship_probe --backend H:P --trust-domain TD --ca F --cert F --key F "
                 "--spool DIR --count N --flush-timeout SECONDS\n");
    return 64;
  }
  InitLogging("audit-ship-probe", LogLevel::kInfo);
  int poison = 0;
  if (flags.count("--poison") != 0 && !absl::SimpleAtoi(flags["--poison"], &poison)) return 64;
  if (poison > 0) {
    absl::StatusOr<std::unique_ptr<AuditSpool>> spool = AuditSpool::Open(flags["--spool"]);
    if (!spool.ok()) {
      std::fprintf(stderr, "audit_ship_probe: %s\n", spool.status().ToString().c_str());
      return 1;
    }
    for (int i = 0; i < poison; ++i) {
      v1::AuditRecord r;
      r.mutable_time()->set_seconds(1700000000);
      r.mutable_actor()->set_spiffe_id("spiffe://" + flags["--trust-domain"] + "/operator/probe");
      r.set_outcome(v1::AUDIT_OUTCOME_SUCCESS);
      if (i % 2 == 0) {
        r.set_action("poison action with spaces");
      } else {
        r.set_action("poison.nul");
        r.set_object(std::string("port/poison\0record", 18));
      }
      if (absl::Status s = (*spool)->Append(r); !s.ok()) return 1;
    }
  }
  AuditShippingOptions options;
  options.backend_address = flags["--backend"];
  options.trust_domain = flags["--trust-domain"];
  options.tls.set_ca_file(flags["--ca"]);
  options.tls.set_cert_file(flags["--cert"]);
  options.tls.set_key_file(flags["--key"]);
  options.spool_dir = flags["--spool"];
  absl::StatusOr<std::shared_ptr<AuditShipper>> shipper = MakeShippingAuditSink(options);
  if (!shipper.ok()) {
    std::fprintf(stderr, "audit_ship_probe: %s\n", shipper.status().ToString().c_str());
    return 1;
  }
  for (int i = 0; i < count; ++i) {
    (*shipper)->Record({"spiffe://" + options.trust_domain + "/operator/probe",
                        "/strongroom.v1.Netd/AllocatePort", absl::StrCat("port/probe-", i), "OK", ""});
  }
  (*shipper)->Flush(absl::Seconds(flush_seconds));
  const size_t pending = (*shipper)->pending();
  std::printf("{\"acknowledged\":%llu,\"pending\":%zu,\"dropped\":%llu}\n",
              static_cast<unsigned long long>((*shipper)->acknowledged()), pending,
              static_cast<unsigned long long>((*shipper)->dropped()));
  return pending == 0 ? 0 : 3;
}
