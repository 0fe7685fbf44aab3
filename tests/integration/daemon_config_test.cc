// Every daemon refuses to start on a malformed or out-of-range config, with exactly one line
// naming the file, the line and the field; and on a config path (or TLS file path) that is not a regular file
// of at most 1 MiB, in milliseconds and without reading it (peak RSS stays at the daemon's baseline).
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "tests/rig/rig.h"

namespace strongroom {
namespace {

struct Daemon {
  const char* name;
  const char* binary;
};
const Daemon kDaemons[] = {{"backend", SR_BACKEND_BIN},
                           {"vm-controller", SR_VM_CONTROLLER_BIN},
                           {"host-agent", SR_HOST_AGENT_BIN},
                           {"netd", SR_NETD_BIN}};

class DaemonConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir_template[] = "/tmp/strongroom-daemon-config-XXXXXX";
    dir_ = mkdtemp(dir_template);
    for (const char* name : {"ca.pem", "cert.pem", "key.pem"}) std::ofstream(dir_ + "/" + name) << "x";
  }
  void TearDown() override { (void)RunWithTimeout({"/bin/rm", "-rf", dir_}, absl::Seconds(10)); }

  // Runs `binary --config <text>` and returns its result.
  Rig::ExecResult Run(const char* binary, const std::string& text) {
    const std::string path = dir_ + "/daemon.textproto";
    std::ofstream(path) << text;
    absl::StatusOr<Rig::ExecResult> r = RunWithTimeout({binary, "--config", path}, absl::Seconds(20));
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : Rig::ExecResult{-1, ""};
  }

  std::string ValidPrefix() const {
    return "server {\n"
           "  listen_address: \"127.0.0.1:17999\"\n"
           "  tls { ca_file: \"" +
           dir_ + "/ca.pem\" cert_file: \"" + dir_ + "/cert.pem\" key_file: \"" + dir_ +
           "/key.pem\" }\n"
           "  trust_domain: \"strongroom.test\"\n"
           "  instance: \"one\"\n";
  }

  std::string dir_;
};

void ExpectOneLineError(const Rig::ExecResult& r, const std::string& daemon, const std::string& expected) {
  EXPECT_EQ(r.exit_code, 2) << r.output;
  std::vector<std::string> lines = absl::StrSplit(r.output, '\n', absl::SkipEmpty());
  EXPECT_EQ(lines.size(), 1u) << r.output;
  EXPECT_TRUE(absl::StrContains(r.output, daemon + ": config error: ")) << r.output;
  EXPECT_TRUE(absl::StrContains(r.output, expected)) << r.output;
}

TEST_F(DaemonConfigTest, OutOfRangeValueStopsEveryDaemon) {
  for (const Daemon& d : kDaemons) {
    SCOPED_TRACE(d.name);
    ExpectOneLineError(Run(d.binary, ValidPrefix() + "  drain_seconds: 9000\n}\n"), d.name,
                       "daemon.textproto:6: server.drain_seconds: 9000 is not in 0..300");
  }
}

TEST_F(DaemonConfigTest, MalformedFileStopsEveryDaemon) {
  for (const Daemon& d : kDaemons) {
    SCOPED_TRACE(d.name);
    ExpectOneLineError(Run(d.binary, ValidPrefix() + "  listen_adress: \"x\"\n}\n"), d.name,
                       "daemon.textproto:6:");
    ExpectOneLineError(Run(d.binary, ValidPrefix() + "  listen_adress: \"x\"\n}\n"), d.name, "listen_adress");
  }
}

// vm-controller's enrollment listener (issue 14): a HOST:PORT of its own.
TEST_F(DaemonConfigTest, VmControllerEnrollmentListenerIsChecked) {
  const std::string base = ValidPrefix() +
                           "}\n"
                           "cluster_name: \"local\"\n"
                           "slurm_conf: \"/etc/slurm/slurm.conf\"\n"
                           "state_db: \"" +
                           dir_ +
                           "/state/local-jobs.db\"\n"
                           "backend_address: \"127.0.0.1:7443\"\n"
                           "slurmctld_addresses: \"127.0.0.1:6817\"\n";
  ExpectOneLineError(
      Run(SR_VM_CONTROLLER_BIN,
          base + "enrollment {\n  project: \"proj-a\"\n  listen_address: \"127.0.0.1:17999\"\n}\n"),
      "vm-controller", "enrollment.listen_address: must differ from server.listen_address");
  ExpectOneLineError(Run(SR_VM_CONTROLLER_BIN,
                         base + "enrollment {\n  project: \"proj-a\"\n  listen_address: \"nope\"\n}\n"),
                     "vm-controller", "enrollment.listen_address");
}

TEST_F(DaemonConfigTest, BadAddressAndIdentityAreNamed) {
  std::string bad_port = ValidPrefix() + "}\n";
  bad_port.replace(bad_port.find("127.0.0.1:17999"), 15, "127.0.0.1:70000");
  ExpectOneLineError(Run(SR_NETD_BIN, bad_port), "netd",
                     "daemon.textproto:2: server.listen_address: port \"70000\" is not in 1..65535");
  std::string bad_instance = ValidPrefix() + "}\n";
  bad_instance.replace(bad_instance.find("\"one\""), 5, "\"../etc\"");
  ExpectOneLineError(Run(SR_NETD_BIN, bad_instance), "netd",
                     "daemon.textproto:5: server.instance: must match");
}

// A daemon run with its peak resident set and wall time, measured by wait4(2).
struct Measured {
  int exit_code = -1;
  std::string stderr_text;
  long max_rss_kib = 0;
  absl::Duration took;
};

Measured RunMeasured(const std::vector<std::string>& argv, const std::string& stderr_path) {
  Measured m;
  const absl::Time start = absl::Now();
  const pid_t pid = fork();
  if (pid == 0) {
    const int err = open(stderr_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    dup2(err, 2);
    dup2(err, 1);
    alarm(30);  // a daemon that reads without bound would otherwise hang the test
    std::vector<char*> args;
    for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execv(args[0], args.data());
    _exit(127);
  }
  int status = 0;
  struct rusage usage {};
  wait4(pid, &status, 0, &usage);
  m.took = absl::Now() - start;
  m.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  m.max_rss_kib = usage.ru_maxrss;
  std::ifstream in(stderr_path);
  m.stderr_text.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  return m;
}

class BoundedConfigReadTest : public DaemonConfigTest {
 protected:
  // Each kind of bad path, created under dir_; name -> path.
  std::vector<std::pair<std::string, std::string>> BadPaths() {
    std::vector<std::pair<std::string, std::string>> paths;
    const std::string zero = dir_ + "/zero.textproto";
    std::filesystem::create_symlink("/dev/zero", zero);
    paths.emplace_back("a character device (via symlink)", zero);
    const std::string fifo = dir_ + "/fifo.textproto";
    mkfifo(fifo.c_str(), 0600);
    paths.emplace_back("a FIFO", fifo);
    const std::string dir = dir_ + "/dir.textproto";
    std::filesystem::create_directory(dir);
    paths.emplace_back("a directory", dir);
    const std::string huge = dir_ + "/huge.textproto";
    std::ofstream(huge).close();
    std::filesystem::resize_file(huge, uint64_t{1} << 30);  // sparse: 1 GiB that costs no disk
    paths.emplace_back("1073741824 bytes", huge);
    const std::string over = dir_ + "/over.textproto";
    std::ofstream(over) << std::string((1 << 20) + 1, '#');
    paths.emplace_back("1048577 bytes", over);
    return paths;
  }

  // Peak RSS of the daemon refusing a small bad config: what it takes to start and say no.
  long BaselineRssKib(const char* binary) {
    const std::string path = dir_ + "/baseline.textproto";
    std::ofstream(path) << "server { drain_seconds: 9000 }\n";
    return RunMeasured({binary, "--config", path}, dir_ + "/baseline.err").max_rss_kib;
  }
};

TEST_F(BoundedConfigReadTest, EveryDaemonRefusesAConfigPathThatIsNotASmallRegularFile) {
  for (const auto& [kind, path] : BadPaths()) {
    for (const Daemon& d : kDaemons) {
      SCOPED_TRACE(absl::StrCat(d.name, ": ", kind));
      const long baseline = BaselineRssKib(d.binary);
      Measured m = RunMeasured({d.binary, "--config", path}, dir_ + "/run.err");
      EXPECT_EQ(m.exit_code, 2) << m.stderr_text;
      std::vector<std::string> lines = absl::StrSplit(m.stderr_text, '\n', absl::SkipEmpty());
      EXPECT_EQ(lines.size(), 1u) << m.stderr_text;
      EXPECT_TRUE(absl::StrContains(m.stderr_text, absl::StrCat(d.name, ": config error: ", path, ": ")))
          << m.stderr_text;
      EXPECT_TRUE(absl::StrContains(m.stderr_text, kind.substr(0, kind.find(" (via")))) << m.stderr_text;
      // Memory stays flat: at most 8 MiB above the same daemon refusing a one-line config.
      EXPECT_LE(m.max_rss_kib, baseline + 8 * 1024) << "baseline " << baseline << " KiB";
      // A hang detector, not a benchmark: refusing takes milliseconds; reading 1 GiB or /dev/zero would not
      // finish (the child is killed after 30 s).
      EXPECT_LT(m.took, absl::Seconds(10));
      std::printf("%-13s %-34s exit %d in %6.1f ms, peak RSS %ld KiB (baseline %ld KiB)\n", d.name,
                  kind.c_str(), m.exit_code, absl::ToDoubleMilliseconds(m.took), m.max_rss_kib, baseline);
    }
  }
}

TEST_F(BoundedConfigReadTest, ATlsFileThatIsNotASmallRegularFileIsNamed) {
  for (const auto& [kind, path] : BadPaths()) {
    for (const char* field : {"ca_file", "cert_file", "key_file", "crl_file"}) {
      SCOPED_TRACE(absl::StrCat(field, ": ", kind));
      std::string config = ValidPrefix() + "}\n";
      const std::string key = absl::StrCat(field, ": \"");
      if (config.find(key) == std::string::npos) {
        config.replace(config.find("key_file"), 0, absl::StrCat(field, ": \"", path, "\" "));
      } else {
        const size_t at = config.find(key) + key.size();
        config.replace(at, config.find('"', at) - at, path);
      }
      Rig::ExecResult r = Run(SR_NETD_BIN, config);
      ExpectOneLineError(r, "netd", absl::StrCat("server.tls.", field, ": ", path, ": "));
      EXPECT_TRUE(absl::StrContains(r.output, kind.substr(0, kind.find(" (via")))) << r.output;
    }
  }
}

}  // namespace
}  // namespace strongroom
