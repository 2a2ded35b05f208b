// 8-float vectors for the runtime's kernels (GCC/Clang vector extensions:
// one AVX2 register on x86-64, two NEON registers on aarch64), and the
// per-thread scratch buffers kernels pack into.
#ifndef KILN_RUNTIME_SIMD_H
#define KILN_RUNTIME_SIMD_H

#include <cstdint>
#include <cstring>
#include <vector>
#if defined(__AVX2__)
#include <immintrin.h>
#endif

namespace kiln::rt {

typedef float v8f __attribute__((vector_size(32)));

/// The address `off` floats from p, formed as an integer (for prefetches
/// that may lie past p's buffer: pointer arithmetic there would be
/// undefined).
inline const void *addrAt(const float *p, int64_t off) {
  return reinterpret_cast<const void *>(reinterpret_cast<uintptr_t>(p) + uintptr_t(off) * sizeof(float));
}

inline v8f load8(const float *p) {
  v8f v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void store8(float *p, v8f v) { std::memcpy(p, &v, sizeof v); }

#if defined(__AVX2__)
/// Lanes [from, to) set, as a mask for AVX2's masked loads.
inline __m256i laneMask(int from, int to) {
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_andnot_si256(_mm256_cmpgt_epi32(_mm256_set1_epi32(from), lane),
                             _mm256_cmpgt_epi32(_mm256_set1_epi32(to), lane));
}
#endif
/// Lanes [from, to) = p[off + from .. off + to), the others 0 (0 <= from
/// <= to <= 8); nothing else is read (p + off may lie before p's buffer).
inline v8f loadRange(const float *p, int64_t off, int from, int to) {
#if defined(__AVX2__)
  v8f v;
  __m256 r = _mm256_maskload_ps(static_cast<const float *>(addrAt(p, off)), laneMask(from, to));
  std::memcpy(&v, &r, sizeof v);
  return v;
#else
  v8f v{};
  for (int l = from; l < to; ++l) v[l] = p[off + l];
  return v;
#endif
}
/// Lanes 0 .. n-1 of v to p[0, n) (0 <= n <= 8); nothing else is written.
/// (In pieces of 4, 2 and 1: AMD cores run AVX2's masked store as a
/// microcoded sequence.)
inline void storeN(float *p, v8f v, int n) {
  if (n == 8) return store8(p, v);
#if defined(__AVX2__)
  __m256 r;
  std::memcpy(&r, &v, sizeof r);
  __m128 h = _mm256_castps256_ps128(r);
  if (n & 4) {
    _mm_storeu_ps(p, h);
    h = _mm256_extractf128_ps(r, 1);
    p += 4;
  }
  if (n & 2) {
    _mm_storel_pi(reinterpret_cast<__m64 *>(p), h);
    h = _mm_movehl_ps(h, h);
    p += 2;
  }
  if (n & 1) _mm_store_ss(p, h);
#else
  std::memcpy(p, &v, size_t(n) * sizeof(float));
#endif
}

/// All lanes = x. (Written out: `v8f{} + x` costs an add, since 0 + x is
/// not x for x = -0.0.)
inline v8f splat(float x) { return v8f{x, x, x, x, x, x, x, x}; }
/// Lane j of the 16 floats (lo, hi) = v.
inline void setLane(v8f &lo, v8f &hi, int j, float v) {
  if (j < 8) lo[j] = v;
  else hi[j - 8] = v;
}
/// min(max(v, lo), hi) lane by lane, NaN kept (as std::min/std::max).
inline v8f vclamp(v8f v, v8f lo, v8f hi) {
  v = v < lo ? lo : v;
  return hi < v ? hi : v;
}

/// Sum of the 8 lanes, in lane order.
inline float hsum(v8f v) {
  float s = 0;
  for (int i = 0; i < 8; ++i) s += v[i];
  return s;
}

/// Lanes I... of the 16 floats (a, b) (lanes 8-15 are b's).
template <int... I> inline v8f shuffle8(v8f a, v8f b) {
  static_assert(sizeof...(I) == 8, "8 lanes");
#if defined(__clang__)
  return __builtin_shufflevector(a, b, I...);
#else
  typedef int v8i __attribute__((vector_size(32)));
  return __builtin_shuffle(a, b, v8i{I...});
#endif
}

/// Lanes Q, Q+2, ..., Q+14 of the 16 floats (a, b): the even (Q = 0) or
/// odd (Q = 1) ones.
template <int Q> inline v8f everyOther(v8f a, v8f b) {
  return shuffle8<Q, Q + 2, Q + 4, Q + 6, Q + 8, Q + 10, Q + 12, Q + 14>(a, b);
}

/// The 8 x 8 transpose of r (r[i][j] -> r[j][i]), in registers.
inline void transpose8(v8f (&r)[8]) {
  v8f t[8], u[8];
  for (int i = 0; i < 8; i += 2) {
    t[i] = shuffle8<0, 8, 1, 9, 4, 12, 5, 13>(r[i], r[i + 1]);
    t[i + 1] = shuffle8<2, 10, 3, 11, 6, 14, 7, 15>(r[i], r[i + 1]);
  }
  for (int i = 0; i < 8; i += 4) {
    u[i] = shuffle8<0, 1, 8, 9, 4, 5, 12, 13>(t[i], t[i + 2]);
    u[i + 1] = shuffle8<2, 3, 10, 11, 6, 7, 14, 15>(t[i], t[i + 2]);
    u[i + 2] = shuffle8<0, 1, 8, 9, 4, 5, 12, 13>(t[i + 1], t[i + 3]);
    u[i + 3] = shuffle8<2, 3, 10, 11, 6, 7, 14, 15>(t[i + 1], t[i + 3]);
  }
  for (int i = 0; i < 4; ++i) {
    r[i] = shuffle8<0, 1, 2, 3, 8, 9, 10, 11>(u[i], u[i + 4]);
    r[i + 4] = shuffle8<4, 5, 6, 7, 12, 13, 14, 15>(u[i], u[i + 4]);
  }
}

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

/// GELU with erf, as ONNX exports it: (x * (erf(x / sqrt(2)) + 1)) * 0.5
/// (x / sqrt(2) taken as x * (1 / sqrt(2))), 8 lanes. erf by Abramowitz &
/// Stegun 7.1.28: 1 - 1 / (1 + a1 s + ... + a6 s^6)^16 for s = |t| (absolute
/// error below 3e-7), with the sign of t: 6 FMAs, 4 squarings and a
/// division, no exp (the power overflows to inf for |t| > ~15, giving erf
/// = 1). 2.1x the throughput of 7.1.26 with its e^(-t^2) (0.22 against 0.46
/// ms for a 128 x 3072 tile set on a Zen 3 core), within 8.7e-7 of GELU in
/// double on [-12, 12] (7.1.26: 4.7e-7). NaN stays NaN.
inline v8f vgelu(v8f x) {
  v8f t = x * splat(0.707106781f), at = t < splat(0.0f) ? -t : t;
  v8f p = splat(0.0000430638f);
  p = p * at + splat(0.0002765672f);
  p = p * at + splat(0.0001520143f);
  p = p * at + splat(0.0092705272f);
  p = p * at + splat(0.0422820123f);
  p = p * at + splat(0.0705230784f);
  p = p * at + splat(1.0f);
  p = p * p; // ^2
  p = p * p; // ^4
  p = p * p; // ^8
  p = p * p; // ^16
  v8f e = splat(1.0f) - splat(1.0f) / p;
  e = t < splat(0.0f) ? -e : e;
  return x * (e + splat(1.0f)) * splat(0.5f);
}

/// Memory for the runtime's large buffers (the arena, the kernels'
/// scratch): blocks of 1 MiB and more are whole 2 MiB pages, 2 MiB-aligned
/// and advised for transparent huge pages (Linux; THP is commonly in
/// madvise mode), so that a kernel walking a conv's channel planes, each a
/// page or more apart, does not miss the TLB at every plane: ResNet-50
/// 0.99x the time at 1 thread with the arena on huge pages, most of its
/// convs 0.97-0.99x. Smaller blocks are 64-byte aligned. Throws
/// std::bad_alloc. (kernels.cpp)
void *allocatePages(size_t bytes);
void freePages(void *p);
template <class T> struct PageAllocator {
  using value_type = T;
  PageAllocator() = default;
  template <class U> PageAllocator(const PageAllocator<U> &) {}
  T *allocate(size_t n) { return static_cast<T *>(allocatePages(n * sizeof(T))); }
  void deallocate(T *p, size_t) { freePages(p); }
  template <class U> bool operator==(const PageAllocator<U> &) const { return true; }
  template <class U> bool operator!=(const PageAllocator<U> &) const { return false; }
};
/// A kernel's scratch buffer.
using Buffer = std::vector<float, PageAllocator<float>>;

/// A per-thread buffer, reused across calls (slots 0-2: GEMM packing and
/// im2col, 2 also Winograd's phase planes, the phase planes of the
/// direct stem and the implicit im2col; 3-4: sparse kernels, 3 also the
/// implicit im2col's wide product (the two never nest); 5-6:
/// Winograd's transformed tiles; 7, 8: a B or A operand packed once for all
/// of a GEMM's tasks; 9: a sparse kernel's input packed once for all its
/// tasks; 10-12: Winograd's phase planes and transformed tiles when each
/// thread runs a band of the conv alone, buffers no other thread writes;
/// 13: a band of a Winograd conv's output that a fused 1x1 conv reads).
Buffer &scratch(int slot);
/// Grows a scratch buffer to at least n floats and returns its data; never
/// shrinks it. (resize() back up after a smaller resize zero-fills the
/// difference, and the slots are shared by kernels of every size: that
/// memset was 0.5-1.1% of a model's time.) The contents are unspecified.
template <class Vec> inline float *grow(Vec &buf, size_t n) {
  if (buf.size() < n) {
    Vec().swap(buf); // no copy of the old contents
    buf.resize(n);
  }
  return buf.data();
}

} // namespace kiln::rt

#endif
