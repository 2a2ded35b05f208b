#include "thread_pool.h"
#include "kernels.h"

#include <chrono>
#include <system_error>
#include <thread>

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

/// Polls `ready`, yielding the core between polls (a worker still running a
/// long task: the caller has nothing else to do).
template <typename F> void waitYielding(F ready) {
  while (!ready()) std::this_thread::yield();
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

ThreadPool::ThreadPool(int threads)
    : shares_(new Share[std::max(threads, 1)]), slots_(new Slot[std::max(threads, 1)]) {
  // A thread the system will not start leaves the pool smaller (size()
  // says so) rather than throwing out of a constructor whose workers_
  // would then be destroyed while joinable.
  for (int i = 1; i < threads; ++i) {
    try {
      workers_.emplace_back([this, i] { workerLoop(i); });
    } catch (const std::system_error &) {
      break;
    }
  }
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

// A job costs the threads a few cache lines handed between them, each a
// core-to-core round trip (about 0.1 us with the Zen 5 VM's vCPUs close,
// 0.4 us far apart): the job's line (the caller writes, each worker
// reads), each share's line (the caller sets it, its owner claims from
// it) and each worker's slot (the worker joins and leaves, the caller
// reads). No lock on the way: with a mutex for joining and leaving and a
// condition variable for the end, a job of two 2.5 us tasks cost 0.5-0.9
// us more than one task alone close and 1.8-3.3 us far apart; this way
// 0.25-0.3 and 1.1-1.2 us. (ResNet-50 runs 108 jobs per inference.)
void ThreadPool::workerLoop(int id) {
  Slot &slot = slots_[id];
  uint64_t seen = 0;
  for (;;) {
    auto fresh = [&] { return stop_.load(std::memory_order_relaxed) || job_.generation.load() != seen; };
    if (!spinUntil(fresh)) {
      std::unique_lock<std::mutex> l(mu_);
      // (sleepers_ and generation are sequentially consistent: either the
      // caller sees this sleeper, or this sees the caller's new job.)
      sleepers_.fetch_add(1);
      wake_.wait(l, fresh);
      sleepers_.fetch_sub(1);
    }
    if (stop_) return;
    const uint64_t g = job_.generation.load(std::memory_order_acquire);
    seen = g;
    // Join job g unless the caller has shut this worker out of it (it
    // finished g's tasks without it); then the job's fields are g's until
    // this worker leaves, as the caller waits for it.
    uint64_t s = slot.state.load(std::memory_order_relaxed);
    if (s >= 2 * g || !slot.state.compare_exchange_strong(s, 2 * g + 1, std::memory_order_acquire))
      continue;
    const bool was = setWeightsStreamed(job_.streamed);
    drain(*job_.fn, id);
    setWeightsStreamed(was);
    slot.state.store(2 * g, std::memory_order_release);
  }
}

void ThreadPool::parallelFor(int64_t n, const std::function<void(int64_t)> &fn) {
  if (n <= 0) return;
  // Thread t's share is the t-th run of consecutive tasks: kernels of the
  // same shape in a row (and a kernel's phases) then give each thread the
  // same part of the data, which stays in its own cache.
  const int T = size();
  for (int t = 0; t < T; ++t) {
    shares_[t].end = n * (t + 1) / T;
    shares_[t].next.store(n * t / T, std::memory_order_relaxed);
  }
  job_.fn = &fn;
  job_.streamed = weightsStreamed();
  const uint64_t g = job_.generation.load(std::memory_order_relaxed) + 1;
  job_.generation.store(g); // (sequentially consistent: see workerLoop)
  if (sleepers_.load() > 0) {
    std::lock_guard<std::mutex> l(mu_);
    wake_.notify_all();
  }
  drain(fn, 0);
  // Every task has been claimed; wait for the workers that joined, and
  // shut out those that have not (they would find nothing left).
  for (int w = 1; w < T; ++w) {
    std::atomic<uint64_t> &state = slots_[w].state;
    uint64_t s = state.load(std::memory_order_acquire);
    while (s < 2 * g && !state.compare_exchange_weak(s, 2 * g, std::memory_order_acquire)) {
    }
    auto left = [&] { return state.load(std::memory_order_acquire) == 2 * g; };
    if (s == 2 * g + 1 && !spinUntil(left)) waitYielding(left);
  }
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
