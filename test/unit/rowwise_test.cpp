// Tests of the row kernels (kiln_rt_softmax, kiln_rt_layernorm) against
// double-precision loops: row lengths around the vector width, large
// and -inf inputs (masked attention), serial and on a pool.
#include "kernels.h"
#include "test_util.h"
#include "thread_pool.h"

#include <catch2/catch.hpp>

#include <cmath>
#include <limits>

using kiln::test::GuardedBuffer;
using kiln::test::PoolScope;
using kiln::test::randomFloats;

namespace {

/// Largest |got - want| / (|want| + tiny) over n values, NaN if any is NaN.
double relError(const float *got, const std::vector<double> &want, double tiny) {
  double worst = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    double e = std::fabs(got[i] - want[i]) / (std::fabs(want[i]) + tiny);
    if (std::isnan(e)) return e;
    worst = std::max(worst, e);
  }
  return worst;
}

} // namespace

TEST_CASE("kiln_rt_softmax matches softmax and log-softmax computed in double", "[rowwise]") {
  kiln::rt::ThreadPool pool(3);
  uint32_t seed = 21000;
  for (int64_t cols : {1, 5, 8, 13, 64, 128, 1000})
    for (int64_t rows : {1, 7, 300}) {
      std::vector<float> x = randomFloats(rows * cols, seed++);
      for (float &v : x) v *= 30.0f; // exp over a wide range
      if (cols > 2) x[1] = -std::numeric_limits<float>::infinity(); // a masked position
      for (int log : {0, 1}) {
        std::vector<double> want(rows * cols);
        for (int64_t r = 0; r < rows; ++r) {
          double m = -INFINITY, s = 0;
          for (int64_t j = 0; j < cols; ++j) m = std::max(m, (double)x[r * cols + j]);
          for (int64_t j = 0; j < cols; ++j) s += std::exp(x[r * cols + j] - m);
          for (int64_t j = 0; j < cols; ++j)
            want[r * cols + j] = log ? x[r * cols + j] - m - std::log(s) : std::exp(x[r * cols + j] - m) / s;
        }
        for (kiln::rt::ThreadPool *p : {(kiln::rt::ThreadPool *)nullptr, &pool}) {
          INFO("rows " << rows << ", cols " << cols << (log ? ", log" : "") << ", threads " << (p ? p->size() : 1));
          PoolScope scope(p);
          GuardedBuffer y(rows * cols);
          kiln_rt_softmax((intptr_t)x.data(), y.addr(), rows, cols, log);
          if (log) {
            // -inf stays -inf; elsewhere within float rounding of the log.
            bool ok = true;
            for (int64_t i = 0; i < rows * cols; ++i)
              ok &= std::isinf(want[i]) ? y.data()[i] == want[i] : std::fabs(y.data()[i] - want[i]) <= 1e-4 * (1 + std::fabs(want[i]));
            CHECK(ok);
          } else {
            // x - max is rounded to float (up to 60 here: 4e-6 relative in
            // exp), then exp itself to about 1 ulp.
            CHECK(relError(y.data(), want, 1e-30) < 1e-5);
          }
          CHECK(y.guardsIntact());
        }
      }
    }
}

TEST_CASE("kiln_rt_layernorm matches LayerNormalization computed in double", "[rowwise]") {
  kiln::rt::ThreadPool pool(2);
  uint32_t seed = 22000;
  for (int64_t cols : {1, 7, 8, 19, 768})
    for (int64_t rows : {1, 5, 128})
      for (bool withBias : {false, true}) {
        std::vector<float> x = randomFloats(rows * cols, seed++), s = randomFloats(cols, seed++),
                           b = randomFloats(cols, seed++);
        for (float &v : x) v = v * 4.0f + 3.0f; // a mean far from 0
        float eps = 1e-5f;
        std::vector<double> want(rows * cols);
        for (int64_t r = 0; r < rows; ++r) {
          double mean = 0, var = 0;
          for (int64_t j = 0; j < cols; ++j) mean += x[r * cols + j];
          mean /= cols;
          for (int64_t j = 0; j < cols; ++j) var += (x[r * cols + j] - mean) * (x[r * cols + j] - mean);
          double inv = 1 / std::sqrt(var / cols + eps);
          for (int64_t j = 0; j < cols; ++j)
            want[r * cols + j] = (x[r * cols + j] - mean) * inv * s[j] + (withBias ? b[j] : 0.0);
        }
        for (kiln::rt::ThreadPool *p : {(kiln::rt::ThreadPool *)nullptr, &pool}) {
          INFO("rows " << rows << ", cols " << cols << (withBias ? ", bias" : "") << ", threads "
                       << (p ? p->size() : 1));
          PoolScope scope(p);
          GuardedBuffer y(rows * cols);
          kiln_rt_layernorm((intptr_t)x.data(), (intptr_t)s.data(), withBias ? (intptr_t)b.data() : 0, y.addr(), rows,
                            cols, eps);
          double worst = 0;
          for (int64_t i = 0; i < rows * cols; ++i) worst = std::max(worst, std::fabs(y.data()[i] - want[i]));
          CHECK(worst < 2e-4); // outputs are O(1)..O(100) (eps rescales 1-column rows)
          CHECK(y.guardsIntact());
        }
      }
}

TEST_CASE("kiln_rt_row_sums matches row sums and means computed in double", "[rowwise]") {
  kiln::rt::ThreadPool pool(3);
  uint32_t seed = 23000;
  for (int64_t cols : {1, 7, 8, 15, 16, 17, 49, 100})
    for (int64_t rows : {1, 5, 300}) {
      std::vector<float> x = randomFloats(rows * cols, seed++);
      for (bool mean : {false, true}) {
        const float scale = mean ? 1.0f / cols : 1.0f;
        for (kiln::rt::ThreadPool *p : {(kiln::rt::ThreadPool *)nullptr, &pool}) {
          INFO("rows " << rows << ", cols " << cols << (mean ? ", mean" : ", sum") << ", threads "
                       << (p ? p->size() : 1));
          PoolScope scope(p);
          GuardedBuffer y(rows);
          kiln_rt_row_sums((intptr_t)x.data(), y.addr(), rows, cols, scale);
          bool ok = true;
          for (int64_t r = 0; r < rows; ++r) {
            double want = 0, mag = 0;
            for (int64_t j = 0; j < cols; ++j) want += x[r * cols + j], mag += std::fabs(x[r * cols + j]);
            want *= scale;
            ok &= std::fabs(y.data()[r] - want) <= 1e-6 * (1 + mag * scale);
          }
          CHECK(ok);
        }
      }
    }
}
