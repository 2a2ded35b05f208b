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

#if defined(__x86_64__)
// The assembly of `n` rounds of 12 independent FMAs on registers R0-R11
// (R12 and R13 the operands), R = "ymm" or "zmm", and what it clobbers.
#define KILN_XOR(R, i) "vxorps %%" R #i ", %%" R #i ", %%" R #i "\n"
#define KILN_FMA(R, i) "vfmadd231ps %%" R "12, %%" R "13, %%" R #i "\n"
#define KILN_FMA_ROUNDS(R)                                                                                         \
  KILN_XOR(R, 0) KILN_XOR(R, 1) KILN_XOR(R, 2) KILN_XOR(R, 3) KILN_XOR(R, 4) KILN_XOR(R, 5) KILN_XOR(R, 6)          \
  KILN_XOR(R, 7) KILN_XOR(R, 8) KILN_XOR(R, 9) KILN_XOR(R, 10) KILN_XOR(R, 11) KILN_XOR(R, 12) KILN_XOR(R, 13)    \
  "1:\n" KILN_FMA(R, 0) KILN_FMA(R, 1) KILN_FMA(R, 2) KILN_FMA(R, 3) KILN_FMA(R, 4) KILN_FMA(R, 5)                \
  KILN_FMA(R, 6) KILN_FMA(R, 7) KILN_FMA(R, 8) KILN_FMA(R, 9) KILN_FMA(R, 10) KILN_FMA(R, 11)                      \
  "dec %0\n jnz 1b\n vzeroupper\n"
#define KILN_FMA_CLOBBERS                                                                                          \
  "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12",      \
      "xmm13", "cc"
#endif

/// `n` rounds of 12 independent 8-wide FMAs. On x86-64 written in assembly
/// so the accumulators stay in ymm0-11 whatever the compiler does.
static void fmaRounds(long n) {
#if defined(__x86_64__)
  asm volatile(KILN_FMA_ROUNDS("ymm") : "+r"(n) : : KILN_FMA_CLOBBERS);
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
  asm volatile(KILN_FMA_ROUNDS("zmm") : "+r"(n) : : KILN_FMA_CLOBBERS);
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
