// AVX-512 forms of the direct 3 x 3 window kernels (window3.h), and the
// direct conv with 32 filters in the lanes (convDirectRowsAvx512). This file
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

/// 16 x 16 floats transposed in registers: r[i] lane j becomes r[j] lane i.
inline void transpose16(__m512 r[16]) {
  __m512 t[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  // r[4i + e], 128-bit lane L: element 4L + e of rows 4i .. 4i + 3.
  for (int i = 0; i < 4; ++i) {
    r[4 * i] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
    r[4 * i + 1] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0xEE);
    r[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
    r[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
  }
  __m512 o[16];
  for (int e = 0; e < 4; ++e) {
    const __m512 ab02 = _mm512_shuffle_f32x4(r[e], r[4 + e], 0x88), ab13 = _mm512_shuffle_f32x4(r[e], r[4 + e], 0xDD);
    const __m512 cd02 = _mm512_shuffle_f32x4(r[8 + e], r[12 + e], 0x88),
                 cd13 = _mm512_shuffle_f32x4(r[8 + e], r[12 + e], 0xDD);
    o[e] = _mm512_shuffle_f32x4(ab02, cd02, 0x88);
    o[8 + e] = _mm512_shuffle_f32x4(ab02, cd02, 0xDD);
    o[4 + e] = _mm512_shuffle_f32x4(ab13, cd13, 0x88);
    o[12 + e] = _mm512_shuffle_f32x4(ab13, cd13, 0xDD);
  }
  for (int i = 0; i < 16; ++i) r[i] = o[i];
}

/// R output pixels x 32 filters in 2R accumulators: per tap, 2 weight
/// loads and R broadcasts for 2R FMAs. Pixels 0 .. N1 - 1 read the padded
/// image from xa, the rest from xb (the next output row's window, for rows
/// narrower than the tile), S apart; each at (channel 0, the window's
/// first row and column). out: R rows of 32 floats (pixel-major). KWc:
/// the window's width where known here (its loop unrolled: ResNet-50's
/// 28x28 stride-2 3x3 conv 0.95x the time, the 7x7 one 0.92x).
/// Prefetches: the next channel's rows of the window (0.92x the time on
/// the 28x28 one) and, with prefetchW (a group's weights past L1's reach,
/// e.g. 512 channels x 9 taps x 32 filters: 590 KB), the weights 32 taps
/// (4 KB) on. In ResNet-50, where the 7x7 one's weights come from memory,
/// that took 0.9x the time of 8 taps on, 0.85-0.9x at 2 threads (alone,
/// with its weights in L2, 1.03x); without it, 1.1x. The 28x28 one's
/// (147 KB) and the stem's (in L1) gained nothing from it.
template <int R, int S, int N1, int KWc>
inline void directTile(const float *xa, const float *xb, int64_t planeStride, int64_t rowStride, int64_t C,
                       int64_t KH, int64_t KWr, const float *w, float *out, bool prefetchW) {
  const int64_t KW = KWc ? KWc : KWr; // a window width known here: its loop unrolled
  __m512 acc[R][2];
  for (int j = 0; j < R; ++j) acc[j][0] = acc[j][1] = _mm512_setzero_ps();
  for (int64_t c = 0; c < C; ++c)
    for (int64_t kh = 0; kh < KH; ++kh) {
      const int64_t at = c * planeStride + kh * rowStride;
      // (Addresses past the image when c is the last: prefetches never fault.)
      _mm_prefetch((const char *)addrAt(xa, at + planeStride), _MM_HINT_T0);
      _mm_prefetch((const char *)addrAt(xa, at + planeStride + 16), _MM_HINT_T0);
      if (N1 < R) _mm_prefetch((const char *)addrAt(xb, at + planeStride), _MM_HINT_T0);
      for (int64_t kw = 0; kw < KW; ++kw, w += 32) {
        const __m512 w0 = _mm512_loadu_ps(w), w1 = _mm512_loadu_ps(w + 16);
        if (prefetchW) {
          _mm_prefetch((const char *)addrAt(w, 32 * 32), _MM_HINT_T0);
          _mm_prefetch((const char *)addrAt(w, 32 * 32 + 16), _MM_HINT_T0);
        }
        // Opaque to the compiler: otherwise it sees that tap kw + S reads
        // what tap kw read one pixel on, and keeps those broadcasts from
        // one tap to the next, spilling them (1.7x the time).
        const float *pa = xa + at + kw, *pb = xb + at + kw;
        asm("" : "+r"(pa), "+r"(pb));
        for (int j = 0; j < R; ++j) {
          const __m512 xv = _mm512_set1_ps(j < N1 ? pa[j * S] : pb[(j - N1) * S]);
          acc[j][0] = _mm512_fmadd_ps(xv, w0, acc[j][0]);
          acc[j][1] = _mm512_fmadd_ps(xv, w1, acc[j][1]);
        }
      }
    }
  for (int j = 0; j < R; ++j) {
    _mm512_storeu_ps(out + j * 32, acc[j][0]);
    _mm512_storeu_ps(out + j * 32 + 16, acc[j][1]);
  }
}

} // namespace

void convDirectRowsAvx512(const float *Xp, const float *wT, const float *Bs, const float *res, float *Y, int64_t C,
                          int64_t PH, int64_t PW, int64_t KH, int64_t KW, int64_t S, int64_t F, int64_t OH, int64_t OW,
                          float lo, float hi, int64_t oh0, int64_t oh1, int64_t g, float *rowBuf) {
  constexpr int R = 14; // 28 accumulators, 2 weight vectors and a broadcast: 31 of the 32 zmm
  const float *w = wT + g * C * KH * KW * 32;
  const __m512 vlo = _mm512_set1_ps(lo), vhi = _mm512_set1_ps(hi);
  const int64_t band = OW == 7 ? 2 : 1; // rows per step: 7-wide rows two to a tile
  using Tile = void (*)(const float *, const float *, int64_t, int64_t, int64_t, int64_t, int64_t, const float *,
                        float *, bool);
  const bool prefetchW = C * KH * KW * 32 * 4 > 256 * 1024;
  auto pick = [](int64_t S, int64_t KW, bool two) -> Tile {
    if (two)
      return S == 1 ? (KW == 3 ? directTile<R, 1, 7, 3> : directTile<R, 1, 7, 0>)
                    : (KW == 3 ? directTile<R, 2, 7, 3> : directTile<R, 2, 7, 0>);
    return S == 1 ? (KW == 3 ? directTile<R, 1, R, 3> : KW == 7 ? directTile<R, 1, R, 7> : directTile<R, 1, R, 0>)
                  : (KW == 3 ? directTile<R, 2, R, 3> : KW == 7 ? directTile<R, 2, R, 7> : directTile<R, 2, R, 0>);
  };
  for (int64_t oh = oh0; oh < oh1; oh += band) {
    // The band's pixels, pixel-major: rowBuf[r * OW + ow][32].
    const float *x = Xp + oh * S * PW;
    if (band == 2) // (past the last row, the band reads its first row twice)
      pick(S, KW, true)(x, oh + 1 < OH ? x + S * PW : x, PH * PW, PW, C, KH, KW, w, rowBuf, prefetchW);
    else
      for (int64_t ow = 0; ow < OW; ow += R)
        pick(S, KW, false)(x + ow * S, x, PH * PW, PW, C, KH, KW, w, rowBuf + ow * 32, prefetchW);
    // Back to planes, 16 pixels x 16 filters at a time; the epilogue
    // (bias, residual, clamp) on the way.
    for (int64_t r = 0; r < band && oh + r < oh1; ++r)
      for (int64_t p0 = 0; p0 < OW; p0 += 16) {
        const int64_t n = OW - p0 < 16 ? OW - p0 : 16;
        const __mmask16 m = (__mmask16)(n == 16 ? 0xFFFF : (1u << n) - 1);
        for (int h = 0; h < 2; ++h) {
          const int64_t f0 = g * 32 + h * 16;
          if (f0 >= F) break;
          __m512 v[16];
          for (int i = 0; i < 16; ++i) v[i] = _mm512_loadu_ps(rowBuf + (r * OW + p0 + i) * 32 + h * 16);
          transpose16(v);
          for (int f = 0; f < 16 && f0 + f < F; ++f) {
            const int64_t at = ((f0 + f) * OH + oh + r) * OW + p0;
            __m512 y = _mm512_add_ps(v[f], _mm512_set1_ps(Bs ? Bs[f0 + f] : 0.0f));
            if (res) y = _mm512_add_ps(y, _mm512_maskz_loadu_ps(m, res + at));
            _mm512_mask_storeu_ps(Y + at, m, _mm512_min_ps(vhi, _mm512_max_ps(vlo, y)));
          }
        }
      }
  }
}

namespace {
/// 4 filters x V vectors of 16 output pixels of one row, in 4 V
/// accumulators: per tap, V loads of the tap's phase plane (unit stride)
/// and 4 broadcasts of the filters' weights for 4 V FMAs. p: the phase
/// planes at (channel 0, this row, the tile's first column); w: the 4
/// filters' weights [C * K * K][4]. Bias, residual and clamp on the way
/// out; n: the pixels stored (the last vector masked).
template <int K, int S, int V>
inline void phasedTile(const float *p, int64_t PS, int64_t PW, const float *w, int64_t C, const float *bias,
                       const float *res, float *y, int64_t OHW, int nf, int64_t n, __m512 vlo, __m512 vhi) {
  __m512 acc[4][V];
  for (int f = 0; f < 4; ++f)
    for (int v = 0; v < V; ++v) acc[f][v] = _mm512_set1_ps(f < nf && bias ? bias[f] : 0.0f);
  for (int64_t c = 0; c < C; ++c)
    for (int kh = 0; kh < K; ++kh, w += K * 4) {
      // The row's two column phases (one at stride 1): every tap of the
      // row is then a constant offset from one of them. (Opaque to the
      // compiler: otherwise it precomputes every tap's address across
      // the rows and keeps them on the stack, a load per load.)
      const float *r0 = p + (c * S * S + (kh % S) * S) * PS + (kh / S) * PW, *r1 = S == 2 ? r0 + PS : r0;
      asm("" : "+r"(r0), "+r"(r1));
#pragma GCC unroll 7
      for (int kw = 0; kw < K; ++kw) {
        const float *t = (kw % S ? r1 : r0) + kw / S;
        __m512 x[V];
        for (int v = 0; v < V; ++v) x[v] = _mm512_loadu_ps(t + 16 * v);
        for (int f = 0; f < 4; ++f) {
          const __m512 wf = _mm512_set1_ps(w[kw * 4 + f]);
          for (int v = 0; v < V; ++v) acc[f][v] = _mm512_fmadd_ps(wf, x[v], acc[f][v]);
        }
      }
    }
  const __mmask16 last = __mmask16(n - 16 * (V - 1) >= 16 ? 0xFFFF : (1u << (n - 16 * (V - 1))) - 1);
  for (int f = 0; f < 4; ++f) {
    if (f >= nf) break;
    for (int v = 0; v < V; ++v) {
      const __mmask16 m = v == V - 1 ? last : __mmask16(0xFFFF);
      __m512 a = acc[f][v];
      if (res) a = _mm512_add_ps(a, _mm512_maskz_loadu_ps(m, res + f * OHW + 16 * v));
      _mm512_mask_storeu_ps(y + f * OHW + 16 * v, m, _mm512_min_ps(vhi, _mm512_max_ps(vlo, a)));
    }
  }
}

template <int K, int S>
void phasedRows(const float *ph, int64_t PH, int64_t PW, const float *wT, const float *Bs, const float *res, float *Y,
                int64_t C, int64_t F, int64_t OH, int64_t OW, float lo, float hi, int64_t oh0, int64_t oh1, int64_t g) {
  const int64_t PS = PH * PW, OHW = OH * OW;
  const __m512 vlo = _mm512_set1_ps(lo), vhi = _mm512_set1_ps(hi);
  for (int64_t oh = oh0; oh < oh1; ++oh)
    for (int64_t f0 = 32 * g; f0 < imin(F, 32 * g + 32); f0 += 4) {
      const float *w = wT + f0 / 4 * C * K * K * 4, *bias = Bs ? Bs + f0 : nullptr;
      const int nf = int(imin(4, F - f0));
      // Runs of 4 vectors (64 pixels), the last of 1-4.
      for (int64_t j0 = 0; j0 < OW; j0 += 64) {
        const int64_t n = imin(64, OW - j0), at = f0 * OHW + oh * OW + j0;
        const float *p = ph + oh * PW + j0;
        const float *r = res ? res + at : nullptr;
        switch ((n + 15) / 16) {
        case 4: phasedTile<K, S, 4>(p, PS, PW, w, C, bias, r, Y + at, OHW, nf, n, vlo, vhi); break;
        case 3: phasedTile<K, S, 3>(p, PS, PW, w, C, bias, r, Y + at, OHW, nf, n, vlo, vhi); break;
        case 2: phasedTile<K, S, 2>(p, PS, PW, w, C, bias, r, Y + at, OHW, nf, n, vlo, vhi); break;
        default: phasedTile<K, S, 1>(p, PS, PW, w, C, bias, r, Y + at, OHW, nf, n, vlo, vhi); break;
        }
      }
    }
}
} // namespace

void convPhasedRowsAvx512(int64_t K, int64_t S, const float *ph, int64_t PH, int64_t PW, const float *wT,
                          const float *Bs, const float *res, float *Y, int64_t C, int64_t F, int64_t OH, int64_t OW,
                          float lo, float hi, int64_t oh0, int64_t oh1, int64_t g) {
  const auto run = K == 7 ? (S == 1 ? phasedRows<7, 1> : phasedRows<7, 2>)
                          : (S == 1 ? phasedRows<5, 1> : phasedRows<5, 2>);
  run(ph, PH, PW, wT, Bs, res, Y, C, F, OH, OW, lo, hi, oh0, oh1, g);
}

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

void depthwise16Avx512(const float *X, const float *Wt, const float *Bs, float *Y, int64_t nc, int64_t H, int64_t W,
                       int64_t OH, int64_t OW, int64_t S, int64_t PT, int64_t PL, float lo, float hi, float *buf) {
  const int64_t HW = H * W, OHW = OH * OW, Hp = (OH - 1) * S + 3, Wp = (OW - 1) * S + 3;
  float *P = buf, *O = buf + Hp * Wp * 16;
  for (int64_t i = 0; i < Hp * Wp; ++i) _mm512_storeu_ps(P + i * 16, _mm512_setzero_ps());
  __m512 v[16];
  // In: 16 pixels of the nc planes at a time, transposed to pixel-major.
  for (int64_t p0 = 0, ih = 0, iw = 0; p0 < HW; p0 += 16) {
    const int64_t np = imin(16, HW - p0);
    const __mmask16 pm = __mmask16((1u << np) - 1);
    for (int i = 0; i < 16; ++i) v[i] = i < nc ? _mm512_maskz_loadu_ps(pm, X + i * HW + p0) : _mm512_setzero_ps();
    transpose16(v);
    for (int j = 0; j < np; ++j) {
      const int64_t r = ih + PT, q = iw + PL;
      if (r < Hp && q < Wp) _mm512_storeu_ps(P + (r * Wp + q) * 16, v[j]);
      if (++iw == W) iw = 0, ++ih;
    }
  }
  __m512 w[9];
  for (int t = 0; t < 9; ++t) {
    alignas(64) float wt[16] = {};
    for (int k = 0; k < nc; ++k) wt[k] = Wt[k * 9 + t];
    w[t] = _mm512_load_ps(wt);
  }
  alignas(64) float bt[16] = {};
  for (int k = 0; k < nc && Bs; ++k) bt[k] = Bs[k];
  const __m512 b = _mm512_load_ps(bt), vlo = _mm512_set1_ps(lo), vhi = _mm512_set1_ps(hi);
  for (int64_t oh = 0; oh < OH; ++oh)
    for (int64_t ow = 0; ow < OW; ++ow) {
      const float *pp = P + (oh * S * Wp + ow * S) * 16;
      __m512 acc = b;
#pragma GCC unroll 3
      for (int kh = 0; kh < 3; ++kh)
#pragma GCC unroll 3
        for (int kw = 0; kw < 3; ++kw) acc = _mm512_fmadd_ps(_mm512_loadu_ps(pp + (kh * Wp + kw) * 16), w[kh * 3 + kw], acc);
      _mm512_storeu_ps(O + (oh * OW + ow) * 16, _mm512_min_ps(vhi, _mm512_max_ps(vlo, acc)));
    }
  // Out: 16 pixels at a time, transposed back to the nc planes.
  for (int64_t p0 = 0; p0 < OHW; p0 += 16) {
    const int64_t np = imin(16, OHW - p0);
    const __mmask16 pm = __mmask16((1u << np) - 1);
    for (int j = 0; j < 16; ++j) v[j] = j < np ? _mm512_loadu_ps(O + (p0 + j) * 16) : _mm512_setzero_ps();
    transpose16(v);
    for (int f = 0; f < nc; ++f) _mm512_mask_storeu_ps(Y + f * OHW + p0, pm, v[f]);
  }
}

} // namespace kiln::rt
