// A fixed set of threads working on keys (job ids): a key is never worked on by two threads at once, and
// adding a key that is queued already is a no-op; adding one that is running makes it run once more
// afterwards.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace strongroom::backend {

class KeyedWorkPool {
 public:
  KeyedWorkPool(int threads, std::function<void(const std::string&)> work);
  ~KeyedWorkPool();  // lets running work finish; queued keys are dropped (the reconciler finds them again)

  void Add(const std::string& key);
  // Keys queued or running.
  size_t Busy() const;

 private:
  void Loop();

  const std::function<void(const std::string&)> work_;
  mutable std::mutex mu_;          // guards the members below
  std::condition_variable cv_;     // a key was queued, or stop
  std::deque<std::string> queue_;  // waiting keys, in order
  std::set<std::string> queued_;   // the same keys, for lookup
  std::set<std::string> running_;  // keys a thread works on now
  std::set<std::string> rerun_;    // running keys added again meanwhile
  bool stop_ = false;
  std::vector<std::thread> threads_;  // the workers
};

}  // namespace strongroom::backend
