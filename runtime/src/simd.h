// 8-float vectors for the runtime's kernels (GCC/Clang vector extensions:
// one AVX2 register on x86-64, two NEON registers on aarch64), and the
// per-thread scratch buffers kernels pack into.
#ifndef KILN_RUNTIME_SIMD_H
#define KILN_RUNTIME_SIMD_H

#include <cstring>
#include <vector>

namespace kiln::rt {

typedef float v8f __attribute__((vector_size(32)));

inline v8f load8(const float *p) {
  v8f v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void store8(float *p, v8f v) { std::memcpy(p, &v, sizeof v); }
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

/// A per-thread buffer, reused across calls (slots 0-2: GEMM packing and
/// im2col, 2 also Winograd's padded input; 3-4: sparse kernels; 5-6:
/// Winograd's transformed tiles; 7, 8: a B or A operand packed once for all
/// of a GEMM's tasks).
std::vector<float> &scratch(int slot);

} // namespace kiln::rt

#endif
