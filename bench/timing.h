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

/// Medians of `reps` calls of each fn, the calls interleaved (a, b, a, b,
/// ...) so that a slow phase of a noisy machine hits both alike, in ms.
inline std::vector<double> interleavedMedianMs(int reps, const std::vector<std::function<void()>> &fns) {
  std::vector<std::vector<double>> t(fns.size());
  for (auto &f : fns) f(); // warm up
  for (int r = 0; r < reps; ++r)
    for (size_t i = 0; i < fns.size(); ++i) {
      auto t0 = std::chrono::steady_clock::now();
      fns[i]();
      t[i].push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    }
  std::vector<double> med;
  for (auto &v : t) {
    std::sort(v.begin(), v.end());
    med.push_back(v[v.size() / 2]);
  }
  return med;
}

#endif
