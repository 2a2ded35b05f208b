// The cost model of kiln ops (MappingTypeOpInterface::getCost): FLOPs and
// bytes moved when an op runs alone. Elementwise ops use their per-element
// FLOPs (KilnOps.td); contractions, windows and reductions count their
// inner loops here. The rewriter compares these sums before and after a
// rule; the fusion planner uses the bytes of the intermediates it removes.
#include "kiln/Dialect/KilnDialect.h"

using namespace mlir;
using namespace kiln;

namespace {
double elements(Value v) {
  auto t = cast<ShapedType>(v.getType());
  return t.hasStaticShape() ? (double)t.getNumElements() : 0.0;
}
double product(ArrayRef<int64_t> dims) {
  double p = 1;
  for (int64_t d : dims) p *= (double)d;
  return p;
}
OpCost withFlops(Operation *op, double flops) {
  OpCost c = defaultCost(op, 0);
  c.flops = flops;
  return c;
}
double inputElements(Operation *op) { return elements(op->getOperand(0)); }
} // namespace

double kiln::tensorBytes(Value v) {
  auto t = cast<ShapedType>(v.getType());
  unsigned bits = t.getElementType().getIntOrFloatBitWidth();
  return elements(v) * (double)std::max(1u, bits / 8);
}

OpCost kiln::defaultCost(Operation *op, double flopsPerElement) {
  OpCost c;
  for (Value v : op->getOperands()) c.bytes += tensorBytes(v);
  for (Value v : op->getResults()) {
    c.bytes += tensorBytes(v);
    c.flops += flopsPerElement * elements(v);
  }
  return c;
}

OpCost kiln::opCost(Operation *op) {
  if (auto m = dyn_cast<MappingTypeOpInterface>(op))
    return m.getCost();
  return defaultCost(op, 0);
}

std::string kiln::stringifyAlgebra(unsigned mask) {
  static const std::pair<unsigned, const char *> names[] = {
      {Associative, "associative"}, {Commutative, "commutative"}, {Distributive, "distributive"},
      {Linear, "linear"},           {Multiplicative, "multiplicative"}, {ExpLog, "exp-log"},
      {DataMovement, "data movement"}};
  std::string s;
  for (auto [bit, name] : names)
    if (mask & bit) s += (s.empty() ? "" : ", ") + std::string(name);
  return s.empty() ? "-" : s;
}

OpCost ConvOp::getCost() {
  auto w = cast<ShapedType>(getWeight().getType()).getShape();
  return withFlops(*this, 2 * elements(getResult()) * product(w.drop_front(1)));
}
OpCost ConvTransposeOp::getCost() {
  auto w = cast<ShapedType>(getWeight().getType()).getShape();
  double perIn = (double)w[1] * product(w.drop_front(2)); // (Cout / group) x kernel
  return withFlops(*this, 2 * elements(getInput()) * perIn);
}
OpCost GemmOp::getCost() {
  auto a = cast<ShapedType>(getA().getType()).getShape();
  double k = getTransA() ? a[0] : a[1];
  return withFlops(*this, 2 * elements(getResult()) * (k + 1));
}
OpCost MatMulOp::getCost() {
  auto a = cast<ShapedType>(getA().getType()).getShape();
  return withFlops(*this, 2 * elements(getResult()) * (double)a.back());
}
OpCost MaxPoolOp::getCost() { return withFlops(*this, elements(getResult()) * product(getKernelShape())); }
OpCost AveragePoolOp::getCost() { return withFlops(*this, elements(getResult()) * product(getKernelShape())); }

#define KILN_REDUCE_COST(Op)                                                                       \
  OpCost Op::getCost() { return withFlops(*this, inputElements(*this) * getFlopsPerElement()); }
KILN_REDUCE_COST(ReduceSumOp)
KILN_REDUCE_COST(ReduceMeanOp)
KILN_REDUCE_COST(ReduceMaxOp)
KILN_REDUCE_COST(ReduceMinOp)
KILN_REDUCE_COST(ReduceProdOp)
KILN_REDUCE_COST(ReduceL1Op)
KILN_REDUCE_COST(ReduceL2Op)
KILN_REDUCE_COST(ReduceSumSquareOp)
KILN_REDUCE_COST(ReduceLogSumOp)
KILN_REDUCE_COST(ReduceLogSumExpOp)
KILN_REDUCE_COST(SoftmaxOp)
KILN_REDUCE_COST(LogSoftmaxOp)
KILN_REDUCE_COST(LayerNormOp)
KILN_REDUCE_COST(ArgMaxOp)
KILN_REDUCE_COST(ArgMinOp)
#undef KILN_REDUCE_COST

OpCost TopKOp::getCost() {
  auto s = cast<ShapedType>(getInput().getType()).getShape();
  return withFlops(*this, inputElements(*this) * (double)s[getAxis()]);
}
OpCost EinsumOp::getCost() {
  // Every loop dim appears in some operand's map; take its extent there.
  auto maps = getIndexingMaps().getAsValueRange<AffineMapAttr>();
  unsigned nDims = (*maps.begin()).getNumDims();
  SmallVector<double> extent(nDims, 1);
  unsigned i = 0;
  for (AffineMap m : maps) {
    Value v = i < getInputs().size() ? getInputs()[i] : getResult();
    auto shape = cast<ShapedType>(v.getType()).getShape();
    for (auto [k, e] : llvm::enumerate(m.getResults()))
      if (auto d = dyn_cast<AffineDimExpr>(e)) extent[d.getPosition()] = shape[k];
    ++i;
  }
  double iters = 1;
  for (double e : extent) iters *= e;
  return withFlops(*this, 2 * iters * (double)getInputs().size());
}

void kiln::printOpTable(MLIRContext &ctx, llvm::raw_ostream &os) {
  os << "| op | mapping type | algebraic properties | FLOPs (cost model) |\n"
        "|---|---|---|---|\n";
  SmallVector<RegisteredOperationName> names;
  for (RegisteredOperationName name : ctx.getRegisteredOperations())
    if (name.getDialectNamespace() == KilnDialect::getDialectNamespace())
      names.push_back(name);
  llvm::sort(names, [](auto a, auto b) { return a.getStringRef() < b.getStringRef(); });
  for (RegisteredOperationName name : names) {
    auto *iface = name.getInterface<MappingTypeOpInterface>();
    if (!iface) {
      os << "| `" << name.getStringRef() << "` | MISSING | | |\n";
      continue;
    }
    std::string mapping = stringifyMappingType(iface->getBaseMappingType()).str();
    if (iface->isBroadcasting())
      mapping += " (One-to-Many when an input broadcasts)";
    os << "| `" << name.getStringRef() << "` | " << mapping << " | "
       << stringifyAlgebra(iface->getAlgebraicProperties()) << " | " << iface->getCostFormula()
       << " |\n";
  }
}
