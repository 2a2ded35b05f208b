// Direct 3 x 3 window kernels on NCHW planes, x86-64 only: depthwise
// convolution and the convolution of an image with few channels (a stem),
// straight on the planes, without a padded copy or an im2col matrix; and
// the declarations of the AVX-512 convs of kernels_avx512.cpp that
// kernels.cpp calls (convDirectRowsAvx512: filters in the lanes;
// convPhasedRowsAvx512: 5x5 and 7x7 stems, pixels in the lanes).
//
// They are written once over a vector class MV (L lanes; masked loads and
// stores, FMA, clamp and the lane shuffles of stride 2), so one source
// gives both instruction sets the runtime uses on x86-64:
//   - Avx2Vec (below): 8 lanes, vmaskmovps; the x86-64-v3 level every
//     x86-64 build of kiln targets (kernels.cpp instantiates it);
//   - MaskedVec<16> / MaskedVec<8>: AVX-512 with mask registers, in
//     kernels_avx512.cpp, a translation unit built with -mavx512f
//     -mavx512vl and called only when the CPU has AVX-512F (wideKernels()).
// Everything in this header but the AVX-512 entry points' declarations
// has internal linkage (anonymous namespace), and it calls no library
// function (std::min and the like could be emitted out of line, e.g. in
// a sanitizer build), so the two translation units' copies, compiled for
// different instruction sets, never stand in for each other at link time.
#ifndef KILN_RUNTIME_WINDOW3_H
#define KILN_RUNTIME_WINDOW3_H

#include "simd.h"

#include <cstdint>
#include <immintrin.h>

namespace kiln::rt {

/// One plane of a depthwise 3 x 3 convolution, dilation 1: yc [OH, OW] =
/// clamp(bias + the 9 taps wc of xc [H, W], zero-padded PT rows above and
/// PL columns left).
using DepthwisePlaneFn = void (*)(const float *xc, const float *wc, float bias, float *yc, int64_t H, int64_t W,
                                  int64_t OH, int64_t OW, int64_t PT, int64_t PL, float lo, float hi);
/// The AVX-512 plane kernel for stride S (1, or 2 with PL 0 or 1) at these
/// sizes, or null (kernels_avx512.cpp).
DepthwisePlaneFn depthwisePlaneAvx512(int64_t S, int64_t PL, int64_t H, int64_t W, int64_t OH, int64_t OW);
/// The same for a 3 x 3 max pool (depthwisePlane3's Max form; AVX-512
/// only: CPUs without it keep the channel-block kernel).
DepthwisePlaneFn maxPlaneAvx512(int64_t S, int64_t PL, int64_t H, int64_t W, int64_t OH, int64_t OW);
/// A depthwise 3 x 3 convolution (stride S, dilation 1; bias, then the
/// clamp) of nc <= 16 planes (X, Wt, Bs and Y at the first one), with the
/// channels in the lanes: the planes are transposed 16 pixels at a time
/// into a zero-padded pixel-major buffer, each output is 9 multiply-adds
/// of 16 channels, and the pixel-major result is transposed back into the
/// planes. For small planes, where the per-plane and per-row work of the
/// plane kernels weighs. buf: ((OH - 1) S + 3) ((OW - 1) S + 3) + OH OW
/// vectors of 16 floats.
void depthwise16Avx512(const float *X, const float *Wt, const float *Bs, float *Y, int64_t nc, int64_t H, int64_t W,
                       int64_t OH, int64_t OW, int64_t S, int64_t PT, int64_t PL, float lo, float hi, float *buf);
/// Output rows [oh0, oh1) of filter group g (32 filters) of a KH x KW
/// convolution, stride S (1 or 2), dilation 1, AVX-512, with the filters
/// in the lanes (kernels_avx512.cpp). Xp: the image zero-padded to
/// [C][PH][PW] (the window of output (oh, ow) starts at row oh * S,
/// column ow * S), wide enough for whole tiles of 14 pixels (rows of 7:
/// two rows a tile, oh0 even; an odd last row is computed twice); wT: [group
/// of 32 filters][C * KH * KW][32], zeros past F; rowBuf: 32 *
/// (roundUp(OW, 16) + 16) floats of scratch.
void convDirectRowsAvx512(const float *Xp, const float *wT, const float *Bs, const float *res, float *Y, int64_t C,
                          int64_t PH, int64_t PW, int64_t KH, int64_t KW, int64_t S, int64_t F, int64_t OH, int64_t OW,
                          float lo, float hi, int64_t oh0, int64_t oh1, int64_t g, float *rowBuf);
/// Output rows [oh0, oh1) of filters [32 g, 32 g + 32) of a K x K
/// convolution (K = 5 or 7), stride S (1 or 2), dilation 1, of an image
/// with few channels (a stem), AVX-512, with the pixels in the lanes
/// (kernels_avx512.cpp). ph: the image's S x S phase planes (phasePlanes
/// in kernels.cpp), PH x PW each, PW >= roundUp(OW, 16) + 16; wT: [group
/// of 4 filters][C * K * K][4], zeros past F.
void convPhasedRowsAvx512(int64_t K, int64_t S, const float *ph, int64_t PH, int64_t PW, const float *wT,
                          const float *Bs, const float *res, float *Y, int64_t C, int64_t F, int64_t OH, int64_t OW,
                          float lo, float hi, int64_t oh0, int64_t oh1, int64_t g);
/// Output rows [oh0, oh1) of filter group g (16 filters) of a 3 x 3
/// convolution of an image with C <= 4 channels, AVX-512 (see
/// convSmallC3Rows below; kernels_avx512.cpp).
void convSmallC3RowsAvx512(int64_t S, const float *X, const float *wT, const float *Bs, const float *res, float *Y,
                           int64_t C, int64_t H, int64_t W, int64_t F, int64_t OH, int64_t OW, int64_t PT, int64_t PL,
                           float lo, float hi, int64_t oh0, int64_t oh1, int64_t g);

namespace {

inline int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }
inline int64_t imax(int64_t a, int64_t b) { return a < b ? b : a; }

/// Lanes [a, b) of L set (clipped to [0, L)), as bits.
template <int L> inline unsigned laneMask(int64_t a, int64_t b) {
  a = imax(a, 0), b = imin(b, L);
  if (b <= a) return 0;
  return unsigned(((uint64_t(1) << b) - 1) & ~((uint64_t(1) << a) - 1));
}

/// 8 lanes of AVX2: masks are vectors (the sign bit of each lane) for
/// vmaskmovps, whose masked-off lanes read as zero and never fault.
struct Avx2Vec {
  static constexpr int L = 8;
  using V = __m256;
  using M = __m256i;
  /// Lanes [a, b).
  static M mask(int64_t a, int64_t b) {
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const int32_t lo = int32_t(imin(imax(a, 0), L)), hi = int32_t(imin(imax(b, 0), L));
    return _mm256_and_si256(_mm256_cmpgt_epi32(_mm256_set1_epi32(hi), lane),
                            _mm256_cmpgt_epi32(lane, _mm256_set1_epi32(lo - 1)));
  }
  static V load(M m, const float *p) { return _mm256_maskload_ps(p, m); }
  static void store(float *p, M m, V v) { _mm256_maskstore_ps(p, m, v); }
  static void storeAll(float *p, V v) { _mm256_storeu_ps(p, v); }
  static V splat(float x) { return _mm256_set1_ps(x); }
  static V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  /// min(max(v, lo), hi) with NaN kept (as std::min/std::max): maxps and
  /// minps return their second operand when either is NaN.
  static V clamp(V v, V lo, V hi) { return _mm256_min_ps(hi, _mm256_max_ps(lo, v)); }
  /// Lanes Q, Q + 2, ..., Q + 14 of (a, b).
  template <int Q> static V phase(V a, V b) {
    // In-lane pick of the even (odd) lanes of a and b, then the 64-bit
    // halves put in order: a's 4 first, then b's.
    const V t = Q == 0 ? _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0)) : _mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1));
    return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(t), _MM_SHUFFLE(3, 1, 2, 0)));
  }
  /// Lanes N, N + 1, ..., N + 7 of (lo, hi).
  template <int N> static V shift(V lo, V hi) {
    // mid = lanes 4-11; alignr moves bytes within each 128-bit half.
    const __m256i a = _mm256_castps_si256(lo), b = _mm256_castps_si256(hi);
    const __m256i mid = _mm256_permute2x128_si256(a, b, 0x21);
    if constexpr (N < 4) return _mm256_castsi256_ps(_mm256_alignr_epi8(mid, a, 4 * N));
    else return _mm256_castsi256_ps(_mm256_alignr_epi8(b, mid, 4 * (N - 4)));
  }
};

/// The loads of an input row that give the 3 taps of a 3 x 3 window for
/// output columns j0 + [0, L) (taps3 below): masks and addresses. Stride 1:
/// tap kw reads columns j0 + kw - PL + [0, L). Stride 2: the loads cover
/// columns x0 + [-L, 3L), x0 = 2 * j0. Masked-off lanes (outside [0, W))
/// read as zero: the padding.
template <class MV, int S>
inline void tapLoads(const float *xc, int64_t W, int64_t j0, int64_t PL, typename MV::M (&m)[4],
                     const float *(&base)[4]) {
  constexpr int L = MV::L;
  for (int q = 0; q < 4; ++q) {
    const int64_t x = S == 1 ? j0 + q - PL : 2 * j0 + (q - 1) * L;
    m[q] = MV::mask(-x, W - x);
    base[q] = xc + x;
  }
}

/// v[kw] = the inputs tap kw of a 3-wide window reads for L output
/// columns, from the input row at offset ro (tapLoads' masks and bases).
/// Stride 2: the 2L input columns are split into even and odd lanes; the
/// third tap is the odd (PL 1) or even (PL 0) lanes moved by one with the
/// neighbouring column.
template <class MV, int S, int PL2, bool Max = false>
inline void taps3(const typename MV::M (&m)[4], const float *const (&base)[4], int64_t ro, typename MV::V (&v)[3]) {
  using V = typename MV::V;
  constexpr int L = MV::L;
  // Max (pooling): lanes outside the row read as -inf, not zero.
  auto load = [](typename MV::M mk, const float *p) {
    if constexpr (Max) return MV::loadFill(mk, p, MV::splat(-__builtin_inff()));
    else return MV::load(mk, p);
  };
  if constexpr (S == 1) {
#pragma GCC unroll 4
    for (int kw = 0; kw < 3; ++kw) v[kw] = load(m[kw], base[kw] + ro);
  } else if constexpr (PL2 == 1) { // columns 2ow - 1, 2ow, 2ow + 1
    V a = load(m[1], base[1] + ro), c = load(m[2], base[2] + ro);
    V prev = load(m[0], base[0] + ro);
    v[1] = MV::template phase<0>(a, c);
    v[2] = MV::template phase<1>(a, c);
    v[0] = MV::template shift<L - 1>(prev, v[2]);
  } else { // columns 2ow, 2ow + 1, 2ow + 2
    V a = load(m[1], base[1] + ro), c = load(m[2], base[2] + ro);
    V next = load(m[3], base[3] + ro);
    v[0] = MV::template phase<0>(a, c);
    v[1] = MV::template phase<1>(a, c);
    v[2] = MV::template shift<1>(v[0], next);
  }
}

/// One plane of a depthwise 3 x 3 convolution, dilation 1, stride S (1,
/// or 2 with left padding PL2 = 0 or 1) in both axes, straight on the NCHW
/// plane: each chunk of L output columns of R output rows sums its 9 taps
/// from masked loads of the input rows (masked-off lanes read as zero,
/// which is the padding, and never fault), so there is no padded copy, no
/// transpose and no bounds test inside the loop. The R rows share each
/// loaded input row (a row feeds up to 3 of them); the 9 weights, R
/// accumulators and the 3 tap vectors (taps3) stay in registers (AVX-512's
/// 32; with AVX2's 16 the compiler keeps some weights in memory operands).
/// Bias and clamp in registers; a row's last, partial chunk is stored
/// masked. (A DepthwisePlaneFn.) Max: a 3 x 3 max pool instead (ONNX
/// MaxPool: padding and windows past the plane count as -inf, NaN kept;
/// wc, bias, lo and hi unused).
template <class MV, int S, int R, int PL2, bool RO, bool Max = false>
void depthwisePlane3(const float *xc, const float *wc, float bias, float *yc, int64_t H, int64_t W, int64_t OH,
                     int64_t OW, int64_t PT, int64_t PL, float lo, float hi) {
  using V = typename MV::V;
  using Mk = typename MV::M;
  constexpr int K = 3, L = MV::L, IR = (R - 1) * S + K; // input rows per block of R output rows
  V w[K * K];
  if constexpr (!Max)
    for (int t = 0; t < K * K; ++t) w[t] = MV::splat(wc[t]);
  const V b = MV::splat(Max ? -__builtin_inff() : bias), vlo = MV::splat(lo), vhi = MV::splat(hi);
  // Blocks of L columns x R rows: columns outer (RO false), or rows outer
  // (RO: a plane larger than L1 is then read front to back, once, rather
  // than in column strips that each walk all its rows).
  const int64_t colBlocks = (OW + L - 1) / L, rowBlocks = (OH + R - 1) / R;
  const bool bigPlane = H * W * 4 > 32768;
  for (int64_t outer = 0; outer < (RO ? rowBlocks : colBlocks); ++outer)
    for (int64_t inner = 0; inner < (RO ? colBlocks : rowBlocks); ++inner) {
      const int64_t j0 = (RO ? inner : outer) * L, oh0 = (RO ? outer : inner) * R;
      // The next row block's input rows, this chunk's columns (S lines a
      // row), into L1: a plane larger than L2 comes from L3 or memory,
      // and masked loads that miss wait one by one (Zen 5, in the models:
      // MobileNetV2's 112x112 depthwise convs 0.81-0.92x the time at 1
      // and 2 threads, ResNet-50's max pool 0.79-0.84x; alone with the
      // input cold, its stride-2 96-channel one 0.72-0.9x). Planes past
      // 32 KB only.
      for (int i = 0; i < (bigPlane ? IR : 0); ++i) {
        const int64_t ih = (oh0 + R) * S - PT + i;
        if (ih < 0 || ih >= H) continue;
        __builtin_prefetch(addrAt(xc, ih * W + S * j0));
        if (S == 2) __builtin_prefetch(addrAt(xc, ih * W + S * j0 + L));
      }
      Mk m[4];
      const float *base[4];
      tapLoads<MV, S>(xc, W, j0, PL, m, base);
      const bool full = j0 + L <= OW;
      const Mk sm = MV::mask(0, OW - j0);
      const int rows = int(imin(R, OH - oh0));
      V acc[R];
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) acc[r] = b;
#pragma GCC unroll 16
      for (int i = 0; i < IR; ++i) {
        const int64_t ih = oh0 * S - PT + i;
        if (ih < 0 || ih >= H) continue;
        V v[K];
        taps3<MV, S, PL2, Max>(m, base, ih * W, v);
#pragma GCC unroll 4
        for (int kw = 0; kw < K; ++kw) {
#pragma GCC unroll 8
          for (int r = 0; r < R; ++r) {
            const int kh = i - r * S;
            if (kh >= 0 && kh < K) {
              if constexpr (Max) acc[r] = MV::maxNaN(acc[r], v[kw]);
              else acc[r] = MV::fma(w[kh * K + kw], v[kw], acc[r]);
            }
          }
        }
      }
      // (R, not rows, as the bound: a constant trip count unrolls fully, so
      // acc stays in registers; a variable one kept it in memory.)
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        if (r >= rows) break;
        float *y = yc + (oh0 + r) * OW + j0;
        const V out = Max ? acc[r] : MV::clamp(acc[r], vlo, vhi);
        if (full) MV::storeAll(y, out);
        else MV::store(y, sm, out);
      }
    }
}

/// The depthwisePlane3 form for this geometry with vectors MV: blocks of
/// R7 rows where they divide the plane (MobileNet's 112 ... 7; R7 = 7
/// with AVX-512's 32 registers, fewer with AVX2's 16), else R4; rows
/// outer when the input plane does not fit in L1, at stride 1, and at
/// stride 2 too if RO2 (AVX2's strips of 8 columns would each walk the
/// plane's rows: MobileNetV2's 112x112 stride-2 layer 1.9x slower in the
/// model with columns outer; AVX-512's strips of 16 were 3-8% faster
/// columns outer). Null for a geometry it does not cover (stride 2 needs
/// PL 0 or 1).
template <class MV, int R7, int R4, bool RO2, bool Max = false>
DepthwisePlaneFn depthwisePlaneFor(int64_t S, int64_t PL, int64_t H, int64_t W, int64_t OH) {
  const bool r7 = OH % R7 == 0, rowsOuter = (S == 1 || RO2) && H * W * 4 > 32768;
  if (S == 1)
    return rowsOuter ? (r7 ? depthwisePlane3<MV, 1, R7, 0, true, Max> : depthwisePlane3<MV, 1, R4, 0, true, Max>)
                     : (r7 ? depthwisePlane3<MV, 1, R7, 0, false, Max> : depthwisePlane3<MV, 1, R4, 0, false, Max>);
  if (S != 2 || PL > 1) return nullptr;
  if (rowsOuter)
    return PL == 0 ? (r7 ? depthwisePlane3<MV, 2, R7, 0, true, Max> : depthwisePlane3<MV, 2, R4, 0, true, Max>)
                   : (r7 ? depthwisePlane3<MV, 2, R7, 1, true, Max> : depthwisePlane3<MV, 2, R4, 1, true, Max>);
  return PL == 0 ? (r7 ? depthwisePlane3<MV, 2, R7, 0, false, Max> : depthwisePlane3<MV, 2, R4, 0, false, Max>)
                 : (r7 ? depthwisePlane3<MV, 2, R7, 1, false, Max> : depthwisePlane3<MV, 2, R4, 1, false, Max>);
}

/// A 3 x 3 convolution (dilation 1; stride 1, or 2 with left padding PL2
/// = 0 or 1) of an image with few channels (C <= 4: a network's stem, e.g.
/// MobileNetV2's 3 -> 32 at 224 x 224), straight on the NCHW planes,
/// without an im2col matrix: for each output row and chunk of L columns,
/// the C * 9 tap vectors (taps3) are each multiplied into L filters'
/// accumulators at once (weights broadcast from wT, laid out [filter group
/// of L][C * 9][L], zeros past F); (acc + bias) + residual, then the
/// clamp, as the conv's epilogue. Here output rows [oh0, oh1) of filter
/// group g.
template <class MV, int S, int PL2>
void convSmallC3Rows(const float *X, const float *wT, const float *Bs, const float *res, float *Y, int64_t C,
                     int64_t H, int64_t W, int64_t F, int64_t OH, int64_t OW, int64_t PT, int64_t PL, float lo,
                     float hi, int64_t oh0, int64_t oh1, int64_t g) {
  using V = typename MV::V;
  constexpr int L = MV::L;
  const int64_t OHW = OH * OW, f0 = g * L, nf = imin(L, F - f0);
  const float *wg = wT + g * C * 9 * L;
  const V vlo = MV::splat(lo), vhi = MV::splat(hi);
  for (int64_t oh = oh0; oh < oh1; ++oh)
    for (int64_t j0 = 0; j0 < OW; j0 += L) {
      typename MV::M m[4];
      const float *base[4];
      tapLoads<MV, S>(X, W, j0, PL, m, base);
      const bool full = j0 + L <= OW;
      const typename MV::M sm = MV::mask(0, OW - j0);
      // The input rows of output row oh + 2, into L1 (this chunk's
      // columns: S lines a row). A model's input is often cold (written
      // long before the run), and masked loads that miss wait one by
      // one: MobileNetV2's stem took 0.40 ms with its input evicted, 0.13
      // with it cached (Zen 5).
      if (g == 0 && oh + 2 < OH)
        for (int64_t c = 0; c < C; ++c)
          for (int kh = 0; kh < 3; ++kh) {
            const int64_t ih = (oh + 2) * S - PT + kh;
            if (ih < 0 || ih >= H) continue;
            __builtin_prefetch(addrAt(X, (c * H + ih) * W + S * j0));
            if (S == 2) __builtin_prefetch(addrAt(X, (c * H + ih) * W + S * j0 + L));
          }
      V acc[L];
#pragma GCC unroll 16
      for (int f = 0; f < L; ++f) acc[f] = MV::splat(Bs && f < nf ? Bs[f0 + f] : 0.0f);
      for (int64_t c = 0; c < C; ++c)
        for (int kh = 0; kh < 3; ++kh) {
          const int64_t ih = oh * S - PT + kh;
          if (ih < 0 || ih >= H) continue;
          V v[3];
          taps3<MV, S, PL2>(m, base, (c * H + ih) * W, v);
          const float *wk = wg + (c * 9 + kh * 3) * L;
#pragma GCC unroll 4
          for (int kw = 0; kw < 3; ++kw)
#pragma GCC unroll 16
            for (int f = 0; f < L; ++f) acc[f] = MV::fma(MV::splat(wk[kw * L + f]), v[kw], acc[f]);
        }
      // f a constant (unrolled): acc indexed at run time would live in memory.
#pragma GCC unroll 16
      for (int f = 0; f < L; ++f) {
        if (f >= nf) break;
        const int64_t o = (f0 + f) * OHW + oh * OW + j0;
        V a = acc[f];
        if (res) a = a + MV::load(sm, res + o);
        if (full) MV::storeAll(Y + o, MV::clamp(a, vlo, vhi));
        else MV::store(Y + o, sm, MV::clamp(a, vlo, vhi));
      }
    }
}

} // namespace
} // namespace kiln::rt

#endif
