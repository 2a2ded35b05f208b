// The kiln pipeline, in order (docs/architecture.md describes each stage):
//
//   import      .onnx -> kiln dialect (lib/Import/OnnxImporter.cpp)
//   graph       canonicalize + CSE on kiln ops (folds views, dead code)
//   lower       kiln -> linalg/memref + kiln_rt_* calls (passes/LowerKilnToLinalg.cpp)
//   arena       static memory plan (passes/PlanArena.cpp)
//   target      target lowering + emission (lib/Target/*: CPU via LLVM)
#include "kiln/Pipeline.h"
#include "kiln/Dialect/KilnDialect.h"
#include "kiln/Transforms/Passes.h"

#include "mlir/Dialect/Affine/IR/AffineOps.h"
#include "mlir/Dialect/ControlFlow/IR/ControlFlow.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/IR/AsmState.h"
#include "mlir/Pass/PassManager.h"
#include "kiln/Transforms/Weights.h"
#include "mlir/Transforms/Passes.h"
#include "mlir/Conversion/ArithToLLVM/ArithToLLVM.h"
#include "mlir/Conversion/ControlFlowToLLVM/ControlFlowToLLVM.h"
#include "mlir/Conversion/FuncToLLVM/ConvertFuncToLLVM.h"
#include "mlir/Conversion/MemRefToLLVM/MemRefToLLVM.h"
#include "mlir/Conversion/MathToLLVM/MathToLLVM.h"
#include "mlir/Conversion/IndexToLLVM/IndexToLLVM.h"
#include "mlir/Dialect/Index/IR/IndexDialect.h"

#include "llvm/Support/FileSystem.h"
#include "llvm/Support/raw_ostream.h"

#include <fmt/format.h>

#include <chrono>
#include <map>

using namespace mlir;

namespace kiln {

void registerKilnDialects(DialectRegistry &registry) {
  registry.insert<KilnDialect, func::FuncDialect, arith::ArithDialect, math::MathDialect,
                  memref::MemRefDialect, linalg::LinalgDialect, affine::AffineDialect,
                  scf::SCFDialect, cf::ControlFlowDialect, LLVM::LLVMDialect,
                  index::IndexDialect>();
  // Conversion interfaces used by the LLVM lowering passes.
  arith::registerConvertArithToLLVMInterface(registry);
  cf::registerConvertControlFlowToLLVMInterface(registry);
  registerConvertFuncToLLVMInterface(registry);
  registerConvertMemRefToLLVMInterface(registry);
  registerConvertMathToLLVMInterface(registry);
  index::registerConvertIndexToLLVMInterface(registry);
}

namespace {

int64_t countOps(ModuleOp m) {
  int64_t n = 0;
  m.walk([&](Operation *op) {
    if (!isa<ModuleOp>(op)) ++n;
  });
  return n;
}

std::map<std::string, int64_t> opHistogram(ModuleOp m) {
  std::map<std::string, int64_t> h;
  m.walk([&](Operation *op) {
    if (!isa<ModuleOp>(op)) ++h[op->getName().getStringRef().str()];
  });
  return h;
}

struct FusionStats {
  int64_t onnxNodes = 0, opsAfterRewrite = 0, kernels = 0, intermediateBytesSaved = 0;
  int64_t profiled = 0, modelled = 0, dbHits = 0, dbMeasured = 0, convChains = 0;
};

llvm::StringRef hostArch() {
#if defined(__x86_64__)
  return "x86_64";
#elif defined(__aarch64__)
  return "aarch64";
#else
  return "";
#endif
}

class StageRunner {
public:
  StageRunner(const CompileOptions &o) : opts(o) {}
  template <typename Fn> LogicalResult stage(const char *name, ModuleOp &m, Fn &&fn) {
    auto t0 = std::chrono::steady_clock::now();
    LogicalResult r = fn();
    double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    if (opts.verbose)
      llvm::errs() << fmt::format("[kiln] {:<8} {:8.1f} ms  {:6} ops{}\n", name, ms, m ? countOps(m) : 0,
                                  succeeded(r) ? "" : "  FAILED");
    if (opts.stats && succeeded(r) && m)
      counts.push_back({name, countOps(m)});
    return r;
  }
  void printStats() {
    llvm::outs() << "stage        ops\n";
    for (auto &[n, c] : counts)
      llvm::outs() << fmt::format("{:<12} {}\n", n, c);
  }

private:
  const CompileOptions &opts;
  std::vector<std::pair<std::string, int64_t>> counts;
};

std::string dtypeName(Type t) {
  if (t.isF32()) return "f32";
  if (t.isF64()) return "f64";
  if (t.isF16()) return "f16";
  if (t.isBF16()) return "bf16";
  if (isa<Float8E4M3FNType>(t)) return "f8e4m3fn";
  if (isa<Float8E4M3FNUZType>(t)) return "f8e4m3fnuz";
  if (isa<Float8E5M2Type>(t)) return "f8e5m2";
  if (isa<Float8E5M2FNUZType>(t)) return "f8e5m2fnuz";
  if (t.isInteger(1)) return "bool";
  if (auto it = dyn_cast<IntegerType>(t))
    return (it.isUnsigned() ? "u" : "i") + std::to_string(it.getWidth());
  return "unknown";
}

ModelSummary summarize(func::FuncOp fn, ModuleOp m) {
  ModelSummary s;
  auto names = [&](const char *attr) {
    std::vector<std::string> out;
    if (auto a = fn->getAttrOfType<ArrayAttr>(attr))
      for (auto n : a.getAsValueRange<StringAttr>()) out.push_back(n.str());
    return out;
  };
  auto in = names("kiln.input_names"), out = names("kiln.output_names");
  auto ft = fn.getFunctionType();
  for (size_t i = 0; i < ft.getNumInputs(); ++i) {
    auto t = cast<ShapedType>(ft.getInput(i));
    s.inputs.push_back({i < in.size() ? in[i] : "input_" + std::to_string(i),
                        std::vector<int64_t>(t.getShape().begin(), t.getShape().end()),
                        dtypeName(t.getElementType())});
  }
  for (size_t i = 0; i < ft.getNumResults(); ++i) {
    auto t = cast<ShapedType>(ft.getResult(i));
    s.outputs.push_back({i < out.size() ? out[i] : "output_" + std::to_string(i),
                         std::vector<int64_t>(t.getShape().begin(), t.getShape().end()),
                         dtypeName(t.getElementType())});
  }
  (void)m;
  return s;
}

LogicalResult writeText(ModuleOp m, const std::string &path) {
  OpPrintingFlags flags;
  flags.elideLargeElementsAttrs(16);
  flags.elideLargeResourceString(64);
  if (path == "-") {
    m->print(llvm::outs(), flags);
    return success();
  }
  std::string tmp = path + ".kiln-tmp";
  std::error_code ec;
  {
    llvm::raw_fd_ostream os(tmp, ec);
    if (ec)
      return emitError(m.getLoc()) << "cannot write '" << path << "': " << ec.message();
    m->print(os, flags);
  }
  if (auto e = llvm::sys::fs::rename(tmp, path))
    return emitError(m.getLoc()) << "cannot write '" << path << "': " << e.message();
  return success();
}

/// A layer kiln-detect-sparsity annotated (its `kiln.bcr` attribute).
struct SparseLayer {
  std::string name;
  int64_t rows = 0, cols = 0, denseBytes = 0, sparseBytes = 0;
  double sparsity = 0, speedup = 0;
  int64_t br = 0, bc = 0;
  bool exact = false, sparse = false;
};

/// The ONNX node name in a location (the first NameLoc), or "".
std::string nodeName(Location loc) {
  std::string name;
  loc->walk([&](Location l) {
    if (auto n = dyn_cast<NameLoc>(l)) {
      name = n.getName().str();
      return WalkResult::interrupt();
    }
    return WalkResult::advance();
  });
  return name;
}

std::vector<SparseLayer> collectSparseLayers(ModuleOp m) {
  std::vector<SparseLayer> out;
  m.walk([&](Operation *op) {
    auto info = op->getAttrOfType<DictionaryAttr>("kiln.bcr");
    if (!info) return;
    SparseLayer l;
    l.name = nodeName(op->getLoc());
    if (l.name.empty()) l.name = op->getName().getStringRef().str();
    if (auto w = weightMatrix(op)) l.rows = w->rows, l.cols = w->cols;
    l.sparsity = info.getAs<FloatAttr>("sparsity").getValueAsDouble();
    l.speedup = info.getAs<FloatAttr>("speedup").getValueAsDouble();
    auto block = info.getAs<DenseI64ArrayAttr>("block");
    l.br = block[0], l.bc = block[1];
    l.exact = info.getAs<BoolAttr>("exact").getValue();
    l.sparse = info.getAs<BoolAttr>("sparse").getValue();
    l.denseBytes = info.getAs<IntegerAttr>("dense_bytes").getInt();
    l.sparseBytes = info.getAs<IntegerAttr>("sparse_bytes").getInt();
    out.push_back(l);
  });
  return out;
}

void printSparseLayers(const std::vector<SparseLayer> &layers, const std::string &mode) {
  if (mode == "off") {
    llvm::outs() << "sparse layers         none (--sparsity=off)\n";
    return;
  }
  int64_t dense = 0, sparse = 0, n = 0;
  for (const SparseLayer &l : layers)
    if (l.sparse) ++n, dense += l.denseBytes, sparse += l.sparseBytes;
  llvm::outs() << fmt::format("sparse layers         {} of {} with zeros ({} weight bytes instead of {}, {:.1f}%)\n", n,
                              layers.size(), sparse, dense, dense ? 100.0 * sparse / dense : 0.0);
  if (layers.empty()) return;
  llvm::outs() << fmt::format("  {:<28} {:>11} {:>8} {:>7} {:<7} {:>8} {:>10} {:>10}\n", "layer", "W", "sparsity",
                              "block", "code", "model", "dense B", "sparse B");
  for (const SparseLayer &l : layers) {
    std::string block = l.exact ? fmt::format("{}x{}", l.br, l.bc) : l.br ? fmt::format("~{}x{}", l.br, l.bc) : "none";
    std::string name = l.name.size() > 28 ? "..." + l.name.substr(l.name.size() - 25) : l.name;
    llvm::outs() << fmt::format("  {:<28} {:>11} {:>7.1f}% {:>7} {:<7} {:>7.2f}x {:>10} {:>10}\n", name,
                                fmt::format("{}x{}", l.rows, l.cols), 100 * l.sparsity, block,
                                l.sparse ? "sparse" : "dense", l.speedup, l.denseBytes,
                                l.sparseBytes ? std::to_string(l.sparseBytes) : "-");
  }
}

std::string jsonEscape(const std::string &s) {
  std::string o;
  for (char c : s) {
    if (c == '"' || c == '\\') o += '\\';
    if ((unsigned char)c < 0x20) o += fmt::format("\\u{:04x}", (int)c);
    else o += c;
  }
  return o;
}

} // namespace

LogicalResult compileModel(MLIRContext &ctx, const CompileOptions &opts) {
  std::unique_ptr<Target> target = createTarget(opts.target);
  if (!target)
    return emitError(UnknownLoc::get(&ctx))
           << "unknown target '" << opts.target << "' (supported: x86_64, aarch64, opencl)";
  bool device = target->isDevice();
  StageRunner runner(opts);
  auto configure = [&](PassManager &pm) {
    if (opts.printIRAfterAll) {
      ctx.disableMultithreading();
      pm.enableIRPrinting([](Pass *, Operation *) { return false; },
                          [](Pass *, Operation *) { return true; }, true, false);
    }
  };

  ImportedModel model;
  ModuleOp m;
  if (failed(runner.stage("import", m, [&] {
        model = opts.inputBytes ? importOnnxBytes(ctx, *opts.inputBytes, opts.input, opts.import)
                                : importOnnxFile(ctx, opts.input, opts.import);
        if (model.module)
          m = *model.module;
        return success(bool(model.module));
      })))
    return failure();

  if (failed(runner.stage("graph", m, [&] {
        PassManager pm(&ctx);
        configure(pm);
        pm.addPass(createCanonicalizerPass());
        pm.addPass(createCSEPass());
        if (!opts.noRewrite) {
          pm.addNestedPass<func::FuncOp>(createGraphRewrite());
          pm.addPass(createCanonicalizerPass());
          pm.addPass(createCSEPass());
        }
        return pm.run(m);
      })))
    return failure();
  if (opts.emit == EmitKind::MLIR) {
    if (opts.stats) runner.printStats();
    return writeText(m, opts.output);
  }
  FusionStats fstats;
  std::unique_ptr<ProfileDatabase> profileDb;
  fstats.onnxNodes = model.onnxNodes;
  m.walk([&](Operation *op) {
    if (isa<KilnDialect>(op->getDialect()) && !isa<ConstantOp>(op)) ++fstats.opsAfterRewrite;
  });
  // Before fusion: a conv chain (kiln-plan-fusion) takes dense convs only.
  if (failed(runner.stage("sparsity", m, [&] {
        PassManager pm(&ctx);
        configure(pm);
        DetectSparsityOptions so;
        so.mode = opts.sparsity;
        so.winograd = opts.winograd;
        // x86-64 libraries run 16-lane sparse tiles where the CPU has
        // AVX-512 (the machines we measure on); aarch64 NEON has 8 lanes.
        so.lanes = opts.target == "x86_64" ? 16 : 8;
        pm.addPass(createDetectSparsity(so));
        return pm.run(m);
      })))
    return failure();
  if (failed(runner.stage("fusion", m, [&] {
        PassManager pm(&ctx);
        configure(pm);
        PlanFusionOptions fo;
        fo.noFusion = opts.noFusion;
        // Conv chains run on the CPU runtime's Winograd kernel.
        fo.convChains = !device && !opts.noConvChains;
        fo.winograd = opts.winograd;
        // Measured "profile" decisions on the host target only; the
        // analytical model decides otherwise.
        if (!opts.profileDb.empty() && target->name() == hostArch())
          profileDb = openProfileDatabase(ctx, opts.profileDb, target->name().str(), opts.verbose,
                                          opts.winograd);
        else if (!opts.profileDb.empty())
          llvm::errs() << "kiln-compile: note: --profile-db measures on the host only; target "
                       << target->name() << " uses the analytical cost model\n";
        pm.addNestedPass<func::FuncOp>(createPlanFusion(fo, profileDb.get()));
        return pm.run(m);
      })))
    return failure();
  if (auto d = m.lookupSymbol<func::FuncOp>("main")->getAttrOfType<DenseI64ArrayAttr>("kiln.profile_decisions")) {
    fstats.profiled = d[0];
    fstats.modelled = d[1];
  }
  if (auto c = m.lookupSymbol<func::FuncOp>("main")->getAttrOfType<IntegerAttr>("kiln.conv_chains"))
    fstats.convChains = c.getInt();
  if (profileDb) {
    fstats.dbHits = profileDb->hits();
    fstats.dbMeasured = profileDb->measured();
    profileDb.reset(); // writes the file
  }
  m.walk([&](FusedOp f) {
    ++fstats.kernels;
    for (Operation &op : f.getBody().front().without_terminator()) {
      if (isa<ReshapeOp>(op)) continue; // a view: never had its own buffer
      for (Value r : op.getResults())
        if (llvm::none_of(r.getUsers(), [](Operation *u) { return isa<YieldOp>(u); }))
          fstats.intermediateBytesSaved += (int64_t)tensorBytes(r);
    }
  });
  std::vector<SparseLayer> sparseLayers = collectSparseLayers(m);
  if (!opts.fusionReport.empty() && failed(writeFusionReport(m, opts.fusionReport)))
    return failure();
  if (opts.emit == EmitKind::FusedMLIR) {
    if (opts.stats) runner.printStats();
    return writeText(m, opts.output);
  }
  auto mainFn = m.lookupSymbol<func::FuncOp>("main");
  ModelSummary summary = summarize(mainFn, m);
  std::map<std::string, int64_t> graphOps = opHistogram(m);

  if (failed(runner.stage("lower", m, [&] {
        PassManager pm(&ctx);
        configure(pm);
        LowerKilnToLinalgOptions lo;
        lo.portable = device;
        lo.winograd = opts.winograd;
        pm.addPass(createLowerKilnToLinalg(lo));
        // A device target reads every constant from the weights buffer.
        ExtractWeightsOptions wo;
        if (device) wo.minBytes = 1;
        pm.addPass(createExtractWeights(wo));
        pm.addPass(createCSEPass());
        return pm.run(m);
      })))
    return failure();
  if (failed(runner.stage("arena", m, [&] {
        PassManager pm(&ctx);
        configure(pm);
        pm.addPass(createPlanArena());
        return pm.run(m);
      })))
    return failure();
  if (auto labels = m->getAttrOfType<ArrayAttr>("kiln.kernel_labels")) {
    for (auto l : labels.getAsValueRange<StringAttr>()) summary.kernels.push_back(l.str());
    m->removeAttr("kiln.kernel_labels");
  }
  if (auto flops = m->getAttrOfType<ArrayAttr>("kiln.kernel_flops")) {
    for (auto f : flops.getAsRange<IntegerAttr>()) summary.kernelFlops.push_back(f.getInt());
    m->removeAttr("kiln.kernel_flops");
  }
  int64_t modelFlops = 0;
  for (int64_t f : summary.kernelFlops) modelFlops += f;
  auto kmain = m.lookupSymbol<func::FuncOp>("kiln_main");
  summary.arenaBytes = kmain->getAttrOfType<IntegerAttr>("kiln.arena_bytes").getInt();
  int64_t unplanned = kmain->getAttrOfType<IntegerAttr>("kiln.arena_unplanned_bytes").getInt();
  m.walk([&](memref::GlobalOp g) {
    auto type = llvm::dyn_cast<MemRefType>(g.getType());
    if (g.getConstant() && type && type.hasStaticShape() && type.getElementType().isIntOrFloat())
      summary.weightBytes += type.getNumElements() * ((type.getElementTypeBitWidth() + 7) / 8);
  });

  if (failed(runner.stage("to-llvm", m, [&] {
        PassManager pm(&ctx);
        configure(pm);
        target->addLoweringPasses(pm);
        return pm.run(m);
      })))
    return failure();
  if (failed(runner.stage("emit", m, [&] {
        return target->emit(m, summary, opts.emit, opts.optLevel, opts.output, opts.verbose);
      })))
    return failure();

  if (!opts.statsJson.empty()) {
    std::error_code ec;
    llvm::raw_fd_ostream os(opts.statsJson, ec);
    if (ec)
      return emitError(m.getLoc()) << "cannot write '" << opts.statsJson << "': " << ec.message();
    std::string layers;
    for (const SparseLayer &l : sparseLayers)
      layers += fmt::format("{}\n    {{\"name\": \"{}\", \"rows\": {}, \"cols\": {}, \"sparsity\": {:.4f}, "
                            "\"block\": [{}, {}], \"exact\": {}, \"sparse\": {}, \"dense_bytes\": {}, "
                            "\"sparse_bytes\": {}, \"modelled_speedup\": {:.3f}}}",
                            layers.empty() ? "" : ",", jsonEscape(l.name), l.rows, l.cols, l.sparsity, l.br, l.bc,
                            l.exact, l.sparse, l.denseBytes, l.sparseBytes, l.speedup);
    os << fmt::format("{{\n  \"onnx_nodes\": {},\n  \"ops_after_rewrite\": {},\n  \"kernels\": {},\n"
                      "  \"conv_chains\": {},\n  \"intermediate_bytes_saved\": {},\n  \"arena_bytes\": {},\n  \"weight_bytes\": {},\n  \"flops\": {},\n"
                      "  \"sparse_layers\": [{}\n  ]\n}}\n",
                      fstats.onnxNodes, fstats.opsAfterRewrite, fstats.kernels, fstats.convChains,
                      fstats.intermediateBytesSaved, summary.arenaBytes, summary.weightBytes, modelFlops, layers);
  }
  if (opts.stats) {
    runner.printStats();

    llvm::outs() << "kiln ops after graph passes:\n";
    for (auto &[n, c] : graphOps)
      if (llvm::StringRef(n).starts_with("kiln."))
        llvm::outs() << fmt::format("  {:<22} {}\n", n, c);
    llvm::outs() << fmt::format("onnx nodes            {}\n", fstats.onnxNodes);
    llvm::outs() << fmt::format("ops after rewrite     {}\n", fstats.opsAfterRewrite);
    llvm::outs() << fmt::format("kernels (blocks)      {}\n", fstats.kernels);
    llvm::outs() << fmt::format("fusion rate           {:.2f}x (onnx nodes / kernels)\n",
                                fstats.kernels ? (double)fstats.onnxNodes / fstats.kernels : 0.0);
    llvm::outs() << fmt::format("conv chains           {} (a Winograd 3x3 conv and the 1x1 conv after it as "
                                "one kernel; --no-conv-chains: apart)\n", fstats.convChains);
    llvm::outs() << fmt::format("intermediate bytes not written  {}\n", fstats.intermediateBytesSaved);
    llvm::outs() << fmt::format("profile decisions     {} measured ({} answered from the database, {} timed now), "
                                "{} by the cost model\n",
                                fstats.profiled, fstats.dbHits, fstats.dbMeasured, fstats.modelled);
    llvm::outs() << fmt::format("arena bytes           {} (unplanned sum {})\n", summary.arenaBytes,
                                unplanned);
    llvm::outs() << fmt::format("peak activation memory {:.2f} MiB (the arena: every intermediate, "
                                "placed by liveness)\n", summary.arenaBytes / 1048576.0);
    llvm::outs() << fmt::format("model FLOPs           {:.3f} G per inference\n", modelFlops / 1e9);
    llvm::outs() << fmt::format("weight bytes          {} ({:.2f} MiB of constants)\n", summary.weightBytes,
                                summary.weightBytes / 1048576.0);
    printSparseLayers(sparseLayers, opts.sparsity);
  }
  return success();
}

} // namespace kiln
