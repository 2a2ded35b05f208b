// Tests of BCR sparse weights (kiln/bcr_layout.h, runtime/src/sparse.cpp):
// pruning, block detection, the packer (pack/unpack round trips on random
// patterns and edge blocks, blob validation) and the sparse kernels
// against naive loops.
#include "kernels.h"
#include "kiln/bcr_layout.h"
#include "test_util.h"
#include "thread_pool.h"

#include <catch2/catch.hpp>

#include <algorithm>
#include <limits>
#include <random>

using kiln::test::GuardedBuffer;
using kiln::test::mismatches;
using kiln::test::PoolScope;
using kiln::test::randomFloats;
using kiln::test::Reference;
namespace bcr = kiln::bcr;

namespace {

/// W[M, K] with a random BCR pattern at br x bc: in each block a random
/// non-empty subset of rows and of columns is kept (with probability
/// `keep` each), or the whole block is dropped with probability `drop`.
std::vector<float> randomBcr(int64_t M, int64_t K, int br, int bc, double keep, double drop, uint32_t seed) {
  std::vector<float> W = randomFloats(M * K, seed);
  std::mt19937 gen(seed + 1);
  std::uniform_real_distribution<double> u(0, 1);
  for (int64_t i0 = 0; i0 < M; i0 += br)
    for (int64_t k0 = 0; k0 < K; k0 += bc) {
      bool dropped = u(gen) < drop;
      std::vector<char> rows(br), cols(bc);
      for (auto &r : rows) r = u(gen) < keep;
      for (auto &c : cols) c = u(gen) < keep;
      rows[gen() % br] = cols[gen() % bc] = 1;
      for (int64_t i = i0; i < std::min<int64_t>(M, i0 + br); ++i)
        for (int64_t k = k0; k < std::min<int64_t>(K, k0 + bc); ++k)
          if (dropped || !rows[i - i0] || !cols[k - k0]) W[i * K + k] = 0.0f;
          else if (W[i * K + k] == 0.0f) W[i * K + k] = 0.5f;
    }
  return W;
}

std::vector<uint32_t> packDetected(const std::vector<float> &W, int64_t M, int64_t K, int chunk = bcr::kChunk) {
  auto [br, bc] = bcr::detectBlock(W.data(), M, K, bcr::nonZeros(W.data(), M * K), bcr::candidateBlocks());
  return bcr::pack(W.data(), M, K, bcr::rowOrder(W.data(), M, K, br, bc), br, bc, chunk);
}

} // namespace

TEST_CASE("bcr::prune keeps a column-row rectangle per block at the requested rate", "[bcr]") {
  for (double rate : {0.5, 0.75, 0.9}) {
    const int64_t M = 37, K = 70; // edge blocks in both directions
    std::vector<float> W = randomFloats(M * K, 42);
    int64_t kept = bcr::prune(W.data(), M, K, 8, 16, rate);
    INFO("rate " << rate);
    CHECK(bcr::nonZeros(W.data(), M * K) == kept);
    // Exactly BCR at the pruning block: every block's non-zeros are a rectangle.
    CHECK(bcr::storedValues(W.data(), M, K, 8, 16) == kept);
    double sparsity = 1.0 - double(kept) / (M * K);
    CHECK(sparsity >= rate - 1e-9);
    CHECK(sparsity < rate + 0.08);
    // Magnitude-based: the kept values carry more energy per value than the dropped ones.
    std::vector<float> orig = randomFloats(M * K, 42);
    double keptE = 0, dropE = 0;
    for (int64_t i = 0; i < M * K; ++i) (W[i] != 0 ? keptE : dropE) += double(orig[i]) * orig[i];
    CHECK(keptE / kept > dropE / (M * K - kept));
  }
}

TEST_CASE("bcr::detectBlock finds the block a BCR pattern was made with", "[bcr]") {
  const std::pair<int, int> blocks[] = {{4, 8}, {8, 16}, {16, 32}, {8, 4}};
  uint32_t seed = 100;
  for (auto [br, bc] : blocks) {
    std::vector<float> W = randomBcr(128, 256, br, bc, 0.5, 0.2, seed++);
    INFO(br << "x" << bc);
    auto got = bcr::detectBlock(W.data(), 128, 256, bcr::nonZeros(W.data(), 128 * 256), bcr::candidateBlocks());
    CHECK(got == std::make_pair(br, bc));
  }
  // Unstructured sparsity is BCR at no candidate block.
  std::vector<float> W = randomFloats(64 * 64, 7);
  for (size_t i = 0; i < W.size(); i += 3) W[i] = 0;
  CHECK(bcr::detectBlock(W.data(), 64, 64, bcr::nonZeros(W.data(), W.size()), bcr::candidateBlocks()) ==
        std::make_pair(0, 0));
}

TEST_CASE("bcr::pack and unpack round-trip random patterns and edge blocks", "[bcr]") {
  struct Shape {
    int64_t M, K;
    int br, bc;
    double keep, drop;
  };
  const Shape shapes[] = {{1, 1, 4, 4, 1.0, 0.0},   {3, 5, 4, 4, 0.5, 0.0},    {64, 64, 8, 16, 0.5, 0.3},
                          {37, 70, 8, 16, 0.3, 0.5}, {130, 33, 16, 32, 0.7, 0.1}, {16, 300, 4, 8, 0.2, 0.0},
                          {9, 9, 4, 4, 0.0, 1.0}};
  uint32_t seed = 500;
  for (const Shape &s : shapes) {
    INFO(s.M << "x" << s.K << " blocks " << s.br << "x" << s.bc);
    std::vector<float> W = randomBcr(s.M, s.K, s.br, s.bc, s.keep, s.drop, seed++);
    for (int chunk : {bcr::kChunk, 16, 1}) {
      std::vector<uint32_t> blob = packDetected(W, s.M, s.K, chunk);
      REQUIRE(!blob.empty());
      CHECK(bcr::View::valid(blob.data(), (int64_t)blob.size()));
      CHECK(bcr::unpack(blob.data()) == W);
    }
    // Random permutations round-trip too.
    std::vector<int32_t> perm(s.M);
    for (int64_t i = 0; i < s.M; ++i) perm[i] = (int32_t)i;
    std::shuffle(perm.begin(), perm.end(), std::mt19937(seed));
    std::vector<uint32_t> shuffled = bcr::pack(W.data(), s.M, s.K, perm);
    CHECK(bcr::unpack(shuffled.data()) == W);
  }
  // Unstructured patterns are packed exactly as well.
  std::vector<float> W = randomFloats(50 * 77, 9);
  for (size_t i = 0; i < W.size(); i += 2) W[i * 7 % W.size()] = 0;
  std::vector<uint32_t> blob = packDetected(W, 50, 77);
  CHECK(bcr::unpack(blob.data()) == W);
}

TEST_CASE("bcr::View::valid rejects damaged blobs", "[bcr]") {
  std::vector<float> W = randomBcr(40, 48, 8, 8, 0.5, 0.2, 77);
  std::vector<uint32_t> blob = packDetected(W, 40, 48);
  REQUIRE(bcr::View::valid(blob.data(), (int64_t)blob.size()));
  CHECK_FALSE(bcr::View::valid(blob.data(), (int64_t)blob.size() - 1));
  for (size_t at : {size_t(0), size_t(3), size_t(bcr::kHeader), blob.size() - 1}) {
    std::vector<uint32_t> bad = blob;
    bad[at] ^= 0x7fff0000u;
    INFO("word " << at);
    if (at == blob.size() - 1) continue; // a value: any bits are a float
    CHECK_FALSE(bcr::View::valid(bad.data(), (int64_t)bad.size()));
  }
}

TEST_CASE("kiln_rt_matmul_bcr equals the dense product with bias and clamp", "[bcr]") {
  struct Shape {
    int64_t batch, M, N, K;
  };
  // M = 49, 64, 100: a last 1-16 columns that join the tile before (4
  // vectors with AVX-512).
  const Shape shapes[] = {{1, 1, 4, 8},     {1, 17, 13, 40},  {2, 64, 96, 128}, {3, 5, 33, 70},
                          {1, 128, 64, 300}, {1, 49, 24, 64}, {2, 100, 20, 48}};
  kiln::rt::ThreadPool pool(3);
  uint32_t seed = 900;
  for (const Shape &s : shapes)
    for (int transA = 0; transA < 2; ++transA)
      for (kiln::rt::ThreadPool *p : {(kiln::rt::ThreadPool *)nullptr, &pool}) {
        INFO(s.batch << "x" << s.M << "x" << s.N << "x" << s.K << " transA " << transA << (p ? " pool" : ""));
        // B^T [N, K] is the BCR weight.
        std::vector<float> W = randomBcr(s.N, s.K, 4, 8, 0.5, 0.3, seed++);
        std::vector<uint32_t> blob = packDetected(W, s.N, s.K, transA ? 16 : bcr::kChunk); // partial sums too
        std::vector<float> A = randomFloats(s.batch * s.M * s.K, seed++), bias = randomFloats(s.N, seed++);
        int64_t lda = transA ? s.M : s.K, ldy = s.N + 3, strideY = s.M * ldy;
        GuardedBuffer y(s.batch * strideY);
        std::fill(y.data(), y.data() + y.size(), 0.0f);
        PoolScope scope(p);
        kiln_rt_matmul_bcr((intptr_t)A.data(), (intptr_t)blob.data(), y.addr(), s.batch, s.M, s.N, s.K, s.M * s.K,
                           lda, transA, strideY, ldy, (intptr_t)bias.data(), -0.5f, 2.0f);
        Reference ref(s.batch * strideY);
        for (int64_t b = 0; b < s.batch; ++b)
          for (int64_t m = 0; m < s.M; ++m)
            for (int64_t n = 0; n < s.N; ++n) {
              size_t o = b * strideY + m * ldy + n;
              ref.add(o, bias[n]);
              for (int64_t k = 0; k < s.K; ++k) {
                float a = transA ? A[b * s.M * s.K + k * lda + m] : A[b * s.M * s.K + m * lda + k];
                ref.add(o, double(a) * W[n * s.K + k]);
              }
            }
        for (int64_t b = 0; b < s.batch; ++b)
          for (int64_t m = 0; m < s.M; ++m)
            for (int64_t n = 0; n < ldy; ++n) {
              size_t o = b * strideY + m * ldy + n;
              ref.value[o] = n < s.N ? std::min(std::max(ref.value[o], -0.5), 2.0) : 0.0; // padding untouched
            }
        CHECK(mismatches(y.data(), ref) == "");
        CHECK(y.guardsIntact());
      }
}

TEST_CASE("kiln_rt_matmul_bcr_act applies GELU to every output as it is stored", "[bcr]") {
  // Against GELU computed in double with std::erf on the plain sparse
  // product (itself checked above), with a row stride past N, a batch,
  // one thread and a pool; NaN stays NaN.
  kiln::rt::ThreadPool pool(2);
  const int64_t shapes[][4] = {{1, 1, 4, 8}, {2, 37, 20, 64}, {1, 128, 96, 300}};
  uint32_t seed = 9700;
  for (auto &sh : shapes)
    for (kiln::rt::ThreadPool *p : {(kiln::rt::ThreadPool *)nullptr, &pool}) {
      int64_t batch = sh[0], M = sh[1], N = sh[2], K = sh[3], ldy = N + 3, strideY = M * ldy;
      INFO(batch << "x" << M << "x" << N << "x" << K << (p ? " pool" : ""));
      std::vector<float> W = randomBcr(N, K, 4, 8, 0.5, 0.3, seed++);
      std::vector<uint32_t> blob = packDetected(W, N, K, bcr::kChunk);
      std::vector<float> A = randomFloats(batch * M * K, seed++), bias = randomFloats(N, seed++);
      for (int64_t k = 0; k < K; ++k) A[k] = std::numeric_limits<float>::quiet_NaN(); // row 0 of the first result
      std::vector<float> plain(batch * strideY, 0.0f), got(batch * strideY, 0.0f);
      PoolScope scope(p);
      float inf = std::numeric_limits<float>::infinity();
      kiln_rt_matmul_bcr((intptr_t)A.data(), (intptr_t)blob.data(), (intptr_t)plain.data(), batch, M, N, K, M * K, K,
                         0, strideY, ldy, (intptr_t)bias.data(), -inf, inf);
      kiln_rt_matmul_bcr_act((intptr_t)A.data(), (intptr_t)blob.data(), (intptr_t)got.data(), batch, M, N, K, M * K,
                             K, 0, strideY, ldy, (intptr_t)bias.data(), -inf, inf, 1);
      int bad = 0, nans = 0;
      for (int64_t i = 0; i < batch * strideY; ++i) {
        if (i % ldy >= N) { // the row padding is not written
          bad += got[i] != 0.0f;
          continue;
        }
        double x = plain[i], want = x * (std::erf(x / std::sqrt(2.0)) + 1.0) * 0.5;
        nans += std::isnan(x);
        if (std::isnan(x) ? !std::isnan(got[i]) : !(std::fabs(got[i] - want) <= 1e-6 + 1e-6 * std::fabs(want))) ++bad;
      }
      CHECK(bad == 0);
      if (bcr::nonZeros(W.data(), N * K)) CHECK(nans > 0); // the NaN reached the output (the check above saw one)
    }
}

TEST_CASE("bcr::estimate: cost of the sparse kernel against the dense GEMM", "[bcr]") {
  // The dense cost is the layer's multiply-adds at the modelled GEMM rate;
  // the sparse one grows with the kept values, and is lower for 16-lane
  // tiles and for input rows read in place (no packing per tile).
  std::vector<float> W = randomBcr(64, 576, 4, 16, 0.5, 0.0, 31); // about 3/4 zeros
  std::vector<uint32_t> blob = packDetected(W, 64, 576, bcr::kChunk);
  bcr::Cost c8 = bcr::estimate(blob.data()), c16 = bcr::estimate(blob.data(), 16),
            inPlace = bcr::estimate(blob.data(), 8, true);
  CHECK(c8.dense == Approx(64.0 * 576 * 24 / 16 / 0.85));
  CHECK(c16.dense == c8.dense);
  CHECK(c16.sparse < c8.sparse);
  CHECK(inPlace.sparse == Approx(c8.sparse - 1.5 * bcr::View{blob.data()}.usedCount()));
  std::vector<float> W90 = randomBcr(64, 576, 4, 16, 0.3, 0.0, 31); // about 9/10 zeros
  std::vector<uint32_t> blob90 = packDetected(W90, 64, 576, bcr::kChunk);
  CHECK(bcr::estimate(blob90.data()).sparse < c8.sparse);
  CHECK(c8.dense / c8.sparse > 1.0); // modelled faster than dense
}
