// kiln-peak-flops: this CPU's peak single-precision FMA throughput, for the
// "% of peak" column of bench/cpu.py. Each of T threads runs 12 independent
// chains of 8-wide fused multiply-adds (enough to cover FMA latency on the
// two FMA pipes of current x86-64 and ARM cores) for about `seconds`; on an
// x86-64 CPU with AVX-512F also 16-wide ones, and the faster of the two
// counts (Intel cores with two 512-bit FMA pipes double their peak with
// zmm registers; Zen 4 runs a zmm FMA as two halves, so its peak is the
// same either way).
//
// usage: kiln-peak-flops [threads=1] [seconds=0.5]   prints "<GFLOP/s>"
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>

typedef float v8f __attribute__((vector_size(32)));

/// `n` rounds of 12 independent 8-wide FMAs. On x86-64 written in assembly
/// so the accumulators stay in ymm0-11 whatever the compiler does.
static void fmaRounds(long n) {
#if defined(__x86_64__)
  asm volatile(
      "vxorps %%ymm0, %%ymm0, %%ymm0\n vxorps %%ymm1, %%ymm1, %%ymm1\n vxorps %%ymm2, %%ymm2, %%ymm2\n"
      "vxorps %%ymm3, %%ymm3, %%ymm3\n vxorps %%ymm4, %%ymm4, %%ymm4\n vxorps %%ymm5, %%ymm5, %%ymm5\n"
      "vxorps %%ymm6, %%ymm6, %%ymm6\n vxorps %%ymm7, %%ymm7, %%ymm7\n vxorps %%ymm8, %%ymm8, %%ymm8\n"
      "vxorps %%ymm9, %%ymm9, %%ymm9\n vxorps %%ymm10, %%ymm10, %%ymm10\n vxorps %%ymm11, %%ymm11, %%ymm11\n"
      "vxorps %%ymm12, %%ymm12, %%ymm12\n vxorps %%ymm13, %%ymm13, %%ymm13\n"
      "1:\n"
      "vfmadd231ps %%ymm12, %%ymm13, %%ymm0\n vfmadd231ps %%ymm12, %%ymm13, %%ymm1\n"
      "vfmadd231ps %%ymm12, %%ymm13, %%ymm2\n vfmadd231ps %%ymm12, %%ymm13, %%ymm3\n"
      "vfmadd231ps %%ymm12, %%ymm13, %%ymm4\n vfmadd231ps %%ymm12, %%ymm13, %%ymm5\n"
      "vfmadd231ps %%ymm12, %%ymm13, %%ymm6\n vfmadd231ps %%ymm12, %%ymm13, %%ymm7\n"
      "vfmadd231ps %%ymm12, %%ymm13, %%ymm8\n vfmadd231ps %%ymm12, %%ymm13, %%ymm9\n"
      "vfmadd231ps %%ymm12, %%ymm13, %%ymm10\n vfmadd231ps %%ymm12, %%ymm13, %%ymm11\n"
      "dec %0\n jnz 1b\n vzeroupper\n"
      : "+r"(n)
      :
      : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10",
        "xmm11", "xmm12", "xmm13", "cc");
#else
  v8f b = v8f{} + 1.0f, c = v8f{} + 1e-7f;
  v8f a0{}, a1{}, a2{}, a3{}, a4{}, a5{}, a6{}, a7{}, a8{}, a9{}, a10{}, a11{};
  for (long it = 0; it < n; ++it) {
    a0 = a0 * b + c; a1 = a1 * b + c; a2 = a2 * b + c; a3 = a3 * b + c;
    a4 = a4 * b + c; a5 = a5 * b + c; a6 = a6 * b + c; a7 = a7 * b + c;
    a8 = a8 * b + c; a9 = a9 * b + c; a10 = a10 * b + c; a11 = a11 * b + c;
  }
  v8f sum = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9 + a10 + a11;
  volatile float sink = sum[0];
  (void)sink;
#endif
}

#if defined(__x86_64__)
/// The same rounds on 16-wide zmm registers (AVX-512F).
__attribute__((target("avx512f"))) static void fmaRounds512(long n) {
  asm volatile(
      "vxorps %%zmm0, %%zmm0, %%zmm0\n vxorps %%zmm1, %%zmm1, %%zmm1\n vxorps %%zmm2, %%zmm2, %%zmm2\n"
      "vxorps %%zmm3, %%zmm3, %%zmm3\n vxorps %%zmm4, %%zmm4, %%zmm4\n vxorps %%zmm5, %%zmm5, %%zmm5\n"
      "vxorps %%zmm6, %%zmm6, %%zmm6\n vxorps %%zmm7, %%zmm7, %%zmm7\n vxorps %%zmm8, %%zmm8, %%zmm8\n"
      "vxorps %%zmm9, %%zmm9, %%zmm9\n vxorps %%zmm10, %%zmm10, %%zmm10\n vxorps %%zmm11, %%zmm11, %%zmm11\n"
      "vxorps %%zmm12, %%zmm12, %%zmm12\n vxorps %%zmm13, %%zmm13, %%zmm13\n"
      "1:\n"
      "vfmadd231ps %%zmm12, %%zmm13, %%zmm0\n vfmadd231ps %%zmm12, %%zmm13, %%zmm1\n"
      "vfmadd231ps %%zmm12, %%zmm13, %%zmm2\n vfmadd231ps %%zmm12, %%zmm13, %%zmm3\n"
      "vfmadd231ps %%zmm12, %%zmm13, %%zmm4\n vfmadd231ps %%zmm12, %%zmm13, %%zmm5\n"
      "vfmadd231ps %%zmm12, %%zmm13, %%zmm6\n vfmadd231ps %%zmm12, %%zmm13, %%zmm7\n"
      "vfmadd231ps %%zmm12, %%zmm13, %%zmm8\n vfmadd231ps %%zmm12, %%zmm13, %%zmm9\n"
      "vfmadd231ps %%zmm12, %%zmm13, %%zmm10\n vfmadd231ps %%zmm12, %%zmm13, %%zmm11\n"
      "dec %0\n jnz 1b\n vzeroupper\n"
      : "+r"(n)
      :
      : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10",
        "xmm11", "xmm12", "xmm13", "cc");
}
#endif

/// FLOP/s of `rounds` (n rounds of 12 FMAs of `lanes` floats) run for
/// about `seconds`.
static double fmaLoop(void (*rounds)(long), int lanes, double seconds) {
  const long batch = 1 << 20;
  long iters = 0;
  auto t0 = std::chrono::steady_clock::now();
  double elapsed = 0;
  do {
    rounds(batch);
    iters += batch;
    elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  } while (elapsed < seconds);
  return iters * 12.0 * lanes * 2 / elapsed; // 12 FMAs x lanes x 2 FLOPs
}

static double fmaPeak(double seconds) {
  double best = fmaLoop(fmaRounds, 8, seconds);
#if defined(__x86_64__)
  if (__builtin_cpu_supports("avx512f")) best = std::max(best, fmaLoop(fmaRounds512, 16, seconds));
#endif
  return best;
}

int main(int argc, char **argv) {
  int threads = argc > 1 ? atoi(argv[1]) : 1;
  double seconds = argc > 2 ? atof(argv[2]) : 0.5;
  if (threads < 1 || threads > 1024 || !(seconds > 0)) {
    fprintf(stderr, "usage: kiln-peak-flops [threads] [seconds]\n");
    return 2;
  }
  std::vector<double> rate(threads);
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t)
    pool.emplace_back([&, t] { rate[t] = fmaPeak(seconds); });
  double total = 0;
  for (int t = 0; t < threads; ++t) {
    pool[t].join();
    total += rate[t];
  }
  printf("%.1f\n", total / 1e9);
  return 0;
}
