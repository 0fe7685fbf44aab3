#include "tests/rig/postgres.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "tests/rig/rig.h"

namespace strongroom {
namespace {

constexpr absl::Duration kTimeout = absl::Seconds(90);

}  // namespace

PostgresInstance::PostgresInstance(std::string postgres_sh, std::string dir, std::string conninfo)
    : postgres_sh_(std::move(postgres_sh)), dir_(std::move(dir)), conninfo_(std::move(conninfo)) {}

PostgresInstance::~PostgresInstance() {
  absl::Status s = Down();
  if (!s.ok())
    std::fprintf(stderr, "PostgresInstance %s: teardown failed: %s\n", dir_.c_str(), s.ToString().c_str());
}

absl::StatusOr<std::unique_ptr<PostgresInstance>> PostgresInstance::Start(std::string postgres_sh,
                                                                          const std::string& root) {
  // 0711: the postgres user must traverse it to reach its instance directory; nobody may list it.
  if (mkdir(root.c_str(), 0711) != 0 && errno != EEXIST) {
    return absl::InternalError(absl::StrCat("mkdir ", root, ": ", std::strerror(errno)));
  }
  chmod(root.c_str(), 0711);
  std::string dir = absl::StrCat(root, "/pg-XXXXXX");
  if (mkdtemp(dir.data()) == nullptr)
    return absl::InternalError(absl::StrCat("mkdtemp ", dir, ": ", std::strerror(errno)));
  rmdir(dir.c_str());  // postgres.sh up wants to create it (it must not exist), with the right owner
  absl::StatusOr<Rig::ExecResult> r =
      RunWithTimeout({"/bin/bash", postgres_sh, "up", dir, "--owner", absl::StrCat(getpid())}, kTimeout);
  if (!r.ok()) return r.status();
  if (r->exit_code != 0) return absl::InternalError(absl::StrCat("postgres.sh up ", dir, ": ", r->output));
  std::string conninfo(absl::StripAsciiWhitespace(r->output));
  if (size_t nl = conninfo.rfind('\n'); nl != std::string::npos) conninfo = conninfo.substr(nl + 1);
  return std::unique_ptr<PostgresInstance>(new PostgresInstance(std::move(postgres_sh), dir, conninfo));
}

absl::Status PostgresInstance::Sweep(const std::string& postgres_sh, const std::string& root) {
  absl::StatusOr<Rig::ExecResult> r = RunWithTimeout({"/bin/bash", postgres_sh, "sweep", root}, kTimeout);
  if (!r.ok()) return r.status();
  return r->exit_code == 0 ? absl::OkStatus() : absl::InternalError(r->output);
}

absl::StatusOr<std::string> PostgresInstance::Run(const std::vector<std::string>& args) const {
  std::vector<std::string> argv = {"/bin/bash", postgres_sh_};
  argv.insert(argv.end(), args.begin(), args.end());
  absl::StatusOr<Rig::ExecResult> r = RunWithTimeout(argv, kTimeout);
  if (!r.ok()) return r.status();
  if (r->exit_code != 0) return absl::InternalError(absl::StrCat("postgres.sh ", args[0], ": ", r->output));
  return r->output;
}

absl::StatusOr<std::string> PostgresInstance::Psql(const std::string& sql) const {
  absl::StatusOr<std::string> out = Run({"psql", dir_, sql});
  if (!out.ok()) return out.status();
  return std::string(absl::StripTrailingAsciiWhitespace(*out));
}

absl::StatusOr<std::string> PostgresInstance::Dump() const { return Run({"dump", dir_}); }

absl::Status PostgresInstance::Stop() { return Run({"stop", dir_}).status(); }
absl::Status PostgresInstance::Restart() { return Run({"start", dir_}).status(); }

absl::Status PostgresInstance::Down() {
  if (down_) return absl::OkStatus();
  absl::Status s = Run({"down", dir_}).status();
  if (s.ok()) down_ = true;
  return s;
}

}  // namespace strongroom
