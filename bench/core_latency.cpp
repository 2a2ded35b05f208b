// kiln-core-latency: how far apart two threads of this machine are, as the
// round trip of one cache line handed back and forth between them (ns).
// bench/cpu.py reports it next to each multi-threaded timing: on a VM the
// two vCPUs may be close (sharing a cache: tens of ns) or far apart (on
// other dies: hundreds), and that moves 2-thread latencies, kiln's and
// ONNX Runtime's alike, by up to 1.6x from one minute to the next.
//
// usage: kiln-core-latency [round trips=100000]   prints "<ns>" (the
// median of 5 batches), or "nan" with fewer than 2 hardware threads.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>

int main(int argc, char **argv) {
  const long n = argc > 1 ? std::max(1L, atol(argv[1])) : 100000;
  if (std::thread::hardware_concurrency() < 2) {
    std::puts("nan");
    return 0;
  }
  alignas(64) static std::atomic<long> flag{0};
  std::vector<double> batches;
  for (int b = 0; b < 5; ++b) {
    flag.store(0);
    // The partner answers each odd value with the next even one.
    std::thread partner([n] {
      for (long i = 0; i < n; ++i) {
        while (flag.load(std::memory_order_acquire) != 2 * i + 1) {
        }
        flag.store(2 * i + 2, std::memory_order_release);
      }
    });
    auto t0 = std::chrono::steady_clock::now();
    for (long i = 0; i < n; ++i) {
      flag.store(2 * i + 1, std::memory_order_release);
      while (flag.load(std::memory_order_acquire) != 2 * i + 2) {
      }
    }
    auto t1 = std::chrono::steady_clock::now();
    partner.join();
    batches.push_back(std::chrono::duration<double, std::nano>(t1 - t0).count() / double(n));
  }
  std::sort(batches.begin(), batches.end());
  std::printf("%.0f\n", batches[batches.size() / 2]);
  return 0;
}
