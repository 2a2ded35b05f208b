// kiln-plan-fusion: DNNFusion's fusion plan (dnnfusion.md §4), made visible
// in the IR as one `kiln.fused` region op per fusion block.
//
// Seeds are taken One-to-One ops first, smallest result first, then every
// other op in program order. A block grows toward consumers, then toward
// producers, recursively. Each candidate is judged by the fusion table
// (kiln::fusionDecision on the block's fused mapping type and the
// candidate's): "no" stops, "fuse" goes on to the constraint check,
// "profile" also needs the cost model to say the fused kernel is faster
// than the two apart (a roofline estimate: max(FLOPs / peak, bytes /
// bandwidth), with the FLOPs of ops recomputed per element of a
// broadcasting block counted as such). The constraint check keeps every
// block one kernel that kiln's code generator emits without writing an
// intermediate to memory:
//   - at most one op that is not pointwise (the head: Conv, Gemm, MatMul,
//     Softmax, a reduction, ...), and it comes first: the rest is an
//     epilogue computed in place on the head's output, so every op on the
//     path from the head keeps its element count and is elementwise or a
//     Reshape (no Transpose or Expand of the head's result), except that a
//     MatMul may be followed by a Transpose that keeps its rows contiguous:
//     the GEMM then writes to the transposed places directly; and a
//     MatMul may come after an operand prologue: Slice / Reshape /
//     Transpose ops whose result it reads in place as a strided operand
//     (kiln::stridedMatMulOperand), after which the block grows toward
//     consumers only;
//   - one output: every value of the block but the last is used only
//     inside it (an intermediate is removed only when all its consumers
//     fused with it);
//   - no cycle through ops outside the block;
//   - at most `max-ops` ops (a register-pressure bound on the fused body).
// With `no-fusion`, every op becomes its own block (the unfused baseline).
#include "kiln/Dialect/KilnDialect.h"
#include "kiln/Transforms/Passes.h"
#include "kiln/Transforms/Weights.h"

#include "mlir/Analysis/TopologicalSortUtils.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/IRMapping.h"

namespace kiln {
#define GEN_PASS_DEF_PLANFUSION
#include "kiln/Transforms/Passes.h.inc"
} // namespace kiln

using namespace mlir;
using namespace kiln;

namespace {

// Roofline figures of the analytical cost model (one x86-64 core with
// AVX2/FMA: 2 x 8-wide FMA per cycle at ~3 GHz; ~20 GB/s of memory
// bandwidth). Only their ratio matters for fuse-or-not decisions.
constexpr double kPeakFlops = 96e9;
constexpr double kBandwidth = 20e9;
// Relative timing noise of the profiling database's measurements.
constexpr double kProfileNoise = 0.03;
double latency(double flops, double bytes) { return std::max(flops / kPeakFlops, bytes / kBandwidth); }

double elementsOf(Value v) { return (double)cast<ShapedType>(v.getType()).getNumElements(); }

struct FusionBlock {
  SmallVector<Operation *> ops;
  MappingType type = MappingType::OneToOne;
  Operation *head = nullptr;
  /// Ops before a MatMul head that it reads through (an operand prologue).
  int64_t prologueOps = 0;
};

class Planner {
public:
  Planner(func::FuncOp fn, int64_t maxOps, BlockProfiler *profiler)
      : fn(fn), fnOp(fn.getOperation()), maxOps(maxOps), profiler(profiler) {
    int64_t i = 0;
    for (Operation &op : fn.getBody().front()) order[&op] = i++;
  }

  /// Candidates: kiln compute ops (constants stay outside, as inputs).
  bool isCandidate(Operation *op) const {
    return op && isa<KilnDialect>(op->getDialect()) && !isa<ConstantOp, FusedOp, YieldOp>(op) &&
           op->getParentOp() == fnOp;
  }

  SmallVector<FusionBlock> plan(bool noFusion) {
    SmallVector<Operation *> seeds, rest;
    for (Operation &op : fn.getBody().front())
      if (isCandidate(&op))
        (mappingOf(&op) == MappingType::OneToOne && isPointwise(&op) ? seeds : rest).push_back(&op);
    llvm::stable_sort(seeds, [](Operation *a, Operation *b) {
      return tensorBytes(a->getResult(0)) < tensorBytes(b->getResult(0));
    });
    seeds.append(rest);
    SmallVector<FusionBlock> blocks;
    for (Operation *seed : seeds) {
      if (blockOf.count(seed))
        continue;
      FusionBlock blk;
      add(blk, seed, blocks.size());
      if (!noFusion)
        grow(blk, blocks.size());
      blocks.push_back(std::move(blk));
    }
    return blocks;
  }

  /// kiln's extension of the fusion table (docs/fusion.md): the block of
  /// a Winograd 3x3 conv (with its Relu/Clip) joins the block of the 1x1
  /// conv that reads its result, as one kernel that runs the 1x1 conv on
  /// each band of the first conv's output while it is in cache (a conv
  /// chain: kiln::matchConvChain). The table says Conv then Conv never
  /// fuses; kiln makes this pair a "profile" cell: the profiling database
  /// or the cost model decides. Returns the number of chains.
  int64_t chainConvs(SmallVector<FusionBlock> &blocks, StringRef winograd) {
    int64_t chains = 0;
    for (size_t i = 0; i < blocks.size(); ++i) {
      auto tail = dyn_cast_or_null<ConvOp>(blocks[i].head);
      Operation *in = tail ? tail.getInput().getDefiningOp() : nullptr;
      auto j = in ? blockOf.find(in) : blockOf.end();
      if (j == blockOf.end() || j->second == (int64_t)i) continue;
      FusionBlock &hb = blocks[j->second], &tb = blocks[i];
      SmallVector<Operation *> both(hb.ops);
      both.append(tb.ops);
      if (!matchConvChain(both, winograd) || !mergeSaysFuse(hb, tb)) continue;
      for (Operation *op : hb.ops) blockOf[op] = (int64_t)i;
      tb.ops = std::move(both);
      hb.ops.clear();
      hb.head = nullptr;
      ++chains;
    }
    return chains;
  }

  int64_t profiled = 0, modelled = 0;

private:
  func::FuncOp fn;
  Operation *fnOp;
  int64_t maxOps;
  BlockProfiler *profiler;
  DenseMap<Operation *, int64_t> order;
  DenseMap<Operation *, int64_t> blockOf;

  static MappingType mappingOf(Operation *op) {
    return cast<MappingTypeOpInterface>(op).getMappingType();
  }
  bool inBlock(const FusionBlock &b, Operation *op) const { return llvm::is_contained(b.ops, op); }

  void add(FusionBlock &b, Operation *op, int64_t id) {
    b.type = b.ops.empty() ? mappingOf(op) : b.type;
    b.ops.push_back(op);
    blockOf[op] = id;
    if (!isPointwise(op))
      b.head = op;
  }

  void grow(FusionBlock &b, int64_t id) {
    bool changed = true;
    while (changed && (int64_t)b.ops.size() < maxOps) {
      changed = false;
      for (size_t i = 0; i < b.ops.size() && !changed; ++i)
        for (Operation *user : b.ops[i]->getUsers())
          if (tryAdd(b, user, /*asConsumer=*/true, id)) {
            changed = true;
            break;
          }
      for (size_t i = 0; i < b.ops.size() && !changed; ++i)
        for (Value v : b.ops[i]->getOperands())
          if (tryAdd(b, v.getDefiningOp(), /*asConsumer=*/false, id)) {
            changed = true;
            break;
          }
    }
  }

  /// Values of the block (with `extra`) used outside it or returned.
  SmallVector<Value> outputs(const FusionBlock &b, Operation *extra) const {
    SmallVector<Value> outs;
    auto inside = [&](Operation *op) { return op == extra || inBlock(b, op); };
    auto visit = [&](Operation *op) {
      for (Value r : op->getResults())
        if (llvm::any_of(r.getUsers(), [&](Operation *u) { return !inside(u); }))
          outs.push_back(r);
    };
    for (Operation *op : b.ops) visit(op);
    if (extra) visit(extra);
    return outs;
  }

  /// True when `from` (outside the block) depends on an op of the block
  /// through ops outside it: adding its consumer would make a cycle.
  bool dependsOnBlock(const FusionBlock &b, Operation *from, Operation *extra) const {
    int64_t lo = INT64_MAX;
    for (Operation *op : b.ops) lo = std::min(lo, order.lookup(op));
    SmallVector<Operation *> stack{from};
    DenseSet<Operation *> seen;
    while (!stack.empty()) {
      Operation *op = stack.pop_back_val();
      if (!op || !seen.insert(op).second || order.lookup(op) < lo)
        continue;
      if (inBlock(b, op) || op == extra)
        return true;
      for (Value v : op->getOperands()) stack.push_back(v.getDefiningOp());
    }
    return false;
  }

  /// Element count of the block's iteration domain (the head's result, or
  /// the largest result of a pointwise block).
  static double domainOf(const FusionBlock &b, Operation *extra) {
    if (b.head) return elementsOf(b.head->getResult(0));
    if (extra && !isPointwise(extra)) return elementsOf(extra->getResult(0));
    double d = extra ? elementsOf(extra->getResult(0)) : 0;
    for (Operation *op : b.ops) d = std::max(d, elementsOf(op->getResult(0)));
    return d;
  }

  /// The cost model's latency of a block run as one kernel.
  double blockLatency(const FusionBlock &b, Operation *extra) const {
    double domain = domainOf(b, extra);
    double flops = 0, bytes = 0;
    auto visit = [&](Operation *op) {
      // Pointwise ops run once per element of the domain (recomputed when
      // their own result is smaller); others at their own cost.
      double f = opCost(op).flops;
      if (isPointwise(op) && !b.head) f = f / std::max(1.0, elementsOf(op->getResult(0))) * domain;
      flops += f;
      for (Value v : op->getOperands()) {
        Operation *d = v.getDefiningOp();
        bool internal = d && (d == extra || inBlock(b, d));
        if (!internal) bytes += tensorBytes(v);
      }
    };
    for (Operation *op : b.ops) visit(op);
    if (extra) visit(extra);
    for (Value v : outputs(b, extra)) bytes += tensorBytes(v);
    return latency(flops, bytes);
  }

  /// A "profile" cell: measured latencies when a profiler is given (the
  /// fused kernel must beat the two apart), else the roofline model.
  /// The profiling database's answer on fusing ops `a` with ops `b`, when
  /// it can measure all three blocks.
  std::optional<bool> measuredSaysFuse(ArrayRef<Operation *> a, ArrayRef<Operation *> b) {
    if (!profiler) return std::nullopt;
    SmallVector<Operation *> fused(a);
    fused.append(b.begin(), b.end());
    auto f = profiler->latency(fused), p = profiler->latency(a), q = profiler->latency(b);
    if (!f || !p || !q) return std::nullopt;
    ++profiled;
    // Within the measurement noise (a few percent between runs of the same
    // kernel) a tie goes to fusion: one kernel fewer, and no intermediate
    // in memory.
    return *f <= (*p + *q) * (1 + kProfileNoise);
  }

  bool profileSaysFuse(const FusionBlock &b, Operation *x) {
    if (auto measured = measuredSaysFuse(b.ops, {x})) return *measured;
    ++modelled;
    FusionBlock alone;
    alone.ops.push_back(x);
    alone.head = isPointwise(x) ? nullptr : x;
    return blockLatency(b, x) < blockLatency(b, nullptr) + blockLatency(alone, nullptr);
  }

  /// A "profile" decision on merging whole blocks a and b (a conv chain).
  bool mergeSaysFuse(const FusionBlock &a, const FusionBlock &b) {
    if (auto measured = measuredSaysFuse(a.ops, b.ops)) return *measured;
    ++modelled;
    FusionBlock merged;
    merged.ops = a.ops;
    merged.ops.append(b.ops);
    merged.head = b.head;
    // Two compute-bound convs tie on the roofline (the FLOPs are the same
    // fused or not); the merged block moves fewer bytes (the intermediate
    // is neither written nor read back), so a tie goes to fusion, as it
    // does within the noise of measured decisions.
    const double apart = blockLatency(a, nullptr) + blockLatency(b, nullptr);
    return blockLatency(merged, nullptr) <= apart * (1 + 1e-9);
  }

  /// How many ops the Slice / Reshape / Transpose chains (of the ops
  /// `inChain` accepts) through which MatMul `mm` reads its operands hold;
  /// nullopt when one of them is not a strided view of its source.
  static std::optional<int64_t> prologueSize(Operation *mm, function_ref<bool(Operation *)> inChain) {
    DenseSet<Operation *> chain;
    for (Value v : mm->getOperands()) {
      if (!v.getDefiningOp() || !inChain(v.getDefiningOp())) continue;
      auto view = stridedMatMulOperand(v, inChain);
      if (!view) return std::nullopt;
      chain.insert(view->ops.begin(), view->ops.end());
    }
    return (int64_t)chain.size();
  }

  bool tryAdd(FusionBlock &b, Operation *x, bool asConsumer, int64_t id) {
    if (!isCandidate(x) || blockOf.count(x) || (int64_t)b.ops.size() >= maxOps)
      return false;
    if (x->getNumResults() != 1)
      return false;
    MappingType tx = mappingOf(x);
    FusionDecision d = asConsumer ? fusionDecision(b.type, tx) : fusionDecision(tx, b.type);
    if (d == FusionDecision::No)
      return false;
    // Code generation constraints.
    bool xPointwise = isPointwise(x);
    bool xFeedsBlock = llvm::any_of(x->getUsers(), [&](Operation *u) { return inBlock(b, u); });
    bool xReadsBlock = llvm::any_of(x->getOperands(), [&](Value v) {
      return v.getDefiningOp() && inBlock(b, v.getDefiningOp());
    });
    // After an operand prologue, producers only to extend the prologue
    // (the MatMul's other operand's chain, op by op back from the head).
    bool prologue = false, extend = false;
    if (b.prologueOps && !asConsumer) {
      if (!isa<SliceOp, ReshapeOp, TransposeOp>(x) || !xFeedsBlock ||
          llvm::any_of(x->getUsers(), [&](Operation *u) { return !inBlock(b, u); }))
        return false;
      auto n = prologueSize(b.head, [&](Operation *o) { return o == x || inBlock(b, o); });
      if (!n || *n != b.prologueOps + 1) return false;
      extend = true;
    } else if (!xPointwise && !b.head && xReadsBlock && !xFeedsBlock) {
      // An operand prologue: a block of Slice / Reshape / Transpose whose
      // result a MatMul of two activations reads in place as a strided
      // operand (attention's K and V sliced out of the QKV projection).
      if (!isa<MatMulOp>(x) || !cast<ShapedType>(x->getResult(0).getType()).getElementType().isF32() ||
          !llvm::all_of(b.ops, [](Operation *op) { return isa<SliceOp, ReshapeOp, TransposeOp>(op); }))
        return false;
      if (llvm::any_of(x->getOperands(), [](Value v) { return v.getDefiningOp<ConstantOp>(); })) return false;
      auto n = prologueSize(x, [&](Operation *o) { return inBlock(b, o); });
      if (!n || *n != (int64_t)b.ops.size()) return false;
      prologue = true;
    } else if (!xPointwise) {
      // A head joins a pointwise block it feeds, as its first op: every op
      // of the block is then on its path and must keep its element count.
      if (b.head || xReadsBlock || !xFeedsBlock)
        return false;
      double n = elementsOf(x->getResult(0));
      for (Operation *op : b.ops)
        if (isa<TransposeOp, ExpandOp>(op) || elementsOf(op->getResult(0)) != n)
          return false;
    } else if (b.head && xReadsBlock) {
      // A Transpose right after a MatMul head: the GEMM writes each result
      // to its transposed place (a strided output), so nothing is stored
      // twice.
      auto t = dyn_cast<TransposeOp>(x);
      bool stridedOut = t && isa<MatMulOp>(b.head) && (int64_t)b.ops.size() == 1 + b.prologueOps &&
                        t.getInput() == b.head->getResult(0) &&
                        transposedMatMulLayout(cast<ShapedType>(t.getInput().getType()).getShape(),
                                               t.getPerm());
      // Otherwise on the head's path: in-place epilogue, same element count.
      if (!stridedOut && (isa<TransposeOp, ExpandOp>(x) ||
                          elementsOf(x->getResult(0)) != elementsOf(b.head->getResult(0))))
        return false;
    } else if (b.head && !xReadsBlock) {
      // Off the path: computed per element of the epilogue, read-only; it
      // must not feed the head (the head is the block's first op).
      if (!xFeedsBlock || llvm::is_contained(x->getUsers(), b.head)) return false;
    }
    if (outputs(b, x).size() != 1)
      return false;
    // No cycle: x's operands from outside must not depend on the block, and
    // block ops' operands from outside must not depend on x.
    for (Value v : x->getOperands()) {
      Operation *dd = v.getDefiningOp();
      if (dd && !inBlock(b, dd) && dependsOnBlock(b, dd, nullptr))
        return false;
    }
    for (Operation *op : b.ops)
      for (Value v : op->getOperands()) {
        Operation *dd = v.getDefiningOp();
        if (dd && dd != x && !inBlock(b, dd)) {
          FusionBlock only;
          only.ops.push_back(x);
          if (dependsOnBlock(only, dd, nullptr))
            return false;
        }
      }
    if (d == FusionDecision::Profile && !profileSaysFuse(b, x))
      return false;
    b.type = asConsumer ? fusedMappingType(b.type, tx) : fusedMappingType(tx, b.type);
    if (prologue) b.prologueOps = (int64_t)b.ops.size();
    if (extend) ++b.prologueOps;
    add(b, x, id);
    return true;
  }
};

/// Wraps the ops of one block into a kiln.fused op placed at the block's
/// last op; the function body is re-sorted topologically afterwards.
void materialize(func::FuncOp fn, const FusionBlock &blk, int64_t id, OpBuilder &b) {
  SmallVector<Operation *> ops(blk.ops);
  DenseMap<Operation *, int64_t> pos;
  int64_t i = 0;
  for (Operation &op : fn.getBody().front()) pos[&op] = i++;
  llvm::sort(ops, [&](Operation *x, Operation *y) { return pos[x] < pos[y]; });
  DenseSet<Operation *> in(ops.begin(), ops.end());
  SmallVector<Value> inputs, outputs;
  DenseSet<Value> seenIn;
  for (Operation *op : ops) {
    for (Value v : op->getOperands())
      if ((!v.getDefiningOp() || !in.count(v.getDefiningOp())) && seenIn.insert(v).second)
        inputs.push_back(v);
    for (Value r : op->getResults())
      if (llvm::any_of(r.getUsers(), [&](Operation *u) { return !in.count(u); }))
        outputs.push_back(r);
  }
  b.setInsertionPointAfter(ops.back());
  SmallVector<Type> resultTypes;
  for (Value v : outputs) resultTypes.push_back(v.getType());
  auto fused = b.create<FusedOp>(ops.back()->getLoc(), resultTypes, inputs, b.getI64IntegerAttr(id));
  mlir::Block *body = b.createBlock(&fused.getBody());
  IRMapping map;
  for (Value v : inputs) map.map(v, body->addArgument(v.getType(), v.getLoc()));
  b.setInsertionPointToStart(body);
  for (Operation *op : ops) b.clone(*op, map);
  SmallVector<Value> yielded;
  for (Value v : outputs) yielded.push_back(map.lookup(v));
  b.create<YieldOp>(fused.getLoc(), yielded);
  for (auto [v, r] : llvm::zip(outputs, fused.getResults())) v.replaceAllUsesWith(r);
  for (Operation *op : llvm::reverse(ops)) op->erase();
}

struct PlanFusionPass : kiln::impl::PlanFusionBase<PlanFusionPass> {
  using PlanFusionBase::PlanFusionBase;
  PlanFusionPass(const PlanFusionOptions &o, BlockProfiler *p) : PlanFusionBase(o), profiler(p) {}
  BlockProfiler *profiler = nullptr;

  void runOnOperation() override {
    func::FuncOp fn = getOperation();
    Planner planner(fn, maxOps, profiler);
    SmallVector<FusionBlock> blocks = planner.plan(noFusion);
    const int64_t chains = convChains && !noFusion ? planner.chainConvs(blocks, winograd) : 0;
    numChains = chains;
    OpBuilder b(fn.getContext());
    int64_t id = 0;
    for (const FusionBlock &blk : blocks) {
      // A block of Reshapes only is a view: no kernel (nor is a block
      // merged into a conv chain, left empty).
      if (llvm::all_of(blk.ops, [](Operation *op) { return isa<ReshapeOp>(op); }))
        continue;
      materialize(fn, blk, id++, b);
      sortTopologically(&fn.getBody().front());
    }
    numBlocks = id;
    numProfiled = planner.profiled;
    numModelled = planner.modelled;
    fn->setAttr("kiln.conv_chains", b.getI64IntegerAttr(chains));
    fn->setAttr("kiln.profile_decisions",
                b.getDenseI64ArrayAttr({planner.profiled, planner.modelled}));
  }
};

} // namespace

std::unique_ptr<Pass> kiln::createPlanFusion(const PlanFusionOptions &options, BlockProfiler *profiler) {
  return std::make_unique<PlanFusionPass>(options, profiler);
}
