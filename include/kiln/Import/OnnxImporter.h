// ONNX importer: ModelProto -> a func.func of kiln ops.
#ifndef KILN_IMPORT_ONNXIMPORTER_H
#define KILN_IMPORT_ONNXIMPORTER_H

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/OwningOpRef.h"

#include <map>
#include <memory>
#include <string>
#include <vector>

namespace kiln {

struct ImportOptions {
  /// Pins symbolic (or overrides) input dims: name -> full static shape.
  std::map<std::string, std::vector<int64_t>> inputShapes;
  /// Largest tensor (graph input, intermediate or output) accepted, in bytes;
  /// beyond it the model is refused rather than compiled into a library that
  /// cannot run.
  int64_t maxTensorBytes = int64_t(8) << 30;
  /// Graph inputs replaced by constants: name -> file holding an ONNX
  /// TensorProto. Specialises a model on input values that must be static
  /// (axes, shapes, pads given as inputs).
  std::map<std::string, std::string> frozenInputs;
};

/// Keeps the parsed protobuf alive: weights are referenced, not copied, by
/// the module's dense resource attributes.
struct ImportedModel {
  std::shared_ptr<void> storage;
  mlir::OwningOpRef<mlir::ModuleOp> module;
  int onnxNodes = 0;
  int64_t opset = 0;
};

/// Imports an ONNX file. On failure, every problem has been reported through
/// the context's diagnostic engine (one error per node) and null is returned.
/// The entry function is `@main`; input/output names are recorded in its
/// `kiln.input_names` / `kiln.output_names` attributes.
ImportedModel importOnnxFile(mlir::MLIRContext &ctx, const std::string &path,
                             const ImportOptions &options);

/// Same, from the serialized model in memory (`path` names it in diagnostics
/// and locates external data files).
ImportedModel importOnnxBytes(mlir::MLIRContext &ctx, std::string bytes, const std::string &path,
                              const ImportOptions &options);

/// Oldest and newest default-domain opsets accepted. Below
/// kMinFullOpset only the ops whose semantics never changed are accepted
/// (see legacyOpsetOps in the importer).
constexpr int64_t kMinOpset = 1;
constexpr int64_t kMinFullOpset = 7;
constexpr int64_t kMaxOpset = 21;

} // namespace kiln

#endif
