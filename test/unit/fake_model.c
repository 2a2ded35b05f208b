/* A hand-written stand-in for a library made by kiln-compile, used by the C
 * API tests (api_test.cpp). It exports the symbols the runtime looks up:
 *
 *   inputs  "a b" f32 [2, 3], "w" f32 [3, 4], "s" f32 [] (a scalar)
 *   output  "%y"  f32 [2, 4] = a * w + s        (names escaped as %20, %25)
 *   arena   1000 bytes
 *   kernels "MatMul 2x4" (48 FLOPs) and "Add 2x4" (FLOPs not given), timed
 *   by the profiling hooks
 *
 * and, for the tests, a run counter, the arena's alignment and a hook
 * called in the middle of kiln_model_run (inside kernel 0). Compile definitions break the
 * contract in one place each: FAKE_ABI, FAKE_TARGET, FAKE_BAD_META and
 * FAKE_NO_RUN. */
#include <stdint.h>
#include <string.h>

#include "kiln/runtime.h"

#ifndef FAKE_ABI
#define FAKE_ABI KILN_MODEL_ABI_VERSION
#endif
#ifndef FAKE_TARGET
#if defined(__x86_64__)
#define FAKE_TARGET "x86_64"
#elif defined(__aarch64__)
#define FAKE_TARGET "aarch64"
#else
#define FAKE_TARGET "unknown"
#endif
#endif

#define FAKE_ARENA_BYTES 1000
#ifndef FAKE_ARENA_TEXT
#define FAKE_ARENA_TEXT "1000"
#endif

/* Runtime kernel, resolved when the runtime opens this library. */
void kiln_rt_matmul(intptr_t a, intptr_t b, intptr_t y, int64_t batch, int64_t M, int64_t N,
                    int64_t K, int64_t strideA, int64_t strideB);
void kiln_rt_kernel_begin(int64_t id);
void kiln_rt_kernel_end(int64_t id);

const uint32_t kiln_model_abi_version = FAKE_ABI;

#ifdef FAKE_BAD_META
const char kiln_model_meta[] = "kiln-model 1\ntarget " FAKE_TARGET "\ninput x f8 1 4\n";
#else
const char kiln_model_meta[] = "kiln-model 1\n"
                               "target " FAKE_TARGET "\n"
                               "arena " FAKE_ARENA_TEXT "\n"
                               "weights 4096\n"
                               "input a%20b f32 2 2 3\n"
                               "input w f32 2 3 4\n"
                               "input s f32 0\n"
                               "output %25y f32 2 2 4\n"
                               "kernel MatMul%202x4 48\n"
                               "kernel Add%202x4\n";
#endif

int fake_model_runs = 0;
int fake_model_arena_aligned = 0;
void (*fake_model_hook)(void *) = 0;
void *fake_model_hook_arg = 0;

#ifndef FAKE_NO_RUN
void kiln_model_run(void **buffers) {
  float *arena = (float *)buffers[0];
  const float *a = (const float *)buffers[1], *w = (const float *)buffers[2];
  const float *s = (const float *)buffers[3];
  float *y = (float *)buffers[4];
  /* Contexts may run concurrently: the counters are updated atomically. */
  __atomic_store_n(&fake_model_arena_aligned, ((uintptr_t)arena % 64) == 0, __ATOMIC_RELAXED);
  memset(arena, 0, FAKE_ARENA_BYTES);
  kiln_rt_kernel_begin(0);
  if (fake_model_hook)
    fake_model_hook(fake_model_hook_arg);
  kiln_rt_matmul((intptr_t)a, (intptr_t)w, (intptr_t)y, 1, 2, 4, 3, 0, 0);
  kiln_rt_kernel_end(0);
  kiln_rt_kernel_begin(1);
  for (int i = 0; i < 8; ++i)
    y[i] += *s;
  kiln_rt_kernel_end(1);
  __atomic_fetch_add(&fake_model_runs, 1, __ATOMIC_RELAXED);
}
#endif
