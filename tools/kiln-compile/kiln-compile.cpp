// kiln-compile: ONNX model -> shared library (or MLIR / LLVM IR / object).
#include "kiln/Pipeline.h"

#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/Location.h"
#include "mlir/IR/MLIRContext.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/raw_ostream.h"

using namespace llvm;

// Only kiln-compile's own options in --help (LLVM's stay accepted, hidden).
static cl::OptionCategory kilnOptions("kiln-compile options");
static cl::opt<std::string> inputFile(cl::cat(kilnOptions), cl::Positional, cl::desc("<model.onnx>"), cl::Required);
static cl::opt<std::string> outputFile(cl::cat(kilnOptions), "o", cl::desc("Output file"), cl::value_desc("file"));
static cl::opt<std::string> target(cl::cat(kilnOptions), "target", cl::desc("x86_64 (host, AVX2/FMA), aarch64 (NEON) or opencl (OpenCL C kernels; see docs/opencl.md)"),
                                   cl::init("x86_64"));
static cl::opt<std::string> emit(cl::cat(kilnOptions), "emit", cl::desc("Stop after a stage: mlir (graph after rewriting), fused (fusion blocks), source (LLVM IR, or OpenCL C for --target=opencl; llvm is the same), obj, so"),
                                 cl::init("so"));
static cl::opt<char> optLevel(cl::cat(kilnOptions), "O", cl::desc("Optimisation level -O0..-O3 (default 3)"),
                              cl::Prefix, cl::init('3'));
static cl::list<std::string> inputShapes(cl::cat(kilnOptions), "input-shape",
                                         cl::desc("Pin an input's shape: NAME=d0,d1,..."),
                                         cl::value_desc("NAME=d0,d1,..."));
static cl::list<std::string> freezeInputs(
    cl::cat(kilnOptions), "freeze-input",
    cl::desc("Replace graph input NAME by the tensor in FILE (ONNX TensorProto), e.g. axes or "
             "shape inputs that must be static"),
    cl::value_desc("NAME=FILE.pb"));
static cl::opt<int64_t> maxTensorMiB(cl::cat(kilnOptions), "max-tensor-mib",
                                     cl::desc("Refuse models with a tensor larger than this (MiB, default 8192)"),
                                     cl::init(8192));
// LLVM owns "-stats" and "-stats-json"; ours are spelled --stats and
// --stats-json on the command line and renamed before parsing.
static cl::opt<bool> stats(cl::cat(kilnOptions), "kiln-stats", cl::desc("(--stats) Print op counts per stage and the arena size"));
static cl::opt<bool> noRewrite(cl::cat(kilnOptions), "no-rewrite", cl::desc("Skip graph rewriting (kiln-rewrite), for comparison"));
static cl::opt<bool> noFusion(cl::cat(kilnOptions), "no-fusion", cl::desc("One kernel per op instead of fusion blocks, for comparison"));
static cl::opt<bool> noConvChains(
    cl::cat(kilnOptions), "no-conv-chains",
    cl::desc("Keep the fusion table's Conv-then-Conv \"no\": no Winograd 3x3 conv fused with the 1x1 conv "
             "after it (CPU targets)"));
static cl::opt<std::string> statsJson(cl::cat(kilnOptions), "kiln-stats-json", cl::desc("(--stats-json) Write the --stats figures as JSON to FILE"),
                                      cl::value_desc("FILE"));
static cl::opt<std::string> fusionReport(
    cl::cat(kilnOptions), "fusion-report", cl::desc("Draw the fusion plan: FILE.dot, .svg, .png or .html (Graphviz)"),
    cl::value_desc("FILE"));
static cl::opt<std::string> profileDb(
    cl::cat(kilnOptions), "profile-db",
    cl::desc("Decide the fusion table's \"profile\" cells by compiling and timing the candidate "
             "blocks on this machine, kept in FILE for later compilations (host target only)"),
    cl::value_desc("FILE"));
static cl::opt<std::string> sparsity(
    cl::cat(kilnOptions), "sparsity",
    cl::desc("BCR sparse weights: auto (detect, cost model decides per layer), off (all dense), "
             "bcr:RxC (every layer with zeros sparse, RxC blocks)"),
    cl::init("auto"));
static cl::opt<std::string> winograd(
    cl::cat(kilnOptions), "winograd",
    cl::desc("3x3 stride-1 convs by Winograd F(m x m, 3 x 3) on CPU targets: auto (m = 4 or 2 per layer, "
             "convs with at least 16 channels in and out), off (im2col + GEMM), 2 or 4 (every such conv)"),
    cl::init("auto"));
static cl::opt<bool> verbose(cl::cat(kilnOptions), "v", cl::desc("Print each stage with its time and op count"));
static cl::opt<bool> printIR(cl::cat(kilnOptions), "mlir-print-ir-after-all",
                             cl::desc("Print the IR after every pass (to stderr)"));

/// "node 'conv1' (Conv): " for node locations, "" otherwise.
static std::string describe(mlir::Location loc) {
  if (auto fused = dyn_cast<mlir::FusedLoc>(loc)) {
    std::string op;
    if (auto s = dyn_cast_or_null<mlir::StringAttr>(fused.getMetadata())) op = s.str();
    for (auto l : fused.getLocations())
      if (auto n = dyn_cast<mlir::NameLoc>(l))
        return "node '" + n.getName().str() + "'" + (op.empty() ? "" : " (" + op + ")") + ": ";
  }
  if (auto n = dyn_cast<mlir::NameLoc>(loc))
    return "node '" + n.getName().str() + "': ";
  return "";
}

int main(int argc, char **argv) {
  InitLLVM y(argc, argv);
  std::vector<const char *> args(argv, argv + argc);
  std::vector<std::string> renamed;
  renamed.reserve(args.size());
  for (auto &a : args) {
    StringRef s(a);
    if (s == "--stats" || s == "-stats") a = "--kiln-stats";
    else if (s.consume_front("--stats-json") || s.consume_front("-stats-json")) {
      renamed.push_back("--kiln-stats-json" + s.str());
      a = renamed.back().c_str();
    }
  }
  cl::HideUnrelatedOptions(kilnOptions);
  cl::ParseCommandLineOptions((int)args.size(), args.data(), "kiln: ONNX model compiler\n");

  kiln::CompileOptions opts;
  opts.input = inputFile;
  opts.target = target;
  opts.verbose = verbose;
  opts.stats = stats;
  opts.printIRAfterAll = printIR;
  opts.noRewrite = noRewrite;
  opts.noFusion = noFusion;
  opts.noConvChains = noConvChains;
  opts.statsJson = statsJson;
  opts.fusionReport = fusionReport;
  opts.profileDb = profileDb;
  opts.sparsity = sparsity;
  opts.winograd = winograd;
  if (optLevel < '0' || optLevel > '3') {
    errs() << "kiln-compile: error: -O must be 0..3\n";
    return 2;
  }
  opts.optLevel = optLevel - '0';
  StringRef ext;
  if (emit == "mlir") { opts.emit = kiln::EmitKind::MLIR; ext = ".mlir"; }
  else if (emit == "fused") { opts.emit = kiln::EmitKind::FusedMLIR; ext = ".mlir"; }
  else if (emit == "llvm" || emit == "source") {
    opts.emit = kiln::EmitKind::LLVM;
    ext = target == "opencl" ? ".cl" : ".ll";
  }
  else if (emit == "obj") { opts.emit = kiln::EmitKind::Object; ext = ".o"; }
  else if (emit == "so") { opts.emit = kiln::EmitKind::SharedLib; ext = ".so"; }
  else {
    errs() << "kiln-compile: error: --emit must be mlir, fused, source (llvm), obj or so\n";
    return 2;
  }
  for (const std::string &spec : inputShapes) {
    auto [name, dims] = StringRef(spec).rsplit('=');
    std::vector<int64_t> shape;
    bool bad = name.empty() || dims.empty();
    SmallVector<StringRef> parts;
    dims.split(parts, ',');
    for (StringRef p : parts) {
      int64_t d;
      if (p.trim().getAsInteger(10, d) || d <= 0) bad = true;
      shape.push_back(d);
    }
    if (bad) {
      errs() << "kiln-compile: error: bad --input-shape '" << spec << "' (want NAME=d0,d1,...)\n";
      return 2;
    }
    opts.import.inputShapes[name.str()] = shape;
  }
  for (const std::string &spec : freezeInputs) {
    auto [name, file] = StringRef(spec).split('=');
    if (name.empty() || file.empty()) {
      errs() << "kiln-compile: error: bad --freeze-input '" << spec << "' (want NAME=FILE.pb)\n";
      return 2;
    }
    opts.import.frozenInputs[name.str()] = file.str();
  }
  if (maxTensorMiB <= 0 || maxTensorMiB > (int64_t(1) << 40)) {
    errs() << "kiln-compile: error: --max-tensor-mib must be between 1 and 2^40\n";
    return 2;
  }
  opts.import.maxTensorBytes = maxTensorMiB << 20;
  opts.output = outputFile.empty() ? (StringRef(inputFile).rsplit('.').first + ext).str()
                                   : outputFile.getValue();

  mlir::DialectRegistry registry;
  kiln::registerKilnDialects(registry);
  mlir::MLIRContext ctx(registry);
  ctx.loadAllAvailableDialects();
  int errors = 0;
  mlir::ScopedDiagnosticHandler handler(&ctx, [&](mlir::Diagnostic &d) {
    const char *sev = d.getSeverity() == mlir::DiagnosticSeverity::Error     ? "error"
                      : d.getSeverity() == mlir::DiagnosticSeverity::Warning ? "warning"
                                                                             : "note";
    if (d.getSeverity() == mlir::DiagnosticSeverity::Error) ++errors;
    errs() << inputFile << ": " << sev << ": " << describe(d.getLocation()) << d.str() << "\n";
    return mlir::success();
  });
  if (mlir::failed(kiln::compileModel(ctx, opts))) {
    if (errors == 0)
      errs() << inputFile << ": error: compilation failed\n";
    errs() << "kiln-compile: " << (errors ? errors : 1) << " error(s); no output written\n";
    return 1;
  }
  if (verbose)
    errs() << "[kiln] wrote " << opts.output << "\n";
  return 0;
}
