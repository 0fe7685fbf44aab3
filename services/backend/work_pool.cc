#include "services/backend/work_pool.h"

namespace strongroom::backend {

KeyedWorkPool::KeyedWorkPool(int threads, std::function<void(const std::string&)> work)
    : work_(std::move(work)) {
  for (int i = 0; i < threads; ++i) threads_.emplace_back([this] { Loop(); });
}

KeyedWorkPool::~KeyedWorkPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  for (std::thread& t : threads_) t.join();
}

void KeyedWorkPool::Add(const std::string& key) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_ || queued_.count(key) != 0) return;
    if (running_.count(key) != 0) {
      rerun_.insert(key);
      return;
    }
    queue_.push_back(key);
    queued_.insert(key);
  }
  cv_.notify_one();
}

size_t KeyedWorkPool::Busy() const {
  std::lock_guard<std::mutex> lock(mu_);
  return queued_.size() + running_.size();
}

void KeyedWorkPool::Loop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
    if (stop_) return;
    std::string key = std::move(queue_.front());
    queue_.pop_front();
    queued_.erase(key);
    running_.insert(key);
    lock.unlock();
    work_(key);
    lock.lock();
    running_.erase(key);
    if (rerun_.erase(key) != 0 && !stop_) {
      queue_.push_back(key);
      queued_.insert(key);
      cv_.notify_one();
    }
  }
}

}  // namespace strongroom::backend
