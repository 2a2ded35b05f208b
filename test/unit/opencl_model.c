/* A hand-written stand-in for an OpenCL library made by
 * `kiln-compile --target=opencl`, used by opencl_test.cpp. It follows the
 * contract of runtime/src/opencl.h:
 *
 *   input  x f32 [10, 100], output y f32 [10, 100]
 *   weights 3000 floats: w, b, s (1000 each)
 *   arena   8192 bytes; t lives at byte offset 256
 *   block 0 "MulAdd 1000":  launch 0, kiln_k0, 1-D 1000:     t = x * w + b
 *   block 1 "AddRelu 10x100": launch 1, kiln_k1, 2-D 100x10: y = max(t + x * s, 0)
 *
 * Compile definitions break the contract in one place each:
 *   OCL_BAD_SOURCE      the source has a syntax error (build fails)
 *   OCL_BAD_LAUNCH      launch 1 has 4 dimensions
 *   OCL_MISSING_KERNEL  three launches, but no kernel kiln_k2
 *   OCL_NO_SOURCE       kiln_opencl_source is not exported
 */
#include <stdint.h>

#include "kiln/runtime.h"

const uint32_t kiln_model_abi_version = KILN_MODEL_ABI_VERSION;

/* As lib/Target writes it: names and labels escaped (%20 is a space). */
const char kiln_model_meta[] = "kiln-model 1\n"
                               "target opencl\n"
                               "arena 8192\n"
                               "input x f32 2 10 100\n"
                               "output y f32 2 10 100\n"
                               "kernel MulAdd%201000 2000\n"
                               "kernel AddRelu%2010x100 3000\n";

#ifndef OCL_NO_SOURCE
const char kiln_opencl_source[] =
    "#define ARGS __global uchar *arena, __global uchar *weights, __global uchar *x_, __global uchar *y_\n"
    "__kernel void kiln_k0(ARGS) {\n"
    "  size_t i = get_global_id(0);\n"
    "  __global float *t = (__global float *)(arena + 256);\n"
    "  __global const float *w = (__global const float *)weights;\n"
    "  __global const float *x = (__global const float *)x_;\n"
    "  t[i] = x[i] * w[i] + w[1000 + i];\n"
    "}\n"
    "__kernel void kiln_k1(ARGS) {\n"
    "  size_t i = get_global_id(1) * 100 + get_global_id(0);\n"
    "  __global const float *t = (__global const float *)(arena + 256);\n"
    "  __global const float *w = (__global const float *)weights;\n"
    "  __global const float *x = (__global const float *)x_;\n"
    "  __global float *y = (__global float *)y_;\n"
#ifdef OCL_BAD_SOURCE
    "  kiln_syntax_error here\n"
#endif
    "  y[i] = fmax(t[i] + x[i] * w[2000 + i], 0.0f);\n"
    "}\n";
#endif

#if defined(OCL_MISSING_KERNEL)
const int64_t kiln_opencl_launches[] = {3, 0, 1, 1000, 1, 1, 0, 1, 2, 100, 10, 1, 0, 1, 1, 1, 1, 1, 0};
#elif defined(OCL_BAD_LAUNCH)
const int64_t kiln_opencl_launches[] = {2, 0, 1, 1000, 1, 1, 0, 1, 4, 100, 10, 1, 0};
#else
const int64_t kiln_opencl_launches[] = {2, 0, 1, 1000, 1, 1, 0, 1, 2, 100, 10, 1, 0};
#endif

/* Filled when the library is loaded (the test reads them back with dlsym). */
#define OCL_WEIGHTS 3000
unsigned char kiln_model_weights[OCL_WEIGHTS * sizeof(float)] __attribute__((aligned(64)));
const int64_t kiln_opencl_weights_bytes = sizeof kiln_model_weights;

__attribute__((constructor)) static void fillWeights(void) {
  float *w = (float *)kiln_model_weights;
  for (int i = 0; i < OCL_WEIGHTS; ++i)
    w[i] = (float)((i * 7) % 13 - 6) * 0.125f;
}
