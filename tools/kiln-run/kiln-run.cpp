// kiln-run: runs a compiled model library on the runtime alone (no LLVM,
// MLIR or protobuf), compares outputs, writes them, and benchmarks.
//
// Exit status: 0 all outputs match (or nothing compared), 1 mismatch, 2 error.
#include "kiln/runtime.h"
#include "tensor_pb.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <sys/stat.h>
#include <vector>

using kiln::tools::Tensor;

namespace {

void usage() {
  fprintf(stderr,
          "usage: kiln-run MODEL.so [options]\n"
          "       kiln-run --list-devices\n"
          "  --inputs DIR     read DIR/input_N.pb (ONNX TensorProto)\n"
          "  --random         seeded random inputs in [-1, 1) (default when no --inputs)\n"
          "  --seed S         random seed (default 0)\n"
          "  --expect DIR     compare with DIR/output_N.pb\n"
          "  --rtol R --atol A  tolerances (default 1e-3, 1e-4; float16/bfloat16 outputs\n"
          "                   at least one unit in the last place, since ONNX leaves\n"
          "                   their rounding open)\n"
          "  --outputs DIR    write outputs as DIR/output_N.pb\n"
          "  --bench N        time N runs (after --warmup W, default 3)\n"
          "  --threads T      kernel threads (default 1; CPU models only)\n"
          "  --device SPEC    OpenCL device for OpenCL models: P:D (platform:device, as\n"
          "                   --list-devices numbers them) or part of the device name\n"
          "                   (default: $KILN_OPENCL_DEVICE, else the first GPU, else\n"
          "                   the first device)\n"
          "  --list-devices   print the OpenCL devices and exit\n"
          "  --profile N      time each kernel (fusion block) over N runs and print\n"
          "                   them by median time, with a total per kind of block\n"
          "  --json           print one JSON object instead of text\n");
}

int fail(const std::string &msg) {
  fprintf(stderr, "kiln-run: error: %s\n", msg.c_str());
  return 2;
}

std::string shapeStr(const std::vector<int64_t> &s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? "," : "") + std::to_string(s[i]);
  return r + "]";
}

std::string jsonStr(const std::string &s) {
  std::string r = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') { r += '\\'; r += c; }
    else if ((unsigned char)c < 0x20) { char b[8]; snprintf(b, sizeof b, "\\u%04x", c); r += b; }
    else r += c;
  }
  return r + "\"";
}

std::string num(double v) {
  if (std::isnan(v)) return "null";
  if (std::isinf(v)) return v > 0 ? "1e308" : "-1e308";
  char b[32];
  snprintf(b, sizeof b, "%.6g", v);
  return b;
}

struct Compare {
  double maxAbs = 0, maxRel = 0;
  bool ok = true;
  bool done = false;
  bool dtypeDiffers = false; // the model's output dtype is not the expected one
};

/// A "Vm..." field of /proc/self/status in KiB (0 where there is none).
long procStatusKb(const char *field) {
  FILE *f = fopen("/proc/self/status", "r");
  if (!f) return 0;
  char line[256];
  long kb = 0;
  size_t n = strlen(field);
  while (fgets(line, sizeof line, f))
    if (!strncmp(line, field, n) && line[n] == ':') kb = atol(line + n + 1);
  fclose(f);
  return kb;
}

/// The profile table: kernels by median time (the top 25 and the rest
/// summed), then the time per kind of block (its label without the shape).
void printProfile(const kiln_model *m, const std::vector<double> &med, int runs) {
  int n = (int)med.size();
  double total = 0;
  for (double v : med) total += v;
  std::vector<int> order(n);
  for (int k = 0; k < n; ++k) order[k] = k;
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return med[a] > med[b]; });
  printf("profile: %d kernels, median of %d runs each, sum %.3f ms\n", n, runs, total);
  printf("%6s %10s %6s %6s %8s  %s\n", "kernel", "ms", "%", "cum%", "GFLOP/s", "label");
  double cum = 0;
  int shown = std::min(n, 25);
  for (int i = 0; i < shown; ++i) {
    int k = order[i];
    cum += med[k];
    double gf = med[k] > 0 ? kiln_model_kernel_flops(m, k) / (med[k] * 1e6) : 0;
    printf("%6d %10.3f %6.1f %6.1f %8.1f  %s\n", k, med[k], 100 * med[k] / total, 100 * cum / total, gf,
           kiln_model_kernel_label(m, k));
  }
  if (n > shown)
    printf("%6s %10.3f %6.1f %6.1f %8s  (%d more kernels)\n", "...", total - cum, 100 * (total - cum) / total,
           100.0, "", n - shown);
  double flops = 0;
  for (int k = 0; k < n; ++k) flops += kiln_model_kernel_flops(m, k);
  if (flops > 0 && total > 0)
    printf("%.3f GFLOP per run, %.1f GFLOP/s over the kernels\n", flops / 1e9, flops / (total * 1e6));
  std::vector<std::pair<std::string, std::pair<double, int>>> kinds;
  for (int k = 0; k < n; ++k) {
    std::string label = kiln_model_kernel_label(m, k);
    std::string kind = label.substr(0, label.rfind(' '));
    auto it = std::find_if(kinds.begin(), kinds.end(), [&](auto &e) { return e.first == kind; });
    if (it == kinds.end()) kinds.push_back({kind, {med[k], 1}});
    else { it->second.first += med[k]; it->second.second++; }
  }
  std::stable_sort(kinds.begin(), kinds.end(), [](auto &a, auto &b) { return a.second.first > b.second.first; });
  printf("by kind of block:\n%10s %6s %6s  %s\n", "ms", "%", "count", "ops");
  for (auto &[kind, v] : kinds)
    printf("%10.3f %6.1f %6d  %s\n", v.first, 100 * v.first / total, v.second, kind.c_str());
}

} // namespace

int main(int argc, char **argv) {
  std::string model, inputsDir, expectDir, outputsDir, device;
  bool listDevices = false;
  double rtol = 1e-3, atol = 1e-4;
  int bench = 0, warmup = 3, threads = 1, profile = 0;
  unsigned seed = 0;
  bool json = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) { fprintf(stderr, "kiln-run: error: %s needs a value\n", a.c_str()); exit(2); }
      return argv[++i];
    };
    auto nextNum = [&](double lo) {
      std::string v = next();
      char *end = nullptr;
      double d = strtod(v.c_str(), &end);
      if (!end || *end || d < lo) { fprintf(stderr, "kiln-run: error: bad value '%s' for %s\n", v.c_str(), a.c_str()); exit(2); }
      return d;
    };
    if (a == "--inputs") inputsDir = next();
    else if (a == "--random") {}
    else if (a == "--seed") seed = (unsigned)nextNum(0);
    else if (a == "--expect") expectDir = next();
    else if (a == "--outputs") outputsDir = next();
    else if (a == "--rtol") rtol = nextNum(0);
    else if (a == "--atol") atol = nextNum(0);
    else if (a == "--bench") bench = (int)nextNum(1);
    else if (a == "--warmup") warmup = (int)nextNum(0);
    else if (a == "--threads") threads = (int)nextNum(1);
    else if (a == "--profile") profile = (int)nextNum(1);
    else if (a == "--json") json = true;
    else if (a == "--device") device = next();
    else if (a == "--list-devices") listDevices = true;
    else if (a == "-h" || a == "--help") { usage(); return 0; }
    else if (!a.empty() && a[0] == '-') { usage(); return fail("unknown option " + a); }
    else if (model.empty()) model = a;
    else return fail("more than one model given");
  }
  if (listDevices) {
    std::vector<char> buf(1 << 16);
    kiln_status s;
    while ((s = kiln_opencl_list_devices(buf.data(), buf.size())) == KILN_ERR_BUFFER) buf.resize(buf.size() * 4);
    if (s != KILN_OK) return fail(kiln_last_error());
    fputs(buf.data(), stdout);
    return 0;
  }
  if (model.empty()) { usage(); return 2; }
  if (!device.empty() && kiln_opencl_select_device(device.c_str()) != KILN_OK) return fail(kiln_last_error());

  kiln_model *m = nullptr;
  if (kiln_model_open(model.c_str(), &m) != KILN_OK) return fail(kiln_last_error());
  // Closed on every return path (destroyed in reverse order: context first).
  std::unique_ptr<kiln_model, void (*)(kiln_model *)> modelGuard(m, kiln_model_close);
  kiln_context *ctx = nullptr;
  if (kiln_context_create(m, &ctx) != KILN_OK) return fail(kiln_last_error());
  std::unique_ptr<kiln_context, void (*)(kiln_context *)> ctxGuard(ctx, kiln_context_destroy);
  if (kiln_context_set_threads(ctx, threads) != KILN_OK) return fail(kiln_last_error());

  int nIn = kiln_model_num_inputs(m), nOut = kiln_model_num_outputs(m);
  std::vector<Tensor> ins(nIn), outs(nOut);
  std::vector<kiln_tensor> inT(nIn), outT(nOut);
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  for (int i = 0; i < nIn; ++i) {
    kiln_tensor_info info;
    kiln_model_input_info(m, i, &info);
    std::vector<int64_t> shape(info.shape, info.shape + info.rank);
    if (!inputsDir.empty()) {
      std::string err;
      if (!kiln::tools::readTensorFile(inputsDir + "/input_" + std::to_string(i) + ".pb", ins[i], err))
        return fail(err);
      if (ins[i].dims != shape)
        return fail("input " + std::to_string(i) + " ('" + info.name + "') has shape " +
                    shapeStr(ins[i].dims) + ", the model expects " + shapeStr(shape));
      // numpy has no bfloat16: ONNX's test data stores its bits as uint16.
      if (info.dtype == KILN_BF16 && ins[i].dtype == KILN_U16) ins[i].dtype = KILN_BF16;
      if (ins[i].dtype != (int32_t)info.dtype)
        return fail("input " + std::to_string(i) + " ('" + info.name + "') has dtype " +
                    std::to_string(ins[i].dtype) + ", the model expects " +
                    std::to_string((int)info.dtype) + " (ONNX TensorProto codes)");
    } else {
      // Seeded random values: floats in [-1, 1), integers in [0, 4), bools 0/1.
      ins[i].dims = shape;
      ins[i].dtype = info.dtype;
      size_t es = kiln_dtype_size(info.dtype), n = info.size_bytes / es;
      ins[i].raw.resize(info.size_bytes);
      for (size_t k = 0; k < n; ++k) {
        char *q = &ins[i].raw[k * es];
        float f = dist(rng);
        int64_t v = (int64_t)((f + 1.0f) * 2.0f);
        switch (info.dtype) {
        case KILN_F32: memcpy(q, &f, 4); break;
        case KILN_F64: { double d = f; memcpy(q, &d, 8); break; }
        case KILN_I64: memcpy(q, &v, 8); break;
        case KILN_I32: { int32_t x = (int32_t)v; memcpy(q, &x, 4); break; }
        case KILN_BOOL: *q = (char)(v & 1); break;
        case KILN_F16: case KILN_BF16: { // round-toward-zero from float (|f| < 1: no overflow)
          uint32_t b;
          memcpy(&b, &f, 4);
          int e = (int)((b >> 23) & 0xff) - 112;
          uint16_t h = info.dtype == KILN_BF16 ? (uint16_t)(b >> 16)
                       : (uint16_t)(((b >> 16) & 0x8000) | (e > 0 ? (e << 10) | ((b >> 13) & 0x3ff) : 0));
          memcpy(q, &h, 2);
          break;
        }
        default: memcpy(q, &v, es); break; // integers, little-endian
        }
      }
    }
    ins[i].name = info.name;
    inT[i] = {ins[i].raw.data(), ins[i].raw.size(), info.dtype, info.rank, info.shape};
  }
  for (int i = 0; i < nOut; ++i) {
    kiln_tensor_info info;
    kiln_model_output_info(m, i, &info);
    outs[i].name = info.name;
    outs[i].dims.assign(info.shape, info.shape + info.rank);
    outs[i].dtype = info.dtype;
    outs[i].raw.assign(info.size_bytes, '\0');
    outT[i] = {outs[i].raw.data(), outs[i].raw.size(), info.dtype, info.rank, info.shape};
  }

  double modelFlops = 0;
  for (int k = 0; k < kiln_model_num_kernels(m); ++k) modelFlops += kiln_model_kernel_flops(m, k);
  // Anonymous resident memory the runs add (the arena pages they touch,
  // kernel scratch, thread stacks), as bench/ compares it with ONNX
  // Runtime's; file pages (the weights, mapped from the library) are left
  // out, as ONNX Runtime's weights are loaded before its runs.
  long rssBefore = procStatusKb("RssAnon");
  auto runOnce = [&]() {
    if (kiln_run(ctx, inT.data(), nIn, outT.data(), nOut) != KILN_OK) {
      fprintf(stderr, "kiln-run: error: %s\n", kiln_last_error());
      exit(2);
    }
  };
  runOnce();

  std::vector<double> times;
  if (bench > 0) {
    for (int i = 0; i < warmup; ++i) runOnce();
    for (int i = 0; i < bench; ++i) {
      auto t0 = std::chrono::steady_clock::now();
      runOnce();
      times.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    }
    std::sort(times.begin(), times.end());
  }

  // Per-kernel profile: median of `profile` runs for each kernel.
  int nKernels = kiln_model_num_kernels(m);
  std::vector<double> kernelMed;
  if (profile > 0) {
    if (nKernels == 0) return fail("the model has no kernel labels (compiled by an older kiln?)");
    if (kiln_context_set_profiling(ctx, 1) != KILN_OK) return fail(kiln_last_error());
    std::vector<std::vector<double>> samples(nKernels);
    std::vector<double> ms(nKernels);
    runOnce();
    for (int r = 0; r < profile; ++r) {
      runOnce();
      if (kiln_context_kernel_times(ctx, ms.data(), ms.size()) != KILN_OK) return fail(kiln_last_error());
      for (int k = 0; k < nKernels; ++k) samples[k].push_back(ms[k]);
    }
    kiln_context_set_profiling(ctx, 0);
    for (auto &v : samples) {
      std::sort(v.begin(), v.end());
      kernelMed.push_back(v[v.size() / 2]);
    }
  }

  long rssGrowth = std::max(0L, procStatusKb("RssAnon") - rssBefore) * 1024;

  std::vector<Compare> cmp(nOut);
  bool allOk = true;
  if (!expectDir.empty()) {
    for (int i = 0; i < nOut; ++i) {
      Tensor exp;
      std::string err;
      if (!kiln::tools::readTensorFile(expectDir + "/output_" + std::to_string(i) + ".pb", exp, err))
        return fail(err);
      Compare &c = cmp[i];
      c.done = true;
      if (outs[i].dtype == KILN_BF16 && exp.dtype == KILN_U16) { // bits, as for inputs
        exp.dtype = KILN_BF16;
        for (size_t k = 0; k < exp.data.size(); ++k) exp.data[k] = (float)kiln::tools::valueAt(exp, k);
      }
      if (exp.dtype != outs[i].dtype) {
        c.dtypeDiffers = true;
        c.ok = false;
        allOk = false;
      }
      size_t count = outs[i].raw.size() / kiln_dtype_size((kiln_dtype)outs[i].dtype);
      if (exp.dims != outs[i].dims) {
        if (exp.data.size() != count)
          return fail("expected output " + std::to_string(i) + " has shape " + shapeStr(exp.dims) +
                      ", the model produces " + shapeStr(outs[i].dims));
      }
      double r = rtol;
      if (outs[i].dtype == KILN_F16) r = std::max(r, std::ldexp(1.0, -10));
      if (outs[i].dtype == KILN_BF16) r = std::max(r, std::ldexp(1.0, -7));
      for (size_t k = 0; k < exp.data.size(); ++k) {
        double e = kiln::tools::valueAt(exp, k), g = kiln::tools::valueAt(outs[i], k);
        if (std::isnan(e) && std::isnan(g)) continue;
        if (std::isinf(e) && e == g) continue;
        double ad = std::fabs(g - e);
        if (std::isnan(ad)) ad = INFINITY;
        double rd = ad / std::max(std::fabs(e), 1e-12);
        c.maxAbs = std::max(c.maxAbs, ad);
        if (std::fabs(e) > atol) c.maxRel = std::max(c.maxRel, rd);
        if (!(ad <= atol + r * std::fabs(e))) c.ok = false;
      }
      allOk &= c.ok;
    }
  }

  if (!outputsDir.empty()) {
    mkdir(outputsDir.c_str(), 0755);
    for (int i = 0; i < nOut; ++i) {
      std::string err;
      if (!kiln::tools::writeTensorFile(outputsDir + "/output_" + std::to_string(i) + ".pb", outs[i], err))
        return fail(err);
    }
  }

  auto pct = [&](double p) { return times[std::min(times.size() - 1, (size_t)(p * (times.size() - 1) + 0.5))]; };
  if (json) {
    std::string s = "{\"ok\": " + std::string(allOk ? "true" : "false") +
                    ", \"model\": " + jsonStr(model) + ", \"threads\": " + std::to_string(threads) +
                    (*kiln_model_device(m) ? ", \"device\": " + jsonStr(kiln_model_device(m)) : "") +
                    ", \"arena_bytes\": " + std::to_string(kiln_model_arena_bytes(m)) +
                    ", \"flops\": " + num(modelFlops) + ", \"anon_rss_growth_bytes\": " +
                    std::to_string(rssGrowth) + ", \"outputs\": [";
    for (int i = 0; i < nOut; ++i) {
      s += std::string(i ? ", " : "") + "{\"name\": " + jsonStr(outs[i].name) +
           ", \"shape\": " + shapeStr(outs[i].dims);
      if (cmp[i].done)
        s += ", \"max_abs_err\": " + num(cmp[i].maxAbs) + ", \"max_rel_err\": " + num(cmp[i].maxRel) +
             ", \"ok\": " + (cmp[i].ok ? "true" : "false");
      s += "}";
    }
    s += "]";
    if (!kernelMed.empty()) {
      s += ", \"kernels\": [";
      for (int k = 0; k < nKernels; ++k)
        s += std::string(k ? ", " : "") + "{\"id\": " + std::to_string(k) + ", \"label\": " +
             jsonStr(kiln_model_kernel_label(m, k)) + ", \"median_ms\": " + num(kernelMed[k]) + "}";
      s += "]";
    }
    if (!times.empty())
      s += ", \"latency_ms\": {\"min\": " + num(times.front()) + ", \"median\": " + num(pct(0.5)) +
           ", \"p90\": " + num(pct(0.9)) + ", \"runs\": " + std::to_string(times.size()) + "}";
    s += "}";
    printf("%s\n", s.c_str());
  } else {
    printf("model %s (%s), %d input(s), %d output(s), arena %zu bytes, %d thread(s)\n", model.c_str(),
           kiln_model_target(m), nIn, nOut, kiln_model_arena_bytes(m), threads);
    if (*kiln_model_device(m)) printf("device %s\n", kiln_model_device(m));
    for (int i = 0; i < nOut; ++i) {
      size_t count = outs[i].raw.size() / kiln_dtype_size((kiln_dtype)outs[i].dtype);
      printf("output %d '%s' %s:", i, outs[i].name.c_str(), shapeStr(outs[i].dims).c_str());
      for (size_t k = 0; k < std::min<size_t>(6, count); ++k)
        printf(" %.6g", kiln::tools::valueAt(outs[i], k));
      printf("%s\n", count > 6 ? " ..." : "");
      if (cmp[i].done)
        printf("  max_abs_err %.3g  max_rel_err %.3g  %s%s\n", cmp[i].maxAbs, cmp[i].maxRel,
               cmp[i].ok ? "OK" : "MISMATCH", cmp[i].dtypeDiffers ? " (dtype differs from the expected)" : "");
    }
    if (!kernelMed.empty()) printProfile(m, kernelMed, profile);
    if (!times.empty())
      printf("latency over %zu runs: min %.3f ms  median %.3f ms  p90 %.3f ms\n", times.size(),
             times.front(), pct(0.5), pct(0.9));
  }
  return allOk ? 0 : 1;
}
