/* The packed-operand layout of kiln's GEMM, shared by the runtime (which
 * packs activations per call) and the compiler (which packs constant
 * weights once, at compile time, so kernels skip that work). C++ only,
 * header-only, no dependencies; both CPU targets use the same layout.
 *
 * C[M,N] = A[M,K] * B[K,N] is computed in K blocks of KB (kBlock(): KC
 * when A is packed ahead, else KCB). Within block k0 (kc = min(KB, K -
 * k0) deep):
 *   A is cut into panels of MR rows: panel r holds, for p in [0, kc), the
 *     MR values A[r*MR + i][k0 + p] (i fastest), rows past M as zeros;
 *   B is cut into panels of NR columns: panel c holds, for p in [0, kc),
 *     the NR values B[k0 + p][c*NR + j] (j fastest), columns past N zeros.
 * A fully packed A is every K block one after the other, each covering all
 * ceil(M/MR) panels (likewise B), so the panel holding row i0 (a multiple
 * of MR) of block k0 starts at k0 * roundUp(M, MR) + i0 * kc. */
#ifndef KILN_GEMM_LAYOUT_H
#define KILN_GEMM_LAYOUT_H

#include <cstdint>

namespace kiln::gemm {

constexpr int MR = 6, NR = 16;                     // register tile: 12 accumulators of 8 floats
// Cache blocks (MC % MR == 0, NC % NR == 0). MC = 132 = roundUp(128, MR):
// the 128 rows of a 128-token sequence are one block, so each weight panel
// is read once per product (BERT 4-5% faster at 1 thread than with 96).
constexpr int64_t KC = 256, MC = 132, NC = 512;
// The K block of a product whose B alone is a packed weight (MatMul and
// Gemm weights; A holds activations, e.g. 128 tokens): fewer passes over
// C. BERT-base at 1 thread 3% faster in every GEMM than with KC (A/B of
// whole models, session 12); convolutions (packed A) stay at KC: their
// small-N 1x1 products ran up to 1.3x slower with 512 at 2 threads.
constexpr int64_t KCB = 512;
/// The K block sgemm uses unless told: KC when A comes packed
/// (convolution weights; Winograd, where both are), else KCB (B packed
/// ahead or neither: the two agree bit for bit). The runtime's
/// convolutions always ask for KC.
inline int64_t kBlock(bool packedA) { return packedA ? KC : KCB; }

inline int64_t roundUp(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

/// Floats a packed A is followed by: a kernel may load a panel's MR = 6
/// values of one k as an 8-float vector (the last 2 are not used).
constexpr int64_t kASlack = 8;

/// Floats in a fully packed A (M x K, plus the slack) or B (K x N).
inline int64_t packedASize(int64_t M, int64_t K) { return roundUp(M, MR) * K + kASlack; }
inline int64_t packedBSize(int64_t K, int64_t N) { return roundUp(N, NR) * K; }

/// Offsets of the panel of block k0 (depth kc) holding row i0 / column j0.
inline int64_t packedAOffset(int64_t M, int64_t k0, int64_t kc, int64_t i0) {
  return k0 * roundUp(M, MR) + i0 * kc;
}
inline int64_t packedBOffset(int64_t N, int64_t k0, int64_t kc, int64_t j0) {
  return k0 * roundUp(N, NR) + j0 * kc;
}

/// Packs `rows` x K (element (r, k) at X[r*ld + k], or at X[k*ld + r]
/// when transposed) in panels of P rows, K block by K block: the common
/// form of both operands (B's panels are panels of rows of B^T).
template <int P>
inline void packPanels(const float *X, int64_t ld, bool trans, int64_t rows, int64_t K, int64_t kb, float *out) {
  for (int64_t k0 = 0; k0 < K; k0 += kb) {
    int64_t kc = K - k0 < kb ? K - k0 : kb;
    for (int64_t r0 = 0; r0 < rows; r0 += P)
      for (int64_t p = 0; p < kc; ++p)
        for (int i = 0; i < P; ++i) {
          int64_t r = r0 + i, k = k0 + p;
          *out++ = r < rows ? (trans ? X[k * ld + r] : X[r * ld + k]) : 0.0f;
        }
  }
}

/// Packs all of op(A) (M x K; element (i, k) at A[i*lda + k], or at
/// A[k*lda + i] when transposed) into `out` (packedASize floats), in K
/// blocks of KC (a packed A is always used with KC).
inline void packAFull(const float *A, int64_t lda, bool trans, int64_t M, int64_t K, float *out) {
  packPanels<MR>(A, lda, trans, M, K, KC, out);
}

/// Packs all of op(B) (K x N; element (k, j) at B[k*ldb + j], or at
/// B[j*ldb + k] when transposed) into `out` (packedBSize floats), in K
/// blocks of kb: KCB for a weight multiplied by activations, KC when A
/// is packed too (Winograd), as kBlock() says.
inline void packBFull(const float *B, int64_t ldb, bool trans, int64_t K, int64_t N, float *out,
                      int64_t kb = KCB) {
  packPanels<NR>(B, ldb, !trans, N, K, kb, out);
}

/// Whether the runtime's conv (kiln::rt::conv2d, dense packed weights)
/// reads each residual element just before it stores the output element
/// there, so that the residual may be the output's own buffer: a 1x1,
/// stride-1, unpadded, ungrouped conv (one GEMM on the input as it is)
/// over at most one K block of input channels. kiln-lower-to-linalg asks
/// for in-place buffers only then; conv2d copies the residual otherwise.
inline bool convResidualReadInPlace(int64_t C, int64_t KH, int64_t KW, int64_t SH, int64_t SW, int64_t PT,
                                    int64_t PL, bool samePlanes, int64_t G) {
  return KH == 1 && KW == 1 && SH == 1 && SW == 1 && PT == 0 && PL == 0 && samePlanes && G == 1 && C <= KC;
}

} // namespace kiln::gemm

#endif
