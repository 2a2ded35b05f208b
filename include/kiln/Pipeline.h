// The whole compiler pipeline, .onnx -> .so, assembled in one place.
#ifndef KILN_PIPELINE_H
#define KILN_PIPELINE_H

#include "kiln/Import/OnnxImporter.h"
#include "kiln/Target/Target.h"
#include "kiln/Transforms/Passes.h"

#include <optional>
#include <string>

namespace kiln {

struct CompileOptions {
  std::string input;
  /// When set, the serialized model itself (`input` then only names it in
  /// diagnostics): used by the fuzzer.
  std::optional<std::string> inputBytes;
  std::string output;
  std::string target = "x86_64";
  EmitKind emit = EmitKind::SharedLib;
  int optLevel = 3;
  bool verbose = false;        // -v: stage timings and op counts
  bool stats = false;          // --stats: op counts per stage, arena size
  bool printIRAfterAll = false;
  bool noRewrite = false;      // --no-rewrite: skip kiln-rewrite
  bool noFusion = false;       // --no-fusion: one kernel per op
  bool noConvChains = false;   // --no-conv-chains: the fusion table's Conv-Conv "no" kept
  std::string statsJson;       // --stats-json=FILE
  std::string fusionReport;    // --fusion-report=FILE (.dot, .svg, .png, .html)
  std::string profileDb;       // --profile-db=FILE: measure "profile" fusion decisions
  std::string sparsity = "auto"; // --sparsity=auto|off|bcr:RxC (kiln-detect-sparsity)
  std::string winograd = "auto"; // --winograd=auto|off|2|4 (kiln-lower-to-linalg)
  ImportOptions import;
};

/// The persistent profiling database of fusion decisions
/// (lib/Pipeline/Profiler.cpp): measures candidate blocks on the host.
class ProfileDatabase : public BlockProfiler {
public:
  virtual int64_t hits() const = 0;     // answers taken from the file
  virtual int64_t measured() const = 0; // blocks compiled and timed now
};
/// `winograd`: the lowering's Winograd mode (--winograd), which the
/// measured blocks are compiled with and keyed by.
std::unique_ptr<ProfileDatabase> openProfileDatabase(mlir::MLIRContext &ctx, const std::string &path,
                                                     const std::string &target, bool verbose,
                                                     const std::string &winograd = "auto");

/// Draws the fusion plan of a module after kiln-plan-fusion
/// (lib/Pipeline/FusionReport.cpp).
mlir::LogicalResult writeFusionReport(mlir::ModuleOp m, const std::string &path);

/// Registers the dialects the pipeline uses (and only those).
void registerKilnDialects(mlir::DialectRegistry &registry);

/// Runs the pipeline; diagnostics go to the context's handler. Writes the
/// output atomically (nothing is left behind on failure).
mlir::LogicalResult compileModel(mlir::MLIRContext &ctx, const CompileOptions &opts);

} // namespace kiln

#endif
