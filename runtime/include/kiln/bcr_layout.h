/* BCR (block-based column-row) sparse weights: analysis, compact storage
 * and the cost model, shared by the compiler (which detects the structure
 * and packs constant weights at compile time) and the runtime (whose
 * kernels read the packed form). C++17, header-only, no dependencies.
 * The scheme is ../../../docs/sparsity.md's (after GRIM, TPAMI 2021).
 *
 * A weight is seen as W[M, K] with y = W x along K (a conv: one filter per
 * row; a MatMul/Gemm with constant B: one output feature per row).
 *
 * Analysis: cut W into blocks of br x bc; in a BCR-pruned matrix every
 * block's non-zeros fill the rectangle (kept rows) x (kept columns). A
 * block size is exact when that holds for every block.
 *
 * Storage: rows are grouped in strips of SR = 4 (the kernel's register
 * tile: 4 output rows x 24 spatial columns). Rows are first reordered
 * inside each block row so that rows kept in the same blocks sit together
 * (a row permutation, applied as results are stored). The used columns
 * (those with any non-zero) are cut into chunks of `chunk` columns, so
 * positions fit 16 bits whatever K is (kChunk is large: chunks small
 * enough to keep a tile's packed inputs in L1 measured slower). In a strip
 * and a chunk, every column of W has a row mask (which of the 4 rows are
 * non-zero there); columns with the same mask form one segment, a dense
 * popcount(mask) x count matrix over gathered inputs: each input row is
 * loaded once for all kept rows of the strip (load-redundancy
 * elimination). The kernel has one specialisation per mask, so the kept
 * rows are compile-time constants and live in registers.
 *
 * Blob (32-bit words, one constant in the compiled library):
 *   [0] kMagic  [1] M  [2] K  [3] S = strips  [4] U = used columns
 *   [5] br  [6] bc  (the detected block; 0 if not exact BCR)  [7] words
 *   [8] chunk  [9] C = chunks of used columns
 *   [10, 10+C*S]     word offset of the list of (chunk c, strip s) at
 *                    10 + c*S + s, then the end (C*S+1 entries)
 *   then S*SR words  perm: W row stored in each strip slot (-1: none)
 *   then U words     used: the columns of W with any non-zero, ascending
 *   lists, chunk by chunk, strip by strip: nseg, then per segment:
 *                      mask | count << 4
 *                      ceil(count/2) words: count u16 positions within
 *                        the chunk (used column c*chunk + position)
 *                      count*pop words: f32 values, [column][kept row]
 * Kernels pack the used input rows of a chunk for a tile of spatial
 * columns and index them by position, so pruned columns of W are never
 * read (for a conv, their taps are never gathered).
 */
#ifndef KILN_BCR_LAYOUT_H
#define KILN_BCR_LAYOUT_H

#include <algorithm>
#include <cstdint>
#include <climits>
#include <cstring>
#include <numeric>
#include <vector>

namespace kiln::bcr {

constexpr int SR = 4;                 // rows per strip
constexpr uint32_t kMagic = 0x32524342; // "BCR2"
constexpr int kHeader = 10;
// Used columns per chunk. 256 (packed inputs in L1) measured 1.7x geomean
// per-layer speedup at 75% against 2.5x for one chunk per layer.
constexpr int kChunk = 16384;
constexpr int kMaxCount = (1 << 27) - 1;

/// The sparse kernel's costs, in cycles per 24 output columns, with 8-lane
/// vectors (AVX2 on Zen 3; NEON has the same shape): a column of a segment
/// by kept rows, the fixed cost of a segment (dispatch on its mask, loop
/// set-up and exit) and of a strip (its epilogue and store). A per-mask
/// sweep gives 4.5 (1 row: loading the gathered inputs dominates) to 6.8
/// cycles (4 rows: 12 FMAs) per column with inputs in L1; whole layers of
/// ResNet-50 and BERT (kiln-bench-sparse) run about 1.4x slower than that,
/// which the column costs below include. Merging small segments into ones
/// with more rows (zero-padded) was measured and does not pay.
constexpr double kColumnCycles[5] = {0, 6.0, 7.0, 8.0, 9.5};
constexpr double kSegmentCycles = 20, kStripCycles = 30;
/// With 16 lanes (AVX-512, tiles of 48 columns) a column's loads, a
/// segment's dispatch and a strip's epilogue serve twice the outputs:
/// kiln-bench-sparse measured whole layers 1.2-1.5x faster than on 8
/// lanes (Zen 4); per 24 columns the column costs scale by this factor and
/// the fixed costs halve.
constexpr double kWideColumnScale = 0.7;

inline int popcount4(unsigned m) { return (m & 1) + ((m >> 1) & 1) + ((m >> 2) & 1) + ((m >> 3) & 1); }

/// Values a BCR representation with br x bc blocks stores: the sum over
/// blocks of (rows with a non-zero) x (columns with a non-zero). Equal to
/// the non-zero count exactly when W is BCR at this block size. Stops
/// early, returning a value above `limit`, once the sum exceeds it.
inline int64_t storedValues(const float *W, int64_t M, int64_t K, int br, int bc,
                            int64_t limit = INT64_MAX) {
  int64_t stored = 0, nbc = (K + bc - 1) / bc;
  std::vector<uint64_t> rowMask(nbc), colMask(nbc); // br <= 64, bc <= 64
  for (int64_t i0 = 0; i0 < M; i0 += br) {
    std::fill(rowMask.begin(), rowMask.end(), 0);
    std::fill(colMask.begin(), colMask.end(), 0);
    for (int64_t i = i0; i < std::min<int64_t>(M, i0 + br); ++i) {
      const float *w = W + i * K;
      for (int64_t j = 0; j < nbc; ++j) {
        uint64_t cm = 0;
        const int64_t k0 = j * bc, n = std::min<int64_t>(bc, K - k0);
        for (int64_t k = 0; k < n; ++k) cm |= uint64_t(w[k0 + k] != 0.0f) << k; // branch-free
        colMask[j] |= cm;
        rowMask[j] |= uint64_t(cm != 0) << (i - i0);
      }
    }
    for (int64_t j = 0; j < nbc; ++j)
      stored += int64_t(__builtin_popcountll(rowMask[j])) * __builtin_popcountll(colMask[j]);
    if (stored > limit) return stored;
  }
  return stored;
}

inline int64_t nonZeros(const float *W, int64_t n) {
  int64_t nz = 0;
  for (int64_t i = 0; i < n; ++i) nz += W[i] != 0.0f;
  return nz;
}

/// Magnitude-based BCR pruning of W[M, K] in place (kiln-prune): in each
/// br x bc block (edge blocks smaller), the block-row or block-column of
/// least L2 norm (over its values still kept) is dropped, repeatedly,
/// until at most (1 - rate) of the block's values are kept (bcr.md).
/// Returns the values kept. A block-column holds br values, a block-row
/// bc, so with br < bc columns go first and whole columns of br rows stay:
/// 4 x 16 blocks at 75% keep 4 x 4 or 3 x 5, at 90% mostly 2 x 3, where
/// ranking by energy per value dropped rows early and kept mostly 1 x 5
/// (one FMA per loaded input vector in the sparse kernel; kiln-bench-sparse
/// geomean 2.89x -> 3.31x at 75%, 5.02x -> 5.68x at 90%).
inline int64_t prune(float *W, int64_t M, int64_t K, int br, int bc, double rate) {
  int64_t kept = 0;
  std::vector<double> rowE(br), colE(bc);
  std::vector<char> rowOn(br), colOn(bc);
  for (int64_t i0 = 0; i0 < M; i0 += br)
    for (int64_t k0 = 0; k0 < K; k0 += bc) {
      int r = int(std::min<int64_t>(br, M - i0)), c = int(std::min<int64_t>(bc, K - k0));
      std::fill(rowOn.begin(), rowOn.end(), 1);
      std::fill(colOn.begin(), colOn.end(), 1);
      int nr = r, nc = c;
      const double budget = (1.0 - rate) * r * c + 1e-9;
      while (nr * nc > budget) {
        std::fill(rowE.begin(), rowE.end(), 0.0);
        std::fill(colE.begin(), colE.end(), 0.0);
        for (int i = 0; i < r; ++i)
          for (int j = 0; j < c; ++j)
            if (rowOn[i] && colOn[j]) {
              double e = double(W[(i0 + i) * K + k0 + j]) * W[(i0 + i) * K + k0 + j];
              rowE[i] += e, colE[j] += e;
            }
        int bi = -1, bj = -1;
        for (int i = 0; i < r; ++i)
          if (rowOn[i] && (bi < 0 || rowE[i] < rowE[bi])) bi = i;
        for (int j = 0; j < c; ++j)
          if (colOn[j] && (bj < 0 || colE[j] < colE[bj])) bj = j;
        if (rowE[bi] <= colE[bj]) rowOn[bi] = 0, --nr;
        else colOn[bj] = 0, --nc;
      }
      for (int i = 0; i < r; ++i)
        for (int j = 0; j < c; ++j)
          if (!rowOn[i] || !colOn[j]) W[(i0 + i) * K + k0 + j] = 0.0f;
      kept += int64_t(nr) * nc;
    }
  return kept;
}

/// Candidate block sizes tried by detection (rows x columns), largest
/// area first (then more rows).
inline const std::vector<std::pair<int, int>> &candidateBlocks() {
  static const std::vector<std::pair<int, int>> c = {
      {32, 32}, {16, 32}, {16, 16}, {8, 32}, {16, 8}, {8, 16}, {4, 32}, {8, 8}, {4, 16}, {8, 4}, {4, 8}, {4, 4}};
  return c;
}

/// The largest candidate block (by area, then rows) at which W is exactly
/// BCR; {0, 0} if none is (unstructured or dense). Only candidates given.
inline std::pair<int, int> detectBlock(const float *W, int64_t M, int64_t K, int64_t nnz,
                                       const std::vector<std::pair<int, int>> &cands) {
  std::vector<std::pair<int, int>> order = cands;
  std::stable_sort(order.begin(), order.end(), [](auto a, auto b) {
    return int64_t(a.first) * a.second > int64_t(b.first) * b.second ||
           (int64_t(a.first) * a.second == int64_t(b.first) * b.second && a.first > b.first);
  });
  for (auto [br, bc] : order)
    if (storedValues(W, M, K, br, bc, nnz) == nnz) return {br, bc};
  return {0, 0};
}

/// Row order: within each group of `group` rows (the detected block's
/// rows, a multiple of SR; else SR), rows sorted by which column blocks of
/// width bc they have non-zeros in, so rows kept together share strips.
inline std::vector<int32_t> rowOrder(const float *W, int64_t M, int64_t K, int group, int bc) {
  std::vector<int32_t> perm(M);
  std::iota(perm.begin(), perm.end(), 0);
  // Groups of one strip: sorting inside a strip changes nothing.
  if (group <= SR || group % SR || bc <= 0) return perm;
  int64_t nbc = (K + bc - 1) / bc;
  std::vector<std::vector<bool>> sig(M, std::vector<bool>(nbc));
  for (int64_t i = 0; i < M; ++i)
    for (int64_t k = 0; k < K; ++k)
      if (W[i * K + k] != 0.0f) sig[i][k / bc] = true;
  for (int64_t i0 = 0; i0 < M; i0 += group)
    std::stable_sort(perm.begin() + i0, perm.begin() + std::min<int64_t>(M, i0 + group),
                     [&](int32_t a, int32_t b) {
                       auto ca = std::count(sig[a].begin(), sig[a].end(), true);
                       auto cb = std::count(sig[b].begin(), sig[b].end(), true);
                       if (ca != cb) return ca > cb;
                       return sig[a] > sig[b];
                     });
  return perm;
}

inline uint32_t floatBits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float bitsFloat(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

/// Packs W[M, K] (row-major) into the blob described above. `perm` (size
/// M, a permutation) orders rows into strips; br, bc are recorded only.
/// Empty for an empty W or a chunk outside [1, 65536].
inline std::vector<uint32_t> pack(const float *W, int64_t M, int64_t K, const std::vector<int32_t> &perm,
                                  int br = 0, int bc = 0, int chunk = kChunk) {
  if (M <= 0 || K <= 0 || chunk < 1 || chunk > 65536 || int64_t(perm.size()) != M) return {};
  int64_t S = (M + SR - 1) / SR;
  std::vector<char> any(K, 0);
  for (int64_t i = 0; i < M; ++i)
    for (int64_t k = 0; k < K; ++k) any[k] |= W[i * K + k] != 0.0f;
  std::vector<int32_t> used;
  for (int64_t k = 0; k < K; ++k)
    if (any[k]) used.push_back(int32_t(k));
  const int64_t U = int64_t(used.size()), C = std::max<int64_t>(1, (U + chunk - 1) / chunk);
  std::vector<uint32_t> blob(kHeader + C * S + 1);
  for (int64_t s = 0; s < S * SR; ++s) blob.push_back(uint32_t(s < M ? perm[s] : -1));
  for (int32_t k : used) blob.push_back(uint32_t(k));
  std::vector<int32_t> cols[16]; // per mask: positions within the chunk
  for (int64_t c = 0; c < C; ++c) {
    const int64_t u0 = c * chunk, u1 = std::min<int64_t>(U, u0 + chunk);
    for (int64_t s = 0; s < S; ++s) {
      blob[kHeader + c * S + s] = uint32_t(blob.size());
      for (auto &cl : cols) cl.clear();
      const float *rows[SR];
      int nr = int(std::min<int64_t>(SR, M - s * SR));
      for (int q = 0; q < nr; ++q) rows[q] = W + int64_t(perm[s * SR + q]) * K;
      for (int64_t u = u0; u < u1; ++u) {
        unsigned mask = 0;
        for (int q = 0; q < nr; ++q) mask |= unsigned(rows[q][used[u]] != 0.0f) << q;
        if (mask) cols[mask].push_back(int32_t(u - u0));
      }
      size_t nsegAt = blob.size();
      blob.push_back(0);
      for (unsigned mask = 1; mask < 16; ++mask) {
        if (cols[mask].empty()) continue;
        size_t count = cols[mask].size(); // <= chunk: fits the count field
        ++blob[nsegAt];
        blob.push_back(mask | uint32_t(count) << 4);
        size_t at = blob.size();
        blob.resize(at + (count + 1) / 2);
        for (size_t i = 0; i < count; ++i) blob[at + i / 2] |= uint32_t(cols[mask][i]) << (16 * (i % 2));
        for (size_t i = 0; i < count; ++i)
          for (int q = 0; q < nr; ++q)
            if (mask >> q & 1) blob.push_back(floatBits(rows[q][used[u0 + cols[mask][i]]]));
      }
    }
  }
  blob[kHeader + C * S] = uint32_t(blob.size());
  uint32_t head[kHeader] = {kMagic, uint32_t(M), uint32_t(K), uint32_t(S), uint32_t(U), uint32_t(br), uint32_t(bc),
                            uint32_t(blob.size()), uint32_t(chunk), uint32_t(C)};
  std::copy(head, head + kHeader, blob.begin());
  return blob;
}

/// A read-only view of a packed blob (what the kernels walk).
struct View {
  const uint32_t *b;
  int64_t M() const { return b[1]; }
  int64_t K() const { return b[2]; }
  int64_t strips() const { return b[3]; }
  int64_t usedCount() const { return b[4]; }
  int64_t chunk() const { return b[8]; }
  int64_t chunks() const { return b[9]; }
  const int32_t *perm() const { return reinterpret_cast<const int32_t *>(b + kHeader + chunks() * strips() + 1); }
  const int32_t *used() const { return perm() + strips() * SR; }
  /// The segment list of strip s in chunk c.
  const uint32_t *list(int64_t c, int64_t s) const { return b + b[kHeader + c * strips() + s]; }
  /// Whether `words` 32-bit words at b hold a well-formed blob (sizes and
  /// offsets consistent; the runtime checks before trusting one).
  static bool valid(const uint32_t *b, int64_t words) {
    if (words < kHeader || b[0] != kMagic || int64_t(b[7]) != words) return false;
    int64_t M = b[1], K = b[2], S = b[3], U = b[4], chunk = b[8], C = b[9];
    if (S != (M + SR - 1) / SR || U > K || chunk < 1 || chunk > 65536 ||
        C != std::max<int64_t>(1, (U + chunk - 1) / chunk))
      return false;
    int64_t first = kHeader + C * S + 1 + S * SR + U;
    if (first > words) return false;
    const int32_t *perm = reinterpret_cast<const int32_t *>(b + kHeader + C * S + 1);
    for (int64_t i = 0; i < S * SR; ++i)
      if (perm[i] < -1 || perm[i] >= M) return false;
    for (int64_t u = 0; u < U; ++u)
      if (int32_t(b[first - U + u]) < 0 || int32_t(b[first - U + u]) >= K) return false;
    for (int64_t l = 0; l < C * S; ++l) {
      int64_t at = b[kHeader + l], end = b[kHeader + l + 1];
      int64_t inChunk = std::min(chunk, U - (l / S) * chunk);
      if (at < first || end > words || at >= end) return false;
      int64_t nseg = b[at++];
      for (int64_t g = 0; g < nseg; ++g) {
        if (at >= end) return false;
        unsigned mask = b[at] & 15;
        int64_t count = b[at++] >> 4;
        if (!mask || at + (count + 1) / 2 + count * popcount4(mask) > end) return false;
        for (int64_t c = 0; c < count; ++c)
          if (((b[at + c / 2] >> (16 * (c % 2))) & 0xffff) >= inChunk) return false;
        at += (count + 1) / 2 + count * popcount4(mask);
      }
      if (at != end) return false;
    }
    return true;
  }
};

/// The dense W[M, K] a blob holds (tests; the inverse of pack).
inline std::vector<float> unpack(const uint32_t *blob) {
  View v{blob};
  std::vector<float> W(v.M() * v.K(), 0.0f);
  for (int64_t ch = 0; ch < v.chunks(); ++ch)
    for (int64_t s = 0; s < v.strips(); ++s) {
      const uint32_t *p = v.list(ch, s);
      uint32_t nseg = *p++;
      for (uint32_t g = 0; g < nseg; ++g) {
        unsigned mask = *p & 15;
        uint32_t count = *p++ >> 4;
        const uint32_t *vals = p + (count + 1) / 2;
        int pop = popcount4(mask);
        for (uint32_t c = 0; c < count; ++c) {
          int64_t k = v.used()[ch * v.chunk() + ((p[c / 2] >> (16 * (c % 2))) & 0xffff)];
          int q = 0;
          for (int r = 0; r < SR; ++r)
            if (mask >> r & 1) W[int64_t(v.perm()[s * SR + r]) * v.K() + k] = bitsFloat(vals[c * pop + q++]);
        }
        p = vals + count * pop;
      }
    }
  return W;
}

/// Cost model, in cycles per 24 output columns, of the sparse kernel on
/// this blob (the constants above; `lanes`: 8 or 16, the target's vector
/// width; `inPlace`: input rows read in place, as a KxK convolution's are,
/// rather than packed per tile) and of the dense GEMM on the same layer
/// (about 85% of the FMA peak, 16 lanes per cycle).
struct Cost {
  double sparse = 0, dense = 0;
};
inline Cost estimate(const uint32_t *blob, int lanes = 8, bool inPlace = false) {
  View v{blob};
  Cost c;
  const double col = lanes >= 16 ? kWideColumnScale : 1.0, fixed = lanes >= 16 ? 0.5 : 1.0;
  c.dense = double(v.M()) * v.K() * 24 / 16 / 0.85;
  c.sparse = inPlace ? 0.0 : 1.5 * v.usedCount(); // packing the used input rows
  for (int64_t ch = 0; ch < v.chunks(); ++ch)
    for (int64_t s = 0; s < v.strips(); ++s) {
      const uint32_t *p = v.list(ch, s);
      uint32_t nseg = *p++;
      if (nseg || ch == v.chunks() - 1) c.sparse += fixed * kStripCycles; // partial sums, or the epilogue
      for (uint32_t g = 0; g < nseg; ++g) {
        unsigned mask = *p & 15;
        uint32_t count = *p++ >> 4;
        c.sparse += fixed * kSegmentCycles + count * col * kColumnCycles[popcount4(mask)];
        p += (count + 1) / 2 + count * popcount4(mask);
      }
    }
  return c;
}

} // namespace kiln::bcr

#endif
