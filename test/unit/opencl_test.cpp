// Tests of the runtime's OpenCL backend through the C API: running a model,
// profiling, the program cache, device selection and listing, and refusing
// libraries that break the OpenCL contract. The models are the hand-written
// stand-ins of opencl_model.c. Without an OpenCL device (no ICD loader, no
// driver, or a runtime built without <CL/cl.h>) the tests that need one
// warn and pass.
#include "kiln/runtime.h"

#include <catch2/catch.hpp>

#include <dirent.h>
#include <dlfcn.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace {

using Catch::Matchers::Contains;
using Catch::Matchers::StartsWith;

constexpr int kN = 1000;

/// Why OpenCL cannot be tested here ("" when it can).
std::string whyNoOpenCL() {
  char buf[4096];
  if (kiln_opencl_list_devices(buf, sizeof buf) == KILN_ERR_DEVICE)
    return kiln_last_error();
  return "";
}

#define KILN_REQUIRE_OPENCL()                                                                      \
  do {                                                                                             \
    std::string why = whyNoOpenCL();                                                               \
    if (!why.empty()) {                                                                            \
      WARN("skipped: no OpenCL device: " << why);                                                  \
      return;                                                                                      \
    }                                                                                              \
  } while (0)

/// Sets an environment variable for the scope (unset: null).
class ScopedEnv {
public:
  ScopedEnv(const char *name, const char *value) : name_(name) {
    const char *old = std::getenv(name);
    had_ = old != nullptr;
    if (had_) old_ = old;
    if (value) setenv(name, value, 1);
    else unsetenv(name);
  }
  ~ScopedEnv() {
    if (had_) setenv(name_.c_str(), old_.c_str(), 1);
    else unsetenv(name_.c_str());
  }
  ScopedEnv(const ScopedEnv &) = delete;
  ScopedEnv &operator=(const ScopedEnv &) = delete;

private:
  std::string name_, old_;
  bool had_ = false;
};

/// A fresh temporary directory for the program cache, set as KILN_CACHE_DIR
/// and removed with its files at the end of the scope.
class TempCache {
public:
  TempCache() {
    char tmpl[] = "/tmp/kiln-ocl-cache-XXXXXX";
    REQUIRE(mkdtemp(tmpl));
    dir = tmpl;
    env_.reset(new ScopedEnv("KILN_CACHE_DIR", dir.c_str()));
  }
  ~TempCache() {
    env_.reset();
    for (const std::string &f : entries()) unlink(f.c_str());
    rmdir(dir.c_str());
  }
  /// The cache files (not the temporaries of an interrupted write).
  std::vector<std::string> files() const {
    std::vector<std::string> out;
    for (const std::string &f : entries())
      if (f.size() > 6 && f.compare(f.size() - 6, 6, ".clbin") == 0) out.push_back(f);
    return out;
  }
  /// Every file in the directory.
  std::vector<std::string> entries() const {
    std::vector<std::string> out;
    if (DIR *d = opendir(dir.c_str())) {
      while (dirent *e = readdir(d))
        if (std::strcmp(e->d_name, ".") && std::strcmp(e->d_name, ".."))
          out.push_back(dir + "/" + e->d_name);
      closedir(d);
    }
    return out;
  }
  std::string dir;

private:
  std::unique_ptr<ScopedEnv> env_;
};

ino_t inodeOf(const std::string &path) {
  struct stat st;
  REQUIRE(stat(path.c_str(), &st) == 0);
  return st.st_ino;
}

/// Input, output and the reference of the model in opencl_model.c, with the
/// weights read from the library the runtime loaded.
struct Io {
  explicit Io(uint32_t seed) {
    void *h = dlopen(KILN_OPENCL_MODEL_OK, RTLD_NOW | RTLD_NOLOAD);
    REQUIRE(h);
    auto *w = (const float *)dlsym(h, "kiln_model_weights");
    REQUIRE(w);
    for (int i = 0; i < kN; ++i)
      x[i] = (float)((int)((i * 2654435761u + seed) % 2001u) - 1000) / 500.0f;
    for (int i = 0; i < kN; ++i) {
      double t = (double)x[i] * w[i] + w[kN + i];
      double v = t + (double)x[i] * w[2 * kN + i];
      expected[i] = v > 0 ? v : 0;
      scale[i] = std::fabs((double)x[i] * w[i]) + std::fabs(w[kN + i]) + std::fabs((double)x[i] * w[2 * kN + i]);
      y[i] = NAN;
    }
    dlclose(h);
    in = {x.data(), sizeof(float) * kN, KILN_F32, 2, shape};
    out = {y.data(), sizeof(float) * kN, KILN_F32, 2, shape};
  }
  Io(const Io &) = delete;
  Io &operator=(const Io &) = delete;

  /// "" when y matches the reference; else the first mismatch.
  std::string mismatch() const {
    for (int i = 0; i < kN; ++i)
      if (!(std::fabs(y[i] - expected[i]) <= 1e-6 * scale[i] + 1e-7))
        return "y[" + std::to_string(i) + "] = " + std::to_string(y[i]) + ", expected " +
               std::to_string(expected[i]);
    return "";
  }

  std::vector<float> x = std::vector<float>(kN), y = std::vector<float>(kN);
  std::vector<double> expected = std::vector<double>(kN), scale = std::vector<double>(kN);
  int64_t shape[2] = {10, 100};
  kiln_tensor in, out;
};

struct Model {
  explicit Model(const char *path) {
    INFO(kiln_last_error());
    REQUIRE(kiln_model_open(path, &m) == KILN_OK);
    INFO(kiln_last_error());
    REQUIRE(kiln_context_create(m, &c) == KILN_OK);
  }
  ~Model() {
    kiln_context_destroy(c);
    kiln_model_close(m);
  }
  Model(const Model &) = delete;
  Model &operator=(const Model &) = delete;
  kiln_model *m = nullptr;
  kiln_context *c = nullptr;
};

void checkOpenFails(const char *path, kiln_status status, const std::string &text) {
  INFO("path: " << path);
  kiln_model *m = (kiln_model *)&m;
  CHECK(kiln_model_open(path, &m) == status);
  CHECK(m == nullptr);
  CHECK_THAT(kiln_last_error(), Contains(text));
}

} // namespace

TEST_CASE("KILN_ERR_DEVICE has a description", "[opencl]") {
  CHECK(std::string(kiln_status_string(KILN_ERR_DEVICE)) == "OpenCL/device error");
}

TEST_CASE("an OpenCL model runs and matches the reference", "[opencl]") {
  KILN_REQUIRE_OPENCL();
  TempCache cache;
  Model model(KILN_OPENCL_MODEL_OK);
  kiln_model *m = model.m;
  CHECK(std::string(kiln_model_target(m)) == "opencl");
  CHECK_THAT(kiln_model_device(m), Contains(":"));
  CHECK(kiln_model_arena_bytes(m) == 8192);
  REQUIRE(kiln_model_num_kernels(m) == 2);
  CHECK(std::string(kiln_model_kernel_label(m, 1)) == "AddRelu 10x100");
  kiln_tensor_info info;
  REQUIRE(kiln_model_input_info(m, 0, &info) == KILN_OK);
  CHECK(std::string(info.name) == "x");
  CHECK(info.size_bytes == sizeof(float) * kN);

  // Two runs with different inputs: the second must not see the first.
  for (uint32_t seed : {1u, 2u}) {
    Io io(seed);
    REQUIRE(kiln_run(model.c, &io.in, 1, &io.out, 1) == KILN_OK);
    CHECK(io.mismatch() == "");
  }
  // Threads are accepted and ignored.
  CHECK(kiln_context_set_threads(model.c, 4) == KILN_OK);

  // Profiling: device times summed per block.
  REQUIRE(kiln_context_set_profiling(model.c, 1) == KILN_OK);
  Io io(3);
  REQUIRE(kiln_run(model.c, &io.in, 1, &io.out, 1) == KILN_OK);
  CHECK(io.mismatch() == "");
  double ms[2] = {-1, -1};
  REQUIRE(kiln_context_kernel_times(model.c, ms, 2) == KILN_OK);
  CHECK(ms[0] >= 0);
  CHECK(ms[1] >= 0);
  CHECK(ms[0] + ms[1] > 0);
  CHECK(ms[0] + ms[1] < 10000);

  // A second context of the same model, run from another thread.
  kiln_context *c2 = nullptr;
  REQUIRE(kiln_context_create(m, &c2) == KILN_OK);
  Io io2(4), io3(5);
  kiln_status s2 = KILN_ERR_INTERNAL;
  std::thread t([&] { s2 = kiln_run(c2, &io2.in, 1, &io2.out, 1); });
  CHECK(kiln_run(model.c, &io3.in, 1, &io3.out, 1) == KILN_OK);
  t.join();
  CHECK(s2 == KILN_OK);
  CHECK(io2.mismatch() == "");
  CHECK(io3.mismatch() == "");
  kiln_context_destroy(c2);
}

TEST_CASE("kiln_run checks the tensors of an OpenCL model", "[opencl]") {
  KILN_REQUIRE_OPENCL();
  TempCache cache;
  Model model(KILN_OPENCL_MODEL_OK);
  Io io(1);
  int64_t wrong[2] = {100, 10};
  kiln_tensor in = io.in;
  in.shape = wrong;
  CHECK(kiln_run(model.c, &in, 1, &io.out, 1) == KILN_ERR_SHAPE);
  CHECK_THAT(kiln_last_error(), Contains("[100x10], expected [10x100]"));
  in = io.in;
  in.dtype = KILN_I32;
  CHECK(kiln_run(model.c, &in, 1, &io.out, 1) == KILN_ERR_DTYPE);
  in = io.in;
  in.size_bytes -= 4;
  CHECK(kiln_run(model.c, &in, 1, &io.out, 1) == KILN_ERR_BUFFER);
  in = io.in;
  in.data = nullptr;
  CHECK(kiln_run(model.c, &in, 1, &io.out, 1) == KILN_ERR_INVALID_ARGUMENT);
  CHECK(kiln_run(model.c, &io.in, 1, &io.out, 0) == KILN_ERR_INVALID_ARGUMENT);
  // Still usable after the refusals.
  REQUIRE(kiln_run(model.c, &io.in, 1, &io.out, 1) == KILN_OK);
  CHECK(io.mismatch() == "");
}

TEST_CASE("OpenCL programs are cached on disk", "[opencl]") {
  KILN_REQUIRE_OPENCL();
  TempCache cache;
  REQUIRE(cache.files().empty());
  { Model model(KILN_OPENCL_MODEL_OK); }
  std::vector<std::string> files = cache.files();
  REQUIRE(files.size() == 1);
  ino_t first = inodeOf(files[0]);

  // A second open loads the binary: the file is not written again (a save
  // renames a new file over it).
  {
    Model model(KILN_OPENCL_MODEL_OK);
    Io io(7);
    REQUIRE(kiln_run(model.c, &io.in, 1, &io.out, 1) == KILN_OK);
    CHECK(io.mismatch() == "");
  }
  REQUIRE(cache.files().size() == 1);
  CHECK(inodeOf(files[0]) == first);

  // A damaged cache file is rebuilt from source and replaced.
  { std::ofstream(files[0], std::ios::binary | std::ios::trunc) << "KILNCLB1 not a binary"; }
  {
    Model model(KILN_OPENCL_MODEL_OK);
    Io io(8);
    REQUIRE(kiln_run(model.c, &io.in, 1, &io.out, 1) == KILN_OK);
    CHECK(io.mismatch() == "");
  }
  REQUIRE(cache.files().size() == 1);
  CHECK(inodeOf(files[0]) != first);

  // A cache directory that cannot be created is not an error.
  ScopedEnv env("KILN_CACHE_DIR", "/proc/kiln-no-such-dir/cache");
  Model model(KILN_OPENCL_MODEL_OK);
  Io io(9);
  REQUIRE(kiln_run(model.c, &io.in, 1, &io.out, 1) == KILN_OK);
  CHECK(io.mismatch() == "");
}

TEST_CASE("OpenCL libraries that break the contract are refused", "[opencl]") {
  KILN_REQUIRE_OPENCL();
  TempCache cache;
  SECTION("syntax error: the build log is in the message") {
    checkOpenFails(KILN_OPENCL_MODEL_BAD_SOURCE, KILN_ERR_DEVICE, "build log");
    CHECK_THAT(kiln_last_error(), Contains("CL_BUILD_PROGRAM_FAILURE"));
    CHECK_THAT(kiln_last_error(), Contains("kiln_syntax_error"));
    CHECK(cache.files().empty());
  }
  SECTION("a launch with 4 dimensions") {
    checkOpenFails(KILN_OPENCL_MODEL_BAD_LAUNCH, KILN_ERR_ABI, "bad launch 1");
  }
  SECTION("a launch without its kernel") {
    checkOpenFails(KILN_OPENCL_MODEL_NO_KERNEL, KILN_ERR_ABI, "kiln_k2");
  }
  SECTION("no OpenCL source") {
    checkOpenFails(KILN_OPENCL_MODEL_NO_SOURCE, KILN_ERR_ABI, "does not export kiln_opencl_source");
  }
}

TEST_CASE("OpenCL devices are listed and selected", "[opencl]") {
  KILN_REQUIRE_OPENCL();
  TempCache cache;
  std::vector<char> buf(1 << 16);
  REQUIRE(kiln_opencl_list_devices(buf.data(), buf.size()) == KILN_OK);
  std::string list = buf.data();
  INFO("devices:\n" << list);
  REQUIRE_THAT(list, StartsWith("0:"));
  CHECK(list.back() == '\n');
  // Too small a buffer: what fits, and the size needed.
  char small[4];
  CHECK(kiln_opencl_list_devices(small, sizeof small) == KILN_ERR_BUFFER);
  CHECK(std::string(small) == list.substr(0, 3));
  CHECK_THAT(kiln_last_error(), Contains(std::to_string(list.size() + 1) + " bytes"));
  CHECK(kiln_opencl_list_devices(nullptr, 8) == KILN_ERR_INVALID_ARGUMENT);

  // "P:D name (type, version)": the first device by index and by part of its
  // name, in another case.
  std::string first = list.substr(0, list.find('\n'));
  std::string name = first.substr(first.find(' ') + 1);
  name = name.substr(0, name.rfind(" ("));
  std::string upper = name.substr(0, std::min<size_t>(name.size(), 6));
  for (char &ch : upper) ch = (char)std::toupper((unsigned char)ch);
  REQUIRE(kiln_opencl_select_device(upper.c_str()) == KILN_OK);
  REQUIRE(kiln_opencl_select_device("0:0") == KILN_OK);
  {
    Model model(KILN_OPENCL_MODEL_OK);
    CHECK(std::string(kiln_model_device(model.m)) == first);
  }

  // Specs that match nothing name the spec and list the devices.
  for (const char *bad : {"no-such-device-xyz", "99:0", "0:99"}) {
    INFO("spec " << bad);
    CHECK(kiln_opencl_select_device(bad) == KILN_ERR_DEVICE);
    CHECK_THAT(kiln_last_error(), Contains(std::string("'") + bad + "'"));
    CHECK_THAT(kiln_last_error(), Contains(first));
  }

  // The API's choice wins over KILN_OPENCL_DEVICE; without it the variable
  // counts, and a bad one fails the open.
  ScopedEnv env("KILN_OPENCL_DEVICE", "no-such-device-xyz");
  { Model model(KILN_OPENCL_MODEL_OK); }
  REQUIRE(kiln_opencl_select_device(nullptr) == KILN_OK);
  checkOpenFails(KILN_OPENCL_MODEL_OK, KILN_ERR_DEVICE, "KILN_OPENCL_DEVICE 'no-such-device-xyz'");
  ScopedEnv env2("KILN_OPENCL_DEVICE", "0:0");
  { Model model(KILN_OPENCL_MODEL_OK); }
}

TEST_CASE("CPU models report no device", "[opencl]") {
  kiln_model *m = nullptr;
  REQUIRE(kiln_model_open(KILN_FAKE_MODEL_OK, &m) == KILN_OK);
  CHECK(std::string(kiln_model_device(m)) == "");
  kiln_model_close(m);
  CHECK(std::string(kiln_model_device(nullptr)) == "");
}
