// kiln-bench-gemm: kiln's packed GEMM on the shapes that dominate the
// benchmark models (the BERT encoder's linear layers with weights packed as
// operand B; ResNet-50's 1x1 convs with weights packed as operand A), in
// GFLOP/s, median of repeats. Prints a Markdown table; with --peak G also
// the share of a peak measured elsewhere (kiln-peak-flops).
//
// usage: kiln-bench-gemm [--threads T] [--reps R] [--peak GFLOPS] [--only NAME]
#include "kernels.h"
#include "kiln/gemm_layout.h"
#include "thread_pool.h"
#include "timing.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <random>
#include <string>
#include <vector>

namespace {

struct Shape {
  const char *name;
  int64_t M, N, K;
  bool weightsA; // conv: weights are A [M=F, K=C], activations B [K, N=HW]; else matmul: B is the weights
};

} // namespace

int main(int argc, char **argv) {
  int threads = 1, reps = 21;
  double peak = 0;
  std::string only;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--threads" && i + 1 < argc) threads = std::atoi(argv[++i]);
    else if (a == "--reps" && i + 1 < argc) reps = std::atoi(argv[++i]);
    else if (a == "--peak" && i + 1 < argc) peak = std::atof(argv[++i]);
    else if (a == "--only" && i + 1 < argc) only = argv[++i];
    else {
      std::fprintf(stderr, "usage: kiln-bench-gemm [--threads T] [--reps R] [--peak GFLOPS] [--only NAME]\n");
      return 2;
    }
  }
  kiln::rt::ThreadPool pool(threads);
  kiln::rt::setCurrentPool(threads > 1 ? &pool : nullptr);
  const Shape shapes[] = {
      {"bert_qkv", 128, 2304, 768, false},    {"bert_out", 128, 768, 768, false},
      {"bert_ffn1", 128, 3072, 768, false},   {"bert_ffn2", 128, 768, 3072, false},
      {"r50_s1_reduce", 64, 3136, 256, true}, {"r50_s1_expand", 256, 3136, 64, true},
      {"r50_s2_reduce", 128, 784, 512, true}, {"r50_s2_expand", 512, 784, 128, true},
      {"r50_s3_reduce", 256, 196, 1024, true}, {"r50_s3_expand", 1024, 196, 256, true},
      {"r50_s4_reduce", 512, 49, 2048, true}, {"r50_s4_expand", 2048, 49, 512, true},
      {"mbv2_expand_112", 96, 12544, 16, true}, {"mbv2_project_112", 16, 12544, 32, true},
      {"mbv2_expand_56", 144, 3136, 24, true},  {"mbv2_project_56", 24, 3136, 144, true},
      {"mbv2_expand_14", 384, 196, 64, true},   {"mbv2_project_14", 64, 196, 384, true},
      {"mbv2_project_14b", 96, 196, 576, true}, {"mbv2_expand_7", 960, 49, 160, true},    {"mbv2_project_7", 160, 49, 960, true},
      {"mbv2_last_7", 320, 49, 960, true},      {"mbv2_head_7", 1280, 49, 320, true},
  };
  std::printf("threads %d, median of %d\n\n| shape | M x N x K | ms | GFLOP/s |%s\n|---|---|---:|---:|%s\n", threads,
              reps, peak > 0 ? " % of peak |" : "", peak > 0 ? "---:|" : "");
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  for (const Shape &s : shapes) {
    if (!only.empty() && only != s.name) continue;
    std::vector<float> A(s.M * s.K), B(s.K * s.N), C(s.M * s.N), bias(std::max(s.M, s.N));
    for (float &v : A) v = dist(rng);
    for (float &v : B) v = dist(rng);
    for (float &v : bias) v = dist(rng);
    std::vector<float> packed;
    kiln::rt::Epilogue ep;
    ep.lo = 0.0f; // a fused Relu, as the models have
    std::function<void()> run;
    if (s.weightsA) {
      packed.resize(kiln::gemm::packedASize(s.M, s.K));
      kiln::gemm::packAFull(A.data(), s.K, false, s.M, s.K, packed.data());
      ep.rowBias = bias.data();
      run = [&] {
        kiln::rt::sgemm(s.M, s.N, s.K, nullptr, 0, false, B.data(), s.N, false, C.data(), s.N, &ep, packed.data());
      };
    } else {
      packed.resize(kiln::gemm::packedBSize(s.K, s.N));
      kiln::gemm::packBFull(B.data(), s.N, false, s.K, s.N, packed.data());
      ep.colBias = bias.data();
      run = [&] {
        kiln::rt::sgemm(s.M, s.N, s.K, A.data(), s.K, false, nullptr, 0, false, C.data(), s.N, &ep, nullptr,
                        packed.data());
      };
    }
    double ms = medianMs(reps, run), gf = 2.0 * s.M * s.N * s.K / (ms * 1e6);
    std::printf("| %s | %lld x %lld x %lld | %.3f | %.1f |", s.name, (long long)s.M, (long long)s.N,
                (long long)s.K, ms, gf);
    if (peak > 0) std::printf(" %.0f%% |", 100.0 * gf / peak);
    std::printf("\n");
  }
  return 0;
}
