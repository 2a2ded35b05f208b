// kiln-parallelize-kernels: the large loop nests of generated kernels run
// on the runtime's thread pool (kiln_rt_parallel_for), CPU targets.
//
// A top-level linalg op of @kiln_kernel_N with enough work becomes
// scf.parallel (linalg's own lowering); its leading parallel loops are
// outlined into @kiln_kernel_N_parK(ctx, begin, end), which runs a range of
// their linearised index. What the body needs from the kernel either
// travels in ctx (8-byte slots: the kernel's memref arguments as aligned
// pointers, scalars) or is cloned into the outlined function (pure ops:
// constants, views, the weights' global). Runtime kernels (GEMM, conv, ...)
// are parallel already; this is for the rest: pointwise blocks with
// transposes and slices, reductions, pools, gathers, copies.
#include "kiln/Transforms/Passes.h"

#include "mlir/Conversion/LLVMCommon/MemRefBuilder.h"
#include "mlir/Conversion/LLVMCommon/TypeConverter.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/Linalg/Transforms/Transforms.h"
#include "mlir/Dialect/SCF/Utils/Utils.h"
#include "mlir/IR/IRMapping.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"
#include "mlir/Transforms/RegionUtils.h"

namespace kiln {
#define GEN_PASS_DEF_PARALLELIZEKERNELS
#include "kiln/Transforms/Passes.h.inc"
} // namespace kiln

using namespace mlir;

namespace {

/// Leading loops are linearised until their product reaches this: enough
/// ranges for the pool's threads, few index divisions per iteration.
constexpr int64_t kMinOuter = 32;

/// The buffer a memref value is a view of: through pure ops on a memref
/// (subview, transpose, reshapes, casts, view), to an argument or alloc.
Value rootOf(Value v) {
  while (Operation *def = v.getDefiningOp()) {
    if (!isMemoryEffectFree(def)) break;
    auto src = llvm::find_if(def->getOperands(), [](Value o) { return isa<MemRefType>(o.getType()); });
    if (src == def->getOperands().end()) break;
    v = *src;
  }
  return v;
}

bool slotType(Type t) { return isa<IndexType, IntegerType, FloatType>(t); }

bool staticMemRef(Type t) {
  auto m = dyn_cast<MemRefType>(t);
  if (!m || !m.hasStaticShape() || m.getMemorySpace()) return false;
  int64_t offset;
  SmallVector<int64_t> strides;
  return succeeded(getStridesAndOffset(m, strides, offset)) && !ShapedType::isDynamic(offset) &&
         llvm::none_of(strides, ShapedType::isDynamic);
}

/// How the outlined body gets each value it uses from outside: cloned
/// (pure ops, recursively) or through a ctx slot (the kernel's memref
/// arguments, scalars computed by ops with effects). False if some value
/// can take neither way.
struct Captures {
  llvm::SetVector<Value> slots;
  llvm::SetVector<Operation *> clones; // in dependence order
  bool add(Value v, func::FuncOp fn) {
    if (slots.contains(v)) return true;
    Operation *def = v.getDefiningOp();
    if (!def) {
      auto arg = cast<BlockArgument>(v);
      if (arg.getOwner() != &fn.getBody().front()) return false;
      if (!staticMemRef(v.getType()) && !slotType(v.getType())) return false;
      slots.insert(v);
      return true;
    }
    if (clones.contains(def)) return true;
    if (def->getNumRegions() == 0 && isMemoryEffectFree(def)) {
      for (Value o : def->getOperands())
        if (!add(o, fn)) return false;
      clones.insert(def);
      return true;
    }
    if (!slotType(v.getType())) return false;
    slots.insert(v);
    return true;
  }
};

struct ParallelizeKernelsPass : kiln::impl::ParallelizeKernelsBase<ParallelizeKernelsPass> {
  using ParallelizeKernelsBase::ParallelizeKernelsBase;

  /// How many leading loops of `op` to run in parallel (0: none).
  int64_t leadingLoops(linalg::LinalgOp op) const {
    if (!op.hasPureBufferSemantics()) return 0;
    SmallVector<int64_t> ranges = op.getStaticLoopRanges();
    if (ranges.empty() || llvm::any_of(ranges, ShapedType::isDynamic)) return 0;
    int64_t work = 1;
    for (int64_t r : ranges) work *= r;
    if (work < minWork) return 0;
    auto iters = op.getIteratorTypesArray();
    int64_t p = 0, outer = 1;
    while (p < (int64_t)iters.size() && iters[p] == utils::IteratorType::parallel && outer < kMinOuter)
      outer *= ranges[p++];
    if (outer < 2) return 0;
    // Each leading index must pick its own elements of every output ...
    for (OpOperand &init : op.getDpsInitsMutable()) {
      AffineMap map = op.getMatchingIndexingMap(&init);
      for (int64_t d = 0; d < p; ++d)
        if (!llvm::any_of(map.getResults(), [&](AffineExpr e) {
              auto dim = dyn_cast<AffineDimExpr>(e);
              return dim && dim.getPosition() == d;
            }))
          return 0;
      // ... and no input may read an output's buffer elsewhere than
      // where the same iteration writes it.
      for (OpOperand *in : op.getDpsInputOperands())
        if (isa<MemRefType>(in->get().getType()) && rootOf(in->get()) == rootOf(init.get()) &&
            (in->get() != init.get() || op.getMatchingIndexingMap(in) != map))
          return 0;
    }
    return p;
  }

  void runOnOperation() override {
    ModuleOp module = getOperation();
    SmallVector<std::pair<linalg::LinalgOp, int64_t>> work;
    for (auto fn : module.getOps<func::FuncOp>()) {
      if (fn.isExternal() || !fn.getName().starts_with("kiln_kernel_")) continue;
      for (Operation &op : fn.getBody().front())
        if (auto l = dyn_cast<linalg::LinalgOp>(&op))
          if (int64_t p = leadingLoops(l)) work.push_back({l, p});
    }
    if (work.empty()) return;
    MLIRContext *ctx = &getContext();
    OpBuilder mb(ctx);
    mb.setInsertionPointToEnd(module.getBody());
    auto ptrTy = LLVM::LLVMPointerType::get(ctx);
    auto i64 = mb.getI64Type();
    auto bodyTy = mb.getFunctionType({ptrTy, i64, i64}, {});
    if (!module.lookupSymbol("kiln_rt_parallel_for"))
      mb.create<func::FuncOp>(module.getLoc(), "kiln_rt_parallel_for", mb.getFunctionType({i64, bodyTy, ptrTy}, {}))
          .setPrivate();
    LLVMTypeConverter converter(ctx);
    llvm::DenseMap<Operation *, int> outlined; // per kernel
    for (auto [op, p] : work) {
      auto fn = op->getParentOfType<func::FuncOp>();
      IRRewriter rw(ctx);
      rw.setInsertionPoint(op);
      FailureOr<linalg::LinalgLoops> loops = linalg::linalgOpToParallelLoops(rw, op);
      if (failed(loops) || loops->empty()) {
        op.emitError("kiln-parallelize-kernels: could not lower to loops");
        return signalPassFailure();
      }
      auto par = dyn_cast<scf::ParallelOp>(loops->front());
      rw.eraseOp(op);
      if (!par || par.getNumResults() != 0 || (int64_t)par.getNumLoops() < p) continue;
      std::string name = (fn.getName() + "_par" + std::to_string(outlined[fn]++)).str();
      if (outline(par, p, fn, name, bodyTy, converter)) ++numParallel;
    }
  }

  /// Replaces `par`'s first p loops by a kiln_rt_parallel_for call on a new
  /// function `name`; false (par left as it is) if a value cannot cross.
  bool outline(scf::ParallelOp par, int64_t p, func::FuncOp fn, StringRef name, FunctionType bodyTy,
               const LLVMTypeConverter &converter) {
    Location loc = par.getLoc();
    SmallVector<int64_t> lb, ub, st;
    for (int64_t d = 0; d < p; ++d) {
      auto l = getConstantIntValue(par.getLowerBound()[d]), u = getConstantIntValue(par.getUpperBound()[d]),
           s = getConstantIntValue(par.getStep()[d]);
      if (!l || !u || !s || *s <= 0 || *u <= *l) return false;
      lb.push_back(*l), ub.push_back(*u), st.push_back(*s);
    }
    Captures caps;
    llvm::SetVector<Value> above;
    getUsedValuesDefinedAbove(par.getRegion(), above);
    for (int64_t d = p; d < (int64_t)par.getNumLoops(); ++d)
      for (Value v : {par.getLowerBound()[d], par.getUpperBound()[d], par.getStep()[d]}) above.insert(v);
    for (Value v : above)
      if (!caps.add(v, fn)) return false;

    MLIRContext *ctx = par.getContext();
    auto ptrTy = LLVM::LLVMPointerType::get(ctx);
    OpBuilder b(ctx);
    auto i64 = b.getI64Type();
    auto slot = [&](OpBuilder &bb, Value base, int64_t i) {
      return bb.create<LLVM::GEPOp>(loc, ptrTy, i64, base, ArrayRef<LLVM::GEPArg>{(int32_t)i});
    };
    // The kernel: the slots, then the call.
    b.setInsertionPoint(par);
    int64_t n = 1;
    for (int64_t d = 0; d < p; ++d) n *= (ub[d] - lb[d] + st[d] - 1) / st[d];
    Value count = b.create<LLVM::ConstantOp>(loc, i64, std::max<int64_t>(1, caps.slots.size()));
    Value ctxPtr = b.create<LLVM::AllocaOp>(loc, ptrTy, i64, count);
    for (auto [i, v] : llvm::enumerate(caps.slots)) {
      Value x = v;
      if (isa<MemRefType>(v.getType())) {
        x = b.create<memref::ExtractAlignedPointerAsIndexOp>(loc, v);
        x = b.create<LLVM::IntToPtrOp>(loc, ptrTy, b.create<arith::IndexCastOp>(loc, i64, x));
      } else if (v.getType().isIndex()) {
        x = b.create<arith::IndexCastOp>(loc, i64, v);
      }
      b.create<LLVM::StoreOp>(loc, x, slot(b, ctxPtr, i));
    }
    Value fnPtr = b.create<func::ConstantOp>(loc, bodyTy, SymbolRefAttr::get(ctx, name));
    b.create<func::CallOp>(loc, "kiln_rt_parallel_for", TypeRange{},
                           ValueRange{b.create<arith::ConstantIntOp>(loc, n, 64), fnPtr, ctxPtr});

    // The outlined range of the loops.
    b.setInsertionPointAfter(fn);
    auto body = b.create<func::FuncOp>(loc, name, bodyTy);
    body.setPrivate();
    Block *entry = body.addEntryBlock();
    b.setInsertionPointToStart(entry);
    IRMapping map;
    for (auto [i, v] : llvm::enumerate(caps.slots)) {
      Value at = slot(b, entry->getArgument(0), i);
      if (auto mt = dyn_cast<MemRefType>(v.getType())) {
        Value ptr = b.create<LLVM::LoadOp>(loc, ptrTy, at);
        Value desc = MemRefDescriptor::fromStaticShape(b, loc, converter, mt, ptr);
        map.map(v, b.create<UnrealizedConversionCastOp>(loc, mt, desc).getResult(0));
      } else if (v.getType().isIndex()) {
        map.map(v, b.create<arith::IndexCastOp>(loc, b.getIndexType(), b.create<LLVM::LoadOp>(loc, i64, at)));
      } else {
        map.map(v, b.create<LLVM::LoadOp>(loc, v.getType(), at));
      }
    }
    for (Operation *op : caps.clones) b.clone(*op, map);
    Value begin = b.create<arith::IndexCastOp>(loc, b.getIndexType(), entry->getArgument(1));
    Value end = b.create<arith::IndexCastOp>(loc, b.getIndexType(), entry->getArgument(2));
    Value one = b.create<arith::ConstantIndexOp>(loc, 1);
    auto outer = b.create<scf::ForOp>(loc, begin, end, one);
    b.setInsertionPointToStart(outer.getBody());
    // Delinearise the index, last loop fastest.
    Value rest = outer.getInductionVar();
    SmallVector<Value> ivs(p);
    for (int64_t d = p - 1; d >= 0; --d) {
      Value idx = rest;
      if (d > 0) {
        Value t = b.create<arith::ConstantIndexOp>(loc, (ub[d] - lb[d] + st[d] - 1) / st[d]);
        idx = b.create<arith::RemUIOp>(loc, rest, t);
        rest = b.create<arith::DivUIOp>(loc, rest, t);
      }
      if (st[d] != 1) idx = b.create<arith::MulIOp>(loc, idx, b.create<arith::ConstantIndexOp>(loc, st[d]));
      if (lb[d] != 0) idx = b.create<arith::AddIOp>(loc, idx, b.create<arith::ConstantIndexOp>(loc, lb[d]));
      ivs[d] = idx;
    }
    auto cloneBody = [&](OpBuilder &bb, ValueRange inner) {
      for (int64_t d = 0; d < p; ++d) map.map(par.getInductionVars()[d], ivs[d]);
      for (auto [d, iv] : llvm::enumerate(inner)) map.map(par.getInductionVars()[p + d], iv);
      for (Operation &op : par.getBody()->without_terminator()) bb.clone(op, map);
    };
    if (p == (int64_t)par.getNumLoops()) {
      cloneBody(b, {});
    } else {
      SmallVector<Value> lbs, ubs, steps;
      for (int64_t d = p; d < (int64_t)par.getNumLoops(); ++d) {
        lbs.push_back(map.lookup(par.getLowerBound()[d]));
        ubs.push_back(map.lookup(par.getUpperBound()[d]));
        steps.push_back(map.lookup(par.getStep()[d]));
      }
      scf::buildLoopNest(b, loc, lbs, ubs, steps, [&](OpBuilder &bb, Location, ValueRange inner) {
        cloneBody(bb, inner);
      });
    }
    b.setInsertionPointToEnd(entry);
    b.create<func::ReturnOp>(loc);
    par.erase();
    return true;
  }
};

} // namespace
