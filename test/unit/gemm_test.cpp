// Tests of kiln_rt_gemm (ONNX Gemm: alpha, beta, transposes, C broadcast
// from [1,1], [1,N], [M,1] or [M,N]) and kiln_rt_matmul (batched MatMul,
// stride 0 broadcasting one operand) against naive loops.
#include "kernels.h"
#include "kiln/gemm_layout.h"
#include "test_util.h"
#include "thread_pool.h"

#include <catch2/catch.hpp>
#include <cmath>

using kiln::test::GuardedBuffer;
using kiln::test::mismatches;
using kiln::test::PoolScope;
using kiln::test::randomFloats;
using kiln::test::Reference;

TEST_CASE("kiln_rt_gemm matches alpha * op(A) * op(B) + beta * C", "[gemm]") {
  struct Shape {
    int64_t M, N, K;
  };
  const Shape shapes[] = {{1, 1, 1}, {7, 19, 13}, {100, 33, 17}, {6, 16, 300}, {1, 40, 9}};
  const float alphas[] = {1.0f, 0.5f}, betas[] = {0.0f, 1.0f, -2.0f};
  kiln::rt::ThreadPool pool(3);
  uint32_t seed = 2000;
  for (const Shape &s : shapes) {
    const int64_t M = s.M, N = s.N, K = s.K;
    // C shapes as (rows, cols); (0, 0) is "no C" (null pointer).
    const int64_t cShapes[][2] = {{0, 0}, {1, 1}, {1, N}, {M, 1}, {M, N}};
    for (int t = 0; t < 4; ++t) {
      bool transA = t & 1, transB = t & 2;
      std::vector<float> A = randomFloats(M * K, seed++), B = randomFloats(K * N, seed++);
      for (const auto &cs : cShapes) {
        const int64_t cRows = cs[0], cCols = cs[1];
        std::vector<float> C = randomFloats(cRows * cCols, seed++);
        const float *cPtr = cRows ? C.data() : nullptr;
        for (float alpha : alphas)
          for (float beta : betas) {
            Reference ref(M * N);
            for (int64_t i = 0; i < M; ++i)
              for (int64_t j = 0; j < N; ++j) {
                for (int64_t k = 0; k < K; ++k) {
                  double a = transA ? A[k * M + i] : A[i * K + k];
                  double b = transB ? B[j * K + k] : B[k * N + j];
                  ref.add(i * N + j, (double)alpha * a * b);
                }
                if (cPtr)
                  ref.add(i * N + j,
                          (double)beta * C[(cRows == 1 ? 0 : i) * cCols + (cCols == 1 ? 0 : j)]);
              }
            for (kiln::rt::ThreadPool *p : {(kiln::rt::ThreadPool *)nullptr, &pool}) {
              INFO("M=" << M << " N=" << N << " K=" << K << " transA=" << transA << " transB="
                        << transB << " C=" << cRows << "x" << cCols << " alpha=" << alpha
                        << " beta=" << beta << " threads=" << (p ? p->size() : 1));
              GuardedBuffer Y(M * N);
              {
                PoolScope scope(p);
                kiln_rt_gemm((intptr_t)A.data(), (intptr_t)B.data(), (intptr_t)cPtr, Y.addr(), M, N,
                             K, transA, transB, alpha, beta, cRows, cCols);
              }
              CHECK(mismatches(Y.data(), ref) == "");
              CHECK(Y.guardsIntact());
            }
          }
      }
    }
  }
}

TEST_CASE("kiln_rt_matmul handles batches and broadcast operands", "[gemm]") {
  struct Shape {
    int64_t batch, M, N, K;
  };
  const Shape shapes[] = {{3, 5, 7, 9}, {4, 17, 33, 6}, {2, 100, 20, 300}, {5, 1, 1, 1}};
  kiln::rt::ThreadPool pool(3);
  uint32_t seed = 3000;
  for (const Shape &s : shapes) {
    const int64_t batch = s.batch, M = s.M, N = s.N, K = s.K;
    for (bool broadcastA : {false, true})
      for (bool broadcastB : {false, true}) {
        int64_t strideA = broadcastA ? 0 : M * K, strideB = broadcastB ? 0 : K * N;
        std::vector<float> A = randomFloats((broadcastA ? 1 : batch) * M * K, seed++);
        std::vector<float> B = randomFloats((broadcastB ? 1 : batch) * K * N, seed++);
        Reference ref(batch * M * N);
        for (int64_t b = 0; b < batch; ++b)
          for (int64_t i = 0; i < M; ++i)
            for (int64_t j = 0; j < N; ++j)
              for (int64_t k = 0; k < K; ++k)
                ref.add((b * M + i) * N + j,
                        (double)A[b * strideA + i * K + k] * (double)B[b * strideB + k * N + j]);
        for (kiln::rt::ThreadPool *p : {(kiln::rt::ThreadPool *)nullptr, &pool}) {
          INFO("batch=" << batch << " M=" << M << " N=" << N << " K=" << K << " strideA=" << strideA
                        << " strideB=" << strideB << " threads=" << (p ? p->size() : 1));
          GuardedBuffer Y(batch * M * N);
          {
            PoolScope scope(p);
            kiln_rt_matmul((intptr_t)A.data(), (intptr_t)B.data(), Y.addr(), batch, M, N, K,
                           strideA, strideB);
          }
          CHECK(mismatches(Y.data(), ref) == "");
          CHECK(Y.guardsIntact());
        }
      }
  }
}

TEST_CASE("kiln_rt_matmul_strided reads transposed operands and writes a transposed result", "[gemm]") {
  // A is stored as [M, batch, K] (read as batch x [M, K]); B as [batch, N, K]
  // (read transposed); Y is written as [M, batch, N] (Transpose 1,0,2).
  const int64_t batch = 3, M = 19, N = 13, K = 21;
  kiln::rt::ThreadPool pool(2);
  std::vector<float> A = randomFloats(M * batch * K, 4000), B = randomFloats(batch * N * K, 4001);
  Reference ref(M * batch * N);
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j)
        for (int64_t k = 0; k < K; ++k)
          ref.add((i * batch + b) * N + j,
                  (double)A[(i * batch + b) * K + k] * (double)B[(b * N + j) * K + k]);
  for (kiln::rt::ThreadPool *p : {(kiln::rt::ThreadPool *)nullptr, &pool}) {
    GuardedBuffer Y(M * batch * N);
    {
      PoolScope scope(p);
      kiln_rt_matmul_strided((intptr_t)A.data(), (intptr_t)B.data(), Y.addr(), batch, M, N, K,
                             /*strideA=*/K, /*lda=*/batch * K, /*transA=*/0, /*strideB=*/N * K,
                             /*ldb=*/K, /*transB=*/1, /*strideY=*/N, /*ldy=*/batch * N);
    }
    CHECK(mismatches(Y.data(), ref) == "");
    CHECK(Y.guardsIntact());
  }
}

TEST_CASE("kiln_rt_matmul_packed with B packed ahead: batches, strided output, bias and clamp", "[gemm]") {
  // Equal to kiln_rt_matmul_strided followed by the column bias and the
  // clamp, exactly (to rounding for one row, see below); shapes over
  // several K blocks and edge panels.
  const int64_t shapes[][3] = {{1, 20, 7}, {5, 17, 33}, {13, 45, 600}, {70, 33, 300}};
  kiln::rt::ThreadPool pool(2);
  uint32_t seed = 8800;
  for (auto &sh : shapes)
    for (bool transA : {false, true}) {
      int64_t M = sh[0], N = sh[1], K = sh[2], batch = 2, ldy = N + 3, strideY = M * ldy + 5;
      INFO("M=" << M << " N=" << N << " K=" << K << " transA=" << transA);
      std::vector<float> A = kiln::test::randomFloats(batch * M * K, seed++);
      std::vector<float> B = kiln::test::randomFloats(K * N, seed++), bias = kiln::test::randomFloats(N, seed++);
      std::vector<float> packed(kiln::gemm::packedBSize(K, N));
      kiln::gemm::packBFull(B.data(), N, false, K, N, packed.data());
      int64_t lda = transA ? M : K;
      std::vector<float> want(batch * strideY, 0.0f), got(batch * strideY, 0.0f);
      kiln::test::PoolScope scope(&pool);
      kiln_rt_matmul_strided((intptr_t)A.data(), (intptr_t)B.data(), (intptr_t)want.data(), batch, M, N, K, M * K,
                             lda, transA, 0, N, 0, strideY, ldy);
      for (int64_t bi = 0; bi < batch; ++bi)
        for (int64_t i = 0; i < M; ++i)
          for (int64_t j = 0; j < N; ++j) {
            float &v = want[bi * strideY + i * ldy + j];
            v = std::min(std::max(v + bias[j], -0.5f), 0.5f);
          }
      kiln_rt_matmul_packed((intptr_t)A.data(), (intptr_t)packed.data(), (intptr_t)got.data(), batch, M, N, K,
                            M * K, lda, transA, strideY, ldy, (intptr_t)bias.data(), -0.5f, 0.5f);
      if (M > 1) {
        CHECK(got == want); // the same tiles, in the same order
        continue;
      }
      // One row: the strided form is a GEMV (one chain over k per column),
      // the packed one the tile kernels (a panel's last columns sum over
      // several chains): equal to rounding.
      int bad = 0;
      for (size_t i = 0; i < got.size(); ++i) bad += !(std::fabs(got[i] - want[i]) <= 1e-6f);
      CHECK(bad == 0);
    }
}
