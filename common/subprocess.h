// How every daemon runs another program (Slurm CLIs, runc, mkfs): argv vectors (never a shell string), posix_spawn
// in a new session with a clean signal mask and stdin from /dev/null, and a timeout after which the whole session's
// process group is SIGKILLed.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace strongroom {

struct RunResult {
  int exit_code = 0;   // 0..255, or 128+N when killed by signal N
  std::string output;  // stdout and stderr, interleaved; at most 64 KiB (the tail is kept)
};

// Runs argv[0] (an absolute path) and waits. DEADLINE_EXCEEDED (after killing it) past `timeout`. A non-zero exit
// is not an error: look at exit_code.
absl::StatusOr<RunResult> Run(const std::vector<std::string>& argv, absl::Duration timeout);

// Starts argv[0] in the background in its own session, stdout and stderr appended to `log_path`. The caller owns
// the child and must reap it with WaitChild.
absl::StatusOr<pid_t> Spawn(const std::vector<std::string>& argv, const std::string& log_path);

// Waits for a child started by Spawn; returns its exit code (128+N for signal N). Blocks.
int WaitChild(pid_t pid);

}  // namespace strongroom
