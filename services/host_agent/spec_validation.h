// Pure checks of a WorkloadSpec before anything on the node changes: ids, image names, resources,
// scratch size, allowlist sizes. Every refusal is INVALID_ARGUMENT (malformed), UNIMPLEMENTED (kind VM)
// or FAILED_PRECONDITION (well-formed but beyond this node or this version), naming the field.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "strongroom/v1/host_agent.pb.h"

namespace strongroom::host_agent {

// ^[a-z0-9][a-z0-9-]{0,62}$ (common.proto "ID"): safe in paths, netns and dm names.
bool IsValidId(absl::string_view id);
// ^[a-z0-9][a-z0-9._-]{0,127}$ and not "." or ".." anywhere as a path element (there is no "/").
bool IsValidImageName(absl::string_view name);

// What this node offers, for the checks that depend on it.
struct NodeLimits {
  uint32_t cpus = 0;          // online CPUs
  uint64_t memory_bytes = 0;  // MemTotal
  uint64_t scratch_max_bytes = 0;
};

// Validates the spec syntactically and against the node. Does not touch the image catalog.
absl::Status ValidateSpec(const v1::WorkloadSpec& spec, const NodeLimits& limits);

// The scratch size actually used: the spec's, or `default_bytes`, rounded up to 1 MiB.
uint64_t EffectiveScratchBytes(const v1::WorkloadSpec& spec, uint64_t default_bytes);

// True if two specs are the same request (idempotency): byte-equal deterministic serialization.
bool SameSpec(const v1::WorkloadSpec& a, const v1::WorkloadSpec& b);

}  // namespace strongroom::host_agent
