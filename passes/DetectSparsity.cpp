//===- DetectSparsity.cpp - BCR structure and the sparse/dense choice ----===//
//
// kiln-detect-sparsity: annotates each layer with packed constant weights
// with its BCR sparsity and whether the lowering should use the sparse
// kernels (Passes.td has the contract; kiln/bcr_layout.h the analysis,
// packing and cost model this pass shares with the runtime).
//
//===----------------------------------------------------------------------===//
#include "kiln/Transforms/Passes.h"
#include "kiln/Transforms/Weights.h"
#include "kiln/bcr_layout.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinAttributes.h"

#include <cstdio>

namespace kiln {
#define GEN_PASS_DEF_DETECTSPARSITY
#include "kiln/Transforms/Passes.h.inc"
} // namespace kiln

using namespace mlir;
using namespace kiln;

namespace {

constexpr double kMinSparsity = 0.30; // auto: fewer zeros than this stay dense unexamined
constexpr double kMinSpeedup = 1.15;  // auto: the modelled gain that sparse code must reach
constexpr double kIm2colFactor = 1.25; // dense KxK conv (im2col + GEMM) against the GEMM's model

struct DetectSparsityPass : kiln::impl::DetectSparsityBase<DetectSparsityPass> {
  using DetectSparsityBase::DetectSparsityBase;

  void runOnOperation() override {
    int forcedRows = 0, forcedCols = 0;
    if (mode == "off") return;
    if (mode != "auto") {
      char tail = 0;
      if (std::sscanf(mode.c_str(), "bcr:%dx%d%c", &forcedRows, &forcedCols, &tail) != 2 || forcedRows < 1 ||
          forcedCols < 1 || forcedRows > 64 || forcedCols > 64) {
        getOperation().emitError() << "kiln-detect-sparsity: unknown mode '" << mode
                                   << "' (expected auto, off or bcr:RxC with R and C in 1..64)";
        return signalPassFailure();
      }
    }
    Builder b(&getContext());
    getOperation().walk([&](Operation *op) {
      if (!isa<ConvOp, MatMulOp, GemmOp>(op) || !packsWeights(op)) return;
      auto m = weightMatrix(op);
      if (!m) return;
      int64_t total = m->rows * m->cols, nnz = bcr::nonZeros(m->w.data(), total);
      if (nnz == total) return; // dense: nothing to say
      double sparsity = 1.0 - (double)nnz / (double)total;
      std::pair<int, int> block{0, 0};
      bool exact = false, sparse = false;
      int64_t sparseBytes = 0;
      double speedup = 0;
      if (forcedRows) {
        block = {forcedRows, forcedCols};
        exact = bcr::storedValues(m->w.data(), m->rows, m->cols, forcedRows, forcedCols) == nnz;
      } else if (sparsity >= kMinSparsity) {
        block = bcr::detectBlock(m->w.data(), m->rows, m->cols, nnz, bcr::candidateBlocks());
        exact = block.first > 0;
      }
      if (forcedRows || sparsity >= kMinSparsity) {
        std::vector<uint32_t> blob =
            bcr::pack(m->w.data(), m->rows, m->cols,
                      bcr::rowOrder(m->w.data(), m->rows, m->cols, block.first, block.second), block.first,
                      block.second);
        if (!blob.empty()) { // else: more columns than the u16 positions hold
          // A convolution with more than one tap per channel reads its
          // input in place (kiln_rt_conv2d_bcr), without per-tile packing.
          bool inPlace = false;
          if (isa<ConvOp>(op)) {
            auto ws = cast<ShapedType>(op->getOperand(1).getType()).getShape();
            int64_t taps = 1;
            for (int64_t d : ws.drop_front(2)) taps *= d;
            inPlace = taps > 1;
          }
          bcr::Cost cost = bcr::estimate(blob.data(), lanes, inPlace);
          // The dense code of such a convolution builds an im2col matrix
          // first: kiln-bench-sparse measured it 1.15-1.45x slower than
          // the modelled GEMM alone (3x3 and 7x7 ResNet-50 layers, 1 thread).
          if (inPlace) cost.dense *= kIm2colFactor;
          // Against the dense code the lowering would emit: a 3x3 conv that
          // takes Winograd is that much faster than the modelled GEMM.
          double denseSpeed = 1.0;
          if (auto conv = dyn_cast<ConvOp>(op)) denseSpeed = winogradSpeedup(conv, winogradTile(conv, winograd));
          speedup = cost.dense / denseSpeed / cost.sparse;
          sparseBytes = (int64_t)blob.size() * 4;
          sparse = forcedRows || speedup >= kMinSpeedup;
        }
      }
      if (sparse) ++numSparse;
      op->setAttr("kiln.bcr", b.getDictionaryAttr({
                                  b.getNamedAttr("sparsity", b.getF64FloatAttr(sparsity)),
                                  b.getNamedAttr("block", b.getDenseI64ArrayAttr({block.first, block.second})),
                                  b.getNamedAttr("exact", b.getBoolAttr(exact)),
                                  b.getNamedAttr("sparse", b.getBoolAttr(sparse)),
                                  b.getNamedAttr("dense_bytes", b.getI64IntegerAttr(total * 4)),
                                  b.getNamedAttr("sparse_bytes", b.getI64IntegerAttr(sparseBytes)),
                                  b.getNamedAttr("speedup", b.getF64FloatAttr(speedup)),
                              }));
    });
  }
};

} // namespace
