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

#include <optional>
#include <string>

namespace kiln {

/// DNNFusion mapping types, ordered by fusion complexity (dnnfusion.md §1).
enum class MappingType { OneToOne, Reorganize, Shuffle, OneToMany, ManyToMany };

llvm::StringRef stringifyMappingType(MappingType t);

/// Algebraic properties an op may have (dnnfusion.md section 3). The graph
/// rewriter matches rules on them; an op with none cuts the rewriting
/// partitions.
enum AlgebraicProperty : unsigned {
  Associative = 1u << 0,    // (a op b) op c = a op (b op c)
  Commutative = 1u << 1,    // a op b = b op a
  Distributive = 1u << 2,   // distributes over Add/Sub: (a + b) op c = a op c + b op c
  Linear = 1u << 3,         // f(a + b) = f(a) + f(b) and f(k a) = k f(a)
  Multiplicative = 1u << 4, // f(a b) = f(a) f(b)
  ExpLog = 1u << 5,         // turns sums into products or back: exp(a + b) = exp(a) exp(b)
  DataMovement = 1u << 6,   // moves elements only: commutes with every elementwise op
};
/// "associative, commutative, ..." for the op table; "-" for none.
std::string stringifyAlgebra(unsigned mask);

/// The cost model's figures for one op run alone: floating-point
/// operations, and bytes read (operands) plus written (results).
struct OpCost {
  double flops = 0;
  double bytes = 0;
  OpCost &operator+=(const OpCost &o) {
    flops += o.flops;
    bytes += o.bytes;
    return *this;
  }
};
/// Bytes of a statically shaped tensor value (bool counts one byte).
double tensorBytes(mlir::Value v);
/// flopsPerElement x result elements; bytes of all operands and results.
OpCost defaultCost(mlir::Operation *op, double flopsPerElement);
/// The cost of any op: the interface's answer for kiln ops, a data-movement
/// estimate for anything else.
OpCost opCost(mlir::Operation *op);
/// The fusion table (dnnfusion.md section 2): may a producer of mapping
/// type `first` fuse with a consumer of type `second`?
enum class FusionDecision { Fuse, Profile, No };
FusionDecision fusionDecision(MappingType first, MappingType second);
/// The mapping type of the fused pair.
MappingType fusedMappingType(MappingType first, MappingType second);
llvm::StringRef stringifyFusionDecision(FusionDecision d);

/// Ops whose result element at index i is a scalar function of one element
/// of each operand, at an index that is an affine function of i
/// (elementwise ops with broadcasting, Where, Cast, Expand, Transpose,
/// Reshape, Slice). Fusion blocks compute chains of them in one loop nest.
bool isPointwise(mlir::Operation *op);
/// Pointwise ops that compute (not only move) elements.
bool isElementwiseMath(mlir::Operation *op);

/// One of the float8 formats (stored as bytes; Cast and quantization only).
inline bool isFloat8(mlir::Type t) { return mlir::isa<mlir::FloatType>(t) && t.getIntOrFloatBitWidth() == 8; }

/// Where a MatMul result of shape `shape` ([batch..., M, N]) lands when it
/// is written through Transpose(perm) into a contiguous buffer: the stride
/// between batches (the batch dims flattened) and between rows. nullopt when
/// the layout is not one a strided GEMM can write (N must stay innermost).
struct MatMulOutLayout {
  int64_t batchStride, rowStride;
};
std::optional<MatMulOutLayout> transposedMatMulLayout(llvm::ArrayRef<int64_t> shape,
                                                      llvm::ArrayRef<int64_t> perm);

/// A MatMul operand ([batch..., rows, cols]) read in place from the
/// row-major buffer of `source` through a chain of Slice (positive steps),
/// Reshape and Transpose ops: element [b][i][j] is at offset +
/// b * batchStride + i * rowStride + j * colStride (in elements; the batch
/// dims flattened), with rowStride or colStride 1, so a strided GEMM reads
/// it (transposed when rowStride is 1). E.g. attention's K: Slice of the
/// QKV projection -> Reshape to heads -> Transpose.
struct StridedOperand {
  mlir::Value source;
  int64_t offset, batchStride, rowStride, colStride;
  /// The chain's ops, from the operand's producer back to the source.
  llvm::SmallVector<mlir::Operation *, 4> ops;
};
/// The view of `operand` through the ops that `inChain` accepts (walking
/// back from it); nullopt when there are none or they are not such a view.
std::optional<StridedOperand> stridedMatMulOperand(mlir::Value operand,
                                                   llvm::function_ref<bool(mlir::Operation *)> inChain);

/// docs/op-table.md: every kiln op with its mapping type, algebraic
/// properties and cost formula, as a markdown table.
void printOpTable(mlir::MLIRContext &ctx, llvm::raw_ostream &os);

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
