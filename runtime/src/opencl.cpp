// The OpenCL backend of the runtime: see opencl.h for the library contract.
//
// Pieces, in order: the ICD loader bound with dlsym (Api), error names,
// RAII handles (Ref), device enumeration and selection, the program cache,
// opening a model, contexts, running.
#define CL_TARGET_OPENCL_VERSION 120
#include <CL/cl.h>

#include "opencl.h"

#include <dlfcn.h>
#include <fcntl.h>
#ifdef __GLIBC__
#include <link.h>
#endif
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cctype>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

namespace kiln::rt::opencl {
namespace {

//===----------------------------------------------------------------------===//
// The ICD loader, opened on first use and never closed (drivers keep threads).
//===----------------------------------------------------------------------===//

#define KILN_CL_FUNCTIONS(X)                                                                       \
  X(clGetPlatformIDs) X(clGetPlatformInfo) X(clGetDeviceIDs) X(clGetDeviceInfo)                    \
  X(clCreateContext) X(clReleaseContext) X(clCreateCommandQueue) X(clReleaseCommandQueue)          \
  X(clCreateProgramWithSource) X(clCreateProgramWithBinary) X(clBuildProgram)                      \
  X(clGetProgramBuildInfo) X(clGetProgramInfo) X(clReleaseProgram) X(clCreateKernel)               \
  X(clGetKernelInfo) X(clReleaseKernel) X(clSetKernelArg) X(clCreateBuffer) X(clReleaseMemObject)  \
  X(clEnqueueWriteBuffer) X(clEnqueueReadBuffer) X(clEnqueueNDRangeKernel) X(clFinish)             \
  X(clGetEventProfilingInfo) X(clReleaseEvent) X(clGetKernelWorkGroupInfo)

struct Api {
#define KILN_CL_MEMBER(name) decltype(&::name) name = nullptr;
  KILN_CL_FUNCTIONS(KILN_CL_MEMBER)
#undef KILN_CL_MEMBER
};

Api cl; // filled once by loadApi; used only after it succeeded

/// Loads the ICD loader and every function the backend uses.
bool loadApi(std::string &err) {
  static std::once_flag once;
  static std::string loadError;
  static bool ok = false;
  std::call_once(once, [] {
    void *h = nullptr;
    std::string why;
    for (const char *lib : {"libOpenCL.so.1", "libOpenCL.so"}) {
      if ((h = dlopen(lib, RTLD_NOW | RTLD_LOCAL))) break;
      const char *e = dlerror();
      why += std::string(why.empty() ? "" : "; ") + (e ? e : lib);
    }
    if (!h) {
      loadError = "no OpenCL ICD loader: cannot load libOpenCL.so.1 (" + why +
                  "); install one, e.g. Debian's ocl-icd-libopencl1 with a driver such as pocl-opencl-icd";
      return;
    }
#define KILN_CL_BIND(name)                                                                         \
  if (!(cl.name = (decltype(cl.name))dlsym(h, #name))) {                                           \
    loadError = "the OpenCL ICD loader lacks " #name;                                              \
    return;                                                                                        \
  }
    KILN_CL_FUNCTIONS(KILN_CL_BIND)
#undef KILN_CL_BIND
    ok = true;
  });
  if (!ok) err = loadError;
  return ok;
}

//===----------------------------------------------------------------------===//
// Error codes
//===----------------------------------------------------------------------===//

const char *clErrorName(cl_int e) {
  switch (e) {
#define C(x) case x: return #x;
    C(CL_SUCCESS) C(CL_DEVICE_NOT_FOUND) C(CL_DEVICE_NOT_AVAILABLE) C(CL_COMPILER_NOT_AVAILABLE)
    C(CL_MEM_OBJECT_ALLOCATION_FAILURE) C(CL_OUT_OF_RESOURCES) C(CL_OUT_OF_HOST_MEMORY)
    C(CL_PROFILING_INFO_NOT_AVAILABLE) C(CL_MEM_COPY_OVERLAP) C(CL_IMAGE_FORMAT_MISMATCH)
    C(CL_IMAGE_FORMAT_NOT_SUPPORTED) C(CL_BUILD_PROGRAM_FAILURE) C(CL_MAP_FAILURE)
    C(CL_MISALIGNED_SUB_BUFFER_OFFSET) C(CL_EXEC_STATUS_ERROR_FOR_EVENTS_IN_WAIT_LIST)
    C(CL_COMPILE_PROGRAM_FAILURE) C(CL_LINKER_NOT_AVAILABLE) C(CL_LINK_PROGRAM_FAILURE)
    C(CL_DEVICE_PARTITION_FAILED) C(CL_KERNEL_ARG_INFO_NOT_AVAILABLE) C(CL_INVALID_VALUE)
    C(CL_INVALID_DEVICE_TYPE) C(CL_INVALID_PLATFORM) C(CL_INVALID_DEVICE) C(CL_INVALID_CONTEXT)
    C(CL_INVALID_QUEUE_PROPERTIES) C(CL_INVALID_COMMAND_QUEUE) C(CL_INVALID_HOST_PTR)
    C(CL_INVALID_MEM_OBJECT) C(CL_INVALID_IMAGE_FORMAT_DESCRIPTOR) C(CL_INVALID_IMAGE_SIZE)
    C(CL_INVALID_SAMPLER) C(CL_INVALID_BINARY) C(CL_INVALID_BUILD_OPTIONS) C(CL_INVALID_PROGRAM)
    C(CL_INVALID_PROGRAM_EXECUTABLE) C(CL_INVALID_KERNEL_NAME) C(CL_INVALID_KERNEL_DEFINITION)
    C(CL_INVALID_KERNEL) C(CL_INVALID_ARG_INDEX) C(CL_INVALID_ARG_VALUE) C(CL_INVALID_ARG_SIZE)
    C(CL_INVALID_KERNEL_ARGS) C(CL_INVALID_WORK_DIMENSION) C(CL_INVALID_WORK_GROUP_SIZE)
    C(CL_INVALID_WORK_ITEM_SIZE) C(CL_INVALID_GLOBAL_OFFSET) C(CL_INVALID_EVENT_WAIT_LIST)
    C(CL_INVALID_EVENT) C(CL_INVALID_OPERATION) C(CL_INVALID_GL_OBJECT) C(CL_INVALID_BUFFER_SIZE)
    C(CL_INVALID_MIP_LEVEL) C(CL_INVALID_GLOBAL_WORK_SIZE) C(CL_INVALID_PROPERTY)
    C(CL_INVALID_IMAGE_DESCRIPTOR) C(CL_INVALID_COMPILER_OPTIONS) C(CL_INVALID_LINKER_OPTIONS)
    C(CL_INVALID_DEVICE_PARTITION_COUNT)
#undef C
  case -1001: return "CL_PLATFORM_NOT_FOUND_KHR";
  default: return nullptr;
  }
}

std::string clError(cl_int e) {
  const char *n = clErrorName(e);
  return n ? n : "OpenCL error " + std::to_string(e);
}

kiln_status statusOf(cl_int e) {
  return e == CL_OUT_OF_RESOURCES || e == CL_OUT_OF_HOST_MEMORY || e == CL_MEM_OBJECT_ALLOCATION_FAILURE
             ? KILN_ERR_OUT_OF_MEMORY
             : KILN_ERR_DEVICE;
}

/// Fills err with "what: CL_NAME" and returns the matching status.
kiln_status clFail(std::string &err, const std::string &what, cl_int e) {
  err = what + ": " + clError(e);
  return statusOf(e);
}

//===----------------------------------------------------------------------===//
// RAII handles
//===----------------------------------------------------------------------===//

template <typename T> struct Releaser;
#define KILN_CL_RELEASER(T, fn)                                                                    \
  template <> struct Releaser<T> {                                                                 \
    static void release(T h) { cl.fn(h); }                                                         \
  };
KILN_CL_RELEASER(cl_context, clReleaseContext)
KILN_CL_RELEASER(cl_command_queue, clReleaseCommandQueue)
KILN_CL_RELEASER(cl_program, clReleaseProgram)
KILN_CL_RELEASER(cl_kernel, clReleaseKernel)
KILN_CL_RELEASER(cl_mem, clReleaseMemObject)
KILN_CL_RELEASER(cl_event, clReleaseEvent)
#undef KILN_CL_RELEASER

/// Owns one reference to an OpenCL object.
template <typename T> class Ref {
public:
  Ref() = default;
  explicit Ref(T h) : h_(h) {}
  Ref(Ref &&o) noexcept : h_(o.h_) { o.h_ = nullptr; }
  Ref &operator=(Ref &&o) noexcept {
    if (this != &o) {
      reset();
      h_ = o.h_;
      o.h_ = nullptr;
    }
    return *this;
  }
  Ref(const Ref &) = delete;
  Ref &operator=(const Ref &) = delete;
  ~Ref() { reset(); }
  void reset(T h = nullptr) {
    if (h_) Releaser<T>::release(h_);
    h_ = h;
  }
  T get() const { return h_; }
  T *out() { // for APIs that return the object through a pointer
    reset();
    return &h_;
  }

private:
  T h_ = nullptr;
};

//===----------------------------------------------------------------------===//
// Devices
//===----------------------------------------------------------------------===//

struct Device {
  cl_device_id id = nullptr;
  unsigned platform = 0, index = 0; // "P:D"
  cl_device_type type = 0;
  std::string name, version, driver, platformName, platformVersion;
  cl_ulong maxAlloc = 0;

  std::string description() const {
    const char *t = (type & CL_DEVICE_TYPE_GPU)           ? "GPU"
                    : (type & CL_DEVICE_TYPE_CPU)         ? "CPU"
                    : (type & CL_DEVICE_TYPE_ACCELERATOR) ? "accelerator"
                                                          : "other";
    return std::to_string(platform) + ":" + std::to_string(index) + " " + name + " (" + t + ", " +
           version + ")";
  }
};

template <typename Obj, typename Param, typename Fn>
std::string infoString(Fn fn, Obj obj, Param p) {
  size_t n = 0;
  if (fn(obj, p, 0, nullptr, &n) != CL_SUCCESS || n == 0) return "";
  std::string s(n, '\0');
  if (fn(obj, p, n, &s[0], nullptr) != CL_SUCCESS) return "";
  s.resize(strnlen(s.c_str(), n));
  while (!s.empty() && std::isspace((unsigned char)s.back())) s.pop_back();
  return s;
}

/// Every device of every platform, numbered as clGetPlatformIDs and
/// clGetDeviceIDs list them.
kiln_status enumerateDevices(std::vector<Device> &out, std::string &err) {
  out.clear();
  if (!loadApi(err)) return KILN_ERR_DEVICE;
  cl_uint np = 0;
  cl_int e = cl.clGetPlatformIDs(0, nullptr, &np);
  if (e == -1001 /* CL_PLATFORM_NOT_FOUND_KHR */ || (e == CL_SUCCESS && np == 0)) {
    err = "no OpenCL platforms: the ICD loader found no driver (e.g. install pocl-opencl-icd, or check "
          "/etc/OpenCL/vendors and OCL_ICD_VENDORS)";
    return KILN_ERR_DEVICE;
  }
  if (e != CL_SUCCESS) return clFail(err, "clGetPlatformIDs", e);
  std::vector<cl_platform_id> platforms(np);
  if ((e = cl.clGetPlatformIDs(np, platforms.data(), nullptr)) != CL_SUCCESS)
    return clFail(err, "clGetPlatformIDs", e);
  for (cl_uint p = 0; p < np; ++p) {
    cl_uint nd = 0;
    e = cl.clGetDeviceIDs(platforms[p], CL_DEVICE_TYPE_ALL, 0, nullptr, &nd);
    if (e == CL_DEVICE_NOT_FOUND || nd == 0) continue;
    if (e != CL_SUCCESS) return clFail(err, "clGetDeviceIDs", e);
    std::vector<cl_device_id> ids(nd);
    if ((e = cl.clGetDeviceIDs(platforms[p], CL_DEVICE_TYPE_ALL, nd, ids.data(), nullptr)) != CL_SUCCESS)
      return clFail(err, "clGetDeviceIDs", e);
    for (cl_uint d = 0; d < nd; ++d) {
      Device dev;
      dev.id = ids[d];
      dev.platform = p;
      dev.index = d;
      cl.clGetDeviceInfo(ids[d], CL_DEVICE_TYPE, sizeof dev.type, &dev.type, nullptr);
      cl.clGetDeviceInfo(ids[d], CL_DEVICE_MAX_MEM_ALLOC_SIZE, sizeof dev.maxAlloc, &dev.maxAlloc, nullptr);
      dev.name = infoString(cl.clGetDeviceInfo, ids[d], CL_DEVICE_NAME);
      dev.version = infoString(cl.clGetDeviceInfo, ids[d], CL_DEVICE_VERSION);
      dev.driver = infoString(cl.clGetDeviceInfo, ids[d], CL_DRIVER_VERSION);
      dev.platformName = infoString(cl.clGetPlatformInfo, platforms[p], CL_PLATFORM_NAME);
      dev.platformVersion = infoString(cl.clGetPlatformInfo, platforms[p], CL_PLATFORM_VERSION);
      out.push_back(std::move(dev));
    }
  }
  if (out.empty()) {
    err = "no OpenCL devices: " + std::to_string(np) + " platform(s), none with a device";
    return KILN_ERR_DEVICE;
  }
  return KILN_OK;
}

std::string lower(std::string s) {
  for (char &c : s) c = (char)std::tolower((unsigned char)c);
  return s;
}

/// The device `spec` names ("P:D" or a case-insensitive substring of the
/// name; empty: the first GPU, else the first device). `what` says where
/// the spec came from, for the message.
kiln_status findDevice(const std::vector<Device> &devs, const std::string &spec, const std::string &what,
                       const Device *&out, std::string &err) {
  out = nullptr;
  if (spec.empty()) {
    for (const Device &d : devs)
      if (d.type & CL_DEVICE_TYPE_GPU) {
        out = &d;
        return KILN_OK;
      }
    out = &devs.front();
    return KILN_OK;
  }
  // "P:D": digits, a colon, digits; anything else is part of a name.
  size_t colon = spec.find(':');
  auto digits = [](const std::string &s) {
    return !s.empty() && s.size() < 9 && s.find_first_not_of("0123456789") == std::string::npos;
  };
  bool numeric = colon != std::string::npos && digits(spec.substr(0, colon)) && digits(spec.substr(colon + 1));
  unsigned p = numeric ? (unsigned)std::stoul(spec.substr(0, colon)) : 0;
  unsigned d = numeric ? (unsigned)std::stoul(spec.substr(colon + 1)) : 0;
  for (const Device &dev : devs) {
    if (numeric ? dev.platform == p && dev.index == d
                : lower(dev.name).find(lower(spec)) != std::string::npos) {
      out = &dev;
      return KILN_OK;
    }
  }
  err = "no OpenCL device matches " + what + " '" + spec + "' (give P:D or part of a device name); devices:";
  for (const Device &dev : devs) err += "\n  " + dev.description();
  return KILN_ERR_DEVICE;
}

std::mutex selectedMutex;
bool selectedSet = false;
std::string selectedSpec;

//===----------------------------------------------------------------------===//
// Program cache: one file per (source, device, driver, options) key
//===----------------------------------------------------------------------===//

constexpr const char *kBuildOptions = ""; // OpenCL C 1.2 is the default of 1.2+ devices
constexpr char kCacheMagic[8] = {'K', 'I', 'L', 'N', 'C', 'L', 'B', '1'};

uint64_t fnv1a(uint64_t h, const void *data, size_t n) {
  const unsigned char *p = (const unsigned char *)data;
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 0x100000001b3ULL;
  return h;
}

/// 128-bit hash (two FNV-1a streams) of the length-prefixed parts, in hex.
std::string cacheKey(const std::vector<std::string> &parts) {
  uint64_t a = 0xcbf29ce484222325ULL, b = 0x84222325cbf29ce4ULL;
  for (const std::string &s : parts) {
    uint64_t n = s.size();
    a = fnv1a(fnv1a(a, &n, sizeof n), s.data(), s.size());
    b = fnv1a(fnv1a(b, s.data(), s.size()), &n, sizeof n);
  }
  char hex[33];
  std::snprintf(hex, sizeof hex, "%016llx%016llx", (unsigned long long)a, (unsigned long long)b);
  return hex;
}

std::string env(const char *name) {
  const char *v = std::getenv(name);
  return v ? v : "";
}

std::string cacheDir() {
  if (std::string d = env("KILN_CACHE_DIR"); !d.empty()) return d;
  if (std::string d = env("XDG_CACHE_HOME"); !d.empty()) return d + "/kiln/opencl";
  if (std::string d = env("HOME"); !d.empty()) return d + "/.cache/kiln/opencl";
  return "";
}

bool makeDirs(const std::string &dir) {
  for (size_t i = 1; i <= dir.size(); ++i)
    if (i == dir.size() || dir[i] == '/')
      if (mkdir(dir.substr(0, i).c_str(), 0755) != 0 && errno != EEXIST) return false;
  struct stat st;
  return stat(dir.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool readCacheFile(const std::string &path, std::vector<unsigned char> &binary) {
  FILE *f = std::fopen(path.c_str(), "rb");
  if (!f) return false;
  char magic[8];
  uint64_t size = 0;
  bool ok = std::fread(magic, 1, 8, f) == 8 && !std::memcmp(magic, kCacheMagic, 8) &&
            std::fread(&size, sizeof size, 1, f) == 1 && size > 0 && size < (1ULL << 32);
  if (ok) {
    binary.resize(size);
    ok = std::fread(binary.data(), 1, size, f) == size && std::fgetc(f) == EOF;
  }
  std::fclose(f);
  return ok;
}

/// Writes a temporary file and renames it over `path`; failures are silent
/// (a cache that cannot be written only costs a rebuild).
void writeCacheFile(const std::string &path, const std::vector<unsigned char> &binary) {
  static std::atomic<unsigned> counter{0};
  std::string tmp = path + ".tmp." + std::to_string(getpid()) + "." + std::to_string(counter++);
  FILE *f = std::fopen(tmp.c_str(), "wb");
  if (!f) return;
  uint64_t size = binary.size();
  bool ok = std::fwrite(kCacheMagic, 1, 8, f) == 8 && std::fwrite(&size, sizeof size, 1, f) == 1 &&
            std::fwrite(binary.data(), 1, binary.size(), f) == binary.size();
  ok = (std::fclose(f) == 0) && ok;
  if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0) std::remove(tmp.c_str());
}

std::string buildLog(cl_program prog, cl_device_id dev) {
  size_t n = 0;
  if (cl.clGetProgramBuildInfo(prog, dev, CL_PROGRAM_BUILD_LOG, 0, nullptr, &n) != CL_SUCCESS || n == 0)
    return "(no build log)";
  std::string log(n, '\0');
  if (cl.clGetProgramBuildInfo(prog, dev, CL_PROGRAM_BUILD_LOG, n, &log[0], nullptr) != CL_SUCCESS)
    return "(no build log)";
  log.resize(strnlen(log.c_str(), n));
  constexpr size_t kMax = 4096;
  if (log.size() > kMax) log = log.substr(0, kMax) + "\n... (" + std::to_string(log.size() - kMax) + " more bytes)";
  return log.empty() ? "(empty build log)" : log;
}

//===----------------------------------------------------------------------===//
// The library's symbols
//===----------------------------------------------------------------------===//

/// Size of the symbol at `addr` from the ELF symbol table, or SIZE_MAX when
/// the loader cannot tell.
size_t symbolSize(const void *addr) {
#ifdef __GLIBC__
  Dl_info info;
  const ElfW(Sym) *sym = nullptr;
  if (dladdr1(addr, &info, (void **)&sym, RTLD_DL_SYMENT) && sym && info.dli_saddr == addr && sym->st_size)
    return sym->st_size;
#endif
  (void)addr;
  return SIZE_MAX;
}

} // namespace

//===----------------------------------------------------------------------===//
// Models
//===----------------------------------------------------------------------===//

struct Launch {
  int64_t block;
  cl_uint dims;
  size_t global[3];
  /// > 0: one work-group of at most this many work-items (a kernel whose
  /// phases synchronise with barriers); the kernel's limit may lower it.
  size_t group = 0;
};

struct Model {
  // Declared first, released last.
  Ref<cl_context> context;
  Ref<cl_program> program;
  Ref<cl_mem> weights;
  Device device;
  std::string description;
  ModelDesc desc;
  std::vector<Launch> launches;
  bool fromCache = false;
};

void ModelDeleter::operator()(Model *m) const { delete m; }

const char *deviceDescription(const Model *m) { return m ? m->description.c_str() : ""; }

namespace {

/// Builds m.program for m.device, through the cache when it can.
kiln_status buildProgram(Model &m, const char *source, size_t sourceLen, const std::string &where,
                         std::string &err) {
  cl_device_id dev = m.device.id;
  std::string dir = cacheDir();
  std::string file;
  if (!dir.empty())
    file = dir + "/" +
           cacheKey({std::string(source, sourceLen), m.device.name, m.device.version, m.device.driver,
                     m.device.platformName, m.device.platformVersion, kBuildOptions}) +
           ".clbin";
  cl_int e = CL_SUCCESS;
  std::vector<unsigned char> binary;
  if (!file.empty() && readCacheFile(file, binary)) {
    const unsigned char *bin = binary.data();
    size_t len = binary.size();
    cl_int binStatus = CL_SUCCESS;
    Ref<cl_program> p(cl.clCreateProgramWithBinary(m.context.get(), 1, &dev, &len, &bin, &binStatus, &e));
    if (e == CL_SUCCESS && binStatus == CL_SUCCESS &&
        cl.clBuildProgram(p.get(), 1, &dev, kBuildOptions, nullptr, nullptr) == CL_SUCCESS) {
      m.program = std::move(p);
      m.fromCache = true;
      return KILN_OK;
    }
  }
  Ref<cl_program> p(cl.clCreateProgramWithSource(m.context.get(), 1, &source, &sourceLen, &e));
  if (e != CL_SUCCESS) return clFail(err, where + ": clCreateProgramWithSource", e);
  e = cl.clBuildProgram(p.get(), 1, &dev, kBuildOptions, nullptr, nullptr);
  if (e != CL_SUCCESS) {
    err = where + ": building the OpenCL program failed (" + clError(e) + "); build log:\n" +
          buildLog(p.get(), dev);
    return statusOf(e);
  }
  m.program = std::move(p);
  if (!file.empty() && makeDirs(dir)) {
    size_t len = 0;
    if (cl.clGetProgramInfo(m.program.get(), CL_PROGRAM_BINARY_SIZES, sizeof len, &len, nullptr) == CL_SUCCESS &&
        len > 0) {
      binary.assign(len, 0);
      unsigned char *bin = binary.data();
      if (cl.clGetProgramInfo(m.program.get(), CL_PROGRAM_BINARIES, sizeof bin, &bin, nullptr) == CL_SUCCESS)
        writeCacheFile(file, binary);
    }
  }
  return KILN_OK;
}

/// A buffer of max(1, bytes) bytes (zero-size buffers are invalid).
kiln_status createBuffer(const Model &m, cl_mem_flags flags, size_t bytes, const void *init, Ref<cl_mem> &out,
                         const std::string &what, std::string &err) {
  size_t size = bytes ? bytes : 1;
  if (m.device.maxAlloc && size > m.device.maxAlloc) {
    err = what + " needs " + std::to_string(size) + " bytes; " + m.device.name + " allocates at most " +
          std::to_string(m.device.maxAlloc) + " bytes per buffer";
    return KILN_ERR_OUT_OF_MEMORY;
  }
  cl_int e = CL_SUCCESS;
  out.reset(cl.clCreateBuffer(m.context.get(), bytes && init ? flags | CL_MEM_COPY_HOST_PTR : flags, size,
                              bytes ? const_cast<void *>(init) : nullptr, &e));
  if (e != CL_SUCCESS) return clFail(err, "allocating " + what + " (" + std::to_string(size) + " bytes)", e);
  return KILN_OK;
}

} // namespace

kiln_status openModel(void *handle, const char *path, const ModelDesc &desc, ModelPtr &out, std::string &err) {
  out.reset();
  std::string where = std::string("'") + path + "'";
  // The library's OpenCL symbols, checked against their ELF sizes where known.
  auto *source = (const char *)dlsym(handle, "kiln_opencl_source");
  auto *table = (const int64_t *)dlsym(handle, "kiln_opencl_launches");
  auto *weightsBytes = (const int64_t *)dlsym(handle, "kiln_opencl_weights_bytes");
  auto *weightsData = (const unsigned char *)dlsym(handle, "kiln_model_weights");
  const char *missing = !source ? "kiln_opencl_source" : !table ? "kiln_opencl_launches"
                        : !weightsBytes ? "kiln_opencl_weights_bytes" : nullptr;
  if (missing) {
    err = where + " is an OpenCL model library (target opencl) but does not export " + missing;
    return KILN_ERR_ABI;
  }
  size_t sourceCap = symbolSize(source);
  size_t sourceLen = strnlen(source, sourceCap);
  if (sourceLen == sourceCap || sourceLen == 0) {
    err = where + ": kiln_opencl_source is " + (sourceLen ? "not NUL-terminated" : "empty");
    return KILN_ERR_ABI;
  }
  int64_t wb = *weightsBytes;
  if (wb < 0 || (wb > 0 && (!weightsData || symbolSize(weightsData) < (uint64_t)wb))) {
    err = where + ": kiln_opencl_weights_bytes is " + std::to_string(wb) + ", but kiln_model_weights " +
          (weightsData ? "has " + std::to_string(symbolSize(weightsData)) + " bytes" : "is not exported");
    return KILN_ERR_ABI;
  }

  auto m = ModelPtr(new Model);
  m->desc = desc;
  // The launch table: n, then {block, dims, g0, g1, g2, group} per launch.
  constexpr int64_t F = 6;
  int64_t n = table[0];
  size_t tableCap = symbolSize(table);
  if (n < 0 || n > (1 << 24) || (tableCap != SIZE_MAX && (size_t)(1 + F * n) * sizeof(int64_t) > tableCap)) {
    err = where + ": bad launch count " + std::to_string(n) + " in kiln_opencl_launches";
    return KILN_ERR_ABI;
  }
  for (int64_t i = 0; i < n; ++i) {
    const int64_t *l = table + 1 + F * i;
    Launch launch{l[0], (cl_uint)l[1], {1, 1, 1}, (size_t)std::max<int64_t>(l[5], 0)};
    bool ok = l[0] >= 0 && (uint64_t)l[0] < desc.numKernels && l[1] >= 1 && l[1] <= 3 && l[5] >= 0 &&
              l[5] <= (1 << 16) && (l[5] == 0 || l[1] == 1);
    for (int k = 0; k < 3; ++k) {
      ok = ok && l[2 + k] >= 1;
      launch.global[k] = ok ? (size_t)l[2 + k] : 1;
    }
    if (!ok) {
      err = where + ": bad launch " + std::to_string(i) + " {block " + std::to_string(l[0]) + ", dims " +
            std::to_string(l[1]) + ", global " + std::to_string(l[2]) + "x" + std::to_string(l[3]) + "x" +
            std::to_string(l[4]) + ", group " + std::to_string(l[5]) + "} (the model has " +
            std::to_string(desc.numKernels) +
            " kernel labels; dims must be 1..3, sizes >= 1, a group 0..65536 and only with dims 1)";
      return KILN_ERR_ABI;
    }
    m->launches.push_back(launch);
  }

  // The device: kiln_opencl_select_device, else KILN_OPENCL_DEVICE, else the default.
  std::string spec, specFrom;
  {
    std::lock_guard<std::mutex> lock(selectedMutex);
    if (selectedSet) spec = selectedSpec, specFrom = "the device spec";
  }
  if (specFrom.empty()) spec = env("KILN_OPENCL_DEVICE"), specFrom = "KILN_OPENCL_DEVICE";
  std::vector<Device> devs;
  if (kiln_status s = enumerateDevices(devs, err)) {
    err = where + ": " + err;
    return s;
  }
  const Device *dev = nullptr;
  if (kiln_status s = findDevice(devs, spec, specFrom, dev, err)) {
    err = where + ": " + err;
    return s;
  }
  m->device = *dev;
  m->description = dev->description();
  where += " on " + dev->name;

  cl_int e = CL_SUCCESS;
  cl_device_id id = dev->id;
  m->context.reset(cl.clCreateContext(nullptr, 1, &id, nullptr, nullptr, &e));
  if (e != CL_SUCCESS) return clFail(err, where + ": clCreateContext", e);
  if (kiln_status s = buildProgram(*m, source, sourceLen, where, err)) return s;

  // Every launch's kernel exists and takes (arena, weights, inputs..., outputs...).
  cl_uint wantArgs = (cl_uint)(2 + desc.inputBytes.size() + desc.outputBytes.size());
  for (int64_t i = 0; i < n; ++i) {
    std::string name = "kiln_k" + std::to_string(i);
    Ref<cl_kernel> k(cl.clCreateKernel(m->program.get(), name.c_str(), &e));
    if (e != CL_SUCCESS) {
      kiln_status s = clFail(err, where + ": cannot create kernel " + name + " of launch " + std::to_string(i), e);
      return e == CL_INVALID_KERNEL_NAME ? KILN_ERR_ABI : s; // the library lacks it
    }
    cl_uint args = 0;
    if ((e = cl.clGetKernelInfo(k.get(), CL_KERNEL_NUM_ARGS, sizeof args, &args, nullptr)) != CL_SUCCESS)
      return clFail(err, where + ": clGetKernelInfo(" + name + ")", e);
    if (args != wantArgs) {
      err = where + ": kernel " + name + " takes " + std::to_string(args) + " arguments; the model has " +
            std::to_string(wantArgs) + " (arena, weights, " + std::to_string(desc.inputBytes.size()) +
            " inputs, " + std::to_string(desc.outputBytes.size()) + " outputs)";
      return KILN_ERR_ABI;
    }
  }
  if (kiln_status s = createBuffer(*m, CL_MEM_READ_ONLY, (size_t)wb, weightsData, m->weights,
                                   "the weights", err)) {
    err = where + ": " + err;
    return s;
  }
  out = std::move(m);
  return KILN_OK;
}

//===----------------------------------------------------------------------===//
// Contexts and runs
//===----------------------------------------------------------------------===//

struct Context {
  Model *model = nullptr;
  Ref<cl_command_queue> queue; // released after everything below
  Ref<cl_mem> arena;
  std::vector<Ref<cl_mem>> inputs, outputs;
  std::vector<Ref<cl_kernel>> kernels; // one per launch, arguments bound
  std::vector<size_t> groups;          // work-group size of each launch (0: the driver's choice)
  std::vector<Ref<cl_event>> events;   // of a profiled run
};

void ContextDeleter::operator()(Context *c) const {
  if (c && c->queue.get()) cl.clFinish(c->queue.get());
  delete c;
}

kiln_status createContext(Model *m, ContextPtr &out, std::string &err) {
  out.reset();
  ContextPtr c(new Context);
  c->model = m;
  cl_int e = CL_SUCCESS;
  cl_device_id dev = m->device.id;
  c->queue.reset(cl.clCreateCommandQueue(m->context.get(), dev, CL_QUEUE_PROFILING_ENABLE, &e));
  if (e != CL_SUCCESS) return clFail(err, "clCreateCommandQueue on " + m->device.name, e);
  if (kiln_status s = createBuffer(*m, CL_MEM_READ_WRITE, m->desc.arenaBytes, nullptr, c->arena, "the arena", err))
    return s;
  std::vector<cl_mem> args = {c->arena.get(), m->weights.get()};
  for (int io = 0; io < 2; ++io) {
    const std::vector<size_t> &bytes = io ? m->desc.outputBytes : m->desc.inputBytes;
    std::vector<Ref<cl_mem>> &bufs = io ? c->outputs : c->inputs;
    for (size_t i = 0; i < bytes.size(); ++i) {
      bufs.emplace_back();
      std::string what = std::string(io ? "output " : "input ") + std::to_string(i);
      if (kiln_status s = createBuffer(*m, CL_MEM_READ_WRITE, bytes[i], nullptr, bufs.back(), what, err)) return s;
      args.push_back(bufs.back().get());
    }
  }
  for (size_t i = 0; i < m->launches.size(); ++i) {
    std::string name = "kiln_k" + std::to_string(i);
    c->kernels.emplace_back(cl.clCreateKernel(m->program.get(), name.c_str(), &e));
    if (e != CL_SUCCESS) return clFail(err, "clCreateKernel(" + name + ")", e);
    size_t group = m->launches[i].group;
    if (group) {
      size_t limit = 0;
      if ((e = cl.clGetKernelWorkGroupInfo(c->kernels.back().get(), m->device.id, CL_KERNEL_WORK_GROUP_SIZE,
                                           sizeof limit, &limit, nullptr)) != CL_SUCCESS)
        return clFail(err, "clGetKernelWorkGroupInfo(" + name + ")", e);
      group = std::max<size_t>(1, std::min(group, limit));
    }
    c->groups.push_back(group);
    for (size_t a = 0; a < args.size(); ++a)
      if ((e = cl.clSetKernelArg(c->kernels.back().get(), (cl_uint)a, sizeof(cl_mem), &args[a])) != CL_SUCCESS)
        return clFail(err, "clSetKernelArg(" + name + ", " + std::to_string(a) + ")", e);
  }
  out = std::move(c);
  return KILN_OK;
}

kiln_status run(Context *c, const kiln_tensor *inputs, kiln_tensor *outputs, double *kernelMs, std::string &err) {
  const Model &m = *c->model;
  cl_command_queue q = c->queue.get();
  c->events.clear();
  // Waits for the queue on every return: the enqueued copies use the
  // caller's memory, which must not be touched after kiln_run returns.
  struct Finish {
    cl_command_queue q;
    ~Finish() { cl.clFinish(q); }
  } finish{q};
  cl_int e = CL_SUCCESS;
  for (size_t i = 0; i < m.desc.inputBytes.size(); ++i)
    if (size_t n = m.desc.inputBytes[i])
      if ((e = cl.clEnqueueWriteBuffer(q, c->inputs[i].get(), CL_FALSE, 0, n, inputs[i].data, 0, nullptr,
                                       nullptr)) != CL_SUCCESS)
        return clFail(err, "copying input " + std::to_string(i) + " to " + m.device.name, e);
  if (kernelMs) c->events.resize(m.launches.size());
  for (size_t i = 0; i < m.launches.size(); ++i) {
    const Launch &l = m.launches[i];
    // A one-group launch: global = local = the group size (its phases
    // stride over their iterations by the local size).
    size_t group[3] = {c->groups[i], 1, 1};
    if ((e = cl.clEnqueueNDRangeKernel(q, c->kernels[i].get(), l.dims, nullptr, group[0] ? group : l.global,
                                       group[0] ? group : nullptr, 0, nullptr,
                                       kernelMs ? c->events[i].out() : nullptr)) != CL_SUCCESS)
      return clFail(err, "launching kiln_k" + std::to_string(i) + " (block " + std::to_string(l.block) + ")", e);
  }
  for (size_t i = 0; i < m.desc.outputBytes.size(); ++i)
    if (size_t n = m.desc.outputBytes[i])
      if ((e = cl.clEnqueueReadBuffer(q, c->outputs[i].get(), CL_FALSE, 0, n, outputs[i].data, 0, nullptr,
                                      nullptr)) != CL_SUCCESS)
        return clFail(err, "copying output " + std::to_string(i) + " from " + m.device.name, e);
  if ((e = cl.clFinish(q)) != CL_SUCCESS) return clFail(err, "running the model on " + m.device.name, e);
  for (size_t i = 0; kernelMs && i < c->events.size(); ++i) {
    cl_ulong t0 = 0, t1 = 0;
    if ((e = cl.clGetEventProfilingInfo(c->events[i].get(), CL_PROFILING_COMMAND_START, sizeof t0, &t0,
                                        nullptr)) != CL_SUCCESS ||
        (e = cl.clGetEventProfilingInfo(c->events[i].get(), CL_PROFILING_COMMAND_END, sizeof t1, &t1,
                                        nullptr)) != CL_SUCCESS)
      return clFail(err, "reading the time of kiln_k" + std::to_string(i), e);
    kernelMs[m.launches[i].block] += t1 > t0 ? (double)(t1 - t0) * 1e-6 : 0.0;
  }
  c->events.clear();
  return KILN_OK;
}

//===----------------------------------------------------------------------===//
// Device selection and listing
//===----------------------------------------------------------------------===//

kiln_status selectDevice(const char *spec, std::string &err) {
  if (!spec || !*spec) {
    std::lock_guard<std::mutex> lock(selectedMutex);
    selectedSet = false;
    selectedSpec.clear();
    return KILN_OK;
  }
  std::vector<Device> devs;
  if (kiln_status s = enumerateDevices(devs, err)) return s;
  const Device *dev = nullptr;
  if (kiln_status s = findDevice(devs, spec, "the device spec", dev, err)) return s;
  std::lock_guard<std::mutex> lock(selectedMutex);
  selectedSet = true;
  selectedSpec = spec;
  return KILN_OK;
}

kiln_status listDevices(std::string &out, std::string &err) {
  std::vector<Device> devs;
  if (kiln_status s = enumerateDevices(devs, err)) return s;
  out.clear();
  for (const Device &d : devs) out += d.description() + "\n";
  return KILN_OK;
}

} // namespace kiln::rt::opencl
