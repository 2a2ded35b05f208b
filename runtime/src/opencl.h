// The OpenCL backend of the runtime (opencl.cpp), as runtime.cpp sees it.
//
// An OpenCL model library (meta "target opencl") exports, besides
// kiln_model_abi_version and kiln_model_meta, and instead of kiln_model_run:
//   const char kiln_opencl_source[];          OpenCL C 1.2, kernels kiln_k<i>
//   const int64_t kiln_opencl_launches[];     n, then n x {block, dims, g0, g1, g2}
//   const unsigned char kiln_model_weights[]; the constant weights
//   const int64_t kiln_opencl_weights_bytes;
// Every kernel takes (arena, weights, inputs..., outputs...), all
// __global uchar *. Launch i runs kiln_k<i> on an in-order queue.
//
// The ICD loader (libOpenCL.so.1) is dlopened the first time an OpenCL
// model is opened or devices are listed, never linked: applications that
// run CPU models only do not need it. Without <CL/cl.h> at build time
// (KILN_HAVE_OPENCL undefined) every entry point answers KILN_ERR_DEVICE.
//
// Errors: the functions return a status and fill `err` with the message.
#ifndef KILN_RUNTIME_OPENCL_H
#define KILN_RUNTIME_OPENCL_H

#include "kiln/runtime.h"

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

namespace kiln::rt::opencl {

/// What the backend needs from the model's metadata.
struct ModelDesc {
  size_t arenaBytes = 0;
  std::vector<size_t> inputBytes, outputBytes;
  size_t numKernels = 0; // labels in the meta; launch blocks index them
};

struct Model;   // device, cl_context, program, weights, launch table
struct Context; // queue, kernels, arena/input/output buffers

struct ModelDeleter { void operator()(Model *m) const; };
struct ContextDeleter { void operator()(Context *c) const; };
using ModelPtr = std::unique_ptr<Model, ModelDeleter>;
using ContextPtr = std::unique_ptr<Context, ContextDeleter>;

/// Sets up the OpenCL part of the library `handle` (dlopened from `path`):
/// picks the device, builds (or loads from the cache) the program, uploads
/// the weights and checks the launch table.
kiln_status openModel(void *handle, const char *path, const ModelDesc &desc, ModelPtr &out,
                      std::string &err);
/// "P:D name (type, version)" of the device the model runs on.
const char *deviceDescription(const Model *m);

kiln_status createContext(Model *m, ContextPtr &out, std::string &err);
/// Copies the inputs in, runs every launch, copies the outputs out (the
/// tensors were checked by the caller). With kernelMs (one per kernel
/// label, zeroed), adds each launch's device time to its block.
kiln_status run(Context *c, const kiln_tensor *inputs, kiln_tensor *outputs, double *kernelMs,
                std::string &err);

/// kiln_opencl_select_device and kiln_opencl_list_devices.
kiln_status selectDevice(const char *spec, std::string &err);
kiln_status listDevices(std::string &out, std::string &err);

#ifndef KILN_HAVE_OPENCL
constexpr const char *kNoOpenCL = "this kiln runtime was built without OpenCL support";
inline void ModelDeleter::operator()(Model *) const {}
inline void ContextDeleter::operator()(Context *) const {}
inline kiln_status openModel(void *, const char *path, const ModelDesc &, ModelPtr &, std::string &err) {
  err = std::string("'") + path + "' is an OpenCL model, but " + kNoOpenCL;
  return KILN_ERR_DEVICE;
}
inline const char *deviceDescription(const Model *) { return ""; }
inline kiln_status createContext(Model *, ContextPtr &, std::string &err) {
  err = kNoOpenCL;
  return KILN_ERR_DEVICE;
}
inline kiln_status run(Context *, const kiln_tensor *, kiln_tensor *, double *, std::string &err) {
  err = kNoOpenCL;
  return KILN_ERR_DEVICE;
}
inline kiln_status selectDevice(const char *, std::string &err) {
  err = kNoOpenCL;
  return KILN_ERR_DEVICE;
}
inline kiln_status listDevices(std::string &, std::string &err) {
  err = kNoOpenCL;
  return KILN_ERR_DEVICE;
}
#endif

} // namespace kiln::rt::opencl

#endif
