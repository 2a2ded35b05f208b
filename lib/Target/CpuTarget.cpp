// The CPU target through LLVM: x86-64 (x86-64-v3: AVX2, FMA) and aarch64
// (NEON). Lowers the buffer-level module to the LLVM dialect, translates it
// to LLVM IR in-process, adds the runtime entry points, optimises with the
// new pass manager, emits an object through a TargetMachine and links a
// shared library with the system (or aarch64 cross) linker driver.
#include "kiln/Target/Target.h"
#include "kiln/Transforms/Passes.h"

#include "mlir/Conversion/AffineToStandard/AffineToStandard.h"
#include "mlir/IR/BuiltinDialect.h"
#include "mlir/IR/DialectResourceBlobManager.h"
#include "mlir/Conversion/ArithToLLVM/ArithToLLVM.h"
#include "mlir/Conversion/ControlFlowToLLVM/ControlFlowToLLVM.h"
#include "mlir/Conversion/FuncToLLVM/ConvertFuncToLLVMPass.h"
#include "mlir/Conversion/MathToLLVM/MathToLLVM.h"
#include "mlir/Conversion/MathToLibm/MathToLibm.h"
#include "mlir/Conversion/MemRefToLLVM/MemRefToLLVM.h"
#include "mlir/Conversion/ReconcileUnrealizedCasts/ReconcileUnrealizedCasts.h"
#include "mlir/Conversion/SCFToControlFlow/SCFToControlFlow.h"
#include "mlir/Dialect/Arith/Transforms/Passes.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/Linalg/Passes.h"
#include "mlir/Dialect/MemRef/Transforms/Passes.h"
#include "mlir/Target/LLVMIR/Dialect/Builtin/BuiltinToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Dialect/LLVMIR/LLVMToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Export.h"
#include "mlir/Transforms/Passes.h"

#include "llvm/ADT/ScopeExit.h"
#include "llvm/IR/IRBuilder.h"
#include "llvm/IR/LegacyPassManager.h"
#include "llvm/IR/Module.h"
#include "llvm/MC/TargetRegistry.h"
#include "llvm/Passes/PassBuilder.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Program.h"
#include "llvm/Support/TargetSelect.h"
#include "llvm/Support/raw_ostream.h"
#include "llvm/Target/TargetMachine.h"
#include "llvm/Target/TargetOptions.h"

#include <cstdio>

using namespace mlir;

namespace kiln {
namespace {

/// Version of the contract between compiled libraries and the runtime
/// (runtime/include/kiln/runtime.h: KILN_MODEL_ABI_VERSION).
constexpr uint32_t kModelAbiVersion = 2;

std::string escapeName(const std::string &s) {
  std::string out;
  for (unsigned char c : s) {
    if (c <= ' ' || c == '%' || c >= 127) {
      char buf[4];
      snprintf(buf, sizeof buf, "%%%02X", c);
      out += buf;
    } else {
      out += (char)c;
    }
  }
  return out.empty() ? "%" : out;
}

} // namespace

std::string serializeModelSummary(const ModelSummary &s, llvm::StringRef target) {
  std::string m = "kiln-model 1\ntarget " + target.str() + "\narena " + std::to_string(s.arenaBytes) +
                  "\nweights " + std::to_string(s.weightBytes) + "\n";
  auto add = [&](const char *kind, const ModelSummary::Tensor &t) {
    m += std::string(kind) + " " + escapeName(t.name) + " " + t.dtype + " " +
         std::to_string(t.shape.size());
    for (int64_t d : t.shape) m += " " + std::to_string(d);
    m += "\n";
  };
  for (auto &t : s.inputs) add("input", t);
  for (auto &t : s.outputs) add("output", t);
  for (size_t i = 0; i < s.kernels.size(); ++i)
    m += "kernel " + escapeName(s.kernels[i]) + " " +
         std::to_string(i < s.kernelFlops.size() ? s.kernelFlops[i] : 0) + "\n";
  return m;
}

namespace {

class CpuTarget : public Target {
public:
  CpuTarget(std::string arch, std::string triple, std::string cpu, std::string features,
            std::string linker)
      : arch(std::move(arch)), triple(std::move(triple)), cpu(std::move(cpu)),
        features(std::move(features)), linker(std::move(linker)) {}

  llvm::StringRef name() const override { return arch; }

  void addLoweringPasses(OpPassManager &pm) const override {
    // Large loop nests of generated kernels on the thread pool; then every
    // other linalg op as serial loops.
    pm.addPass(createParallelizeKernels());
    pm.addNestedPass<func::FuncOp>(createConvertLinalgToLoopsPass());
    pm.addPass(createLowerAffinePass());
    pm.addPass(createConvertSCFToCFPass());
    pm.addPass(createCanonicalizerPass());
    pm.addPass(memref::createExpandStridedMetadataPass());
    pm.addPass(createLowerAffinePass());
    pm.addPass(createApproximateMath()); // erf, tanh: vectorisable polynomials
    pm.addPass(createConvertMathToLLVMPass());
    pm.addPass(createConvertMathToLibmPass());
    arith::ArithExpandOpsPassOptions expand;
    expand.includeBf16 = true; // bf16 <-> f32 as bit operations (no libgcc helper)
    pm.addPass(arith::createArithExpandOpsPass(expand));
    pm.addPass(createArithToLLVMConversionPass());
    pm.addPass(createFinalizeMemRefToLLVMConversionPass());
    ConvertFuncToLLVMPassOptions funcOpts;
    funcOpts.useBarePtrCallConv = true; // static shapes: memrefs are plain pointers
    pm.addPass(createConvertFuncToLLVMPass(funcOpts));
    pm.addPass(createConvertControlFlowToLLVMPass());
    pm.addPass(createReconcileUnrealizedCastsPass());
  }

  LogicalResult emit(ModuleOp module, const ModelSummary &summary, EmitKind kind, int optLevel,
                     const std::string &path, bool verbose) const override;

private:
  std::string arch, triple, cpu, features, linker;
  llvm::TargetMachine *machine(int optLevel, std::string &err) const;
};

llvm::TargetMachine *CpuTarget::machine(int optLevel, std::string &err) const {
  static bool init = [] {
    LLVMInitializeX86TargetInfo();
    LLVMInitializeX86Target();
    LLVMInitializeX86TargetMC();
    LLVMInitializeX86AsmPrinter();
    LLVMInitializeAArch64TargetInfo();
    LLVMInitializeAArch64Target();
    LLVMInitializeAArch64TargetMC();
    LLVMInitializeAArch64AsmPrinter();
    return true;
  }();
  (void)init;
  const llvm::Target *t = llvm::TargetRegistry::lookupTarget(triple, err);
  if (!t)
    return nullptr;
  llvm::TargetOptions to;
  to.AllowFPOpFusion = llvm::FPOpFusion::Fast; // form FMAs
  auto level = optLevel == 0   ? llvm::CodeGenOptLevel::None
               : optLevel == 1 ? llvm::CodeGenOptLevel::Less
               : optLevel == 2 ? llvm::CodeGenOptLevel::Default
                               : llvm::CodeGenOptLevel::Aggressive;
  return t->createTargetMachine(triple, cpu, features, to, llvm::Reloc::PIC_, std::nullopt, level);
}

LogicalResult CpuTarget::emit(ModuleOp module, const ModelSummary &summary, EmitKind kind,
                              int optLevel, const std::string &path, bool verbose) const {
  MLIRContext *ctx = module.getContext();
  auto fail = [&](const llvm::Twine &msg) {
    emitError(module.getLoc()) << msg;
    return failure();
  };
  // Everything must be in the LLVM dialect now; mlir-opt-style pipelines do
  // not fail on leftovers, so check.
  Operation *leftover = nullptr;
  module.walk([&](Operation *op) {
    if (!leftover && !isa<ModuleOp>(op) && !isa<LLVM::LLVMDialect>(op->getDialect()))
      leftover = op;
  });
  if (leftover)
    return leftover->emitError("internal error: op was not lowered to LLVM: ")
           << leftover->getName();

  // The weights blob (kiln-extract-weights) goes into a data section of its
  // own, assembled from the raw bytes, never through LLVM IR.
  ArrayRef<char> weights;
  if (auto w = module->getAttrOfType<DenseResourceElementsAttr>("kiln.weights")) {
    if (auto *blob = w.getRawHandle().getBlob())
      weights = blob->getData();
  }
  module->removeAttr("kiln.weights");

  DialectRegistry registry;
  registerBuiltinDialectTranslation(registry);
  registerLLVMDialectTranslation(registry);
  ctx->appendDialectRegistry(registry);
  llvm::LLVMContext llctx;
  auto llmod = translateModuleToLLVMIR(module, llctx, "kiln_model");
  if (!llmod)
    return fail("translation to LLVM IR failed");

  std::string err;
  std::unique_ptr<llvm::TargetMachine> tm(machine(optLevel, err));
  if (!tm)
    return fail("cannot create target machine for " + triple + ": " + err);
  llmod->setTargetTriple(triple);
  llmod->setDataLayout(tm->createDataLayout());

  // Entry points the runtime looks up: the ABI version, the metadata and
  // kiln_model_run(void **buffers) with buffers = {arena, inputs..., outputs...}.
  llvm::Function *mainFn = llmod->getFunction("kiln_main");
  if (!mainFn)
    return fail("internal error: no kiln_main");
  auto *ptrTy = llvm::PointerType::get(llctx, 0);
  auto *runTy = llvm::FunctionType::get(llvm::Type::getVoidTy(llctx), {ptrTy}, false);
  auto *run = llvm::Function::Create(runTy, llvm::Function::ExternalLinkage, "kiln_model_run",
                                     llmod.get());
  llvm::IRBuilder<> irb(llvm::BasicBlock::Create(llctx, "entry", run));
  std::vector<llvm::Value *> args;
  for (unsigned i = 0; i < mainFn->arg_size(); ++i) {
    llvm::Value *slot = irb.CreateConstGEP1_64(ptrTy, run->getArg(0), i);
    args.push_back(irb.CreateLoad(ptrTy, slot));
  }
  irb.CreateCall(mainFn, args);
  irb.CreateRetVoid();
  mainFn->setLinkage(llvm::GlobalValue::InternalLinkage);
  new llvm::GlobalVariable(*llmod, llvm::Type::getInt32Ty(llctx), true,
                           llvm::GlobalValue::ExternalLinkage,
                           llvm::ConstantInt::get(llvm::Type::getInt32Ty(llctx), kModelAbiVersion),
                           "kiln_model_abi_version");
  std::string meta = serializeModelSummary(summary, arch);
  auto *metaInit = llvm::ConstantDataArray::getString(llctx, meta, true);
  new llvm::GlobalVariable(*llmod, metaInit->getType(), true, llvm::GlobalValue::ExternalLinkage,
                           metaInit, "kiln_model_meta");

  if (optLevel > 0) {
    llvm::LoopAnalysisManager lam;
    llvm::FunctionAnalysisManager fam;
    llvm::CGSCCAnalysisManager cgam;
    llvm::ModuleAnalysisManager mam;
    llvm::PassBuilder pb(tm.get());
    pb.registerModuleAnalyses(mam);
    pb.registerCGSCCAnalyses(cgam);
    pb.registerFunctionAnalyses(fam);
    pb.registerLoopAnalyses(lam);
    pb.crossRegisterProxies(lam, fam, cgam, mam);
    auto level = optLevel == 1   ? llvm::OptimizationLevel::O1
                 : optLevel == 2 ? llvm::OptimizationLevel::O2
                                 : llvm::OptimizationLevel::O3;
    llvm::ModulePassManager mpm = pb.buildPerModuleDefaultPipeline(level);
    mpm.run(*llmod, mam);
  }

  std::string tmp = path + ".kiln-tmp";
  auto writeFile = [&](const std::string &file, auto &&fn) -> LogicalResult {
    std::error_code ec;
    llvm::raw_fd_ostream os(file, ec, llvm::sys::fs::OF_None);
    if (ec)
      return fail("cannot write '" + file + "': " + ec.message());
    if (failed(fn(os)))
      return failure();
    os.close();
    if (os.has_error())
      return fail("error writing '" + file + "'");
    return success();
  };
  auto emitObject = [&](llvm::raw_pwrite_stream &os) -> LogicalResult {
    llvm::legacy::PassManager cg;
    if (tm->addPassesToEmitFile(cg, os, nullptr, llvm::CodeGenFileType::ObjectFile))
      return fail("target cannot emit an object file");
    cg.run(*llmod);
    return success();
  };

  // Weights object: raw bytes written to a file and pulled in with .incbin.
  llvm::SmallString<128> weightsBin, weightsAsm, weightsObj;
  auto cleanupWeights = llvm::make_scope_exit([&] {
    for (auto *f : {&weightsBin, &weightsAsm, &weightsObj})
      if (!f->empty()) llvm::sys::fs::remove(*f);
  });
  auto findLinker = [&]() -> std::optional<std::string> {
    auto prog = llvm::sys::findProgramByName(linker);
    if (!prog) {
      (void)fail("linker '" + linker + "' not found (install it; see scripts/setup.sh)");
      return std::nullopt;
    }
    return *prog;
  };
  auto runTool = [&](llvm::ArrayRef<llvm::StringRef> argv) -> LogicalResult {
    if (verbose) {
      llvm::errs() << "[kiln] run:";
      for (auto a : argv) llvm::errs() << " " << a;
      llvm::errs() << "\n";
    }
    std::string msg;
    int rc = llvm::sys::ExecuteAndWait(argv[0], argv, std::nullopt, {}, 0, 0, &msg);
    if (rc != 0)
      return fail("'" + argv[0] + "' failed (exit " + std::to_string(rc) + ") " + msg);
    return success();
  };
  if (!weights.empty() && kind != EmitKind::LLVM) {
    int fd;
    if (llvm::sys::fs::createTemporaryFile("kiln-weights", "bin", fd, weightsBin) ||
        llvm::sys::fs::createTemporaryFile("kiln-weights", "S", weightsAsm) ||
        llvm::sys::fs::createTemporaryFile("kiln-weights", "o", weightsObj))
      return fail("cannot create temporary files for the weights");
    {
      llvm::raw_fd_ostream os(fd, /*shouldClose=*/true);
      os.write(weights.data(), weights.size());
    }
    std::error_code ec;
    llvm::raw_fd_ostream as(weightsAsm, ec);
    if (ec)
      return fail("cannot write the weights section: " + ec.message());
    as << "\t.section .rodata.kiln_weights,\"a\"\n\t.balign 64\n\t.globl kiln_model_weights\n"
       << "\t.hidden kiln_model_weights\nkiln_model_weights:\n\t.incbin \"" << weightsBin << "\"\n"
       << "\t.section .note.GNU-stack,\"\",%progbits\n";
    as.close();
    auto prog = findLinker();
    if (!prog)
      return failure();
    if (failed(runTool({*prog, "-c", "-o", weightsObj, weightsAsm})))
      return failure();
  }

  if (kind == EmitKind::LLVM && path == "-") {
    llmod->print(llvm::outs(), nullptr);
    return success();
  }
  if (kind == EmitKind::LLVM) {
    if (failed(writeFile(tmp, [&](llvm::raw_fd_ostream &os) {
          llmod->print(os, nullptr);
          return success();
        })))
      return failure();
  } else if (kind == EmitKind::Object && weightsObj.empty()) {
    if (failed(writeFile(tmp, emitObject)))
      return failure();
  } else {
    llvm::SmallString<128> obj;
    if (llvm::sys::fs::createTemporaryFile("kiln", "o", obj))
      return fail("cannot create a temporary file");
    auto cleanup = llvm::make_scope_exit([&] { llvm::sys::fs::remove(obj); });
    if (failed(writeFile(obj.str().str(), emitObject)))
      return failure();
    auto prog = findLinker();
    if (!prog)
      return failure();
    // A relocatable object (code + weights) for --emit=obj, else a shared library.
    llvm::SmallVector<llvm::StringRef> argv{*prog};
    if (kind == EmitKind::Object)
      argv.append({"-r", "-nostdlib"});
    else
      argv.append({"-shared", "-Wl,-z,noexecstack"});
    argv.append({"-o", tmp, obj});
    if (!weightsObj.empty())
      argv.push_back(weightsObj);
    if (kind != EmitKind::Object)
      argv.push_back("-lm");
    if (failed(runTool(argv))) {
      llvm::sys::fs::remove(tmp);
      return failure();
    }
  }
  if (auto ec = llvm::sys::fs::rename(tmp, path)) {
    llvm::sys::fs::remove(tmp);
    return fail("cannot write '" + path + "': " + ec.message());
  }
  return success();
}

} // namespace

std::unique_ptr<Target> createCpuTarget(llvm::StringRef arch) {
  if (arch == "x86_64" || arch == "x86-64" || arch == "host")
    return std::make_unique<CpuTarget>("x86_64", "x86_64-unknown-linux-gnu", "x86-64-v3", "", "cc");
  if (arch == "aarch64" || arch == "arm64")
    return std::make_unique<CpuTarget>("aarch64", "aarch64-unknown-linux-gnu", "generic", "+neon",
                                       "aarch64-linux-gnu-gcc");
  return nullptr;
}

} // namespace kiln
