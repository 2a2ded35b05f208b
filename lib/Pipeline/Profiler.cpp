// The profiling database behind kiln-plan-fusion's "profile" decisions
// (kiln-compile --profile-db=FILE).
//
// A candidate block is keyed by the target and the text of a standalone
// module holding just its ops (op types, shapes and attributes; operand
// order; its constant weights as constants, so that the lowering packs
// them as in the model, with their blob names left out of the key),
// hashed. On a miss the module is compiled like a model (lower,
// arena, target, -O3 shared library in a temporary directory), loaded with
// kiln's runtime, run on constant inputs (one thread; the fastest of 15
// runs after 3 warm-ups, since other load only adds time) and the latency
// is stored. A block of Reshapes only is a view (latency 0). The file is one line per entry,
// "key<TAB>seconds<TAB>ops", read at start and rewritten when entries were
// added, so later compilations reuse every measurement. Only the host
// target is measured; anything that fails to measure falls back to the
// analytical model.
#include "kiln/Pipeline.h"
#include "kiln/Dialect/KilnDialect.h"
#include "kiln/Transforms/Passes.h"

#include "kiln/runtime.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/IRMapping.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Transforms/Passes.h"
#include "llvm/ADT/ScopeExit.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/xxhash.h"
#include "llvm/Support/raw_ostream.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <regex>
#include <vector>

using namespace mlir;

namespace kiln {
namespace {

class HostProfiler : public ProfileDatabase {
public:
  HostProfiler(MLIRContext &ctx, std::string path, std::string target, bool verbose, std::string winograd)
      : ctx(ctx), path(std::move(path)), target(std::move(target)), winograd(std::move(winograd)), verbose(verbose) {
    load();
  }
  ~HostProfiler() override { save(); }

  std::optional<double> latency(ArrayRef<Operation *> ops) override {
    // A block of Reshapes only is a view in the real plan: no kernel.
    if (llvm::all_of(ops, [](Operation *op) { return isa<ReshapeOp>(op); }))
      return 0.0;
    OwningOpRef<ModuleOp> m = standalone(ops);
    if (!m)
      return std::nullopt;
    std::string text;
    {
      llvm::raw_string_ostream os(text);
      m->print(os, OpPrintingFlags().elideLargeElementsAttrs(16));
    }
    // Keyed by shapes, not by which weights: a dense layer's time does not
    // depend on their values, so the weight blobs (the resources section
    // after "{-#") and their names are left out.
    static const std::regex blobName("dense_resource<[^>]*>");
    text = std::regex_replace(text.substr(0, text.find("{-#")), blobName, "dense_resource<>");
    std::string names;
    for (Operation *op : ops)
      names += (names.empty() ? "" : "+") + op->getName().getStringRef().drop_front(5).str();
    // The Winograd mode changes the code of 3x3 convs: it is part of the
    // key unless it is the default.
    if (winograd != "auto") text += "winograd=" + winograd;
    std::string key = fmt::format("{}:{}:{:016x}", target, names, llvm::xxh3_64bits(text));
    if (auto it = db.find(key); it != db.end()) {
      ++nHits;
      return it->second.first;
    }
    if (verbose)
      llvm::errs() << "[kiln] profiling " << names << "\n";
    std::optional<double> t = measure(*m);
    if (!t)
      return std::nullopt;
    db[key] = {*t, names};
    ++nMeasured;
    dirty = true;
    if (verbose)
      llvm::errs() << fmt::format("[kiln] profiled {} : {:.3f} ms\n", names, *t * 1e3);
    return t;
  }

  int64_t hits() const override { return nHits; }
  int64_t measured() const override { return nMeasured; }

private:
  int64_t nHits = 0, nMeasured = 0;
  MLIRContext &ctx;
  std::string path, target, winograd;
  bool verbose;
  bool dirty = false;
  std::map<std::string, std::pair<double, std::string>> db;

  void load() {
    auto buf = llvm::MemoryBuffer::getFile(path);
    if (!buf)
      return; // a new database
    SmallVector<StringRef> lines;
    (*buf)->getBuffer().split(lines, '\n', -1, false);
    for (StringRef line : lines) {
      SmallVector<StringRef> f;
      line.split(f, '\t');
      double t;
      if (f.size() >= 2 && !f[1].getAsDouble(t) && t > 0)
        db[f[0].str()] = {t, f.size() > 2 ? f[2].str() : ""};
    }
  }

  void save() {
    if (!dirty)
      return;
    std::error_code ec;
    std::string tmp = path + ".kiln-tmp";
    {
      llvm::raw_fd_ostream os(tmp, ec);
      if (ec) {
        llvm::errs() << "kiln-compile: warning: cannot write profile database '" << path
                     << "': " << ec.message() << "\n";
        return;
      }
      for (auto &[k, v] : db) os << k << "\t" << fmt::format("{:.9g}", v.first) << "\t" << v.second << "\n";
    }
    llvm::sys::fs::rename(tmp, path);
  }

  /// func @main(block inputs) -> block outputs, holding `ops` as one
  /// kiln.fused block (an empty module when they cannot stand alone).
  OwningOpRef<ModuleOp> standalone(ArrayRef<Operation *> unordered) {
    // Program order, so every op is cloned after its operands.
    SmallVector<Operation *> ops(unordered);
    llvm::sort(ops, [](Operation *a, Operation *b) { return a->isBeforeInBlock(b); });
    DenseSet<Operation *> in(ops.begin(), ops.end());
    SmallVector<Value> inputs, outputs;
    SmallVector<Operation *> constants;
    DenseSet<Value> seen;
    for (Operation *op : ops) {
      for (Value v : op->getOperands()) {
        if ((v.getDefiningOp() && in.count(v.getDefiningOp())) || !seen.insert(v).second) continue;
        // Constants (weights) stay constants, as in the model: the
        // lowering packs them, or transforms them for Winograd, at
        // compile time. As inputs, a conv block was measured on the
        // unpacked im2col path (ResNet-50's 3x3 convs 2x their time).
        if (auto c = v.getDefiningOp<ConstantOp>()) constants.push_back(c.getOperation());
        else inputs.push_back(v);
      }
      for (Value r : op->getResults())
        if (r.use_empty() || llvm::any_of(r.getUsers(), [&](Operation *u) { return !in.count(u); }))
          outputs.push_back(r);
    }
    if (outputs.empty())
      outputs.push_back(ops.back()->getResult(0));
    for (Value v : llvm::concat<Value>(inputs, outputs)) {
      auto t = dyn_cast<RankedTensorType>(v.getType());
      if (!t || !t.hasStaticShape() || !t.getElementType().isF32())
        return nullptr; // measure float blocks only
    }
    OpBuilder b(&ctx);
    auto loc = b.getUnknownLoc();
    OwningOpRef<ModuleOp> m = ModuleOp::create(loc);
    b.setInsertionPointToEnd(m->getBody());
    SmallVector<Type> inTypes, outTypes;
    for (Value v : inputs) inTypes.push_back(v.getType());
    for (Value v : outputs) outTypes.push_back(v.getType());
    auto fn = b.create<func::FuncOp>(loc, "main", b.getFunctionType(inTypes, outTypes));
    Block *entry = fn.addEntryBlock();
    b.setInsertionPointToStart(entry);
    // Constants outside the block, read through its arguments (as the
    // planner leaves them).
    SmallVector<Value> operands(entry->getArguments());
    for (Operation *c : constants) operands.push_back(b.clone(*c)->getResult(0));
    auto fused = b.create<FusedOp>(loc, outTypes, operands, b.getI64IntegerAttr(0));
    Block *body = b.createBlock(&fused.getBody());
    IRMapping map;
    for (Value v : inputs) map.map(v, body->addArgument(v.getType(), loc));
    for (Operation *c : constants) map.map(c->getResult(0), body->addArgument(c->getResult(0).getType(), loc));
    for (Operation *op : ops) b.clone(*op, map);
    SmallVector<Value> yielded;
    for (Value v : outputs) yielded.push_back(map.lookup(v));
    b.create<YieldOp>(loc, yielded);
    b.setInsertionPointToEnd(entry);
    b.create<func::ReturnOp>(loc, fused.getResults());
    return m;
  }

  /// Compiles the standalone module to a library and times it.
  std::optional<double> measure(ModuleOp original) {
    OwningOpRef<ModuleOp> m(original.clone());
    std::unique_ptr<Target> tgt = createCpuTarget(target);
    PassManager pm(&ctx);
    LowerKilnToLinalgOptions lo;
    lo.winograd = winograd;
    pm.addPass(createLowerKilnToLinalg(lo));
    pm.addPass(createExtractWeights());
    pm.addPass(createCSEPass());
    pm.addPass(createPlanArena());
    ModelSummary summary;
    auto fn = m->lookupSymbol<func::FuncOp>("main");
    for (Type t : fn.getFunctionType().getInputs())
      summary.inputs.push_back({"in" + std::to_string(summary.inputs.size()),
                                std::vector<int64_t>(cast<ShapedType>(t).getShape().begin(),
                                                     cast<ShapedType>(t).getShape().end()),
                                "f32"});
    for (Type t : fn.getFunctionType().getResults())
      summary.outputs.push_back({"out" + std::to_string(summary.outputs.size()),
                                 std::vector<int64_t>(cast<ShapedType>(t).getShape().begin(),
                                                      cast<ShapedType>(t).getShape().end()),
                                 "f32"});
    // Diagnostics of a failed measurement are not the model's: silence them.
    ScopedDiagnosticHandler quiet(&ctx, [](Diagnostic &) { return success(); });
    if (failed(pm.run(*m)))
      return std::nullopt;
    // The arena size must be read before the target lowering rewrites
    // @kiln_main: the runtime allocates exactly this much.
    auto kmain = m->lookupSymbol<func::FuncOp>("kiln_main");
    auto arena = kmain ? kmain->getAttrOfType<IntegerAttr>("kiln.arena_bytes") : nullptr;
    if (!arena)
      return std::nullopt;
    summary.arenaBytes = arena.getInt();
    PassManager lowerPm(&ctx);
    tgt->addLoweringPasses(lowerPm);
    if (failed(lowerPm.run(*m)))
      return std::nullopt;
    SmallString<128> lib;
    if (llvm::sys::fs::createTemporaryFile("kiln-profile", "so", lib))
      return std::nullopt;
    auto cleanup = llvm::make_scope_exit([&] { llvm::sys::fs::remove(lib); });
    if (failed(tgt->emit(*m, summary, EmitKind::SharedLib, 3, std::string(lib), false)))
      return std::nullopt;
    return run(std::string(lib), summary);
  }

  static std::optional<double> run(const std::string &lib, const ModelSummary &summary) {
    kiln_model *model = nullptr;
    if (kiln_model_open(lib.c_str(), &model) != KILN_OK)
      return std::nullopt;
    auto closeModel = llvm::make_scope_exit([&] { kiln_model_close(model); });
    kiln_context *cx = nullptr;
    if (kiln_context_create(model, &cx) != KILN_OK)
      return std::nullopt;
    auto closeCx = llvm::make_scope_exit([&] { kiln_context_destroy(cx); });
    std::vector<std::vector<float>> data;
    std::vector<kiln_tensor> ins, outs;
    for (auto *group : {&summary.inputs, &summary.outputs})
      for (auto &t : *group) {
        size_t n = 1;
        for (int64_t d : t.shape) n *= (size_t)d;
        data.emplace_back(n, 0.5f);
      }
    size_t k = 0;
    for (auto *group : {&summary.inputs, &summary.outputs})
      for (auto &t : *group) {
        kiln_tensor kt{data[k].data(), data[k].size() * sizeof(float), KILN_F32, (int32_t)t.shape.size(),
                       t.shape.data()};
        (group == &summary.inputs ? ins : outs).push_back(kt);
        ++k;
      }
    std::vector<double> times;
    for (int i = 0; i < 18; ++i) {
      auto t0 = std::chrono::steady_clock::now();
      if (kiln_run(cx, ins.data(), ins.size(), outs.data(), outs.size()) != KILN_OK)
        return std::nullopt;
      double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (i >= 3) times.push_back(s);
    }
    // The fastest run: other load on the machine only ever adds time.
    return *std::min_element(times.begin(), times.end());
  }
};

} // namespace

std::unique_ptr<ProfileDatabase> openProfileDatabase(MLIRContext &ctx, const std::string &path,
                                                     const std::string &target, bool verbose,
                                                     const std::string &winograd) {
  return std::make_unique<HostProfiler>(ctx, path, target, verbose, winograd);
}

} // namespace kiln
