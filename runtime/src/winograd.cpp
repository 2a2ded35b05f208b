// Winograd F(m x m, 3 x 3) convolution for 3x3, stride-1, undilated,
// ungrouped convs whose weights the compiler transformed and packed
// (kiln/winograd_layout.h). Per image, with the tiles in the vector lanes
// throughout (runs of up to 8 tiles of one row of tiles):
//   1. the input is split, zero-padded, into M column phase planes per
//      row and channel, so a run's values at one place of its tiles are
//      one vector load;
//   2. each run's V = B^T d B is computed one channel at a time and
//      stored, a vector per place xi, straight into V_xi packed as the
//      GEMM's B (NR tiles per panel);
//   3. a*a GEMMs (parallel over xi) M_xi[F, T] = U_xi[F, C] * V_xi[C, T],
//      U_xi packed at compile time as A;
//   4. each run's Y = A^T M A is computed one filter at a time, its output
//      rows interleaved from the lanes, with the bias, the residual and
//      the clamp applied before they are stored.
// With several threads, each phase is shared out over them (Split::Places),
// or, where U is small next to V and M, each thread runs all four for its
// own band of tile rows (Split::Bands: nothing handed between the cores).
#include "kernels.h"
#include "kiln/gemm_layout.h"
#include "kiln/winograd_layout.h"
#include "simd.h"
#include "thread_pool.h"

#include <algorithm>
#include <cstdlib>
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

/// The M column phases of the 8 * M consecutive floats s[0] .. s[M-1]:
/// out[p][u] = float u * M + p, u < 8.
template <int M> inline void deinterleave(const v8f (&s)[M], v8f (&out)[M]) {
  if constexpr (M == 2) {
    out[0] = everyOther<0>(s[0], s[1]);
    out[1] = everyOther<1>(s[0], s[1]);
  } else {
    static_assert(M == 4, "tiles of 2 or 4");
    v8f t0 = shuffle8<0, 4, 8, 12, 1, 5, 9, 13>(s[0], s[1]), t1 = shuffle8<2, 6, 10, 14, 3, 7, 11, 15>(s[0], s[1]);
    v8f t2 = shuffle8<0, 4, 8, 12, 1, 5, 9, 13>(s[2], s[3]), t3 = shuffle8<2, 6, 10, 14, 3, 7, 11, 15>(s[2], s[3]);
    out[0] = shuffle8<0, 1, 2, 3, 8, 9, 10, 11>(t0, t2);
    out[1] = shuffle8<4, 5, 6, 7, 12, 13, 14, 15>(t0, t2);
    out[2] = shuffle8<0, 1, 2, 3, 8, 9, 10, 11>(t1, t3);
    out[3] = shuffle8<4, 5, 6, 7, 12, 13, 14, 15>(t1, t3);
  }
}

/// The inverse: M vectors of 8 tiles' column j (lanes = tiles) -> M * 8
/// consecutive floats of an output row, w[k] = floats 8k .. 8k+7.
template <int M> inline void interleave(const v8f (&o)[M], v8f (&w)[M]) {
  if constexpr (M == 2) {
    v8f lo = shuffle8<0, 8, 1, 9, 4, 12, 5, 13>(o[0], o[1]), hi = shuffle8<2, 10, 3, 11, 6, 14, 7, 15>(o[0], o[1]);
    w[0] = shuffle8<0, 1, 2, 3, 8, 9, 10, 11>(lo, hi);
    w[1] = shuffle8<4, 5, 6, 7, 12, 13, 14, 15>(lo, hi);
  } else {
    v8f t0 = shuffle8<0, 8, 1, 9, 4, 12, 5, 13>(o[0], o[2]), t1 = shuffle8<0, 8, 1, 9, 4, 12, 5, 13>(o[1], o[3]);
    v8f t2 = shuffle8<2, 10, 3, 11, 6, 14, 7, 15>(o[0], o[2]), t3 = shuffle8<2, 10, 3, 11, 6, 14, 7, 15>(o[1], o[3]);
    v8f u0 = shuffle8<0, 8, 1, 9, 4, 12, 5, 13>(t0, t1), u1 = shuffle8<2, 10, 3, 11, 6, 14, 7, 15>(t0, t1);
    v8f u2 = shuffle8<0, 8, 1, 9, 4, 12, 5, 13>(t2, t3), u3 = shuffle8<2, 10, 3, 11, 6, 14, 7, 15>(t2, t3);
    w[0] = shuffle8<0, 1, 2, 3, 8, 9, 10, 11>(u0, u1);
    w[1] = shuffle8<0, 1, 2, 3, 8, 9, 10, 11>(u2, u3);
    w[2] = shuffle8<4, 5, 6, 7, 12, 13, 14, 15>(u0, u1);
    w[3] = shuffle8<4, 5, 6, 7, 12, 13, 14, 15>(u2, u3);
  }
}

/// One image's conv, over a part of it: the tile rows [th0, th1), with its
/// own phase planes, V and M (parts of their rows, or the whole image).
template <int M> struct WinogradPart {
  using Mx = winograd::Matrices<M>;
  static constexpr int A = Mx::A, AA = A * A;
  static constexpr int64_t NR = gemm::NR;
  const float *x, *U, *bias, *res; // x, res and y: this image's
  float *y;
  int64_t C, H, W, F, OH, OW, PT, PL;
  float lo, hi;
  int64_t TH, TW, UW, plane, uStride;
  // The part: tiles T (tile rows th0 .. th1 - 1, row-major), Hp padded
  // input rows from th0 * M; strides of ph's rows, V_xi and M_xi.
  int64_t th0 = 0, th1 = 0, T = 0, Tp = 0, Hp = 0, rowStride = 0, vStride = 0, mStride = 0;
  float *ph = nullptr, *v = nullptr, *m = nullptr;
  // Where output() stores: output row r of filter f at y + f * yPlane +
  // (r - yRow0) * OW (the whole output, or a band of it: a conv chain).
  int64_t yPlane = 0, yRow0 = 0;

  WinogradPart(const float *x, const float *U, const float *bias, const float *res, float *y, int64_t C, int64_t H,
               int64_t W, int64_t F, int64_t OH, int64_t OW, int64_t PT, int64_t PL, float lo, float hi)
      : x(x), U(U), bias(bias), res(res), y(y), C(C), H(H), W(W), F(F), OH(OH), OW(OW), PT(PT), PL(PL), lo(lo),
        hi(hi), TH((OH + M - 1) / M), TW((OW + M - 1) / M), UW(gemm::roundUp(TW + 1, 8)), plane(M * UW),
        uStride(gemm::packedASize(F, C)), yPlane(OH * OW) {}

  /// Takes tile rows [a, b), with buffers in phB, vB and mB (grown).
  void setPart(int64_t a, int64_t b, Buffer &phB, Buffer &vB, Buffer &mB) {
    // Phase planes: padded row r, channel c, phase p holds the padded
    // columns u * M + p, u < UW (tile column tw reads u = tw and tw + 1;
    // UW is rounded up to whole vectors).
    // The transforms touch a*a (or A rows of) places at once: their
    // strides are spread over the L1 sets (a multiple of 4 KiB plus a line:
    // with V_xi 53 KiB apart, a multiple of 4 KiB, ResNet-50's 56x56 input
    // transform took 2.3x the time).
    const auto spread = [](int64_t floats) { return gemm::roundUp(floats, 1024) + 16; };
    th0 = a, th1 = b, T = (b - a) * TW, Tp = gemm::roundUp(T, NR), Hp = (b - a) * M + 2;
    rowStride = spread(C * plane), vStride = spread(gemm::packedBSize(C, T)), mStride = spread(F * Tp);
    // (8 floats of slack: loads of lanes past the last tile reach up to 8
    // floats past the planes, and past M.)
    ph = grow(phB, size_t(Hp) * rowStride + 8);
    v = grow(vB, size_t(AA) * vStride);
    m = grow(mB, size_t(AA) * mStride + 8);
  }

  /// 1. The part's padded row r (input row th0 * M + r - PT) as phase
  /// planes, all channels, zero padded.
  void phaseRow(int64_t r) const {
    float *dst = ph + r * rowStride;
    const int64_t ih = th0 * M + r - PT;
    if (ih < 0 || ih >= H) {
      std::fill(dst, dst + rowStride, 0.0f);
      return;
    }
    // Padded columns [qa, qb) read input column q - PL; the others are
    // 0. Blocks of 8 u (8 vectors of M columns) for every channel in
    // turn, edges by masked loads.
    const int64_t qa = std::max<int64_t>(0, PL), qb = std::max(qa, std::min(M * UW, W + PL));
    const int64_t planeC = H * W, uw = UW, step = plane, cn = C;
    const float *xrow = x + ih * W; // channel c's padded column q at xrow[c * planeC + q - PL]
    for (int64_t u = 0; u < uw; u += 8) {
      int from[M], to[M];
      bool whole = true;
      for (int k = 0; k < M; ++k) {
        const int64_t q = u * M + 8 * k; // columns q .. q+7
        from[k] = int(std::clamp<int64_t>(qa - q, 0, 8)), to[k] = int(std::clamp<int64_t>(qb - q, 0, 8));
        whole = whole && from[k] == 0 && to[k] == 8;
      }
      float *d = dst + u;
      for (int64_t c = 0; c < cn; ++c, d += step) {
        v8f in[M], out[M];
        for (int k = 0; k < M; ++k)
          in[k] = whole ? load8(xrow + c * planeC + u * M + 8 * k - PL)
                        : loadRange(xrow, c * planeC + u * M + 8 * k - PL, from[k], to[k]);
        deinterleave<M>(in, out);
        for (int p = 0; p < M; ++p) store8(d + p * uw, out[p]);
      }
    }
  }

  /// 2. Input transform with the tiles in the lanes: runs of 8 of the
  /// part's tiles (t0 = 8r; a run may span rows of tiles), one channel at
  /// a time; each run's V_xi values are one vector store into the packed B
  /// panels (NR = 16 tiles each). Panel pn (two runs, which fill each line
  /// they store to between them), channels [c0, c1).
  void transform(int64_t pn, int64_t c0, int64_t c1) const {
    static_assert(NR == 16, "two runs of 8 tiles per panel");
    const int halves = T > pn * NR + 8 ? 2 : 1;
    // Each run's segments: lanes [from[s], ...) are tiles of one row of
    // tiles, read at ph + off[s] + lane; lanes past T belong to the last.
    int64_t off[2][8];
    v8i from[2][8];
    int segs[2] = {0, 0};
    for (int h = 0; h < halves; ++h) {
      const int64_t t0 = pn * NR + 8 * h;
      for (int l = 0; l < 8 && (l == 0 || t0 + l < T); ++l) {
        const int64_t t = t0 + l, th = t / TW, tw = t - th * TW;
        if (l > 0 && tw != 0) continue;
        off[h][segs[h]] = th * M * rowStride + tw - l;
        from[h][segs[h]++] = v8i{} + l;
      }
    }
    const v8i lane{0, 1, 2, 3, 4, 5, 6, 7};
    for (int64_t c = c0; c < c1; ++c) {
      const float *base = ph + c * plane;
      const int64_t k0 = c / gemm::KC * gemm::KC, kc = std::min(gemm::KC, C - k0);
      float *p = v + k0 * Tp + pn * NR * kc + (c - k0) * NR;
      for (int h = 0; h < halves; ++h) {
        v8f d[A][A], vv[A][A];
#pragma GCC unroll 8
        for (int i = 0; i < A; ++i)
#pragma GCC unroll 8
          for (int j = 0; j < A; ++j) d[i][j] = load8(base + off[h][0] + i * rowStride + (j % M) * UW + j / M);
        for (int sg = 1; sg < segs[h]; ++sg) {
          const float *bs = base + off[h][sg];
          const v8i later = lane >= from[h][sg];
#pragma GCC unroll 8
          for (int i = 0; i < A; ++i)
#pragma GCC unroll 8
            for (int j = 0; j < A; ++j)
              d[i][j] = later ? load8(bs + i * rowStride + (j % M) * UW + j / M) : d[i][j];
        }
        sandwich(Mx::BT, d, Mx::BT, vv);
#pragma GCC unroll 8
        for (int i = 0; i < A; ++i)
#pragma GCC unroll 8
          for (int j = 0; j < A; ++j) store8(p + (i * A + j) * vStride + 8 * h, vv[i][j]);
      }
    }
  }

  /// 3. The product of place xi, M_xi[F, T] = U_xi[F, C] * V_xi[C, T]
  /// (serial inside), U packed at compile time as A, V packed above as B.
  void product(int64_t xi) const {
    sgemm(F, T, C, nullptr, 0, false, nullptr, 0, false, m + xi * mStride, Tp, nullptr, U + xi * uStride,
          v + xi * vStride, gemm::KC);
  }

  /// 4. Output transform with the tiles in the lanes, one filter at a
  /// time, for tile rows [a, b) of the part and filters [f0, f1): bias,
  /// then each output row's M * 8 columns interleaved from the lanes, the
  /// residual added and the clamp applied as it is stored. Each filter's
  /// rows in turn, so that the lines of M that two rows share are read
  /// once (a task per row took 1.2x the time at 28x28).
  void output(int64_t a, int64_t b, int64_t f0, int64_t f1) const {
    for (int64_t f = f0; f < f1; ++f) {
      const v8f bv = bias ? splat(bias[f]) : v8f{};
      for (int64_t th = a; th < b; ++th) {
        const int rows = int(std::min<int64_t>(M, OH - th * M));
        for (int64_t tw0 = 0; tw0 < TW; tw0 += 8) {
          const int64_t t = (th - th0) * TW + tw0, cols = std::min<int64_t>(8 * M, OW - tw0 * M);
          v8f mm[A][A], yy[M][M];
          for (int i = 0; i < A; ++i)
            for (int j = 0; j < A; ++j) mm[i][j] = load8(m + (i * A + j) * mStride + f * Tp + t);
          sandwich(Mx::AT, mm, Mx::AT, yy);
          for (int i = 0; i < rows; ++i) {
            v8f o[M], w[M];
            for (int j = 0; j < M; ++j) o[j] = yy[i][j] + bv;
            interleave<M>(o, w);
            const int64_t at = f * yPlane + (th * M + i - yRow0) * OW + tw0 * M;
            for (int k = 0; k < M && 8 * k < cols; ++k) {
              const int nc = int(std::min<int64_t>(8, cols - 8 * k));
              v8f val = w[k];
              if (res) val = val + (nc == 8 ? load8(res + at + 8 * k) : loadRange(res, at + 8 * k, 0, nc));
              val = vclamp(val, splat(lo), splat(hi));
              if (nc == 8) store8(y + at + 8 * k, val);
              else storeN(y + at + 8 * k, val, nc);
            }
          }
        }
      }
    }
  }

  /// Phases 1-3 of the whole part on this thread.
  void runPhases() const {
    for (int64_t r = 0; r < Hp; ++r) phaseRow(r);
    for (int64_t pn = 0; pn < Tp / NR; ++pn) transform(pn, 0, C);
    for (int64_t xi = 0; xi < AA; ++xi) product(xi);
  }
};

/// How the threads share a conv's work (at 2 threads, with the vCPUs of
/// the Zen 5 VM far apart, every value one core writes and the other reads
/// costs: ResNet-50's 56x56 convs took as long at 2 threads as at 1 with
/// every phase cut its own way).
enum class Split {
  /// Each phase over all threads, the products by place xi: V and M are
  /// each read by the other core for half of their values; U is read once.
  Places,
  /// Each thread the whole conv for its own band of tile rows: nothing
  /// crosses but the band's edge rows of the input, but every thread
  /// reads all of U. Where U is small next to V and M: ResNet-50's 56x56
  /// convs (U 0.6 MB, V and M 1.9 MB each) took 0.6x the time far apart
  /// and the same close; its 28x28 ones (U 2.4 MB, V and M 1.2 MB) 1.6x
  /// the time close (a harness, 2 threads).
  Bands,
};

inline Split chooseSplit(int64_t C, int64_t F, int64_t T, int64_t TH, int nt) {
  if (nt <= 1 || TH < nt) return Split::Places;
  if (const int mode = winogradSplit(); mode >= 0) return mode == 1 ? Split::Bands : Split::Places;
  return 2 * C * F < (C + F) * T ? Split::Bands : Split::Places; // U smaller than half of V and M
}

int splitMode = -2; // -2: not read from the environment yet

/// A 1x1 conv (stride 1, no padding, one group) fused after the Winograd
/// conv: y2 = clamp(w2 * y + bias2 + res2, lo2, hi2), its weights [F2, F]
/// packed as the GEMM's A. It runs on each band of the Winograd conv's
/// output rows as soon as the output transform has stored the band in a
/// small buffer of this thread's (scratch 13), still in its cache: the
/// Winograd conv's output is never written out whole.
struct Tail {
  const float *w2, *bias2, *res2; // res2: this image's
  float *y2;                      // this image's
  int64_t F2;
  float lo2, hi2;
};

/// Output rows per band of a chain's tail: whole rows of tiles, about
/// kBandBytes of the Winograd conv's output (all its filters).
/// (128, 256 and 512 KiB took the same time within 1% at ResNet-50's
/// shapes, in a harness; 256 KiB fits L2 with the band's GEMM operands.)
constexpr int64_t kBandBytes = 256 << 10;

/// Phase 4 with a tail, for output pixels [p0, p1) (row-major in each
/// plane): band by band of whole rows of tiles, the output transform
/// stores the band in this thread's buffer (scratch 13), and the tail's
/// GEMM reads the band's pixels in [p0, p1) from there while they are in
/// cache. A row of tiles that two threads' ranges share is transformed by
/// both (the transform is cheap next to the GEMM; ranges of whole rows of
/// tiles would leave one thread 4 of 7 at 28x28 and 14x14). Serial
/// inside: called by one task.
template <int M> void finishPixels(const WinogradPart<M> &part, const Tail &tail, int64_t p0, int64_t p1) {
  const int64_t OW = part.OW, OHW = part.OH * OW;
  const int64_t rowBytes = part.F * M * OW * int64_t(sizeof(float));
  const int64_t step = std::max<int64_t>(1, kBandBytes / rowBytes);
  for (int64_t t0 = p0 / OW / M; t0 * M * OW < p1; t0 += step) {
    // (Not past the part: with bands, M holds only its own rows of tiles.)
    const int64_t t1 = std::min(part.th1, t0 + step), r0 = t0 * M, r1 = std::min(part.OH, t1 * M);
    const int64_t n = (r1 - r0) * OW, q0 = std::max(p0, r0 * OW), q1 = std::min(p1, r1 * OW);
    WinogradPart<M> band = part;
    band.y = grow(scratch(13), size_t(part.F * n));
    band.yPlane = n;
    band.yRow0 = r0;
    band.output(t0, t1, 0, part.F);
    Epilogue ep;
    ep.rowBias = tail.bias2;
    ep.lo = tail.lo2;
    ep.hi = tail.hi2;
    ep.residual = tail.res2 ? tail.res2 + q0 : nullptr;
    sgemm(tail.F2, q1 - q0, part.F, nullptr, 0, false, band.y + (q0 - r0 * OW), n, false, tail.y2 + q0, OHW, &ep,
          tail.w2, nullptr, gemm::KC);
  }
}

template <int M>
void winogradConv(const float *X, const float *U, const float *bias, const float *res, float *Y, int64_t N,
                  int64_t C, int64_t H, int64_t W, int64_t F, int64_t OH, int64_t OW, int64_t PT, int64_t PL,
                  float lo, float hi, const Tail *chain = nullptr) {
  for (int64_t n = 0; n < N; ++n) {
    WinogradPart<M> w(X + n * C * H * W, U, bias, res ? res + n * F * OH * OW : nullptr,
                      Y ? Y + n * F * OH * OW : nullptr, C, H, W, F, OH, OW, PT, PL, lo, hi);
    Tail tail;
    if (chain) {
      tail = *chain;
      tail.y2 += n * tail.F2 * OH * OW;
      if (tail.res2) tail.res2 += n * tail.F2 * OH * OW;
    }
    const Tail *tl = chain ? &tail : nullptr;
    const int nt = currentThreads();
    const Split split = chooseSplit(C, F, w.TH * w.TW, w.TH, nt);
    if (split == Split::Bands) {
      // Each thread its band of tile rows, in scratch buffers that only
      // it ever writes. (In its slots 2, 5 and 6, which the other thread
      // writes in parallel kernels, ResNet-50's first 56x56 conv took 0.57
      // ms with the vCPUs far apart, against 0.31 for the other two: it
      // wrote lines that the last convs of the inference before had left
      // in the other core. In slots of its own, 0.43.)
      parallelFor(nt, [&](int64_t b) {
        WinogradPart<M> part = w;
        part.setPart(w.TH * b / nt, w.TH * (b + 1) / nt, scratch(10), scratch(11), scratch(12));
        part.runPhases();
        if (tl)
          finishPixels(part, *tl, part.th0 * M * OW, std::min(OH, part.th1 * M) * OW);
        else
          part.output(part.th0, part.th1, 0, F);
      });
      continue;
    }
    w.setPart(0, w.TH, scratch(2), scratch(5), scratch(6));
    parallelFor(w.Hp, [&](int64_t r) { w.phaseRow(r); });
    const int64_t panels = w.Tp / w.NR, cGroups = (C + 63) / 64;
    parallelFor(panels * cGroups, [&](int64_t task) {
      const int64_t c0 = task % cGroups * 64;
      w.transform(task / cGroups, c0, std::min(C, c0 + 64));
    });
    parallelFor(w.AA, [&](int64_t xi) { w.product(xi); });
    if (tl) {
      // With a tail: each thread an even run of pixels, all filters (the
      // tail's GEMM reads every filter of a pixel).
      const int64_t OHW = OH * OW;
      parallelFor(nt, [&](int64_t t) { finishPixels(w, *tl, OHW * t / nt, OHW * (t + 1) / nt); });
      continue;
    }
    const int64_t rowRuns = std::min<int64_t>(w.TH, 2 * nt);
    // Tasks: runs of rows of tiles (2 runs per thread) and up to 64
    // filters; they write disjoint rows of the output planes.
    const int64_t fGroups = (F + 63) / 64;
    parallelFor(rowRuns * fGroups, [&](int64_t task) {
      const int64_t rr = task / fGroups, f0 = task % fGroups * 64;
      w.output(w.TH * rr / rowRuns, w.TH * (rr + 1) / rowRuns, f0, std::min(F, f0 + 64));
    });
  }
}

} // namespace

int winogradSplit() {
  if (splitMode == -2) {
    const char *e = std::getenv("KILN_WINO_SPLIT");
    splitMode = e && *e ? (std::atoi(e) == 1 ? 1 : 0) : -1;
  }
  return splitMode;
}

int setWinogradSplit(int mode) {
  const int was = winogradSplit();
  splitMode = mode < 0 ? -1 : mode == 1 ? 1 : 0;
  return was;
}

} // namespace kiln::rt

extern "C" {

/// y = clamp(conv3x3(x, w) + bias + residual, lo, hi), stride 1, no
/// dilation, one group; up is w transformed by winograd::transformWeights
/// for tile size m (2 or 4). bias and residual may be 0.
void kiln_rt_conv2d_winograd_ft(intptr_t x, intptr_t up, intptr_t bias, intptr_t residual, intptr_t y, int64_t N,
                                int64_t C, int64_t H, int64_t W, int64_t F, int64_t OH, int64_t OW, int64_t PT,
                                int64_t PL, int64_t m, float lo, float hi) {
  auto fn = m == 2 ? kiln::rt::winogradConv<2> : kiln::rt::winogradConv<4>;
  fn((const float *)x, (const float *)up, (const float *)bias, (const float *)residual, (float *)y, N, C, H, W,
     F, OH, OW, PT, PL, lo, hi, nullptr);
}

/// A conv chain: t = clamp(conv3x3(x, w) + bias, lo, hi) as
/// kiln_rt_conv2d_winograd_ft (no residual), then y = clamp(conv1x1(t,
/// w2) + bias2 + residual, lo2, hi2), w2 [F2, F] packed as GEMM operand A
/// (kiln/gemm_layout.h). t is never stored whole: each band of its rows is
/// multiplied by w2 while it is in cache. bias, bias2 and residual may be
/// 0; residual may be y itself.
void kiln_rt_conv2d_winograd_chain(intptr_t x, intptr_t up, intptr_t bias, intptr_t w2, intptr_t bias2,
                                   intptr_t residual, intptr_t y, int64_t N, int64_t C, int64_t H, int64_t W,
                                   int64_t F, int64_t OH, int64_t OW, int64_t PT, int64_t PL, int64_t m, float lo,
                                   float hi, int64_t F2, float lo2, float hi2) {
  // The tail's GEMM reads the residual where it writes y only over one K
  // block (gemm::convResidualReadInPlace); otherwise a copy.
  static thread_local std::vector<float> residualCopy;
  if (residual && residual == y && !kiln::gemm::convResidualReadInPlace(F, 1, 1, 1, 1, 0, 0, true, 1)) {
    residualCopy.assign((const float *)residual, (const float *)residual + N * F2 * OH * OW);
    residual = (intptr_t)residualCopy.data();
  }
  const kiln::rt::Tail tail{(const float *)w2, (const float *)bias2, (const float *)residual, (float *)y, F2, lo2, hi2};
  auto fn = m == 2 ? kiln::rt::winogradConv<2> : kiln::rt::winogradConv<4>;
  fn((const float *)x, (const float *)up, (const float *)bias, nullptr, nullptr, N, C, H, W, F, OH, OW, PT, PL, lo,
     hi, &tail);
}

} // extern "C"
