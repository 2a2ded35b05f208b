/* kiln runtime: the C API for running models compiled by kiln-compile.
 *
 * Plain C ABI, no dependency on LLVM, MLIR or protobuf; builds for x86-64
 * and aarch64. Typical use:
 *
 *   kiln_model *m;   kiln_model_open("model.so", &m);
 *   kiln_context *c; kiln_context_create(m, &c);
 *   kiln_context_set_threads(c, 2);
 *   kiln_tensor in = {data, bytes, KILN_F32, rank, shape}, out = {...};
 *   if (kiln_run(c, &in, 1, &out, 1) != KILN_OK) puts(kiln_last_error());
 *   kiln_context_destroy(c); kiln_model_close(m);
 *
 * Threading: a model may be shared by any number of contexts; a context
 * holds the intermediate-buffer arena and the thread pool and must be used
 * by one thread at a time (kiln_run returns KILN_ERR_BUSY otherwise). Use
 * one context per calling thread to run one model concurrently.
 *
 * Symbols: compiled model libraries call the runtime's kernels (kiln_rt_*),
 * resolved when the model is opened; link the runtime as a shared library
 * (or export its symbols) in the application.
 *
 * OpenCL: libraries compiled with --target=opencl run on an OpenCL device
 * through the same calls. The runtime loads the ICD loader (libOpenCL.so.1)
 * only when such a model is opened, so applications running CPU models do
 * not need it. The device is the one kiln_opencl_select_device names, else
 * the one the environment variable KILN_OPENCL_DEVICE names, else the first
 * GPU, else the first device. Built programs are cached on disk in
 * $KILN_CACHE_DIR, else $XDG_CACHE_HOME/kiln/opencl, else
 * $HOME/.cache/kiln/opencl. kiln_context_set_threads has no effect on
 * OpenCL models; per-kernel times are the device times of the launches.
 */
#ifndef KILN_RUNTIME_H
#define KILN_RUNTIME_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Version of the contract between compiled libraries and this runtime. A
 * library built for another version is refused at open. */
#define KILN_MODEL_ABI_VERSION 2

typedef enum {
  KILN_OK = 0,
  KILN_ERR_INVALID_ARGUMENT = 1, /* null pointer, bad index or count */
  KILN_ERR_IO = 2,               /* cannot load the library */
  KILN_ERR_ABI = 3,              /* library built for another runtime/target */
  KILN_ERR_SHAPE = 4,            /* tensor shape/rank differs from the model's */
  KILN_ERR_DTYPE = 5,            /* tensor dtype differs from the model's */
  KILN_ERR_BUFFER = 6,           /* tensor buffer too small */
  KILN_ERR_OUT_OF_MEMORY = 7,
  KILN_ERR_BUSY = 8,             /* context already running on another thread */
  KILN_ERR_INTERNAL = 9,
  KILN_ERR_DEVICE = 10,          /* OpenCL/device error: no ICD loader or device,
                                    program build or launch failure */
  /* Not a status: makes the enum int-sized so that any int a caller passes
   * is a valid value (the runtime answers "unknown" rather than invoking
   * undefined behaviour). */
  KILN_STATUS_MAX_ENUM = 0x7fffffff
} kiln_status;

/* Element types, numbered as ONNX's TensorProto.DataType. */
typedef enum {
  KILN_F32 = 1,
  KILN_U8 = 2,
  KILN_I8 = 3,
  KILN_U16 = 4,
  KILN_I16 = 5,
  KILN_I32 = 6,
  KILN_I64 = 7,
  KILN_BOOL = 9, /* one byte per element, 0 or 1 */
  KILN_F16 = 10, /* IEEE half */
  KILN_F64 = 11,
  KILN_U32 = 12,
  KILN_U64 = 13,
  KILN_BF16 = 16,
  KILN_F8E4M3FN = 17, /* float8 formats, one byte each */
  KILN_F8E4M3FNUZ = 18,
  KILN_F8E5M2 = 19,
  KILN_F8E5M2FNUZ = 20,
  KILN_DTYPE_MAX_ENUM = 0x7fffffff /* not a dtype; see KILN_STATUS_MAX_ENUM */
} kiln_dtype;

/* Bytes per element of a dtype (0 for an unknown value). */
size_t kiln_dtype_size(kiln_dtype dtype);

typedef struct kiln_model kiln_model;
typedef struct kiln_context kiln_context;

/* A tensor on caller-owned memory (row-major, contiguous). */
typedef struct {
  void *data;
  size_t size_bytes;     /* capacity of data in bytes */
  kiln_dtype dtype;
  int32_t rank;
  const int64_t *shape;  /* rank entries */
} kiln_tensor;

/* Description of a model input or output; pointers live as long as the model. */
typedef struct {
  const char *name;
  kiln_dtype dtype;
  int32_t rank;
  const int64_t *shape;
  size_t size_bytes;
} kiln_tensor_info;

/* Last error message of the calling thread ("" if none). */
const char *kiln_last_error(void);
const char *kiln_status_string(kiln_status status);

kiln_status kiln_model_open(const char *path, kiln_model **out);
void kiln_model_close(kiln_model *model);
int32_t kiln_model_num_inputs(const kiln_model *model);
int32_t kiln_model_num_outputs(const kiln_model *model);
kiln_status kiln_model_input_info(const kiln_model *model, int32_t index, kiln_tensor_info *info);
kiln_status kiln_model_output_info(const kiln_model *model, int32_t index, kiln_tensor_info *info);
/* Bytes of intermediate memory each context allocates (planned at compile time). */
size_t kiln_model_arena_bytes(const kiln_model *model);
/* Bytes of constant data (weights) the model reads on each run; 0 if the
   library does not say (compiled before kiln recorded it). */
size_t kiln_model_weight_bytes(const kiln_model *model);
/* The target the library was compiled for ("x86_64", "aarch64", "opencl"). */
const char *kiln_model_target(const kiln_model *model);
/* The device an OpenCL model runs on, as "P:D name (type, version)"; "" for
 * CPU models. */
const char *kiln_model_device(const kiln_model *model);

/* Kernels (fusion blocks) of the model, and a label for each, e.g.
 * "Conv+Relu 1x64x56x56" (null when index is out of range). */
int32_t kiln_model_num_kernels(const kiln_model *model);
const char *kiln_model_kernel_label(const kiln_model *model, int32_t index);
/* Floating-point operations of one run of kernel `index` (0 if unknown). */
double kiln_model_kernel_flops(const kiln_model *model, int32_t index);

kiln_status kiln_context_create(kiln_model *model, kiln_context **out);
void kiln_context_destroy(kiln_context *ctx);
/* Threads used by kernels of this context (>= 1; default 1). */
kiln_status kiln_context_set_threads(kiln_context *ctx, int32_t threads);

/* Per-kernel timing (off by default): when on, each kiln_run records the
 * wall time of every kernel, read back with kiln_context_kernel_times
 * (count = kiln_model_num_kernels; milliseconds of the last profiled run). */
kiln_status kiln_context_set_profiling(kiln_context *ctx, int32_t on);
kiln_status kiln_context_kernel_times(const kiln_context *ctx, double *ms, size_t count);

/* Runs the model: inputs and outputs in the model's order. */
kiln_status kiln_run(kiln_context *ctx, const kiln_tensor *inputs, size_t num_inputs,
                     kiln_tensor *outputs, size_t num_outputs);

/* OpenCL device for the OpenCL models opened afterwards, process-wide; it
 * takes precedence over KILN_OPENCL_DEVICE. spec is "P:D" (platform and
 * device index, as kiln_opencl_list_devices numbers them) or part of a
 * device name (case-insensitive); null or "" goes back to the default.
 * KILN_ERR_DEVICE when no device matches (the message lists the devices)
 * or OpenCL is not available. */
kiln_status kiln_opencl_select_device(const char *spec);
/* Writes the OpenCL devices, one line each: "P:D name (type, version)".
 * KILN_ERR_DEVICE when there is no ICD loader or no device;
 * KILN_ERR_BUFFER when the text (with its NUL) does not fit in size bytes
 * (the message gives the size needed; buf then holds what fits). */
kiln_status kiln_opencl_list_devices(char *buf, size_t size);

#ifdef __cplusplus
}
#endif
#endif
