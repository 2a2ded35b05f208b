// A small fixed-size thread pool: parallel_for over [0, n), caller included.
// Workers spin for a short while (kSpinMicros) after each job before they
// sleep on a condition variable: the kernels of one inference follow each
// other within microseconds, and a futex wake-up costs more than many
// small kernels. A caller waiting for the last worker spins, then yields.
// A worker that comes to a job after the caller has claimed all its tasks
// is shut out of it, so a sleeping worker never holds a caller up.
// Tasks are not dealt first come, first served: thread t (the caller is
// thread 0) owns the t-th run of n / threads consecutive tasks and takes
// them in order, then helps the others with what is left of theirs. Two
// kernels in a row that cut their data the same way (a GEMM over output
// channels, then a depthwise conv over the same channels) so give each
// thread the same part of the data, still in its own L2; handed out first
// come, first served, about half of it came from the other core
// (MobileNetV2 at 2 threads: 0.95-0.97x the time).
#ifndef KILN_RUNTIME_THREAD_POOL_H
#define KILN_RUNTIME_THREAD_POOL_H

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace kiln::rt {

class ThreadPool {
public:
  explicit ThreadPool(int threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool &) = delete;
  ThreadPool &operator=(const ThreadPool &) = delete;

  int size() const { return (int)workers_.size() + 1; }
  /// Runs fn(i) for i in [0, n); returns when all are done.
  void parallelFor(int64_t n, const std::function<void(int64_t)> &fn);

private:
  void workerLoop(int id);
  void drain(const std::function<void(int64_t)> &fn, int id);
  /// Thread id's share of a job: tasks [next, end), claimed one at a time
  /// by its owner from the front and, once their own share is done, by the
  /// other threads (its own cache line: each is one thread's counter).
  struct alignas(64) Share {
    std::atomic<int64_t> next{0};
    int64_t end = 0;
  };
  /// Where worker id stands (its own cache line): 2g + 1 while it runs
  /// job g, 2g once it has finished job g or the caller has shut it out
  /// of g (it came too late to take any of g's tasks).
  struct alignas(64) Slot {
    std::atomic<uint64_t> state{0};
  };
  std::vector<std::thread> workers_;
  std::unique_ptr<Share[]> shares_;
  std::unique_ptr<Slot[]> slots_;
  // The job, written by the caller before it publishes generation_ (one
  // cache line that the workers only read).
  struct alignas(64) Job {
    std::atomic<uint64_t> generation{0};
    const std::function<void(int64_t)> *fn = nullptr;
    // The caller's weightsStreamed() for the job, set on the workers while
    // they run it (it is per thread: kiln_run sets it on its own).
    bool streamed = false;
  } job_;
  // Sleeping workers: they wait on wake_ after spinning for kSpinMicros.
  std::mutex mu_;
  std::condition_variable wake_;
  std::atomic<int> sleepers_{0};
  std::atomic<bool> stop_{false};
};

/// The pool of the context currently running on this thread (null: serial).
ThreadPool *currentPool();
void setCurrentPool(ThreadPool *pool);

/// Threads that parallelFor uses on this thread now (1 without a pool,
/// and inside a parallelFor's task, where a nested one runs serially).
int currentThreads();

/// parallelFor on the current pool, or serially.
void parallelFor(int64_t n, const std::function<void(int64_t)> &fn);
/// fn(i) for i in [0, n) in runs of consecutive i, about 8 runs per thread:
/// for many small items (a plane's rows, an im2col row), where one task
/// each costs more in dispatch (an atomic counter shared by the threads)
/// than the item.
template <class F> void parallelRuns(int64_t n, F fn) {
  if (n <= 0) return;
  const int64_t tasks = std::min<int64_t>(n, 8 * int64_t(currentThreads())), per = (n + tasks - 1) / tasks;
  parallelFor((n + per - 1) / per, [&](int64_t t) {
    for (int64_t i = t * per, end = std::min(n, i + per); i < end; ++i) fn(i);
  });
}

} // namespace kiln::rt

#endif
