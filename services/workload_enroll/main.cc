// strongroom-enroll: enrolls this workload with its controlling VM's vm-controller and writes what the
// project gives it into a directory (docs/IPSEC.md "Enrollment"). Run by the workload's entrypoint:
//
//   strongroom-enroll --bundle /run/strongroom/provisioning.json --out /run/strongroom/enrolled
//
// The bundle (host-agent's) supplies every option not given: enrollmentAddress (--target), localCluster
// (--cluster), globalJobId, project, trustDomain, deploymentCaPem (--ca) and the ticket.
// STRONGROOM_WORKLOAD_ID supplies --workload-id. The ticket is never taken from the command line (other
// processes can read argv). Exit codes: 0 enrolled and written; 2 bad usage or options; 1 refused or failed
// (the reason on stderr).
#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/bounded_file.h"
#include "common/log.h"
#include "services/workload_enroll/enroll_client.h"

namespace {

constexpr char kUsage[] =
    "usage: strongroom-enroll --out DIR [--bundle FILE] [--ticket-file FILE] [--target HOST:PORT]\n"
    "                         [--ca FILE] [--trust-domain TD] [--cluster NAME] [--workload-id ID]\n"
    "                         [--global-job-id ID] [--project NAME] [--timeout SECONDS]\n";

int Fail(int code, const std::string& message) {
  std::fprintf(stderr, "strongroom-enroll: %s\n", message.c_str());
  return code;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace strongroom;
  using namespace strongroom::workload_enroll;
  EnrollOptions options;
  std::string out_dir, bundle_file, ticket_file;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    }
    if (i + 1 >= argc) return Fail(2, absl::StrCat(arg, ": a value is required\n", kUsage));
    const std::string value = argv[++i];
    if (arg == "--out") {
      out_dir = value;
    } else if (arg == "--bundle") {
      bundle_file = value;
    } else if (arg == "--ticket-file") {
      ticket_file = value;
    } else if (arg == "--target") {
      options.target = value;
    } else if (arg == "--ca") {
      options.ca_file = value;
    } else if (arg == "--trust-domain") {
      options.trust_domain = value;
    } else if (arg == "--cluster") {
      options.cluster = value;
    } else if (arg == "--workload-id") {
      options.workload_id = value;
    } else if (arg == "--global-job-id") {
      options.global_job_id = value;
    } else if (arg == "--project") {
      options.project = value;
    } else if (arg == "--timeout") {
      int seconds = 0;
      if (!absl::SimpleAtoi(value, &seconds) || seconds < 1 || seconds > 600)
        return Fail(2, "--timeout: seconds in 1..600");
      options.rpc_timeout = absl::Seconds(seconds);
    } else {
      return Fail(2, absl::StrCat("unknown argument \"", arg, "\"\n", kUsage));
    }
  }
  if (out_dir.empty()) return Fail(2, absl::StrCat("--out: required\n", kUsage));
  if (!ticket_file.empty()) {
    absl::StatusOr<std::string> ticket = ReadBoundedRegularFile(ticket_file, 4096);
    if (!ticket.ok()) return Fail(2, absl::StrCat("--ticket-file: ", ticket.status().message()));
    options.ticket = std::string(absl::StripAsciiWhitespace(*ticket));
  }
  if (options.workload_id.empty()) {
    if (const char* id = std::getenv("STRONGROOM_WORKLOAD_ID"); id != nullptr) options.workload_id = id;
  }
  if (!bundle_file.empty()) {
    absl::StatusOr<std::string> bundle = ReadBoundedRegularFile(bundle_file, 1 << 20);
    if (!bundle.ok()) return Fail(2, absl::StrCat("--bundle: ", bundle.status().message()));
    if (absl::Status s = FillFromBundle(*bundle, out_dir + "/deployment-ca.pem", &options); !s.ok())
      return Fail(2, absl::StrCat("--bundle ", bundle_file, ": ", s.message()));
  }
  if (absl::Status s = ValidateOptions(options); !s.ok()) return Fail(2, std::string(s.message()));

  absl::StatusOr<EnrolledWorkload> enrolled = Enroll(options);
  if (!enrolled.ok()) {
    return Fail(1, absl::StrCat("enrollment of workload ", options.workload_id, " at ", options.target,
                                " refused or failed: ", enrolled.status().ToString()));
  }
  if (absl::Status s = WriteEnrollment(*enrolled, out_dir); !s.ok()) {
    return Fail(1, absl::StrCat("cannot write the enrollment into ", out_dir, ": ", s.ToString()));
  }
  std::fprintf(stderr, "strongroom-enroll: workload %s enrolled; certificate valid until %s; files in %s\n",
               options.workload_id.c_str(), absl::FormatTime(enrolled->not_after).c_str(), out_dir.c_str());
  return 0;
}
