// Constant weights of Conv/MatMul/Gemm layers (kiln/Transforms/Weights.h).
#include "kiln/Transforms/Weights.h"

#include "mlir/IR/AsmState.h"
#include "llvm/ADT/SmallPtrSet.h"
#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/IR/DialectResourceBlobManager.h"

#include <algorithm>
#include <cstring>

using namespace mlir;

namespace kiln {

Value outerValue(Value v) {
  if (auto arg = dyn_cast<BlockArgument>(v))
    if (auto f = dyn_cast_or_null<FusedOp>(arg.getOwner()->getParentOp()))
      return f.getInputs()[arg.getArgNumber()];
  return v;
}

static bool isF32(Value v) { return cast<ShapedType>(v.getType()).getElementType().isF32(); }

std::optional<std::vector<float>> constantFloats(Value v) {
  v = outerValue(v);
  auto c = v.getDefiningOp<ConstantOp>();
  if (!c || !isF32(v)) return std::nullopt;
  int64_t n = cast<ShapedType>(v.getType()).getNumElements();
  if (auto res = dyn_cast<DenseResourceElementsAttr>(c.getValue())) {
    auto *blob = res.getRawHandle().getBlob();
    if (!blob || (int64_t)blob->getData().size() != n * 4) return std::nullopt;
    std::vector<float> out(n);
    std::memcpy(out.data(), blob->getData().data(), n * 4);
    return out;
  }
  if (auto dense = dyn_cast<DenseElementsAttr>(c.getValue())) {
    auto vals = dense.getValues<float>();
    return std::vector<float>(vals.begin(), vals.end());
  }
  return std::nullopt;
}

static bool isConstantF32(Value v) { return outerValue(v).getDefiningOp<ConstantOp>() && isF32(v); }

bool packsWeights(Operation *op) {
  if (auto conv = dyn_cast<ConvOp>(op)) {
    auto xs = cast<ShapedType>(conv.getInput().getType()).getShape();
    auto ws = cast<ShapedType>(conv.getWeight().getType()).getShape();
    return xs.size() == 4 && conv.getGroup() == 1 && !(xs[1] == 1 && ws[0] == 1) && isConstantF32(conv.getWeight());
  }
  if (auto mm = dyn_cast<MatMulOp>(op)) {
    auto ys = cast<ShapedType>(mm.getType()).getShape();
    return ys.size() >= 2 && ys[ys.size() - 2] > 1 && cast<ShapedType>(mm.getB().getType()).getRank() == 2 &&
           isConstantF32(mm.getB());
  }
  if (auto g = dyn_cast<GemmOp>(op)) {
    auto ys = cast<ShapedType>(g.getType()).getShape();
    int64_t M = ys[0], N = ys[1];
    bool biasRow = false;
    if (g.getC()) {
      auto cs = cast<ShapedType>(g.getC().getType()).getShape();
      int64_t cRows = cs.size() == 2 ? cs[0] : 1, cCols = cs.empty() ? 1 : cs.back();
      biasRow = cRows == 1 && cCols == N && N > 1 && g.getBeta().convertToFloat() == 1.0f;
    }
    return g.getAlpha().convertToFloat() == 1.0f && (!g.getC() || biasRow) && !(M == 1 && !g.getTransA()) &&
           isConstantF32(g.getB());
  }
  return false;
}

std::optional<WeightMatrix> weightMatrix(Operation *op) {
  if (!packsWeights(op)) return std::nullopt;
  WeightMatrix m;
  auto transposed = [&](const std::vector<float> &b, int64_t K, int64_t N) { // B[K, N] -> B^T
    m.rows = N, m.cols = K;
    m.w.resize(K * N);
    constexpr int64_t T = 32; // tiles: both sides stay in cache
    for (int64_t k0 = 0; k0 < K; k0 += T)
      for (int64_t n0 = 0; n0 < N; n0 += T)
        for (int64_t k = k0; k < std::min(K, k0 + T); ++k)
          for (int64_t n = n0; n < std::min(N, n0 + T); ++n) m.w[n * K + k] = b[k * N + n];
  };
  if (auto conv = dyn_cast<ConvOp>(op)) {
    auto w = constantFloats(conv.getWeight());
    if (!w) return std::nullopt;
    auto ws = cast<ShapedType>(conv.getWeight().getType()).getShape();
    m.rows = ws[0], m.cols = ws[1] * ws[2] * ws[3];
    m.w = std::move(*w);
    return m;
  }
  Value bv = isa<MatMulOp>(op) ? cast<MatMulOp>(op).getB() : cast<GemmOp>(op).getB();
  auto b = constantFloats(bv);
  if (!b) return std::nullopt;
  auto bs = cast<ShapedType>(bv.getType()).getShape();
  if (auto g = dyn_cast<GemmOp>(op); g && g.getTransB()) { // B is [N, K] already
    m.rows = bs[0], m.cols = bs[1];
    m.w = std::move(*b);
    return m;
  }
  transposed(*b, bs[0], bs[1]);
  return m;
}

int winogradTile(ConvOp op, llvm::StringRef mode) {
  if (mode == "off") return 0;
  auto ws = llvm::cast<mlir::ShapedType>(op.getWeight().getType()).getShape();
  auto ys = llvm::cast<mlir::ShapedType>(op.getType()).getShape();
  auto s = op.getStrides(), d = op.getDilations();
  if (ws.size() != 4 || op.getGroup() != 1 || ws[2] != 3 || ws[3] != 3 || s[0] != 1 || s[1] != 1 || d[0] != 1 ||
      d[1] != 1)
    return 0;
  if (mode == "2") return 2;
  if (mode == "4") return 4;
  // auto: only convs deep enough that the GEMMs dominate the transforms;
  // F(4x4) where outputs are large (ResNet-50's 56x56 and 28x28 stages:
  // 2.8-3.4x faster than im2col + GEMM, F(2x2) 1.8-2x), F(2x2) below
  // (14x14: both about 2x, F(2x2) with 16/9 instead of 4x the weights;
  // 7x7: F(4x4) no faster than im2col, F(2x2) 1.4x).
  if (ws[0] < 16 || ws[1] < 16) return 0;
  return ys[2] >= 20 && ys[3] >= 20 ? 4 : 2;
}

bool sparseLayer(mlir::Operation *op) {
  auto info = op->getAttrOfType<mlir::DictionaryAttr>("kiln.bcr");
  auto sparse = info ? info.getAs<mlir::BoolAttr>("sparse") : nullptr;
  return sparse && sparse.getValue();
}

bool convChain(ConvOp head, ConvOp tail, llvm::StringRef winograd) {
  auto f32 = [](ConvOp c) { return llvm::cast<mlir::ShapedType>(c.getType()).getElementType().isF32(); };
  if (!f32(head) || !f32(tail) || !packsWeights(head) || !packsWeights(tail) || sparseLayer(head) ||
      sparseLayer(tail) || winogradTile(head, winograd) == 0)
    return false;
  auto ws = llvm::cast<mlir::ShapedType>(tail.getWeight().getType()).getShape();
  auto ys = llvm::cast<mlir::ShapedType>(tail.getType()).getShape();
  auto xs = llvm::cast<mlir::ShapedType>(tail.getInput().getType()).getShape();
  if (ws.size() != 4 || ws[2] != 1 || ws[3] != 1 || tail.getGroup() != 1 || ys.size() != 4 || ys[2] != xs[2] ||
      ys[3] != xs[3] || ys[2] * ys[3] < kChainMinPixels)
    return false;
  return llvm::all_of(tail.getStrides(), [](int64_t s) { return s == 1; }) &&
         llvm::all_of(tail.getPads(), [](int64_t p) { return p == 0; });
}

std::optional<ConvChainOps> matchConvChain(llvm::ArrayRef<mlir::Operation *> ops, llvm::StringRef winograd) {
  llvm::SmallPtrSet<mlir::Operation *, 8> in(ops.begin(), ops.end());
  llvm::SmallVector<ConvOp> convs;
  for (mlir::Operation *op : ops)
    if (auto c = llvm::dyn_cast<ConvOp>(op)) convs.push_back(c);
  if (convs.size() != 2 || in.size() != ops.size()) return std::nullopt;
  // The one op that reads v, if v has no other use and that op is in ops.
  auto next = [&](mlir::Value v) -> mlir::Operation * {
    return v.hasOneUse() && in.count(*v.getUsers().begin()) ? *v.getUsers().begin() : nullptr;
  };
  auto isAct = [](mlir::Operation *op) { return op && llvm::isa<ReluOp, ClipOp>(op); };
  for (int h = 0; h < 2; ++h) {
    ConvChainOps c;
    c.head = convs[h];
    c.tail = convs[1 - h];
    mlir::Value v = c.head.getResult();
    size_t seen = 1;
    mlir::Operation *u = next(v);
    if (isAct(u)) {
      c.act = u, v = u->getResult(0), ++seen;
      u = next(v);
    }
    if (u != c.tail.getOperation() || c.tail.getInput() != v) continue;
    v = c.tail.getResult(), ++seen;
    u = seen < ops.size() ? next(v) : nullptr;
    if (u && llvm::isa<AddOp>(u)) {
      mlir::Value r = u->getOperand(0) == v ? u->getOperand(1) : u->getOperand(0);
      mlir::Operation *d = r.getDefiningOp();
      if (r == v || (d && in.count(d)) || r.getType() != v.getType() || u->getResult(0).getType() != v.getType())
        return std::nullopt;
      c.add = u, c.residual = r, v = u->getResult(0), ++seen;
      u = seen < ops.size() ? next(v) : nullptr;
    }
    if (isAct(u)) c.act2 = u, ++seen;
    if (seen != ops.size() || !convChain(c.head, c.tail, winograd)) return std::nullopt;
    return c;
  }
  return std::nullopt;
}

double winogradSpeedup(ConvOp op, int m) {
  if (m == 0) return 1.0;
  auto ys = llvm::cast<mlir::ShapedType>(op.getType()).getShape();
  if (m == 4) return ys[2] >= 20 ? 2.8 : 1.0;
  return ys[2] >= 14 ? 1.9 : 1.4;
}

} // namespace kiln
