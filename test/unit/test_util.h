// Helpers shared by the unit tests: seeded random data, output buffers with
// guard zones, comparison against double-precision references, and a scope
// that runs kernels on a thread pool.
#ifndef KILN_TEST_UNIT_TEST_UTIL_H
#define KILN_TEST_UNIT_TEST_UTIL_H

#include "thread_pool.h"

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

namespace kiln::test {

/// Uniform floats in [-1, 1) from a fixed seed (same values on every host).
inline std::vector<float> randomFloats(size_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::vector<float> v(n);
  for (float &x : v)
    x = (float)((double)gen() / 2147483648.0 - 1.0);
  return v;
}

/// An output buffer with guard zones on both sides. The payload starts as
/// NaN so that a kernel which reads instead of overwriting shows up.
class GuardedBuffer {
public:
  explicit GuardedBuffer(size_t n)
      : n_(n), v_(n + 2 * kGuard, std::numeric_limits<float>::quiet_NaN()) {
    for (size_t i = 0; i < kGuard; ++i)
      v_[i] = v_[kGuard + n + i] = kSentinel;
  }
  float *data() { return v_.data() + kGuard; }
  size_t size() const { return n_; }
  intptr_t addr() { return (intptr_t)data(); }
  /// True when nothing outside the payload was written.
  bool guardsIntact() const {
    for (size_t i = 0; i < kGuard; ++i)
      if (v_[i] != kSentinel || v_[kGuard + n_ + i] != kSentinel)
        return false;
    return true;
  }

private:
  static constexpr size_t kGuard = 64;
  static constexpr float kSentinel = 777.25f;
  size_t n_;
  std::vector<float> v_;
};

/// A reference result: exact values and, per element, the sum of the
/// magnitudes of the terms that make it (the scale of its rounding error).
struct Reference {
  explicit Reference(size_t n) : value(n, 0.0), scale(n, 0.0) {}
  void add(size_t i, double term) {
    value[i] += term;
    scale[i] += std::fabs(term);
  }
  std::vector<double> value, scale;
};

/// "" when every got[i] is within relTol * ref.scale[i] of ref.value[i];
/// otherwise the number of mismatches and the first one.
inline std::string mismatches(const float *got, const Reference &ref, double relTol = 1e-4) {
  size_t bad = 0, first = 0;
  for (size_t i = 0; i < ref.value.size(); ++i) {
    double err = std::fabs((double)got[i] - ref.value[i]);
    if (!(err <= relTol * ref.scale[i])) {
      if (bad++ == 0)
        first = i;
    }
  }
  if (!bad)
    return "";
  std::ostringstream os;
  os << bad << " of " << ref.value.size() << " elements differ; first at " << first << ": got "
     << got[first] << ", expected " << ref.value[first] << " (scale " << ref.scale[first] << ")";
  return os.str();
}

/// Makes `pool` the current pool of this thread (null: serial) for the
/// lifetime of the scope.
class PoolScope {
public:
  explicit PoolScope(rt::ThreadPool *pool) : prev_(rt::currentPool()) { rt::setCurrentPool(pool); }
  ~PoolScope() { rt::setCurrentPool(prev_); }
  PoolScope(const PoolScope &) = delete;
  PoolScope &operator=(const PoolScope &) = delete;

private:
  rt::ThreadPool *prev_;
};

} // namespace kiln::test

#endif
