#include "thread_pool.h"
#include "kernels.h"

#include <chrono>

namespace kiln::rt {

namespace {
constexpr int kSpinMicros = 200;

inline void cpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

/// Polls `ready` for up to kSpinMicros; true if it became true.
template <typename F> bool spinUntil(F ready) {
  auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(kSpinMicros);
  for (int i = 0;; ++i) {
    if (ready()) return true;
    cpuRelax();
    if ((i & 63) == 63 && std::chrono::steady_clock::now() > until) return ready();
  }
}
} // namespace

static thread_local ThreadPool *tlsPool = nullptr;
// Set while this thread runs tasks of a parallelFor: a nested parallelFor
// (a kernel parallel over batches calling sgemm) then runs serially.
static thread_local bool tlsInParallel = false;

namespace {
struct ParallelScope {
  bool saved = tlsInParallel;
  ParallelScope() { tlsInParallel = true; }
  ~ParallelScope() { tlsInParallel = saved; }
};
} // namespace
ThreadPool *currentPool() { return tlsPool; }
void setCurrentPool(ThreadPool *pool) { tlsPool = pool; }
int currentThreads() { return tlsPool && !tlsInParallel ? tlsPool->size() : 1; }

void parallelFor(int64_t n, const std::function<void(int64_t)> &fn) {
  ThreadPool *p = tlsPool;
  if (!p || p->size() == 1 || n <= 1 || tlsInParallel) {
    for (int64_t i = 0; i < n; ++i) fn(i);
    return;
  }
  p->parallelFor(n, fn);
}

ThreadPool::ThreadPool(int threads) : shares_(new Share[std::max(threads, 1)]) {
  for (int i = 1; i < threads; ++i)
    workers_.emplace_back([this, i] { workerLoop(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stop_ = true;
  }
  wake_.notify_all();
  for (auto &t : workers_) t.join();
}

void ThreadPool::drain(const std::function<void(int64_t)> &fn, int id) {
  ParallelScope scope;
  const int T = size();
  for (int k = 0; k < T; ++k) { // its own share first, then the others'
    Share &s = shares_[(id + k) % T];
    for (;;) {
      int64_t i = s.next.fetch_add(1, std::memory_order_relaxed);
      if (i >= s.end) break;
      fn(i);
    }
  }
}

void ThreadPool::workerLoop(int id) {
  uint64_t seen = 0;
  for (;;) {
    const std::function<void(int64_t)> *job;
    bool streamed;
    spinUntil([&] { return stop_.load(std::memory_order_relaxed) ||
                           generation_.load(std::memory_order_acquire) != seen; });
    {
      std::unique_lock<std::mutex> l(mu_);
      wake_.wait(l, [&] { return stop_ || generation_ != seen; });
      if (stop_) return;
      seen = generation_;
      // A worker that wakes after its job has finished finds job_ null. One
      // that joins (under the lock) holds parallelFor back until it leaves,
      // so the next job cannot reset the shares or job_ while it drains.
      if (!job_) continue;
      job = job_;
      streamed = jobStreamed_;
      ++active_;
    }
    const bool was = setWeightsStreamed(streamed);
    drain(*job, id);
    setWeightsStreamed(was);
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
    jobStreamed_ = weightsStreamed();
    // Thread t's share is the t-th run of consecutive tasks: kernels of
    // the same shape in a row (and a kernel's phases) then give each thread
    // the same part of the data, which stays in its own cache.
    const int T = size();
    for (int t = 0; t < T; ++t) {
      shares_[t].end = n * (t + 1) / T;
      shares_[t].next.store(n * t / T, std::memory_order_relaxed);
    }
    ++generation_;
  }
  wake_.notify_all();
  drain(fn, 0);
  spinUntil([&] { return active_.load(std::memory_order_acquire) == 0; });
  std::unique_lock<std::mutex> l(mu_);
  done_.wait(l, [&] { return active_ == 0; });
  job_ = nullptr;
}

} // namespace kiln::rt

extern "C" void kiln_rt_parallel_for(int64_t n, void (*fn)(void *, int64_t, int64_t), void *ctx) {
  using namespace kiln::rt;
  if (n <= 0) return;
  const int threads = currentThreads();
  if (threads <= 1 || n == 1) {
    fn(ctx, 0, n);
    return;
  }
  // 4 ranges per thread: the pool gives thread t the t-th run of them (the
  // same part of the data as a kernel before it cut the same way), and the
  // others even out a thread that falls behind.
  const int64_t tasks = std::min<int64_t>(n, 4 * int64_t(threads)), per = (n + tasks - 1) / tasks;
  parallelFor((n + per - 1) / per, [&](int64_t t) { fn(ctx, t * per, std::min(n, (t + 1) * per)); });
}
