// The target interface: everything below the buffer-level IR (linalg on
// memrefs + kiln_rt_* calls) is a target's business. The CPU/LLVM target
// implements it now; OpenCL and CUDA implement the same interface later.
#ifndef KILN_TARGET_TARGET_H
#define KILN_TARGET_TARGET_H

#include "mlir/IR/BuiltinOps.h"
#include "mlir/Pass/PassManager.h"

#include <memory>
#include <string>

namespace kiln {

/// MLIR: the graph after rewriting; FusedMLIR: after fusion planning.
enum class EmitKind { MLIR, FusedMLIR, LLVM, Object, SharedLib };

/// What the runtime needs to know about a compiled model; serialised into
/// the library as `kiln_model_meta` (format in runtime/src/model.cpp).
struct ModelSummary {
  struct Tensor {
    std::string name;
    std::vector<int64_t> shape;
    std::string dtype = "f32"; // f32 f64 f16 bf16 i64 i32 i16 i8 u64 u32 u16 u8 bool
  };
  std::vector<Tensor> inputs, outputs;
  int64_t arenaBytes = 0;
  /// Bytes of constant data (weights) the model reads on each run.
  int64_t weightBytes = 0;
  /// One label per kernel (fusion block), in call order, for profiles.
  std::vector<std::string> kernels;
  std::vector<int64_t> kernelFlops; // same order; from the ops' cost interface
};

class Target {
public:
  virtual ~Target() = default;
  virtual llvm::StringRef name() const = 0;
  /// A device target (OpenCL): contractions are lowered to loop nests
  /// (kiln-lower-to-linalg portable) rather than calls into the CPU
  /// runtime's microkernels, and BCR sparsity is off.
  virtual bool isDevice() const { return false; }
  /// Passes lowering the buffer-level module to the target's own IR.
  virtual void addLoweringPasses(mlir::OpPassManager &pm) const = 0;
  /// Writes the lowered module as `kind` to `path` (LLVM IR text, an object
  /// or a shared library). Errors are reported through the module's context.
  virtual mlir::LogicalResult emit(mlir::ModuleOp module, const ModelSummary &summary,
                                   EmitKind kind, int optLevel, const std::string &path,
                                   bool verbose) const = 0;
};

/// "x86_64" (host, AVX2/FMA) or "aarch64" (NEON); null if unknown.
std::unique_ptr<Target> createCpuTarget(llvm::StringRef arch);
/// OpenCL C kernels, one per fusion block, in a host library
/// (lib/Target/OpenCLTarget.cpp).
std::unique_ptr<Target> createOpenCLTarget();
/// Any target by name: a CPU architecture or "opencl"; null if unknown.
std::unique_ptr<Target> createTarget(llvm::StringRef name);

} // namespace kiln

#endif
