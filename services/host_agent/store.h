// The local tracking DB: one SQLite database in WAL mode (synchronous=FULL) under the state dir. One row per
// workload ever started here, with its public record (v1.Workload) and everything teardown needs to find
// again after a crash: runtime id, netns, netd port and generation, loop and crypt devices, mounts, the init
// pid. Why SQLite: embedded, no daemon, atomic transactions that survive kill -9 (WAL), and the libsqlite3
// from Debian. The volume key has no column and no field: it cannot be stored.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "strongroom/v1/host_agent.pb.h"

struct sqlite3;

namespace strongroom::host_agent {

// What teardown must undo, recorded before (names derived from the id) or right after (loop devices, pids)
// each resource is created.
struct TrackedResources {
  std::string workload_dir;  // <state>/workloads/<id>
  std::string netns;         // netns name under /run/netns
  std::string port_name;     // netd's port (host veth) name, "" until allocated
  uint64_t netd_generation = 0;
  std::string scratch_loop;  // /dev/loopN of the scratch backing file
  std::string crypt_name;    // dm-crypt name, "" when unencrypted
  std::string image_loop;    // /dev/loopN of a squashfs image, "" for a directory image
  std::string mounts;        // newline-separated mount points, outermost first
  int32_t init_pid = 0;      // host pid of the container's init
  uint64_t init_start = 0;   // its start time (/proc/PID/stat field 22), to detect pid reuse
  std::string stage;         // the last start/stop step completed, for reconcile logs
};

struct TrackedWorkload {
  v1::Workload record;
  TrackedResources resources;
};

// One report to backend waiting in the outbox (reports.h): sent in `seq` order per workload.
struct OutboxEntry {
  int64_t seq = 0;          // assigned by the store, increasing
  std::string workload_id;  // reports of one workload go out in order
  std::string kind;         // "ready", "failed" or "stopped"
  std::string payload;      // the serialized request (WorkloadReadyRequest, ...)
};

class Store {
 public:
  // Opens (creating if needed) `path` in WAL mode and applies the schema.
  static absl::StatusOr<std::unique_ptr<Store>> Open(const std::string& path);
  ~Store();

  // Inserts or replaces the row and appends `reports` to the outbox, in one transaction: a state change and
  // the reports it causes are durable together.
  absl::Status Put(const TrackedWorkload& w, const std::vector<OutboxEntry>& reports = {});
  absl::StatusOr<TrackedWorkload> Get(const std::string& id);  // NOT_FOUND if absent
  // All rows, newest first.
  absl::StatusOr<std::vector<TrackedWorkload>> List();

  // The outbox: every report not yet delivered or dropped, oldest first.
  absl::StatusOr<std::vector<OutboxEntry>> PendingReports();
  // Removes a delivered (or permanently refused) report.
  absl::Status DeleteReport(int64_t seq);

 private:
  explicit Store(sqlite3* db) : db_(db) {}
  absl::Status PutLocked(const TrackedWorkload& w) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Mutex mu_;  // serializes use of db_
  sqlite3* db_;     // the connection, owned
};

}  // namespace strongroom::host_agent
