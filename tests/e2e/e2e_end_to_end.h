// The suite of the e2e_test binary (e2e_test.cc: containers; e2e_vm_test.cc: VMs): one stack for both files.
#pragma once

#include <map>
#include <string>

#include "absl/strings/str_split.h"
#include "tests/e2e/e2e_suite.h"

namespace strongroom::e2e {

class EndToEndTest : public E2eSuite<EndToEndTest> {};

// A ProbeScript's output as KEY -> VALUE.
inline std::map<std::string, std::string> KeyValues(const std::string& text) {
  std::map<std::string, std::string> out;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    const size_t eq = line.find('=');
    if (eq != absl::string_view::npos) out[std::string(line.substr(0, eq))] = std::string(line.substr(eq + 1));
  }
  return out;
}

}  // namespace strongroom::e2e
