// kiln-bench-sparse: the BCR sparse conv kernel against kiln's dense
// packed kernel on the same layer (same run, median of repeats), for the
// conv shapes of ResNet-50 and the BERT encoder's linear layers, at several
// block sizes and rates. Prints a Markdown table: dense ms, sparse ms,
// speedup, the ideal 1/(1-s), and the cost model's predicted speedup.
//
// With --avx2 (on a CPU with AVX-512) the sparse kernel is also timed on
// 8-lane vectors (KILN_NO_AVX512's path), interleaved with the 16-lane one.
//
// usage: kiln-bench-sparse [--threads T] [--reps R] [--block RxC] [--rates a,b,c] [--only NAME] [--avx2]
#include "kernels.h"
#include "kiln/bcr_layout.h"
#include "kiln/gemm_layout.h"
#include "thread_pool.h"
#include "timing.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

namespace {

struct Layer {
  const char *name;
  int64_t C, H, F, K, S; // conv: channels, input size, filters, kernel, stride; K == 0: matmul (H tokens)
};

} // namespace

int main(int argc, char **argv) {
  int threads = 1, reps = 15, br = 4, bc = 16;
  std::string only;
  bool avx2 = false;
  std::vector<double> rates = {0.5, 0.75, 0.9};
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--threads" && i + 1 < argc) threads = std::atoi(argv[++i]);
    else if (a == "--reps" && i + 1 < argc) reps = std::atoi(argv[++i]);
    else if (a == "--only" && i + 1 < argc) only = argv[++i];
    else if (a == "--avx2") avx2 = kiln::rt::wideKernels();
    else if (a == "--block" && i + 1 < argc) std::sscanf(argv[++i], "%dx%d", &br, &bc);
    else if (a == "--rates" && i + 1 < argc) {
      rates.clear();
      for (char *s = std::strtok(argv[++i], ","); s; s = std::strtok(nullptr, ",")) rates.push_back(std::atof(s));
    } else {
      std::fprintf(stderr, "usage: kiln-bench-sparse [--threads T] [--reps R] [--block RxC] [--rates a,b,c] [--only NAME] [--avx2]\n");
      return 2;
    }
  }
  const Layer layers[] = {
      {"resnet 1x1 64->256 @56", 64, 56, 256, 1, 1},   {"resnet 3x3 64->64 @56", 64, 56, 64, 3, 1},
      {"resnet 3x3 128->128 @28", 128, 28, 128, 3, 1}, {"resnet 1x1 1024->256 @14", 1024, 14, 256, 1, 1},
      {"resnet 3x3 256->256 @14", 256, 14, 256, 3, 1}, {"resnet 3x3 512->512 @7", 512, 7, 512, 3, 1},
      {"resnet 1x1 2048->512 @7", 2048, 7, 512, 1, 1}, {"resnet 7x7 s2 3->64 @224", 3, 224, 64, 7, 2},
      {"resnet 3x3 s2 128->128 @56", 128, 56, 128, 3, 2}, {"resnet 1x1 s2 512->1024 @28", 512, 28, 1024, 1, 2},
      {"bert 768->768 x128", 768, 128, 768, 0, 0},
      {"bert 768->3072 x128", 768, 128, 3072, 0, 0},   {"bert 3072->768 x128", 3072, 128, 768, 0, 0},
  };
  kiln::rt::ThreadPool pool(threads);
  kiln::rt::setCurrentPool(threads > 1 ? &pool : nullptr);
  std::printf("BCR %dx%d blocks, %d thread(s), median of %d\n\n", br, bc, threads, reps);
  std::printf("| layer | rate | dense ms | sparse ms | speedup | ideal | model |%s\n|---|---|---|---|---|---|---|%s\n",
              avx2 ? " sparse ms, 8 lanes |" : "", avx2 ? "---|" : "");
  const float inf = std::numeric_limits<float>::infinity();
  double logSum[8] = {0};
  int count[8] = {0};
  for (const Layer &l : layers) {
    if (!only.empty() && std::string(l.name).find(only) == std::string::npos) continue;
    bool mm = l.K == 0;
    int64_t Kw = mm ? l.C : l.C * l.K * l.K, M = l.F;
    int64_t OH = mm ? 0 : (l.H + 2 * (l.K / 2) - l.K) / l.S + 1;
    std::mt19937 gen(1);
    std::uniform_real_distribution<float> u(-1, 1);
    std::vector<float> w(M * Kw), x(mm ? l.H * l.C : l.C * l.H * l.H), bias(M);
    for (float &v : w) v = u(gen);
    for (float &v : x) v = u(gen);
    for (float &v : bias) v = u(gen);
    std::vector<float> y(mm ? l.H * M : M * OH * OH);
    std::vector<float> packed;
    if (mm) { // B = W^T [K, N]
      std::vector<float> B(Kw * M);
      for (int64_t i = 0; i < M; ++i)
        for (int64_t k = 0; k < Kw; ++k) B[k * M + i] = w[i * Kw + k];
      packed.resize(kiln::gemm::packedBSize(Kw, M));
      kiln::gemm::packBFull(B.data(), M, false, Kw, M, packed.data());
    } else {
      packed.resize(kiln::gemm::packedASize(M, Kw));
      kiln::gemm::packAFull(w.data(), Kw, false, M, Kw, packed.data());
    }
    auto dense = [&] {
      if (mm)
        kiln_rt_matmul_packed((intptr_t)x.data(), (intptr_t)packed.data(), (intptr_t)y.data(), 1, l.H, M, Kw, 0,
                              Kw, 0, 0, M, (intptr_t)bias.data(), -inf, inf);
      else
        kiln_rt_conv2d_packed((intptr_t)x.data(), (intptr_t)packed.data(), (intptr_t)bias.data(), 0,
                              (intptr_t)y.data(), 1, l.C, l.H, l.H, M, l.K, l.K, OH, OH, l.S, l.S, 1, 1, l.K / 2,
                              l.K / 2, 0.0f, inf);
    };
    double denseMs = medianMs(reps, dense);
    for (size_t ri = 0; ri < rates.size(); ++ri) {
      std::vector<float> pw = w;
      int64_t kept = kiln::bcr::prune(pw.data(), M, Kw, br, bc, rates[ri]);
      auto blob = kiln::bcr::pack(pw.data(), M, Kw, kiln::bcr::rowOrder(pw.data(), M, Kw, br, bc), br, bc);
      auto sparse = [&] {
        if (mm)
          kiln_rt_matmul_bcr((intptr_t)x.data(), (intptr_t)blob.data(), (intptr_t)y.data(), 1, l.H, M, Kw, 0, Kw,
                             0, 0, M, (intptr_t)bias.data(), -inf, inf);
        else
          kiln_rt_conv2d_bcr((intptr_t)x.data(), (intptr_t)blob.data(), (intptr_t)bias.data(), 0,
                             (intptr_t)y.data(), 1, l.C, l.H, l.H, M, l.K, l.K, OH, OH, l.S, l.S, 1, 1, l.K / 2,
                             l.K / 2, 0.0f, inf);
      };
      double sparseMs, narrowMs = 0;
      if (avx2) {
        auto t = interleavedMedianMs(reps, {sparse, [&] {
                                              kiln::rt::setWideKernels(false);
                                              sparse();
                                              kiln::rt::setWideKernels(true);
                                            }});
        sparseMs = t[0], narrowMs = t[1];
      } else {
        sparseMs = medianMs(reps, sparse);
      }
      double s = 1.0 - double(kept) / (M * Kw);
      auto cost = kiln::bcr::estimate(blob.data(), kiln::rt::wideKernels() ? 16 : 8, !mm && l.K > 1);
      std::printf("| %s | %.2f | %.3f | %.3f | %.2fx | %.1fx | %.2fx |", l.name, s, denseMs, sparseMs,
                  denseMs / sparseMs, 1.0 / (1.0 - s), cost.dense / cost.sparse);
      if (avx2) std::printf(" %.3f |", narrowMs);
      std::printf("\n");
      logSum[ri] += std::log(denseMs / sparseMs);
      ++count[ri];
    }
  }
  std::printf("\n");
  for (size_t ri = 0; ri < rates.size(); ++ri)
    std::printf("geometric mean speedup at %.2f: %.2fx\n", rates[ri], std::exp(logSum[ri] / count[ri]));
  return 0;
}
