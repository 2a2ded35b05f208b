#include "thread_pool.h"

namespace kiln::rt {

static thread_local ThreadPool *tlsPool = nullptr;
ThreadPool *currentPool() { return tlsPool; }
void setCurrentPool(ThreadPool *pool) { tlsPool = pool; }

void parallelFor(int64_t n, const std::function<void(int64_t)> &fn) {
  ThreadPool *p = tlsPool;
  if (!p || p->size() == 1 || n <= 1) {
    for (int64_t i = 0; i < n; ++i) fn(i);
    return;
  }
  p->parallelFor(n, fn);
}

ThreadPool::ThreadPool(int threads) {
  for (int i = 1; i < threads; ++i)
    workers_.emplace_back([this] { workerLoop(); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stop_ = true;
  }
  wake_.notify_all();
  for (auto &t : workers_) t.join();
}

void ThreadPool::drain() {
  for (;;) {
    int64_t i = next_.fetch_add(1, std::memory_order_relaxed);
    if (i >= jobSize_) break;
    (*job_)(i);
  }
}

void ThreadPool::workerLoop() {
  uint64_t seen = 0;
  for (;;) {
    {
      std::unique_lock<std::mutex> l(mu_);
      wake_.wait(l, [&] { return stop_ || generation_ != seen; });
      if (stop_) return;
      seen = generation_;
      ++active_;
    }
    drain();
    {
      std::lock_guard<std::mutex> l(mu_);
      if (--active_ == 0) done_.notify_all();
    }
  }
}

void ThreadPool::parallelFor(int64_t n, const std::function<void(int64_t)> &fn) {
  {
    std::lock_guard<std::mutex> l(mu_);
    job_ = &fn;
    jobSize_ = n;
    next_.store(0);
    ++generation_;
  }
  wake_.notify_all();
  drain();
  std::unique_lock<std::mutex> l(mu_);
  done_.wait(l, [&] { return active_ == 0 && next_.load() >= jobSize_; });
  job_ = nullptr;
}

} // namespace kiln::rt
