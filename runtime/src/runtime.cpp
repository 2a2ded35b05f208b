// The kiln runtime C API: opening compiled libraries, contexts, running.
//
// A compiled library exports:
//   uint32_t kiln_model_abi_version;           must equal KILN_MODEL_ABI_VERSION
//   const char kiln_model_meta[];              text, see parseMeta below
//   void kiln_model_run(void **buffers);       {arena, inputs..., outputs...}
// except OpenCL libraries (meta "target opencl"), which export a program and
// a launch table instead of kiln_model_run: see opencl.h.
#include "kiln/runtime.h"
#include "kernels.h"
#include "opencl.h"
#include "simd.h"
#include "thread_pool.h"

#include <dlfcn.h>
#include <link.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

namespace {

thread_local std::string lastError;

kiln_status setError(kiln_status s, const char *fmt, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  lastError = buf;
  return s;
}

/// For messages that may be longer than setError's buffer (build logs).
kiln_status setErrorText(kiln_status s, std::string text) {
  lastError = std::move(text);
  return s;
}

struct TensorDesc {
  std::string name;
  std::vector<int64_t> shape;
  kiln_dtype dtype = KILN_F32;
  size_t bytes() const {
    size_t n = kiln_dtype_size(dtype);
    for (int64_t d : shape) n *= (size_t)d;
    return n;
  }
};

std::string unescape(const std::string &s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() + 0 && i + 2 <= s.size() - 1) {
      out += (char)std::strtol(s.substr(i + 1, 2).c_str(), nullptr, 16);
      i += 2;
    } else if (s[i] != '%') {
      out += s[i];
    }
  }
  return out;
}

#if defined(__x86_64__)
const char *kHostArch = "x86_64";
#elif defined(__aarch64__)
const char *kHostArch = "aarch64";
#else
const char *kHostArch = "unknown";
#endif

} // namespace

/// fn(), with an allocation failure turned into KILN_ERR_OUT_OF_MEMORY.
template <class Fn> kiln_status noThrow(std::string &err, Fn &&fn) {
  try {
    return fn();
  } catch (const std::bad_alloc &) {
    err = "out of memory";
    return KILN_ERR_OUT_OF_MEMORY;
  }
}

struct kiln_model {
  void *handle = nullptr;
  void (*run)(void **) = nullptr;
  kiln::rt::opencl::ModelPtr ocl; // OpenCL models only (then run is null)
  std::string target;
  size_t arenaBytes = 0;
  size_t weightBytes = 0; // constants read on each run (0 if the library does not say)
  // Where the library is mapped (its PT_LOAD segments; hi 0: unknown):
  // the constant weights lie there.
  uintptr_t mappedLo = 0, mappedHi = 0;
  std::vector<TensorDesc> inputs, outputs;
  std::vector<std::string> kernels; // labels, in kernel order
  std::vector<double> kernelFlops;  // floating-point operations of each kernel
  ~kiln_model() {
    ocl.reset();
    if (handle) dlclose(handle);
  }
};

struct kiln_context {
  kiln_model *model = nullptr;
  kiln::rt::opencl::ContextPtr ocl; // OpenCL models only (then arena is null)
  void *arena = nullptr;
  std::unique_ptr<kiln::rt::ThreadPool> pool;
  int threads = 1;
  std::vector<void *> buffers; // {arena, inputs..., outputs...}, sized at creation
  std::atomic<bool> busy{false};
  bool profiling = false;
  std::vector<double> kernelMs; // of the last profiled run
  ~kiln_context() { kiln::rt::freePages(arena); }
};

static bool parseMeta(const char *text, kiln_model *m, std::string &err) {
  std::istringstream in(text);
  std::string line;
  if (!std::getline(in, line) || line != "kiln-model 1") {
    err = "unknown metadata format";
    return false;
  }
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    std::string kind;
    ls >> kind;
    if (kind == "target") {
      ls >> m->target;
    } else if (kind == "arena") {
      // A size the allocator can be asked for without wrapping when rounded.
      if (!(ls >> m->arenaBytes) || m->arenaBytes > SIZE_MAX / 2) {
        err = "bad arena size in '" + line + "'";
        return false;
      }
    } else if (kind == "weights") {
      if (!(ls >> m->weightBytes)) {
        err = "bad weight size in '" + line + "'";
        return false;
      }
    } else if (kind == "input" || kind == "output") {
      TensorDesc t;
      std::string name, dtype;
      int rank = -1;
      ls >> name >> dtype >> rank;
      static const std::pair<const char *, kiln_dtype> kDtypes[] = {
          {"f32", KILN_F32}, {"f64", KILN_F64}, {"f16", KILN_F16}, {"bf16", KILN_BF16},
          {"i64", KILN_I64}, {"i32", KILN_I32}, {"i16", KILN_I16}, {"i8", KILN_I8},
          {"u64", KILN_U64}, {"u32", KILN_U32}, {"u16", KILN_U16}, {"u8", KILN_U8},
          {"bool", KILN_BOOL}, {"f8e4m3fn", KILN_F8E4M3FN}, {"f8e4m3fnuz", KILN_F8E4M3FNUZ},
          {"f8e5m2", KILN_F8E5M2}, {"f8e5m2fnuz", KILN_F8E5M2FNUZ}};
      bool known = false;
      for (auto &[n, d] : kDtypes)
        if (dtype == n) { t.dtype = d; known = true; }
      if (!known || rank < 0 || rank > 16) {
        err = "bad tensor line '" + line + "'";
        return false;
      }
      t.name = unescape(name);
      for (int i = 0; i < rank; ++i) {
        int64_t d = -1;
        ls >> d;
        if (d < 0) {
          err = "bad shape in '" + line + "'";
          return false;
        }
        t.shape.push_back(d);
      }
      // The tensor's byte size must be computable without overflow, so the
      // buffer-size checks in kiln_run cannot wrap.
      size_t bytes = kiln_dtype_size(t.dtype);
      for (int64_t d : t.shape) {
        if (d != 0 && bytes > (SIZE_MAX / 2) / (size_t)d) {
          err = "tensor too large in '" + line + "'";
          return false;
        }
        bytes *= (size_t)d;
      }
      (kind == "input" ? m->inputs : m->outputs).push_back(t);
    } else if (kind == "kernel") {
      std::string label;
      if (!(ls >> label) || m->kernels.size() >= (1u << 20)) {
        err = "bad kernel line '" + line + "'";
        return false;
      }
      m->kernels.push_back(unescape(label));
      double flops = 0;
      if (!(ls >> flops) || flops < 0) flops = 0; // optional
      m->kernelFlops.push_back(flops);
    } else if (!kind.empty()) {
      err = "unknown metadata key '" + kind + "'";
      return false;
    }
  }
  return true;
}

namespace {
/// Per-kernel timing of the kiln_run on this thread, when its context
/// profiles (kiln_context_set_profiling); null otherwise.
struct KernelTimer {
  double *ms;
  size_t count;
  std::chrono::steady_clock::time_point start;
};
thread_local KernelTimer *kernelTimer = nullptr;
} // namespace

extern "C" {

// Called by compiled models around every kernel call (a thread-local test
// when not profiling). Kernels run on the thread that called kiln_run.
void kiln_rt_kernel_begin(int64_t) {
  if (KernelTimer *t = kernelTimer) t->start = std::chrono::steady_clock::now();
}
void kiln_rt_kernel_end(int64_t id) {
  if (KernelTimer *t = kernelTimer)
    if (id >= 0 && (size_t)id < t->count)
      t->ms[id] += std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t->start).count();
}

const char *kiln_last_error(void) { return lastError.c_str(); }

size_t kiln_dtype_size(kiln_dtype d) {
  switch (d) {
  case KILN_F32: case KILN_I32: case KILN_U32: return 4;
  case KILN_F64: case KILN_I64: case KILN_U64: return 8;
  case KILN_F16: case KILN_BF16: case KILN_I16: case KILN_U16: return 2;
  case KILN_U8: case KILN_I8: case KILN_BOOL: return 1;
  case KILN_F8E4M3FN: case KILN_F8E4M3FNUZ: case KILN_F8E5M2: case KILN_F8E5M2FNUZ: return 1;
  default: return 0;
  }
}

const char *kiln_status_string(kiln_status s) {
  switch (s) {
  case KILN_OK: return "ok";
  case KILN_ERR_INVALID_ARGUMENT: return "invalid argument";
  case KILN_ERR_IO: return "I/O error";
  case KILN_ERR_ABI: return "incompatible library";
  case KILN_ERR_SHAPE: return "shape mismatch";
  case KILN_ERR_DTYPE: return "dtype mismatch";
  case KILN_ERR_BUFFER: return "buffer too small";
  case KILN_ERR_OUT_OF_MEMORY: return "out of memory";
  case KILN_ERR_BUSY: return "context busy";
  case KILN_ERR_INTERNAL: return "internal error";
  case KILN_ERR_DEVICE: return "OpenCL/device error";
  default: return "unknown status";
  }
}

/// The address range [lo, hi) of the loaded object that holds `sym`: the
/// span of its PT_LOAD segments ({0, 0} if not found).
static std::pair<uintptr_t, uintptr_t> mappedRange(const void *sym) {
  Dl_info info;
  if (!dladdr(sym, &info) || !info.dli_fbase) return {0, 0};
  struct Find {
    uintptr_t at, lo = 0, hi = 0;
  } find{reinterpret_cast<uintptr_t>(sym)};
  dl_iterate_phdr(
      [](dl_phdr_info *pi, size_t, void *data) -> int {
        auto &f = *static_cast<Find *>(data);
        uintptr_t lo = UINTPTR_MAX, hi = 0;
        for (int i = 0; i < pi->dlpi_phnum; ++i)
          if (pi->dlpi_phdr[i].p_type == PT_LOAD) {
            const uintptr_t a = pi->dlpi_addr + pi->dlpi_phdr[i].p_vaddr;
            lo = std::min(lo, a), hi = std::max<uintptr_t>(hi, a + pi->dlpi_phdr[i].p_memsz);
          }
        if (f.at < lo || f.at >= hi) return 0; // another object
        f.lo = lo, f.hi = hi;
        return 1;
      },
      &find);
  return {find.lo, find.hi};
}

kiln_status kiln_model_open(const char *path, kiln_model **out) {
  if (!path || !out) return setError(KILN_ERR_INVALID_ARGUMENT, "kiln_model_open: null argument");
  *out = nullptr;
  // A path, never a library name: dlopen would search the library path
  // for "model.so" instead of opening the file in this directory.
  std::string file = std::strchr(path, '/') ? path : std::string("./") + path;
  void *h = dlopen(file.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!h) return setError(KILN_ERR_IO, "cannot load '%s': %s", path, dlerror());
  auto *abi = (const uint32_t *)dlsym(h, "kiln_model_abi_version");
  auto *meta = (const char *)dlsym(h, "kiln_model_meta");
  // OpenCL libraries have no kiln_model_run: that is checked below, once
  // the metadata says which kind of library this is.
  auto run = (void (*)(void **))dlsym(h, "kiln_model_run");
  if (!abi || !meta) {
    dlclose(h);
    return setError(KILN_ERR_ABI, "'%s' is not a kiln model library", path);
  }
  if (*abi != KILN_MODEL_ABI_VERSION) {
    uint32_t v = *abi;
    dlclose(h);
    return setError(KILN_ERR_ABI, "'%s' was built for model ABI %u; this runtime supports %u",
                    path, v, (unsigned)KILN_MODEL_ABI_VERSION);
  }
  auto *m = new (std::nothrow) kiln_model;
  if (!m) {
    dlclose(h);
    return setError(KILN_ERR_OUT_OF_MEMORY, "out of memory");
  }
  m->handle = h;
  m->run = run;
  std::tie(m->mappedLo, m->mappedHi) = mappedRange(meta);
  std::string err;
  if (!parseMeta(meta, m, err)) {
    delete m;
    return setError(KILN_ERR_ABI, "'%s': bad model metadata: %s", path, err.c_str());
  }
  if (m->target == "opencl") {
    kiln::rt::opencl::ModelDesc desc;
    desc.arenaBytes = m->arenaBytes;
    for (const TensorDesc &t : m->inputs) desc.inputBytes.push_back(t.bytes());
    for (const TensorDesc &t : m->outputs) desc.outputBytes.push_back(t.bytes());
    desc.numKernels = m->kernels.size();
    kiln_status s = noThrow(err, [&] { return kiln::rt::opencl::openModel(h, path, desc, m->ocl, err); });
    if (s != KILN_OK) {
      delete m;
      return setErrorText(s, err);
    }
    *out = m;
    return KILN_OK;
  }
  if (!run) {
    delete m;
    return setError(KILN_ERR_ABI, "'%s' is not a kiln model library", path);
  }
  if (m->target != kHostArch) {
    std::string t = m->target;
    delete m;
    return setError(KILN_ERR_ABI, "'%s' was compiled for %s; this runtime is %s", path, t.c_str(),
                    kHostArch);
  }
  *out = m;
  return KILN_OK;
}

void kiln_model_close(kiln_model *m) {
  if (!m) return;
  // Copies of its weights, keyed by address: dropped before the library
  // goes, so that one loaded there next never finds them (other models'
  // copies stay; all go if the library's range is unknown).
  if (m->mappedHi)
    kiln::rt::forgetGroupedWeights(reinterpret_cast<const void *>(m->mappedLo),
                                   reinterpret_cast<const void *>(m->mappedHi));
  else
    kiln::rt::forgetGroupedWeights();
  delete m;
}

int32_t kiln_model_num_inputs(const kiln_model *m) { return m ? (int32_t)m->inputs.size() : 0; }
int32_t kiln_model_num_outputs(const kiln_model *m) { return m ? (int32_t)m->outputs.size() : 0; }
size_t kiln_model_arena_bytes(const kiln_model *m) { return m ? m->arenaBytes : 0; }
size_t kiln_model_weight_bytes(const kiln_model *m) { return m ? m->weightBytes : 0; }
const char *kiln_model_target(const kiln_model *m) { return m ? m->target.c_str() : ""; }
const char *kiln_model_device(const kiln_model *m) {
  return m && m->ocl ? kiln::rt::opencl::deviceDescription(m->ocl.get()) : "";
}

static kiln_status info(const std::vector<TensorDesc> *list, int32_t i, kiln_tensor_info *out) {
  if (!list || !out) return setError(KILN_ERR_INVALID_ARGUMENT, "null argument");
  if (i < 0 || i >= (int32_t)list->size())
    return setError(KILN_ERR_INVALID_ARGUMENT, "index %d out of range (%zu)", i, list->size());
  const TensorDesc &t = (*list)[i];
  out->name = t.name.c_str();
  out->dtype = t.dtype;
  out->rank = (int32_t)t.shape.size();
  out->shape = t.shape.data();
  out->size_bytes = t.bytes();
  return KILN_OK;
}
kiln_status kiln_model_input_info(const kiln_model *m, int32_t i, kiln_tensor_info *out) {
  return info(m ? &m->inputs : nullptr, i, out);
}
kiln_status kiln_model_output_info(const kiln_model *m, int32_t i, kiln_tensor_info *out) {
  return info(m ? &m->outputs : nullptr, i, out);
}

kiln_status kiln_context_create(kiln_model *m, kiln_context **out) {
  if (!m || !out) return setError(KILN_ERR_INVALID_ARGUMENT, "kiln_context_create: null argument");
  *out = nullptr;
  auto *c = new (std::nothrow) kiln_context;
  if (!c) return setError(KILN_ERR_OUT_OF_MEMORY, "out of memory");
  c->model = m;
  if (m->ocl) {
    std::string err;
    kiln_status s = noThrow(err, [&] { return kiln::rt::opencl::createContext(m->ocl.get(), c->ocl, err); });
    if (s != KILN_OK) {
      delete c;
      return setErrorText(s, err);
    }
    *out = c;
    return KILN_OK;
  }
  c->buffers.assign(1 + m->inputs.size() + m->outputs.size(), nullptr);
  size_t bytes = (m->arenaBytes + 63) / 64 * 64;
  // (Huge pages from 1 MiB: see allocatePages.)
  try {
    c->arena = kiln::rt::allocatePages(bytes ? bytes : 64);
  } catch (const std::bad_alloc &) {
  }
  if (!c->arena) {
    delete c;
    return setError(KILN_ERR_OUT_OF_MEMORY, "cannot allocate the %zu-byte arena", bytes);
  }
  *out = c;
  return KILN_OK;
}

void kiln_context_destroy(kiln_context *c) { delete c; }

int32_t kiln_model_num_kernels(const kiln_model *m) { return m ? (int32_t)m->kernels.size() : 0; }
const char *kiln_model_kernel_label(const kiln_model *m, int32_t i) {
  if (!m || i < 0 || i >= (int32_t)m->kernels.size()) return nullptr;
  return m->kernels[i].c_str();
}

double kiln_model_kernel_flops(const kiln_model *m, int32_t i) {
  if (!m || i < 0 || i >= (int32_t)m->kernelFlops.size()) return 0;
  return m->kernelFlops[i];
}

kiln_status kiln_context_set_profiling(kiln_context *c, int32_t on) {
  if (!c) return setError(KILN_ERR_INVALID_ARGUMENT, "kiln_context_set_profiling: null context");
  if (c->busy.load()) return setError(KILN_ERR_BUSY, "kiln_context_set_profiling: context is running");
  c->profiling = on != 0;
  return KILN_OK;
}

kiln_status kiln_context_kernel_times(const kiln_context *c, double *ms, size_t count) {
  if (!c || (!ms && count)) return setError(KILN_ERR_INVALID_ARGUMENT, "kiln_context_kernel_times: null argument");
  size_t n = c->model->kernels.size();
  if (count != n)
    return setError(KILN_ERR_INVALID_ARGUMENT, "kiln_context_kernel_times: model has %zu kernels, got room for %zu", n, count);
  if (c->kernelMs.size() != n)
    return setError(KILN_ERR_INVALID_ARGUMENT, "kiln_context_kernel_times: no profiled run yet (kiln_context_set_profiling)");
  std::copy(c->kernelMs.begin(), c->kernelMs.end(), ms);
  return KILN_OK;
}

kiln_status kiln_context_set_threads(kiln_context *c, int32_t threads) {
  if (!c) return setError(KILN_ERR_INVALID_ARGUMENT, "null context");
  if (threads < 1 || threads > 1024)
    return setError(KILN_ERR_INVALID_ARGUMENT, "threads must be in 1..1024 (got %d)", threads);
  if (c->busy.load()) return setError(KILN_ERR_BUSY, "context is running");
  c->threads = threads;
  c->pool.reset();
  return KILN_OK;
}

static kiln_status checkTensor(const kiln_tensor &t, const TensorDesc &d, const char *kind, size_t i) {
  if (!t.data) return setError(KILN_ERR_INVALID_ARGUMENT, "%s %zu ('%s'): null data", kind, i, d.name.c_str());
  if (t.dtype != d.dtype)
    return setError(KILN_ERR_DTYPE, "%s %zu ('%s'): dtype %d, expected %d", kind, i, d.name.c_str(),
                    (int)t.dtype, (int)d.dtype);
  bool same = t.rank == (int32_t)d.shape.size() && (t.rank == 0 || t.shape);
  for (int32_t k = 0; same && k < t.rank; ++k) same = t.shape[k] == d.shape[k];
  if (!same) {
    std::string want, got;
    for (int64_t x : d.shape) want += (want.empty() ? "" : "x") + std::to_string(x);
    for (int32_t k = 0; t.shape && k < t.rank && k < 16; ++k)
      got += (got.empty() ? "" : "x") + std::to_string(t.shape[k]);
    return setError(KILN_ERR_SHAPE, "%s %zu ('%s'): shape [%s], expected [%s]", kind, i,
                    d.name.c_str(), got.c_str(), want.c_str());
  }
  if (t.size_bytes < d.bytes())
    return setError(KILN_ERR_BUFFER, "%s %zu ('%s'): buffer has %zu bytes, needs %zu", kind, i,
                    d.name.c_str(), t.size_bytes, d.bytes());
  return KILN_OK;
}

kiln_status kiln_run(kiln_context *c, const kiln_tensor *inputs, size_t nIn, kiln_tensor *outputs,
                     size_t nOut) {
  if (!c) return setError(KILN_ERR_INVALID_ARGUMENT, "kiln_run: null context");
  kiln_model *m = c->model;
  if (nIn != m->inputs.size() || nOut != m->outputs.size())
    return setError(KILN_ERR_INVALID_ARGUMENT, "kiln_run: model has %zu inputs and %zu outputs, got %zu and %zu",
                    m->inputs.size(), m->outputs.size(), nIn, nOut);
  if ((nIn && !inputs) || (nOut && !outputs))
    return setError(KILN_ERR_INVALID_ARGUMENT, "kiln_run: null tensor array");
  for (size_t i = 0; i < nIn; ++i)
    if (kiln_status s = checkTensor(inputs[i], m->inputs[i], "input", i)) return s;
  for (size_t i = 0; i < nOut; ++i)
    if (kiln_status s = checkTensor(outputs[i], m->outputs[i], "output", i)) return s;
  bool expected = false;
  if (!c->busy.compare_exchange_strong(expected, true))
    return setError(KILN_ERR_BUSY, "kiln_run: context is already running on another thread");
  if (c->ocl) {
    std::string err;
    kiln_status s;
    try {
      if (c->profiling) c->kernelMs.assign(m->kernels.size(), 0.0);
      s = kiln::rt::opencl::run(c->ocl.get(), inputs, outputs, c->profiling ? c->kernelMs.data() : nullptr, err);
    } catch (const std::bad_alloc &) {
      s = KILN_ERR_OUT_OF_MEMORY, err = "out of memory";
    }
    if (s != KILN_OK && c->profiling) c->kernelMs.clear(); // no profiled run to report
    c->busy.store(false);
    return s == KILN_OK ? KILN_OK : setErrorText(s, "kiln_run: " + err);
  }
  if (c->threads > 1 && !c->pool) {
    c->pool.reset(new (std::nothrow) kiln::rt::ThreadPool(c->threads));
  }
  void **buffers = c->buffers.data();
  buffers[0] = c->arena;
  for (size_t i = 0; i < nIn; ++i) buffers[1 + i] = inputs[i].data;
  for (size_t i = 0; i < nOut; ++i) buffers[1 + nIn + i] = outputs[i].data;
  kiln::rt::ThreadPool *prev = kiln::rt::currentPool();
  kiln::rt::setCurrentPool(c->pool.get());
  const bool prevStreamed = kiln::rt::setWeightsStreamed(kiln::rt::weightsOutgrowCache(m->weightBytes));
  KernelTimer timer{nullptr, 0, {}};
  if (c->profiling) {
    c->kernelMs.assign(m->kernels.size(), 0.0);
    timer = {c->kernelMs.data(), c->kernelMs.size(), {}};
    kernelTimer = &timer;
  }
  m->run(buffers);
  kernelTimer = nullptr;
  kiln::rt::setWeightsStreamed(prevStreamed);
  kiln::rt::setCurrentPool(prev);
  c->busy.store(false);
  return KILN_OK;
}

kiln_status kiln_opencl_select_device(const char *spec) {
  std::string err;
  kiln_status s = kiln::rt::opencl::selectDevice(spec, err);
  return s == KILN_OK ? KILN_OK : setErrorText(s, "kiln_opencl_select_device: " + err);
}

kiln_status kiln_opencl_list_devices(char *buf, size_t size) {
  if (!buf && size) return setError(KILN_ERR_INVALID_ARGUMENT, "kiln_opencl_list_devices: null buffer");
  std::string text, err;
  if (kiln_status s = kiln::rt::opencl::listDevices(text, err))
    return setErrorText(s, "kiln_opencl_list_devices: " + err);
  if (size) {
    size_t n = std::min(text.size(), size - 1);
    std::memcpy(buf, text.data(), n);
    buf[n] = '\0';
  }
  if (text.size() >= size)
    return setError(KILN_ERR_BUFFER, "kiln_opencl_list_devices: the list needs %zu bytes, got %zu",
                    text.size() + 1, size);
  return KILN_OK;
}

} // extern "C"
