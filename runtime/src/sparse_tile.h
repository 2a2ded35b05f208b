// The BCR sparse register-tile kernel, written once over the vector type
// VF (see sparse.cpp). Included by sparse.cpp twice, inside a namespace
// each time: for v8f with the file's own target (AVX2 / NEON) and for
// v16f under `#pragma GCC target("avx512f")`, so that every helper here is
// compiled for the registers it uses (a helper compiled without AVX-512
// splits 16-lane vectors into 4 x 128 bits before it is inlined). No
// include guard on purpose; includes nothing itself.

// VF: v8f (AVX2, two NEON registers) or v16f (AVX-512). A full register
// tile is 4 rows x 3 vectors: 24 or 48 spatial columns.
template <class VF> constexpr int kLanes = int(sizeof(VF) / sizeof(float));
template <class VF> __attribute__((always_inline)) inline VF vload(const float *p) {
  VF v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
template <class VF> __attribute__((always_inline)) inline void vstore(float *p, VF v) {
  std::memcpy(p, &v, sizeof v);
}
/// All lanes = x, as an initializer list (a loop over lanes compiles to
/// stores and a reload).
template <class VF> __attribute__((always_inline)) inline VF vsplat(float x) {
  if constexpr (kLanes<VF> == 8) return VF{x, x, x, x, x, x, x, x};
  else return VF{x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x};
}
template <class VF, int V> using Acc = VF[bcr::SR][V];

constexpr int pop(unsigned m) { return (m & 1) + ((m >> 1) & 1) + ((m >> 2) & 1) + ((m >> 3) & 1); }

/// acc[r] += v[index of r among MASK's rows] * x for the rows in MASK.
template <unsigned MASK, class VF, int V>
__attribute__((always_inline)) inline void step(Acc<VF, V> &acc, const float *v, const VF (&x)[V]) {
  for (int r = 0; r < bcr::SR; ++r) // unrolled: r and the value index are constants
    if ((MASK >> r) & 1) {
      VF s = vsplat<VF>(v[pop(MASK & ((1u << r) - 1))]);
      for (int j = 0; j < V; ++j) acc[r][j] += s * x[j];
    }
}

template <class VF, int V> __attribute__((always_inline)) inline void loadX(const float *p, VF (&x)[V]) {
  for (int j = 0; j < V; ++j) x[j] = vload<VF>(p + kLanes<VF> * j);
}

/// One segment: `count` gathered input rows (u16 positions at p) times the
/// values that follow them, on a tile of V vectors, added into the strip's
/// tile. Input row u of the tile is at xp + u * L*V (packed), or at
/// xp + off[u] when OFF (read in place, see BcrInput::off). Returns the
/// next segment. Only the segment's own rows have accumulators here: with
/// all 4 x V live across every mask, compilers spill them inside the loops.
template <unsigned MASK, class VF, int V, bool OFF>
__attribute__((always_inline)) inline const uint32_t *segment(const uint32_t *p, uint32_t count,
                                                              const float *xp, const int64_t *off,
                                                              float (&tile)[bcr::SR][kLanes<VF> * V],
                                                              unsigned &done) {
  constexpr int P = pop(MASK), W = kLanes<VF> * V;
  const u16a *idx = reinterpret_cast<const u16a *>(p);
  const float *v = reinterpret_cast<const float *>(p + (count + 1) / 2);
  uint32_t c = 0;
  Acc<VF, V> acc{};
  VF x[V];
  if constexpr (P * V <= 4) {
    // Few accumulators per column: a second set doubles the independent
    // FMA chains (their latency, not throughput, bounds the loop).
    Acc<VF, V> b{};
    VF x2[V];
    for (; c + 2 <= count; c += 2) {
      loadX<VF, V>(xp + (OFF ? off[idx[c]] : idx[c] * W), x);
      loadX<VF, V>(xp + (OFF ? off[idx[c + 1]] : idx[c + 1] * W), x2);
      step<MASK, VF, V>(acc, v + c * P, x);
      step<MASK, VF, V>(b, v + (c + 1) * P, x2);
    }
    for (int r = 0; r < bcr::SR; ++r)
      if (MASK >> r & 1)
        for (int j = 0; j < V; ++j) acc[r][j] += b[r][j];
  }
  for (; c < count; ++c) {
    loadX<VF, V>(xp + (OFF ? off[idx[c]] : idx[c] * W), x);
    step<MASK, VF, V>(acc, v + c * P, x);
  }
  // Rows no earlier segment wrote are stored, the others added to.
  constexpr int L = kLanes<VF>;
  for (int r = 0; r < bcr::SR; ++r)
    if (MASK >> r & 1)
      for (int j = 0; j < V; ++j)
        vstore<VF>(tile[r] + L * j, done >> r & 1 ? vload<VF>(tile[r] + L * j) + acc[r][j] : acc[r][j]);
  done |= MASK;
  return reinterpret_cast<const uint32_t *>(v + count * P);
}

template <class VF, int V>
__attribute__((always_inline)) inline void storeTile(const BcrOutput &out, const int32_t *rows, int64_t n0,
                                                     int64_t nb, const float (&tile)[bcr::SR][kLanes<VF> * V]) {
  constexpr int L = kLanes<VF>;
  VF lo = vsplat<VF>(out.lo), hi = vsplat<VF>(out.hi);
  for (int q = 0; q < bcr::SR; ++q) {
    int64_t r = rows[q];
    if (r < 0) continue;
    float b = out.bias ? out.bias[r] : 0.0f;
    float *y = out.y + r * out.ldRow + n0 * out.ldCol;
    const float *res = out.residual ? out.residual + r * out.ldRow + n0 * out.ldCol : nullptr;
    if (out.ldCol == 1 && nb == L * V) {
      for (int j = 0; j < V; ++j) {
        VF a = vload<VF>(tile[q] + L * j) + b;
        if (res) a += vload<VF>(res + L * j);
        a = a < lo ? lo : a; // clamp, NaN kept (as std::min/std::max)
        vstore<VF>(y + L * j, hi < a ? hi : a);
      }
      continue;
    }
    for (int64_t j = 0; j < nb; ++j) {
      float v = tile[q][j] + b + (res ? res[j * out.ldCol] : 0.0f);
      y[j * out.ldCol] = std::min(std::max(v, out.lo), out.hi);
    }
  }
}

/// All segments of one strip (in one chunk of columns) on one tile of
/// packed input. The first chunk starts from zero, later ones from the
/// partial sums stored in the output; the last applies the epilogue, the
/// others store partial sums.
template <class VF, int V, bool OFF>
__attribute__((always_inline)) inline void stripTileT(const uint32_t *p, const int32_t *rows, const float *xp,
                                                      const int64_t *off,
                                                      const BcrOutput &out, int64_t n0, int64_t nb, bool first,
                                                      bool last) {
  constexpr int W = kLanes<VF> * V;
  float tile[bcr::SR][W];
  unsigned done = 0; // rows of the tile written so far
  if (!first) {
    // Partial sums of the earlier chunks (row-major output, ldCol == 1).
    for (int q = 0; q < bcr::SR; ++q) {
      if (rows[q] < 0) continue;
      const float *y = out.y + rows[q] * out.ldRow + n0;
      for (int64_t j = 0; j < W; ++j) tile[q][j] = j < nb ? y[j] : 0.0f;
      done |= 1u << q;
    }
  }
  uint32_t nseg = *p++;
  if (!nseg && !first && !last) return; // nothing to add: the partial sums stay as they are
  for (uint32_t g = 0; g < nseg; ++g) {
    uint32_t head = *p++, count = head >> 4;
    switch (head & 15) {
#define KILN_SEG(m)                                                                                \
  case m:                                                                                          \
    p = segment<m, VF, V, OFF>(p, count, xp, off, tile, done);                                     \
    break;
      KILN_SEG(1) KILN_SEG(2) KILN_SEG(3) KILN_SEG(4) KILN_SEG(5) KILN_SEG(6) KILN_SEG(7) KILN_SEG(8)
      KILN_SEG(9) KILN_SEG(10) KILN_SEG(11) KILN_SEG(12) KILN_SEG(13) KILN_SEG(14) KILN_SEG(15)
#undef KILN_SEG
    default: g = nseg; break; // not produced by the packer
    }
  }
  for (int r = 0; r < bcr::SR; ++r)
    if (!(done >> r & 1))
      for (int j = 0; j < W; ++j) tile[r][j] = 0.0f;
  if (last) {
    storeTile<VF, V>(out, rows, n0, nb, tile);
    return;
  }
  for (int q = 0; q < bcr::SR; ++q)
    if (rows[q] >= 0) std::memcpy(out.y + rows[q] * out.ldRow + n0, tile[q], nb * sizeof(float));
}
