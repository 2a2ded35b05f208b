// Row-wise kernels over the last axis of float32 tensors, parallel over
// rows on the context's thread pool: Softmax / LogSoftmax and
// LayerNormalization (what generated code would run on one thread).
#include "kernels.h"
#include "simd.h"
#include "thread_pool.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

namespace kiln::rt {
namespace {

typedef int v8i __attribute__((vector_size(32)));

/// e^x, 8 lanes (Cephes expf: x = n ln2 + r, |r| <= ln2/2, e^r by a
/// degree-6 polynomial, 2^n from the exponent bits; about 1 ulp).
/// Inputs below -87.3 give 0 (exp underflows there anyway), NaN stays NaN.
inline v8f vexp(v8f x) {
  const v8f hiB = splat(88.0f), loB = splat(-87.3365447505531f);
  v8f under = x < loB ? splat(0.0f) : splat(1.0f); // lanes that underflow to 0
  x = x < loB ? loB : x;
  x = hiB < x ? hiB : x;
  // n = round(x / ln2) by the 1.5 * 2^23 trick (|x / ln2| < 2^22).
  const v8f magic = splat(12582912.0f);
  v8f n = (x * splat(1.44269504088896341f) + magic) - magic;
  v8f r = x - n * splat(0.693359375f) - n * splat(-2.12194440e-4f);
  v8f p = splat(1.9875691500e-4f);
  p = p * r + splat(1.3981999507e-3f);
  p = p * r + splat(8.3334519073e-3f);
  p = p * r + splat(4.1665795894e-2f);
  p = p * r + splat(1.6666665459e-1f);
  p = p * r + splat(5.0000001201e-1f);
  p = p * r * r + r + splat(1.0f);
  n = n == n ? n : splat(0.0f); // NaN lanes: any exponent (p is NaN there)
  v8i e = (__builtin_convertvector(n, v8i) + 127) * (1 << 23); // n + 127 in [1, 254]
  v8f scale;
  std::memcpy(&scale, &e, sizeof scale);
  return p * scale * under;
}

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
