// Winograd F(m x m, 3 x 3) convolution for 3x3, stride-1, undilated,
// ungrouped convs whose weights the compiler transformed and packed
// (kiln/winograd_layout.h). Per image:
//   1. the input is copied, zero-padded, into channels-last order
//      [Hp][Wp][Cp], so the a x a input tile of 8 channels is a row of
//      vector loads;
//   2. each tile's V = B^T d B is computed for 8 channels at a time (one
//      v8f lane per channel) and stored as V_xi[tile][channel] (packed for
//      the GEMM, or in rows: see step 2);
//   3. a*a GEMMs (parallel over xi) M_xi[T, F] = V_xi[T, C] * U_xi[C, F],
//      U_xi packed at compile time;
//   4. each tile's Y = A^T M A is computed for 8 filters at a time, with the
//      bias, the residual and the clamp applied before it is stored.
#include "kernels.h"
#include "kiln/gemm_layout.h"
#include "kiln/winograd_layout.h"
#include "simd.h"
#include "thread_pool.h"

#include <algorithm>
#include <cstring>
#include <vector>

namespace kiln::rt {
namespace {

/// sum over k of c[k] * at(k) for a row c of constants: zero terms
/// skipped, +-1 not multiplied (the loops unroll, so c[k] is known).
template <int A, typename F>
__attribute__((always_inline)) inline v8f combine(const float (&c)[A], F at) {
  v8f s{};
  bool first = true;
#pragma GCC unroll 8
  for (int k = 0; k < A; ++k) {
    if (c[k] == 0.0f) continue;
    v8f t = c[k] == 1.0f ? at(k) : c[k] == -1.0f ? -at(k) : splat(c[k]) * at(k);
    s = first ? t : s + t;
    first = false;
  }
  return s;
}

/// out = L * in * R^T (L: R1 x A, in: A x A, R: R2 x A), by the two
/// one-sided products.
template <int R1, int R2, int A>
__attribute__((always_inline)) inline void sandwich(const float (&L)[R1][A], const v8f (&in)[A][A],
                                                    const float (&R)[R2][A], v8f (&out)[R1][R2]) {
  v8f t[R1][A];
#pragma GCC unroll 8
  for (int i = 0; i < R1; ++i)
#pragma GCC unroll 8
    for (int j = 0; j < A; ++j) t[i][j] = combine(L[i], [&](int k) { return in[k][j]; });
#pragma GCC unroll 8
  for (int i = 0; i < R1; ++i)
#pragma GCC unroll 8
    for (int j = 0; j < R2; ++j) out[i][j] = combine(R[j], [&](int k) { return t[i][k]; });
}

template <int M>
void winogradConv(const float *X, const float *U, const float *bias, const float *res, float *Y, int64_t N,
                  int64_t C, int64_t H, int64_t W, int64_t F, int64_t OH, int64_t OW, int64_t PT, int64_t PL,
                  float lo, float hi) {
  using Mx = winograd::Matrices<M>;
  constexpr int A = Mx::A, AA = A * A;
  const int64_t TH = (OH + M - 1) / M, TW = (OW + M - 1) / M, T = TH * TW;
  const int64_t Cp = gemm::roundUp(C, 8), Fp = gemm::roundUp(F, 8);
  const int64_t Hp = TH * M + 2, Wp = TW * M + 2; // padded input rows/columns the tiles read
  const int64_t uStride = gemm::packedBSize(C, F);
  std::vector<float> &xt = scratch(2); // [Hp][Wp][Cp]
  // V_xi's layout (step 2): packed for the GEMM, or rows of channels
  // where the products are wide (vRows, below).
  const bool vRows = F >= 128 && currentThreads() == 1;
  const int64_t vStride = vRows ? T * Cp : gemm::packedASize(T, C);
  std::vector<float> &v = scratch(5), &m = scratch(6); // [xi][V_xi], [xi][T][Fp]
  grow(xt, size_t(Hp) * Wp * Cp);
  grow(v, size_t(AA) * vStride);
  grow(m, size_t(AA) * T * Fp);
  for (int64_t n = 0; n < N; ++n) {
    const float *x = X + n * C * H * W;
    // 1. Channels-last copy with zero padding, by rows of the padded image.
    parallelFor(Hp, [&](int64_t r) {
      float *dst = xt.data() + r * Wp * Cp;
      int64_t ih = r - PT;
      if (ih < 0 || ih >= H) {
        std::fill(dst, dst + Wp * Cp, 0.0f);
        return;
      }
      // Columns [qa, qb) read the input (padded column q = input column
      // q - PL); 8 columns x 8 channels at a time go through a register
      // transpose (one load per channel row instead of a gather per value).
      const int64_t qa = std::min(Wp, std::max<int64_t>(0, PL)), qb = std::max(qa, std::min(Wp, W + PL));
      const int64_t C8 = C / 8 * 8;
      std::fill(dst, dst + qa * Cp, 0.0f);
      std::fill(dst + qb * Cp, dst + Wp * Cp, 0.0f);
      const float *xr = x + ih * W; // column q reads xr[q - PL]
      int64_t q = qa;
      for (; q + 8 <= qb; q += 8) {
        for (int64_t c0 = 0; c0 < C8; c0 += 8) {
          v8f v[8];
          for (int k = 0; k < 8; ++k) v[k] = load8(xr + (c0 + k) * H * W + (q - PL));
          transpose8(v);
          for (int j = 0; j < 8; ++j) store8(dst + (q + j) * Cp + c0, v[j]);
        }
        for (int j = 0; j < 8; ++j) {
          float *d = dst + (q + j) * Cp;
          for (int64_t c = C8; c < C; ++c) d[c] = xr[c * H * W + (q + j - PL)];
          for (int64_t c = C; c < Cp; ++c) d[c] = 0.0f;
        }
      }
      for (; q < qb; ++q) {
        float *d = dst + q * Cp;
        for (int64_t c = 0; c < C; ++c) d[c] = xr[c * H * W + (q - PL)];
        for (int64_t c = C; c < Cp; ++c) d[c] = 0.0f;
      }
    });
    // 2. Input transform, 8 channels per step. V_xi (rows: tiles, K:
    // channels) is written either straight in the GEMM's packed-A layout,
    // so the GEMMs pack nothing but each value is a store of its own; or,
    // at 1 thread where the products are wide (vRows: F >= 128), as rows
    // of Cp channels, a vector per store, which the GEMMs pack as they go
    // (per task, once for all F columns). Alternating profiles, ResNet-50
    // (Zen 5): at 1 thread vRows took 0.91-0.96x the time on the 14x14
    // convs (F = 256), 0.93-0.95x on the 7x7 ones (512), 0.96-1.02x on the
    // 28x28 ones (128), but 1.08-1.23x on the 56x56 ones (64: packing
    // weighs against 64 columns); at 2 threads (the GEMMs split by xi, so
    // each packs rows that the other core transformed) 1.00-1.03x on the
    // 28x28 and 14x14 ones. Packed: rows past T in the last panel are
    // never written (the GEMM discards their results). A task is one panel
    // of MR tiles and up to 64 channels, so tasks write disjoint cache
    // lines (with a task per tile, two threads wrote neighbouring floats
    // of one panel).
    const int64_t panels = (T + gemm::MR - 1) / gemm::MR, cGroups = (C + 63) / 64;
    parallelFor(panels * cGroups, [&](int64_t task) {
      const int64_t t0 = task / cGroups * gemm::MR, c1 = std::min(C, (task % cGroups + 1) * 64);
      for (int64_t t = t0; t < std::min(T, t0 + gemm::MR); ++t) {
        int64_t r0 = (t / TW) * M, q0 = (t % TW) * M;
        for (int64_t c0 = task % cGroups * 64; c0 < c1; c0 += 8) {
          v8f d[A][A], vv[A][A];
          for (int i = 0; i < A; ++i)
            for (int j = 0; j < A; ++j) d[i][j] = load8(xt.data() + ((r0 + i) * Wp + q0 + j) * Cp + c0);
          sandwich(Mx::BT, d, Mx::BT, vv);
          if (vRows) { // (channels C..c0+7: transforms of the zero padding)
            for (int i = 0; i < A; ++i)
              for (int j = 0; j < A; ++j) store8(v.data() + (i * A + j) * vStride + t * Cp + c0, vv[i][j]);
            continue;
          }
          // Channels c0..c0+7 lie in one K block (KC is a multiple of 8).
          int64_t k0 = c0 / gemm::KC * gemm::KC, kc = std::min(gemm::KC, C - k0);
          float *p = v.data() + k0 * gemm::roundUp(T, gemm::MR) + (t / gemm::MR) * gemm::MR * kc +
                     (c0 - k0) * gemm::MR + t % gemm::MR;
          int nc = int(std::min<int64_t>(8, C - c0));
          for (int i = 0; i < A; ++i)
            for (int j = 0; j < A; ++j)
              for (int k = 0; k < nc; ++k) p[(i * A + j) * vStride + k * gemm::MR] = vv[i][j][k];
        }
      }
    });
    // 3. One GEMM per transformed position (each serial inside), U packed
    // at compile time, V packed here or by the GEMM (vRows).
    parallelFor(AA, [&](int64_t xi) {
      if (vRows) // (U is packed in K blocks of KC)
        sgemm(T, F, C, v.data() + xi * vStride, Cp, false, nullptr, 0, false, m.data() + xi * T * Fp, Fp, nullptr,
              nullptr, U + xi * uStride, gemm::KC);
      else
        sgemm(T, F, C, nullptr, 0, false, nullptr, 0, false, m.data() + xi * T * Fp, Fp, nullptr,
              v.data() + xi * vStride, U + xi * uStride);
    });
    // 4. Output transform, 8 filters per step, epilogue, store: tile t,
    // filters [fBegin, fEnd).
    float *y = Y + n * F * OH * OW;
    const float *rn = res ? res + n * F * OH * OW : nullptr;
    auto outputTile = [&](int64_t t, int64_t fBegin, int64_t fEnd) {
      int64_t oh0 = (t / TW) * M, ow0 = (t % TW) * M;
      int rows = int(std::min<int64_t>(M, OH - oh0)), cols = int(std::min<int64_t>(M, OW - ow0));
      for (int64_t f0 = fBegin; f0 < fEnd; f0 += 8) {
        int nf = int(std::min<int64_t>(8, F - f0));
        v8f mm[A][A], yy[M][M];
        for (int i = 0; i < A; ++i)
          for (int j = 0; j < A; ++j) mm[i][j] = load8(m.data() + (size_t(i * A + j) * T + t) * Fp + f0);
        sandwich(Mx::AT, mm, Mx::AT, yy);
        v8f b{};
        if (bias)
          for (int k = 0; k < nf; ++k) b[k] = bias[f0 + k];
        if (rn) { // residual: added per element before the clamp
          for (int i = 0; i < rows; ++i)
            for (int j = 0; j < cols; ++j) {
              v8f o = yy[i][j] + b;
              int64_t at = (oh0 + i) * OW + ow0 + j;
              for (int k = 0; k < nf; ++k)
                y[(f0 + k) * OH * OW + at] = std::min(std::max(o[k] + rn[(f0 + k) * OH * OW + at], lo), hi);
            }
          continue;
        }
        // Bias and clamp on whole vectors, then each filter's rows stored.
        float tile[M][M][8];
        for (int i = 0; i < M; ++i)
          for (int j = 0; j < M; ++j) store8(tile[i][j], vclamp(yy[i][j] + b, splat(lo), splat(hi)));
        for (int k = 0; k < nf; ++k) {
          float *yk = y + (f0 + k) * OH * OW + oh0 * OW + ow0;
          for (int i = 0; i < rows; ++i)
            for (int j = 0; j < cols; ++j) yk[i * OW + j] = tile[i][j][k];
        }
      }
    };
    // A task is one row of tiles and up to 64 filters: tasks write
    // disjoint rows of the output planes (with a task per tile, two
    // threads wrote neighbouring floats of one row).
    const int64_t fGroups = (F + 63) / 64;
    parallelFor(TH * fGroups, [&](int64_t task) {
      const int64_t f1 = std::min(F, (task % fGroups + 1) * 64);
      for (int64_t t = task / fGroups * TW; t < (task / fGroups + 1) * TW; ++t)
        outputTile(t, task % fGroups * 64, f1);
    });
  }
}

} // namespace
} // namespace kiln::rt

extern "C" {

/// y = clamp(conv3x3(x, w) + bias + residual, lo, hi), stride 1, no
/// dilation, one group; up is w transformed by winograd::transformWeights
/// for tile size m (2 or 4). bias and residual may be 0.
void kiln_rt_conv2d_winograd(intptr_t x, intptr_t up, intptr_t bias, intptr_t residual, intptr_t y, int64_t N,
                             int64_t C, int64_t H, int64_t W, int64_t F, int64_t OH, int64_t OW, int64_t PT,
                             int64_t PL, int64_t m, float lo, float hi) {
  auto fn = m == 2 ? kiln::rt::winogradConv<2> : kiln::rt::winogradConv<4>;
  fn((const float *)x, (const float *)up, (const float *)bias, (const float *)residual, (float *)y, N, C, H, W,
     F, OH, OW, PT, PL, lo, hi);
}

} // extern "C"
