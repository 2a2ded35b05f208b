// Constant weights as the passes see them: read through fusion blocks,
// and in GEMM form (y = W x, W[rows, cols]) for the layers whose weights
// kiln packs at compile time, densely (kiln/gemm_layout.h) or as BCR
// sparse blobs (kiln/bcr_layout.h). Shared by kiln-detect-sparsity and
// kiln-lower-to-linalg, so both agree on which layers those are.
#ifndef KILN_TRANSFORMS_WEIGHTS_H
#define KILN_TRANSFORMS_WEIGHTS_H

#include "kiln/Dialect/KilnDialect.h"

#include <optional>
#include <vector>

namespace kiln {

/// The value outside a fusion block that an operand inside it stands for
/// (operands from outside are the block's arguments).
mlir::Value outerValue(mlir::Value v);

/// The values of `v` if it is an f32 kiln.constant (weights), else none.
std::optional<std::vector<float>> constantFloats(mlir::Value v);

/// Whether the lowering packs this layer's constant weights at compile
/// time: a 2-d Conv with group 1 (not one channel to one) and f32 constant
/// weights; a MatMul with a constant rank-2 B and more than one row; a Gemm
/// with constant B, alpha 1, no C or a bias row C (beta 1), not a row
/// vector times B.
bool packsWeights(mlir::Operation *op);

/// W[rows, cols] of a layer packsWeights accepts: a Conv's filters
/// [F, C*KH*KW]; B^T for MatMul/Gemm (one output feature per row).
struct WeightMatrix {
  std::vector<float> w;
  int64_t rows = 0, cols = 0;
};
std::optional<WeightMatrix> weightMatrix(mlir::Operation *op);

/// The Winograd tile m (2 or 4) the lowering uses for this conv's dense
/// form under `mode` (auto, off, 2 or 4: --winograd), or 0 (im2col + GEMM).
int winogradTile(ConvOp op, llvm::StringRef mode);

/// Whether kiln-detect-sparsity chose sparse (BCR) code for this layer.
bool sparseLayer(mlir::Operation *op);

/// Fewest output pixels of a conv chain: at 2 threads each thread's tail
/// GEMM then multiplies a run of at least 4 panels (gemm::NR) of them,
/// sgemm's own smallest column block, so that no thread reads more of the
/// tail's weights than the unfused 1x1 conv's GEMM does (with fewer
/// pixels it cuts by filters: ResNet-50's 7x7 chains took 1.33x the time
/// of the two convs apart at 2 threads).
constexpr int64_t kChainMinPixels = 128;

/// Whether `tail` runs fused after `head` as one kernel, a conv chain
/// (kiln_rt_conv2d_winograd_chain): `head` a dense f32 conv with constant
/// weights that the lowering runs by Winograd under `winograd`, `tail` a
/// dense f32 1x1 conv (stride 1, no padding, one group) with constant
/// weights over at least kChainMinPixels pixels per image. Shared by
/// kiln-plan-fusion, which plans chains, and the lowering.
bool convChain(ConvOp head, ConvOp tail, llvm::StringRef winograd);

/// The ops of a conv chain: head [-> act] -> tail [-> add] [-> act2].
struct ConvChainOps {
  ConvOp head, tail;
  mlir::Operation *act = nullptr, *add = nullptr, *act2 = nullptr; // Relu/Clip, Add, Relu/Clip
  mlir::Value residual; // the Add's other operand, from outside the ops
};
/// The chain that `ops` (in any order) form, when they are exactly a conv,
/// an optional Relu/Clip on it, a conv that reads it, an optional Add of
/// a value from outside the ops shaped as its result and an optional
/// Relu/Clip last, every value but the last used only by the next, and
/// convChain holds for the two convs.
std::optional<ConvChainOps> matchConvChain(llvm::ArrayRef<mlir::Operation *> ops, llvm::StringRef winograd);
/// Measured speed of that Winograd conv over im2col + GEMM (kiln-detect-
/// sparsity compares sparse code with the dense code actually used).
double winogradSpeedup(ConvOp op, int m);

} // namespace kiln

#endif
