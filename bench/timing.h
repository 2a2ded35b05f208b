// Timing helper shared by the C++ microbenchmarks in bench/.
#ifndef KILN_BENCH_TIMING_H
#define KILN_BENCH_TIMING_H

#include <algorithm>
#include <chrono>
#include <functional>
#include <vector>

/// Median wall time of `reps` calls of fn (after one warm-up call), in ms.
inline double medianMs(int reps, const std::function<void()> &fn) {
  fn(); // warm up
  std::vector<double> t;
  for (int r = 0; r < reps; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    fn();
    t.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

#endif
