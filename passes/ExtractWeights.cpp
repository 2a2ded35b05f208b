// kiln-extract-weights: large constants -> one weights blob in a data section.
#include "kiln/Transforms/Passes.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/IR/DialectResourceBlobManager.h"

#include <cstring>

namespace kiln {
#define GEN_PASS_DEF_EXTRACTWEIGHTS
#include "kiln/Transforms/Passes.h.inc"
} // namespace kiln

using namespace mlir;

namespace {

constexpr int64_t kAlign = 64;

/// The raw little-endian bytes of a constant's value, if it has a plain
/// float/int element type.
std::optional<ArrayRef<char>> rawBytes(Attribute value, std::vector<char> &storage,
                                       int64_t bytes) {
  if (auto res = dyn_cast<DenseResourceElementsAttr>(value)) {
    auto *blob = res.getRawHandle().getBlob();
    if (!blob || (int64_t)blob->getData().size() != bytes)
      return std::nullopt;
    return blob->getData();
  }
  if (auto dense = dyn_cast<DenseElementsAttr>(value)) {
    ArrayRef<char> raw = dense.getRawData();
    if (!dense.isSplat())
      return raw;
    // Splats store one element: expand.
    storage.resize(bytes);
    for (int64_t off = 0; off < bytes; off += raw.size())
      memcpy(storage.data() + off, raw.data(), raw.size());
    return ArrayRef<char>(storage);
  }
  return std::nullopt;
}

struct ExtractWeightsPass : kiln::impl::ExtractWeightsBase<ExtractWeightsPass> {
  using ExtractWeightsBase::ExtractWeightsBase;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    // Constants nothing reads any more (weights the lowering replaced by a
    // packed copy) are dropped rather than stored.
    llvm::DenseSet<StringRef> used;
    module.walk([&](memref::GetGlobalOp g) {
      if (g->use_empty()) g->erase();
      else used.insert(g.getName());
    });
    for (auto global : llvm::make_early_inc_range(module.getOps<memref::GlobalOp>()))
      if (global.isPrivate() && global.getInitialValue() && !used.count(global.getSymName()))
        global.erase();
    // First pass: choose the constants and their offsets; the bytes are
    // copied once, straight into the blob, afterwards.
    struct Piece {
      memref::GlobalOp global;
      int64_t offset, bytes;
    };
    std::vector<Piece> pieces;
    int64_t size = 0;
    llvm::StringMap<int64_t> offsets;
    SmallVector<memref::GlobalOp> moved;
    for (auto global : module.getOps<memref::GlobalOp>()) {
      if (!global.getConstant() || !global.getInitialValue())
        continue;
      MemRefType t = global.getType();
      // i1 constants are bit-packed in their attribute: leave them to LLVM.
      if (!t.hasStaticShape() || !t.getElementType().isIntOrFloat() || t.getElementType().isInteger(1))
        continue;
      int64_t bytes = t.getNumElements() * ((t.getElementTypeBitWidth() + 7) / 8);
      if (bytes < minBytes)
        continue;
      if (!isa<DenseResourceElementsAttr, DenseElementsAttr>(*global.getInitialValue()))
        continue;
      int64_t off = (size + kAlign - 1) / kAlign * kAlign;
      pieces.push_back({global, off, bytes});
      size = off + bytes;
    }
    int64_t total = (size + kAlign - 1) / kAlign * kAlign;
    AsmResourceBlob blob = HeapAsmResourceBlob::allocate(std::max<int64_t>(total, 1), kAlign);
    std::memset(blob.getMutableData().data(), 0, blob.getMutableData().size());
    for (Piece &p : pieces) {
      std::vector<char> storage;
      auto raw = rawBytes(*p.global.getInitialValue(), storage, p.bytes);
      if (!raw)
        continue; // a resource whose size disagrees: leave it as an LLVM constant
      std::memcpy(blob.getMutableData().data() + p.offset, raw->data(), raw->size());
      offsets[p.global.getSymName()] = p.offset;
      moved.push_back(p.global);
    }
    if (moved.empty())
      return;

    OpBuilder b(module.getContext());
    b.setInsertionPointToStart(module.getBody());
    auto blobType = MemRefType::get({total}, b.getI8Type());
    // A public declaration without initial value: an external symbol, defined
    // by the data section the target emits.
    b.create<memref::GlobalOp>(module.getLoc(), "kiln_model_weights", StringAttr(),
                               blobType, Attribute(), /*constant=*/true, b.getI64IntegerAttr(kAlign));

    SmallVector<memref::GetGlobalOp> uses;
    module.walk([&](memref::GetGlobalOp g) {
      if (offsets.count(g.getName())) uses.push_back(g);
    });
    for (auto g : uses) {
      b.setInsertionPoint(g);
      Value base = b.create<memref::GetGlobalOp>(g.getLoc(), blobType, "kiln_model_weights");
      Value off = b.create<arith::ConstantIndexOp>(g.getLoc(), offsets[g.getName()]);
      Value view = b.create<memref::ViewOp>(g.getLoc(), g.getType(), base, off, ValueRange{});
      g.replaceAllUsesWith(view);
      g.erase();
    }
    for (auto g : moved)
      g.erase();

    auto tensorType = RankedTensorType::get({total}, b.getI8Type());
    auto attr = DenseResourceElementsAttr::get(
        tensorType, "kiln_weights", std::move(blob));
    module->setAttr("kiln.weights", attr);
  }
};

} // namespace
