// BCR sparse kernels: y = W x for weights packed by kiln/bcr_layout.h.
//
// The output is computed in register tiles of 4 rows of W (one strip) x 3
// vectors of spatial columns: 24 columns on 8-lane vectors (AVX2, NEON),
// 48 on AVX-512 (chosen at run time with the dense kernels' switch,
// wideKernels(); the two agree to rounding: an element's sum is split over
// one or two accumulator sets depending on its tile's width). The input
// rows W uses (and only those) are packed per tile of spatial columns into
// a contiguous [U][tile] buffer, or read in place (convolutions with more
// than one tap: phased() below); each strip then walks its segments: per
// segment, every gathered input row is loaded once (one to three vectors)
// and multiplied into the accumulators of the strip's kept rows, whose set
// (the segment's mask) is a template argument, so accumulators stay in
// registers and weights are broadcast from the value stream. The epilogue
// (bias per row of W, residual, clamp) is applied as the tile is stored
// through the row permutation. The tile code itself is in sparse_tile.h,
// compiled once per vector width.
#include "kernels.h"
#include "kiln/bcr_layout.h"
#include "simd.h"
#include "thread_pool.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <vector>

namespace kiln::rt {

/// Where the input of a sparse product comes from: packed row u (a used
/// column of W) at spatial column n is x[row * ld + n] (or x[n * ld + row]
/// when trans), with row = rowOf[u] (rowOf null: row = u).
struct BcrInput {
  const float *x;
  int64_t ld;
  const int32_t *rowOf;
  bool trans;
  /// Set when the rows are read in place, not packed: row u at spatial
  /// column n is x[off[u] + n] (phase images, see phased() below),
  /// readable up to a whole tile past the last column.
  const int64_t *off = nullptr;
};
/// Result element (row r of W, spatial column n) goes to y[r * ldRow + n *
/// ldCol] as clamp(acc + bias[r] + residual[same place], lo, hi).
struct BcrOutput {
  float *y;
  int64_t ldRow, ldCol;
  const float *bias, *residual;
  float lo, hi;
};

namespace {

typedef uint16_t u16a __attribute__((may_alias));
#if defined(__x86_64__)
// AVX-512 registers, only touched inside target("avx512f") functions.
#pragma GCC diagnostic ignored "-Wpsabi"
typedef float v16f __attribute__((vector_size(64)));
#endif

/// Copies n <= w floats to d and zeros d[n, w) (whole vectors when n == w).
inline void copyRow(const float *src, int64_t n, int64_t w, float *d) {
  if (n == w) {
    for (int64_t j = 0; j < w; j += 8) store8(d + j, load8(src + j));
    return;
  }
  for (int64_t j = 0; j < n; ++j) d[j] = src[j];
  for (int64_t j = n; j < w; ++j) d[j] = 0.0f;
}

/// d[j] = row[iw0 + j * SW] for j < len, zero where the index falls
/// outside [0, W) (the padding). The run inside the row is copied with
/// whole vectors for strides 1 and 2 (even lanes of two vectors).
inline void gatherRun(const float *row, int64_t W, int64_t iw0, int64_t SW, int64_t len, float *d) {
  const int64_t lastIn = W - 1 - iw0;
  const int64_t jlo = iw0 >= 0 ? 0 : std::min(len, (SW - 1 - iw0) / SW);
  const int64_t jhi = std::max(jlo, lastIn < 0 ? 0 : std::min(len, lastIn / SW + 1));
  for (int64_t j = 0; j < jlo; ++j) d[j] = 0.0f;
  int64_t j = jlo;
  if (SW == 1)
    for (; j + 8 <= jhi; j += 8) store8(d + j, load8(row + iw0 + j));
  else if (SW == 2)
    for (; j + 8 <= jhi && iw0 + 2 * j + 16 <= W; j += 8) {
      const float *r = row + iw0 + 2 * j;
      store8(d + j, shuffle8<0, 2, 4, 6, 8, 10, 12, 14>(load8(r), load8(r + 8)));
    }
  for (; j < jhi; ++j) d[j] = row[iw0 + j * SW];
  for (j = jhi; j < len; ++j) d[j] = 0.0f;
}

/// Packs spatial columns [n0, n0 + nb) of used input rows [u0, u0 + U)
/// into xp[(u - u0) * w + j] (w = 8V floats per row; zeros past nb).
void packInput(const BcrInput &in, int64_t u0, int64_t U, int64_t n0, int64_t nb, int64_t w, float *xp) {
  auto row = [&](int64_t i) { return in.rowOf ? in.rowOf[u0 + i] : u0 + i; };
  if (!in.trans) {
    for (int64_t i = 0; i < U; ++i) copyRow(in.x + row(i) * in.ld + n0, nb, w, xp + i * w);
    return;
  }
  // Transposed: xp[i][j] = x[(n0 + j) * ld + row(i)]. Runs of 8 used rows
  // that are 8 consecutive columns of x (all of them in a layer with no
  // pruned column) go through 8 x 8 register transposes.
  auto scalarRows = [&](int64_t i0, int64_t i1, int64_t j0) {
    for (int64_t i = i0; i < i1; ++i)
      for (int64_t j = j0; j < w; ++j) xp[i * w + j] = j < nb ? in.x[(n0 + j) * in.ld + row(i)] : 0.0f;
  };
  int64_t i = 0;
  for (; i + 8 <= U; i += 8) {
    if (row(i + 7) - row(i) != 7) {
      scalarRows(i, i + 8, 0);
      continue;
    }
    int64_t j = 0;
    for (; j + 8 <= nb; j += 8) {
      v8f r[8];
      for (int q = 0; q < 8; ++q) r[q] = load8(in.x + (n0 + j + q) * in.ld + row(i));
      transpose8(r);
      for (int q = 0; q < 8; ++q) store8(xp + (i + q) * w + j, r[q]);
    }
    scalarRows(i, i + 8, j);
  }
  scalarRows(i, U, 0);
}

/// Stores 4 rows of 8 (a[q]: row q) transposed: y[c * ld + q] = a[q][c].
inline void storeTransposed4x8(const v8f (&a)[4], float *y, int64_t ld, int64_t cols) {
  v8f lo01 = shuffle8<0, 8, 1, 9, 4, 12, 5, 13>(a[0], a[1]), hi01 = shuffle8<2, 10, 3, 11, 6, 14, 7, 15>(a[0], a[1]);
  v8f lo23 = shuffle8<0, 8, 1, 9, 4, 12, 5, 13>(a[2], a[3]), hi23 = shuffle8<2, 10, 3, 11, 6, 14, 7, 15>(a[2], a[3]);
  // c[k]: columns k (low half) and k + 4 (high half), rows 0-3 in order.
  v8f c[4] = {shuffle8<0, 1, 8, 9, 4, 5, 12, 13>(lo01, lo23), shuffle8<2, 3, 10, 11, 6, 7, 14, 15>(lo01, lo23),
              shuffle8<0, 1, 8, 9, 4, 5, 12, 13>(hi01, hi23), shuffle8<2, 3, 10, 11, 6, 7, 14, 15>(hi01, hi23)};
  for (int k = 0; k < 8 && k < cols; ++k) std::memcpy(y + k * ld, reinterpret_cast<const float *>(&c[k % 4]) + 4 * (k / 4), 16);
}

/// Vectors of L lanes per tile for a tile of nb columns (the last one may
/// be narrower, or up to one vector wider: see bcrGemm).
inline int vectorsFor(int64_t nb, int L) { return nb > 3 * L ? 4 : nb > 2 * L ? 3 : nb > L ? 2 : 1; }

namespace lanes8 {
#include "sparse_tile.h"
} // namespace lanes8
template <int V, bool OFF>
void stripTile8(const uint32_t *p, const int32_t *rows, const float *xp, const int64_t *off, const BcrOutput &out,
                int64_t n0, int64_t nb, bool first, bool last) {
  lanes8::stripTileT<v8f, V, OFF>(p, rows, xp, off, out, n0, nb, first, last);
}
#if defined(__x86_64__)
#pragma GCC push_options
#pragma GCC target("avx512f")
namespace lanes16 {
#include "sparse_tile.h"
} // namespace lanes16
template <int V, bool OFF>
void stripTile16(const uint32_t *p, const int32_t *rows, const float *xp, const int64_t *off, const BcrOutput &out,
                 int64_t n0, int64_t nb, bool first, bool last) {
  lanes16::stripTileT<v16f, V, OFF>(p, rows, xp, off, out, n0, nb, first, last);
}
#pragma GCC pop_options
#endif

/// One strip on one tile of nb <= 3L columns, L lanes per vector; input
/// rows packed at xp (off null) or read in place at xp + off[u].
void stripTile(int L, const uint32_t *p, const int32_t *rows, const float *xp, const int64_t *off,
               const BcrOutput &out, int64_t n0, int64_t nb, bool first, bool last) {
#define KILN_STRIP(fn, V)                                                                          \
  return off ? fn<V, true>(p, rows, xp, off, out, n0, nb, first, last)                             \
             : fn<V, false>(p, rows, xp, off, out, n0, nb, first, last)
#if defined(__x86_64__)
  if (L == 16) {
    switch (vectorsFor(nb, 16)) {
    case 4: KILN_STRIP(stripTile16, 4);
    case 3: KILN_STRIP(stripTile16, 3);
    case 2: KILN_STRIP(stripTile16, 2);
    default: KILN_STRIP(stripTile16, 1);
    }
  }
#endif
  switch (vectorsFor(nb, 8)) {
  case 3: KILN_STRIP(stripTile8, 3);
  case 2: KILN_STRIP(stripTile8, 2);
  default: KILN_STRIP(stripTile8, 1);
  }
#undef KILN_STRIP
}

} // namespace

/// y = W x over N spatial columns, W packed as a BCR blob; parallel over
/// groups of column tiles x ranges of strips. Each task runs the chunks of
/// used columns in order: it packs a chunk's input rows for its tiles
/// (unless they are read in place, in.off, or were packed once for all
/// tasks), then the strips of its range read them, adding to the partial
/// sums in the output. out.ldCol must be 1.
void bcrGemm(const uint32_t *blob, int64_t N, const BcrInput &in, const BcrOutput &out) {
  bcr::View v{blob};
  // 16 lanes where the dense kernels use AVX-512 (the same switch).
  const int L = wideKernels() ? 16 : 8, TW = 3 * L;
  // Tiles of TW columns; with 16 lanes, a last one of at most 16 columns
  // joins the tile before it (4 vectors, 16 x 4 accumulators at most): one
  // more walk of every segment for so few columns cost about a third of a
  // whole tile's (N = 49: 48 + 1 columns; N = 196: 4 x 48 + 4).
  const int64_t S = v.strips(), U = v.usedCount(), UC = v.chunk(), C = v.chunks();
  const int64_t rem = N % TW, NT = N / TW + (rem && !(L == 16 && N > TW && rem <= L));
  auto cols = [&](int64_t t) { return t == NT - 1 ? N - t * TW : int64_t(TW); }; // columns of tile t
  if (N <= 0) return;
  const int64_t rowsPerTile = std::min(U, UC); // packed rows per tile and chunk
  // Tiles per task: their packed inputs (one chunk) stay within 192 KiB.
  const int64_t TG = std::clamp<int64_t>(196608 / (std::max<int64_t>(rowsPerTile, 1) * TW * 4), 1, 8);
  const int64_t groups = (NT + TG - 1) / TG;
  const int threads = currentThreads();
  const int64_t ranges = threads > 1 ? std::clamp<int64_t>((4 * threads + groups - 1) / groups, 1, S) : 1;
  const int64_t perRange = (S + ranges - 1) / ranges;
  // 64-byte aligned: a row of the packed input is one or two cache lines.
  auto aligned = [](Buffer &buf, int64_t n) {
    float *d = grow(buf, n + 16);
    return d + ((64 - (reinterpret_cast<uintptr_t>(d) & 63)) & 63) / sizeof(float);
  };
  // Tile t covers columns [t*TW, +nb), packed L*V wide (rowsPerTile * TW
  // floats per tile, and L * rowsPerTile more for a 4-vector last one).
  // When several tasks read each tile (ranges > 1: few tiles, e.g. 128
  // tokens) and the whole packed input is small, it is packed once, in
  // parallel, before the strips run (else every task packs its tiles
  // again).
  float *sharedX = nullptr;
  if (!in.off && ranges > 1 && C == 1 && NT * rowsPerTile * TW <= (1 << 20)) {
    sharedX = aligned(scratch(9), (NT * TW + L) * rowsPerTile);
    const int64_t RB = 128, rowBlocks = (U + RB - 1) / RB; // rows per packing task
    parallelFor(NT * rowBlocks, [&](int64_t task) {
      int64_t t = task / rowBlocks, i0 = task % rowBlocks * RB, nb = cols(t);
      int64_t w = L * vectorsFor(nb, L);
      packInput(in, i0, std::min(RB, U - i0), t * TW, nb, w, sharedX + t * rowsPerTile * TW + i0 * w);
    });
  }
  parallelFor(groups * ranges, [&](int64_t task) {
    int64_t g = task / ranges, r = task % ranges;
    int64_t t0 = g * TG, t1 = std::min(NT, t0 + TG);
    int64_t s0 = r * perRange, s1 = std::min(S, s0 + perRange);
    float *xp = in.off    ? nullptr // rows read in place
                : sharedX ? sharedX + t0 * rowsPerTile * TW
                          : aligned(scratch(3), ((t1 - t0) * TW + L) * rowsPerTile);
    for (int64_t c = 0; c < C; ++c) {
      const int64_t u0 = c * UC, uc = std::min(UC, U - u0);
      for (int64_t t = t0; t < t1 && !sharedX && !in.off; ++t) {
        int64_t nb = cols(t);
        packInput(in, u0, uc, t * TW, nb, L * vectorsFor(nb, L), xp + (t - t0) * rowsPerTile * TW);
      }
      const int64_t *off = in.off ? in.off + u0 : nullptr;
      auto one = [&](int64_t s, int64_t t) {
        int64_t nb = cols(t);
        const float *x = in.off ? in.x + t * TW : xp + (t - t0) * rowsPerTile * TW;
        stripTile(L, v.list(c, s), v.perm() + s * bcr::SR, x, off, out, t * TW, nb, c == 0, c == C - 1);
      };
      // Few input rows (little work per output): strip by strip, each over
      // the group's tiles, so a strip's output rows (and residual) are
      // written (read) in runs of up to 8 tiles rather than one tile of
      // columns per row at a time (ResNet-50's 56x56 1x1 convs with a
      // residual: 0.43-0.71 -> 0.33-0.45 ms at 91%). With more rows, tile
      // by tile: every strip reads the tile's inputs while they are in L1.
      if (rowsPerTile <= 160)
        for (int64_t s = s0; s < s1; ++s)
          for (int64_t t = t0; t < t1; ++t) one(s, t);
      else
        for (int64_t t = t0; t < t1; ++t)
          for (int64_t s = s0; s < s1; ++s) one(s, t);
    }
  });
}

namespace {

/// A convolution read in place, without gathering taps (implicit im2col
/// would copy every input KH*KW times). The image is copied once into
/// zero-padded phase images: Q[c][a][b] (a < SH, b < SW) holds the padded
/// image's rows a, a + SH, ... and columns b, b + SW, ..., Qh x Wq of them
/// (as far as the outputs reach). On the output grid of width Wq (column
/// n = oh * Wq + ow), tap (c, kh, kw) of output n is Q[c][a][b] at
/// (kh*DH / SH) * Wq + kw*DW / SW + n, with a = kh*DH % SH and b = kw*DW %
/// SW: every used row of W is one offset into Q, and each tile of outputs
/// reads it as consecutive floats. (Stride 1: one phase, the padded
/// image.) The product goes to T [F][OH * Wq]; the epilogue (bias,
/// residual, clamp) is applied as T is copied into y, dropping the
/// Wq - OW columns past each row.
void phased(const bcr::View &v, const float *X, float *Y, const float *bias, const float *res, int64_t N,
            int64_t C, int64_t H, int64_t W, int64_t F, int64_t KH, int64_t KW, int64_t OH, int64_t OW, int64_t SH,
            int64_t SW, int64_t DH, int64_t DW, int64_t PT, int64_t PL, float lo, float hi) {
  const int64_t Qh = OH + (KH - 1) * DH / SH, Wq = OW + (KW - 1) * DW / SW, phase = Qh * Wq, Np = OH * Wq;
  const int64_t U = v.usedCount();
  // Only the phases some tap reads are built.
  std::vector<char> usedPhase(SH * SW, 0);
  std::vector<int64_t> off(U);
  for (int64_t u = 0; u < U; ++u) {
    int64_t r = v.used()[u], c = r / (KH * KW), kh = r / KW % KH, kw = r % KW;
    int64_t a = kh * DH % SH, b = kw * DW % SW;
    usedPhase[a * SW + b] = 1;
    off[u] = ((c * SH + a) * SW + b) * phase + kh * DH / SH * Wq + kw * DW / SW;
  }
  // A tile reads up to 48 columns past its first (the last one past Np),
  // at offsets up to (KW-1)*DW/SW past the end of the last phase row.
  const int64_t slack = (KW - 1) * DW / SW + 64;
  Buffer &Q = scratch(5), &T = scratch(4);
  const int64_t qSize = C * SH * SW * phase + slack;
  grow(Q, qSize);
  grow(T, F * Np);
  std::fill(Q.data() + qSize - slack, Q.data() + qSize, 0.0f);
  for (int64_t n = 0; n < N; ++n) {
    const float *xn = X + n * C * H * W;
    parallelRuns(C * SH * SW, [&](int64_t cab) {
      const int64_t c = cab / (SH * SW), a = cab / SW % SH, b = cab % SW;
      if (!usedPhase[a * SW + b]) return;
      for (int64_t qh = 0; qh < Qh; ++qh) {
        float *d = Q.data() + cab * phase + qh * Wq;
        int64_t ih = qh * SH + a - PT;
        if (ih < 0 || ih >= H) std::fill(d, d + Wq, 0.0f);
        else gatherRun(xn + (c * H + ih) * W, W, b - PL, SW, Wq, d);
      }
    });
    BcrInput in{Q.data(), 0, nullptr, false, off.data()};
    float inf = std::numeric_limits<float>::infinity();
    BcrOutput out{T.data(), Np, 1, nullptr, nullptr, -inf, inf};
    bcrGemm(v.b, Np, in, out);
    float *yn = Y + n * F * OH * OW;
    const float *rn = res ? res + n * F * OH * OW : nullptr;
    parallelRuns(F, [&](int64_t f) {
      const float b = bias ? bias[f] : 0.0f;
      const v8f vlo = splat(lo), vhi = splat(hi);
      for (int64_t oh = 0; oh < OH; ++oh) {
        const float *t = T.data() + f * Np + oh * Wq;
        const int64_t o = (f * OH + oh) * OW;
        int64_t ow = 0;
        for (; ow + 8 <= OW; ow += 8) { // as storeTile: (acc + bias) + residual, then the clamp
          v8f x = load8(t + ow) + b;
          if (rn) x += load8(rn + o + ow);
          store8(yn + o + ow, vclamp(x, vlo, vhi));
        }
        for (; ow < OW; ++ow) yn[o + ow] = std::min(std::max(t[ow] + b + (rn ? rn[o + ow] : 0.0f), lo), hi);
      }
    });
  }
}

} // namespace

} // namespace kiln::rt

using namespace kiln::rt;

extern "C" {

void kiln_rt_conv2d_bcr(intptr_t x, intptr_t blob, intptr_t bias, intptr_t residual, intptr_t y,
                        int64_t N, int64_t C, int64_t H, int64_t W, int64_t F, int64_t KH, int64_t KW,
                        int64_t OH, int64_t OW, int64_t SH, int64_t SW, int64_t DH, int64_t DW,
                        int64_t PT, int64_t PL, float lo, float hi) {
  const uint32_t *b = (const uint32_t *)blob;
  kiln::bcr::View v{b};
  const float *X = (const float *)x;
  float *Y = (float *)y;
  int64_t OHW = OH * OW;
  if (KH * KW > 1) {
    phased(v, X, Y, (const float *)bias, (const float *)residual, N, C, H, W, F, KH, KW, OH, OW, SH, SW, DH, DW, PT,
           PL, lo, hi);
    return;
  }
  // A 1x1 convolution reads the used channels' planes, packed per tile
  // (no tap is read twice, so reading in place gains nothing); a strided
  // or padded one first gathers its input pixels into planes of OH x OW.
  if (SH != 1 || SW != 1 || PT != 0 || PL != 0 || OH != H || OW != W) {
    Buffer &S = scratch(5);
    grow(S, N * C * OHW);
    parallelRuns(N * C, [&](int64_t nc) {
      for (int64_t oh = 0; oh < OH; ++oh) {
        float *d = S.data() + nc * OHW + oh * OW;
        int64_t ih = oh * SH - PT;
        if (ih < 0 || ih >= H) std::fill(d, d + OW, 0.0f);
        else gatherRun(X + (nc * H + ih) * W, W, -PL, SW, OW, d);
      }
    });
    X = S.data(), H = OH, W = OW;
  }
  // Partial sums of several chunks are kept in y: a residual sharing y's
  // memory would be overwritten before the last chunk reads it.
  const float *res = (const float *)residual;
  Buffer &resCopy = scratch(4);
  if (res && v.chunks() > 1 && res < Y + N * F * OHW && Y < res + N * F * OHW) {
    resCopy.assign(res, res + N * F * OHW);
    res = resCopy.data();
  }
  for (int64_t n = 0; n < N; ++n) {
    const float *xn = X + n * C * H * W;
    BcrInput in{xn, H * W, v.used(), false};
    BcrOutput out{Y + n * F * OHW, OHW, 1, (const float *)bias, res ? res + n * F * OHW : nullptr, lo, hi};
    bcrGemm(b, OHW, in, out);
  }
}

void kiln_rt_matmul_bcr(intptr_t a, intptr_t blob, intptr_t y, int64_t batch, int64_t M, int64_t N,
                        int64_t K, int64_t strideA, int64_t lda, int64_t transA, int64_t strideY,
                        int64_t ldy, intptr_t bias, float lo, float hi) {
  kiln_rt_matmul_bcr_act(a, blob, y, batch, M, N, K, strideA, lda, transA, strideY, ldy, bias, lo, hi, 0);
}

void kiln_rt_matmul_bcr_act(intptr_t a, intptr_t blob, intptr_t y, int64_t batch, int64_t M, int64_t N,
                            int64_t K, int64_t strideA, int64_t lda, int64_t transA, int64_t strideY,
                            int64_t ldy, intptr_t bias, float lo, float hi, int64_t act) {
  const uint32_t *b = (const uint32_t *)blob;
  kiln::bcr::View v{b};
  const float *A = (const float *)a;
  float *Y = (float *)y;
  // Y_i^T [N, M] = W [N, K] * op(A_i)^T [K, M]: the spatial axis is M.
  // op(A) = A: element (k, m) of op(A)^T is A[m * lda + k] (transposed
  // input); op(A) = A^T: it is A[k * lda + m]. Y^T goes to a scratch
  // buffer with whole-vector stores, then is transposed into Y in 4 x 8
  // blocks (storing it transposed directly strides the cache sets).
  Buffer &t = scratch(4);
  grow(t, N * M);
  for (int64_t i = 0; i < batch; ++i) {
    BcrInput in{A + i * strideA, lda, v.used(), transA == 0};
    BcrOutput out{t.data(), M, 1, (const float *)bias, nullptr, lo, hi};
    bcrGemm(b, M, in, out);
    float *Yi = Y + i * strideY;
    const float *T = t.data();
    parallelFor((M + 7) / 8, [&](int64_t mb) {
      int64_t m0 = mb * 8, mc = std::min<int64_t>(8, M - m0);
      int64_t r = 0;
      if (mc == 8)
        for (; r + 4 <= N; r += 4) {
          v8f a[4] = {load8(T + r * M + m0), load8(T + (r + 1) * M + m0), load8(T + (r + 2) * M + m0),
                      load8(T + (r + 3) * M + m0)};
          storeTransposed4x8(a, Yi + m0 * ldy + r, ldy, 8);
        }
      for (; r < N; ++r)
        for (int64_t m = m0; m < m0 + mc; ++m) Yi[m * ldy + r] = T[r * M + m];
      // The activation on the rows just written (in cache), as the dense
      // kernel applies it to each tile.
      if (act) actTile(Yi + m0 * ldy, ldy, mc, N, (int)act);
    });
  }
  (void)K;
}

} // extern "C"
