// Declarations of kiln's passes (ODS in Passes.td, one file each in passes/).
#ifndef KILN_TRANSFORMS_PASSES_H
#define KILN_TRANSFORMS_PASSES_H

#include "kiln/Dialect/KilnDialect.h"
#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Pass/Pass.h"

#include <optional>

namespace kiln {

/// Measures the latency of a candidate fusion block (its ops compiled as
/// one kernel) for kiln-plan-fusion's "profile" decisions. The pipeline's
/// implementation keeps a persistent database (kiln-compile --profile-db).
class BlockProfiler {
public:
  virtual ~BlockProfiler() = default;
  /// Seconds per run of `ops` as one kernel, or nullopt when it cannot be
  /// measured (then the analytical model decides).
  virtual std::optional<double> latency(llvm::ArrayRef<mlir::Operation *> ops) = 0;
};

#define GEN_PASS_DECL
#include "kiln/Transforms/Passes.h.inc"

#define GEN_PASS_REGISTRATION
#include "kiln/Transforms/Passes.h.inc"

/// kiln-plan-fusion deciding "profile" cells with measured latencies.
std::unique_ptr<mlir::Pass> createPlanFusion(const PlanFusionOptions &options, BlockProfiler *profiler);
} // namespace kiln

#endif
