// Small helpers every test fixture needs around the processes it starts and the files they write.
#pragma once

#include <sys/types.h>

#include <string>

namespace strongroom {

// The whole file, or "" if it cannot be read (a log not written yet reads as empty).
std::string ReadFileOrEmpty(const std::string& path);

// Whether `pid` has exited: gone, or a zombie not reaped yet (kill(0) still answers for a zombie).
bool ProcessGone(pid_t pid);

}  // namespace strongroom
