#include "services/vm_controller/slurm_records.h"

#include <cctype>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace strongroom::vm_controller {
namespace {

// "alice(1000)" -> ("alice", 1000)
bool ParseNameAndId(absl::string_view text, std::string* name, uint32_t* id) {
  const size_t open = text.find('(');
  if (open == absl::string_view::npos || text.back() != ')') return false;
  *name = std::string(text.substr(0, open));
  return absl::SimpleAtoi(text.substr(open + 1, text.size() - open - 2), id);
}

bool StartsKey(absl::string_view rest) {
  // A key is [A-Za-z][A-Za-z0-9_:/]* followed by '='.
  if (rest.empty() || !std::isalpha(static_cast<unsigned char>(rest[0]))) return false;
  for (char c : rest) {
    if (c == '=') return true;
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != ':' && c != '/') return false;
  }
  return false;
}

// "1-1" (NumNodes prints min-max) or "2" -> the leading number.
uint32_t LeadingNumber(absl::string_view text) {
  uint32_t value = 0;
  size_t digits = 0;
  while (digits < text.size() && std::isdigit(static_cast<unsigned char>(text[digits]))) ++digits;
  absl::SimpleAtoi(text.substr(0, digits), &value);
  return value;
}

}  // namespace

bool SlurmJob::IsTerminal() const {
  for (const char* s : {"COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL",
                        "DEADLINE", "OUT_OF_MEMORY"}) {
    if (state == s) return true;
  }
  return false;
}

std::map<std::string, std::string> ParseKeyValues(absl::string_view line) {
  std::map<std::string, std::string> fields;
  line = absl::StripAsciiWhitespace(line);
  while (!line.empty()) {
    const size_t eq = line.find('=');
    if (eq == absl::string_view::npos) break;
    const std::string key(line.substr(0, eq));
    line.remove_prefix(eq + 1);
    // The value runs until a space that starts another Key=.
    size_t end = 0;
    while (true) {
      end = line.find(' ', end);
      if (end == absl::string_view::npos || StartsKey(line.substr(end + 1))) break;
      ++end;
    }
    fields[key] = std::string(line.substr(0, end));
    if (end == absl::string_view::npos) break;
    line.remove_prefix(end + 1);
  }
  return fields;
}

absl::StatusOr<int64_t> ParseSlurmDuration(absl::string_view text) {
  if (text == "UNLIMITED" || text == "Partition_Limit" || text == "NONE" || text.empty()) return 0;
  int64_t days = 0;
  if (const size_t dash = text.find('-'); dash != absl::string_view::npos) {
    if (!absl::SimpleAtoi(text.substr(0, dash), &days)) {
      return absl::InvalidArgumentError(absl::StrCat("bad Slurm duration \"", text, "\""));
    }
    text.remove_prefix(dash + 1);
  }
  std::vector<absl::string_view> parts = absl::StrSplit(text, ':');
  int64_t values[3] = {0, 0, 0};  // h, m, s
  if (parts.empty() || parts.size() > 3) {
    return absl::InvalidArgumentError(absl::StrCat("bad Slurm duration \"", text, "\""));
  }
  const size_t offset = 3 - parts.size();
  for (size_t i = 0; i < parts.size(); ++i) {
    if (!absl::SimpleAtoi(parts[i], &values[offset + i]) || values[offset + i] < 0) {
      return absl::InvalidArgumentError(absl::StrCat("bad Slurm duration \"", text, "\""));
    }
  }
  return ((days * 24 + values[0]) * 60 + values[1]) * 60 + values[2];
}

absl::StatusOr<uint64_t> ParseSlurmMemory(absl::string_view text) {
  if (text.empty()) return absl::InvalidArgumentError("empty Slurm memory size");
  uint64_t multiplier = 1ull << 20;  // bare numbers are MiB
  switch (text.back()) {
    case 'K': multiplier = 1ull << 10; text.remove_suffix(1); break;
    case 'M': multiplier = 1ull << 20; text.remove_suffix(1); break;
    case 'G': multiplier = 1ull << 30; text.remove_suffix(1); break;
    case 'T': multiplier = 1ull << 40; text.remove_suffix(1); break;
    default: break;
  }
  double value = 0;
  if (!absl::SimpleAtod(text, &value) || value < 0) {
    return absl::InvalidArgumentError(absl::StrCat("bad Slurm memory size \"", text, "\""));
  }
  return static_cast<uint64_t>(value * static_cast<double>(multiplier));
}

absl::StatusOr<SlurmJob> ParseScontrolJob(absl::string_view line) {
  std::map<std::string, std::string> f = ParseKeyValues(line);
  SlurmJob job;
  if (!absl::SimpleAtoi(f["JobId"], &job.job_id) || job.job_id == 0) {
    return absl::InvalidArgumentError(absl::StrCat("scontrol output has no JobId: \"", line.substr(0, 200), "\""));
  }
  job.state = f["JobState"];
  job.reason = f["Reason"];
  if (!ParseNameAndId(f["UserId"], &job.user, &job.uid)) {
    return absl::InvalidArgumentError(absl::StrCat("job ", job.job_id, ": bad UserId \"", f["UserId"], "\""));
  }
  std::string group;
  ParseNameAndId(f["GroupId"], &group, &job.gid);
  job.account = f["Account"] == "(null)" ? "" : f["Account"];
  job.num_nodes = LeadingNumber(f["NumNodes"]);
  job.num_cpus = LeadingNumber(f["NumCPUs"]);
  absl::SimpleAtoi(f["Priority"], &job.priority);
  absl::StatusOr<int64_t> limit = ParseSlurmDuration(f["TimeLimit"]);
  if (!limit.ok()) return limit.status();
  job.time_limit_seconds = *limit;
  if (auto it = f.find("MinMemoryNode"); it != f.end()) {
    if (absl::StatusOr<uint64_t> m = ParseSlurmMemory(it->second); m.ok()) job.memory_bytes_per_node = *m;
  } else if (auto cpu = f.find("MinMemoryCPU"); cpu != f.end()) {
    if (absl::StatusOr<uint64_t> m = ParseSlurmMemory(cpu->second); m.ok()) {
      const uint32_t cpus_per_node = job.num_nodes == 0 ? job.num_cpus : (job.num_cpus + job.num_nodes - 1) / job.num_nodes;
      job.memory_bytes_per_node = *m * std::max<uint32_t>(cpus_per_node, 1);
    }
  }
  job.exclusive = f["OverSubscribe"] == "NO";
  job.comment = f["Comment"] == "(null)" ? "" : std::string(absl::StripAsciiWhitespace(f["Comment"]));
  job.features = f["Features"] == "(null)" ? "" : f["Features"];
  job.node_list = f["NodeList"] == "(null)" ? "" : f["NodeList"];
  job.partition = f["Partition"] == "(null)" ? "" : f["Partition"];
  job.dependency = f["Dependency"] == "(null)" ? "" : f["Dependency"];
  job.std_out = f["StdOut"] == "(null)" ? "" : f["StdOut"];
  job.std_err = f["StdErr"] == "(null)" ? "" : f["StdErr"];
  // Slurm prints times in the controller's local time zone, as this process sees it (same host).
  absl::Time eligible;
  std::string error;
  if (absl::ParseTime("%Y-%m-%dT%H:%M:%S", f["EligibleTime"], absl::LocalTimeZone(), &eligible, &error)) {
    job.eligible_time = eligible;
  }
  if (auto it = f.find("ExitCode"); it != f.end()) {
    absl::SimpleAtoi(absl::string_view(it->second).substr(0, it->second.find(':')), &job.exit_code);
  }
  return job;
}

std::optional<uint32_t> FindJobIdByComment(absl::string_view squeue_output, absl::string_view comment) {
  for (absl::string_view line : absl::StrSplit(squeue_output, '\n', absl::SkipWhitespace())) {
    const size_t bar = line.find('|');
    if (bar == absl::string_view::npos) continue;
    uint32_t id = 0;
    // The tag is the comment's first word; the user's own comment may follow it.
    absl::string_view tag = absl::StripAsciiWhitespace(line.substr(bar + 1));
    tag = tag.substr(0, tag.find(' '));
    if (tag == comment && absl::SimpleAtoi(line.substr(0, bar), &id)) {
      return id;
    }
  }
  return std::nullopt;
}

Eligibility EligibilityOf(const SlurmJob& job, absl::Time now) {
  if (job.reason == "DependencyNeverSatisfied" || absl::StrContains(job.dependency, "(failed)")) {
    return Eligibility::kNeverSatisfied;
  }
  if (job.priority == 0 || absl::StartsWith(job.reason, "JobHeld")) return Eligibility::kHeld;
  if (!job.dependency.empty() || job.reason == "Dependency" || job.reason == "BeginTime") return Eligibility::kNotYet;
  if (job.eligible_time > now) return Eligibility::kNotYet;
  return Eligibility::kEligible;
}

std::vector<SlurmNode> ParseNodes(absl::string_view output) {
  std::vector<SlurmNode> nodes;
  for (absl::string_view line : absl::StrSplit(output, '\n', absl::SkipWhitespace())) {
    std::map<std::string, std::string> f = ParseKeyValues(line);
    if (f["NodeName"].empty()) continue;
    SlurmNode node;
    node.name = f["NodeName"];
    node.state = f["State"];
    node.features = f["AvailableFeatures"] == "(null)" ? "" : f["AvailableFeatures"];
    nodes.push_back(std::move(node));
  }
  return nodes;
}

absl::StatusOr<std::string> ParseNodeState(absl::string_view line) {
  std::map<std::string, std::string> f = ParseKeyValues(line);
  auto it = f.find("State");
  if (it == f.end() || it->second.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("scontrol node output has no State: \"", line.substr(0, 200), "\""));
  }
  return it->second;
}

}  // namespace strongroom::vm_controller
