// kiln-rewrite: graph rewriting by mathematical properties (dnnfusion.md §3)
// and the classic inference rewrites, each fired only when it lowers the
// cost.
//
// Every rule is a matcher that, at a root op, returns a candidate: the cost
// (FLOPs, then bytes as tie-break, from MappingTypeOpInterface::getCost)
// of the ops the rewrite removes minus the cost of those it adds, and a
// function that applies it. Every rule matches a connected group of ops
// that have algebraic properties (AlgebraicProperty), or a classic pair
// such as Conv + BatchNormalization, so a match never crosses an op without
// properties: the partitions of the spec fall out of the matchers. The
// driver enumerates every candidate, applies the one with the largest
// reduction, and repeats until no candidate lowers the cost. Rules are C++ rather than DRR/PDLL because each needs the cost
// comparison and most fold constants (weights) while rewriting.
#include "kiln/Dialect/KilnDialect.h"
#include "kiln/Transforms/Passes.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinAttributes.h"
#include "llvm/ADT/TypeSwitch.h"

#include <map>

#include <functional>
#include <optional>

namespace kiln {
#define GEN_PASS_DEF_GRAPHREWRITE
#include "kiln/Transforms/Passes.h.inc"
} // namespace kiln

using namespace mlir;
using namespace kiln;

namespace {

/// A rewrite that a rule found at one root: what it saves and how to apply it.
struct Candidate {
  const char *rule;
  OpCost saved; // cost removed minus cost added (positive: cheaper)
  std::function<void(OpBuilder &)> apply;
};

bool lowers(const OpCost &saved) {
  return saved.flops > 0 || (saved.flops == 0 && saved.bytes > 0);
}
bool better(const OpCost &a, const OpCost &b) {
  return a.flops > b.flops || (a.flops == b.flops && a.bytes > b.bytes);
}

RankedTensorType ttype(Value v) { return cast<RankedTensorType>(v.getType()); }
bool isF32(Value v) { return ttype(v).getElementType().isF32(); }
bool oneUse(Value v) { return v.hasOneUse(); }

/// True when `v` is an f32 kiln.constant (checked without copying it).
bool isConstF32(Value v) {
  auto c = v.getDefiningOp<ConstantOp>();
  if (!c || !isF32(v))
    return false;
  if (auto r = dyn_cast<DenseF32ResourceElementsAttr>(c.getValue()))
    return r.tryGetAsArrayRef().has_value();
  return c.getValue().tryGetValues<float>().has_value();
}

/// The constant f32 values of `v`, if it is a kiln.constant.
std::optional<std::vector<float>> constValues(Value v) {
  auto c = v.getDefiningOp<ConstantOp>();
  if (!c || !isF32(v))
    return std::nullopt;
  if (auto r = dyn_cast<DenseF32ResourceElementsAttr>(c.getValue())) {
    auto arr = r.tryGetAsArrayRef();
    if (!arr)
      return std::nullopt;
    return std::vector<float>(arr->begin(), arr->end());
  }
  auto vals = c.getValue().tryGetValues<float>();
  if (!vals)
    return std::nullopt;
  return std::vector<float>(vals->begin(), vals->end());
}

Value makeConst(OpBuilder &b, Location loc, ArrayRef<int64_t> shape, ArrayRef<float> vals) {
  auto t = RankedTensorType::get(shape, b.getF32Type());
  return b.create<ConstantOp>(loc, DenseElementsAttr::get(t, vals));
}

/// Cost of an elementwise op (flopsPerElt per result element) that would
/// read `operands` and write a tensor of `result` type.
OpCost ewCost(double flopsPerElt, ArrayRef<Value> operands, RankedTensorType result) {
  OpCost c;
  for (Value v : operands) c.bytes += tensorBytes(v);
  double n = (double)result.getNumElements();
  c.bytes += n * 4;
  c.flops = flopsPerElt * n;
  return c;
}
OpCost costOf(Operation *op) { return opCost(op); }
OpCost minus(OpCost a, const OpCost &b) {
  a.flops -= b.flops;
  a.bytes -= b.bytes;
  return a;
}

RankedTensorType broadcastType(Value a, Value b) {
  auto s = broadcastShapes(ttype(a).getShape(), ttype(b).getShape());
  return RankedTensorType::get(*s, ttype(a).getElementType());
}

template <typename OpT> Value binary(OpBuilder &b, Location loc, Value x, Value y) {
  return b.create<OpT>(loc, broadcastType(x, y), x, y);
}

/// Per-channel values of a constant that broadcasts along dim 1 of a rank-4
/// NCHW tensor ([C,1,1], [1,C,1,1], a scalar or [1]); nullopt otherwise.
std::optional<std::vector<float>> perChannel(Value v, int64_t channels, int64_t rank) {
  auto vals = constValues(v);
  if (!vals)
    return std::nullopt;
  auto s = ttype(v).getShape();
  if (vals->size() == 1)
    return std::vector<float>(channels, (*vals)[0]);
  if ((int64_t)vals->size() != channels || (int64_t)s.size() > rank)
    return std::nullopt;
  // The channel dim must be dim 1 of the result after right-aligning.
  int64_t off = rank - (int64_t)s.size();
  for (int64_t i = 0; i < (int64_t)s.size(); ++i)
    if (s[i] != 1 && i + off != 1)
      return std::nullopt;
  return vals;
}

//===----------------------------------------------------------------------===//
// Rules
//===----------------------------------------------------------------------===//

using Rule = std::function<std::optional<Candidate>(Operation *)>;

/// Distributive: A*B + A*C -> A*(B+C) (and A*B - A*C -> A*(B-C)).
template <typename AddLike> std::optional<Candidate> factorCommon(Operation *op) {
  auto add = dyn_cast<AddLike>(op);
  if (!add || !isF32(add.getResult()))
    return std::nullopt;
  auto m1 = add.getLhs().template getDefiningOp<MulOp>();
  auto m2 = add.getRhs().template getDefiningOp<MulOp>();
  if (!m1 || !m2 || m1 == m2 || !oneUse(m1.getResult()) || !oneUse(m2.getResult()))
    return std::nullopt;
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 2; ++j) {
      Value a = m1->getOperand(i), b1 = m1->getOperand(1 - i);
      Value a2 = m2->getOperand(j), c = m2->getOperand(1 - j);
      if (a != a2)
        continue;
      RankedTensorType sumT = broadcastType(b1, c);
      auto outS = broadcastShapes(ttype(a).getShape(), sumT.getShape());
      if (failed(outS) || ArrayRef<int64_t>(*outS) != ttype(add.getResult()).getShape())
        continue;
      OpCost before = costOf(m1);
      before += costOf(m2);
      before += costOf(add);
      OpCost after = ewCost(1, {b1, c}, sumT);
      after += ewCost(1, {a}, ttype(add.getResult()));
      after.bytes += sumT.getNumElements() * 4.0;
      return Candidate{"distribute-common-factor", minus(before, after), [=](OpBuilder &b) mutable {
                         b.setInsertionPoint(add);
                         Value s = binary<AddLike>(b, add.getLoc(), b1, c);
                         Value r = binary<MulOp>(b, add.getLoc(), a, s);
                         add.getResult().replaceAllUsesWith(r);
                       }};
    }
  return std::nullopt;
}

/// Distributive: A + A*K -> A*(K+1) with K constant; K+1 is folded now, so
/// the rewrite saves a whole pass over A.
std::optional<Candidate> addSelfTimesConst(Operation *op) {
  auto add = dyn_cast<AddOp>(op);
  if (!add || !isF32(add.getResult()))
    return std::nullopt;
  for (int i = 0; i < 2; ++i) {
    Value a = add->getOperand(i);
    auto mul = add->getOperand(1 - i).getDefiningOp<MulOp>();
    if (!mul || !oneUse(mul.getResult()))
      continue;
    for (int j = 0; j < 2; ++j) {
      if (mul->getOperand(j) != a)
        continue;
      Value k = mul->getOperand(1 - j);
      auto kv = constValues(k);
      if (!kv || ttype(add.getResult()) != ttype(mul.getResult()))
        continue;
      OpCost before = costOf(mul);
      before += costOf(add);
      OpCost after = ewCost(1, {a, k}, ttype(add.getResult()));
      return Candidate{"distribute-add-self", minus(before, after), [=](OpBuilder &b) mutable {
                         b.setInsertionPoint(add);
                         std::vector<float> k1(*kv);
                         for (float &x : k1) x += 1.0f;
                         Value c = makeConst(b, add.getLoc(), ttype(k).getShape(), k1);
                         Value r = binary<MulOp>(b, add.getLoc(), a, c);
                         add.getResult().replaceAllUsesWith(r);
                       }};
    }
  }
  return std::nullopt;
}

/// Associative + multiplicative: in a tree of single-use Muls, two factors
/// f(X) and f(Y) with f multiplicative (Abs, Reciprocal, Sign) become
/// f(X*Y), and Sqrt(B) * Sqrt(B) becomes B. E.g. Abs(A)*B*Abs(C) ->
/// Abs(A*C)*B and (A*Sqrt(B))*(Sqrt(B)*C) -> A*B*C.
std::optional<Candidate> regroupProduct(Operation *op) {
  auto root = dyn_cast<MulOp>(op);
  if (!root || !isF32(root.getResult()))
    return std::nullopt;
  // The root is the top of its tree: its user is not a Mul that would
  // absorb it.
  if (root.getResult().hasOneUse() && isa<MulOp>(*root.getResult().getUsers().begin()))
    return std::nullopt;
  SmallVector<Value> leaves;
  SmallVector<Operation *> inner;
  std::function<void(Value)> flatten = [&](Value v) {
    auto m = v.getDefiningOp<MulOp>();
    if (m && (m == root || oneUse(v)) && isF32(v)) {
      inner.push_back(m);
      flatten(m.getLhs());
      flatten(m.getRhs());
      return;
    }
    leaves.push_back(v);
  };
  flatten(root.getResult());
  if (leaves.size() < 2)
    return std::nullopt;
  auto unaryKind = [](Value v) -> Operation * {
    Operation *d = v.getDefiningOp();
    if (d && isa<AbsOp, ReciprocalOp, SignOp, SqrtOp>(d) && v.hasOneUse()) return d;
    return nullptr;
  };
  // Find a pair to merge.
  for (size_t i = 0; i < leaves.size(); ++i)
    for (size_t j = i + 1; j < leaves.size(); ++j) {
      Operation *fi = unaryKind(leaves[i]), *fj = unaryKind(leaves[j]);
      bool sqrtPair = false;
      if (leaves[i] == leaves[j] && leaves[i].getDefiningOp<SqrtOp>())
        sqrtPair = true; // Sqrt(B) used twice by this tree
      else if (!fi || !fj || fi->getName() != fj->getName() || isa<SqrtOp>(fi))
        continue;
      if (!sqrtPair && !fi)
        continue;
      // Rebuild: merged factor times every other leaf, left to right.
      auto resT = ttype(root.getResult());
      OpCost before;
      for (Operation *m : inner) before += costOf(m);
      if (sqrtPair) {
        if (llvm::range_size(leaves[i].getUses()) == 2)
          before += costOf(leaves[i].getDefiningOp());
      } else {
        before += costOf(fi);
        before += costOf(fj);
      }
      // After: (leaves - 2 + 1) - 1 muls plus, if not sqrtPair, one mul and one f.
      OpCost after;
      size_t nMul = leaves.size() - 2; // merged factor and the rest
      for (size_t k = 0; k < nMul; ++k) after += ewCost(1, {root.getLhs(), root.getRhs()}, resT);
      if (!sqrtPair) {
        Value x = fi->getOperand(0), y = fj->getOperand(0);
        RankedTensorType xy = broadcastType(x, y);
        after += ewCost(1, {x, y}, xy);
        after += ewCost(1, {}, xy);
        after.bytes += xy.getNumElements() * 4.0;
      }
      SmallVector<Value> rest;
      for (size_t k = 0; k < leaves.size(); ++k)
        if (k != i && k != j) rest.push_back(leaves[k]);
      // The regrouped product must keep the root's shape.
      SmallVector<int64_t> shape(sqrtPair ? ttype(leaves[i].getDefiningOp()->getOperand(0)).getShape()
                                          : broadcastType(fi->getOperand(0), fj->getOperand(0)).getShape());
      bool ok = true;
      for (Value r : rest) {
        auto sh = broadcastShapes(shape, ttype(r).getShape());
        if (failed(sh)) { ok = false; break; }
        shape.assign(sh->begin(), sh->end());
      }
      if (!ok || ArrayRef<int64_t>(shape) != resT.getShape())
        continue;
      return Candidate{sqrtPair ? "associate-sqrt-pair" : "associate-multiplicative",
                       minus(before, after), [=](OpBuilder &b) mutable {
                         b.setInsertionPoint(root);
                         Location loc = root.getLoc();
                         Value merged;
                         if (sqrtPair) {
                           merged = leaves[i].getDefiningOp()->getOperand(0);
                         } else {
                           Value xy = binary<MulOp>(b, loc, fi->getOperand(0), fj->getOperand(0));
                           OperationState st(loc, fi->getName());
                           st.addOperands(xy);
                           st.addTypes(xy.getType());
                           st.addAttributes(fi->getAttrs());
                           merged = b.create(st)->getResult(0);
                         }
                         Value acc = merged;
                         for (Value r : rest) acc = binary<MulOp>(b, loc, acc, r);
                         root.getResult().replaceAllUsesWith(acc);
                       }};
    }
  return std::nullopt;
}

/// Commutative with a reduction: ReduceProd(Exp(A)) -> Exp(ReduceSum(A)),
/// the exponentials move from n elements to the reduced ones.
std::optional<Candidate> prodOfExp(Operation *op) {
  auto rp = dyn_cast<ReduceProdOp>(op);
  if (!rp || !isF32(rp.getResult()))
    return std::nullopt;
  auto ex = rp.getInput().getDefiningOp<ExpOp>();
  if (!ex || !oneUse(ex.getResult()))
    return std::nullopt;
  OpCost before = costOf(ex);
  before += costOf(rp);
  OpCost after = ewCost(1, {ex.getInput()}, ttype(rp.getResult()));
  after.flops = (double)ttype(ex.getInput()).getNumElements();
  after += ewCost(ExpOp::getFlopsPerElement(), {rp.getResult()}, ttype(rp.getResult()));
  return Candidate{"commute-exp-reduce", minus(before, after), [=](OpBuilder &b) mutable {
                     b.setInsertionPoint(rp);
                     auto sum = b.create<ReduceSumOp>(rp.getLoc(), rp.getType(), ex.getInput(),
                                                      rp.getAxesAttr(), rp.getKeepdimsAttr());
                     auto e = b.create<ExpOp>(rp.getLoc(), rp.getType(), sum.getResult());
                     rp.getResult().replaceAllUsesWith(e.getResult());
                   }};
}

/// Linear: ReduceSum/ReduceMean(A * k) with k a scalar constant ->
/// ReduceSum/ReduceMean(A) * k: the multiply runs on the reduced tensor.
template <typename ReduceT> std::optional<Candidate> scaleAfterReduce(Operation *op) {
  auto red = dyn_cast<ReduceT>(op);
  if (!red || !isF32(red.getResult()))
    return std::nullopt;
  auto mul = red.getInput().template getDefiningOp<MulOp>();
  if (!mul || !oneUse(mul.getResult()))
    return std::nullopt;
  for (int i = 0; i < 2; ++i) {
    Value a = mul->getOperand(i), k = mul->getOperand(1 - i);
    auto kv = constValues(k);
    if (!kv || kv->size() != 1 || ttype(a) != ttype(mul.getResult()) ||
        broadcastType(red.getResult(), k) != red.getType())
      continue;
    OpCost before = costOf(mul);
    OpCost after = ewCost(1, {red.getResult(), k}, ttype(red.getResult()));
    return Candidate{"commute-scale-reduce", minus(before, after), [=](OpBuilder &b) mutable {
                       b.setInsertionPoint(red);
                       auto r = b.create<ReduceT>(red.getLoc(), red.getType(), a, red.getAxesAttr(),
                                                  red.getKeepdimsAttr());
                       Value out = binary<MulOp>(b, red.getLoc(), r.getResult(), k);
                       red.getResult().replaceAllUsesWith(out);
                     }};
  }
  return std::nullopt;
}

/// Conv whose weight (and bias) are constants, feeding only `consumer`.
ConvOp constConvProducer(Value v) {
  auto conv = v.getDefiningOp<ConvOp>();
  if (!conv || !oneUse(conv.getResult()) || !isF32(v) || !isConstF32(conv.getWeight()) ||
      (conv.getBias() && !isConstF32(conv.getBias())))
    return nullptr;
  return conv;
}

/// Replaces `root` by a copy of `conv` with per-output-channel weights
/// scaled by `scale` and bias = bias * scale + shift.
void rebuildConv(OpBuilder &b, ConvOp conv, Operation *root, ArrayRef<float> scale,
                 ArrayRef<float> shift) {
  b.setInsertionPoint(root);
  auto w = *constValues(conv.getWeight());
  auto ws = ttype(conv.getWeight()).getShape();
  int64_t cout = ws[0], per = (int64_t)w.size() / cout;
  for (int64_t o = 0; o < cout; ++o)
    for (int64_t i = 0; i < per; ++i) w[o * per + i] *= scale[o];
  std::vector<float> bias(cout, 0.0f);
  if (conv.getBias()) bias = *constValues(conv.getBias());
  for (int64_t o = 0; o < cout; ++o) bias[o] = bias[o] * scale[o] + shift[o];
  Value nw = makeConst(b, conv.getLoc(), ws, w);
  Value nb = makeConst(b, conv.getLoc(), {cout}, bias);
  auto nc = b.create<ConvOp>(conv.getLoc(), conv.getType(), conv.getInput(), nw, nb,
                             conv.getStridesAttr(), conv.getDilationsAttr(), conv.getPadsAttr(),
                             conv.getGroupAttr());
  root->getResult(0).replaceAllUsesWith(nc.getResult());
}

/// BatchNormalization (constant statistics) folded into the preceding Conv.
std::optional<Candidate> foldBatchNorm(Operation *op) {
  auto bn = dyn_cast<BatchNormOp>(op);
  if (!bn)
    return std::nullopt;
  ConvOp conv = constConvProducer(bn.getInput());
  auto sc = constValues(bn.getScale()), bi = constValues(bn.getBias()),
       mean = constValues(bn.getMean()), var = constValues(bn.getVar());
  if (!conv || !sc || !bi || !mean || !var)
    return std::nullopt;
  return Candidate{"fold-batchnorm-into-conv", costOf(bn), [=](OpBuilder &b) mutable {
                     float eps = bn.getEpsilon().convertToFloat();
                     size_t c = sc->size();
                     std::vector<float> a(c), s(c);
                     for (size_t i = 0; i < c; ++i) {
                       a[i] = (*sc)[i] / std::sqrt((*var)[i] + eps);
                       s[i] = (*bi)[i] - (*mean)[i] * a[i];
                     }
                     rebuildConv(b, conv, bn, a, s);
                   }};
}

/// Mul or Add by a per-channel constant folded into the preceding Conv.
template <typename OpT> std::optional<Candidate> foldAffineIntoConv(Operation *op) {
  auto e = dyn_cast<OpT>(op);
  if (!e)
    return std::nullopt;
  for (int i = 0; i < 2; ++i) {
    ConvOp conv = constConvProducer(e->getOperand(i));
    if (!conv || e.getType() != conv.getType())
      continue;
    int64_t cout = ttype(conv.getResult()).getDimSize(1);
    auto k = perChannel(e->getOperand(1 - i), cout, ttype(conv.getResult()).getRank());
    if (!k)
      continue;
    bool isMul = std::is_same_v<OpT, MulOp>;
    return Candidate{isMul ? "fold-mul-into-conv" : "fold-add-into-conv", costOf(e),
                     [=](OpBuilder &b) mutable {
                       std::vector<float> one(cout, 1.0f), zero(cout, 0.0f);
                       rebuildConv(b, conv, e, isMul ? *k : one, isMul ? zero : *k);
                     }};
  }
  return std::nullopt;
}

/// MatMul (2-d or a batch of rows against a 2-d weight) + Add(constant
/// bias over the last dim) -> Gemm with C, so the bias is added in the
/// GEMM kernel instead of a second pass over the result.
std::optional<Candidate> matmulAddToGemm(Operation *op) {
  auto add = dyn_cast<AddOp>(op);
  if (!add || !isF32(add.getResult()))
    return std::nullopt;
  for (int i = 0; i < 2; ++i) {
    auto mm = add->getOperand(i).getDefiningOp<MatMulOp>();
    Value bias = add->getOperand(1 - i);
    if (!mm || !oneUse(mm.getResult()) || mm.getType() != add.getType())
      continue;
    auto as = ttype(mm.getA()).getShape(), bs = ttype(mm.getB()).getShape();
    auto cs = ttype(bias).getShape();
    int64_t n = bs.empty() ? 0 : bs.back();
    bool vecBias = !cs.empty() && cs.back() == n &&
                   llvm::all_of(cs.drop_back(), [](int64_t d) { return d == 1; });
    if (bs.size() != 2 || as.size() < 2 || !vecBias || !bias.getDefiningOp<ConstantOp>())
      continue;
    return Candidate{"matmul-add-to-gemm", costOf(add), [=](OpBuilder &b) mutable {
                       b.setInsertionPoint(add);
                       Location loc = add.getLoc();
                       int64_t rows = 1;
                       for (int64_t d : as.drop_back()) rows *= d;
                       auto f32 = b.getF32Type();
                       Value a2 = mm.getA();
                       if (as.size() != 2)
                         a2 = b.create<ReshapeOp>(loc, RankedTensorType::get({rows, as.back()}, f32), a2);
                       Value c = bias;
                       if (cs.size() != 1)
                         c = b.create<ReshapeOp>(loc, RankedTensorType::get({n}, f32), bias);
                       auto g = b.create<GemmOp>(loc, RankedTensorType::get({rows, n}, f32), a2,
                                                 mm.getB(), c, b.getF32FloatAttr(1.0f),
                                                 b.getF32FloatAttr(1.0f), b.getBoolAttr(false),
                                                 b.getBoolAttr(false));
                       Value r = g.getResult();
                       if (r.getType() != add.getType())
                         r = b.create<ReshapeOp>(loc, add.getType(), r);
                       add.getResult().replaceAllUsesWith(r);
                     }};
  }
  return std::nullopt;
}

/// Linear, through data movement: x * k or x / k, k a scalar constant,
/// where x is a column slice of a Gemm with constant weights (reached
/// through Reshapes that keep the last dim, the Slice, then single-use
/// Reshapes and Transposes) -> those weight columns and bias entries
/// scaled, the op removed. The Gemm's other columns are unchanged, so its
/// other users must be Slices of other columns. E.g. attention's
/// Q / sqrt(d) on the Q part of a fused QKV projection.
std::optional<Candidate> scaleIntoGemmColumns(Operation *op) {
  if (!isa<MulOp, DivOp>(op) || !isF32(op->getResult(0)))
    return std::nullopt;
  for (int i = 0; i < 2; ++i) {
    if (isa<DivOp>(op) && i == 1) break; // the divisor must be the constant
    Value x = op->getOperand(i), kv = op->getOperand(1 - i);
    auto k = constValues(kv);
    if (!k || k->size() != 1 || x.getType() != op->getResult(0).getType()) continue;
    // Back through single-use Reshapes / Transposes to the Slice.
    Value v = x;
    while (isa_and_nonnull<ReshapeOp, TransposeOp>(v.getDefiningOp()) && oneUse(v))
      v = v.getDefiningOp()->getOperand(0);
    auto slice = v.getDefiningOp<SliceOp>();
    if (!slice || !oneUse(v)) continue;
    // The slice takes columns [c0, c0 + n) of a Gemm result (the last dim,
    // kept by the Reshapes in between), everything else whole.
    Value src = slice.getInput();
    auto ss = ttype(src).getShape(), rs = ttype(v).getShape();
    int64_t rank = ss.size(), c0 = slice.getStarts()[rank - 1], n = rs[rank - 1];
    bool columns = llvm::all_of(slice.getSteps(), [](int64_t st) { return st == 1; });
    for (int64_t d = 0; d + 1 < rank; ++d) columns &= slice.getStarts()[d] == 0 && ss[d] == rs[d];
    Value g = src;
    while (auto r = g.getDefiningOp<ReshapeOp>()) {
      columns &= ttype(r.getInput()).getShape().back() == ttype(r.getResult()).getShape().back();
      g = r.getInput();
    }
    auto gemm = g.getDefiningOp<GemmOp>();
    if (!columns || !gemm || !isF32(g) || ttype(g).getShape().back() != ss.back() ||
        !isConstF32(gemm.getB()) || (gemm.getC() && !isConstF32(gemm.getC())))
      continue;
    int64_t N = ss.back();
    if (gemm.getC() && ttype(gemm.getC()).getNumElements() != N && ttype(gemm.getC()).getNumElements() != 1)
      continue;
    // Every other reader of the Gemm is a Slice of other columns, the
    // same way.
    bool alone = true;
    SmallVector<Value> frontier{g};
    while (!frontier.empty() && alone) {
      Value w = frontier.pop_back_val();
      for (Operation *u : w.getUsers()) {
        if (auto r = dyn_cast<ReshapeOp>(u)) {
          if (ttype(r.getResult()).getShape().back() != N) alone = false;
          frontier.push_back(r.getResult());
        } else if (auto o = dyn_cast<SliceOp>(u)) {
          if (o == slice) continue;
          auto os = ttype(o.getResult()).getShape();
          int64_t s0 = o.getStarts().back(), s1 = s0 + (os.back() - 1) * o.getSteps().back() + 1;
          if (o.getSteps().back() <= 0 || !(s1 <= c0 || s0 >= c0 + n)) alone = false;
        } else {
          alone = false;
        }
      }
    }
    if (!alone) continue;
    float f = isa<DivOp>(op) ? 1.0f / (*k)[0] : (*k)[0];
    return Candidate{"scale-into-gemm-columns", costOf(op), [=](OpBuilder &b) mutable {
                       b.setInsertionPoint(gemm);
                       Location loc = gemm.getLoc();
                       auto w = *constValues(gemm.getB());
                       auto ws = ttype(gemm.getB()).getShape();
                       bool tb = gemm.getTransB();
                       int64_t rowsB = ws[0], colsB = ws[1];
                       for (int64_t r = 0; r < rowsB; ++r)
                         for (int64_t c = 0; c < colsB; ++c)
                           if ((tb ? r : c) >= c0 && (tb ? r : c) < c0 + n) w[r * colsB + c] *= f;
                       Value nc;
                       if (Value c = gemm.getC()) {
                         auto cv = *constValues(c);
                         if (cv.size() == 1) cv.assign(N, cv[0]);
                         for (int64_t j = c0; j < c0 + n; ++j) cv[j] *= f;
                         nc = makeConst(b, loc, {N}, cv);
                       }
                       auto ng = b.create<GemmOp>(loc, gemm.getType(), gemm.getA(), makeConst(b, loc, ws, w), nc,
                                                  gemm.getAlphaAttr(), gemm.getBetaAttr(), gemm.getTransAAttr(),
                                                  gemm.getTransBAttr());
                       gemm.getResult().replaceAllUsesWith(ng.getResult());
                       op->getResult(0).replaceAllUsesWith(x);
                     }};
  }
  return std::nullopt;
}

/// Transpose(Transpose(x)) -> one Transpose (or x when the perms cancel).
std::optional<Candidate> collapseTransposes(Operation *op) {
  auto outer = dyn_cast<TransposeOp>(op);
  if (!outer)
    return std::nullopt;
  auto inner = outer.getInput().getDefiningOp<TransposeOp>();
  if (!inner)
    return std::nullopt;
  OpCost saved = costOf(outer);
  if (oneUse(inner.getResult()))
    saved += costOf(inner);
  saved = minus(saved, ewCost(0, {inner.getInput()}, ttype(outer.getResult())));
  return Candidate{"collapse-transposes", saved, [=](OpBuilder &b) mutable {
                     b.setInsertionPoint(outer);
                     auto p1 = inner.getPerm(), p2 = outer.getPerm();
                     SmallVector<int64_t> perm;
                     bool identity = true;
                     for (size_t i = 0; i < p2.size(); ++i) {
                       perm.push_back(p1[p2[i]]);
                       identity &= perm.back() == (int64_t)i;
                     }
                     Value r = identity ? inner.getInput()
                                        : b.create<TransposeOp>(outer.getLoc(), outer.getType(),
                                                                inner.getInput(),
                                                                b.getDenseI64ArrayAttr(perm))
                                              .getResult();
                     outer.getResult().replaceAllUsesWith(r);
                   }};
}

/// A Transpose that only moves dims of size 1 (the others keep their
/// order) moves no data: a Reshape, a view (PyTorch's attention exports
/// [1, 128, 768] <-> [128, 1, 768] around every layer's projections).
std::optional<Candidate> transposeUnitDims(Operation *op) {
  auto t = dyn_cast<TransposeOp>(op);
  if (!t)
    return std::nullopt;
  auto shape = ttype(t.getInput()).getShape();
  int64_t last = -1;
  for (int64_t d : t.getPerm())
    if (shape[d] != 1) {
      if (d < last)
        return std::nullopt;
      last = d;
    }
  return Candidate{"transpose-unit-dims-to-reshape", costOf(t), [=](OpBuilder &b) mutable {
                     b.setInsertionPoint(t);
                     Value r = b.create<ReshapeOp>(t.getLoc(), t.getType(), t.getInput());
                     t.getResult().replaceAllUsesWith(r);
                   }};
}

/// Reshape(Reshape(x)) -> Reshape(x).
std::optional<Candidate> collapseReshapes(Operation *op) {
  auto outer = dyn_cast<ReshapeOp>(op);
  if (!outer)
    return std::nullopt;
  auto inner = outer.getInput().getDefiningOp<ReshapeOp>();
  if (!inner)
    return std::nullopt;
  OpCost saved = oneUse(inner.getResult()) ? costOf(inner) : OpCost{};
  saved.bytes += 1; // one op fewer: a view is free, but the graph is smaller
  return Candidate{"collapse-reshapes", saved, [=](OpBuilder &b) mutable {
                     b.setInsertionPoint(outer);
                     Value x = inner.getInput();
                     Value r = x.getType() == outer.getType()
                                   ? x
                                   : b.create<ReshapeOp>(outer.getLoc(), outer.getType(), x).getResult();
                     outer.getResult().replaceAllUsesWith(r);
                   }};
}

/// Constant subgraphs: elementwise f32 ops and Transposes of constants are
/// evaluated now (bounded to 2^22 elements), e.g. weights that an exporter
/// transposes in the graph.
std::optional<Candidate> foldConstants(Operation *op) {
  if (!isa<TransposeOp, AddOp, SubOp, MulOp, DivOp, NegOp, SqrtOp, ReciprocalOp>(op) ||
      op->getNumResults() != 1 || !isF32(op->getResult(0)))
    return std::nullopt;
  auto rt = ttype(op->getResult(0));
  if (!rt.hasStaticShape() || rt.getNumElements() > (1 << 22))
    return std::nullopt;
  for (Value v : op->getOperands())
    if (!isConstF32(v)) return std::nullopt;
  OpCost saved = costOf(op);
  return Candidate{"fold-constants", saved, [=](OpBuilder &b) mutable {
                     b.setInsertionPoint(op);
                     SmallVector<std::vector<float>> ins;
                     for (Value v : op->getOperands()) ins.push_back(*constValues(v));
                     auto shape = rt.getShape();
                     int64_t n = rt.getNumElements(), rank = shape.size();
                     std::vector<float> out(n);
                     SmallVector<int64_t> idx(rank);
                     // Reads operand k at the result index (broadcast or permuted).
                     auto at = [&](int k, ArrayRef<int64_t> i) {
                       auto s = ttype(op->getOperand(k)).getShape();
                       int64_t off = 0;
                       if (auto t = dyn_cast<TransposeOp>(op)) {
                         SmallVector<int64_t> src(rank);
                         for (int64_t d = 0; d < rank; ++d) src[t.getPerm()[d]] = i[d];
                         for (int64_t d = 0; d < rank; ++d) off = off * s[d] + src[d];
                         return ins[k][off];
                       }
                       int64_t lead = rank - (int64_t)s.size();
                       for (size_t d = 0; d < s.size(); ++d) off = off * s[d] + (s[d] == 1 ? 0 : i[d + lead]);
                       return ins[k][off];
                     };
                     for (int64_t f = 0; f < n; ++f) {
                       int64_t r = f;
                       for (int64_t d = rank - 1; d >= 0; --d) { idx[d] = r % shape[d]; r /= shape[d]; }
                       float x = at(0, idx);
                       float y = op->getNumOperands() > 1 ? at(1, idx) : 0.0f;
                       out[f] = TypeSwitch<Operation *, float>(op)
                                    .Case([&](AddOp) { return x + y; })
                                    .Case([&](SubOp) { return x - y; })
                                    .Case([&](MulOp) { return x * y; })
                                    .Case([&](DivOp) { return x / y; })
                                    .Case([&](NegOp) { return -x; })
                                    .Case([&](SqrtOp) { return std::sqrt(x); })
                                    .Case([&](ReciprocalOp) { return 1.0f / x; })
                                    .Default([&](Operation *) { return x; });
                     }
                     op->getResult(0).replaceAllUsesWith(makeConst(b, op->getLoc(), shape, out));
                   }};
}

struct GraphRewritePass : kiln::impl::GraphRewriteBase<GraphRewritePass> {
  using GraphRewriteBase::GraphRewriteBase;

  void runOnOperation() override {
    std::vector<Rule> rules = {
        factorCommon<AddOp>, factorCommon<SubOp>, addSelfTimesConst, regroupProduct, prodOfExp,
        scaleAfterReduce<ReduceSumOp>, scaleAfterReduce<ReduceMeanOp>, foldBatchNorm,
        foldAffineIntoConv<MulOp>, foldAffineIntoConv<AddOp>, matmulAddToGemm, scaleIntoGemmColumns,
        collapseTransposes, transposeUnitDims, collapseReshapes, foldConstants};
    func::FuncOp fn = getOperation();
    OpBuilder b(fn.getContext());
    int64_t applied = 0;
    std::map<std::string, int64_t> perRule;
    bool changed = true;
    while (changed && applied < 100000) {
      changed = false;
      std::optional<Candidate> best;
      fn.walk([&](Operation *op) {
        if (!isa<KilnDialect>(op->getDialect()) || op->use_empty())
          return;
        for (const Rule &r : rules)
          if (auto c = r(op); c && lowers(c->saved) && (!best || better(c->saved, best->saved)))
            best = std::move(c);
      });
      if (best) {
        best->apply(b);
        ++perRule[best->rule];
        ++applied;
        changed = true;
        eraseDead(fn);
      }
    }
    numRewrites = applied;
    if (!perRule.empty()) {
      std::string s;
      for (auto &[k, v] : perRule) s += (s.empty() ? "" : ",") + k + "=" + std::to_string(v);
      fn->setAttr("kiln.rewrites", StringAttr::get(fn.getContext(), s));
    }
  }

  static void eraseDead(func::FuncOp fn) {
    bool again = true;
    while (again) {
      again = false;
      SmallVector<Operation *> dead;
      fn.walk([&](Operation *op) {
        if (isa<KilnDialect>(op->getDialect()) && op->use_empty()) dead.push_back(op);
      });
      for (Operation *op : llvm::reverse(dead)) {
        op->erase();
        again = true;
      }
    }
  }
};

} // namespace
