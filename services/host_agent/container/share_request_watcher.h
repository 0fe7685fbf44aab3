// The project share of a data-path container on a kernel with an NFS client (data_path.h
// DataPathShare::kNfsOnRequest): the workload's entrypoint, once its tunnel is up, writes its request to
// /run/strongroom/nfs-request inside the container; host-agent polls for it (every 50 ms while the workload
// runs, up to a bound), reads it safely through /proc/<init pid>/root, validates it (ParseNfsShareRequest)
// and mounts the share with its own real CAP_SYS_ADMIN inside the workload's network and mount namespaces
// (workload_nfs_mount.h). The workload sees success as the mount in its /proc/self/mountinfo; a malformed
// request or a failed mount fails the workload (PROJECT_SHARE_MOUNT). Teardown unmounts it (Release) before
// the container is killed.
#pragma once

#include <sys/types.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "services/host_agent/workload_nfs_mount.h"

namespace strongroom::host_agent {

// The mount and unmount of the share (the kernel's: MountNfsInWorkload / UnmountInWorkload); a seam for
// tests on a kernel without an NFS client.
class ShareMounter {
 public:
  virtual ~ShareMounter() = default;
  virtual absl::Status Mount(const WorkloadNfsMount& m) = 0;
  virtual absl::Status Unmount(const std::string& mountns_path, const std::string& target) = 0;
};
std::shared_ptr<ShareMounter> MakeKernelShareMounter(absl::Duration timeout = absl::Seconds(30));

// Reads the regular file `path` (absolute, as the container sees it) below `root_dir` (/proc/<pid>/root),
// resolved as if `root_dir` were "/" (openat2 RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS, no symlink as the last
// component), opened only once it is known to be a regular file (so a FIFO or device cannot block or act),
// at most `max_bytes`. NOT_FOUND when absent, INVALID_ARGUMENT for anything else than a small regular file.
absl::StatusOr<std::string> ReadFileInRoot(const std::string& root_dir, const std::string& path,
                                           size_t max_bytes);

struct ShareWatch {
  std::string workload_id;
  std::string root_dir;      // /proc/<init pid>/root
  std::string netns_path;    // /run/netns/<name>
  std::string mountns_path;  // /proc/<init pid>/ns/mnt
  std::string record_file;   // host file naming the mounted target (<workload dir>/share-mount)
  absl::Duration poll_interval = absl::Milliseconds(50);
  absl::Duration give_up_after = absl::Minutes(30);  // no request by then: stop polling (the entrypoint
                                                     // fails with 72 on its own)
  // Fails the running workload (reason, message); called from the watcher's thread.
  std::function<void(const std::string& reason, const std::string& message)> fail;
};

class ShareRequestWatcher {
 public:
  explicit ShareRequestWatcher(std::shared_ptr<ShareMounter> mounter) : mounter_(std::move(mounter)) {}
  ~ShareRequestWatcher();  // stops every watch (mounts stay: a restarted agent's teardown finds them)

  // Starts polling for `w.workload_id` (replaces an earlier watch of it).
  void Watch(ShareWatch w);
  // Stops the watch of `id` (waits for its thread), then unmounts what `record_file` names inside
  // `mountns_path` and removes the record. OK when nothing was mounted or the mount namespace is gone ("":
  // the workload's init is gone, and its mount namespace with it).
  absl::Status Release(const std::string& id, const std::string& mountns_path,
                       const std::string& record_file);

 private:
  struct Entry {
    std::thread thread;
    std::shared_ptr<bool> stop;  // guarded by mu_
  };
  void Run(ShareWatch w, std::shared_ptr<bool> stop);
  bool Stopped(const std::shared_ptr<bool>& stop);
  // Marks the watch of `id` stopped and removes it; its thread, for the caller to join outside the lock.
  std::thread TakeWatch(const std::string& id);

  const std::shared_ptr<ShareMounter> mounter_;
  absl::Mutex mu_;                                             // guards watches_ and every Entry::stop
  std::map<std::string, Entry> watches_ ABSL_GUARDED_BY(mu_);  // workload id -> its polling thread
};

}  // namespace strongroom::host_agent
