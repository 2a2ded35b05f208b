// AVX-512 forms of the direct 3 x 3 window kernels (window3.h). This file
// is built with -mavx512f -mavx512vl (runtime/CMakeLists.txt) and its
// functions are called only when the CPU has AVX-512F (wideKernels()); the
// rest of the runtime is built for x86-64-v3 (AVX2).
#include "window3.h"

namespace kiln::rt {
namespace {

/// Vectors of L floats (zmm for L = 16, ymm with AVX512VL for L = 8):
/// masks in mask registers, and the lane shuffles of stride 2.
template <int L> struct MaskedVec;
template <> struct MaskedVec<16> {
  static constexpr int L = 16;
  using V = __m512;
  using M = __mmask16;
  static M mask(int64_t a, int64_t b) { return (M)laneMask<L>(a, b); }
  static V load(M m, const float *p) { return _mm512_maskz_loadu_ps(m, p); }
  static V loadFill(M m, const float *p, V fill) { return _mm512_mask_loadu_ps(fill, m, p); }
  /// max(a, v), NaN if either is (maxps returns its second operand then).
  static V maxNaN(V a, V v) { return _mm512_mask_mov_ps(_mm512_max_ps(v, a), _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q), v); }
  static void store(float *p, M m, V v) { _mm512_mask_storeu_ps(p, m, v); }
  static void storeAll(float *p, V v) { _mm512_storeu_ps(p, v); }
  static V splat(float x) { return _mm512_set1_ps(x); }
  static V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  /// min(max(v, lo), hi) with NaN kept (as std::min/std::max).
  static V clamp(V v, V lo, V hi) { return _mm512_min_ps(hi, _mm512_max_ps(lo, v)); }
  /// Lanes Q, Q + 2, ... of (a, b).
  template <int Q> static V phase(V a, V b) {
    const __m512i i = _mm512_setr_epi32(Q, Q + 2, Q + 4, Q + 6, Q + 8, Q + 10, Q + 12, Q + 14, Q + 16, Q + 18,
                                        Q + 20, Q + 22, Q + 24, Q + 26, Q + 28, Q + 30);
    return _mm512_permutex2var_ps(a, i, b);
  }
  /// Lanes N, N + 1, ..., N + 15 of (lo, hi).
  template <int N> static V shift(V lo, V hi) {
    return _mm512_castsi512_ps(_mm512_alignr_epi32(_mm512_castps_si512(hi), _mm512_castps_si512(lo), N));
  }
};
template <> struct MaskedVec<8> {
  static constexpr int L = 8;
  using V = __m256;
  using M = __mmask8;
  static M mask(int64_t a, int64_t b) { return (M)laneMask<L>(a, b); }
  static V load(M m, const float *p) { return _mm256_maskz_loadu_ps(m, p); }
  static V loadFill(M m, const float *p, V fill) { return _mm256_mask_loadu_ps(fill, m, p); }
  static V maxNaN(V a, V v) { return _mm256_mask_mov_ps(_mm256_max_ps(v, a), _mm256_cmp_ps_mask(v, v, _CMP_UNORD_Q), v); }
  static void store(float *p, M m, V v) { _mm256_mask_storeu_ps(p, m, v); }
  static void storeAll(float *p, V v) { _mm256_storeu_ps(p, v); }
  static V splat(float x) { return _mm256_set1_ps(x); }
  static V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static V clamp(V v, V lo, V hi) { return _mm256_min_ps(hi, _mm256_max_ps(lo, v)); }
  template <int Q> static V phase(V a, V b) {
    const __m256i i = _mm256_setr_epi32(Q, Q + 2, Q + 4, Q + 6, Q + 8, Q + 10, Q + 12, Q + 14);
    return _mm256_permutex2var_ps(a, i, b);
  }
  template <int N> static V shift(V lo, V hi) {
    return _mm256_castsi256_ps(_mm256_alignr_epi32(_mm256_castps_si256(hi), _mm256_castps_si256(lo), N));
  }
};

} // namespace

DepthwisePlaneFn depthwisePlaneAvx512(int64_t S, int64_t PL, int64_t H, int64_t W, int64_t OH, int64_t OW) {
  // Rows of at most 8 columns in ymm (half the lanes of a zmm would idle).
  return OW <= 8 ? depthwisePlaneFor<MaskedVec<8>, 7, 4, false>(S, PL, H, W, OH)
                 : depthwisePlaneFor<MaskedVec<16>, 7, 4, false>(S, PL, H, W, OH);
}

DepthwisePlaneFn maxPlaneAvx512(int64_t S, int64_t PL, int64_t H, int64_t W, int64_t OH, int64_t OW) {
  return OW <= 8 ? depthwisePlaneFor<MaskedVec<8>, 7, 4, false, true>(S, PL, H, W, OH)
                 : depthwisePlaneFor<MaskedVec<16>, 7, 4, false, true>(S, PL, H, W, OH);
}

void convSmallC3RowsAvx512(int64_t S, const float *X, const float *wT, const float *Bs, const float *res, float *Y,
                           int64_t C, int64_t H, int64_t W, int64_t F, int64_t OH, int64_t OW, int64_t PT, int64_t PL,
                           float lo, float hi, int64_t oh0, int64_t oh1, int64_t g) {
  using MV = MaskedVec<16>;
  const auto run = S == 1 ? convSmallC3Rows<MV, 1, 0> : PL == 1 ? convSmallC3Rows<MV, 2, 1> : convSmallC3Rows<MV, 2, 0>;
  run(X, wT, Bs, res, Y, C, H, W, F, OH, OW, PT, PL, lo, hi, oh0, oh1, g);
}

} // namespace kiln::rt
