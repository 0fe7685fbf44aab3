// strongroom-submit-check, the Local Slurm's synchronous submit decision, run as job_submit.lua runs it: argv
// values exactly as the lua prints Slurm's job_desc fields (NO_VAL markers, Lua's doubles), the verdict on
// stdout and in the exit status.
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "common/subprocess.h"
#include "gtest/gtest.h"

namespace strongroom {
namespace {

RunResult Check(std::vector<std::string> args) {
  std::vector<std::string> argv = {
      SR_SUBMIT_CHECK_BIN, "--uid", "65534",          "--accounts", "proj1,proj_b", "--max-cpus", "8",
      "--max-memory-mb",   "4000",  "--max-time-min", "1440"};
  argv.insert(argv.end(), args.begin(), args.end());
  absl::StatusOr<RunResult> r = Run(argv, absl::Seconds(10));
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? *r : RunResult{-1, ""};
}

TEST(SubmitCheck, AcceptsAndPicksTheAccount) {
  RunResult given = Check({"--account", "proj_b", "--default-account", "proj1"});
  EXPECT_EQ(given.exit_code, 0) << given.output;
  EXPECT_EQ(given.output, "account=proj_b\n");
  RunResult user_default =
      Check({"--account", "", "--default-account", "proj1", "--site-default-account", "x"});
  EXPECT_EQ(user_default.output, "account=proj1\n");
  RunResult site_default =
      Check({"--account", "", "--default-account", "", "--site-default-account", "proj_b"});
  EXPECT_EQ(site_default.output, "account=proj_b\n");
  // Slurm's "not set" markers as the lua prints them.
  RunResult unset = Check({"--account", "proj1", "--cpus", "4294967294", "--mem-per-node-mb",
                           "1.844674407371e+19", "--time-min", "4294967294"});
  EXPECT_EQ(unset.exit_code, 0) << unset.output;
}

TEST(SubmitCheck, RefusesWithTheLimitInTheMessage) {
  RunResult none = Check({"--account", "", "--default-account", ""});
  EXPECT_EQ(none.exit_code, 1);
  EXPECT_TRUE(
      absl::StrContains(none.output, "Resubmit with -A <project>; this cluster's projects: proj1, proj_b"))
      << none.output;
  RunResult unknown = Check({"--account", "other"});
  EXPECT_EQ(unknown.exit_code, 1);
  EXPECT_TRUE(absl::StrContains(unknown.output, "unknown account \"other\"")) << unknown.output;
  RunResult memory = Check({"--account", "proj1", "--mem-per-cpu-mb", "1000", "--cpus", "8"});
  EXPECT_EQ(memory.exit_code, 1);
  EXPECT_TRUE(absl::StrContains(memory.output,
                                "8000 MB of memory on its node; this enclave's nodes have at most "
                                "4000 MB"))
      << memory.output;
  RunResult cpus = Check({"--account", "proj1", "--cpus", "4294967293"});
  EXPECT_EQ(cpus.exit_code, 1);
  EXPECT_TRUE(absl::StrContains(cpus.output, "cpus: \"4294967293\" is not in 0..4096")) << cpus.output;
  RunResult time = Check({"--account", "proj1", "--time-min", "4320"});
  EXPECT_TRUE(absl::StrContains(time.output, "this enclave allows at most 1440 minutes")) << time.output;
  RunResult root = Check({"--uid", "0", "--account", "proj1"});
  EXPECT_EQ(root.exit_code, 1);
}

// A job without whole-node --exclusive runs in a VM whose guest needs the overhead besides the job's memory.
TEST(SubmitCheck, ANonExclusiveJobMustFitWithTheVmsOverhead) {
  RunResult fits = Check({"--account", "proj1", "--exclusive", "0", "--mem-per-node-mb", "3616"});
  EXPECT_EQ(fits.exit_code, 0) << fits.output;
  RunResult too_big = Check({"--account", "proj1", "--exclusive", "0", "--mem-per-node-mb", "3700"});
  EXPECT_EQ(too_big.exit_code, 1);
  EXPECT_TRUE(
      absl::StrContains(too_big.output,
                        "asks for 3700 MB of memory; a job without --exclusive runs in a secure VM that "
                        "needs 384 MB more, and this enclave's nodes have at most 4000 MB. Resubmit with "
                        "--mem=3616M or less, or with --exclusive (the whole node)"))
      << too_big.output;
  // The same memory is fine for a whole-node job, which has no guest OS.
  EXPECT_EQ(Check({"--account", "proj1", "--exclusive", "1", "--mem-per-node-mb", "3700"}).exit_code, 0);
  // The site's overhead (strongroom-hook.conf vm_memory_overhead_mb=, as backend's).
  RunResult site = Check({"--account", "proj1", "--exclusive", "0", "--vm-memory-overhead-mb", "1000",
                          "--mem-per-cpu-mb", "1000", "--cpus", "4"});
  EXPECT_EQ(site.exit_code, 1);
  EXPECT_TRUE(absl::StrContains(site.output, "Resubmit with --mem=3000M or less")) << site.output;
  // No memory named: the overhead alone fits; CPU limits are the same for both kinds.
  EXPECT_EQ(Check({"--account", "proj1", "--exclusive", "0", "--vm-memory-overhead-mb", ""}).exit_code, 0);
  RunResult cpus = Check({"--account", "proj1", "--exclusive", "0", "--cpus", "9"});
  EXPECT_EQ(cpus.exit_code, 1);
  EXPECT_TRUE(absl::StrContains(cpus.output, "have at most 8")) << cpus.output;
  EXPECT_EQ(Check({"--account", "proj1", "--exclusive", "2"}).exit_code, 2);
}

TEST(SubmitCheck, AHostileAccountReachesTheMessageEscaped) {
  RunResult r = Check({"--account", std::string("a\nb\x1b[2J\xe2\x80\xae", 9)});
  EXPECT_EQ(r.exit_code, 1);
  const std::string line = r.output.substr(0, r.output.size() - 1);  // one line
  for (unsigned char c : line) EXPECT_TRUE(c >= 0x20 && c < 0x7f) << "byte " << int(c) << " in " << r.output;
  EXPECT_TRUE(absl::StrContains(line, "must match ^[a-z0-9][a-z0-9_-]{0,62}$")) << line;
}

TEST(SubmitCheck, UsageErrorsExitTwo) {
  EXPECT_EQ(Check({"--cpus", "many"}).exit_code, 2);
  EXPECT_EQ(Check({"--account"}).exit_code, 2);
}

}  // namespace
}  // namespace strongroom
