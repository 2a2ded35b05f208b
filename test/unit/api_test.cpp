// Tests of the runtime's public C API (kiln/runtime.h): error statuses and
// messages, opening libraries that break the model contract, metadata,
// contexts, argument checks of kiln_run, re-entry and concurrent contexts.
// Models are the hand-written stand-ins of fake_model.c; libraries made by
// kiln-compile are covered by the end-to-end tests.
#include "kiln/runtime.h"

#include <catch2/catch.hpp>

#include <dlfcn.h>
#include <unistd.h>

#include <cstdio>
#include <string>
#include <thread>
#include <vector>

namespace {

using Catch::Matchers::Contains;

/// The fake model opened through the API, plus its test-only globals
/// (reached with dlsym on the library the runtime loaded).
class FakeModel {
public:
  FakeModel() {
    REQUIRE(kiln_model_open(KILN_FAKE_MODEL_OK, &model) == KILN_OK);
    handle_ = dlopen(KILN_FAKE_MODEL_OK, RTLD_NOW | RTLD_NOLOAD);
    REQUIRE(handle_);
    runs = (int *)dlsym(handle_, "fake_model_runs");
    arenaAligned = (int *)dlsym(handle_, "fake_model_arena_aligned");
    hook = (void (**)(void *))dlsym(handle_, "fake_model_hook");
    hookArg = (void **)dlsym(handle_, "fake_model_hook_arg");
    REQUIRE((runs && arenaAligned && hook && hookArg));
  }
  ~FakeModel() {
    dlclose(handle_);
    kiln_model_close(model);
  }
  FakeModel(const FakeModel &) = delete;
  FakeModel &operator=(const FakeModel &) = delete;

  kiln_model *model = nullptr;
  int *runs = nullptr, *arenaAligned = nullptr;
  void (**hook)(void *) = nullptr;
  void **hookArg = nullptr;

private:
  void *handle_ = nullptr;
};

/// Inputs and output of the fake model (y[2,4] = a[2,3] * w[3,4] + s) with
/// distinct values, and the expected result. The tensors point into the
/// object, so it is reset in place rather than copied.
struct FakeIo {
  explicit FakeIo(float scale = 1.0f) { reset(scale); }
  FakeIo(const FakeIo &) = delete;
  FakeIo &operator=(const FakeIo &) = delete;

  void reset(float scale = 1.0f) {
    for (int i = 0; i < 6; ++i)
      a[i] = scale * (float)(i + 1);
    for (int i = 0; i < 12; ++i)
      w[i] = (float)(i % 5) - 2.0f;
    s = 0.25f;
    for (int i = 0; i < 2; ++i)
      for (int j = 0; j < 4; ++j) {
        float v = s;
        for (int k = 0; k < 3; ++k)
          v += a[i * 3 + k] * w[k * 4 + j];
        expected[i * 4 + j] = v;
        y[i * 4 + j] = 0.0f;
      }
    aShape[0] = 2, aShape[1] = 3;
    wShape[0] = 3, wShape[1] = 4, wShape[2] = 1;
    yShape[0] = 2, yShape[1] = 4;
    inputs[0] = {a, sizeof a, KILN_F32, 2, aShape};
    inputs[1] = {w, sizeof w, KILN_F32, 2, wShape};
    inputs[2] = {&s, sizeof s, KILN_F32, 0, nullptr};
    outputs[0] = {y, sizeof y, KILN_F32, 2, yShape};
  }
  kiln_status run(kiln_context *ctx) { return kiln_run(ctx, inputs, 3, outputs, 1); }
  bool correct() const {
    for (int i = 0; i < 8; ++i)
      if (y[i] != expected[i])
        return false;
    return true;
  }

  float a[6], w[12], s, y[8], expected[8];
  int64_t aShape[2], wShape[3], yShape[2]; // wShape[2] for a rank-3 mistake
  kiln_tensor inputs[3], outputs[1];
};

/// Path of the runtime's own shared library: a real library that is not a
/// kiln model.
std::string runtimeLibraryPath() {
  Dl_info info{};
  REQUIRE(dladdr((void *)&kiln_status_string, &info) != 0);
  REQUIRE(info.dli_fname);
  return info.dli_fname;
}

/// Opens `path`, which must fail with `status` and a message containing
/// `text`, leaving the output model null.
void checkOpenFails(const std::string &path, kiln_status status, const std::string &text) {
  INFO("path: " << path);
  kiln_model *m = (kiln_model *)&m; // not null before the call
  CHECK(kiln_model_open(path.c_str(), &m) == status);
  CHECK(m == nullptr);
  CHECK_THAT(kiln_last_error(), Contains(text));
}

} // namespace

TEST_CASE("kiln_status_string describes every status", "[api]") {
  std::vector<std::string> seen;
  for (int s = KILN_OK; s <= KILN_ERR_INTERNAL; ++s) {
    const char *text = kiln_status_string((kiln_status)s);
    INFO("status " << s);
    REQUIRE(text != nullptr);
    CHECK(std::string(text) != "");
    CHECK(std::string(text) != "unknown status");
    for (const std::string &other : seen)
      CHECK(other != text);
    seen.push_back(text);
  }
  CHECK(std::string(kiln_status_string((kiln_status)42)) == "unknown status");
}

TEST_CASE("kiln_last_error is per thread and never null", "[api]") {
  kiln_model *m = nullptr;
  REQUIRE(kiln_model_open(nullptr, &m) == KILN_ERR_INVALID_ARGUMENT);
  REQUIRE(kiln_last_error() != nullptr);
  CHECK(std::string(kiln_last_error()) != "");
  const char *other = nullptr;
  std::string otherText;
  std::thread([&] {
    other = kiln_last_error();
    otherText = other ? other : "(null)";
  }).join();
  CHECK(other != nullptr);
  CHECK(otherText == "");
}

TEST_CASE("kiln_model_open rejects null arguments", "[api]") {
  kiln_model *m = nullptr;
  CHECK(kiln_model_open(nullptr, &m) == KILN_ERR_INVALID_ARGUMENT);
  CHECK(m == nullptr);
  CHECK_THAT(kiln_last_error(), Contains("null argument"));
  CHECK(kiln_model_open(KILN_FAKE_MODEL_OK, nullptr) == KILN_ERR_INVALID_ARGUMENT);
}

TEST_CASE("kiln_model_open reports a missing file as an I/O error", "[api]") {
  checkOpenFails("/nonexistent-kiln-dir/model.so", KILN_ERR_IO, "/nonexistent-kiln-dir/model.so");
}

TEST_CASE("kiln_model_open reports a file that is not a library as an I/O error", "[api]") {
  std::string path = "/tmp/kiln-unit-test-not-a-library-" + std::to_string(getpid()) + ".so";
  FILE *f = std::fopen(path.c_str(), "w");
  REQUIRE(f);
  std::fputs("this is not an ELF file\n", f);
  std::fclose(f);
  checkOpenFails(path, KILN_ERR_IO, path);
  std::remove(path.c_str());
}

TEST_CASE("kiln_model_open refuses a library that is not a kiln model", "[api]") {
  checkOpenFails(runtimeLibraryPath(), KILN_ERR_ABI, "is not a kiln model library");
  checkOpenFails(KILN_FAKE_MODEL_NO_RUN, KILN_ERR_ABI, "is not a kiln model library");
}

TEST_CASE("kiln_model_open refuses another model ABI version", "[api]") {
  checkOpenFails(KILN_FAKE_MODEL_ABI2, KILN_ERR_ABI, "was built for model ABI 99");
}

TEST_CASE("kiln_model_open refuses a library built for another target", "[api]") {
  checkOpenFails(KILN_FAKE_MODEL_TARGET, KILN_ERR_ABI, "was compiled for riscv64");
}

TEST_CASE("kiln_model_open refuses malformed metadata", "[api]") {
  checkOpenFails(KILN_FAKE_MODEL_BAD_META, KILN_ERR_ABI, "bad model metadata");
}

TEST_CASE("an arena size that would wrap when rounded is refused at open", "[api]") {
  checkOpenFails(KILN_FAKE_MODEL_WRAP_ARENA, KILN_ERR_ABI, "bad arena size");
}

TEST_CASE("an arena too large to allocate is an out-of-memory error", "[api]") {
  kiln_model *m = nullptr;
  REQUIRE(kiln_model_open(KILN_FAKE_MODEL_HUGE_ARENA, &m) == KILN_OK);
  kiln_context *ctx = reinterpret_cast<kiln_context *>(0x1);
  CHECK(kiln_context_create(m, &ctx) == KILN_ERR_OUT_OF_MEMORY);
  CHECK(ctx == nullptr);
  CHECK_THAT(kiln_last_error(), Contains("cannot allocate the 1125899906842624-byte arena"));
  kiln_model_close(m);
}

TEST_CASE("null models and contexts are rejected", "[api]") {
  kiln_context *ctx = nullptr;
  CHECK(kiln_context_create(nullptr, &ctx) == KILN_ERR_INVALID_ARGUMENT);
  CHECK(ctx == nullptr);
  CHECK(kiln_run(nullptr, nullptr, 0, nullptr, 0) == KILN_ERR_INVALID_ARGUMENT);
  CHECK_THAT(kiln_last_error(), Contains("null context"));
  CHECK(kiln_context_set_threads(nullptr, 2) == KILN_ERR_INVALID_ARGUMENT);
  kiln_tensor_info info;
  CHECK(kiln_model_input_info(nullptr, 0, &info) == KILN_ERR_INVALID_ARGUMENT);
  CHECK(kiln_model_output_info(nullptr, 0, &info) == KILN_ERR_INVALID_ARGUMENT);
  CHECK(kiln_model_num_inputs(nullptr) == 0);
  CHECK(kiln_model_num_outputs(nullptr) == 0);
  CHECK(kiln_model_arena_bytes(nullptr) == 0);
  CHECK(kiln_model_weight_bytes(nullptr) == 0);
  CHECK(std::string(kiln_model_target(nullptr)) == "");
  kiln_context_destroy(nullptr);
  kiln_model_close(nullptr);
}

TEST_CASE("model metadata is read from the library", "[api]") {
  FakeModel fake;
  kiln_model *m = fake.model;
  CHECK(kiln_model_num_inputs(m) == 3);
  CHECK(kiln_model_num_outputs(m) == 1);
  CHECK(kiln_model_arena_bytes(m) == 1000);
  CHECK(kiln_model_weight_bytes(m) == 4096);
#if defined(__x86_64__)
  CHECK(std::string(kiln_model_target(m)) == "x86_64");
#elif defined(__aarch64__)
  CHECK(std::string(kiln_model_target(m)) == "aarch64");
#endif

  struct Expected {
    const char *name;
    std::vector<int64_t> shape;
    size_t bytes;
  };
  const Expected inputs[] = {{"a b", {2, 3}, 24}, {"w", {3, 4}, 48}, {"s", {}, 4}};
  for (int i = 0; i < 3; ++i) {
    INFO("input " << i);
    kiln_tensor_info info;
    REQUIRE(kiln_model_input_info(m, i, &info) == KILN_OK);
    CHECK(std::string(info.name) == inputs[i].name);
    CHECK(info.dtype == KILN_F32);
    CHECK(std::vector<int64_t>(info.shape, info.shape + info.rank) == inputs[i].shape);
    CHECK(info.size_bytes == inputs[i].bytes);
  }
  kiln_tensor_info out;
  REQUIRE(kiln_model_output_info(m, 0, &out) == KILN_OK);
  CHECK(std::string(out.name) == "%y");
  CHECK(std::vector<int64_t>(out.shape, out.shape + out.rank) == std::vector<int64_t>{2, 4});
  CHECK(out.size_bytes == 32);

  kiln_tensor_info info;
  CHECK(kiln_model_input_info(m, 3, &info) == KILN_ERR_INVALID_ARGUMENT);
  CHECK_THAT(kiln_last_error(), Contains("index 3 out of range"));
  CHECK(kiln_model_input_info(m, -1, &info) == KILN_ERR_INVALID_ARGUMENT);
  CHECK(kiln_model_output_info(m, 1, &info) == KILN_ERR_INVALID_ARGUMENT);
  CHECK(kiln_model_input_info(m, 0, nullptr) == KILN_ERR_INVALID_ARGUMENT);
}

TEST_CASE("kiln_context_set_threads accepts 1 to 1024 threads", "[api]") {
  FakeModel fake;
  kiln_context *ctx = nullptr;
  CHECK(kiln_context_create(fake.model, nullptr) == KILN_ERR_INVALID_ARGUMENT);
  REQUIRE(kiln_context_create(fake.model, &ctx) == KILN_OK);
  for (int32_t bad : {0, -1, 1025}) {
    INFO("threads " << bad);
    CHECK(kiln_context_set_threads(ctx, bad) == KILN_ERR_INVALID_ARGUMENT);
    CHECK_THAT(kiln_last_error(), Contains("threads must be in 1..1024"));
  }
  CHECK(kiln_context_set_threads(ctx, 1024) == KILN_OK);
  CHECK(kiln_context_set_threads(ctx, 1) == KILN_OK);
  kiln_context_destroy(ctx);
}

TEST_CASE("kiln_run runs the model serially and on a pool", "[api]") {
  FakeModel fake;
  kiln_context *ctx = nullptr;
  REQUIRE(kiln_context_create(fake.model, &ctx) == KILN_OK);
  int runsBefore = *fake.runs;
  int step = 0;
  for (int32_t threads : {1, 3, 3, 2, 1}) {
    INFO("threads " << threads);
    REQUIRE(kiln_context_set_threads(ctx, threads) == KILN_OK);
    FakeIo io(1.0f + step++);
    CHECK(io.run(ctx) == KILN_OK);
    CHECK(io.correct());
    CHECK(*fake.arenaAligned == 1);
  }
  CHECK(*fake.runs == runsBefore + 5);
  kiln_context_destroy(ctx);
}

TEST_CASE("per-kernel profiling times each kernel of a run", "[api]") {
  FakeModel fake;
  REQUIRE(kiln_model_num_kernels(fake.model) == 2);
  CHECK(std::string(kiln_model_kernel_label(fake.model, 0)) == "MatMul 2x4");
  CHECK(std::string(kiln_model_kernel_label(fake.model, 1)) == "Add 2x4");
  CHECK(kiln_model_kernel_label(fake.model, 2) == nullptr);
  CHECK(kiln_model_kernel_label(fake.model, -1) == nullptr);
  CHECK(kiln_model_num_kernels(nullptr) == 0);
  CHECK(kiln_model_kernel_flops(fake.model, 0) == 48.0);
  CHECK(kiln_model_kernel_flops(fake.model, 1) == 0.0);
  CHECK(kiln_model_kernel_flops(fake.model, 2) == 0.0);
  kiln_context *ctx = nullptr;
  REQUIRE(kiln_context_create(fake.model, &ctx) == KILN_OK);
  double ms[2] = {-1, -1};
  FakeIo io;
  // Not profiling: nothing recorded.
  REQUIRE(io.run(ctx) == KILN_OK);
  CHECK(kiln_context_kernel_times(ctx, ms, 2) == KILN_ERR_INVALID_ARGUMENT);
  CHECK_THAT(kiln_last_error(), Contains("no profiled run"));
  // Kernel 0 sleeps 20 ms (the hook runs inside it); kernel 1 does not.
  *fake.hook = [](void *) { usleep(20000); };
  REQUIRE(kiln_context_set_profiling(ctx, 1) == KILN_OK);
  REQUIRE(io.run(ctx) == KILN_OK);
  CHECK(io.correct());
  CHECK(kiln_context_kernel_times(ctx, ms, 1) == KILN_ERR_INVALID_ARGUMENT);
  CHECK(kiln_context_kernel_times(ctx, nullptr, 2) == KILN_ERR_INVALID_ARGUMENT);
  REQUIRE(kiln_context_kernel_times(ctx, ms, 2) == KILN_OK);
  CHECK(ms[0] >= 20.0);
  CHECK(ms[1] >= 0.0);
  CHECK(ms[1] < 20.0);
  *fake.hook = nullptr;
  CHECK(kiln_context_set_profiling(nullptr, 1) == KILN_ERR_INVALID_ARGUMENT);
  kiln_context_destroy(ctx);
}

TEST_CASE("kiln_run validates its tensors before running", "[api]") {
  FakeModel fake;
  kiln_context *ctx = nullptr;
  REQUIRE(kiln_context_create(fake.model, &ctx) == KILN_OK);
  int runsBefore = *fake.runs;
  FakeIo io;
  auto expectError = [&](kiln_status status, const char *text) {
    CHECK(kiln_run(ctx, io.inputs, 3, io.outputs, 1) == status);
    CHECK_THAT(kiln_last_error(), Contains(text));
    io.reset();
  };

  CHECK(kiln_run(ctx, io.inputs, 2, io.outputs, 1) == KILN_ERR_INVALID_ARGUMENT);
  CHECK_THAT(kiln_last_error(), Contains("model has 3 inputs and 1 outputs, got 2 and 1"));
  CHECK(kiln_run(ctx, io.inputs, 3, io.outputs, 0) == KILN_ERR_INVALID_ARGUMENT);
  CHECK(kiln_run(ctx, nullptr, 3, io.outputs, 1) == KILN_ERR_INVALID_ARGUMENT);
  CHECK(kiln_run(ctx, io.inputs, 3, nullptr, 1) == KILN_ERR_INVALID_ARGUMENT);
  CHECK_THAT(kiln_last_error(), Contains("null tensor array"));

  io.inputs[1].data = nullptr;
  expectError(KILN_ERR_INVALID_ARGUMENT, "input 1 ('w'): null data");
  io.inputs[0].dtype = KILN_I32;
  expectError(KILN_ERR_DTYPE, "input 0 ('a b'): dtype 6, expected 1");
  io.aShape[0] = 3, io.aShape[1] = 2;
  expectError(KILN_ERR_SHAPE, "input 0 ('a b'): shape [3x2], expected [2x3]");
  io.inputs[1].rank = 3;
  expectError(KILN_ERR_SHAPE, "input 1 ('w'): shape [3x4x1], expected [3x4]");
  io.inputs[1].shape = nullptr;
  expectError(KILN_ERR_SHAPE, "input 1 ('w'): shape [], expected [3x4]");
  io.inputs[2].rank = 1;
  expectError(KILN_ERR_SHAPE, "input 2 ('s')");
  io.inputs[1].size_bytes = 47;
  expectError(KILN_ERR_BUFFER, "input 1 ('w'): buffer has 47 bytes, needs 48");
  io.outputs[0].data = nullptr;
  expectError(KILN_ERR_INVALID_ARGUMENT, "output 0 ('%y'): null data");
  io.yShape[1] = 5;
  expectError(KILN_ERR_SHAPE, "output 0 ('%y'): shape [2x5], expected [2x4]");
  io.outputs[0].size_bytes = 31;
  expectError(KILN_ERR_BUFFER, "output 0 ('%y'): buffer has 31 bytes, needs 32");
  CHECK(*fake.runs == runsBefore);

  // A larger buffer than needed is fine; the context is still usable.
  float big[100];
  io.outputs[0].data = big;
  io.outputs[0].size_bytes = sizeof big;
  CHECK(io.run(ctx) == KILN_OK);
  CHECK(*fake.runs == runsBefore + 1);
  kiln_context_destroy(ctx);
}

TEST_CASE("a running context refuses kiln_run and set_threads", "[api]") {
  FakeModel fake;
  kiln_context *ctx = nullptr;
  REQUIRE(kiln_context_create(fake.model, &ctx) == KILN_OK);
  struct Reentry {
    kiln_context *ctx;
    kiln_status run = KILN_OK, threads = KILN_OK;
    std::string message;
  } reentry{ctx, KILN_OK, KILN_OK, {}};
  *fake.hookArg = &reentry;
  *fake.hook = [](void *arg) {
    auto *r = (Reentry *)arg;
    FakeIo inner;
    r->run = inner.run(r->ctx);
    r->message = kiln_last_error();
    r->threads = kiln_context_set_threads(r->ctx, 2);
  };
  FakeIo io;
  CHECK(io.run(ctx) == KILN_OK);
  *fake.hook = nullptr;
  CHECK(reentry.run == KILN_ERR_BUSY);
  CHECK_THAT(reentry.message, Contains("already running"));
  CHECK(reentry.threads == KILN_ERR_BUSY);
  CHECK(io.correct());

  FakeIo again(2.0f);
  CHECK(again.run(ctx) == KILN_OK);
  CHECK(again.correct());
  kiln_context_destroy(ctx);
}

TEST_CASE("contexts of one model run concurrently", "[api]") {
  FakeModel fake;
  std::vector<int> failures(4, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      kiln_context *ctx = nullptr;
      if (kiln_context_create(fake.model, &ctx) != KILN_OK ||
          kiln_context_set_threads(ctx, 1 + t % 3) != KILN_OK) {
        failures[t] = -1;
        return;
      }
      for (int rep = 0; rep < 200; ++rep) {
        FakeIo io(1.0f + (float)((t * 7 + rep) % 11));
        if (io.run(ctx) != KILN_OK || !io.correct())
          ++failures[t];
      }
      kiln_context_destroy(ctx);
    });
  for (std::thread &t : threads)
    t.join();
  CHECK(failures == std::vector<int>(4, 0));
}
