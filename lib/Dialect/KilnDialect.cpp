// kiln dialect: registration, verifiers and folders of the ODS-declared ops.
#include "kiln/Dialect/KilnDialect.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/OpImplementation.h"

using namespace mlir;
using namespace kiln;

#include "kiln/Dialect/KilnDialect.cpp.inc"
#include "kiln/Dialect/KilnInterfaces.cpp.inc"

void KilnDialect::initialize() {
  addOperations<
#define GET_OP_LIST
#include "kiln/Dialect/KilnOps.cpp.inc"
      >();
}

llvm::StringRef kiln::stringifyMappingType(MappingType t) {
  switch (t) {
  case MappingType::OneToOne: return "One-to-One";
  case MappingType::Reorganize: return "Reorganize";
  case MappingType::Shuffle: return "Shuffle";
  case MappingType::OneToMany: return "One-to-Many";
  case MappingType::ManyToMany: return "Many-to-Many";
  }
  return "?";
}

FusionDecision kiln::fusionDecision(MappingType first, MappingType second) {
  using M = MappingType;
  using D = FusionDecision;
  switch (first) {
  case M::OneToOne: return D::Fuse;
  case M::OneToMany: return second == M::OneToOne ? D::Fuse : second == M::ManyToMany ? D::No : D::Profile;
  case M::ManyToMany: return second == M::OneToOne ? D::Fuse : second == M::ManyToMany ? D::No : D::Profile;
  case M::Reorganize:
  case M::Shuffle:
    return second == M::OneToMany || second == M::ManyToMany ? D::Profile : D::Fuse;
  }
  return D::No;
}

MappingType kiln::fusedMappingType(MappingType first, MappingType second) {
  using M = MappingType;
  if (first == M::ManyToMany || second == M::ManyToMany) return M::ManyToMany;
  if (first == M::OneToMany || second == M::OneToMany) return M::OneToMany;
  if (first == M::OneToOne) return second;
  if (second == M::OneToOne) return first;
  // Reorganize/Shuffle pairs: Shuffle only when both are (table, our reading).
  return first == M::Shuffle && second == M::Shuffle ? M::Shuffle : M::Reorganize;
}

llvm::StringRef kiln::stringifyFusionDecision(FusionDecision d) {
  switch (d) {
  case FusionDecision::Fuse: return "fuse";
  case FusionDecision::Profile: return "profile";
  case FusionDecision::No: return "no";
  }
  return "?";
}

bool kiln::isElementwiseMath(Operation *op) {
  return isa<SqrtOp, ExpOp, LogOp, NegOp, AbsOp, ReciprocalOp, ReluOp, SigmoidOp, TanhOp, ErfOp,
             HardSwishOp, LeakyReluOp, HardSigmoidOp, ClipOp, SoftplusOp, SoftsignOp, MishOp, FloorOp,
             CeilOp, RoundOp, SignOp, SinOp, CosOp, TanOp, AsinOp, AcosOp, AtanOp, SinhOp, CoshOp,
             AsinhOp, AcoshOp, AtanhOp, EluOp, CeluOp, ThresholdedReluOp, SeluOp, ShrinkOp, GeluOp,
             NotOp, IsNaNOp, IsInfOp, AddOp, SubOp, MulOp, DivOp, PowOp, PReluOp, MaxOp, MinOp,
             ModOp, EqualOp, LessOp, LessOrEqualOp, GreaterOp, GreaterOrEqualOp, AndOp, OrOp, XorOp,
             BitShiftOp, WhereOp, CastOp>(op);
}

bool kiln::isPointwise(Operation *op) {
  return isElementwiseMath(op) || isa<ExpandOp, TransposeOp, ReshapeOp, SliceOp>(op);
}

std::optional<MatMulOutLayout> kiln::transposedMatMulLayout(ArrayRef<int64_t> shape,
                                                            ArrayRef<int64_t> perm) {
  int64_t rank = shape.size();
  if (rank < 2 || (int64_t)perm.size() != rank)
    return std::nullopt;
  // Contiguous strides of the transposed tensor, mapped back to the dims
  // of the MatMul result.
  SmallVector<int64_t> tStride(rank, 1), rStride(rank);
  for (int64_t d = rank - 2; d >= 0; --d) tStride[d] = tStride[d + 1] * shape[perm[d + 1]];
  for (int64_t d = 0; d < rank; ++d) rStride[perm[d]] = tStride[d];
  if (rStride[rank - 1] != 1 && shape[rank - 1] != 1)
    return std::nullopt;
  // Batch dims must flatten to one stride: each non-unit batch dim's stride
  // is the next non-unit one's times its size.
  int64_t batchStride = 0, prev = -1;
  for (int64_t d = 0; d < rank - 2; ++d) {
    if (shape[d] == 1) continue;
    if (prev >= 0 && rStride[prev] != rStride[d] * shape[d])
      return std::nullopt;
    prev = d;
    batchStride = rStride[d];
  }
  return MatMulOutLayout{batchStride, rStride[rank - 2]};
}

namespace {
/// Reshape of a strided view (sizes, strides) to `shape`: each group of
/// dims whose sizes multiply to the same count must be contiguous in the
/// source (dims of size 1 aside). False when it is not.
bool reshapeView(SmallVectorImpl<int64_t> &sizes, SmallVectorImpl<int64_t> &strides, ArrayRef<int64_t> shape) {
  SmallVector<int64_t> os, ost;
  for (size_t d = 0; d < sizes.size(); ++d)
    if (sizes[d] != 1) os.push_back(sizes[d]), ost.push_back(strides[d]);
  SmallVector<int64_t> nst(shape.size(), 0);
  size_t i = 0, j = 0;
  while (j < shape.size()) {
    if (shape[j] == 1) { ++j; continue; }
    if (i >= os.size()) return false;
    size_t i1 = i + 1, j1 = j + 1;
    int64_t po = os[i], pn = shape[j];
    while (po != pn) {
      if (po < pn) {
        if (i1 >= os.size()) return false;
        po *= os[i1++];
      } else {
        if (j1 >= shape.size()) return false;
        pn *= shape[j1++];
      }
    }
    for (size_t k = i; k + 1 < i1; ++k)
      if (ost[k] != ost[k + 1] * os[k + 1]) return false;
    int64_t st = ost[i1 - 1];
    for (size_t m = j1; m-- > j;) { nst[m] = st; st *= shape[m]; }
    i = i1, j = j1;
  }
  if (i != os.size()) return false;
  sizes.assign(shape.begin(), shape.end());
  strides.assign(nst.begin(), nst.end());
  return true;
}
} // namespace

std::optional<StridedOperand> kiln::stridedMatMulOperand(Value operand, function_ref<bool(Operation *)> inChain) {
  SmallVector<Operation *, 4> chain;
  Value v = operand;
  while (Operation *d = v.getDefiningOp()) {
    if (!isa<SliceOp, ReshapeOp, TransposeOp>(d) || !inChain(d)) break;
    chain.push_back(d);
    v = d->getOperand(0);
  }
  auto src = dyn_cast<RankedTensorType>(v.getType());
  if (chain.empty() || !src || !src.hasStaticShape()) return std::nullopt;
  SmallVector<int64_t> sizes(src.getShape()), strides(sizes.size(), 1);
  for (int64_t d = (int64_t)sizes.size() - 2; d >= 0; --d) strides[d] = strides[d + 1] * sizes[d + 1];
  int64_t offset = 0;
  for (Operation *op : llvm::reverse(chain)) {
    auto out = cast<RankedTensorType>(op->getResult(0).getType()).getShape();
    if (auto s = dyn_cast<SliceOp>(op)) {
      for (size_t d = 0; d < sizes.size(); ++d) {
        if (s.getSteps()[d] <= 0) return std::nullopt;
        offset += s.getStarts()[d] * strides[d];
        strides[d] *= s.getSteps()[d];
      }
      sizes.assign(out.begin(), out.end());
    } else if (auto t = dyn_cast<TransposeOp>(op)) {
      SmallVector<int64_t> ns, nt;
      for (int64_t p : t.getPerm()) ns.push_back(sizes[p]), nt.push_back(strides[p]);
      sizes = ns, strides = nt;
    } else if (!reshapeView(sizes, strides, out)) {
      return std::nullopt;
    }
  }
  int64_t rank = sizes.size();
  if (rank < 2) return std::nullopt;
  int64_t rows = sizes[rank - 2], cols = sizes[rank - 1];
  int64_t rs = strides[rank - 2], cs = cols == 1 ? 1 : strides[rank - 1];
  if (rows == 1) rs = cs == 1 ? cols : 1;
  if (cs != 1 && rs != 1) return std::nullopt;
  int64_t batchStride = 0, prev = -1;
  for (int64_t d = 0; d < rank - 2; ++d) {
    if (sizes[d] == 1) continue;
    if (prev >= 0 && strides[prev] != strides[d] * sizes[d]) return std::nullopt;
    prev = d;
    batchStride = strides[d];
  }
  return StridedOperand{v, offset, batchStride, rs, cs, std::move(chain)};
}

LogicalResult FusedOp::verify() {
  Block &body = getBody().front();
  if (body.getNumArguments() != getInputs().size())
    return emitOpError("region takes ") << body.getNumArguments() << " arguments for "
                                        << getInputs().size() << " inputs";
  for (auto [arg, in] : llvm::zip(body.getArguments(), getInputs()))
    if (arg.getType() != in.getType())
      return emitOpError("region argument types differ from the inputs'");
  auto y = dyn_cast<YieldOp>(body.getTerminator());
  if (!y || y.getValues().getTypes() != getResultTypes())
    return emitOpError("must end in kiln.yield of its result types");
  return success();
}

MappingType FusedOp::getMappingType() {
  std::optional<MappingType> t;
  for (Operation &op : getBody().front().without_terminator())
    if (auto m = dyn_cast<MappingTypeOpInterface>(&op))
      t = t ? fusedMappingType(*t, m.getMappingType()) : m.getMappingType();
  return t.value_or(MappingType::OneToOne);
}

OpCost FusedOp::getCost() {
  OpCost c;
  for (Operation &op : getBody().front().without_terminator())
    c.flops += opCost(&op).flops;
  c.bytes = defaultCost(*this, 0).bytes;
  return c;
}

FailureOr<SmallVector<int64_t>> kiln::broadcastShapes(ArrayRef<int64_t> a,
                                                      ArrayRef<int64_t> b) {
  size_t rank = std::max(a.size(), b.size());
  SmallVector<int64_t> out(rank);
  for (size_t i = 0; i < rank; ++i) {
    int64_t da = i < rank - a.size() ? 1 : a[i - (rank - a.size())];
    int64_t db = i < rank - b.size() ? 1 : b[i - (rank - b.size())];
    if (da != db && da != 1 && db != 1)
      return failure();
    out[i] = da == 1 ? db : da;
  }
  return out;
}

MappingType kiln::binaryMappingType(Operation *op) {
  auto res = cast<ShapedType>(op->getResult(0).getType());
  for (Value v : op->getOperands())
    if (cast<ShapedType>(v.getType()).getShape() != res.getShape())
      return MappingType::OneToMany;
  return MappingType::OneToOne;
}

LogicalResult kiln::verifyBroadcast(Operation *op) {
  auto a = cast<ShapedType>(op->getOperand(0).getType());
  auto b = cast<ShapedType>(op->getOperand(1).getType());
  auto res = cast<ShapedType>(op->getResult(0).getType());
  auto shape = broadcastShapes(a.getShape(), b.getShape());
  if (failed(shape))
    return op->emitOpError("operand shapes cannot broadcast");
  if (ArrayRef<int64_t>(*shape) != res.getShape())
    return op->emitOpError("result shape does not match the broadcast shape");
  return success();
}

OpFoldResult ConstantOp::fold(FoldAdaptor) { return getValue(); }

LogicalResult ConvOp::verify() {
  auto in = cast<ShapedType>(getInput().getType());
  auto w = cast<ShapedType>(getWeight().getType());
  if (in.getRank() != w.getRank())
    return emitOpError("input and weight ranks differ");
  int64_t spatial = in.getRank() - 2;
  if ((int64_t)getStrides().size() != spatial ||
      (int64_t)getDilations().size() != spatial ||
      (int64_t)getPads().size() != 2 * spatial)
    return emitOpError("strides/dilations/pads do not match spatial rank");
  if (getGroup() <= 0 || in.getDimSize(1) % getGroup() != 0 ||
      w.getDimSize(0) % getGroup() != 0)
    return emitOpError("group must divide input and output channels");
  if (in.getDimSize(1) / getGroup() != w.getDimSize(1))
    return emitOpError("weight channels do not match input channels / group");
  return success();
}

LogicalResult ConcatOp::verify() {
  auto res = cast<ShapedType>(getType());
  int64_t axis = getAxis();
  if (axis < 0 || axis >= res.getRank())
    return emitOpError("axis out of range");
  int64_t total = 0;
  for (Value v : getInputs()) {
    auto t = cast<ShapedType>(v.getType());
    if (t.getRank() != res.getRank())
      return emitOpError("inputs must have the result's rank");
    total += t.getDimSize(axis);
  }
  if (total != res.getDimSize(axis))
    return emitOpError("result size along axis is not the sum of the inputs'");
  return success();
}

LogicalResult ReshapeOp::verify() {
  auto in = cast<ShapedType>(getInput().getType());
  auto out = cast<ShapedType>(getType());
  if (in.hasStaticShape() && out.hasStaticShape() &&
      in.getNumElements() != out.getNumElements())
    return emitOpError("element count changes: ") << in.getNumElements()
                                                   << " vs " << out.getNumElements();
  return success();
}

OpFoldResult ReshapeOp::fold(FoldAdaptor adaptor) {
  if (getInput().getType() == getType())
    return getInput();
  if (auto c = llvm::dyn_cast_if_present<DenseElementsAttr>(adaptor.getInput()))
    return c.reshape(cast<ShapedType>(getType()));
  return {};
}

LogicalResult TransposeOp::verify() {
  auto in = cast<ShapedType>(getInput().getType());
  auto perm = getPerm();
  if ((int64_t)perm.size() != in.getRank())
    return emitOpError("perm size must equal rank");
  llvm::SmallVector<bool> seen(perm.size(), false);
  for (int64_t p : perm) {
    if (p < 0 || p >= (int64_t)perm.size() || seen[p])
      return emitOpError("perm is not a permutation");
    seen[p] = true;
  }
  return success();
}

#define GET_OP_CLASSES
#include "kiln/Dialect/KilnOps.cpp.inc"
