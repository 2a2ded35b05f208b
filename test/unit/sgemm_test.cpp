// Tests of kiln::rt::sgemm, the packed GEMM under every matrix kernel,
// against a naive triple loop: edge sizes around the register tile (6x16)
// and cache blocks (96 x 512 x 256), all transpose combinations, strided
// operands, serial and on a thread pool.
#include "kernels.h"
#include "kiln/gemm_layout.h"
#include "simd.h"
#include "test_util.h"
#include "thread_pool.h"

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <thread>

using kiln::test::GuardedBuffer;
using kiln::test::mismatches;
using kiln::test::PoolScope;
using kiln::test::randomFloats;
using kiln::test::Reference;

namespace {

/// op(A)[M,K] * op(B)[K,N] with op(X) = X or X^T, row-major with leading dims.
Reference naiveGemm(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, bool transA,
                    const float *B, int64_t ldb, bool transB) {
  Reference ref(M * N);
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j)
      for (int64_t k = 0; k < K; ++k) {
        double a = transA ? A[k * lda + i] : A[i * lda + k];
        double b = transB ? B[j * ldb + k] : B[k * ldb + j];
        ref.add(i * N + j, a * b);
      }
  return ref;
}

/// Runs sgemm with packed (ld = row length) operands and checks it against
/// the reference, serially and on `pool`.
void checkSgemm(int64_t M, int64_t N, int64_t K, bool transA, bool transB,
                kiln::rt::ThreadPool &pool, uint32_t seed) {
  std::vector<float> A = randomFloats(M * K, seed), B = randomFloats(K * N, seed + 1);
  int64_t lda = transA ? M : K, ldb = transB ? K : N;
  Reference ref = naiveGemm(M, N, K, A.data(), lda, transA, B.data(), ldb, transB);
  for (kiln::rt::ThreadPool *p : {(kiln::rt::ThreadPool *)nullptr, &pool}) {
    INFO("M=" << M << " N=" << N << " K=" << K << " transA=" << transA << " transB=" << transB
              << " threads=" << (p ? p->size() : 1));
    GuardedBuffer C(M * N);
    {
      PoolScope scope(p);
      kiln::rt::sgemm(M, N, K, A.data(), lda, transA, B.data(), ldb, transB, C.data(), N);
    }
    CHECK(mismatches(C.data(), ref) == "");
    CHECK(C.guardsIntact());
  }
}

} // namespace

TEST_CASE("sgemm matches a naive GEMM on edge sizes", "[sgemm]") {
  const int64_t sizes[] = {1, 5, 6, 7, 16, 17, 33, 49, 100, 300}; // 49: 6 x 48 tiles + 1 column (AVX-512)
  kiln::rt::ThreadPool pool(3);
  uint32_t seed = 1;
  for (int64_t M : sizes)
    for (int64_t N : sizes)
      for (int64_t K : sizes)
        for (int t = 0; t < 4; ++t)
          checkSgemm(M, N, K, t & 1, t & 2, pool, seed += 2);
}

TEST_CASE("sgemm spans several cache blocks in M N and K", "[sgemm]") {
  // 200 > MC, 1100 > 2 * NC, 600 > KCB (2 K blocks; B read in place: N >= 512).
  kiln::rt::ThreadPool pool(3);
  for (int t = 0; t < 4; ++t)
    checkSgemm(200, 1100, 600, t & 1, t & 2, pool, 1000 + t);
}

TEST_CASE("sgemm honours leading dimensions larger than the rows", "[sgemm]") {
  const int64_t M = 37, N = 45, K = 29, pad = 5;
  kiln::rt::ThreadPool pool(3);
  for (int t = 0; t < 4; ++t) {
    bool transA = t & 1, transB = t & 2;
    int64_t lda = (transA ? M : K) + pad, ldb = (transB ? K : N) + pad, ldc = N + pad;
    // Storage: op(A) rows are lda apart; the pad columns hold junk.
    std::vector<float> A = randomFloats((transA ? K : M) * lda, 50 + t);
    std::vector<float> B = randomFloats((transB ? N : K) * ldb, 60 + t);
    Reference ref = naiveGemm(M, N, K, A.data(), lda, transA, B.data(), ldb, transB);
    for (kiln::rt::ThreadPool *p : {(kiln::rt::ThreadPool *)nullptr, &pool}) {
      INFO("transA=" << transA << " transB=" << transB << " threads=" << (p ? p->size() : 1));
      GuardedBuffer C(M * ldc);
      for (int64_t i = 0; i < M; ++i)
        for (int64_t j = N; j < ldc; ++j)
          C.data()[i * ldc + j] = -3.5f;
      {
        PoolScope scope(p);
        kiln::rt::sgemm(M, N, K, A.data(), lda, transA, B.data(), ldb, transB, C.data(), ldc);
      }
      std::vector<float> packed(M * N);
      bool padKept = true;
      for (int64_t i = 0; i < M; ++i) {
        for (int64_t j = 0; j < N; ++j)
          packed[i * N + j] = C.data()[i * ldc + j];
        for (int64_t j = N; j < ldc; ++j)
          padKept &= C.data()[i * ldc + j] == -3.5f;
      }
      CHECK(mismatches(packed.data(), ref) == "");
      CHECK(padKept);
      CHECK(C.guardsIntact());
    }
  }
}

TEST_CASE("sgemm with K = 0 writes zeros and with M or N = 0 writes nothing", "[sgemm]") {
  std::vector<float> A(64, 1.0f), B(64, 1.0f);
  GuardedBuffer C(5 * 7);
  kiln::rt::sgemm(5, 7, 0, A.data(), 1, false, B.data(), 7, false, C.data(), 7);
  bool zeros = true;
  for (size_t i = 0; i < C.size(); ++i)
    zeros &= C.data()[i] == 0.0f;
  CHECK(zeros);
  CHECK(C.guardsIntact());

  GuardedBuffer empty(0);
  kiln::rt::sgemm(0, 7, 3, A.data(), 3, false, B.data(), 7, false, empty.data(), 7);
  kiln::rt::sgemm(5, 0, 3, A.data(), 3, false, B.data(), 1, false, empty.data(), 1);
  CHECK(empty.guardsIntact());
}

TEST_CASE("sgemm with accumulate adds to C, split at K blocks it equals one call", "[sgemm]") {
  // C += A B: split into two calls at a K block (256), the epilogue on the
  // second, the result is bit for bit the single call's (to rounding for
  // one row, which a single call runs as a GEMV; accumulating calls take
  // the GEMM, since the GEMV overwrites); K = 0 leaves C and applies the
  // epilogue.
  for (int64_t M : {1, 13}) {
    const int64_t N = 37, K = 300, KB = kiln::gemm::KC;
    std::vector<float> A = randomFloats(M * K, 880), B = randomFloats(K * N, 881), bias = randomFloats(M, 882);
    kiln::rt::Epilogue ep{bias.data(), -0.5f, 0.5f};
    std::vector<float> one(M * N), split(M * N, 123.0f);
    kiln::rt::sgemm(M, N, K, A.data(), K, false, B.data(), N, false, one.data(), N, &ep, nullptr, nullptr, KB);
    // A's columns [0, KB) then [KB, K): lda stays K.
    kiln::rt::sgemm(M, N, KB, A.data(), K, false, B.data(), N, false, split.data(), N, nullptr, nullptr, nullptr, KB);
    kiln::rt::sgemm(M, N, K - KB, A.data() + KB, K, false, B.data() + KB * N, N, false, split.data(), N, &ep,
                    nullptr, nullptr, KB, true);
    INFO("M = " << M);
    if (M > 1) {
      CHECK(one == split);
    } else { // one call of one row runs as a GEMV: another summation order
      bool close = true;
      for (int64_t j = 0; j < N; ++j) close &= std::fabs(one[j] - split[j]) <= 1e-4f;
      CHECK(close);
    }
    std::vector<float> kept = split;
    kiln::rt::sgemm(M, N, 0, A.data(), K, false, B.data(), N, false, split.data(), N, &ep, nullptr, nullptr, KB,
                    true);
    bool clamped = true; // kept + bias, clamped: kept is already within [-0.5, 0.5] minus the bias
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j)
        clamped &= split[i * N + j] == std::min(std::max(kept[i * N + j] + bias[i], -0.5f), 0.5f);
    CHECK(clamped);
  }
}

TEST_CASE("sgemm runs concurrently on separate pools", "[sgemm][thread_pool]") {
  // Each context has its own pool; kernels keep per-thread scratch buffers.
  const int64_t M = 150, N = 130, K = 270;
  auto worker = [&](uint32_t seed, std::string *result) {
    kiln::rt::ThreadPool pool(2);
    PoolScope scope(&pool);
    std::vector<float> A = randomFloats(M * K, seed), B = randomFloats(K * N, seed + 1);
    Reference ref = naiveGemm(M, N, K, A.data(), K, false, B.data(), N, false);
    for (int rep = 0; rep < 10 && result->empty(); ++rep) {
      std::vector<float> C(M * N);
      kiln::rt::sgemm(M, N, K, A.data(), K, false, B.data(), N, false, C.data(), N);
      *result = mismatches(C.data(), ref);
    }
  };
  std::string r1, r2;
  std::thread t1(worker, 7u, &r1), t2(worker, 9u, &r2);
  t1.join();
  t2.join();
  CHECK(r1 == "");
  CHECK(r2 == "");
}

TEST_CASE("sgemm's epilogue adds a bias per row and clamps each tile as it is stored", "[sgemm]") {
  // Must equal the plain sgemm followed by the bias and the clamp, exactly
  // (same sums), through the GEMV path (M = 1), edge tiles, and several K
  // blocks (600 > 2 * KC: the partial sums of earlier blocks are in C).
  const int64_t shapes[][3] = {{1, 37, 20}, {7, 17, 5}, {13, 45, 600}, {100, 33, 300}, {6, 16, 256}};
  kiln::rt::ThreadPool pool(2);
  uint32_t seed = 7000;
  for (auto &sh : shapes)
    for (bool withBias : {false, true})
      for (auto [lo, hi] : {std::pair<float, float>{-0.5f, 0.5f}, {0.0f, std::numeric_limits<float>::infinity()},
                            {-std::numeric_limits<float>::infinity(), std::numeric_limits<float>::infinity()}}) {
        int64_t M = sh[0], N = sh[1], K = sh[2];
        INFO("M=" << M << " N=" << N << " K=" << K << " bias=" << withBias << " lo=" << lo << " hi=" << hi);
        std::vector<float> A = randomFloats(M * K, seed++), B = randomFloats(K * N, seed++);
        std::vector<float> bias = randomFloats(M, seed++);
        std::vector<float> want(M * N), got(M * N);
        PoolScope scope(&pool);
        kiln::rt::sgemm(M, N, K, A.data(), K, false, B.data(), N, false, want.data(), N);
        int clamped = 0;
        for (int64_t i = 0; i < M; ++i)
          for (int64_t j = 0; j < N; ++j) {
            float v = want[i * N + j] + (withBias ? bias[i] : 0.0f);
            float c = std::min(std::max(v, lo), hi);
            clamped += c != v;
            want[i * N + j] = c;
          }
        kiln::rt::Epilogue ep{withBias ? bias.data() : nullptr, lo, hi};
        kiln::rt::sgemm(M, N, K, A.data(), K, false, B.data(), N, false, got.data(), N, &ep);
        CHECK(got == want);
        if (lo == -0.5f) CHECK(clamped > 0);
      }
}

TEST_CASE("sgemm's AVX-512 tile gives the AVX2 tiles' results bit for bit", "[sgemm]") {
  // Same summation order and epilogue: every element must be equal, for
  // operands packed ahead or per call, B read in place (K <= 64, or a wide
  // B: N >= 512),
  // several K blocks, the 6- and 16-wide forms (N = 49 = 32 + 16 + 1),
  // edges that fall back to the 6 x 16 tile, and a full
  // epilogue (row and column bias, residual, clamp).
  bool had = kiln::rt::setWideKernels(true);
  if (!kiln::rt::wideKernels()) {
    WARN("this CPU has no AVX-512F: sgemm has one path only here");
    kiln::rt::setWideKernels(had);
    return;
  }
  // N = 49-63: 6 x 48 tiles, then the last 1-4 columns (colKernelWide),
  // or 8 or 15 columns on the 6 x 16 tiles; B in place when K <= 64.
  const int64_t shapes[][3] = {{24, 64, 256}, {37, 100, 600}, {30, 70, 20}, {132, 96, 300}, {18, 49, 300},
                                {42, 81, 64},   {20, 530, 300}, {30, 56, 300}, {25, 52, 70},   {13, 63, 40},
                                {31, 196, 90},  {25, 49, 40},   {13, 52, 64}};
  kiln::rt::ThreadPool pool(2);
  uint32_t seed = 9000;
  for (auto &sh : shapes)
    for (int packed = 0; packed < 3; ++packed) { // 0: none, 1: A ahead, 2: B ahead
      int64_t M = sh[0], N = sh[1], K = sh[2];
      INFO("M=" << M << " N=" << N << " K=" << K << " packed=" << packed);
      std::vector<float> A = randomFloats(M * K, seed++), B = randomFloats(K * N, seed++);
      std::vector<float> rowBias = randomFloats(M, seed++), colBias = randomFloats(N, seed++);
      std::vector<float> res = randomFloats(M * N, seed++);
      std::vector<float> pa(kiln::gemm::packedASize(M, K)), pb(kiln::gemm::packedBSize(K, N));
      kiln::gemm::packAFull(A.data(), K, false, M, K, pa.data());
      kiln::gemm::packBFull(B.data(), N, false, K, N, pb.data());
      kiln::rt::Epilogue ep{rowBias.data(), -1.0f, 2.0f, colBias.data(), res.data()};
      std::vector<float> got[2];
      for (bool wide : {false, true}) {
        kiln::rt::setWideKernels(wide);
        got[wide].assign(M * N, 0.0f);
        PoolScope scope(&pool);
        kiln::rt::sgemm(M, N, K, A.data(), K, false, B.data(), N, false, got[wide].data(), N, &ep,
                        packed == 1 ? pa.data() : nullptr, packed == 2 ? pb.data() : nullptr);
      }
      CHECK(got[0] == got[1]);
    }
  kiln::rt::setWideKernels(had);
}

TEST_CASE("kiln_rt_matmul_packed_act applies GELU to every output as it is stored", "[sgemm]") {
  // Against GELU computed in double with std::erf on the product (itself
  // checked above): edge tiles, several K blocks, a bias row, one thread
  // and a pool; NaN stays NaN.
  kiln::rt::ThreadPool pool(2);
  const int64_t shapes[][3] = {{1, 37, 20}, {7, 17, 5}, {30, 49, 300}, {128, 96, 64}};
  uint32_t seed = 9500;
  for (auto &sh : shapes)
    for (kiln::rt::ThreadPool *p : {(kiln::rt::ThreadPool *)nullptr, &pool}) {
      int64_t M = sh[0], N = sh[1], K = sh[2];
      INFO("M=" << M << " N=" << N << " K=" << K << " threads=" << (p ? p->size() : 1));
      std::vector<float> A = randomFloats(M * K, seed++), B = randomFloats(K * N, seed++);
      std::vector<float> bias = randomFloats(N, seed++);
      if (M * K > 3) A[3] = std::numeric_limits<float>::quiet_NaN(); // row 0 of the result
      std::vector<float> pb(kiln::gemm::packedBSize(K, N));
      kiln::gemm::packBFull(B.data(), N, false, K, N, pb.data());
      std::vector<float> plain(M * N), got(M * N);
      PoolScope scope(p);
      float inf = std::numeric_limits<float>::infinity();
      kiln_rt_matmul_packed((intptr_t)A.data(), (intptr_t)pb.data(), (intptr_t)plain.data(), 1, M, N, K, 0, K, 0, 0, N,
                            (intptr_t)bias.data(), -inf, inf);
      kiln_rt_matmul_packed_act((intptr_t)A.data(), (intptr_t)pb.data(), (intptr_t)got.data(), 1, M, N, K, 0, K, 0, 0,
                                N, (intptr_t)bias.data(), -inf, inf, 1);
      int bad = 0;
      for (int64_t i = 0; i < M * N; ++i) {
        double x = plain[i], want = x * (std::erf(x / std::sqrt(2.0)) + 1.0) * 0.5;
        if (std::isnan(x) ? !std::isnan(got[i]) : !(std::fabs(got[i] - want) <= 1e-6 + 1e-6 * std::fabs(want))) ++bad;
      }
      CHECK(bad == 0);
      if (M * K > 3) CHECK(std::isnan(got[0]));
    }
}

TEST_CASE("allocatePages puts large blocks on 2 MiB boundaries and small ones on 64 bytes", "[sgemm]") {
  // Blocks of 1 MiB and more are whole 2 MiB pages (advised for huge
  // pages); smaller ones are 64-byte aligned. The scratch buffers use it.
  const uintptr_t huge = uintptr_t(2) << 20;
  for (size_t bytes : {size_t(1) << 20, (size_t(3) << 20) + 5}) {
    auto *p = static_cast<unsigned char *>(kiln::rt::allocatePages(bytes));
    REQUIRE(p != nullptr);
    CHECK(reinterpret_cast<uintptr_t>(p) % huge == 0);
    p[0] = 1, p[bytes - 1] = 2; // the whole block is there
    CHECK(p[0] + p[bytes - 1] == 3);
    kiln::rt::freePages(p);
  }
  for (size_t bytes : {size_t(0), size_t(100), (size_t(1) << 20) - 1}) {
    void *p = kiln::rt::allocatePages(bytes);
    REQUIRE(p != nullptr);
    CHECK(reinterpret_cast<uintptr_t>(p) % 64 == 0);
    kiln::rt::freePages(p);
  }
  kiln::rt::Buffer &b = kiln::rt::scratch(2);
  float *d = kiln::rt::grow(b, size_t(1) << 20); // 4 MiB
  CHECK(reinterpret_cast<uintptr_t>(d) % huge == 0);
}
