// Tests of kiln::rt::ThreadPool and the current-pool parallelFor: every
// index runs exactly once, under repetition (the pool is reused for
// thousands of jobs, as a context's pool is across kernels), with pools
// created and destroyed in a loop, and with pools used from several threads.
#include "test_util.h"
#include "kernels.h"
#include "thread_pool.h"

#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

using kiln::test::PoolScope;

namespace {

/// Runs parallelFor(n) on `pool` and returns the number of indices that did
/// not run exactly once.
int64_t missedOrRepeated(kiln::rt::ThreadPool &pool, int64_t n) {
  std::unique_ptr<std::atomic<int>[]> hits(new std::atomic<int>[n ? n : 1]);
  for (int64_t i = 0; i < n; ++i)
    hits[i] = 0;
  std::atomic<int64_t> outOfRange{0};
  pool.parallelFor(n, [&](int64_t i) {
    if (i < 0 || i >= n)
      ++outOfRange;
    else
      hits[i].fetch_add(1, std::memory_order_relaxed);
  });
  int64_t bad = outOfRange.load();
  for (int64_t i = 0; i < n; ++i)
    bad += hits[i].load() != 1;
  return bad;
}

} // namespace

TEST_CASE("ThreadPool size counts the calling thread", "[thread_pool]") {
  for (int threads = 1; threads <= 4; ++threads) {
    kiln::rt::ThreadPool pool(threads);
    CHECK(pool.size() == threads);
  }
}

TEST_CASE("ThreadPool parallelFor runs every index exactly once", "[thread_pool]") {
  const int64_t sizes[] = {0, 1, 7, 1000};
  for (int threads = 1; threads <= 4; ++threads) {
    kiln::rt::ThreadPool pool(threads);
    int64_t bad = 0, jobs = 0;
    for (int rep = 0; rep < 500; ++rep)
      for (int64_t n : sizes) {
        bad += missedOrRepeated(pool, n);
        ++jobs;
      }
    INFO("threads=" << threads << ", " << jobs << " jobs");
    CHECK(bad == 0);
  }
}

TEST_CASE("ThreadPool survives back-to-back tiny jobs", "[thread_pool]") {
  // Tiny jobs finish before the workers wake up, so workers come late to a
  // job while the next one starts: they must neither take indices of the
  // next job against the size of the old one nor run one index twice.
  const int64_t sizes[] = {0, 2, 64};
  for (int threads = 2; threads <= 4; ++threads) {
    kiln::rt::ThreadPool pool(threads);
    int64_t bad = 0;
    for (int rep = 0; rep < 100000; ++rep)
      bad += missedOrRepeated(pool, sizes[rep % 3]);
    INFO("threads=" << threads);
    CHECK(bad == 0);
  }
}

TEST_CASE("ThreadPool wakes sleeping workers and does not wait for late ones", "[thread_pool]") {
  // Between jobs the workers spin for a while, then sleep: a job after a
  // pause must still run every index once (with the workers woken, or
  // without them when they come after the caller has taken every task),
  // and its results must be visible to the caller on return.
  for (int threads = 2; threads <= 3; ++threads) {
    kiln::rt::ThreadPool pool(threads);
    int64_t bad = 0;
    for (int rep = 0; rep < 40; ++rep) {
      std::this_thread::sleep_for(std::chrono::milliseconds(rep % 2 ? 2 : 0));
      const int64_t n = rep % 4 == 0 ? 2 : 64;
      std::vector<int64_t> out(n, -1);
      pool.parallelFor(n, [&](int64_t i) {
        // (about a microsecond first: a worker's last task then often ends
        // after the caller's last)
        volatile int64_t spin = 0;
        for (int k = 0; k < 300; ++k) spin = spin + k;
        out[i] = 3 * i;
      });
      for (int64_t i = 0; i < n; ++i) bad += out[i] != 3 * i;
      bad += missedOrRepeated(pool, n);
    }
    INFO("threads=" << threads);
    CHECK(bad == 0);
  }
}

TEST_CASE("ThreadPool wakes a sleeping worker for the next job", "[thread_pool]") {
  // Two tasks that each wait (up to a second) for the other to start: the
  // caller takes task 0, so task 1 starts meanwhile only on a worker, which
  // has gone to sleep during the pause before the job.
  kiln::rt::ThreadPool pool(2);
  for (int rep = 0; rep < 5; ++rep) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    std::atomic<bool> started[2] = {false, false};
    std::atomic<int> metPartner{0};
    pool.parallelFor(2, [&](int64_t i) {
      started[i] = true;
      auto until = std::chrono::steady_clock::now() + std::chrono::seconds(1);
      while (!started[1 - i] && std::chrono::steady_clock::now() < until) {
      }
      metPartner += started[1 - i] ? 1 : 0;
    });
    CHECK(metPartner == 2);
  }
}

TEST_CASE("ThreadPool can be created and destroyed repeatedly", "[thread_pool]") {
  int64_t bad = 0;
  for (int rep = 0; rep < 300; ++rep) {
    kiln::rt::ThreadPool pool(1 + rep % 4);
    if (rep % 3)
      bad += missedOrRepeated(pool, rep % 50);
  }
  CHECK(bad == 0);
}

TEST_CASE("ThreadPool sums uneven work correctly", "[thread_pool]") {
  kiln::rt::ThreadPool pool(4);
  const int64_t n = 300;
  std::vector<int64_t> partial(n, 0);
  for (int rep = 0; rep < 20; ++rep) {
    pool.parallelFor(n, [&](int64_t i) {
      int64_t s = 0;
      for (int64_t k = 0; k < (i % 17) * 1000; ++k)
        s += k % 7;
      partial[i] = s;
    });
    int64_t expected = 0, got = 0;
    for (int64_t i = 0; i < n; ++i) {
      int64_t s = 0;
      for (int64_t k = 0; k < (i % 17) * 1000; ++k)
        s += k % 7;
      expected += s;
      got += partial[i];
    }
    REQUIRE(got == expected);
  }
}

TEST_CASE("parallelFor without a current pool runs serially in order", "[thread_pool]") {
  REQUIRE(kiln::rt::currentPool() == nullptr);
  std::vector<int64_t> order;
  std::thread::id self = std::this_thread::get_id();
  bool sameThread = true;
  kiln::rt::parallelFor(10, [&](int64_t i) {
    order.push_back(i);
    sameThread &= std::this_thread::get_id() == self;
  });
  CHECK(order == std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
  CHECK(sameThread);
  kiln::rt::parallelFor(0, [&](int64_t) { order.push_back(-1); });
  CHECK(order.size() == 10);
}

TEST_CASE("parallelFor uses the current pool which is per thread", "[thread_pool]") {
  kiln::rt::ThreadPool pool(3);
  {
    PoolScope scope(&pool);
    CHECK(kiln::rt::currentPool() == &pool);
    kiln::rt::ThreadPool *seenByOther = &pool;
    std::thread([&] { seenByOther = kiln::rt::currentPool(); }).join();
    CHECK(seenByOther == nullptr);

    for (int64_t n : {0, 1, 2, 7, 1000}) {
      std::unique_ptr<std::atomic<int>[]> hits(new std::atomic<int>[n ? n : 1]);
      for (int64_t i = 0; i < n; ++i)
        hits[i] = 0;
      for (int rep = 0; rep < 50; ++rep)
        kiln::rt::parallelFor(n, [&](int64_t i) { ++hits[i]; });
      int64_t bad = 0;
      for (int64_t i = 0; i < n; ++i)
        bad += hits[i].load() != 50;
      INFO("n=" << n);
      CHECK(bad == 0);
    }
  }
  CHECK(kiln::rt::currentPool() == nullptr);
}

TEST_CASE("separate pools run concurrently on separate threads", "[thread_pool]") {
  std::atomic<int64_t> bad{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 3; ++t)
    threads.emplace_back([&, t] {
      kiln::rt::ThreadPool pool(2 + t % 2);
      for (int rep = 0; rep < 300; ++rep)
        bad += missedOrRepeated(pool, (rep * 37) % 200);
    });
  for (std::thread &t : threads)
    t.join();
  CHECK(bad.load() == 0);
}

namespace {
struct RangeHits {
  std::unique_ptr<std::atomic<int>[]> hits;
  std::atomic<int64_t> bad{0}, calls{0};
};
void countRange(void *ctx, int64_t begin, int64_t end) {
  auto *r = static_cast<RangeHits *>(ctx);
  ++r->calls;
  if (begin >= end) ++r->bad; // an empty range is a wasted call
  for (int64_t i = begin; i < end; ++i) r->hits[i].fetch_add(1, std::memory_order_relaxed);
}
} // namespace

// The entry point generated code calls (kiln-parallelize-kernels): ranges
// that cover [0, n) exactly once, one range without a pool, on the current
// pool otherwise.
TEST_CASE("kiln_rt_parallel_for covers [0, n) once in consecutive ranges", "[thread_pool]") {
  kiln::rt::ThreadPool pool(2);
  for (kiln::rt::ThreadPool *p : {(kiln::rt::ThreadPool *)nullptr, &pool})
    for (int64_t n : {1, 2, 7, 8, 9, 1536, 100003}) {
      PoolScope scope(p);
      RangeHits r;
      r.hits.reset(new std::atomic<int>[n]);
      for (int64_t i = 0; i < n; ++i) r.hits[i] = 0;
      kiln_rt_parallel_for(n, countRange, &r);
      int64_t wrong = 0;
      for (int64_t i = 0; i < n; ++i) wrong += r.hits[i].load() != 1;
      INFO("pool " << (p ? 2 : 0) << ", n = " << n);
      CHECK(wrong == 0);
      CHECK(r.bad == 0);
      // Serial: one call. Two threads: each gets work, at most 4 ranges each.
      if (p) {
        CHECK(r.calls >= std::min<int64_t>(n, 2));
        CHECK(r.calls <= 8);
      } else {
        CHECK(r.calls == 1);
      }
    }
  PoolScope scope(&pool);
  RangeHits none;
  kiln_rt_parallel_for(0, countRange, &none);
  CHECK(none.calls == 0);
}

TEST_CASE("workers run a job with the caller's weightsStreamed and one thread inside a task", "[thread_pool]") {
  // weightsStreamed() is per thread (kiln_run sets it on its own); a job's
  // tasks see the caller's setting on every thread, and the workers' own
  // setting is back afterwards. Inside a task, currentThreads() is 1 (a
  // nested parallelFor runs serially).
  kiln::rt::ThreadPool pool(3);
  PoolScope scope(&pool);
  REQUIRE(kiln::rt::currentThreads() == 3);
  for (bool on : {true, false, true}) {
    const bool was = kiln::rt::setWeightsStreamed(on);
    std::atomic<int> seen{0}, wrong{0}, nestedThreads{0};
    std::mutex mu;
    std::set<std::thread::id> ids;
    kiln::rt::parallelFor(64, [&](int64_t) {
      ++seen;
      if (kiln::rt::weightsStreamed() != on) ++wrong;
      nestedThreads.fetch_add(kiln::rt::currentThreads() != 1);
      std::lock_guard<std::mutex> l(mu);
      ids.insert(std::this_thread::get_id());
      std::this_thread::sleep_for(std::chrono::microseconds(50)); // let the workers take some
    });
    kiln::rt::setWeightsStreamed(was);
    CHECK(seen == 64);
    CHECK(wrong == 0);
    CHECK(nestedThreads == 0);
    CHECK(ids.size() > 1); // the workers ran some of them
  }
  CHECK(kiln::rt::currentThreads() == 3);
}
