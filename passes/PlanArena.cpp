// kiln-plan-arena: static memory planning of intermediate buffers.
//
// Every top-level memref.alloc in @kiln_main gets an offset in one arena
// buffer (a new first argument). Live ranges are [defining op, last use of
// the buffer or of any view derived from it] in op order; offsets are chosen
// first-fit among the buffers live at the same time, 64-byte aligned.
//
// A kernel call marked kiln.in_place = [o, i] (kiln-lower-to-linalg: a
// conv whose kernel reads each residual element just before it stores the
// output there) lets its output buffer (operand o) take the buffer of its
// input (operand i) when the call is that input's last use and both are
// whole buffers of the same size: one buffer read and written in place
// instead of one read and another written (ResNet-50's 56x56 1x1 convs
// with a residual took 0.84x the time in place).
#include "kiln/Transforms/Passes.h"

#include "mlir/IR/Builders.h"

namespace kiln {
#define GEN_PASS_DEF_PLANARENA
#include "kiln/Transforms/Passes.h.inc"
} // namespace kiln

using namespace mlir;

namespace {

constexpr int64_t kAlign = 64;

struct Interval {
  memref::AllocOp alloc;
  int64_t start, end, size, offset = -1;
};

/// Last top-level op index at which `v` (or a value derived from it through
/// views or pointer extraction) is used.
int64_t lastUse(Value v, Block &block, const DenseMap<Operation *, int64_t> &order) {
  int64_t last = -1;
  SmallVector<Value> work{v};
  while (!work.empty()) {
    Value cur = work.pop_back_val();
    for (Operation *user : cur.getUsers()) {
      Operation *top = block.findAncestorOpInBlock(*user);
      if (top)
        last = std::max(last, order.lookup(top));
      if (isa<ViewLikeOpInterface, memref::ExtractAlignedPointerAsIndexOp>(user))
        for (Value r : user->getResults())
          work.push_back(r);
    }
  }
  return last;
}

/// Whether another operand of `call` than operand `index` is `buffer` or a
/// view of it (e.g. a conv whose residual is also its input: writing the
/// output there would overwrite input the kernel still reads).
bool readsElsewhere(Operation *call, int64_t index, memref::AllocOp buffer) {
  DenseSet<Value> views;
  SmallVector<Value> work{buffer.getResult()};
  while (!work.empty()) {
    Value v = work.pop_back_val();
    if (!views.insert(v).second) continue;
    for (Operation *user : v.getUsers())
      if (isa<ViewLikeOpInterface>(user))
        for (Value r : user->getResults()) work.push_back(r);
  }
  for (OpOperand &o : call->getOpOperands())
    if ((int64_t)o.getOperandNumber() != index && views.contains(o.get())) return true;
  return false;
}

struct PlanArenaPass : kiln::impl::PlanArenaBase<PlanArenaPass> {
  void runOnOperation() override {
    ModuleOp module = getOperation();
    auto fn = module.lookupSymbol<func::FuncOp>("kiln_main");
    if (!fn) {
      module.emitError("no @kiln_main to plan");
      return signalPassFailure();
    }
    Block &block = fn.getBody().front();
    DenseMap<Operation *, int64_t> order;
    int64_t idx = 0;
    for (Operation &op : block)
      order[&op] = idx++;

    auto bytesOf = [](memref::AllocOp a) {
      MemRefType t = a.getType();
      return t.getNumElements() * ((t.getElementTypeBitWidth() + 7) / 8);
    };
    auto alignedBytes = [&](memref::AllocOp a) { return (bytesOf(a) + kAlign - 1) / kAlign * kAlign; };
    // In-place pairs: output alloc -> the input alloc whose buffer it takes.
    DenseMap<Operation *, memref::AllocOp> sharesWith;
    for (Operation &op : block) {
      auto pair = op.getAttrOfType<DenseI64ArrayAttr>("kiln.in_place");
      if (!pair || pair.size() != 2 || pair[0] >= op.getNumOperands() || pair[1] >= op.getNumOperands())
        continue;
      auto out = op.getOperand(pair[0]).getDefiningOp<memref::AllocOp>();
      auto in = op.getOperand(pair[1]).getDefiningOp<memref::AllocOp>();
      if (!out || !in || out == in || out->getBlock() != &block || in->getBlock() != &block ||
          !out.getType().hasStaticShape() || !in.getType().hasStaticShape() ||
          !out.getType().getLayout().isIdentity() || bytesOf(out) != bytesOf(in) ||
          lastUse(in, block, order) != order[&op] || readsElsewhere(&op, pair[1], in))
        continue;
      sharesWith[out] = in;
    }
    // The buffer an alloc ends up in (chains: a -> b -> c).
    auto home = [&](memref::AllocOp a) {
      while (sharesWith.count(a)) a = sharesWith.lookup(a);
      return a;
    };

    std::vector<Interval> intervals;
    DenseMap<Operation *, size_t> intervalOf;
    for (Operation &op : block) {
      auto alloc = dyn_cast<memref::AllocOp>(op);
      if (!alloc || sharesWith.count(alloc))
        continue;
      MemRefType t = alloc.getType();
      if (!t.hasStaticShape() || !t.getLayout().isIdentity()) {
        alloc.emitError("arena planning needs static, identity-layout buffers");
        return signalPassFailure();
      }
      int64_t end = std::max(lastUse(alloc, block, order), order[alloc]);
      intervalOf[alloc] = intervals.size();
      intervals.push_back({alloc, order[alloc], end, alignedBytes(alloc)});
    }
    // A buffer taken over lives on until its new owner's last use.
    std::vector<std::pair<memref::AllocOp, memref::AllocOp>> taken; // (alloc, home)
    for (Operation &op : block)
      if (auto alloc = dyn_cast<memref::AllocOp>(op); alloc && sharesWith.count(alloc)) {
        memref::AllocOp h = home(alloc);
        Interval &iv = intervals[intervalOf.lookup(h)];
        iv.start = std::min(iv.start, order[alloc]);
        iv.end = std::max(iv.end, lastUse(alloc, block, order));
        taken.push_back({alloc, h});
      }
    bool nested = false;
    fn.walk([&](memref::AllocOp a) {
      if (a->getBlock() != &block) nested = true;
    });
    if (nested) {
      fn.emitError("arena planning found an allocation inside a loop");
      return signalPassFailure();
    }

    // Largest buffers first gives tighter packing; placement is first-fit
    // against already placed buffers whose live ranges overlap.
    std::vector<Interval *> bySize;
    for (auto &iv : intervals) bySize.push_back(&iv);
    std::stable_sort(bySize.begin(), bySize.end(),
                     [](Interval *a, Interval *b) { return a->size > b->size; });
    std::vector<Interval *> placed;
    int64_t total = 0;
    for (Interval *iv : bySize) {
      std::vector<std::pair<int64_t, int64_t>> busy;
      for (Interval *p : placed)
        if (p->start <= iv->end && iv->start <= p->end)
          busy.push_back({p->offset, p->offset + p->size});
      std::sort(busy.begin(), busy.end());
      int64_t off = 0;
      for (auto [lo, hi] : busy) {
        if (off + iv->size <= lo) break;
        off = std::max(off, hi);
      }
      iv->offset = off;
      total = std::max(total, off + iv->size);
      placed.push_back(iv);
    }
    int64_t naive = 0;
    for (auto &iv : intervals) naive += iv.size;
    for (auto [alloc, h] : taken) naive += alignedBytes(alloc);

    // New first argument: the arena.
    OpBuilder b(fn);
    auto arenaType = MemRefType::get({std::max<int64_t>(total, kAlign)}, b.getI8Type());
    auto ftype = fn.getFunctionType();
    SmallVector<Type> inputs{arenaType};
    llvm::append_range(inputs, ftype.getInputs());
    fn.setType(b.getFunctionType(inputs, ftype.getResults()));
    Value arena = block.insertArgument(0u, arenaType, fn.getLoc());
    auto place = [&](memref::AllocOp alloc, int64_t offset) {
      b.setInsertionPoint(alloc);
      Value off = b.create<arith::ConstantIndexOp>(alloc.getLoc(), offset);
      Value view = b.create<memref::ViewOp>(alloc.getLoc(), alloc.getType(), arena, off, ValueRange{});
      alloc.replaceAllUsesWith(view);
    };
    for (auto [alloc, h] : taken) place(alloc, intervals[intervalOf.lookup(h)].offset);
    for (auto &iv : intervals) place(iv.alloc, iv.offset);
    for (auto [alloc, h] : taken) alloc.erase();
    for (auto &iv : intervals) iv.alloc.erase();
    // Kernel calls take raw pointers. expand-strided-metadata folds
    // extract_aligned_pointer_as_index through view-like ops to their source,
    // which drops memref.view's byte shift; so make the shift explicit here:
    // pointer(view(arena, off)) = pointer(arena) + off, also through the
    // zero-offset reinterpret_casts that reshapes produce.
    SmallVector<memref::ExtractAlignedPointerAsIndexOp> extracts;
    fn.walk([&](memref::ExtractAlignedPointerAsIndexOp op) { extracts.push_back(op); });
    for (auto ex : extracts) {
      Value src = ex.getSource();
      while (auto rc = src.getDefiningOp<memref::ReinterpretCastOp>()) {
        if (rc.getStaticOffsets().size() != 1 || rc.getStaticOffsets()[0] != 0)
          break;
        src = rc.getSource();
      }
      auto view = src.getDefiningOp<memref::ViewOp>();
      if (!view)
        continue;
      b.setInsertionPoint(ex);
      Value base = b.create<memref::ExtractAlignedPointerAsIndexOp>(ex.getLoc(), view.getSource());
      Value ptr = b.create<arith::AddIOp>(ex.getLoc(), base, view.getByteShift());
      ex.replaceAllUsesWith(ptr);
      ex.erase();
    }
    fn->setAttr("kiln.arena_bytes", b.getI64IntegerAttr(arenaType.getNumElements()));
    fn->setAttr("kiln.arena_unplanned_bytes", b.getI64IntegerAttr(naive));
  }
};

} // namespace
