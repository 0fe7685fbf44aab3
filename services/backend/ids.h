// Identifiers backend assigns. They are IDs (common.proto): lower case, digits and '-', so they are safe in
// file paths, Slurm job names, node names and audit objects.
#pragma once

#include <string>

namespace strongroom::backend {

struct JobIds {
  std::string global_job_id;    // "gj-" + suffix
  std::string workload_id;      // "wl-" + suffix
  std::string local_node_name;  // "sr-" + suffix: the Local Slurm dynamic node (and container hostname)
};

// One fresh suffix shared by the three ids: 10 base-32 digits of the millisecond clock (so ids sort by
// creation time) and 8 random ones (40 bits from the OS CSPRNG).
JobIds NewJobIds();

}  // namespace strongroom::backend
