// The kiln dialect: graph-level ops imported from ONNX (see KilnOps.td).
#ifndef KILN_DIALECT_KILNDIALECT_H
#define KILN_DIALECT_KILNDIALECT_H

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/Dialect.h"
#include "mlir/IR/OpDefinition.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"
#include "mlir/Interfaces/InferTypeOpInterface.h"

namespace kiln {

/// DNNFusion mapping types, ordered by fusion complexity (dnnfusion.md §1).
enum class MappingType { OneToOne, Reorganize, Shuffle, OneToMany, ManyToMany };

llvm::StringRef stringifyMappingType(MappingType t);

/// One-to-One for same-shape operands, One-to-Many when an input broadcasts.
MappingType binaryMappingType(mlir::Operation *op);
/// Verifies numpy broadcasting of a binary op's operands into its result.
mlir::LogicalResult verifyBroadcast(mlir::Operation *op);
/// numpy broadcast of two shapes; failure if they do not broadcast.
mlir::FailureOr<llvm::SmallVector<int64_t>>
broadcastShapes(llvm::ArrayRef<int64_t> a, llvm::ArrayRef<int64_t> b);

} // namespace kiln

#include "kiln/Dialect/KilnDialect.h.inc"
#include "kiln/Dialect/KilnInterfaces.h.inc"

#define GET_OP_CLASSES
#include "kiln/Dialect/KilnOps.h.inc"

#endif
