/* Winograd F(m x m, 3 x 3) convolution (Lavin and Gray, 2016): the
 * transform matrices and the layout of the transformed weights, shared by
 * the compiler (which transforms and packs constant weights at compile
 * time) and the runtime (kiln_rt_conv2d_winograd_ft). C++ only, header-only.
 *
 * For each output tile of m x m, the input tile d (a x a, a = m + 2) is
 * transformed to V = B^T d B, multiplied elementwise by U = G g G^T per
 * filter and channel and summed over channels, and transformed back to
 * Y = A^T M A. Position xi = i*a + j of the a x a transformed tile is one
 * GEMM over channels, filters by tiles: M_xi[F, T] = U_xi[F, C] * V_xi[C, T]
 * (T tiles), so the weights are its A, as in every other conv.
 *
 * Transformed weights: for xi = 0 .. a*a-1 in order, U_xi ([F, C]: row f,
 * column c) packed as GEMM operand A (kiln/gemm_layout.h, K blocks of
 * KC), each gemm::packedASize(F, C) floats. (Before session 23 they were
 * U_xi^T packed as operand B, for kiln_rt_conv2d_winograd.) */
#ifndef KILN_WINOGRAD_LAYOUT_H
#define KILN_WINOGRAD_LAYOUT_H

#include "kiln/gemm_layout.h"

#include <cstddef>
#include <cstdint>
#include <vector>

namespace kiln::winograd {

template <int M> struct Matrices;
template <> struct Matrices<2> {
  static constexpr int A = 4;
  static constexpr float BT[4][4] = {{1, 0, -1, 0}, {0, 1, 1, 0}, {0, -1, 1, 0}, {0, 1, 0, -1}};
  static constexpr double G[4][3] = {{1, 0, 0}, {0.5, 0.5, 0.5}, {0.5, -0.5, 0.5}, {0, 0, 1}};
  static constexpr float AT[2][4] = {{1, 1, 1, 0}, {0, 1, -1, -1}};
};
template <> struct Matrices<4> {
  static constexpr int A = 6;
  static constexpr float BT[6][6] = {{4, 0, -5, 0, 1, 0},  {0, -4, -4, 1, 1, 0}, {0, 4, -4, -1, 1, 0},
                                     {0, -2, -1, 2, 1, 0}, {0, 2, -1, -2, 1, 0}, {0, 4, 0, -5, 0, 1}};
  static constexpr double G[6][3] = {{1.0 / 4, 0, 0},
                                     {-1.0 / 6, -1.0 / 6, -1.0 / 6},
                                     {-1.0 / 6, 1.0 / 6, -1.0 / 6},
                                     {1.0 / 24, 1.0 / 12, 1.0 / 6},
                                     {1.0 / 24, -1.0 / 12, 1.0 / 6},
                                     {0, 0, 1}};
  static constexpr float AT[4][6] = {
      {1, 1, 1, 1, 1, 0}, {0, 1, -1, 2, -2, 0}, {0, 1, 1, 4, 4, 0}, {0, 1, -1, 8, -8, 1}};
};

/// Floats of the transformed, packed weights of F filters over C channels.
inline int64_t packedSize(int m, int64_t F, int64_t C) {
  return int64_t(m + 2) * (m + 2) * gemm::packedASize(F, C);
}

/// w: [F, C, 3, 3] (ONNX Conv weights) -> out (packedSize floats).
template <int M> inline void transformWeights(const float *w, int64_t F, int64_t C, float *out) {
  using Mx = Matrices<M>;
  constexpr int A = Mx::A;
  std::vector<float> u(std::size_t(A) * A * C * F); // [xi][c][f]: U_xi transposed
  for (int64_t f = 0; f < F; ++f)
    for (int64_t c = 0; c < C; ++c) {
      const float *g = w + (f * C + c) * 9;
      double t[A][3]; // G g
      for (int i = 0; i < A; ++i)
        for (int j = 0; j < 3; ++j)
          t[i][j] = Mx::G[i][0] * g[j] + Mx::G[i][1] * g[3 + j] + Mx::G[i][2] * g[6 + j];
      for (int i = 0; i < A; ++i)
        for (int j = 0; j < A; ++j)
          u[((std::size_t(i) * A + j) * C + c) * F + f] =
              float(t[i][0] * Mx::G[j][0] + t[i][1] * Mx::G[j][1] + t[i][2] * Mx::G[j][2]);
    }
  for (int xi = 0; xi < A * A; ++xi)
    gemm::packAFull(u.data() + std::size_t(xi) * C * F, F, true, F, C, out + xi * gemm::packedASize(F, C));
}

inline void transformWeights(int m, const float *w, int64_t F, int64_t C, float *out) {
  if (m == 2) transformWeights<2>(w, F, C, out);
  else transformWeights<4>(w, F, C, out);
}

} // namespace kiln::winograd

#endif
