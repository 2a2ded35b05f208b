// Dense microkernels called from compiled models (kiln_rt_*).
//
// GEMM is packed and register-blocked: B is packed into panels of NR
// columns, A into panels of MR rows, and an MR x NR tile of C lives in
// vector registers across the K loop (GCC/Clang vector extensions: AVX2 on
// x86-64, NEON on aarch64). Convolutions go through GEMM (1x1 directly,
// others via im2col); depthwise convolutions have their own loops.
// Tiles are spread over the current context's thread pool.
#include "kernels.h"
#include "kiln/gemm_layout.h"

#include <algorithm>
#include <array>
#include <cassert>
#include <map>
#include <memory>
#include <mutex>
#include <tuple>
#include <limits>
#include "simd.h"
#include "thread_pool.h"
#if defined(__x86_64__)
#include "window3.h"
#endif

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <sys/mman.h>
#include <unistd.h>
#include <vector>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace kiln::rt {
namespace {

using gemm::MC;
using gemm::MR;
using gemm::NC;
using gemm::NR;

/// Asks for the lines of a tile's rows of C (to be written) and of the
/// residual (to be read) while the tile's K loop runs: rows of C are a
/// plane apart in a conv, so neither stream is one the hardware prefetcher
/// follows (ResNet-50's 56x56 1x1 convs with a fused residual spent a third
/// of their time waiting for those lines).
inline void prefetchTile(float *c, int64_t ldc, int rows, const float *residual, int64_t row0, int64_t col0,
                         int lines) {
  for (int i = 0; i < rows; ++i)
    for (int l = 0; l < lines; ++l) {
      __builtin_prefetch(c + i * ldc + 16 * l, 1);
      if (residual) __builtin_prefetch(residual + (row0 + i) * ldc + col0 + 16 * l, 0);
    }
}

/// C[MR x NR] (+)= Apanel[kc x MR] * Bpanel[kc x NR]; packed panels. On
/// the last K block, `ep` adds a bias per row and clamps as it stores.
/// NV: vectors of 8 columns computed (2; 1 for a last panel of at most 8
/// columns, e.g. N = 49: half the multiply-adds instead of wasted ones).
/// rows (Ind): row p of the B panel at b + rows[p] instead of b + p * ldb.
template <int NV, bool Ind = false>
void microKernelN(int64_t kc, const float *a, const float *b, int64_t ldb, float *c, int64_t ldc, bool accumulate,
                  int m, int n, const Epilogue *ep, int64_t row0, int64_t col0, const int64_t *rows = nullptr) {
  v8f acc[MR][2];
  for (int i = 0; i < MR; ++i) acc[i][0] = acc[i][1] = v8f{};
  prefetchTile(c, ldc, m, ep ? ep->residual : nullptr, row0, col0, 1);
  // Deep products (kc > 64) ask for B's row 32 k ahead (2 KiB into a
  // packed panel; near the panel's end, the next panel's first rows). On a
  // Zen 3 core, calls alternating in one process: BERT's GEMMs 0-6% faster
  // (in all 6 comparisons of two builds, each order); convs no different
  // within the noise.
  const int64_t ahead = kc > 64 ? 32 * ldb : 0;
  // Unrolled 4 times: against the plain loop (one k per iteration), in
  // calls alternating in one process on a Zen 3 core, BERT's GEMMs took
  // 0.92-0.95x the time (two copies of one build: within 3%); ResNet-50's
  // 1x1 and stride-2 3x3 convs 0.93-1.0x, inside that harness's noise for
  // convs (two copies of one build: 0.92-1.03x).
#pragma GCC unroll 4
  for (int64_t p = 0; p < kc; ++p) {
    const float *bp = Ind ? b + rows[p] : b + p * ldb;
    if constexpr (!Ind) __builtin_prefetch(addrAt(bp, ahead)); // it may lie past B
    v8f b0 = load8(bp), b1 = NV == 2 ? load8(bp + 8) : v8f{};
    const float *ap = a + p * MR;
    for (int i = 0; i < MR; ++i) {
      v8f ai = splat(ap[i]);
      acc[i][0] += ai * b0;
      if (NV == 2) acc[i][1] += ai * b1;
    }
  }
  if (ep) {
    v8f cb0{}, cb1{};
    if (ep->colBias)
      for (int j = 0; j < n; ++j) setLane(cb0, cb1, j, ep->colBias[col0 + j]);
    for (int i = 0; i < MR; ++i) {
      float bias = ep->rowBias && i < m ? ep->rowBias[row0 + i] : 0.0f;
      v8f r0{}, r1{};
      if (ep->residual && i < m) {
        // The residual tile, same place and leading dimension as C's.
        const float *ri = ep->residual + (row0 + i) * ldc + col0;
        if (n == NR) r0 = load8(ri), r1 = load8(ri + 8);
        else
          for (int j = 0; j < n; ++j) setLane(r0, r1, j, ri[j]);
      }
      if (accumulate) {
        // Partial sums of the earlier K blocks are in C already.
        v8f c0{}, c1{};
        if (i < m && n == NR) c0 = load8(c + i * ldc), c1 = load8(c + i * ldc + 8);
        else if (i < m)
          for (int j = 0; j < n; ++j) setLane(c0, c1, j, c[i * ldc + j]);
        acc[i][0] += c0;
        acc[i][1] += c1;
      }
      acc[i][0] = vclamp(acc[i][0] + bias + cb0 + r0, splat(ep->lo), splat(ep->hi));
      acc[i][1] = vclamp(acc[i][1] + bias + cb1 + r1, splat(ep->lo), splat(ep->hi));
    }
    accumulate = false;
  }
  if (m == MR && n == NR) {
    for (int i = 0; i < MR; ++i) {
      float *ci = c + i * ldc;
      if (accumulate) {
        store8(ci, load8(ci) + acc[i][0]);
        store8(ci + 8, load8(ci + 8) + acc[i][1]);
      } else {
        store8(ci, acc[i][0]);
        store8(ci + 8, acc[i][1]);
      }
    }
    return;
  }
  float tile[MR][NR];
  for (int i = 0; i < MR; ++i) {
    store8(tile[i], acc[i][0]);
    store8(tile[i] + 8, acc[i][1]);
  }
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < n; ++j)
      c[i * ldc + j] = accumulate ? c[i * ldc + j] + tile[i][j] : tile[i][j];
}

/// Stores a last panel's NC <= 4 columns (tile[j][i]: row i, column j;
/// m rows) with microKernelN's epilogue.
template <int NC>
void storeCols(const float (&tile)[NC][8], float *c, int64_t ldc, bool accumulate, int m, const Epilogue *ep,
               int64_t row0, int64_t col0) {
  if (!ep) {
    for (int i = 0; i < m; ++i)
      for (int j = 0; j < NC; ++j) c[i * ldc + j] = accumulate ? c[i * ldc + j] + tile[j][i] : tile[j][i];
    return;
  }
  // ep's fields in locals (the stores to C could alias them: read through
  // ep, they were loaded again for every value).
  const float *rowBias = ep->rowBias, *colBias = ep->colBias, *residual = ep->residual;
  const float lo = ep->lo, hi = ep->hi;
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < NC; ++j) {
      float v = tile[j][i], &out = c[i * ldc + j];
      if (accumulate) v += out;
      float r = residual ? residual[(row0 + i) * ldc + col0 + j] : 0.0f;
      v = v + (rowBias ? rowBias[row0 + i] : 0.0f) + (colBias ? colBias[col0 + j] : 0.0f) + r;
      out = std::min(std::max(v, lo), hi);
    }
}

/// The same product for a last panel of NC <= 4 columns (e.g. N = 49
/// leaves 1, N = 196 leaves 4): the panel's 6 rows of A are one vector per
/// k (its lanes 6-7, the next values, are dropped; packed A has
/// gemm::kASlack floats after it), one column at a time, successive k in
/// 8 accumulators (k mod 8: one chain was bound by the FMA latency) added
/// in order at the end. colKernelWide sums in the same order with
/// AVX-512. Same epilogue as microKernelN.
template <int NC>
void microKernelCols(int64_t kc, const float *a, const float *b, int64_t ldb, float *c, int64_t ldc,
                     bool accumulate, int m, const Epilogue *ep, int64_t row0, int64_t col0) {
  float tile[NC][8];
  for (int j = 0; j < NC; ++j) {
    v8f acc[8];
    for (int s = 0; s < 8; ++s) acc[s] = v8f{};
    int64_t p = 0;
    for (; p + 8 <= kc; p += 8)
      for (int s = 0; s < 8; ++s) acc[s] += load8(a + (p + s) * MR) * splat(b[(p + s) * ldb + j]);
    for (int s = 0; p < kc; ++p, ++s) acc[s] += load8(a + p * MR) * splat(b[p * ldb + j]);
    v8f sum = acc[0];
    for (int s = 1; s < 8; ++s) sum += acc[s];
    store8(tile[j], sum);
  }
  storeCols<NC>(tile, c, ldc, accumulate, m, ep, row0, col0);
}

void microKernel(int64_t kc, const float *a, const float *b, int64_t ldb, float *c, int64_t ldc, bool accumulate,
                 int m, int n, const Epilogue *ep, int64_t row0, int64_t col0) {
  switch (n) {
  case 1: return microKernelCols<1>(kc, a, b, ldb, c, ldc, accumulate, m, ep, row0, col0);
  case 2: return microKernelCols<2>(kc, a, b, ldb, c, ldc, accumulate, m, ep, row0, col0);
  case 3: return microKernelCols<3>(kc, a, b, ldb, c, ldc, accumulate, m, ep, row0, col0);
  case 4: return microKernelCols<4>(kc, a, b, ldb, c, ldc, accumulate, m, ep, row0, col0);
  default: break;
  }
  if (n <= 8) microKernelN<1>(kc, a, b, ldb, c, ldc, accumulate, m, n, ep, row0, col0);
  else microKernelN<2>(kc, a, b, ldb, c, ldc, accumulate, m, n, ep, row0, col0);
}

#if defined(__x86_64__)
/// The software prefetches of one call of wideKernel; sgemm's `block`
/// picks them per tile.
struct TilePrefetch {
  /// > 0: ask for B's rows `bAhead` k further on as it goes. sgemm
  /// passes it on the first row tiles under a B panel (the row tiles after
  /// it find the panel in L1). A packed B (constant weights, from L3 or
  /// memory), 64 ahead: BERT's GEMMs 1.02-1.05x as fast. B read in place
  /// (a conv's input, a row per plane: each row its own page, so the
  /// hardware prefetchers do not follow), 16 ahead for deep products (the
  /// shallow ones, kc <= 64, walk C by rows and pass 0; 64 ahead there
  /// made MobileNetV2's 112x112 projection 1.6x slower): ResNet-50's 256
  /// -> 64 1x1 conv at 56x56 1.15x as fast, MobileNetV2's 14x14
  /// projections 1.1-1.2x, the model 1-2% (1 thread).
  int64_t bAhead = 0;
  /// > 0: the same for A's panels (a1's run on into the next pair's a0).
  /// sgemm passes 128 on the first column tiles of a block whose A was
  /// packed ahead (conv weights: the first pass reads them from L3 or
  /// memory; a 512 x 49 x 2048 product ran 0.7x as fast with its weights
  /// cold as hot): ResNet-50 at 1 thread 0.965x the time, 2 threads and
  /// MobileNetV2 no different.
  int64_t aAhead = 0;
  /// A B panel (in place, same ldb) to bring into L1 as it goes, 2 lines
  /// per k: sgemm passes the next panel of a shallow product (kc <= 64),
  /// whose tiles walk C along its rows, so that the next tile finds it
  /// there (a conv's rows a plane apart, which the hardware prefetchers do
  /// not follow): ResNet-50's 64 -> 256 1x1 convs at 56x56 0.83-0.92x the
  /// time at 1 thread, MobileNetV2 0.96-0.97x at 2.
  const float *nextB = nullptr;
  /// The A panels of the block this thread runs next (at nextA and nextA
  /// + nextA1, in the same buffer as a0 and a1), brought into L2 every
  /// other k (48 bytes a step, so every line). sgemm passes them on the
  /// last whole-width column tile of each block of constant weights when
  /// the model's weights come from memory (weightsStreamed), so that the
  /// block's first column tiles, which run at its first reading of A,
  /// find it in L2. One core reads memory at about 16 GB/s (Intel
  /// machine), and those first tiles alone would need 4 bytes a cycle:
  /// ResNet-50's 7x7 1x1 convs (N = 49, 4 MB of weights each) ran at
  /// memory speed in their first column tile. With it, ResNet-50 took
  /// 0.92-0.96x the time at 1 thread and 0.97x at 2 (its 7x7 convs 0.88-0.94x,
  /// its 14x14 ones 0.94-0.97x). Not where the weights stay in cache:
  /// MobileNetV2's 7x7 convs took 1.03-1.08x the time with it. Every k
  /// rather than every other, or on the last column tile (where that is a
  /// load-bound 12 x 16 tile), was slower.
  const float *nextA = nullptr;
  int64_t nextA1 = 0;
  /// Lines of constant weights packed as B to bring into L2, one every k
  /// from nextL2 (16 floats apart) for the first nextL2N k: sgemm passes
  /// a slice of the next column panel pair on each of the row tiles after
  /// the first under a pair (weights read from memory: weightsStreamed).
  /// The first row tile under a pair reads it from memory (bAhead), and
  /// would need 10 bytes a cycle there, the later ones none: BERT-base's
  /// weight GEMMs (440 MB of weights) took 0.94-0.97x the time, the model
  /// 0.955x at 1 thread and 0.96x at 2 (Intel machine, alternating
  /// profiles). A prefetch of the next panel during the later row tiles
  /// had been tried in session 18 in a harness, within its noise.
  const float *nextL2 = nullptr;
  int64_t nextL2N = 0;
};

/// C[6*AP x 16*BQ] (+)= AP A panels (rows 0-5 at a0, 6-11 at a1) times BQ
/// B panels (columns 0-15 at b0, 16-31 at b1, 32-47 as far past b1 as b1
/// is past b0; ldb floats from one k to the next) in AVX-512 registers.
/// The 12 x 32 form holds 24 accumulators of 16 floats and issues 2 loads
/// and 12 broadcasts per 24 FMAs, where the 6 x 16 AVX2 tile needs 8 loads
/// per 12; the 6 x 48 form (18 accumulators) takes blocks 3 panels wide
/// (N = 49: 48 + 1), the smaller forms the rest of a block whose columns
/// end in whole panels. Only the first `rows` (<= 6 * AP) rows are stored: a block's last
/// 1-11 rows run here too (their panels are zero-padded past M), where
/// the 6 x 16 AVX2 tile took half the throughput (M = 16, 32, 64, 160,
/// 320: MobileNetV2's projections). Used when the CPU has AVX-512F
/// (run-time check; the packed layout is the same). Same summation order
/// and epilogue as microKernelN, so results are identical bit for bit.
/// pf: the software prefetches (TilePrefetch), each measured on an Intel
/// core where sgemm passes it.
template <int AP, int BQ>
__attribute__((target("avx512f"))) void wideKernel(int64_t kc, const float *a0, const float *a1, const float *b0,
                                                   const float *b1, int64_t ldb, float *c, int64_t ldc,
                                                   bool accumulate, const Epilogue *ep, int64_t row0, int64_t col0,
                                                   int rows, const TilePrefetch &prefetch) {
  // Locals, so that the loop keeps them in registers: the next block's
  // panels as distances from a0 and a1 (same buffer).
  const int64_t bAhead = prefetch.bAhead, aAhead = prefetch.aAhead;
  const float *nextB = prefetch.nextB, *nextL2 = prefetch.nextL2;
  const int64_t nextL2N = prefetch.nextL2N;
  const bool nextA = prefetch.nextA;
  // (As integers: nextA's second panel may lie past the buffer.)
  const auto at = [](const float *p) { return int64_t(reinterpret_cast<uintptr_t>(p)) / int64_t(sizeof(float)); };
  const int64_t nextA0 = nextA ? at(prefetch.nextA) - at(a0) : 0,
                nextA1 = nextA ? at(prefetch.nextA) + prefetch.nextA1 - at(a1) : 0;
  typedef float v16 __attribute__((vector_size(64)));
  constexpr int R = AP * MR;
  // BQ = 3: the third panel as far past b1 as b1 is past b0.
  [[maybe_unused]] const int64_t bStep = b1 - b0;
  v16 acc[R][BQ];
  for (int i = 0; i < R; ++i)
    for (int h = 0; h < BQ; ++h) acc[i][h] = v16{};
  prefetchTile(c, ldc, rows, ep ? ep->residual : nullptr, row0, col0, BQ);
  for (int64_t p = 0; p < kc; ++p) {
    // Addresses formed as integers, not pointers: they may lie past the
    // operands (prefetches never fault).
    if (nextB) {
      __builtin_prefetch(addrAt(nextB, p * ldb), 0, 3);
      __builtin_prefetch(addrAt(nextB, p * ldb + 16), 0, 3);
    }
    if (aAhead) {
      __builtin_prefetch(addrAt(a0, (p + aAhead) * MR));
      if (AP == 2) __builtin_prefetch(addrAt(a1, (p + aAhead) * MR));
    }
    // Into L2, every other k (48 bytes a step, so every line).
    if (nextA && !(p & 1)) {
      __builtin_prefetch(addrAt(a0, p * MR + nextA0), 0, 2);
      if (AP == 2) __builtin_prefetch(addrAt(a1, p * MR + nextA1), 0, 2);
    }
    if (p < nextL2N) __builtin_prefetch(addrAt(nextL2, p * 16), 0, 2);
    if (bAhead) {
      __builtin_prefetch(addrAt(b0, (p + bAhead) * ldb));
      if (BQ >= 2) __builtin_prefetch(addrAt(b1, (p + bAhead) * ldb));
      if (BQ == 3) __builtin_prefetch(addrAt(b1, (p + bAhead) * ldb + bStep));
    }
    v16 x[BQ];
    std::memcpy(&x[0], b0 + p * ldb, sizeof x[0]);
    if (BQ >= 2) std::memcpy(&x[1], b1 + p * ldb, sizeof x[0]);
    if (BQ == 3) std::memcpy(&x[2], b1 + p * ldb + bStep, sizeof x[0]);
    for (int i = 0; i < R; ++i) {
      float e = i < MR ? a0[p * MR + i] : a1[p * MR + i - MR];
      v16 s = {e, e, e, e, e, e, e, e, e, e, e, e, e, e, e, e};
      for (int h = 0; h < BQ; ++h) acc[i][h] += s * x[h];
    }
  }
  // The epilogue's operands in locals, read once: the stores to C could
  // alias them, so read through ep they were loaded again for every
  // vector (with a test each), a third of a shallow tile's time.
  const float *rowBias = ep ? ep->rowBias : nullptr, *residual = ep ? ep->residual : nullptr;
  const float lo = ep ? ep->lo : 0.0f, hi = ep ? ep->hi : 0.0f;
  const v16 vlo = {lo, lo, lo, lo, lo, lo, lo, lo, lo, lo, lo, lo, lo, lo, lo, lo};
  const v16 vhi = {hi, hi, hi, hi, hi, hi, hi, hi, hi, hi, hi, hi, hi, hi, hi, hi};
  v16 cb[BQ] = {};
  if (ep && ep->colBias)
    for (int h = 0; h < BQ; ++h) std::memcpy(&cb[h], ep->colBias + col0 + 16 * h, sizeof cb[h]);
  for (int i = 0; i < rows; ++i) {
    const float bias = rowBias ? rowBias[row0 + i] : 0.0f;
    for (int h = 0; h < BQ; ++h) {
      float *ci = c + i * ldc + 16 * h;
      v16 v = acc[i][h], old;
      if (accumulate) {
        std::memcpy(&old, ci, sizeof old);
        v += old;
      }
      if (ep) {
        v16 r{};
        if (residual) std::memcpy(&r, residual + (row0 + i) * ldc + col0 + 16 * h, sizeof r);
        v = v + bias + cb[h] + r;
        v = v < vlo ? vlo : v;
        v = vhi < v ? vhi : v;
      }
      std::memcpy(ci, &v, sizeof v);
    }
  }
}

/// The last NC <= 4 columns of B (ldb apart from one k to the next) laid
/// out for colKernelWide, for k in [0, kc): per group of 8 k and column j,
/// 48 floats, float f being B's (k = 8 g + f / 6, j): the k that the
/// packed A panel's float f of that group multiplies (row f % 6). Zeros
/// past kc.
__attribute__((target("avx512f"))) void colPatterns(int64_t kc, const float *b, int64_t ldb, int nc, float *pat) {
  // Float f of a group repeats the group's k = f / 6: 3 shuffles of its 8 values.
  // (__builtin_shufflevector: GCC 12 and Clang alike.)
  typedef float v16 __attribute__((vector_size(64)));
  for (int64_t g = 0; g < (kc + 7) / 8; ++g)
    for (int j = 0; j < nc; ++j, pat += 48) {
      v16 x = {};
      for (int s = 0; s < 8 && 8 * g + s < kc; ++s) x[s] = b[(8 * g + s) * ldb + j];
      const v16 p0 = __builtin_shufflevector(x, x, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2),
                p1 = __builtin_shufflevector(x, x, 2, 2, 3, 3, 3, 3, 3, 3, 4, 4, 4, 4, 4, 4, 5, 5),
                p2 = __builtin_shufflevector(x, x, 5, 5, 5, 5, 6, 6, 6, 6, 6, 6, 7, 7, 7, 7, 7, 7);
      std::memcpy(pat, &p0, sizeof p0);
      std::memcpy(pat + 16, &p1, sizeof p1);
      std::memcpy(pat + 32, &p2, sizeof p2);
    }
}

/// microKernelCols for AP A panels (rows 0-5 at a0, 6-11 at a1) with
/// AVX-512: a group of 8 k of a panel is 48 consecutive floats, 3 vectors,
/// each multiplied by its column's pattern (colPatterns) into its own
/// accumulator, so that each lane sums one (k mod 8, row) over the groups,
/// as microKernelCols' accumulators do; the 8 sums of a row are then added
/// in order. Per 8 k and 6 rows: 3 loads of A and 3 FMAs per column, where
/// microKernelCols takes 8 loads of A, 8 broadcasts and 8 FMAs (8 lanes).
/// The same values as microKernelCols (the sign of a zero aside: past kk
/// the last group adds 0 * 0, which turns a -0 sum into +0). kk: a K
/// sub-block starting at a multiple of 8 (pat: its groups).
template <int NC, int AP>
__attribute__((target("avx512f"))) void colKernelWide(int64_t kk, const float *a0, const float *a1,
                                                      const float *pat, float *c, int64_t ldc, bool accumulate,
                                                      int rows, const Epilogue *ep, int64_t row0, int64_t col0) {
  typedef float v16 __attribute__((vector_size(64)));
  v16 acc[AP][NC][3];
  for (int q = 0; q < AP; ++q)
    for (int j = 0; j < NC; ++j)
      for (int v = 0; v < 3; ++v) acc[q][j][v] = v16{};
  auto step = [&](const float *const (&a)[AP], const float *pg) {
    v16 x[AP][3];
    for (int q = 0; q < AP; ++q)
      for (int v = 0; v < 3; ++v) std::memcpy(&x[q][v], a[q] + 16 * v, sizeof x[q][v]);
    for (int j = 0; j < NC; ++j)
      for (int v = 0; v < 3; ++v) {
        v16 pv;
        std::memcpy(&pv, pg + j * 48 + 16 * v, sizeof pv);
        for (int q = 0; q < AP; ++q) acc[q][j][v] += x[q][v] * pv;
      }
  };
  const int64_t groups = kk / 8;
  for (int64_t g = 0; g < groups; ++g) {
    const float *a[AP];
    for (int q = 0; q < AP; ++q) a[q] = (q ? a1 : a0) + g * 48;
    step(a, pat + g * NC * 48);
  }
  if (const int64_t tail = (kk - 8 * groups) * MR) {
    // The last k (fewer than 8): A's next floats as zeros (the pattern is
    // zero there too, so those lanes add 0).
    float buf[AP][48] = {};
    const float *a[AP];
    for (int q = 0; q < AP; ++q) {
      std::memcpy(buf[q], (q ? a1 : a0) + groups * 48, tail * sizeof(float));
      a[q] = buf[q];
    }
    step(a, pat + groups * NC * 48);
  }
  for (int q = 0; q < AP; ++q) {
    float tile[NC][8];
    for (int j = 0; j < NC; ++j) {
      // Row r's 8 sums are floats r, r + 6, ..., r + 42: added in order,
      // 6 rows at a time.
      alignas(64) float t[48 + 2] = {}; // (the last load's lanes 6-7 read 2 past: dropped)
      std::memcpy(t, acc[q][j], 48 * sizeof(float));
      __m256 sum = _mm256_loadu_ps(t);
      for (int s = 1; s < 8; ++s) sum = _mm256_add_ps(sum, _mm256_loadu_ps(t + 6 * s));
      _mm256_storeu_ps(tile[j], sum);
    }
    const int m = std::min(MR, rows - q * MR);
    if (m > 0) storeCols<NC>(tile, c + q * MR * ldc, ldc, accumulate, m, ep, row0 + q * MR, col0);
  }
}
#endif

/// Element (i, k) of op(A) with op(A) = A or A^T, A row-major with lda.
inline float aAt(const float *A, int64_t lda, bool trans, int64_t i, int64_t k) {
  return trans ? A[k * lda + i] : A[i * lda + k];
}

void packA(const float *A, int64_t lda, bool trans, int64_t i0, int64_t mc, int64_t k0, int64_t kc,
           float *out) {
  for (int64_t ip = 0; ip < mc; ip += MR) {
    int m = (int)std::min<int64_t>(MR, mc - ip);
    for (int64_t p = 0; p < kc; ++p)
      for (int i = 0; i < MR; ++i)
        *out++ = i < m ? aAt(A, lda, trans, i0 + ip + i, k0 + p) : 0.0f;
  }
}

void packB(const float *B, int64_t ldb, bool trans, int64_t k0, int64_t kc, int64_t j0, int64_t nc,
           float *out, const int64_t *rows = nullptr) {
  if (!trans) {
    // Row by row: each row of B is read once, in order (prefetchable),
    // and scattered to the panels (in cache); walking panel by panel
    // instead reads 64 bytes per row of B, one page apart each.
    const int64_t full = nc / NR * NR;
    for (int64_t p = 0; p < kc; ++p) {
      const float *row = B + (rows ? rows[k0 + p] : (k0 + p) * ldb) + j0;
      float *o = out + p * NR;
      for (int64_t jp = 0; jp < full; jp += NR, o += kc * NR) {
        store8(o, load8(row + jp));
        store8(o + 8, load8(row + jp + 8));
      }
      if (full < nc)
        for (int j = 0; j < NR; ++j) o[j] = full + j < nc ? row[full + j] : 0.0f;
    }
    return;
  }
  for (int64_t jp = 0; jp < nc; jp += NR) {
    int n = (int)std::min<int64_t>(NR, nc - jp);
    for (int64_t p = 0; p < kc; ++p) {
      for (int j = 0; j < NR; ++j) {
        float v = 0.0f;
        if (j < n) v = B[(j0 + jp + j) * ldb + k0 + p];
        *out++ = v;
      }
    }
  }
}

/// d[0, n) = s[0, n), inline (row copies of a few floats: a call to
/// memcpy costs more than the copy).
inline void copyFloats(float *d, const float *s, int64_t n) {
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) store8(d + j, load8(s + j));
  for (; j < n; ++j) d[j] = s[j];
}

/// V accumulators of 8 consecutive outputs of the flattened phase grid
/// (see planeWindows) over all taps: V independent chains. Max: the
/// maximum of the taps (max pooling); else b0 + the taps weighted by wc
/// (depthwise convolution).
template <bool Max, int V>
inline void windowBlock(const float *base, const int64_t *tapOff, const float *wc, int64_t KK, float b0,
                        bool clamp, float lo, float hi, float *out) {
  v8f acc[V];
  for (int i = 0; i < V; ++i) acc[i] = splat(Max ? -std::numeric_limits<float>::infinity() : b0);
  for (int64_t t = 0; t < KK; ++t) {
    const float *p = base + tapOff[t];
    if constexpr (Max) {
      for (int i = 0; i < V; ++i) {
        v8f x = load8(p + 8 * i);
        acc[i] = (acc[i] < x) | (x != x) ? x : acc[i]; // NaN propagates, as ONNX's max
      }
    } else {
      v8f w = splat(wc[t]);
      for (int i = 0; i < V; ++i) acc[i] += w * load8(p + 8 * i);
    }
  }
  for (int i = 0; i < V; ++i)
    store8(out + 8 * i, clamp ? vclamp(acc[i], splat(lo), splat(hi)) : acc[i]);
}

/// A window op on every plane of X [N*C, H, W], parallel over planes:
/// depthwise convolution (one filter per channel, Max false) or max
/// pooling (Max true; the padding then holds -inf instead of zeros).
/// Each input plane is first copied into a zero-padded scratch buffer split
/// into SH x SW phase planes (phase (qr, qc) holds padded rows qr, qr+SH,
/// ... and columns qc, qc+SW, ...), each PWs = OW + (KW-1)*DW/SW columns
/// wide. Tap (kh, kw) of output (oh, ow) then reads phase
/// (kh*DH % SH, kw*DW % SW) at row oh + kh*DH/SH, column ow + kw*DW/SW: in
/// the flattened phase plane, output index o = oh*PWs + ow reads o plus a
/// fixed offset per tap. So the whole plane is one 1-d loop of unit-stride
/// vectors with no bounds tests and 8 independent accumulators (the
/// PWs - OW columns past each row's end are computed and dropped), and the
/// rows are copied out at the end. Bias and clamp are applied in registers.
template <bool Max>
void planeWindows(const float *X, const float *Wt, const float *Bs, float *Y, int64_t N, int64_t C, int64_t H,
                  int64_t W, int64_t KH, int64_t KW, int64_t OH, int64_t OW, int64_t SH, int64_t SW, int64_t DH,
                  int64_t DW, int64_t PT, int64_t PL, bool clamp, float lo, float hi) {
  constexpr int64_t BV = 8; // vectors per block
  const int64_t PWs = OW + (KW - 1) * DW / SW, PHs = OH + (KH - 1) * DH / SH;
  const int64_t L = OH * PWs, Lr = (L + 8 * BV - 1) / (8 * BV) * (8 * BV);
  // Phase planes, each followed by zeros for the last block's reads (up to
  // Lr - L + (PWs - OW) - 1 past the plane).
  const int64_t PS = PHs * PWs + Lr - L + PWs;
  const int64_t KK = KH * KW;
  std::vector<int64_t> tapOff(KK);
  for (int64_t kh = 0; kh < KH; ++kh)
    for (int64_t kw = 0; kw < KW; ++kw) {
      int64_t rh = kh * DH, rw = kw * DW;
      tapOff[kh * KW + kw] = ((rh % SH) * SW + rw % SW) * PS + (rh / SH) * PWs + rw / SW;
    }
  // Padded columns a phase row holds: [0, SW * PWs); rows: [0, SH * PHs).
  const int64_t x0 = PL, x1 = std::min(W + PL, SW * PWs);
  // Tasks of several planes when planes are small (a task's set-up and the
  // pool's dispatch cost about as much as a 7x7 plane), 4 per thread at least.
  const int64_t NC = N * C;
  if (NC == 0 || OH * OW == 0) return;
  const int64_t per = std::max<int64_t>(
      1, std::min<int64_t>(4096 / (OH * OW) + 1, NC / (4 * currentThreads())));
  parallelFor((NC + per - 1) / per, [&](int64_t task) {
    // The copy below rewrites the same cells for every plane of one
    // geometry and leaves the rest zero (-inf for pooling): fill the buffer
    // only when this thread's last plane had another geometry or op.
    static thread_local std::vector<float> padBuf, outBuf;
    static thread_local std::array<int64_t, 10> padGeometry{};
    std::array<int64_t, 10> geometry{PHs, PWs, PS, SH, SW, H, W, PT, PL, Max};
    if (geometry != padGeometry || padBuf.size() != (size_t)(SH * SW * PS)) {
      padBuf.assign(SH * SW * PS, Max ? -std::numeric_limits<float>::infinity() : 0.0f);
      padGeometry = geometry;
    }
    if (outBuf.size() < (size_t)Lr) outBuf.resize(Lr);
    float *pad = padBuf.data(), *out = outBuf.data();
    for (int64_t nc = task * per; nc < std::min(NC, (task + 1) * per); ++nc) {
      int64_t c = nc % C;
      const float *xc = X + nc * H * W, *wc = Max ? nullptr : Wt + c * KK;
      float *yc = Y + nc * OH * OW;
      float b0 = Bs ? Bs[c] : 0.0f;
      // Padded row rr * SH + qr goes to row rr of row phase qr (no division:
      // this loop runs per row of every plane).
      for (int64_t qr = 0, rr = 0; qr < SH && x1 > x0; rr = (rr + 1 < PHs ? rr + 1 : (++qr, 0))) {
        int64_t ih = rr * SH + qr - PT;
        if (ih < 0 || ih >= H) continue;
        const float *row = xc + ih * W; // row[x - PL]: padded column x
        float *dst = pad + qr * SW * PS + rr * PWs; // column phase q at dst + q * PS
        if (SW == 1) {
          copyFloats(dst + x0, row + x0 - PL, x1 - x0);
          continue;
        }
        if (SW == 2) {
          // Even and odd columns, 8 of each per step (deinterleaved in registers).
          int64_t x = x0;
          if (x & 1) dst[PS + x / 2] = row[x - PL], ++x;
          for (; x + 16 <= x1; x += 16) {
            v8f lo8 = load8(row + x - PL), hi8 = load8(row + x - PL + 8);
            store8(dst + x / 2, everyOther<0>(lo8, hi8));
            store8(dst + PS + x / 2, everyOther<1>(lo8, hi8));
          }
          for (; x + 1 < x1; x += 2) dst[x / 2] = row[x - PL], dst[PS + x / 2] = row[x + 1 - PL];
          if (x < x1) dst[x / 2] = row[x - PL];
          continue;
        }
        for (int64_t q = 0; q < SW; ++q) // column phase q: padded columns q, q + SW, ...
          for (int64_t x = x0 + (q - x0 % SW + SW) % SW; x < x1; x += SW) dst[q * PS + x / SW] = row[x - PL];
      }
      int64_t o = 0;
      for (; o < Lr; o += 8 * BV)
        windowBlock<Max, BV>(pad + o, tapOff.data(), wc, KK, b0, clamp, lo, hi, out + o);
      for (int64_t oh = 0; oh < OH; ++oh) copyFloats(yc + oh * OW, out + oh * PWs, OW);
    }
  });
}

/// Depthwise K x K convolution (one filter per channel; Max: K x K max
/// pooling, padding -inf, no weights, NaN propagating) on channel blocks:
/// 8 channels at a time are transposed into a zero-padded [Hp][Wp][8]
/// buffer, each output is then K*K vector multiply-adds across the 8
/// channels (4 outputs of a row at once, the weights in registers), and
/// the [OH][OW][8] result is transposed back into the 8 planes. Per-plane
/// work (row copies, padding, edges) is shared by 8 channels, so small
/// planes (MobileNet's 14x14 and 7x7) run at the rate of large ones.
template <int K, bool Max>
void depthwiseBlocked(const float *X, const float *Wt, const float *Bs, float *Y, int64_t N, int64_t C, int64_t H,
                      int64_t W, int64_t OH, int64_t OW, int64_t SH, int64_t SW, int64_t DH, int64_t DW, int64_t PT,
                      int64_t PL, float lo, float hi) {
  const int64_t Hp = (OH - 1) * SH + (K - 1) * DH + 1, Wp = (OW - 1) * SW + (K - 1) * DW + 1;
  const int64_t groups = (C + 7) / 8;
  const float pad = Max ? -std::numeric_limits<float>::infinity() : 0.0f;
  parallelFor(N * groups, [&](int64_t task) {
    const int64_t n = task / groups, c0 = task % groups * 8;
    const int nc = int(std::min<int64_t>(8, C - c0));
    static thread_local std::vector<float> padBuf, outBuf;
    // 64 floats of slack: partial chunks are written (and read) as 8 columns.
    if (padBuf.size() < size_t(Hp * Wp * 8 + 64)) padBuf.resize(Hp * Wp * 8 + 64);
    if (outBuf.size() < size_t(OH * OW * 8 + 64)) outBuf.resize(OH * OW * 8 + 64);
    float *P = padBuf.data(), *O = outBuf.data();
    const float *x = X + (n * C + c0) * H * W;
    // Transpose in: padded column q holds input column q - PL. A row's
    // last, partial chunk of 8 columns is still transposed as 8 (reading
    // past the row within the input tensor, writing past the row into the
    // next one, which is written after it, or into the buffer's slack);
    // the right padding is zeroed after it.
    const int64_t q0 = std::min(Wp, std::max<int64_t>(0, PL)), q1 = std::max(q0, std::min(Wp, W + PL));
    const float *xEnd = X + N * C * H * W;
    for (int64_t r = 0; r < Hp; ++r) {
      float *row = P + r * Wp * 8;
      const int64_t ih = r - PT;
      if (ih < 0 || ih >= H) {
        std::fill(row, row + Wp * 8, pad);
        continue;
      }
      std::fill(row, row + q0 * 8, pad);
      const float *xr = x + ih * W; // column q reads xr[q - PL]
      int64_t q = q0;
      if (nc == 8)
        for (; q < q1 && (q + 8 <= q1 || xr + 7 * H * W + (q - PL) + 8 <= xEnd); q += 8) {
          v8f v[8];
          for (int k = 0; k < 8; ++k) v[k] = load8(xr + k * H * W + (q - PL));
          transpose8(v);
          for (int j = 0; j < 8; ++j) store8(row + (q + j) * 8, v[j]);
        }
      for (; q < q1; ++q)
        for (int k = 0; k < 8; ++k) row[q * 8 + k] = k < nc ? xr[k * H * W + (q - PL)] : pad;
      std::fill(row + q1 * 8, row + Wp * 8, pad);
    }
    v8f w[K * K], b = splat(pad);
    if constexpr (!Max) {
      for (int t = 0; t < K * K; ++t)
        for (int k = 0; k < 8; ++k) w[t][k] = k < nc ? Wt[(c0 + k) * K * K + t] : 0.0f;
      for (int k = 0; k < nc; ++k) b[k] = Bs ? Bs[c0 + k] : 0.0f;
    }
    // acc (+)= tap: a multiply-add, or a max that keeps NaN (as ONNX's).
    auto step = [&](v8f &acc, v8f x, int t) {
      if constexpr (Max) acc = (acc < x) | (x != x) ? x : acc;
      else acc += x * w[t];
    };
    const v8f vlo = splat(lo), vhi = splat(hi);
    for (int64_t oh = 0; oh < OH; ++oh) {
      const float *pr = P + oh * SH * Wp * 8;
      float *orow = O + oh * OW * 8;
      int64_t ow = 0;
      for (; ow + 4 <= OW; ow += 4) {
        v8f acc[4] = {b, b, b, b};
        for (int kh = 0; kh < K; ++kh)
          for (int kw = 0; kw < K; ++kw) {
            const float *pt = pr + (kh * DH * Wp + ow * SW + kw * DW) * 8;
            for (int j = 0; j < 4; ++j) step(acc[j], load8(pt + j * SW * 8), kh * K + kw);
          }
        for (int j = 0; j < 4; ++j) store8(orow + (ow + j) * 8, vclamp(acc[j], vlo, vhi));
      }
      for (; ow < OW; ++ow) {
        v8f acc = b;
        for (int kh = 0; kh < K; ++kh)
          for (int kw = 0; kw < K; ++kw) step(acc, load8(pr + (kh * DH * Wp + ow * SW + kw * DW) * 8), kh * K + kw);
        store8(orow + ow * 8, vclamp(acc, vlo, vhi));
      }
    }
    // Transpose out, row by row of the output planes.
    float *y = Y + (n * C + c0) * OH * OW;
    // A row's last, partial chunk is stored as 8 columns too, spilling into
    // the next rows of the same plane (written after it), unless the spill
    // would reach past the plane (into the next plane, maybe another task's).
    for (int64_t oh = 0; oh < OH; ++oh) {
      const float *orow = O + oh * OW * 8;
      int64_t ow = 0;
      if (nc == 8)
        for (; ow < OW && (oh * OW + ow + 8 <= OH * OW); ow += 8) {
          v8f v[8];
          for (int j = 0; j < 8; ++j) v[j] = load8(orow + (ow + j) * 8);
          transpose8(v);
          for (int k = 0; k < 8; ++k) store8(y + k * OH * OW + oh * OW + ow, v[k]);
        }
      for (; ow < OW; ++ow)
        for (int k = 0; k < nc; ++k) y[k * OH * OW + oh * OW + ow] = orow[ow * 8 + k];
    }
  });
}

#if defined(__x86_64__)
/// The direct depthwise 3 x 3 plane kernel (window3.h) for this geometry:
/// AVX-512 where the CPU has it, else AVX2 (blocks of 4 rows: 9 weights,
/// 4 accumulators and 3 taps in 16 ymm registers) where it beat the
/// channel-blocked kernel in MobileNetV2 on a Zen 3 core (1 thread, each
/// layer's minimum over 3 alternating profiles): stride 1 with rows of
/// more than 8 (56x56 and 28x28 0.73-0.75x the time, 14x14 0.88-0.93x,
/// 112x112 0.85x), stride 2 down to 28x28 or 14x14 (0.92x). Not rows of
/// at most 8 (7x7: 1.02-1.04x, the one chunk per row partial) nor the
/// 112x112 -> 56x56 stride 2 (1.19x, its input fresh from the expansion
/// conv). Null: the caller's other kernels.
DepthwisePlaneFn depthwisePlane(int64_t S, int64_t PL, int64_t H, int64_t W, int64_t OH, int64_t OW) {
  if (wideKernels()) return depthwisePlaneAvx512(S, PL, H, W, OH, OW);
  if (OW <= 8 || (S == 2 && OW > 28)) return nullptr;
  return depthwisePlaneFor<Avx2Vec, 4, 4, true>(S, PL, H, W, OH);
}

/// A depthwise 3 x 3 convolution with a plane kernel, parallel over runs
/// of planes. MobileNetV2's planes: 1.1-1.6x faster than the
/// channel-blocked and plane-window kernels with AVX-512.
void depthwiseDirect(DepthwisePlaneFn plane, const float *X, const float *Wt, const float *Bs, float *Y, int64_t NC,
                     int64_t C, int64_t H, int64_t W, int64_t OH, int64_t OW, int64_t PT, int64_t PL, float lo,
                     float hi) {
  parallelRuns(NC, [&](int64_t nc) {
    const int64_t c = nc % C;
    plane(X + nc * H * W, Wt + c * 9, Bs ? Bs[c] : 0.0f, Y + nc * OH * OW, H, W, OH, OW, PT, PL, lo, hi);
  });
}

/// A 3 x 3 convolution of an image with at most 4 channels with AVX-512
/// (window3.h's convSmallC3Rows: groups of 16 filters, wT laid out
/// [group][C * 9][16]), runs of output rows in parallel, each run one
/// filter group after the other (16 output planes written at a time). Its
/// AVX2 instantiation (8 filters at a time, masked loads and lane
/// shuffles per tap) ran MobileNetV2's stem 1.10-1.15x slower than im2col
/// + GEMM on a Zen 3 core; AVX2 CPUs run convSmallPhased instead.
void convSmallC3(int64_t S, const float *X, const float *wT, const float *Bs, const float *res, float *Y, int64_t C,
                 int64_t H, int64_t W, int64_t F, int64_t OH, int64_t OW, int64_t PT, int64_t PL, float lo, float hi) {
  const int64_t tasks = std::min<int64_t>(OH, 8 * int64_t(currentThreads())), per = (OH + tasks - 1) / tasks;
  parallelFor((OH + per - 1) / per, [&](int64_t t) {
    const int64_t oh0 = t * per, oh1 = std::min(OH, (t + 1) * per);
    for (int64_t g = 0; g < (F + 15) / 16; ++g)
      convSmallC3RowsAvx512(S, X, wT, Bs, res, Y, C, H, W, F, OH, OW, PT, PL, lo, hi, oh0, oh1, g);
  });
}
#endif


/// y[N] = a[K] * op(B)[K,N]: a GEMM with one row, memory-bound on B.
/// Parallel over column chunks; B^T rows are dot products, B rows axpys.
void gemv(int64_t N, int64_t K, const float *a, const float *B, int64_t ldb, bool transB, float *y) {
  constexpr int64_t chunk = 64;
  parallelFor((N + chunk - 1) / chunk, [&](int64_t t) {
    int64_t j0 = t * chunk, j1 = std::min(N, j0 + chunk);
    if (transB) {
      for (int64_t j = j0; j < j1; ++j) {
        const float *b = B + j * ldb;
        v8f acc0{}, acc1{};
        int64_t k = 0;
        for (; k + 16 <= K; k += 16) {
          acc0 += load8(a + k) * load8(b + k);
          acc1 += load8(a + k + 8) * load8(b + k + 8);
        }
        float sum = hsum(acc0 + acc1);
        for (; k < K; ++k) sum += a[k] * b[k];
        y[j] = sum;
      }
      return;
    }
    std::fill(y + j0, y + j1, 0.0f);
    for (int64_t k = 0; k < K; ++k) {
      float ak = a[k];
      const float *b = B + k * ldb;
      for (int64_t j = j0; j < j1; ++j) y[j] += ak * b[j];
    }
  });
}

/// fn(i) for every batch element: in parallel over the batch when it has
/// at least 2 elements per thread (each GEMM then runs serially), else in
/// order with the threads inside each GEMM.
template <typename F> void forBatch(int64_t batch, F fn) {
  if (batch >= 2 * currentThreads() && currentThreads() > 1)
    parallelFor(batch, [&](int64_t i) { fn(i); });
  else
    for (int64_t i = 0; i < batch; ++i) fn(i);
}

} // namespace

namespace {
int wideMode = -1; // -1: not decided yet; else 0 / 1
} // namespace

bool wideKernels() {
  if (wideMode < 0) {
#if defined(__x86_64__)
    const char *off = std::getenv("KILN_NO_AVX512");
    // The direct window kernels (kernels_avx512.cpp) use AVX512VL too.
    wideMode = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
               !(off && *off && *off != '0');
#else
    wideMode = 0;
#endif
  }
  return wideMode == 1;
}

bool setWideKernels(bool on) {
  bool was = wideKernels();
#if defined(__x86_64__)
  wideMode = on && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl");
#else
  (void)on;
#endif
  return was;
}

Buffer &scratch(int slot) {
  static thread_local Buffer bufs[14];
  return bufs[slot];
}

void *allocatePages(size_t bytes) {
  constexpr size_t huge = size_t(2) << 20;
  const bool pages = bytes >= huge / 2;
  const size_t align = pages ? huge : 64, size = (std::max<size_t>(bytes, 1) + align - 1) / align * align;
  void *p = std::aligned_alloc(align, size);
  if (!p) throw std::bad_alloc();
#if defined(MADV_HUGEPAGE)
  if (pages) madvise(p, size, MADV_HUGEPAGE); // (advice: nothing to do if refused)
#endif
  return p;
}

void freePages(void *p) { std::free(p); }

// actTile: applied to a tile just stored (still in cache). Partial vectors
// go through the same vector code, so every element gets the same
// arithmetic whatever the tiling.
void actTile(float *c, int64_t ldc, int64_t rows, int64_t cols, int act) {
  if (act != 1) return;
  for (int64_t i = 0; i < rows; ++i) {
    float *ci = c + i * ldc;
    int64_t j = 0;
    for (; j + 8 <= cols; j += 8) store8(ci + j, vgelu(load8(ci + j)));
    if (j < cols) {
      float t[8] = {};
      std::memcpy(t, ci + j, (cols - j) * sizeof(float));
      store8(t, vgelu(load8(t)));
      std::memcpy(ci + j, t, (cols - j) * sizeof(float));
    }
  }
}

/// sgemm's K sub-block: 256 where L1d holds 48 KiB or more, so that the
/// sub-block of a 32-column B panel (32 KiB) stays in L1 while the row
/// tiles under it pass (an Intel core with 48 KiB L1d: BERT's GEMMs
/// 1.03-1.07x as fast as over the whole K block of 512); else the whole K
/// block (smaller L1s not measured). Each sub-block's sums are added to C
/// as a K block's are, so results depend on it (not on the ISA path).
namespace {
thread_local bool tlsWeightsStreamed = false;
} // namespace

bool weightsStreamed() { return tlsWeightsStreamed; }
bool setWeightsStreamed(bool on) {
  bool was = tlsWeightsStreamed;
  tlsWeightsStreamed = on;
  return was;
}

bool weightsOutgrowCache(size_t bytes) {
  static const size_t cache = [] {
    long l3 = sysconf(_SC_LEVEL3_CACHE_SIZE);
    const size_t cap = size_t(32) << 20;
    return l3 > 0 ? std::min<size_t>(size_t(l3) / 4, cap) : cap;
  }();
  return bytes > cache;
}

int64_t kSubBlock() {
  static const int64_t v = [] {
    long l1 = sysconf(_SC_LEVEL1_DCACHE_SIZE);
    return l1 >= 48 * 1024 ? int64_t(256) : std::numeric_limits<int64_t>::max();
  }();
  return v;
}

void sgemm(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, bool transA,
           const float *B, int64_t ldb, bool transB, float *C, int64_t ldc, const Epilogue *ep,
           const float *packedA, const float *packedB, int64_t kBlock, bool accumulate, const int64_t *bRows,
           bool rowsOwned) {
  if (M <= 0 || N <= 0) return;
  if (ep && !ep->rowBias && !ep->colBias && !ep->residual && !ep->clamps() && !ep->act) ep = nullptr;
  if (K == 0 || (M == 1 && !accumulate && !transA && !packedA && !packedB && !bRows)) {
    if (K == 0) { // nothing to add; C = 0 first unless accumulating
      if (!accumulate)
        for (int64_t i = 0; i < M; ++i) std::fill(C + i * ldc, C + i * ldc + N, 0.0f);
    } else // Row vector times matrix (classifier heads, decoders at batch 1).
      gemv(N, K, A, B, ldb, transB, C);
    if (ep)
      for (int64_t i = 0; i < M; ++i)
        for (int64_t j = 0; j < N; ++j) {
          float v = C[i * ldc + j] + (ep->rowBias ? ep->rowBias[i] : 0.0f) +
                    (ep->colBias ? ep->colBias[j] : 0.0f) + (ep->residual ? ep->residual[i * ldc + j] : 0.0f);
          C[i * ldc + j] = std::min(std::max(v, ep->lo), ep->hi);
        }
    if (ep) actTile(C, ldc, M, N, ep->act);
    return;
  }
  // Each task owns one block of C (at most MC x NC) and runs the whole K
  // loop on it. With several threads, the blocks are cut (down to 2
  // register tiles of rows or 4 of columns) to the grid with the shortest
  // estimated span: rounds of `threads` tasks (ceil(tasks / threads)) times
  // a task's cost, its multiply-adds plus packing its operands (A is
  // repacked once per column block, B once per row block). E.g. 7 column
  // blocks on 2 threads take 4 rounds; 8 smaller ones take 4 shorter ones.
  // B (not transposed) is read in place when it is shallow (K <= 64:
  // packing would cost about as much as the multiply-adds that use it,
  // MobileNetV2's 1x1 convs with 16-32 input channels) or wide (N >= 128:
  // a conv's input planes or im2col rows, whose fixed row stride the
  // prefetchers follow; measured 0.65-0.95x the time on ResNet-50's and
  // MobileNetV2's 1x1 reductions at 56x56 and 28x28; at 14x14 (N = 196)
  // 0.8-0.9x at 1 thread and 0.65-0.9x at 2, where the shared packed B
  // cost a second fork-join; 1.0-1.1x at 7x7, which stays packed). Not past
  // N = 4096: rows 16 KiB apart or more put each k on its own page (a 64 x
  // 12544 x 147 product ran 1.26x slower read in place).
  // bRows: B's rows are wherever they are, read in place too.
  const bool directB = !packedB && !transB && (K <= 64 || (N >= 128 && N <= 4096) || bRows);
  const int64_t KB = kBlock > 0 ? kBlock : gemm::kBlock(packedA != nullptr);
  const bool wide = wideKernels();
  int64_t mTiles = (M + MC - 1) / MC, nTiles = (N + NC - 1) / NC;
  const int threads = currentThreads();
  const bool pixelsOwned = packedA && directB && !rowsOwned;
  // A packed ahead: constant weights times activations (a conv; Winograd's
  // products, whose B is packed too), read from memory (weightsStreamed):
  // fetch each next block ahead.
  [[maybe_unused]] const bool streamA = packedA && weightsStreamed();
  // B packed ahead (constant weights) and A not, read from memory: bring
  // each next panel pair into L2 across the row tiles under this one.
  [[maybe_unused]] const bool streamB = packedB && !packedA && weightsStreamed();
  // A conv's product on several threads (pixelsOwned) cuts its columns
  // (pixels) into runs as even as whole panels allow, run b starting at
  // N * b / nt rounded down to a panel, not into runs of a rounded-up
  // width and a short last one: ResNet-50's 56x56 convs at 1568 pixels
  // (28 rows, where its Winograd convs cut their rows of tiles) rather than
  // 1600; its 56x56 and 28x28 1x1 convs 0.97x the time at 2 threads
  // (vCPUs close). The grid is chosen as before.
  const bool evenCols = pixelsOwned && threads > 1;
  auto colStart = [N](int64_t b, int64_t nt) { return b >= nt ? N : N * b / nt / NR * NR; };
  if (threads > 1) {
    const int64_t m0 = mTiles, n0 = nTiles;
    double best = std::numeric_limits<double>::infinity();
    for (int64_t mt = m0; mt <= m0 + 8; ++mt) {
      int64_t mc = gemm::roundUp((M + mt - 1) / mt, MR);
      if (mt > m0 && mc < 2 * MR) break;
      // rowsOwned: cut in rows only (each thread writes whole rows).
      for (int64_t nt = n0; nt <= (rowsOwned ? n0 : n0 + 16); ++nt) {
        int64_t nc = gemm::roundUp((N + nt - 1) / nt, NR);
        if (nt > n0 && nc < 4 * NR) break;
        // Per task: its multiply-adds, reading its columns of B (6
        // multiply-adds per element: each task that shares a column block
        // reads it again, from another core's cache or memory) and the
        // packing it does itself (an operand shared by several blocks is
        // packed once, below). Without the B term, thin products were cut
        // into row blocks, both threads reading all of B: on an Intel core
        // at 2 threads, MobileNetV2's projections (24-96 output channels)
        // took longer than at 1 thread; with it, MobileNetV2 took 0.91x the
        // time and BERT 0.93x (its weight GEMMs now cut in columns, each
        // weight read by one thread), ResNet-50 no different (alternating
        // runs of one compiled model).
        const int64_t mBlocks = (M + mc - 1) / mc, nBlocks = (N + nc - 1) / nc;
        double cost = double(K) * (double(mc) * nc + 6.0 * nc + 8.0 * ((packedA || nBlocks > 1 ? 0 : mc) +
                                                                     (packedB || directB || mBlocks > 1 ? 0 : nc)));
        double span = double((mBlocks * nBlocks + threads - 1) / threads) * cost;
        // Blocks split evenly over the threads (5% preferred). The pool
        // gives each thread a run of consecutive tasks. A conv's product
        // (weights A, activations B in place: pixelsOwned) orders its
        // tasks columns-first, so thread t writes the t-th run of pixels
        // of every output channel, the pixels it read the inputs of: the
        // next conv, cut alike, finds them in its own core's cache
        // (Intel, 2 threads, alternating runs: ResNet-50 0.93x the time,
        // MobileNetV2 0.97x; its 1x1 convs at 28x28 and 56x56 took 0.6-0.8x
        // the time). Otherwise (and for a conv whose next kernel reads by
        // channels: rowsOwned) rows: thread t writes the t-th run of
        // output rows.
        if ((pixelsOwned ? nBlocks : mBlocks) % threads == 0) span *= 0.95;
        if (span < 0.98 * best) best = span, mTiles = mt, nTiles = nt;
      }
    }
  }
  const int64_t mcBlock = gemm::roundUp((M + mTiles - 1) / mTiles, MR);
  const int64_t ncBlock = gemm::roundUp((N + nTiles - 1) / nTiles, NR);
  mTiles = (M + mcBlock - 1) / mcBlock;
  nTiles = (N + ncBlock - 1) / ncBlock;
  // An operand that several blocks would each pack (B when there are
  // several row blocks, A when there are several column blocks) is packed
  // once, in the compile-time layout, in parallel over K blocks x chunks of
  // 240 of its rows (B: columns; 240 is a multiple of MR and NR) (e.g.
  // ResNet-50's 7x7 stage: 22 row blocks of a 2048 x 49 conv read one B;
  // BERT's FFN on 2 threads: 2-6 column blocks read one A).
  // pack(k0, kc, r0, rows, out) packs rows [r0, r0 + rows) of K block k0.
  auto packOnce = [&](int slot, int64_t size, int64_t rows, int64_t roundedRows, auto pack) {
    Buffer &shared = scratch(slot);
    grow(shared, size);
    const int64_t chunks = (rows + 239) / 240;
    parallelFor((K + KB - 1) / KB * chunks, [&](int64_t task) {
      int64_t k0 = task / chunks * KB, kc = std::min(KB, K - k0), r0 = task % chunks * 240;
      pack(k0, kc, r0, std::min<int64_t>(240, rows - r0), shared.data() + k0 * roundedRows + r0 * kc);
    });
    return (const float *)shared.data();
  };
  if (!packedB && !directB && mTiles > 1)
    packedB = packOnce(7, gemm::packedBSize(K, N), N, gemm::roundUp(N, NR),
                       [&](int64_t k0, int64_t kc, int64_t j0, int64_t n, float *out) {
                         packB(B, ldb, transB, k0, kc, j0, n, out);
                       });
  if (!packedA && nTiles > 1)
    packedA = packOnce(8, gemm::packedASize(M, K), M, gemm::roundUp(M, MR),
                       [&](int64_t k0, int64_t kc, int64_t i0, int64_t m, float *out) {
                         packA(A, lda, transA, i0, m, k0, kc, out);
                       });
  parallelFor(mTiles * nTiles, [&](int64_t t) {
    int64_t i0 = (pixelsOwned ? t % mTiles : t / nTiles) * mcBlock,
            j0 = (pixelsOwned ? t / mTiles : t % nTiles) * ncBlock;
    int64_t mc = std::min(mcBlock, M - i0), nc = std::min(ncBlock, N - j0);
    if (evenCols) j0 = colStart(t / mTiles, nTiles), nc = colStart(t / mTiles + 1, nTiles) - j0;
    auto &pa = scratch(0), &pb = scratch(1);
    if (!packedA) grow(pa, ((mc + MR - 1) / MR) * MR * KB + gemm::kASlack);
    if (!packedB) grow(pb, ((nc + NR - 1) / NR) * NR * KB);
    for (int64_t k0 = 0; k0 < K; k0 += KB) {
      int64_t kc = std::min(KB, K - k0);
      // Operands packed at compile time (constant weights) are used in place.
      const float *ap = packedA ? packedA + gemm::packedAOffset(M, k0, kc, i0) : pa.data();
      const float *bp = packedB ? packedB + gemm::packedBOffset(N, k0, kc, j0) : pb.data();
      if (!packedA) packA(A, lda, transA, i0, mc, k0, kc, pa.data());
      // Full panels of a shallow B are read in place (directB); only the
      // last, partial one is packed.
      const int64_t full = directB ? nc / NR * NR : 0;
      // AVX-512: the block's last 1-4 columns (a last panel that narrow)
      // go through colKernelWide (colRest, after the block's tiles), their
      // patterns laid out here for the whole K block (from B in place when
      // it is read in place: that panel is then not packed; packing it
      // took 4% of a 96 x 196 x 576 product). With microKernelCols,
      // products of 49 columns took 1.13-1.16x the time of 48.
      const int64_t rem = nc % NR;
      [[maybe_unused]] const bool colWide = wide && !bRows && rem >= 1 && rem <= 4 && nc > NR;
      if (!packedB && !(directB && colWide)) packB(B, ldb, transB, k0, kc, j0 + full, nc - full, pb.data(), bRows);
#if defined(__x86_64__)
      static thread_local std::vector<float> pat;
      if (colWide) {
        grow(pat, (kc + 7) / 8 * rem * 48);
        if (directB) colPatterns(kc, B + k0 * ldb + j0 + full, ldb, int(rem), pat.data());
        else colPatterns(kc, bp + (nc - rem - full) * kc, NR, int(rem), pat.data());
      }
#endif
      // tile(ip, jp, k1, kk): one register tile over k in [k1, k1 + kk)
      // of this K block (the K sub-blocks below).
      auto tile = [&](int64_t ip, int64_t jp, int64_t k1, int64_t kk) {
        float *c = C + (i0 + ip) * ldc + j0 + jp;
        const int m = (int)std::min<int64_t>(MR, mc - ip);
        const bool last = k0 + k1 + kk >= K;
        if (bRows && jp < full)
          microKernelN<2, true>(kk, ap + ip * kc + k1 * MR, B + j0 + jp, 0, c, ldc, accumulate || k0 + k1 > 0, m,
                                NR, last ? ep : nullptr, i0 + ip, j0 + jp, bRows + k0 + k1);
        else {
          const float *b = jp < full ? B + (k0 + k1) * ldb + j0 + jp : bp + (jp - full) * kc + k1 * NR;
          microKernel(kk, ap + ip * kc + k1 * MR, b, jp < full ? ldb : NR, c, ldc, accumulate || k0 + k1 > 0, m,
                      (int)std::min<int64_t>(NR, nc - jp), last ? ep : nullptr, i0 + ip, j0 + jp);
        }
        if (last && ep && ep->act)
          actTile(C + (i0 + ip) * ldc + j0 + jp, ldc, std::min<int64_t>(MR, mc - ip), std::min<int64_t>(NR, nc - jp),
                  ep->act);
      };
      // With AVX-512, up to 2 x 2 register tiles at once where the columns
      // are whole panels (the rows may end in a partial panel).
      // A block 3 panels wide (N = 48-63: ResNet-50's and MobileNetV2's
      // 7x7 stage, N = 49) takes 6 x 48 tiles: the 12 x 32 + 12 x 16 pair
      // left a 12 x 16 tile loading a value per multiply-add (Zen 5: 206
      // GFLOP/s at N = 16, 255 at 32; 960 x 48 x 960 went from 229 to 252).
      // With colRest for the 49th column, the 7x7 1x1 convs took 0.82-0.88x
      // the time in the models at 1 thread, 0.79-0.91x at 2 (ResNet-50's
      // 14x14 ones, N = 196, 0.95-0.97x at 2).
      const bool three = wide && !bRows && (directB ? full : nc) / NR == 3;
      const int64_t TI = wide && !bRows && !three ? 2 * MR : MR,
                    TJ = three ? 3 * NR : wide && !bRows ? 2 * NR : NR;
      // block(ip, jp, k1, kk): the register tiles at (ip, jp) over k in
      // [k1, k1 + kk) of this K block.
      auto block = [&](int64_t ip, int64_t jp, int64_t k1, int64_t kk) {
#if defined(__x86_64__)
        if (wide && !bRows) {
          // The AVX-512 form for the whole panels of this block (direct B:
          // only its in-place panels), the 6 x 16 tile for what is left.
          // Rows: one or two panels, the last one possibly partial.
          const int64_t rows = std::min(mc - ip, TI), cols = std::min((directB ? full : nc) - jp, TJ);
          const int pa = rows > MR ? 2 : 1, pb = cols >= 3 * NR ? 3 : cols >= 2 * NR ? 2 : cols >= NR ? 1 : 0;
          if (colWide && jp == nc - rem) return; // (colRest)
          if (pb) {
            const bool last = k0 + k1 + kk >= K;
            const float *b = directB ? B + (k0 + k1) * ldb + j0 + jp : bp + jp * kc + k1 * NR;
            const float *a0 = ap + ip * kc + k1 * MR;
            TilePrefetch pf;
            pf.bAhead = ip > 0 ? 0 : !directB ? 64 : kc > 64 ? 16 : 0;
            pf.aAhead = jp == 0 && packedA ? 128 : 0;
            pf.nextB = directB && kc <= 64 && jp + 2 * TJ <= full ? b + TJ : nullptr;
            if (streamB && kc > 64 && jp + TJ < nc && (ip > 0 || k1 > 0)) {
              // This row tile's slice of the next panel pair's lines
              // (2 kc of them, contiguous), over the block's later row
              // tiles under this pair (visits 1 .. V - 1).
              const int64_t kSubNow = std::min(kc, kSubBlock()), nIp = (mc + TI - 1) / TI, V = (kc + kSubNow - 1) / kSubNow * nIp;
              const int64_t v = k1 / kSubNow * nIp + ip / TI, lines = 2 * kc * int64_t(sizeof(float)) * 16 / 64;
              const int64_t l0 = (v - 1) * lines / (V - 1), l1 = v * lines / (V - 1);
              pf.nextL2 = bp + (jp + TJ) * kc + l0 * 16;
              pf.nextL2N = std::min(l1 - l0, kk);
            }
            // (Also where the block is one panel wide, a 12 x 16 tile
            // that reads A once: ResNet-50's 7x7 Winograd products, N =
            // 16, took 0.69x the time with their weights cold.)
            if (streamA && (pb >= 2 || nc <= NR) && jp + 2 * TJ > (directB ? full : nc)) {
              // The A block this thread runs next: the next K block of
              // these rows, else the first one of the next task (the pool
              // gives each thread a run of consecutive tasks; pixelsOwned
              // orders them rows first, otherwise columns first).
              const bool lastK = k0 + KB >= K;
              const bool sameRows = lastK && !pixelsOwned && j0 + ncBlock < N;
              const int64_t nk0 = lastK ? 0 : k0 + KB, ni0 = lastK && !sameRows ? i0 + mcBlock : i0;
              const int64_t nkc = std::min(KB, K - nk0);
              if (ni0 + ip < M && nkc > k1) {
                pf.nextA = packedA + gemm::packedAOffset(M, nk0, nkc, ni0 + ip) + k1 * MR;
                pf.nextA1 = MR * nkc;
              }
            }
            auto run = pb == 3 ? wideKernel<1, 3>
                       : pa == 2 ? (pb == 2 ? wideKernel<2, 2> : wideKernel<2, 1>)
                                 : (pb == 2 ? wideKernel<1, 2> : wideKernel<1, 1>);
            run(kk, a0, a0 + MR * kc, b, directB ? b + NR : b + NR * kc, directB ? ldb : NR,
                C + (i0 + ip) * ldc + j0 + jp, ldc, accumulate || k0 + k1 > 0, last ? ep : nullptr, i0 + ip,
                j0 + jp, (int)rows, pf);
            if (last && ep && ep->act) actTile(C + (i0 + ip) * ldc + j0 + jp, ldc, rows, pb * NR, ep->act);
            // (The last 1-4 columns under colWide: colRest, below.)
            for (int64_t j = jp + pb * NR; j < std::min(nc, jp + TJ) && !(colWide && j == nc - rem); j += NR)
              for (int64_t i = ip; i < ip + rows; i += MR) tile(i, j, k1, kk);
            return;
          }
        }
#endif
        for (int64_t i = ip; i < std::min(mc, ip + TI); i += MR)
          for (int64_t j = jp; j < std::min(nc, jp + TJ); j += NR) tile(i, j, k1, kk);
      };
#if defined(__x86_64__)
      // colWide: the last 1-4 columns over K sub-block [k1, k1 + kk) for
      // all rows, 12 at a time (6 FMA chains; one 6-row panel at a time
      // was bound by the FMA latency).
      auto colRest = [&](int64_t k1, int64_t kk) {
        using ColFn = void (*)(int64_t, const float *, const float *, const float *, float *, int64_t, bool, int,
                               const Epilogue *, int64_t, int64_t);
        static constexpr ColFn fns[2][4] = {
            {colKernelWide<1, 1>, colKernelWide<2, 1>, colKernelWide<3, 1>, colKernelWide<4, 1>},
            {colKernelWide<1, 2>, colKernelWide<2, 2>, colKernelWide<3, 2>, colKernelWide<4, 2>}};
        const bool last = k0 + k1 + kk >= K;
        assert(k1 % 8 == 0); // the patterns' groups (kSubBlock() is 256 or all of kc)
        for (int64_t ip = 0; ip < mc; ip += 2 * MR) {
          const int rows = int(std::min<int64_t>(2 * MR, mc - ip));
          const float *a0 = ap + ip * kc + k1 * MR;
          float *c = C + (i0 + ip) * ldc + j0 + nc - rem;
          fns[rows > MR][rem - 1](kk, a0, a0 + MR * kc, pat.data() + k1 / 8 * rem * 48, c, ldc,
                                  accumulate || k0 + k1 > 0, rows, last ? ep : nullptr, i0 + ip, j0 + nc - rem);
          if (last && ep && ep->act) actTile(c, ldc, rows, rem, ep->act);
        }
      };
#endif
      if (kc <= 64) {
        // Shallow products store C about as often as they multiply: walk
        // C along its rows rather than down its columns (the block's B,
        // at most 64 x NC, stays in L2).
        for (int64_t ip = 0; ip < mc; ip += TI)
          for (int64_t jp = 0; jp < nc; jp += TJ) block(ip, jp, 0, kc);
#if defined(__x86_64__)
        if (colWide) colRest(0, kc);
#endif
      } else {
        // K sub-blocks (kSubBlock()) on every path alike, so that the
        // AVX-512 and AVX2 tiles sum in the same order.
        const int64_t kSub = bRows ? kc : std::min(kc, kSubBlock());
        for (int64_t jp = 0; jp < nc; jp += TJ)
          for (int64_t k1 = 0; k1 < kc; k1 += kSub)
            for (int64_t ip = 0; ip < mc; ip += TI) block(ip, jp, k1, std::min(kSub, kc - k1));
#if defined(__x86_64__)
        if (colWide)
          for (int64_t k1 = 0; k1 < kc; k1 += kSub) colRest(k1, std::min(kSub, kc - k1));
#endif
      }
    }
  });
}

} // namespace kiln::rt

using namespace kiln::rt;

extern "C" {

void kiln_rt_gemm(intptr_t a, intptr_t b, intptr_t c, intptr_t y, int64_t M, int64_t N, int64_t K,
                  int64_t transA, int64_t transB, float alpha, float beta, int64_t cRows,
                  int64_t cCols) {
  const float *A = (const float *)a, *B = (const float *)b, *Cb = (const float *)c;
  float *Y = (float *)y;
  sgemm(M, N, K, A, transA ? M : K, transA, B, transB ? K : N, transB, Y, N);
  if (alpha == 1.0f && (!Cb || beta == 0.0f))
    return;
  parallelFor(M, [&](int64_t i) {
    float *row = Y + i * N;
    for (int64_t j = 0; j < N; ++j) {
      float v = alpha * row[j];
      if (Cb && beta != 0.0f)
        v += beta * Cb[(cRows == 1 ? 0 : i) * cCols + (cCols == 1 ? 0 : j)];
      row[j] = v;
    }
  });
}

void kiln_rt_matmul(intptr_t a, intptr_t b, intptr_t y, int64_t batch, int64_t M, int64_t N,
                    int64_t K, int64_t strideA, int64_t strideB) {
  const float *A = (const float *)a, *B = (const float *)b;
  float *Y = (float *)y;
  // Batches in parallel (each GEMM serial inside) when there are enough.
  forBatch(batch, [&](int64_t i) {
    sgemm(M, N, K, A + i * strideA, K, false, B + i * strideB, N, false, Y + i * M * N, N);
  });
}

void kiln_rt_matmul_strided(intptr_t a, intptr_t b, intptr_t y, int64_t batch, int64_t M, int64_t N,
                            int64_t K, int64_t strideA, int64_t lda, int64_t transA, int64_t strideB,
                            int64_t ldb, int64_t transB, int64_t strideY, int64_t ldy) {
  const float *A = (const float *)a, *B = (const float *)b;
  float *Y = (float *)y;
  forBatch(batch, [&](int64_t i) {
    sgemm(M, N, K, A + i * strideA, lda, transA != 0, B + i * strideB, ldb, transB != 0,
          Y + i * strideY, ldy);
  });
}

void kiln_rt_conv2d(intptr_t x, intptr_t w, intptr_t bias, intptr_t y, int64_t N, int64_t C,
                    int64_t H, int64_t W, int64_t F, int64_t KH, int64_t KW, int64_t OH, int64_t OW,
                    int64_t SH, int64_t SW, int64_t DH, int64_t DW, int64_t PT, int64_t PL,
                    int64_t G) {
  const float inf = std::numeric_limits<float>::infinity();
  kiln_rt_conv2d_act(x, w, bias, y, N, C, H, W, F, KH, KW, OH, OW, SH, SW, DH, DW, PT, PL, G, -inf, inf);
}

void kiln_rt_conv2d_act(intptr_t x, intptr_t w, intptr_t bias, intptr_t y, int64_t N, int64_t C,
                        int64_t H, int64_t W, int64_t F, int64_t KH, int64_t KW, int64_t OH,
                        int64_t OW, int64_t SH, int64_t SW, int64_t DH, int64_t DW, int64_t PT,
                        int64_t PL, int64_t G, float lo, float hi) {
  conv2d(x, w, false, bias, 0, y, N, C, H, W, F, KH, KW, OH, OW, SH, SW, DH, DW, PT, PL, G, lo, hi);
}

void kiln_rt_conv2d_packed(intptr_t x, intptr_t wp, intptr_t bias, intptr_t residual, intptr_t y,
                           int64_t N, int64_t C, int64_t H, int64_t W, int64_t F, int64_t KH,
                           int64_t KW, int64_t OH, int64_t OW, int64_t SH, int64_t SW, int64_t DH,
                           int64_t DW, int64_t PT, int64_t PL, float lo, float hi) {
  conv2d(x, wp, true, bias, residual, y, N, C, H, W, F, KH, KW, OH, OW, SH, SW, DH, DW, PT, PL, 1, lo, hi);
}

void kiln_rt_conv2d_packed_part(intptr_t x, intptr_t wp, intptr_t bias, intptr_t residual, intptr_t y,
                                int64_t N, int64_t C, int64_t H, int64_t W, int64_t F, int64_t KH,
                                int64_t KW, int64_t OH, int64_t OW, int64_t SH, int64_t SW, int64_t DH,
                                int64_t DW, int64_t PT, int64_t PL, float lo, float hi, int64_t partition) {
  conv2d(x, wp, true, bias, residual, y, N, C, H, W, F, KH, KW, OH, OW, SH, SW, DH, DW, PT, PL, 1, lo, hi,
         partition == 1);
}

void kiln_rt_maxpool2d(intptr_t x, intptr_t y, int64_t N, int64_t C, int64_t H, int64_t W, int64_t KH,
                       int64_t KW, int64_t OH, int64_t OW, int64_t SH, int64_t SW, int64_t DH, int64_t DW,
                       int64_t PT, int64_t PL) {
  // 3x3 windows on the planes with AVX-512 (first below); else 2x2 and
  // 3x3 windows on channel blocks where the plane loop's per-plane costs
  // weigh (strided, or planes of at most 28x28), as depthwise convs:
  // ResNet-50's 3x3 stride-2 MaxPool 0.67 -> 0.2 ms at 1 thread (Zen 4).
  const float inf = std::numeric_limits<float>::infinity();
  const float *X = (const float *)x;
  float *Y = (float *)y;
#if defined(__x86_64__)
  // 3x3 straight on the planes with masked loads (window3.h), AVX-512:
  // ResNet-50's 3x3 stride-2 MaxPool (64 x 112x112) 0.31 against 0.45 ms
  // on channel blocks at 1 thread, 0.14 against 0.22 at 2 (Intel core,
  // in the model; rows outer made no difference).
  if (KH == 3 && KW == 3 && DH == 1 && DW == 1 && SH == SW && wideKernels())
    if (auto plane = maxPlaneAvx512(SH, PL, H, W, OH, OW)) {
      parallelRuns(N * C, [&](int64_t nc) {
        plane(X + nc * H * W, nullptr, 0.0f, Y + nc * OH * OW, H, W, OH, OW, PT, PL, -inf, inf);
      });
      return;
    }
#endif
  if (KH == KW && (KH == 2 || KH == 3) && (SH > 1 || SW > 1 || OH * OW <= 784)) {
    if (KH == 3) depthwiseBlocked<3, true>(X, nullptr, nullptr, Y, N, C, H, W, OH, OW, SH, SW, DH, DW, PT, PL, -inf, inf);
    else depthwiseBlocked<2, true>(X, nullptr, nullptr, Y, N, C, H, W, OH, OW, SH, SW, DH, DW, PT, PL, -inf, inf);
    return;
  }
  planeWindows<true>(X, nullptr, nullptr, Y, N, C, H, W, KH, KW, OH, OW, SH, SW, DH, DW, PT, PL, false, 0.0f, 0.0f);
}

void kiln_rt_matmul_packed(intptr_t a, intptr_t bp, intptr_t y, int64_t batch, int64_t M, int64_t N,
                           int64_t K, int64_t strideA, int64_t lda, int64_t transA, int64_t strideY,
                           int64_t ldy, intptr_t bias, float lo, float hi) {
  kiln_rt_matmul_packed_act(a, bp, y, batch, M, N, K, strideA, lda, transA, strideY, ldy, bias, lo, hi, 0);
}

void kiln_rt_matmul_packed_act(intptr_t a, intptr_t bp, intptr_t y, int64_t batch, int64_t M, int64_t N,
                               int64_t K, int64_t strideA, int64_t lda, int64_t transA, int64_t strideY,
                               int64_t ldy, intptr_t bias, float lo, float hi, int64_t act) {
  const float *A = (const float *)a, *Bp = (const float *)bp;
  float *Y = (float *)y;
  Epilogue ep{nullptr, lo, hi, (const float *)bias};
  ep.act = (int)act;
  forBatch(batch, [&](int64_t i) {
    sgemm(M, N, K, A + i * strideA, lda, transA != 0, nullptr, 0, false, Y + i * strideY, ldy, &ep,
          nullptr, Bp);
  });
}

} // extern "C"

namespace kiln::rt {

void im2col(const float *xg, int64_t rows, const int32_t *which, float *colp, int64_t H, int64_t W,
            int64_t KH, int64_t KW, int64_t OH, int64_t OW, int64_t SH, int64_t SW, int64_t DH,
            int64_t DW, int64_t PT, int64_t PL) {
  int64_t KK = KH * KW, OHW = OH * OW;
  parallelRuns(rows, [&](int64_t i) {
    int64_t r = which ? which[i] : i;
    int64_t c = r / KK, kh = (r % KK) / KW, kw = r % KW;
    float *dst = colp + i * OHW;
    const float *xc = xg + c * H * W;
    // Output columns [owLo, owHi) read inside the row; the rest is padding.
    int64_t off = kw * DW - PL;
    int64_t owLo = std::min(OW, std::max<int64_t>(0, (-off + SW - 1) / SW));
    int64_t owHi = std::max(owLo, std::min(OW, (W - 1 - off) / SW + 1));
    if (W - 1 - off < 0) owHi = owLo;
    for (int64_t oh = 0; oh < OH; ++oh) {
      int64_t ih = oh * SH + kh * DH - PT;
      float *d = dst + oh * OW;
      if (ih < 0 || ih >= H) {
        std::fill(d, d + OW, 0.0f);
        continue;
      }
      const float *row = xc + ih * W + off;
      std::fill(d, d + owLo, 0.0f);
      if (SW == 1) {
        std::memcpy(d + owLo, row + owLo, (owHi - owLo) * sizeof(float));
      } else {
        int64_t ow = owLo;
        if (SW == 2) // 8 outputs from 16 inputs, while the 16 lie in the row
          for (; ow + 8 <= owHi && off + 2 * ow + 16 <= W; ow += 8)
            store8(d + ow, everyOther<0>(load8(row + 2 * ow), load8(row + 2 * ow + 8)));
        for (; ow < owHi; ++ow) d[ow] = row[ow * SW];
      }
      std::fill(d + owHi, d + OW, 0.0f);
    }
  });
}

namespace {
/// A small conv's weights [F][K] (packed as GEMM operand A if packedW)
/// regrouped as [group of FG filters][K][FG], zeros past F: the layout the
/// direct stem kernels broadcast from (convSmallC3, convSmallPhased).
std::vector<float> filterGroups(const float *Wt, bool packedW, int64_t F, int64_t K, int64_t FG) {
  std::vector<float> wT((F + FG - 1) / FG * K * FG, 0.0f);
  for (int64_t f = 0; f < F; ++f)
    for (int64_t k = 0; k < K; ++k) {
      // Packed: panels of MR filters, K block by K block (gemm::packAFull).
      const int64_t k0 = k / gemm::KC * gemm::KC, kc = std::min(gemm::KC, K - k0);
      wT[(f / FG * K + k) * FG + f % FG] =
          packedW ? Wt[gemm::packedAOffset(F, k0, kc, f / gemm::MR * gemm::MR) + (k - k0) * gemm::MR + f % gemm::MR]
                  : Wt[f * K + k];
    }
  return wT;
}

/// Constant weights (packed as GEMM operand A at compile time) regrouped
/// for the direct kernels (convDirect; the stems' convSmallC3 and
/// convSmallPhased), once per weights: those layouts are the direct
/// paths' alone, so they are made on the first call rather than stored in
/// the library. Keyed by the weights' address; kiln_model_close forgets
/// those in its library's address range (forgetGroupedWeights), as
/// another model may be loaded there.
std::mutex groupedMutex;
/// Shared pointers: a conv still running on another thread keeps its copy
/// when the cache is cleared.
std::map<std::tuple<const float *, int64_t, int64_t, int64_t>, std::shared_ptr<const std::vector<float>>>
    groupedCache;

/// filterGroups(Wt, packedW, F, K, FG): for packed constant weights made
/// once and kept, for weights given at run time (they may change between
/// calls) made on every call.
std::shared_ptr<const std::vector<float>> groupedWeights(const float *Wt, bool packedW, int64_t F, int64_t K,
                                                         int64_t FG) {
  if (!packedW) return std::make_shared<const std::vector<float>>(filterGroups(Wt, false, F, K, FG));
  std::lock_guard<std::mutex> lock(groupedMutex);
  auto &g = groupedCache[{Wt, F, K, FG}];
  if (!g) g = std::make_shared<const std::vector<float>>(filterGroups(Wt, true, F, K, FG));
  return g;
}

/// Phase planes of X [C, H, W] for stride S, zero-padded PT rows above
/// and PL columns left (and as needed below and right): phase (qr, qc) of
/// channel c, at ph + ((c * S + qr) * S + qc) * PH * PW, holds padded rows
/// qr, qr + S, ... (PH of them) and columns qc, qc + S, ... (PW), so the
/// tap (kh, kw) of a stride-S window at output (oh, ow) is phase (kh % S,
/// kw % S) at row oh + kh / S, column ow + kw / S. Each padded row is laid
/// out once (zeros, the input row at PL), then split into its S column
/// phases (stride 2: even and odd lanes of 16 floats at a time, in
/// registers; stride 1: straight into the plane). Parallel over rows.
template <int S>
void phasePlanes(const float *X, int64_t C, int64_t H, int64_t W, int64_t PT, int64_t PL, int64_t PH, int64_t PW,
                 float *ph) {
  const int64_t PS = PH * PW;
  parallelRuns(C * S * PH, [&](int64_t t) {
    const int64_t c = t / (S * PH), qr = t / PH % S, r = t % PH, ih = r * S + qr - PT;
    float *d = ph + ((c * S + qr) * S) * PS + r * PW; // column phase qc at d + qc * PS
    if (ih < 0 || ih >= H) {
      for (int qc = 0; qc < S; ++qc) std::fill(d + qc * PS, d + qc * PS + PW, 0.0f);
      return;
    }
    static thread_local std::vector<float> paddedBuf;
    // Padded columns [0, S * PW): in place for stride 1.
    float *padded = S == 1 ? d : grow(paddedBuf, S * PW);
    const int64_t lead = std::min(PL, S * PW), n = std::max<int64_t>(0, std::min(W, S * PW - lead));
    std::fill(padded, padded + lead, 0.0f);
    std::memcpy(padded + lead, X + (c * H + ih) * W, n * sizeof(float));
    std::fill(padded + lead + n, padded + S * PW, 0.0f);
    if constexpr (S != 1) {
      int64_t j = 0;
      for (; j + 8 <= PW; j += 8) {
        const v8f a = load8(padded + 2 * j), b = load8(padded + 2 * j + 8);
        store8(d + j, everyOther<0>(a, b));
        store8(d + PS + j, everyOther<1>(a, b));
      }
      for (; j < PW; ++j) d[j] = padded[2 * j], d[PS + j] = padded[2 * j + 1];
    }
  });
}

#if defined(__x86_64__)
/// The tasks of the direct kernels that work on groups of 32 filters
/// (convDirect, convPhased): fn(g, oh0, oh1) for runs of output rows
/// [oh0, oh1) (whole bands of `band` rows) of filter group g, about 8
/// tasks per thread, groups outermost, so that a thread's run of tasks
/// keeps to few groups' weights and, at 2 threads, each thread writes
/// whole output channels.
template <typename Fn> void forFilterGroupRows(int64_t F, int64_t OH, int64_t band, Fn fn) {
  const int64_t groups = (F + 31) / 32, bands = (OH + band - 1) / band;
  const int64_t chunks = std::min(bands, std::max<int64_t>(1, (8 * currentThreads() + groups - 1) / groups));
  const int64_t per = (bands + chunks - 1) / chunks * band;
  parallelFor(groups * chunks, [&](int64_t t) {
    const int64_t g = t / chunks, oh0 = t % chunks * per, oh1 = std::min(OH, oh0 + per);
    if (oh0 < oh1) fn(g, oh0, oh1);
  });
}

/// A convolution (stride S = 1 or 2, dilation 1, one group) with the
/// filters in the lanes, AVX-512, without an im2col matrix: the image is
/// copied once zero-padded, then each task runs output rows of one group
/// of 32 filters, 14 pixels x 32 filters at a time in registers (pixels
/// broadcast; per tap 2 weight loads and 14 broadcasts for 28 FMAs, the
/// way ONNX Runtime's NCHWc convs work; rows of 7 two to a tile), turned
/// back into planes 16 x 16 in registers with the epilogue. wT: the
/// filters in groups of 32 (filterGroups). On the Intel machine, against
/// im2col + GEMM, time at 1 / 2 threads:
///   - ResNet-50's 7x7 stride-2 stem (3 -> 64, 112x112; convPhased's
///     since session 22): 1.25 / 0.64 against 1.86 / 0.94 ms (ONNX
///     Runtime: 1.10 / 0.55). 83% of its
///     time is in the tiles, at about 93% of the FMA peak; the transposes
///     and the epilogue take 13%;
///   - its stride-2 3x3 convs (in the model, medians of 20 runs):
///     28x28 (128 channels) 1.34-1.39 / 0.87-0.90 against 1.61 / 0.94 ms;
///     14x14 (256) 1.20-1.24 / 0.71-0.72 against 1.59 / 0.97; 7x7 (512,
///     rows two to a tile, weights from memory) 1.66-1.78 / 0.79-0.82
///     against 1.75 / 0.95. Alone, with their weights in cache, 1.21 and
///     1.27 against 1.57 and 1.69 at 1 thread (28x28, 7x7).
/// The regrouped weights of 3x3 convs take as much memory again as their
/// packed form (ResNet-50: 12.4 MB), kept per weights until the model is
/// closed (groupedWeights).
void convDirect(int64_t S, const float *X, const float *wT, const float *Bs, const float *res, float *Y, int64_t C,
                int64_t H, int64_t W, int64_t F, int64_t KH, int64_t KW, int64_t OH, int64_t OW, int64_t PT,
                int64_t PL, float lo, float hi) {
  const int64_t band = OW == 7 ? 2 : 1;
  const int64_t OWr = OW == 7 ? 7 : (OW + 13) / 14 * 14, PH = S * (OH - 1) + KH, PW = S * (OWr - 1) + KW;
  float *Xp = grow(scratch(2), C * PH * PW);
  phasePlanes<1>(X, C, H, W, PT, PL, PH, PW, Xp); // the zero-padded image
  forFilterGroupRows(F, OH, band, [&](int64_t g, int64_t oh0, int64_t oh1) {
    static thread_local std::vector<float> rowBuf;
    const size_t need = size_t(32 * ((OW + 15) / 16 * 16 + 16));
    if (rowBuf.size() < need) rowBuf.assign(need, 0.0f);
    convDirectRowsAvx512(Xp, wT, Bs, res, Y, C, PH, PW, KH, KW, S, F, OH, OW, lo, hi, oh0, oh1, g, rowBuf.data());
  });
}

/// A 5x5 or 7x7 convolution (stride S = 1 or 2, dilation 1, one group) of
/// an image with few channels (a stem), AVX-512, with the pixels in the
/// lanes: the image's S x S phase planes (phasePlanes) made once, then
/// tasks of runs of rows of one group of 32 filters (forFilterGroupRows,
/// as convDirect: at 2 threads each writes half the channels, which the
/// next kernel, a pool cut by channels, reads from its own cache), 4 filters x
/// 64 pixels of a row per tile (convPhasedRowsAvx512). Each tile stores
/// its rows of 4 planes straight from the registers, where convDirect's
/// 32 filters x 14 pixels went through a buffer and 16 x 16 transposes
/// into 32 planes at once. ResNet-50's stem (Zen 5, in the model,
/// alternating profiles): 1.14 against convDirect's 1.25 ms at 1 thread,
/// 0.59 against 0.70 at 2; the max pool after it no different.
void convPhased(int64_t K, int64_t S, const float *X, const float *wT, const float *Bs, const float *res, float *Y,
                int64_t C, int64_t H, int64_t W, int64_t F, int64_t OH, int64_t OW, int64_t PT, int64_t PL, float lo,
                float hi) {
  const int64_t PW = gemm::roundUp(OW, 16) + 16, PH = OH + (K - 1) / S, PS = PH * PW;
  float *ph = grow(scratch(2), C * S * S * PS);
  if (S == 1) phasePlanes<1>(X, C, H, W, PT, PL, PH, PW, ph);
  else phasePlanes<2>(X, C, H, W, PT, PL, PH, PW, ph);
  forFilterGroupRows(F, OH, 1, [&](int64_t g, int64_t oh0, int64_t oh1) {
    convPhasedRowsAvx512(K, S, ph, PH, PW, wT, Bs, res, Y, C, F, OH, OW, lo, hi, oh0, oh1, g);
  });
}
#endif

/// A K x K convolution (K = 3 or 7, dilation 1, stride S = 1 or 2 in both
/// axes, any pads) of an image with few channels (C <= 4: a network's
/// stem) without an im2col matrix, for CPUs without AVX-512 (convSmallC3
/// is the masked-load 3 x 3 form for those with it). The image is first
/// split into S x S zero-padded phase planes per channel (phasePlanes), so
/// every tap is a unit-stride load with no masks or lane shuffles. Each
/// step computes 16 output columns of one row for 4 filters in 8
/// accumulators (per tap: 2 loads, 4 broadcasts, 8 FMAs); the epilogue
/// (bias, residual, clamp) on the registers. wT: [group of 4 filters][C *
/// K * K][4], zeros past F. Runs of output rows in parallel. MobileNetV2's
/// stem on a Zen 3 core: 0.47 against im2col + GEMM's 0.58 ms alone (min
/// of 300 calls), in the model 0.96x the time at 1 thread and 0.89x at 2
/// (minimum of 8 alternating profiles each). ResNet-50's 7x7 stem
/// (session 17): 3.65 against 5.38 ms alone (min of 100 calls), in the
/// model 2.23 against 2.63 ms at 2 threads and level at 1 (4.96 / 5.04;
/// minimum of 10 alternating profiles).
template <int K, int S>
void convSmallPhased(const float *X, const float *wT, const float *Bs, const float *res, float *Y, int64_t C,
                     int64_t H, int64_t W, int64_t F, int64_t OH, int64_t OW, int64_t PT, int64_t PL, float lo,
                     float hi) {
  constexpr int64_t FG = 4, CW = 16;
  static_assert((K - 1) / S <= 16, "phase rows are padded by 16 columns");
  const int64_t PW = gemm::roundUp(OW, CW) + 16, PH = OH + (K - 1) / S, PS = PH * PW, OHW = OH * OW;
  float *ph = grow(scratch(2), C * S * S * PS);
  phasePlanes<S>(X, C, H, W, PT, PL, PH, PW, ph);
  const int64_t groups = (F + FG - 1) / FG;
  const int64_t tasks = std::min<int64_t>(OH, 8 * int64_t(currentThreads())), per = (OH + tasks - 1) / tasks;
  const v8f vlo = splat(lo), vhi = splat(hi);
  parallelFor((OH + per - 1) / per, [&](int64_t t) {
    for (int64_t oh = t * per; oh < std::min(OH, (t + 1) * per); ++oh)
      for (int64_t g = 0; g < groups; ++g) {
        const float *wg = wT + g * C * K * K * FG;
        const int64_t f0 = g * FG, nf = std::min(FG, F - f0);
        for (int64_t j0 = 0; j0 < OW; j0 += CW) {
          v8f acc[FG][2];
          for (int f = 0; f < FG; ++f) acc[f][0] = acc[f][1] = splat(Bs && f < nf ? Bs[f0 + f] : 0.0f);
          for (int64_t c = 0; c < C; ++c) {
            const float *pc = ph + c * S * S * PS + oh * PW + j0;
            const float *wc = wg + c * K * K * FG;
#pragma GCC unroll 7
            for (int kh = 0; kh < K; ++kh)
#pragma GCC unroll 7
              for (int kw = 0; kw < K; ++kw) {
                const float *p = pc + ((kh % S) * S + kw % S) * PS + (kh / S) * PW + kw / S;
                const v8f v0 = load8(p), v1 = load8(p + 8);
                const float *wk = wc + (kh * K + kw) * FG;
#pragma GCC unroll 4
                for (int f = 0; f < FG; ++f) {
                  const v8f wf = splat(wk[f]);
                  acc[f][0] += wf * v0;
                  acc[f][1] += wf * v1;
                }
              }
          }
          const int64_t n = std::min(CW, OW - j0);
          for (int f = 0; f < nf; ++f) {
            float *y = Y + (f0 + f) * OHW + oh * OW + j0;
            const float *r = res ? res + (f0 + f) * OHW + oh * OW + j0 : nullptr;
            if (n == CW) {
              v8f a0 = acc[f][0], a1 = acc[f][1];
              if (r) a0 += load8(r), a1 += load8(r + 8);
              store8(y, vclamp(a0, vlo, vhi));
              store8(y + 8, vclamp(a1, vlo, vhi));
              continue;
            }
            float tile[CW];
            store8(tile, acc[f][0]);
            store8(tile + 8, acc[f][1]);
            for (int64_t j = 0; j < n; ++j) y[j] = std::min(std::max(tile[j] + (r ? r[j] : 0.0f), lo), hi);
          }
        }
      }
  });
}

/// A convolution (groups 1, dilation 1, stride 1) as a GEMM whose B rows
/// are read straight from the zero-padded input (phasePlanes<1>): an
/// implicit im2col. Row k = (c, kh, kw) of the im2col matrix, over the
/// "wide" output grid of OH rows of PW = OW + KW - 1 columns (the last KW
/// - 1 of each row are not outputs), is a contiguous run of the padded
/// plane of channel c from row kh, column kw: sgemm reads it in place
/// through bRows. The product (bias and clamp on the tile; the residual,
/// if any, and then the clamp, in the copy) lands in a scratch [F, OH *
/// PW] and its valid columns are copied to Y. The weights are the same
/// (packed or not) as im2col's.
void convIndirect(const float *X, const float *Wt, bool packedW, const float *Bs, const float *res, float *Y, int64_t C,
                  int64_t H, int64_t W, int64_t F, int64_t KH, int64_t KW, int64_t OH, int64_t OW, int64_t PT,
                  int64_t PL, float lo, float hi) {
  const int64_t PW = OW + KW - 1, PH = OH + KH - 1, PS = PH * PW, NW = OH * PW, K = C * KH * KW;
  // + KW: a wide row's last columns read up to KW - 1 floats past the
  // plane (into the next, or here at the end), for columns not output.
  float *ph = grow(scratch(2), C * PS + KW);
  phasePlanes<1>(X, C, H, W, PT, PL, PH, PW, ph);
  std::fill(ph + C * PS, ph + C * PS + KW, 0.0f);
  static thread_local std::vector<int64_t> rowsBuf;
  rowsBuf.resize(K);
  for (int64_t c = 0, k = 0; c < C; ++c)
    for (int64_t kh = 0; kh < KH; ++kh)
      for (int64_t kw = 0; kw < KW; ++kw, ++k)
        rowsBuf[k] = c * PS + kh * PW + kw;
  float *wide = grow(scratch(3), F * NW);
  Epilogue ep{Bs, res ? -std::numeric_limits<float>::infinity() : lo, res ? std::numeric_limits<float>::infinity() : hi};
  sgemm(F, NW, K, packedW ? nullptr : Wt, K, false, ph, 0, false, wide, NW, &ep, packedW ? Wt : nullptr, nullptr,
        gemm::KC, false, rowsBuf.data());
  const v8f vlo = splat(lo), vhi = splat(hi);
  parallelRuns(F * OH, [&](int64_t t) {
    const float *w = wide + t / OH * NW + t % OH * PW;
    float *y = Y + t * OW;
    if (!res) {
      copyFloats(y, w, OW);
      return;
    }
    const float *r = res + t * OW;
    int64_t j = 0;
    for (; j + 8 <= OW; j += 8) store8(y + j, vclamp(load8(w + j) + load8(r + j), vlo, vhi));
    for (; j < OW; ++j) y[j] = std::min(std::max(w[j] + r[j], lo), hi);
  });
}
} // namespace

void forgetGroupedWeights() {
  std::lock_guard<std::mutex> lock(groupedMutex);
  groupedCache.clear();
}

void forgetGroupedWeights(const void *lo, const void *hi) {
  std::lock_guard<std::mutex> lock(groupedMutex);
  const auto a = reinterpret_cast<uintptr_t>(lo), b = reinterpret_cast<uintptr_t>(hi);
  for (auto it = groupedCache.begin(); it != groupedCache.end();) {
    const auto w = reinterpret_cast<uintptr_t>(std::get<0>(it->first));
    it = w >= a && w < b ? groupedCache.erase(it) : std::next(it);
  }
}

/// Conv2d (any groups) with bias and a clamp on the store; `packedW` says
/// w is the weight matrix [F, C*KH*KW] packed as GEMM operand A (G == 1).
void conv2d(intptr_t x, intptr_t w, bool packedW, intptr_t bias, intptr_t residual, intptr_t y,
            int64_t N, int64_t C, int64_t H, int64_t W, int64_t F, int64_t KH, int64_t KW, int64_t OH,
            int64_t OW, int64_t SH, int64_t SW, int64_t DH, int64_t DW, int64_t PT, int64_t PL,
            int64_t G, float lo, float hi, bool channelsOwned) {
  const bool clamp = lo > -std::numeric_limits<float>::infinity() || hi < std::numeric_limits<float>::infinity();
  const float *X = (const float *)x, *Wt = (const float *)w, *Bs = (const float *)bias;
  float *Y = (float *)y;
  int64_t Cg = C / G, Fg = F / G, OHW = OH * OW, KK = KH * KW;
  // The residual may be Y itself (kiln-plan-arena's in-place buffers).
  // Every path but gemm::convResidualReadInPlace's would overwrite it
  // first (partial sums of K blocks, im2col in K blocks), so it gets a copy.
  static thread_local std::vector<float> residualCopy;
  if (residual && residual == y &&
      !(packedW && gemm::convResidualReadInPlace(C, KH, KW, SH, SW, PT, PL, OH == H && OW == W, G))) {
    residualCopy.assign((const float *)residual, (const float *)residual + N * F * OHW);
    residual = (intptr_t)residualCopy.data();
  }
  if (Cg == 1 && Fg == 1 && !packedW) {
    // 3x3 (stride 1, or 2 with left pad 0 or 1) straight on the planes
    // with masked loads: AVX-512, or AVX2 where it wins (depthwisePlane).
    // Otherwise 3x3 on channel blocks where the plane kernel's per-plane
    // and per-row costs weigh (strided, or planes of at most 28x28);
    // measured 1.3-2.3x faster there, 10-15% slower on 56x56 and 112x112
    // stride 1.
#if defined(__x86_64__)
    // Outputs of at most 64 pixels (MobileNetV2's 7x7 stage): 16
    // channels in the lanes (depthwise16Avx512), where a plane kernel
    // spends most of its time per plane and row (Zen 5, in the model: the
    // 960-channel 7x7 ones 0.62-0.65x the time at 1 and 2 threads, the
    // stride-2 14x14 -> 7x7 one 0.87x). Not on larger planes: the 14x14
    // ones no different, the stride-2 ones to 14x14 and 28x28 1.6-1.8x
    // slower (the transposes of their 4x larger input weigh).
    if (KH == 3 && KW == 3 && DH == 1 && DW == 1 && SH == SW && SH <= 2 && OH * OW <= 64 && wideKernels()) {
      const int64_t blocks = (C + 15) / 16, Hp = (OH - 1) * SH + 3, Wp = (OW - 1) * SH + 3;
      parallelFor(N * blocks, [&](int64_t t) {
        const int64_t n = t / blocks, c0 = t % blocks * 16;
        static thread_local std::vector<float> buf;
        if (buf.size() < size_t((Hp * Wp + OH * OW) * 16)) buf.resize((Hp * Wp + OH * OW) * 16);
        depthwise16Avx512(X + (n * C + c0) * H * W, Wt + c0 * 9, Bs ? Bs + c0 : nullptr, Y + (n * C + c0) * OH * OW,
                          std::min<int64_t>(16, C - c0), H, W, OH, OW, SH, PT, PL, lo, hi, buf.data());
      });
      return;
    }
    if (KH == 3 && KW == 3 && DH == 1 && DW == 1 && SH == SW)
      if (auto plane = depthwisePlane(SH, PL, H, W, OH, OW)) {
        depthwiseDirect(plane, X, Wt, Bs, Y, N * C, C, H, W, OH, OW, PT, PL, lo, hi);
        return;
      }
#endif
    if (KH == 3 && KW == 3 && (SH > 1 || SW > 1 || OH * OW <= 784))
      depthwiseBlocked<3, false>(X, Wt, Bs, Y, N, C, H, W, OH, OW, SH, SW, DH, DW, PT, PL, lo, hi);
    else
      planeWindows<false>(X, Wt, Bs, Y, N, C, H, W, KH, KW, OH, OW, SH, SW, DH, DW, PT, PL, clamp, lo, hi);
    return;
  }
#if defined(__x86_64__)
  // AVX-512, a 5x5 or 7x7 window over at most 4 channels (a stem: ResNet-
  // 50's 7x7 stride 2): the pixels in the lanes, on phase planes
  // (convPhased). Weights packed at compile time are regrouped once
  // (groupedWeights), others on each call (the same sums as packed ones,
  // bit for bit).
  if (G == 1 && C <= 4 && KH == KW && (KH == 5 || KH == 7) && DH == 1 && DW == 1 && SH == SW && SH <= 2 &&
      wideKernels()) {
    const auto wT = groupedWeights(Wt, packedW, F, C * KK, 4);
    for (int64_t n = 0; n < N; ++n)
      convPhased(KH, SH, X + n * C * H * W, wT->data(), Bs, residual ? (const float *)residual + n * F * OHW : nullptr,
                 Y + n * F * OHW, C, H, W, F, OH, OW, PT, PL, lo, hi);
    return;
  }
  // AVX-512, the filters in the lanes (convDirect): other windows of 5 x 5
  // and more over at most 4 channels, and stride-2 3x3 convs (ResNet-50's
  // 28x28, 14x14 and 7x7 ones: see convDirect); weights as above.
  if (G == 1 && DH == 1 && DW == 1 && SH == SW && SH <= 2 && wideKernels() &&
      ((C <= 4 && KH >= 5 && KW >= 5) || (KH == 3 && KW == 3 && SH == 2 && C >= 16))) {
    const auto wT = groupedWeights(Wt, packedW, F, C * KK, 32);
    for (int64_t n = 0; n < N; ++n)
      convDirect(SH, X + n * C * H * W, wT->data(), Bs, residual ? (const float *)residual + n * F * OHW : nullptr,
                 Y + n * F * OHW, C, H, W, F, KH, KW, OH, OW, PT, PL, lo, hi);
    return;
  }
  // 3x3 over at most 4 channels (a stem): direct, no im2col matrix.
  if (G == 1 && C <= 4 && KH == 3 && KW == 3 && DH == 1 && DW == 1 && SH == SW && (SH == 1 || (SH == 2 && PL <= 1)) &&
      OW >= 16 && wideKernels()) {
    const auto wT = groupedWeights(Wt, packedW, F, C * 9, 16); // see convSmallC3
    for (int64_t n = 0; n < N; ++n)
      convSmallC3(SH, X + n * C * H * W, wT->data(), Bs, residual ? (const float *)residual + n * F * OHW : nullptr,
                  Y + n * F * OHW, C, H, W, F, OH, OW, PT, PL, lo, hi);
    return;
  }
#endif
  if (G == 1 && C <= 4 && KH == KW && (KH == 3 || (KH == 7 && SH == 2)) && DH == 1 && DW == 1 && SH == SW &&
      SH <= 2 && OW >= 16 && !wideKernels()) {
    const auto wT = groupedWeights(Wt, packedW, F, C * KK, 4); // see convSmallPhased
    const auto run = KH == 7 ? convSmallPhased<7, 2> : SH == 1 ? convSmallPhased<3, 1> : convSmallPhased<3, 2>;
    for (int64_t n = 0; n < N; ++n)
      run(X + n * C * H * W, wT->data(), Bs, residual ? (const float *)residual + n * F * OHW : nullptr,
          Y + n * F * OHW, C, H, W, F, OH, OW, PT, PL, lo, hi);
    return;
  }
  bool direct = KH == 1 && KW == 1 && SH == 1 && SW == 1 && PT == 0 && PL == 0 && OH == H && OW == W;
  // Without AVX-512, a stride-1 K x K conv (K > 1) whose wide output
  // grid (see convIndirect) has at least 512 columns reads its padded
  // input in place instead of an im2col matrix. Against im2col + GEMM
  // with packed weights (time ratio at 1 / 2 threads, in-process
  // alternating calls, Zen 3): 64 x 56x56 3x3 0.88 / 0.91, 128 x 112x112
  // 3x3 (banded im2col) 0.96 / 0.95, 16 -> 32 x 32x32 5x5 0.64 / 0.50.
  // Not at stride 2 (phase planes): ResNet-50's 128 x 56x56 3x3 took 1.08
  // / 1.07 against im2col in K blocks, 1x1 convs 1.3x (the planes copy 4x
  // what im2col does).
  if (!direct && KH * KW > 1 && G == 1 && DH == 1 && DW == 1 && SH == 1 && SW == 1 &&
      OH * (OW + KW - 1) >= 512 && !wideKernels()) {
    for (int64_t n = 0; n < N; ++n)
      convIndirect(X + n * C * H * W, Wt, packedW, Bs, residual ? (const float *)residual + n * F * OHW : nullptr,
                   Y + n * F * OHW, C, H, W, F, KH, KW, OH, OW, PT, PL, lo, hi);
    return;
  }
  const int64_t rowsK = Cg * KK;
  // A large im2col matrix (ResNet-50's stem: 147 x 12544 floats, 7.4 MB)
  // would be written to memory and read back: build and use it in bands
  // of whole output rows, at least 512 pixels (so the GEMM reads the band
  // in place, see directB), in parallel, each band's columns staying in
  // this core's cache while its GEMM runs.
  const bool banded = !direct && OHW >= 2048 && rowsK * OHW * 4 > (1 << 20);
  // Otherwise, a packed-weight im2col matrix of more than 512 KiB, more
  // than one K block and at least 196 pixels (ResNet-50's 28x28 stride-2
  // 3x3 conv: 1152 x 784, 3.6 MB) is built and multiplied one K block at
  // a time: 0.91x the time at 1 thread, 0.96x at 2 (Zen 4). From 196
  // pixels since session 18 (the 14x14 one, 2304 x 196: on the Intel
  // machine 0.89x at 1 thread, 0.98x at 2, in the model; on the Zen 4
  // machine, before the pixel order of conv tasks, 0.97-0.99x at 1 but
  // 1.09-1.11x at 2). Not for the 7x7 one (4608 x 49): 0.97x at 1 thread
  // but 1.07x at 2, its 18 small products each a fork-join.
  const bool chunked = !direct && !banded && packedW && G == 1 && rowsK > gemm::KC && OHW >= 196 &&
                       rowsK * OHW * 4 > (1 << 19);
  Buffer &col = scratch(2);
  if (!direct && !banded) grow(col, (chunked ? gemm::KC : rowsK) * OHW);
  std::vector<int32_t> which(chunked ? gemm::KC : 0); // im2col rows of one K block
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t g = 0; g < G; ++g) {
      const float *xg = X + (n * C + g * Cg) * H * W;
      const float *src = xg;
      const float *wg = packedW ? nullptr : Wt + g * Fg * rowsK;
      if (banded) {
        const int64_t R = (512 + OW - 1) / OW, bands = (OH + R - 1) / R;
        parallelFor(bands, [&](int64_t band) {
          const int64_t oh0 = band * R, rows = std::min(R, OH - oh0), nb = rows * OW;
          Buffer &cb = scratch(2);
          grow(cb, rowsK * nb);
          im2col(xg, rowsK, nullptr, cb.data(), H, W, KH, KW, rows, OW, SH, SW, DH, DW, PT - oh0 * SH, PL);
          float *yb = Y + (n * F + g * Fg) * OHW + oh0 * OW;
          Epilogue ep{Bs ? Bs + g * Fg : nullptr, lo, hi};
          if (residual) ep.residual = (const float *)residual + (n * F + g * Fg) * OHW + oh0 * OW;
          sgemm(Fg, nb, rowsK, wg, rowsK, false, cb.data(), nb, false, yb, OHW, &ep, packedW ? Wt : nullptr, nullptr,
                gemm::KC, false, nullptr, channelsOwned);
        });
        continue;
      }
      float *yg = Y + (n * F + g * Fg) * OHW;
      // Bias and the fused activation are applied on each tile as it is stored.
      Epilogue ep{Bs ? Bs + g * Fg : nullptr, lo, hi};
      if (residual) ep.residual = (const float *)residual + (n * F + g * Fg) * OHW;
      if (chunked) {
        // One K block (gemm::KC rows of the im2col matrix) at a time, its
        // rows built just before the GEMM reads them (from L2, not
        // memory), the products added into Y, the epilogue on the last.
        for (int64_t k0 = 0; k0 < rowsK; k0 += gemm::KC) {
          const int64_t kc = std::min<int64_t>(gemm::KC, rowsK - k0);
          for (int64_t i = 0; i < kc; ++i) which[i] = int32_t(k0 + i);
          im2col(xg, kc, which.data(), col.data(), H, W, KH, KW, OH, OW, SH, SW, DH, DW, PT, PL);
          sgemm(Fg, OHW, kc, nullptr, rowsK, false, col.data(), OHW, false, yg, OHW, k0 + kc >= rowsK ? &ep : nullptr,
                Wt + gemm::packedAOffset(Fg, k0, kc, 0), nullptr, gemm::KC, k0 > 0, nullptr, channelsOwned);
        }
        continue;
      }
      if (!direct) {
        float *colp = col.data();
        im2col(xg, rowsK, nullptr, colp, H, W, KH, KW, OH, OW, SH, SW, DH, DW, PT, PL);
        src = colp;
      }
      sgemm(Fg, OHW, rowsK, wg, rowsK, false, src, OHW, false, yg, OHW, &ep, packedW ? Wt : nullptr, nullptr,
            gemm::KC, false, nullptr, channelsOwned);
    }
  }
}

} // namespace kiln::rt

extern "C" {

void kiln_rt_conv_transpose2d(intptr_t x, intptr_t w, intptr_t bias, intptr_t y, int64_t N,
                              int64_t C, int64_t H, int64_t W, int64_t F, int64_t KH, int64_t KW,
                              int64_t OH, int64_t OW, int64_t SH, int64_t SW, int64_t DH,
                              int64_t DW, int64_t PT, int64_t PL, int64_t G) {
  const float *X = (const float *)x, *Wt = (const float *)w, *Bs = (const float *)bias;
  float *Y = (float *)y;
  int64_t Cg = C / G, Fg = F / G, KK = KH * KW, HW = H * W;
  std::vector<float> col(Fg * KK * HW);
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t g = 0; g < G; ++g) {
      // col[Fg*KK, HW] = Wg^T[Fg*KK, Cg] * Xg[Cg, HW]
      sgemm(Fg * KK, HW, Cg, Wt + g * Cg * Fg * KK, Fg * KK, true, X + (n * C + g * Cg) * HW, HW,
            false, col.data(), HW, nullptr, nullptr, nullptr, kiln::gemm::KC);
      // Scatter-add into the output (col2im), parallel over output channels.
      parallelFor(Fg, [&](int64_t f) {
        float *yf = Y + (n * F + g * Fg + f) * OH * OW;
        float b0 = Bs ? Bs[g * Fg + f] : 0.0f;
        std::fill(yf, yf + OH * OW, b0);
        for (int64_t kh = 0; kh < KH; ++kh)
          for (int64_t kw = 0; kw < KW; ++kw) {
            const float *cr = col.data() + ((f * KH + kh) * KW + kw) * HW;
            for (int64_t ih = 0; ih < H; ++ih) {
              int64_t oh = ih * SH + kh * DH - PT;
              if (oh < 0 || oh >= OH) continue;
              for (int64_t iw = 0; iw < W; ++iw) {
                int64_t ow = iw * SW + kw * DW - PL;
                if (ow >= 0 && ow < OW) yf[oh * OW + ow] += cr[ih * W + iw];
              }
            }
          }
      });
    }
  }
}

} // extern "C"
