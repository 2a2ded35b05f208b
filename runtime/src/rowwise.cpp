// Row-wise kernels over the last axis of float32 tensors, parallel over
// rows on the context's thread pool: Softmax / LogSoftmax,
// LayerNormalization and row sums (ReduceSum / ReduceMean over trailing
// axes), what generated code would run on one thread.
#include "kernels.h"
#include "simd.h"
#include "thread_pool.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

namespace kiln::rt {
namespace {

inline float hmax(v8f v) {
  float m = v[0];
  for (int i = 1; i < 8; ++i) m = std::max(m, v[i]);
  return m;
}

/// fn(row) for every row, several rows per task.
template <typename F> void forRows(int64_t rows, int64_t cols, F fn) {
  int64_t per = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, cols));
  parallelFor((rows + per - 1) / per, [&](int64_t t) {
    for (int64_t r = t * per; r < std::min(rows, (t + 1) * per); ++r) fn(r);
  });
}

} // namespace
} // namespace kiln::rt

using namespace kiln::rt;

extern "C" {

void kiln_rt_softmax(intptr_t x, intptr_t y, int64_t rows, int64_t cols, int64_t log) {
  const float *X = (const float *)x;
  float *Y = (float *)y;
  forRows(rows, cols, [&](int64_t r) {
    const float *xr = X + r * cols;
    float *yr = Y + r * cols;
    int64_t j = 0;
    v8f mv = splat(-std::numeric_limits<float>::infinity());
    for (; j + 8 <= cols; j += 8) {
      v8f v = load8(xr + j);
      mv = mv < v ? v : mv;
    }
    float m = hmax(mv);
    for (; j < cols; ++j) m = std::max(m, xr[j]);
    // e^(x - max) into y (exp of x - max for log-softmax's sum only).
    v8f sv{};
    float s = 0;
    j = 0;
    for (; j + 8 <= cols; j += 8) {
      v8f e = vexp(load8(xr + j) - splat(m));
      sv += e;
      if (!log) store8(yr + j, e);
    }
    for (; j < cols; ++j) {
      float e = std::exp(xr[j] - m);
      s += e;
      if (!log) yr[j] = e;
    }
    s += hsum(sv);
    if (log) {
      float shift = m + std::log(s);
      for (j = 0; j < cols; ++j) yr[j] = xr[j] - shift;
      return;
    }
    float inv = 1.0f / s;
    j = 0;
    for (; j + 8 <= cols; j += 8) store8(yr + j, load8(yr + j) * splat(inv));
    for (; j < cols; ++j) yr[j] *= inv;
  });
}

void kiln_rt_row_sums(intptr_t x, intptr_t y, int64_t rows, int64_t cols, float scale) {
  const float *X = (const float *)x;
  float *Y = (float *)y;
  forRows(rows, cols, [&](int64_t r) {
    const float *xr = X + r * cols;
    v8f a{}, b{};
    int64_t j = 0;
    for (; j + 16 <= cols; j += 16) {
      a += load8(xr + j);
      b += load8(xr + j + 8);
    }
    if (j + 8 <= cols) a += load8(xr + j), j += 8;
    float s = hsum(a + b);
    for (; j < cols; ++j) s += xr[j];
    Y[r] = s * scale;
  });
}

void kiln_rt_layernorm(intptr_t x, intptr_t scale, intptr_t bias, intptr_t y, int64_t rows, int64_t cols,
                       float eps) {
  const float *X = (const float *)x, *S = (const float *)scale, *B = (const float *)bias;
  float *Y = (float *)y;
  forRows(rows, cols, [&](int64_t r) {
    const float *xr = X + r * cols;
    float *yr = Y + r * cols;
    v8f sv{};
    float s = 0;
    int64_t j = 0;
    for (; j + 8 <= cols; j += 8) sv += load8(xr + j);
    for (; j < cols; ++j) s += xr[j];
    float mean = (s + hsum(sv)) / float(cols);
    v8f qv{};
    float q = 0;
    j = 0;
    for (; j + 8 <= cols; j += 8) {
      v8f d = load8(xr + j) - splat(mean);
      qv += d * d;
    }
    for (; j < cols; ++j) q += (xr[j] - mean) * (xr[j] - mean);
    float inv = 1.0f / std::sqrt((q + hsum(qv)) / float(cols) + eps);
    j = 0;
    for (; j + 8 <= cols; j += 8) {
      v8f v = (load8(xr + j) - splat(mean)) * splat(inv) * load8(S + j);
      store8(yr + j, B ? v + load8(B + j) : v);
    }
    for (; j < cols; ++j) {
      float v = (xr[j] - mean) * inv * S[j];
      yr[j] = B ? v + B[j] : v;
    }
  });
}

} // extern "C"
