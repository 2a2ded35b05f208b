// kiln-lower-to-linalg: kiln graph ops (tensors) -> buffers.
//
// The graph is static-shaped, so buffer assignment is done directly rather
// than through one-shot bufferization: every kiln value gets one memref (an
// alloc, a function argument, a global constant or a view), and each op
// writes its result into its buffer with linalg ops on memrefs, or with a call
// to a runtime microkernel (`kiln_rt_*`, runtime/src/kernels.cpp) for the
// dense contractions. The arena planner then places the allocs.
#include "kiln/Dialect/KilnDialect.h"
#include "kiln/Transforms/Passes.h"
#include "kiln/Transforms/Weights.h"
#include "kiln/bcr_layout.h"
#include "kiln/gemm_layout.h"
#include "kiln/winograd_layout.h"

#include "mlir/IR/AffineMap.h"
#include "mlir/IR/AsmState.h"
#include "mlir/IR/DialectResourceBlobManager.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/IR/IRMapping.h"
#include "llvm/ADT/TypeSwitch.h"

#include <cmath>
#include <cstring>
#include <limits>

namespace kiln {
#define GEN_PASS_DEF_LOWERKILNTOLINALG
#include "kiln/Transforms/Passes.h.inc"
} // namespace kiln

using namespace mlir;
using namespace kiln;

namespace {

using IterTy = utils::IteratorType;

/// A scalar constant of any int or float type.
/// The element type a buffer stores: unsigned integers (ui8, ...) of the
/// kiln dialect become signless; arith picks the unsigned ops instead.
Type storageType(Type t) {
  if (auto it = dyn_cast<IntegerType>(t); it && !it.isSignless())
    return IntegerType::get(t.getContext(), it.getWidth());
  if (isFloat8(t)) // float8: its bits (no LLVM type)
    return IntegerType::get(t.getContext(), 8);
  return t;
}

/// The parameters of a float8 format (ONNX's four).
struct Float8Format {
  int expBits, manBits, bias;
  bool fnuz;  // no negative zero, no infinity; NaN is 0x80
  bool hasInf; // f8E5M2
  double maxValue;
  int maxCode, nanCode;
};

static Float8Format float8Format(Type t) {
  if (isa<Float8E4M3FNType>(t)) return {4, 3, 7, false, false, 448.0, 0x7e, 0x7f};
  if (isa<Float8E4M3FNUZType>(t)) return {4, 3, 8, true, false, 240.0, 0x7f, 0x80};
  if (isa<Float8E5M2Type>(t)) return {5, 2, 15, false, true, 57344.0, 0x7b, 0x7f};
  return {5, 2, 16, true, false, 57344.0, 0x7f, 0x80}; // Float8E5M2FNUZ
}

namespace {
/// Scalar i32/f32 helpers for the float8 conversions.
struct Bits {
  OpBuilder &b;
  Location l;
  Value i(int64_t v) { return b.create<arith::ConstantOp>(l, b.getI32IntegerAttr((int32_t)v)); }
  Value f(double v) { return b.create<arith::ConstantOp>(l, b.getF32FloatAttr((float)v)); }
  Value shr(Value x, int64_t n) { return b.create<arith::ShRUIOp>(l, x, i(n)); }
  Value shl(Value x, int64_t n) { return b.create<arith::ShLIOp>(l, x, i(n)); }
  Value band(Value x, int64_t m) { return b.create<arith::AndIOp>(l, x, i(m)); }
  Value bor(Value x, Value y) { return b.create<arith::OrIOp>(l, x, y); }
  Value add(Value x, int64_t k) { return b.create<arith::AddIOp>(l, x, i(k)); }
  Value eq(Value x, int64_t k) { return b.create<arith::CmpIOp>(l, arith::CmpIPredicate::eq, x, i(k)); }
  Value sel(Value c, Value x, Value y) { return b.create<arith::SelectOp>(l, c, x, y); }
  /// 2^e as f32, e an i32 in the normal range.
  Value pow2(Value e) { return b.create<arith::BitcastOp>(l, b.getF32Type(), shl(add(e, 127), 23)); }
};
} // namespace

/// float8 bits (i8) to f32, exactly.
static Value float8ToF32(OpBuilder &nb, Location l, Value x, Type f8) {
  Float8Format f = float8Format(f8);
  Bits k{nb, l};
  Value xi = nb.create<arith::ExtUIOp>(l, nb.getI32Type(), x);
  Value e = k.band(k.shr(xi, f.manBits), (1 << f.expBits) - 1);
  Value m = k.band(xi, (1 << f.manBits) - 1);
  Value normal = nb.create<arith::CmpIOp>(l, arith::CmpIPredicate::ne, e, k.i(0));
  Value mFull = k.sel(normal, k.bor(m, k.i(1 << f.manBits)), m);
  Value eEff = nb.create<arith::MaxSIOp>(l, e, k.i(1));
  // value = mFull * 2^(eEff - bias - manBits)
  Value mag = nb.create<arith::MulFOp>(l, nb.create<arith::UIToFPOp>(l, nb.getF32Type(), mFull),
                                       k.pow2(k.add(eEff, -f.bias - f.manBits)));
  Value neg = nb.create<arith::CmpIOp>(l, arith::CmpIPredicate::ne, k.band(xi, 0x80), k.i(0));
  Value v = k.sel(neg, nb.create<arith::NegFOp>(l, mag), mag);
  int allExp = (1 << f.expBits) - 1;
  Value nan;
  if (f.fnuz) nan = k.eq(xi, 0x80);
  else if (f.hasInf) nan = nb.create<arith::AndIOp>(l, k.eq(e, allExp), nb.create<arith::CmpIOp>(l, arith::CmpIPredicate::ne, m, k.i(0)));
  else nan = k.eq(k.band(xi, 0x7f), 0x7f);
  if (f.hasInf) {
    Value inf = nb.create<arith::AndIOp>(l, k.eq(e, allExp), k.eq(m, 0));
    Value infV = k.sel(neg, k.f(-INFINITY), k.f(INFINITY));
    v = k.sel(inf, infV, v);
  }
  return k.sel(nan, k.f(NAN), v);
}

/// f32 to float8 bits (i8): round to nearest even, then ONNX Cast's rules
/// for out-of-range values with and without saturation.
static Value f32ToFloat8(OpBuilder &nb, Location l, Value v, Type f8, bool saturate) {
  Float8Format f = float8Format(f8);
  Bits k{nb, l};
  Value bits = nb.create<arith::BitcastOp>(l, nb.getI32Type(), v);
  Value sign = k.shl(k.shr(bits, 31), 7);
  Value a = nb.create<math::AbsFOp>(l, v);
  Value isNan = nb.create<arith::CmpFOp>(l, arith::CmpFPredicate::UNO, v, v);
  // The grid's exponent: a's, but not below the subnormal range's.
  Value ea = k.add(k.shr(nb.create<arith::BitcastOp>(l, nb.getI32Type(), a), 23), -127);
  ea = nb.create<arith::MaxSIOp>(l, ea, k.i(1 - f.bias));
  Value up = k.pow2(nb.create<arith::SubIOp>(l, k.i(f.manBits), ea));
  Value down = k.pow2(k.add(ea, -f.manBits));
  Value r = nb.create<arith::MulFOp>(l, nb.create<math::RoundEvenOp>(l, nb.create<arith::MulFOp>(l, a, up)), down);
  Value over = nb.create<arith::CmpFOp>(l, arith::CmpFPredicate::OGT, r, k.f(f.maxValue));
  // Encode r (representable, <= max).
  Value rb = nb.create<arith::BitcastOp>(l, nb.getI32Type(), r);
  Value normal = nb.create<arith::CmpFOp>(l, arith::CmpFPredicate::OGE, r, k.f(std::ldexp(1.0, 1 - f.bias)));
  Value eN = k.add(k.add(k.shr(rb, 23), -127), f.bias);
  Value codeN = k.bor(k.shl(eN, f.manBits), k.band(k.shr(rb, 23 - f.manBits), (1 << f.manBits) - 1));
  Value codeS = nb.create<arith::FPToUIOp>(
      l, nb.getI32Type(), nb.create<arith::MulFOp>(l, r, k.f(std::ldexp(1.0, f.bias - 1 + f.manBits))));
  Value code = k.sel(normal, codeN, codeS);
  // Signed result; FNUZ has no negative zero.
  Value signedCode = k.bor(code, sign);
  if (f.fnuz) signedCode = k.sel(k.eq(code, 0), code, signedCode);
  Value nanCode = k.i(f.nanCode);
  Value result = signedCode;
  Value satCode = k.bor(k.i(f.maxCode), sign);
  if (saturate) {
    result = k.sel(over, satCode, result); // infinities included
  } else {
    Value bad = f.hasInf ? k.bor(k.i(0x7c), sign) : nanCode;
    result = k.sel(over, bad, result);
  }
  result = k.sel(isNan, nanCode, result);
  return nb.create<arith::TruncIOp>(l, nb.getI8Type(), result);
}

bool isUnsignedElt(Value v) {
  return cast<ShapedType>(v.getType()).getElementType().isUnsignedInteger();
}

Value typedConst(OpBuilder &b, Location l, Type t, double v) {
  t = storageType(t);
  if (auto ft = dyn_cast<FloatType>(t))
    return b.create<arith::ConstantOp>(l, FloatAttr::get(ft, v));
  return b.create<arith::ConstantOp>(l, IntegerAttr::get(t, (int64_t)v));
}

class BufferLowering {
public:
  BufferLowering(ModuleOp module, bool portable, StringRef winograd)
      : module(module), b(module.getContext()), portable(portable), winograd(winograd.str()) {}
  LogicalResult run();

private:
  ModuleOp module;
  OpBuilder b;
  /// Contractions as linalg loop nests instead of runtime microkernels
  /// (device targets: OpenCL), and no epilogues folded into kernel calls.
  bool portable;
  std::string winograd; // auto, off, 2 or 4 (kiln-lower-to-linalg's option)
  /// Whether a contraction takes the portable form: on device targets, and
  /// for non-float32 types (integer MatMulInteger/ConvInteger), which the
  /// runtime's float kernels do not serve.
  bool portableOp(Operation *op) {
    return portable || (op && !eltOf(op->getResult(0)).isF32());
  }
  func::FuncOp newFn;
  DenseMap<Value, Value> buffers;   // kiln tensor value -> memref
  DenseMap<Value, Value> outBuffer; // kiln value returned -> output argument
  int globalCounter = 0;

  Location loc = b.getUnknownLoc();
  Type f32() { return b.getF32Type(); }
  MemRefType memrefOf(Value v) {
    auto t = cast<RankedTensorType>(v.getType());
    return MemRefType::get(t.getShape(), storageType(t.getElementType()));
  }
  Value buf(Value v) { return buffers.lookup(v); }
  /// The buffer an op writes its result into: the output argument when the
  /// value is returned, a fresh alloc otherwise.
  Value dest(Value result) {
    if (Value o = outBuffer.lookup(result)) {
      outBuffer.erase(result); // only the first producer writes in place
      buffers[result] = o;
      return o;
    }
    Value a = newBuffer(memrefOf(result));
    buffers[result] = a;
    return a;
  }
  Value alloc(ArrayRef<int64_t> shape, Type elt = {}) {
    return newBuffer(MemRefType::get(shape, elt ? storageType(elt) : f32()));
  }

  /// While a kernel function is being built: where its call will go in
  /// @kiln_main, and the values the call passes (one per kernel argument).
  struct KernelState {
    Block *mainBlock;
    Block::iterator mainIP;
    Block *entry;
    SmallVector<Value> callArgs;
  };
  std::optional<KernelState> kernel;
  int kernelCounter = 0;
  /// One label per kernel, in kernel order (module attr kiln.kernel_labels).
  SmallVector<Attribute> kernelLabels;
  SmallVector<int64_t> kernelFlops; // floating-point operations per kernel (cost interface)
  /// A kernel argument standing for `outer`, a buffer of @kiln_main.
  Value kernelArg(Value outer) {
    kernel->callArgs.push_back(outer);
    return kernel->entry->addArgument(outer.getType(), outer.getLoc());
  }
  /// A new buffer. Inside a kernel it is allocated in @kiln_main (so the
  /// arena planner places it) and passed in as an argument.
  Value newBuffer(MemRefType t) {
    if (!kernel)
      return b.create<memref::AllocOp>(loc, t);
    OpBuilder mb(b.getContext());
    mb.setInsertionPoint(kernel->mainBlock, kernel->mainIP);
    return kernelArg(mb.create<memref::AllocOp>(loc, t));
  }
  LogicalResult lowerFused(FusedOp op);
  /// One linalg.generic computing `out` (a value of a fusion block) from
  /// the block's leaves: every pointwise op is composed into the body and
  /// its operands' index maps, so no intermediate is stored.
  void emitPointwise(Value outValue, Value outBuf, const DenseSet<Operation *> &inside);
  Value castScalar(OpBuilder &nb, Location l, Value x, Type from, Type to, bool saturate = true);
  static Type eltOf(Value v) { return cast<ShapedType>(v.getType()).getElementType(); }
  LogicalResult lowerCast(CastOp op);
  LogicalResult lowerGather(GatherOp op);
  LogicalResult lowerGatherElements(GatherElementsOp op);
  LogicalResult lowerResize(ResizeOp op);
  LogicalResult lowerGatherND(GatherNDOp op);
  LogicalResult lowerScatter(Operation *op, Value data, Value indices, Value updates,
                             StringRef reduction, std::optional<int64_t> axis);
  LogicalResult lowerCumSum(CumSumOp op);
  LogicalResult lowerGridSample(GridSampleOp op);
  LogicalResult lowerTopK(TopKOp op);
  LogicalResult lowerEinsum(EinsumOp op);
  LogicalResult lowerArg(Operation *op, int64_t axis, bool selectLast, bool isMax);
  Value cf(double v) { return b.create<arith::ConstantOp>(loc, b.getF32FloatAttr(v)); }
  Value ci(int64_t v) { return b.create<arith::ConstantOp>(loc, b.getI64IntegerAttr(v)); }
  Value ptr(Value memref) {
    return b.create<memref::ExtractAlignedPointerAsIndexOp>(loc, memref);
  }
  Value globalConstant(ElementsAttr value);
  /// A new constant holding `bytes` as a 1-d tensor of `elt` (a weight
  /// packed for the GEMM, or a BCR blob).
  Value packedConstant(ArrayRef<char> bytes, Type elt);
  Value packedConstant(const std::vector<float> &data) {
    return packedConstant(ArrayRef<char>((const char *)data.data(), data.size() * 4), f32());
  }
  /// Pointer to the BCR sparse blob (kiln/bcr_layout.h) of `op`'s weights
  /// when kiln-detect-sparsity chose sparse code for it, else null.
  Value sparseWeights(Operation *op);
  /// The blob itself (empty when the layer stays dense).
  std::vector<uint32_t> sparseBlob(Operation *op);
  /// A sparse layer in portable form: the blob and each row's strip slot
  /// as buffers, and the blob's geometry.
  struct SparseRows {
    Value blob, slots;
    int64_t strips = 0, chunks = 0, chunk = 0, usedAt = 0;
  };
  std::optional<SparseRows> portableSparse(Operation *op);
  /// init + sum over the kept weights of W's row `row` times input(column).
  Value sparseSum(OpBuilder &nb, Location l, const SparseRows &sp, Value row, Value init,
                  function_ref<Value(OpBuilder &, Location, Value)> input);
  /// Pointer to op(w) (K x N, row length ldb) packed as GEMM operand B.
  Value packedB(const std::vector<float> &w, int64_t ldb, bool trans, int64_t K, int64_t N) {
    std::vector<float> packed(kiln::gemm::packedBSize(K, N));
    kiln::gemm::packBFull(w.data(), ldb, trans, K, N, packed.data());
    return ptr(packedConstant(std::move(packed)));
  }
  void call(StringRef name, ArrayRef<Value> args);

  /// Elementwise generic over `out`'s shape with numpy broadcasting of `ins`.
  void elementwise(ValueRange ins, Value out,
                   function_ref<Value(OpBuilder &, Location, ValueRange)> fn);
  AffineMap broadcastMap(ArrayRef<int64_t> inShape, ArrayRef<int64_t> outShape);
  enum class Combine { Sum, Max, Min, Prod };
  /// acc (input shape with reduced dims = 1) = combine over axes of
  /// pre(x, extras...), where extras broadcast like acc.
  void reduceInto(Value in, Value acc, ArrayRef<int64_t> axes, Combine kind,
                  function_ref<Value(OpBuilder &, Location, Value, ValueRange)> pre,
                  ValueRange extras = {});
  Value viewAs(Value buffer, ArrayRef<int64_t> shape);
  LogicalResult lowerLayerNorm(LayerNormOp op);
  LogicalResult lowerTrilu(TriluOp op);
  LogicalResult lowerTile(TileOp op);
  void copyInto(Value src, Value dst, ArrayRef<int64_t> offsets);
  /// Pads `in` into a new buffer, filling with `value`.
  Value padded(Value in, ArrayRef<int64_t> lo, ArrayRef<int64_t> hi, double value);

  LogicalResult lowerOp(Operation *op);
  Value unaryScalar(Operation *op, OpBuilder &nb, Location l, Value x);
  Value binaryScalar(Operation *op, OpBuilder &nb, Location l, Value x, Value y);
  LogicalResult lowerConv(ConvOp op);
  LogicalResult lowerConvChain(ConvChainOps c, Value outArg);
  /// A conv's constant weights [F, C, 3, 3] transformed for Winograd tile
  /// m and packed (kiln/winograd_layout.h), as a constant's pointer.
  Value winogradWeights(ArrayRef<float> w, int m, int64_t F, int64_t C) {
    std::vector<float> up(kiln::winograd::packedSize(m, F, C));
    kiln::winograd::transformWeights(m, w.data(), F, C, up.data());
    return ptr(packedConstant(up));
  }
  /// Weights [F, K] packed as GEMM operand A (kiln/gemm_layout.h), as a
  /// constant's pointer.
  Value gemmWeights(ArrayRef<float> w, int64_t F, int64_t K) {
    std::vector<float> packed(kiln::gemm::packedASize(F, K));
    kiln::gemm::packAFull(w.data(), K, false, F, K, packed.data());
    return ptr(packedConstant(packed));
  }
  LogicalResult lowerConvTranspose(ConvTransposeOp op);
  LogicalResult lowerGemm(GemmOp op);
  /// Portable forms: one linalg.generic over the output whose body sums
  /// over the reduction with nested scf.for loops (one work-item per output
  /// element on a device).
  void portableConv(Operation *op, Value x, Value w, Value bias, ArrayRef<int64_t> s, ArrayRef<int64_t> d,
                    ArrayRef<int64_t> p, int64_t group, bool transposed);
  void portableGemm(GemmOp op);
  LogicalResult portableMatMul(MatMulOp op);
  /// out[...] = body(indices of out), over out's shape.
  void generateOver(Value out, function_ref<Value(OpBuilder &, Location, ValueRange)> body);
  /// A MatMul's result written through a Transpose into `buffer`.
  struct StridedOut {
    Value buffer;
    MatMulOutLayout layout;
  };
  std::optional<StridedOut> stridedOut;
  /// MatMul operands read in place through a Slice/Reshape/Transpose
  /// prologue of their block (kiln-plan-fusion's operand prologues).
  DenseMap<Value, StridedOperand> stridedIns;
  /// Clamp bounds of a Relu/Clip fused into the Conv being lowered.
  std::optional<std::pair<float, float>> convAct;
  /// Set while lowering a Conv whose block adds a residual in its epilogue.
  Value convResidual;
  /// Set by lowerConv when the residual may share the output's buffer
  /// (kiln::gemm::convResidualReadInPlace, for kiln_rt_conv2d_packed).
  bool convResidualInPlace = false;
  /// Of the kernel being lowered: {output, input} buffers of @kiln_main
  /// that may be one (see convResidualInPlace).
  std::optional<std::pair<Value, Value>> inPlace;
  /// Set while lowering a Gemm/MatMul whose block applies an activation
  /// the kernel can run on each tile (1: GELU; kiln_rt_matmul_packed_act,
  /// kiln_rt_matmul_bcr_act for BCR weights).
  int matmulAct = 0;
  /// For a block Gemm/MatMul (packed dense or BCR weights) -> [Reshape] -> GELU
  /// (x / sqrt(2) -> Erf -> + 1 -> * x -> * 0.5, as PyTorch exports it)
  /// -> [Reshape] whose result is `out`: true.
  bool geluAfter(Operation *head, ArrayRef<Operation *> ops, Value out);
  /// For a block Conv -> Add(conv, r) [-> Relu/Clip] whose result is `out`,
  /// with r from outside the block and shaped as the conv's result, and
  /// packed weights: r. Otherwise null.
  Value convResidualOf(Operation *head, ArrayRef<Operation *> ops, Value out);
  LogicalResult lowerMatMul(MatMulOp op);
  LogicalResult lowerPool(Operation *op, bool isMax);
  LogicalResult lowerReduce(Operation *op, ArrayRef<int64_t> axes);
  LogicalResult lowerSoftmax(Operation *op, int64_t axis, bool log);
  LogicalResult lowerBatchNorm(BatchNormOp op);
  LogicalResult lowerConcat(ConcatOp op);
  LogicalResult lowerSlice(SliceOp op);
  LogicalResult lowerPad(PadOp op);
};

Value BufferLowering::globalConstant(ElementsAttr value) {
  auto type = cast<ShapedType>(value.getType());
  auto mt = MemRefType::get(type.getShape(), storageType(type.getElementType()));
  if (mt.getElementType() != type.getElementType())
    if (auto dense = dyn_cast<DenseElementsAttr>(value))
      value = dense.bitcast(mt.getElementType());
  std::string name = "__kiln_const_" + std::to_string(globalCounter++);
  {
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPoint(newFn);
    b.create<memref::GlobalOp>(loc, name, b.getStringAttr("private"), mt, value,
                               /*constant=*/true, b.getI64IntegerAttr(64));
  }
  return b.create<memref::GetGlobalOp>(loc, mt, name);
}

/// The [lo, hi] a Relu or Clip clamps to.
static std::pair<float, float> clampBounds(Operation *act) {
  if (auto c = dyn_cast<ClipOp>(act)) return {c.getMin().convertToFloat(), c.getMax().convertToFloat()};
  return {0.0f, std::numeric_limits<float>::infinity()};
}

Value BufferLowering::convResidualOf(Operation *head, ArrayRef<Operation *> ops, Value out) {
  auto conv = dyn_cast_or_null<ConvOp>(head);
  if (!conv || (ops.size() != 2 && ops.size() != 3) || ops[0] != head || !isa<AddOp>(ops[1]) ||
      !eltOf(out).isF32() || !packsWeights(conv))
    return Value();
  Value c = conv.getResult(), a = ops[1]->getOperand(0), r = ops[1]->getOperand(1);
  if (r == c) std::swap(a, r);
  if (a != c || r == c || !isa<BlockArgument>(r) || r.getType() != c.getType()) return Value();
  Value last = ops[1]->getResult(0);
  if (ops.size() == 3) {
    if (!isa<ReluOp, ClipOp>(ops[2]) || ops[2]->getOperand(0) != last) return Value();
    last = ops[2]->getResult(0);
  }
  return last == out ? r : Value();
}

/// Whether kiln-detect-sparsity marked `op` to be lowered sparse.
static bool markedSparse(Operation *op) {
  auto info = op->getAttrOfType<DictionaryAttr>("kiln.bcr");
  auto sparse = info ? info.getAs<BoolAttr>("sparse") : BoolAttr();
  auto block = info ? info.getAs<DenseI64ArrayAttr>("block") : DenseI64ArrayAttr();
  return sparse && sparse.getValue() && block && block.size() == 2;
}

/// The float value of a constant scalar (any shape of one element).
static std::optional<float> scalarConstant(Value v) {
  auto vals = constantFloats(v);
  if (!vals || vals->size() != 1) return std::nullopt;
  return (*vals)[0];
}

bool BufferLowering::geluAfter(Operation *head, ArrayRef<Operation *> ops, Value out) {
  if (!head || !isa<GemmOp, MatMulOp>(head) || !packsWeights(head) || !eltOf(out).isF32() ||
      !constantFloats(head->getOperand(1)))
    return false;
  if (auto g = dyn_cast<GemmOp>(head))
    if (g.getAlpha().convertToFloat() != 1.0f) return false;
  // x: the head's result, seen through one Reshape.
  Value x = head->getResult(0);
  auto only = [](Value v) -> Operation * { return v.hasOneUse() ? *v.getUsers().begin() : nullptr; };
  if (Operation *r = only(x); r && isa<ReshapeOp>(r)) x = r->getResult(0);
  // The other operand of a binary op with `v`, if `op` is one of kind T.
  auto other = [](Operation *op, Value v) -> Value {
    if (!op || op->getNumOperands() != 2) return Value();
    if (op->getOperand(0) == v) return op->getOperand(1);
    if (op->getOperand(1) == v && !isa<DivOp>(op)) return op->getOperand(0);
    return Value();
  };
  if (std::distance(x.getUsers().begin(), x.getUsers().end()) != 2) return false;
  DivOp div;
  MulOp mulX;
  for (Operation *u : x.getUsers()) {
    if (auto d = dyn_cast<DivOp>(u); d && d.getOperand(0) == x) div = d;
    else if (auto m = dyn_cast<MulOp>(u)) mulX = m;
  }
  if (!div || !mulX) return false;
  auto c = scalarConstant(div.getOperand(1));
  if (!c || std::fabs(*c - 1.41421356f) > 1e-6f) return false;
  auto erf = dyn_cast_or_null<ErfOp>(only(div.getResult()));
  if (!erf) return false;
  Operation *add = only(erf.getResult());
  Value one = isa_and_nonnull<AddOp>(add) ? other(add, erf.getResult()) : Value();
  if (!one || scalarConstant(one) != 1.0f || only(add->getResult(0)) != mulX.getOperation() ||
      other(mulX, add->getResult(0)) != x)
    return false;
  Operation *half = only(mulX.getResult());
  Value h = isa_and_nonnull<MulOp>(half) ? other(half, mulX.getResult()) : Value();
  if (!h || scalarConstant(h) != 0.5f) return false;
  Value y = half->getResult(0);
  if (Operation *r = only(y); r && isa<ReshapeOp>(r)) y = r->getResult(0);
  // Nothing else in the block: the head, the GELU and the Reshapes.
  size_t reshapes = llvm::count_if(ops, [](Operation *op) { return isa<ReshapeOp>(op); });
  return y == out && ops.size() == 6 + reshapes;
}

Value BufferLowering::packedConstant(ArrayRef<char> bytes, Type elt) {
  int64_t n = (int64_t)bytes.size() / 4;
  auto type = RankedTensorType::get({n}, elt);
  auto blob = HeapAsmResourceBlob::allocateAndCopyWithAlign(bytes, alignof(float));
  auto attr = DenseResourceElementsAttr::get(type, "kiln_packed_" + std::to_string(globalCounter), std::move(blob));
  if (!kernel) return globalConstant(attr);
  // Inside a kernel, the constant is read in @kiln_main and passed in, as
  // every other buffer (kiln-plan-arena makes pointers of views explicit
  // there, and only there).
  Value outer;
  {
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPoint(kernel->mainBlock, kernel->mainIP);
    outer = globalConstant(attr);
  }
  return kernelArg(outer);
}

std::vector<uint32_t> BufferLowering::sparseBlob(Operation *op) {
  if (!markedSparse(op)) return {};
  auto block = op->getAttrOfType<DictionaryAttr>("kiln.bcr").getAs<DenseI64ArrayAttr>("block");
  auto m = weightMatrix(op);
  if (!m) return {};
  int br = (int)block[0], bc = (int)block[1];
  return kiln::bcr::pack(m->w.data(), m->rows, m->cols, kiln::bcr::rowOrder(m->w.data(), m->rows, m->cols, br, bc),
                         br, bc);
}

Value BufferLowering::sparseWeights(Operation *op) {
  std::vector<uint32_t> blob = sparseBlob(op);
  if (blob.empty()) return Value();
  return ptr(packedConstant(ArrayRef<char>((const char *)blob.data(), blob.size() * 4), b.getI32Type()));
}

std::optional<BufferLowering::SparseRows> BufferLowering::portableSparse(Operation *op) {
  std::vector<uint32_t> blob = sparseBlob(op);
  if (blob.empty()) return std::nullopt;
  kiln::bcr::View v{blob.data()};
  // Where each row of W sits: strip * SR + lane (the inverse permutation).
  std::vector<int32_t> slot(v.M(), 0);
  for (int64_t i = 0; i < v.strips() * kiln::bcr::SR; ++i)
    if (v.perm()[i] >= 0) slot[v.perm()[i]] = int32_t(i);
  SparseRows r;
  r.strips = v.strips();
  r.chunks = v.chunks();
  r.chunk = v.chunk();
  r.usedAt = v.used() - reinterpret_cast<const int32_t *>(blob.data());
  r.blob = packedConstant(ArrayRef<char>((const char *)blob.data(), blob.size() * 4), b.getI32Type());
  r.slots = packedConstant(ArrayRef<char>((const char *)slot.data(), slot.size() * 4), b.getI32Type());
  return r;
}

Value BufferLowering::sparseSum(OpBuilder &nb, Location l, const SparseRows &sp, Value row, Value init,
                                function_ref<Value(OpBuilder &, Location, Value)> input) {
  // Walks the BCR blob (kiln/bcr_layout.h) for one output: the row's
  // strip and lane, then per chunk the strip's segments; a segment whose
  // mask has the lane contributes its values of that lane times the
  // gathered inputs.
  auto c = [&](OpBuilder &o, int64_t v) { return o.create<arith::ConstantIndexOp>(l, v).getResult(); };
  auto c32 = [&](OpBuilder &o, int64_t v) { return o.create<arith::ConstantIntOp>(l, v, 32).getResult(); };
  auto word = [&](OpBuilder &o, Value at) { return o.create<memref::LoadOp>(l, sp.blob, ValueRange{at}).getResult(); };
  auto idx = [&](OpBuilder &o, Value i32) {
    return o.create<arith::IndexCastUIOp>(l, o.getIndexType(), i32).getResult();
  };
  Value slot = idx(nb, nb.create<memref::LoadOp>(l, sp.slots, ValueRange{row}));
  Value strip = nb.create<arith::DivUIOp>(l, slot, c(nb, kiln::bcr::SR));
  Value lane = nb.create<arith::IndexCastUIOp>(l, nb.getI32Type(),
                                              nb.create<arith::RemUIOp>(l, slot, c(nb, kiln::bcr::SR)));
  auto chunks = nb.create<scf::ForOp>(
      l, c(nb, 0), c(nb, sp.chunks), c(nb, 1), ValueRange{init},
      [&](OpBuilder &cb, Location, Value ch, ValueRange cargs) {
        Value listAt = cb.create<arith::AddIOp>(
            l, cb.create<arith::AddIOp>(l, c(cb, kiln::bcr::kHeader), cb.create<arith::MulIOp>(l, ch, c(cb, sp.strips))),
            strip);
        Value off = idx(cb, word(cb, listAt));
        Value nseg = idx(cb, word(cb, off));
        Value usedBase = cb.create<arith::AddIOp>(l, c(cb, sp.usedAt), cb.create<arith::MulIOp>(l, ch, c(cb, sp.chunk)));
        auto segs = cb.create<scf::ForOp>(
            l, c(cb, 0), nseg, c(cb, 1), ValueRange{cb.create<arith::AddIOp>(l, off, c(cb, 1)), cargs[0]},
            [&](OpBuilder &sb, Location, Value, ValueRange sargs) {
              Value p = sargs[0], acc = sargs[1];
              Value hdr = word(sb, p);
              Value mask = sb.create<arith::AndIOp>(l, hdr, c32(sb, 15));
              Value count = idx(sb, sb.create<arith::ShRUIOp>(l, hdr, c32(sb, 4)));
              Value pop = idx(sb, sb.create<math::CtPopOp>(l, mask));
              Value posAt = sb.create<arith::AddIOp>(l, p, c(sb, 1));
              Value half = sb.create<arith::DivUIOp>(l, sb.create<arith::AddIOp>(l, count, c(sb, 1)), c(sb, 2));
              Value valAt = sb.create<arith::AddIOp>(l, posAt, half);
              Value bit = sb.create<arith::AndIOp>(l, sb.create<arith::ShRUIOp>(l, mask, lane), c32(sb, 1));
              Value has = sb.create<arith::CmpIOp>(l, arith::CmpIPredicate::ne, bit, c32(sb, 0));
              auto ifOp = sb.create<scf::IfOp>(
                  l, has,
                  [&](OpBuilder &tb, Location) {
                    Value below = tb.create<arith::SubIOp>(l, tb.create<arith::ShLIOp>(l, c32(tb, 1), lane), c32(tb, 1));
                    Value li = idx(tb, tb.create<math::CtPopOp>(l, tb.create<arith::AndIOp>(l, mask, below)));
                    auto cols = tb.create<scf::ForOp>(
                        l, c(tb, 0), count, c(tb, 1), ValueRange{acc},
                        [&](OpBuilder &jb, Location, Value j, ValueRange jargs) {
                          Value w = word(jb, jb.create<arith::AddIOp>(l, posAt, jb.create<arith::DivUIOp>(l, j, c(jb, 2))));
                          Value odd = jb.create<arith::IndexCastUIOp>(
                              l, jb.getI32Type(), jb.create<arith::RemUIOp>(l, j, c(jb, 2)));
                          Value pos = jb.create<arith::AndIOp>(
                              l, jb.create<arith::ShRUIOp>(l, w, jb.create<arith::MulIOp>(l, odd, c32(jb, 16))),
                              c32(jb, 0xffff));
                          Value col = idx(jb, jb.create<memref::LoadOp>(
                                                  l, sp.blob, ValueRange{jb.create<arith::AddIOp>(l, usedBase, idx(jb, pos))}));
                          Value at = jb.create<arith::AddIOp>(l, valAt,
                                                              jb.create<arith::AddIOp>(l, jb.create<arith::MulIOp>(l, j, pop), li));
                          Value val = jb.create<arith::BitcastOp>(l, jb.getF32Type(), word(jb, at));
                          Value x = input(jb, l, col);
                          Value sum = jb.create<arith::AddFOp>(l, jargs[0], jb.create<arith::MulFOp>(l, val, x));
                          jb.create<scf::YieldOp>(l, sum);
                        });
                    tb.create<scf::YieldOp>(l, cols.getResult(0));
                  },
                  [&](OpBuilder &eb, Location) { eb.create<scf::YieldOp>(l, acc); });
              Value next = sb.create<arith::AddIOp>(l, valAt, sb.create<arith::MulIOp>(l, count, pop));
              sb.create<scf::YieldOp>(l, ValueRange{next, ifOp.getResult(0)});
            });
        cb.create<scf::YieldOp>(l, segs.getResult(1));
      });
  return chunks.getResult(0);
}

void BufferLowering::call(StringRef name, ArrayRef<Value> args) {
  if (!module.lookupSymbol<func::FuncOp>(name)) {
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(module.getBody());
    SmallVector<Type> types;
    for (Value a : args) types.push_back(a.getType());
    auto fn = b.create<func::FuncOp>(loc, name, b.getFunctionType(types, {}));
    fn.setPrivate();
  }
  b.create<func::CallOp>(loc, name, TypeRange{}, args);
}

AffineMap BufferLowering::broadcastMap(ArrayRef<int64_t> in, ArrayRef<int64_t> out) {
  SmallVector<AffineExpr> exprs;
  size_t off = out.size() - in.size();
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] == 1 && out[i + off] != 1)
      exprs.push_back(b.getAffineConstantExpr(0));
    else
      exprs.push_back(b.getAffineDimExpr(i + off));
  }
  return AffineMap::get(out.size(), 0, exprs, b.getContext());
}

void BufferLowering::elementwise(ValueRange ins, Value out,
                                 function_ref<Value(OpBuilder &, Location, ValueRange)> fn) {
  auto outShape = cast<MemRefType>(out.getType()).getShape();
  SmallVector<AffineMap> maps;
  for (Value in : ins)
    maps.push_back(broadcastMap(cast<MemRefType>(in.getType()).getShape(), outShape));
  maps.push_back(b.getMultiDimIdentityMap(outShape.size()));
  SmallVector<IterTy> iters(outShape.size(), IterTy::parallel);
  b.create<linalg::GenericOp>(loc, ins, ValueRange{out}, maps, iters,
                              [&](OpBuilder &nb, Location l, ValueRange args) {
                                Value v = fn(nb, l, args.drop_back());
                                nb.create<linalg::YieldOp>(l, v);
                              });
}

Value BufferLowering::viewAs(Value buffer, ArrayRef<int64_t> shape) {
  auto t = cast<MemRefType>(buffer.getType());
  if (t.getShape() == shape)
    return buffer;
  SmallVector<int64_t> strides(shape.size(), 1);
  for (int64_t i = (int64_t)shape.size() - 2; i >= 0; --i) strides[i] = strides[i + 1] * shape[i + 1];
  return b.create<memref::ReinterpretCastOp>(loc, MemRefType::get(shape, t.getElementType()), buffer,
                                             0, shape, strides);
}

void BufferLowering::reduceInto(Value in, Value acc, ArrayRef<int64_t> axes, Combine kind,
                                function_ref<Value(OpBuilder &, Location, Value, ValueRange)> pre,
                                ValueRange extras) {
  auto inShape = cast<MemRefType>(in.getType()).getShape();
  double init = kind == Combine::Sum    ? 0.0
                : kind == Combine::Prod ? 1.0
                : kind == Combine::Max  ? -std::numeric_limits<double>::infinity()
                                        : std::numeric_limits<double>::infinity();
  b.create<linalg::FillOp>(loc, ValueRange{cf(init)}, ValueRange{acc});
  SmallVector<AffineExpr> keepExprs;
  SmallVector<IterTy> iters;
  for (size_t i = 0; i < inShape.size(); ++i) {
    bool red = llvm::is_contained(axes, (int64_t)i);
    iters.push_back(red ? IterTy::reduction : IterTy::parallel);
    keepExprs.push_back(red ? b.getAffineConstantExpr(0) : b.getAffineDimExpr(i));
  }
  AffineMap keep = AffineMap::get(inShape.size(), 0, keepExprs, b.getContext());
  SmallVector<Value> ins{in};
  llvm::append_range(ins, extras);
  SmallVector<AffineMap> maps{b.getMultiDimIdentityMap(inShape.size())};
  for (size_t i = 0; i <= extras.size(); ++i) maps.push_back(keep);
  b.create<linalg::GenericOp>(loc, ins, ValueRange{acc}, maps, iters,
                              [&](OpBuilder &nb, Location l, ValueRange a) {
                                Value x = pre(nb, l, a[0], a.slice(1, extras.size()));
                                Value r = a.back();
                                switch (kind) {
                                case Combine::Sum: r = nb.create<arith::AddFOp>(l, x, r); break;
                                case Combine::Prod: r = nb.create<arith::MulFOp>(l, x, r); break;
                                case Combine::Max: r = nb.create<arith::MaximumFOp>(l, x, r); break;
                                case Combine::Min: r = nb.create<arith::MinimumFOp>(l, x, r); break;
                                }
                                nb.create<linalg::YieldOp>(l, r);
                              });
}

void BufferLowering::copyInto(Value src, Value dst, ArrayRef<int64_t> offsets) {
  auto shape = cast<MemRefType>(src.getType()).getShape();
  SmallVector<int64_t> ones(shape.size(), 1);
  Value view = b.create<memref::SubViewOp>(loc, dst, offsets, shape, ones);
  b.create<linalg::CopyOp>(loc, src, view);
}

Value BufferLowering::padded(Value in, ArrayRef<int64_t> lo, ArrayRef<int64_t> hi, double value) {
  auto shape = cast<MemRefType>(in.getType()).getShape();
  SmallVector<int64_t> ps;
  for (size_t i = 0; i < shape.size(); ++i) ps.push_back(shape[i] + lo[i] + hi[i]);
  Value p = alloc(ps);
  b.create<linalg::FillOp>(loc, ValueRange{cf(value)}, ValueRange{p});
  copyInto(in, p, lo);
  return p;
}

Value BufferLowering::unaryScalar(Operation *op, OpBuilder &nb, Location l, Value x) {
  if (isa<IntegerType>(x.getType())) {
    Value zero = typedConst(nb, l, x.getType(), 0);
    if (isUnsignedElt(op->getOperand(0))) {
      return TypeSwitch<Operation *, Value>(op)
          .Case([&](NegOp) { return nb.create<arith::SubIOp>(l, zero, x); })
          .Case<AbsOp, ReluOp>([&](Operation *) { return x; })
          .Case([&](SignOp) {
            Value nz = nb.create<arith::CmpIOp>(l, arith::CmpIPredicate::ne, x, zero);
            return nb.create<arith::ExtUIOp>(l, x.getType(), nz);
          })
          .Case([&](NotOp) { return nb.create<arith::XOrIOp>(l, x, typedConst(nb, l, x.getType(), -1)); })
          .Default([](Operation *) { return Value(); });
    }
    return TypeSwitch<Operation *, Value>(op)
        .Case([&](NegOp) { return nb.create<arith::SubIOp>(l, zero, x); })
        .Case([&](AbsOp) { return nb.create<math::AbsIOp>(l, x); })
        .Case([&](ReluOp) { return nb.create<arith::MaxSIOp>(l, x, zero); })
        .Case([&](SignOp) {
          Value one = typedConst(nb, l, x.getType(), 1), m1 = typedConst(nb, l, x.getType(), -1);
          Value pos = nb.create<arith::CmpIOp>(l, arith::CmpIPredicate::sgt, x, zero);
          Value neg = nb.create<arith::CmpIOp>(l, arith::CmpIPredicate::slt, x, zero);
          return nb.create<arith::SelectOp>(l, pos, one, nb.create<arith::SelectOp>(l, neg, m1, zero));
        })
        // Bitwise not (all ones is 1 for bool).
        .Case([&](NotOp) { return nb.create<arith::XOrIOp>(l, x, typedConst(nb, l, x.getType(), -1)); })
        .Default([](Operation *) { return Value(); });
  }
  Type ft = x.getType();
  auto c = [&](double v) { return typedConst(nb, l, ft, v); };
  return TypeSwitch<Operation *, Value>(op)
      .Case([&](SqrtOp) { return nb.create<math::SqrtOp>(l, x); })
      .Case([&](ExpOp) { return nb.create<math::ExpOp>(l, x); })
      .Case([&](LogOp) { return nb.create<math::LogOp>(l, x); })
      .Case([&](NegOp) { return nb.create<arith::NegFOp>(l, x); })
      .Case([&](AbsOp) { return nb.create<math::AbsFOp>(l, x); })
      .Case([&](ReciprocalOp) { return nb.create<arith::DivFOp>(l, c(1.0), x); })
      .Case([&](ReluOp) { return nb.create<arith::MaximumFOp>(l, x, c(0.0)); })
      .Case([&](SigmoidOp) {
        Value e = nb.create<math::ExpOp>(l, nb.create<arith::NegFOp>(l, x));
        return nb.create<arith::DivFOp>(l, c(1.0), nb.create<arith::AddFOp>(l, c(1.0), e));
      })
      .Case([&](TanhOp) { return nb.create<math::TanhOp>(l, x); })
      .Case([&](ErfOp) { return nb.create<math::ErfOp>(l, x); })
      .Case([&](HardSwishOp) {
        Value t = nb.create<arith::AddFOp>(l, nb.create<arith::MulFOp>(l, x, c(1.0 / 6.0)), c(0.5));
        t = nb.create<arith::MinimumFOp>(l, nb.create<arith::MaximumFOp>(l, t, c(0.0)), c(1.0));
        return nb.create<arith::MulFOp>(l, x, t);
      })
      .Case([&](SoftplusOp) { // max(x, 0) + log1p(exp(-|x|)), stable for large |x|
        Value e = nb.create<math::ExpOp>(l, nb.create<arith::NegFOp>(l, nb.create<math::AbsFOp>(l, x)));
        return nb.create<arith::AddFOp>(l, nb.create<arith::MaximumFOp>(l, x, c(0.0)),
                                        nb.create<math::Log1pOp>(l, e));
      })
      .Case([&](SoftsignOp) {
        return nb.create<arith::DivFOp>(l, x, nb.create<arith::AddFOp>(l, c(1.0), nb.create<math::AbsFOp>(l, x)));
      })
      .Case([&](MishOp) {
        Value e = nb.create<math::ExpOp>(l, nb.create<arith::NegFOp>(l, nb.create<math::AbsFOp>(l, x)));
        Value sp = nb.create<arith::AddFOp>(l, nb.create<arith::MaximumFOp>(l, x, c(0.0)),
                                            nb.create<math::Log1pOp>(l, e));
        return nb.create<arith::MulFOp>(l, x, nb.create<math::TanhOp>(l, sp));
      })
      .Case([&](FloorOp) { return nb.create<math::FloorOp>(l, x); })
      .Case([&](CeilOp) { return nb.create<math::CeilOp>(l, x); })
      .Case([&](RoundOp) { return nb.create<math::RoundEvenOp>(l, x); })
      .Case([&](SignOp) {
        Value pos = nb.create<arith::CmpFOp>(l, arith::CmpFPredicate::OGT, x, c(0.0));
        Value neg = nb.create<arith::CmpFOp>(l, arith::CmpFPredicate::OLT, x, c(0.0));
        return nb.create<arith::SelectOp>(l, pos, c(1.0), nb.create<arith::SelectOp>(l, neg, c(-1.0), c(0.0)));
      })
      .Case([&](SinOp) { return nb.create<math::SinOp>(l, x); })
      .Case([&](CosOp) { return nb.create<math::CosOp>(l, x); })
      .Case([&](TanOp) { return nb.create<math::TanOp>(l, x); })
      .Case([&](AsinOp) { return nb.create<math::AsinOp>(l, x); })
      .Case([&](AcosOp) { return nb.create<math::AcosOp>(l, x); })
      .Case([&](AtanOp) { return nb.create<math::AtanOp>(l, x); })
      .Case([&](SinhOp) { return nb.create<math::SinhOp>(l, x); })
      .Case([&](CoshOp) { return nb.create<math::CoshOp>(l, x); })
      .Case([&](AsinhOp) { return nb.create<math::AsinhOp>(l, x); })
      .Case([&](AcoshOp) { return nb.create<math::AcoshOp>(l, x); })
      .Case([&](AtanhOp) { return nb.create<math::AtanhOp>(l, x); })
      .Case([&](EluOp o) {
        Value neg = nb.create<arith::CmpFOp>(l, arith::CmpFPredicate::OLT, x, c(0.0));
        Value e = nb.create<arith::MulFOp>(l, nb.create<math::ExpM1Op>(l, x), c(o.getAlpha().convertToFloat()));
        return nb.create<arith::SelectOp>(l, neg, e, x);
      })
      .Case([&](CeluOp o) {
        float a = o.getAlpha().convertToFloat();
        Value e = nb.create<arith::MulFOp>(
            l, nb.create<math::ExpM1Op>(l, nb.create<arith::DivFOp>(l, x, c(a))), c(a));
        return nb.create<arith::AddFOp>(l, nb.create<arith::MaximumFOp>(l, x, c(0.0)),
                                        nb.create<arith::MinimumFOp>(l, e, c(0.0)));
      })
      .Case([&](ThresholdedReluOp o) {
        Value gt = nb.create<arith::CmpFOp>(l, arith::CmpFPredicate::OGT, x, c(o.getAlpha().convertToFloat()));
        return nb.create<arith::SelectOp>(l, gt, x, c(0.0));
      })
      .Case([&](SeluOp o) {
        float a = o.getAlpha().convertToFloat(), g = o.getGamma().convertToFloat();
        Value le = nb.create<arith::CmpFOp>(l, arith::CmpFPredicate::OLE, x, c(0.0));
        Value neg = nb.create<arith::MulFOp>(l, nb.create<math::ExpM1Op>(l, x), c(a * g));
        return nb.create<arith::SelectOp>(l, le, neg, nb.create<arith::MulFOp>(l, x, c(g)));
      })
      .Case([&](ShrinkOp o) {
        float bias = o.getBias().convertToFloat(), lambd = o.getLambd().convertToFloat();
        Value lo = nb.create<arith::CmpFOp>(l, arith::CmpFPredicate::OLT, x, c(-lambd));
        Value hi = nb.create<arith::CmpFOp>(l, arith::CmpFPredicate::OGT, x, c(lambd));
        Value r = nb.create<arith::SelectOp>(l, hi, nb.create<arith::SubFOp>(l, x, c(bias)), c(0.0));
        return nb.create<arith::SelectOp>(l, lo, nb.create<arith::AddFOp>(l, x, c(bias)), r);
      })
      .Case([&](GeluOp o) {
        Value inner;
        if (o.getTanhApproximation()) {
          Value x3 = nb.create<arith::MulFOp>(l, x, nb.create<arith::MulFOp>(l, x, x));
          Value t = nb.create<arith::AddFOp>(l, x, nb.create<arith::MulFOp>(l, x3, c(0.044715)));
          inner = nb.create<math::TanhOp>(l, nb.create<arith::MulFOp>(l, t, c(0.7978845608028654)));
        } else {
          inner = nb.create<math::ErfOp>(l, nb.create<arith::MulFOp>(l, x, c(0.7071067811865476)));
        }
        Value h = nb.create<arith::MulFOp>(l, x, c(0.5));
        return nb.create<arith::MulFOp>(l, h, nb.create<arith::AddFOp>(l, inner, c(1.0)));
      })
      .Case([&](IsNaNOp) { return nb.create<arith::CmpFOp>(l, arith::CmpFPredicate::UNO, x, x); })
      .Case([&](IsInfOp o) -> Value {
        Value inf = c(std::numeric_limits<double>::infinity());
        Value pos = nb.create<arith::CmpFOp>(l, arith::CmpFPredicate::OEQ, x, inf);
        Value neg = nb.create<arith::CmpFOp>(l, arith::CmpFPredicate::OEQ, x, nb.create<arith::NegFOp>(l, inf));
        Value f = nb.create<arith::ConstantOp>(l, nb.getBoolAttr(false));
        Value r = o.getDetectPositive() ? pos : f;
        return o.getDetectNegative() ? nb.create<arith::OrIOp>(l, r, neg).getResult() : r;
      })
      .Case([&](LeakyReluOp o) {
        Value neg = nb.create<arith::CmpFOp>(l, arith::CmpFPredicate::OLT, x, c(0.0));
        Value s = nb.create<arith::MulFOp>(l, x, c(o.getAlpha().convertToFloat()));
        return nb.create<arith::SelectOp>(l, neg, s, x);
      })
      .Case([&](HardSigmoidOp o) {
        Value t = nb.create<arith::AddFOp>(
            l, nb.create<arith::MulFOp>(l, x, c(o.getAlpha().convertToFloat())),
            c(o.getBeta().convertToFloat()));
        return nb.create<arith::MinimumFOp>(l, nb.create<arith::MaximumFOp>(l, t, c(0.0)), c(1.0));
      })
      .Case([&](ClipOp o) {
        Value t = nb.create<arith::MaximumFOp>(l, x, c(o.getMin().convertToFloat()));
        return nb.create<arith::MinimumFOp>(l, t, c(o.getMax().convertToFloat()));
      })
      .Default([](Operation *) { return Value(); });
}

Value BufferLowering::binaryScalar(Operation *op, OpBuilder &nb, Location l, Value x, Value y) {
  if (isa<IntegerType>(x.getType())) {
    if (auto sh = dyn_cast<BitShiftOp>(op)) {
      // Shifts by the width or more give 0 (numpy), not LLVM poison.
      unsigned w = x.getType().getIntOrFloatBitWidth();
      Value r = sh.getLeft() ? nb.create<arith::ShLIOp>(l, x, y).getResult()
                             : nb.create<arith::ShRUIOp>(l, x, y).getResult();
      Value inRange = nb.create<arith::CmpIOp>(l, arith::CmpIPredicate::ult, y,
                                               typedConst(nb, l, x.getType(), w));
      return nb.create<arith::SelectOp>(l, inRange, r, typedConst(nb, l, x.getType(), 0));
    }
    // Integer (and bool) forms; unsigned types take the unsigned ops.
    bool u = isUnsignedElt(op->getOperand(0));
    using P = arith::CmpIPredicate;
    auto cmp = [&](P s, P uns) { return nb.create<arith::CmpIOp>(l, u ? uns : s, x, y).getResult(); };
    return TypeSwitch<Operation *, Value>(op)
        .Case([&](AddOp) { return nb.create<arith::AddIOp>(l, x, y); })
        .Case([&](SubOp) { return nb.create<arith::SubIOp>(l, x, y); })
        .Case([&](MulOp) { return nb.create<arith::MulIOp>(l, x, y); })
        .Case([&](DivOp) -> Value {
          if (u) return nb.create<arith::DivUIOp>(l, x, y);
          return nb.create<arith::DivSIOp>(l, x, y);
        })
        .Case([&](MaxOp) -> Value {
          if (u) return nb.create<arith::MaxUIOp>(l, x, y);
          return nb.create<arith::MaxSIOp>(l, x, y);
        })
        .Case([&](MinOp) -> Value {
          if (u) return nb.create<arith::MinUIOp>(l, x, y);
          return nb.create<arith::MinSIOp>(l, x, y);
        })
        .Case([&](ModOp o) -> Value {
          if (u) return nb.create<arith::RemUIOp>(l, x, y);
          Value r = nb.create<arith::RemSIOp>(l, x, y);
          if (o.getFmod())
            return r;
          // Python %: the result takes the divisor's sign.
          Value zero = typedConst(nb, l, x.getType(), 0);
          Value rNeg = nb.create<arith::CmpIOp>(l, P::slt, r, zero);
          Value yNeg = nb.create<arith::CmpIOp>(l, P::slt, y, zero);
          Value rNz = nb.create<arith::CmpIOp>(l, P::ne, r, zero);
          Value fix = nb.create<arith::AndIOp>(l, rNz, nb.create<arith::XOrIOp>(l, rNeg, yNeg));
          return nb.create<arith::SelectOp>(l, fix, nb.create<arith::AddIOp>(l, r, y), r);
        })
        .Case([&](EqualOp) { return cmp(P::eq, P::eq); })
        .Case([&](LessOp) { return cmp(P::slt, P::ult); })
        .Case([&](LessOrEqualOp) { return cmp(P::sle, P::ule); })
        .Case([&](GreaterOp) { return cmp(P::sgt, P::ugt); })
        .Case([&](GreaterOrEqualOp) { return cmp(P::sge, P::uge); })
        .Case([&](AndOp) { return nb.create<arith::AndIOp>(l, x, y); })
        .Case([&](OrOp) { return nb.create<arith::OrIOp>(l, x, y); })
        .Case([&](XorOp) { return nb.create<arith::XOrIOp>(l, x, y); })
        .Default([](Operation *) { return Value(); });
  }
  return TypeSwitch<Operation *, Value>(op)
      .Case([&](EqualOp) { return nb.create<arith::CmpFOp>(l, arith::CmpFPredicate::OEQ, x, y); })
      .Case([&](LessOp) { return nb.create<arith::CmpFOp>(l, arith::CmpFPredicate::OLT, x, y); })
      .Case([&](LessOrEqualOp) { return nb.create<arith::CmpFOp>(l, arith::CmpFPredicate::OLE, x, y); })
      .Case([&](GreaterOp) { return nb.create<arith::CmpFOp>(l, arith::CmpFPredicate::OGT, x, y); })
      .Case([&](GreaterOrEqualOp) { return nb.create<arith::CmpFOp>(l, arith::CmpFPredicate::OGE, x, y); })
      .Case([&](AddOp) { return nb.create<arith::AddFOp>(l, x, y); })
      .Case([&](SubOp) { return nb.create<arith::SubFOp>(l, x, y); })
      .Case([&](MulOp) { return nb.create<arith::MulFOp>(l, x, y); })
      .Case([&](DivOp) { return nb.create<arith::DivFOp>(l, x, y); })
      .Case([&](PowOp) { return nb.create<math::PowFOp>(l, x, y); })
      .Case([&](MaxOp) { return nb.create<arith::MaximumFOp>(l, x, y); })
      .Case([&](MinOp) { return nb.create<arith::MinimumFOp>(l, x, y); })
      .Case([&](ModOp) { return nb.create<arith::RemFOp>(l, x, y); }) // fmod
      .Case([&](PReluOp) {
        Value zero = nb.create<arith::ConstantOp>(l, nb.getF32FloatAttr(0.0));
        Value neg = nb.create<arith::CmpFOp>(l, arith::CmpFPredicate::OLT, x, zero);
        return nb.create<arith::SelectOp>(l, neg, nb.create<arith::MulFOp>(l, x, y), x);
      })
      .Default([](Operation *) { return Value(); });
}

static Value mulScalar(OpBuilder &nb, Location l, Value a, Value b) {
  if (isa<IntegerType>(a.getType())) return nb.create<arith::MulIOp>(l, a, b);
  return nb.create<arith::MulFOp>(l, a, b);
}

/// acc + sum over the box [0, bounds) of term(ivs): nested scf.for loops.
static Value sumLoops(OpBuilder &nb, Location l, ArrayRef<int64_t> bounds, Value acc,
                      function_ref<Value(OpBuilder &, Location, ValueRange)> term,
                      SmallVector<Value> ivs = {}) {
  if (ivs.size() == bounds.size()) {
    Value t = term(nb, l, ivs);
    if (isa<IntegerType>(t.getType())) return nb.create<arith::AddIOp>(l, acc, t);
    return nb.create<arith::AddFOp>(l, acc, t);
  }
  Value lo = nb.create<arith::ConstantIndexOp>(l, 0);
  Value hi = nb.create<arith::ConstantIndexOp>(l, bounds[ivs.size()]);
  Value one = nb.create<arith::ConstantIndexOp>(l, 1);
  auto loop = nb.create<scf::ForOp>(l, lo, hi, one, ValueRange{acc},
                                    [&](OpBuilder &fb, Location fl, Value iv, ValueRange args) {
                                      SmallVector<Value> inner(ivs);
                                      inner.push_back(iv);
                                      Value r = sumLoops(fb, fl, bounds, args[0], term, inner);
                                      fb.create<scf::YieldOp>(fl, r);
                                    });
  return loop.getResult(0);
}

void BufferLowering::generateOver(Value out, function_ref<Value(OpBuilder &, Location, ValueRange)> body) {
  int64_t r = cast<MemRefType>(out.getType()).getRank();
  b.create<linalg::GenericOp>(loc, ValueRange{}, ValueRange{out},
                              SmallVector<AffineMap>{b.getMultiDimIdentityMap(r)},
                              SmallVector<IterTy>(r, IterTy::parallel),
                              [&](OpBuilder &nb, Location l, ValueRange) {
                                SmallVector<Value> idx;
                                for (int64_t d = 0; d < r; ++d) idx.push_back(nb.create<linalg::IndexOp>(l, d));
                                nb.create<linalg::YieldOp>(l, ValueRange{body(nb, l, idx)});
                              });
}

void BufferLowering::portableConv(Operation *op, Value xv, Value wv, Value biasV, ArrayRef<int64_t> s,
                                  ArrayRef<int64_t> d, ArrayRef<int64_t> p, int64_t group, bool transposed) {
  auto xs = cast<ShapedType>(xv.getType()).getShape();
  auto ws = cast<ShapedType>(wv.getType()).getShape();
  int64_t F = cast<ShapedType>(op->getResult(0).getType()).getShape()[1];
  int64_t Cg = xs[1] / group, Fg = F / group;
  Value x = buf(xv), w = buf(wv), bias = biasV ? buf(biasV) : Value();
  Type et = eltOf(op->getResult(0));
  std::optional<SparseRows> sp = transposed ? std::nullopt : portableSparse(op);
  generateOver(dest(op->getResult(0)), [&](OpBuilder &nb, Location l, ValueRange o) {
    auto c = [&](int64_t v) { return nb.create<arith::ConstantIndexOp>(l, v).getResult(); };
    auto mul = [&](Value a, int64_t k) { return nb.create<arith::MulIOp>(l, a, c(k)).getResult(); };
    auto add = [&](Value a, Value b2) { return nb.create<arith::AddIOp>(l, a, b2).getResult(); };
    auto sub = [&](Value a, Value b2) { return nb.create<arith::SubIOp>(l, a, b2).getResult(); };
    auto cmp = [&](arith::CmpIPredicate pr, Value a, int64_t k) {
      return nb.create<arith::CmpIOp>(l, pr, a, c(k)).getResult();
    };
    auto both = [&](Value a, Value b2) { return nb.create<arith::AndIOp>(l, a, b2).getResult(); };
    // (Ungrouped: no index arithmetic, so the input visibly does not depend
    // on the output channel; device targets tile along it.)
    Value g = group == 1 ? c(0) : nb.create<arith::DivUIOp>(l, o[1], c(Fg)).getResult();
    Value fl = group == 1 ? o[1] : nb.create<arith::RemUIOp>(l, o[1], c(Fg)).getResult();
    Value cBase = mul(g, Cg);
    Value zero = typedConst(nb, l, et, 0);
    Value init = bias ? nb.create<memref::LoadOp>(l, bias, ValueRange{o[1]}).getResult() : zero;
    // One product: tap (c, kh, kw) of the input times its weight (null
    // weight: the input only, for the sparse walk).
    auto tap = [&](ValueRange r, bool withWeight) -> Value {
      Value ok, at[2];
      for (int i = 0; i < 2; ++i) {
        Value pos;
        if (!transposed) {
          // in = out * stride - pad + k * dilation
          pos = add(sub(mul(o[2 + i], s[i]), c(p[i])), mul(r[1 + i], d[i]));
        } else {
          // out = in * stride - pad + k * dilation: in = (out + pad - k * dilation) / stride
          Value t = sub(add(o[2 + i], c(p[i])), mul(r[1 + i], d[i]));
          Value nonNeg = cmp(arith::CmpIPredicate::sge, t, 0);
          t = nb.create<arith::SelectOp>(l, nonNeg, t, c(0));
          Value exact = cmp(arith::CmpIPredicate::eq, nb.create<arith::RemUIOp>(l, t, c(s[i])), 0);
          ok = ok ? both(ok, both(nonNeg, exact)) : both(nonNeg, exact);
          pos = nb.create<arith::DivUIOp>(l, t, c(s[i]));
        }
        // Bounds checks only where a tap can fall in the padding.
        Value in;
        int64_t outD = cast<ShapedType>(op->getResult(0).getType()).getShape()[2 + i];
        bool low = transposed || p[i] > 0;
        bool high = transposed || (outD - 1) * s[i] - p[i] + (ws[2 + i] - 1) * d[i] >= xs[2 + i];
        if (low) in = cmp(arith::CmpIPredicate::sge, pos, 0);
        if (high) {
          Value below = cmp(arith::CmpIPredicate::slt, pos, xs[2 + i]);
          in = in ? both(in, below) : below;
        }
        if (in) ok = ok ? both(ok, in) : in;
        at[i] = pos;
      }
      if (ok)
        for (Value &a : at) a = nb.create<arith::SelectOp>(l, ok, a, c(0));
      Value ch = add(cBase, r[0]);
      Value xval = nb.create<memref::LoadOp>(l, x, ValueRange{o[0], ch, at[0], at[1]});
      if (ok) xval = nb.create<arith::SelectOp>(l, ok, xval, zero);
      if (!withWeight) return xval;
      Value wval = transposed ? nb.create<memref::LoadOp>(l, w, ValueRange{ch, fl, r[1], r[2]})
                              : nb.create<memref::LoadOp>(l, w, ValueRange{o[1], r[0], r[1], r[2]});
      return mulScalar(nb, l, xval, wval);
    };
    if (sp)
      // Column k of W is tap (k / (KH*KW), k / KW % KH, k % KW).
      return sparseSum(nb, l, *sp, o[1], init, [&](OpBuilder &, Location, Value col) {
        Value ci = nb.create<arith::DivUIOp>(l, col, c(ws[2] * ws[3]));
        Value kh = nb.create<arith::RemUIOp>(l, nb.create<arith::DivUIOp>(l, col, c(ws[3])), c(ws[2]));
        Value kw = nb.create<arith::RemUIOp>(l, col, c(ws[3]));
        return tap(ValueRange{ci, kh, kw}, false);
      });
    return sumLoops(nb, l, {Cg, ws[2], ws[3]}, init,
                    [&](OpBuilder &, Location, ValueRange r) { return tap(r, true); });
  });
}

void BufferLowering::portableGemm(GemmOp op) {
  auto as = cast<ShapedType>(op.getA().getType()).getShape();
  int64_t K = op.getTransA() ? as[0] : as[1];
  Value a = buf(op.getA()), bm = buf(op.getB()), cm = op.getC() ? buf(op.getC()) : Value();
  Type et = eltOf(op.getResult());
  bool tA = op.getTransA(), tB = op.getTransB();
  float alpha = op.getAlpha().convertToFloat(), beta = op.getBeta().convertToFloat();
  std::optional<SparseRows> sp = portableSparse(op); // W = op(B)^T: row n, column k
  generateOver(dest(op.getResult()), [&](OpBuilder &nb, Location l, ValueRange o) {
    Value zero = typedConst(nb, l, et, 0);
    Value acc = sp ? sparseSum(nb, l, *sp, o[1], zero, [&](OpBuilder &, Location, Value k) {
      return nb.create<memref::LoadOp>(l, a, tA ? ValueRange{k, o[0]} : ValueRange{o[0], k}).getResult();
    }) : sumLoops(nb, l, {K}, zero, [&](OpBuilder &, Location, ValueRange r) {
      Value av = nb.create<memref::LoadOp>(l, a, tA ? ValueRange{r[0], o[0]} : ValueRange{o[0], r[0]});
      Value bv = nb.create<memref::LoadOp>(l, bm, tB ? ValueRange{o[1], r[0]} : ValueRange{r[0], o[1]});
      return mulScalar(nb, l, av, bv);
    });
    if (alpha != 1.0f) acc = nb.create<arith::MulFOp>(l, acc, typedConst(nb, l, et, alpha));
    if (cm && beta != 0.0f) {
      auto cs = cast<MemRefType>(cm.getType()).getShape();
      SmallVector<Value> at;
      Value c0 = nb.create<arith::ConstantIndexOp>(l, 0);
      for (size_t i = 0; i < cs.size(); ++i) {
        size_t outDim = 2 - cs.size() + i; // right-aligned broadcasting
        at.push_back(cs[i] == 1 ? c0 : o[outDim]);
      }
      Value cv = nb.create<memref::LoadOp>(l, cm, at);
      if (beta != 1.0f) cv = nb.create<arith::MulFOp>(l, cv, typedConst(nb, l, et, beta));
      acc = nb.create<arith::AddFOp>(l, acc, cv);
    }
    return acc;
  });
}

LogicalResult BufferLowering::portableMatMul(MatMulOp op) {
  auto as = cast<ShapedType>(op.getA().getType()).getShape();
  auto bs = cast<ShapedType>(op.getB().getType()).getShape();
  int64_t r = cast<ShapedType>(op.getType()).getRank();
  if (as.size() < 2 || bs.size() < 2)
    return op.emitError("a 1-d MatMul operand is not supported by this target");
  Value a = buf(op.getA()), bm = buf(op.getB());
  Type et = eltOf(op.getResult());
  std::optional<SparseRows> sp = portableSparse(op); // W = B^T: row n, column k
  generateOver(dest(op.getResult()), [&](OpBuilder &nb, Location l, ValueRange o) {
    Value c0 = nb.create<arith::ConstantIndexOp>(l, 0);
    // Batch indices of an operand: right-aligned, size-1 dims broadcast.
    auto batch = [&](ArrayRef<int64_t> shape) {
      SmallVector<Value> at;
      int64_t rank = shape.size();
      for (int64_t i = 0; i < rank - 2; ++i) at.push_back(shape[i] == 1 ? c0 : o[r - rank + i]);
      return at;
    };
    if (sp)
      return sparseSum(nb, l, *sp, o[r - 1], typedConst(nb, l, et, 0), [&](OpBuilder &, Location, Value k) {
        SmallVector<Value> ai = batch(as);
        ai.append({o[r - 2], k});
        return nb.create<memref::LoadOp>(l, a, ai).getResult();
      });
    Value acc = sumLoops(nb, l, {as.back()}, typedConst(nb, l, et, 0), [&](OpBuilder &, Location, ValueRange k) {
      SmallVector<Value> ai = batch(as), bi = batch(bs);
      ai.append({o[r - 2], k[0]});
      bi.append({k[0], o[r - 1]});
      Value av = nb.create<memref::LoadOp>(l, a, ai);
      Value bv = nb.create<memref::LoadOp>(l, bm, bi);
      return mulScalar(nb, l, av, bv);
    });
    return acc;
  });
  return success();
}

/// A fusion block's head: its last op that is not pointwise (null if all are).
static Operation *blockHead(Block &body) {
  Operation *head = nullptr;
  for (Operation &o : body.without_terminator())
    if (!isPointwise(&o)) head = &o;
  return head;
}

/// Whether every kernel that reads this conv's block's output reads it by
/// channels, each thread whole planes: a depthwise conv or a pool (the
/// runtime's plane kernels, parallel over channels). The conv's GEMM then
/// gives each thread a run of output channels (kiln_rt_conv2d_packed_part)
/// rather than of pixels, so that the next kernel finds its planes in its
/// own core's cache: MobileNetV2's expansion convs, whose outputs the
/// depthwise convs read.
static bool outputReadByChannels(ConvOp op) {
  auto block = op->getParentOfType<FusedOp>();
  if (!block || block.getResults().empty()) return false;
  for (Value r : block.getResults())
    for (Operation *user : r.getUsers()) {
      auto next = dyn_cast<FusedOp>(user);
      if (!next) return false;
      Operation *head = blockHead(next.getBody().front());
      if (!head) return false;
      if (isa<MaxPoolOp, AveragePoolOp>(head)) continue;
      auto conv = dyn_cast<ConvOp>(head);
      auto ws = conv ? cast<ShapedType>(conv.getWeight().getType()).getShape() : ArrayRef<int64_t>();
      if (!conv || ws.size() != 4 || ws[1] != 1 || conv.getGroup() != ws[0]) return false; // depthwise only
    }
  return llvm::any_of(block.getResults(), [](Value r) { return !r.use_empty(); });
}

LogicalResult BufferLowering::lowerConv(ConvOp op) {
  auto xs = cast<ShapedType>(op.getInput().getType()).getShape();
  auto ws = cast<ShapedType>(op.getWeight().getType()).getShape();
  auto ys = cast<ShapedType>(op.getType()).getShape();
  if (xs.size() != 4)
    return op.emitError("only 2-d convolution reaches codegen");
  if (portableOp(op)) {
    portableConv(op, op.getInput(), op.getWeight(), op.getBias(), op.getStrides(), op.getDilations(), op.getPads(),
                 op.getGroup(), false);
    return success();
  }
  Value out = dest(op.getResult());
  Value bias = op.getBias() ? ptr(buf(op.getBias())) : b.create<arith::ConstantIndexOp>(loc, 0).getResult();
  auto s = op.getStrides(), d = op.getDilations(), p = op.getPads();
  SmallVector<Value> args{ptr(buf(op.getInput())), ptr(buf(op.getWeight())), bias, ptr(out),
                          ci(xs[0]), ci(xs[1]), ci(xs[2]), ci(xs[3]), ci(ws[0]), ci(ws[2]),
                          ci(ws[3]), ci(ys[2]), ci(ys[3]), ci(s[0]), ci(s[1]), ci(d[0]), ci(d[1]),
                          ci(p[0]), ci(p[1]), ci(op.getGroup())};
  float inf = std::numeric_limits<float>::infinity();
  // Constant weights of an ungrouped, not depthwise conv are packed here,
  // once, in the layout the GEMM reads (kiln/gemm_layout.h), or as a BCR
  // sparse blob where kiln-detect-sparsity chose sparse code.
  if (packsWeights(op))
    if (auto w = constantFloats(op.getWeight())) {
      Value packedW = sparseWeights(op);
      const bool sparse = bool(packedW);
      const char *kernelName = packedW ? "kiln_rt_conv2d_bcr" : "kiln_rt_conv2d_packed";
      if (int m = packedW ? 0 : kiln::winogradTile(op, winograd)) {
        // Winograd: weights transformed (G g G^T) and packed here, once.
        Value unpacked = args[1];
        Value resid = convResidual ? ptr(convResidual) : b.create<arith::ConstantIndexOp>(loc, 0).getResult();
        call("kiln_rt_conv2d_winograd_ft",
             {args[0], winogradWeights(*w, m, ws[0], ws[1]), args[2], resid, args[3], ci(xs[0]), ci(xs[1]), ci(xs[2]), ci(xs[3]),
              ci(ws[0]), ci(ys[2]), ci(ys[3]), ci(p[0]), ci(p[1]), ci(m), cf(convAct ? convAct->first : -inf),
              cf(convAct ? convAct->second : inf)});
        if (unpacked.use_empty()) unpacked.getDefiningOp()->erase();
        return success();
      }
      if (!packedW) packedW = gemmWeights(*w, ws[0], ws[1] * ws[2] * ws[3]);
      args.erase(args.begin() + 19); // the group
      Value unpacked = args[1];
      args[1] = packedW;
      if (unpacked.use_empty()) unpacked.getDefiningOp()->erase(); // the weights' pointer
      args.push_back(cf(convAct ? convAct->first : -inf));
      args.push_back(cf(convAct ? convAct->second : inf));
      args.insert(args.begin() + 3, convResidual ? ptr(convResidual)
                                                 : b.create<arith::ConstantIndexOp>(loc, 0).getResult());
      if (!sparse && outputReadByChannels(op)) {
        args.push_back(ci(1)); // threads own output channels
        kernelName = "kiln_rt_conv2d_packed_part";
      }
      call(kernelName, args);
      convResidualInPlace = convResidual && !sparse &&
                            kiln::gemm::convResidualReadInPlace(ws[1], ws[2], ws[3], s[0], s[1], p[0], p[1],
                                                                xs[2] == ys[2] && xs[3] == ys[3], op.getGroup());
      return success();
    }
  if (convResidual)
    return op.emitError("internal error: a fused residual needs the conv's weights packed");
  if (convAct) {
    // A fused Relu/Clip epilogue, applied by the kernel as it stores.
    args.push_back(cf(convAct->first));
    args.push_back(cf(convAct->second));
    call("kiln_rt_conv2d_act", args);
    return success();
  }
  call("kiln_rt_conv2d", args);
  return success();
}

/// A conv chain: kiln_rt_conv2d_winograd_chain runs the head conv by
/// Winograd (its weights transformed here, once) and the 1x1 tail conv
/// (its weights packed as GEMM operand A) on each band of the head's
/// output rows, with both convs' bias and clamp and the tail's residual.
LogicalResult BufferLowering::lowerConvChain(ConvChainOps c, Value outArg) {
  auto xs = cast<ShapedType>(c.head.getInput().getType()).getShape();
  auto ws = cast<ShapedType>(c.head.getWeight().getType()).getShape();
  auto ys = cast<ShapedType>(c.tail.getType()).getShape();
  auto w = constantFloats(c.head.getWeight()), w2 = constantFloats(c.tail.getWeight());
  const int m = kiln::winogradTile(c.head, winograd);
  if (!w || !w2 || m == 0) return c.head.emitError("internal error: a conv chain needs constant Winograd weights");
  const int64_t F = ws[0], C = ws[1], F2 = ys[1];
  Value zero = b.create<arith::ConstantIndexOp>(loc, 0).getResult();
  auto biasOf = [&](ConvOp op) { return op.getBias() ? ptr(buf(op.getBias())) : zero; };
  float inf = std::numeric_limits<float>::infinity();
  auto [lo, hi] = c.act ? clampBounds(c.act) : std::pair<float, float>{-inf, inf};
  auto [lo2, hi2] = c.act2 ? clampBounds(c.act2) : std::pair<float, float>{-inf, inf};
  auto p = c.head.getPads();
  Value resid = c.residual ? ptr(buf(c.residual)) : zero;
  call("kiln_rt_conv2d_winograd_chain",
       {ptr(buf(c.head.getInput())), winogradWeights(*w, m, F, C), biasOf(c.head), gemmWeights(*w2, F2, F),
        biasOf(c.tail), resid, ptr(outArg), ci(xs[0]), ci(C), ci(xs[2]), ci(xs[3]), ci(F), ci(ys[2]), ci(ys[3]),
        ci(p[0]), ci(p[1]), ci(m), cf(lo), cf(hi), ci(F2), cf(lo2), cf(hi2)});
  // The tail reads the residual where it writes over one K block (the
  // runtime copies it otherwise); not where the block reads it elsewhere.
  if (c.residual && c.residual.hasOneUse() && kiln::gemm::convResidualReadInPlace(F, 1, 1, 1, 1, 0, 0, true, 1))
    inPlace = {kernel->callArgs[cast<BlockArgument>(outArg).getArgNumber()],
               kernel->callArgs[cast<BlockArgument>(buf(c.residual)).getArgNumber()]};
  return success();
}

LogicalResult BufferLowering::lowerConvTranspose(ConvTransposeOp op) {
  if (portable) {
    if (cast<ShapedType>(op.getInput().getType()).getRank() != 4)
      return op.emitError("only 2-d transposed convolution reaches codegen");
    portableConv(op, op.getInput(), op.getWeight(), op.getBias(), op.getStrides(), op.getDilations(), op.getPads(),
                 op.getGroup(), true);
    return success();
  }
  auto xs = cast<ShapedType>(op.getInput().getType()).getShape();
  auto ws = cast<ShapedType>(op.getWeight().getType()).getShape();
  auto ys = cast<ShapedType>(op.getType()).getShape();
  Value out = dest(op.getResult());
  Value bias = op.getBias() ? ptr(buf(op.getBias())) : b.create<arith::ConstantIndexOp>(loc, 0).getResult();
  auto s = op.getStrides(), d = op.getDilations(), p = op.getPads();
  call("kiln_rt_conv_transpose2d",
       {ptr(buf(op.getInput())), ptr(buf(op.getWeight())), bias, ptr(out), ci(xs[0]), ci(xs[1]),
        ci(xs[2]), ci(xs[3]), ci(ys[1]), ci(ws[2]), ci(ws[3]), ci(ys[2]), ci(ys[3]), ci(s[0]),
        ci(s[1]), ci(d[0]), ci(d[1]), ci(p[0]), ci(p[1]), ci(op.getGroup())});
  return success();
}

LogicalResult BufferLowering::lowerGemm(GemmOp op) {
  if (portableOp(op)) {
    portableGemm(op);
    return success();
  }
  auto as = cast<ShapedType>(op.getA().getType()).getShape();
  auto ys = cast<ShapedType>(op.getType()).getShape();
  int64_t M = ys[0], N = ys[1], K = op.getTransA() ? as[0] : as[1];
  Value out = dest(op.getResult());
  Value c = b.create<arith::ConstantIndexOp>(loc, 0);
  int64_t cRows = 0, cCols = 0;
  if (op.getC()) {
    auto cs = cast<ShapedType>(op.getC().getType()).getShape();
    c = ptr(buf(op.getC()));
    cRows = cs.size() == 2 ? cs[0] : 1;
    cCols = cs.empty() ? 1 : cs.back();
  }
  // Constant B (a weight) with alpha 1 and no C or a bias row C[N] (beta
  // 1): B packed here, the bias added on each tile as it is stored.
  if (packsWeights(op))
    if (auto w = constantFloats(op.getB())) {
      float inf = std::numeric_limits<float>::infinity();
      Value bp = sparseWeights(op);
      bool bcr = bool(bp);
      const char *kernelName = bcr ? "kiln_rt_matmul_bcr" : "kiln_rt_matmul_packed";
      if (!bp) bp = packedB(*w, op.getTransB() ? K : N, op.getTransB(), K, N);
      SmallVector<Value> args = {ptr(buf(op.getA())), bp, ptr(out), ci(1), ci(M), ci(N), ci(K), ci(0),
                                 ci(op.getTransA() ? M : K), ci(op.getTransA()), ci(0), ci(N), c, cf(-inf), cf(inf)};
      if (matmulAct) {
        args.push_back(ci(matmulAct));
        kernelName = bcr ? "kiln_rt_matmul_bcr_act" : "kiln_rt_matmul_packed_act";
      }
      call(kernelName, args);
      return success();
    }
  call("kiln_rt_gemm", {ptr(buf(op.getA())), ptr(buf(op.getB())), c, ptr(out), ci(M), ci(N),
                        ci(K), ci(op.getTransA()), ci(op.getTransB()),
                        cf(op.getAlpha().convertToFloat()), cf(op.getBeta().convertToFloat()),
                        ci(cRows), ci(cCols)});
  return success();
}

LogicalResult BufferLowering::lowerMatMul(MatMulOp op) {
  if (portableOp(op))
    return portableMatMul(op);
  auto ys = cast<ShapedType>(op.getType()).getShape();
  int64_t rank = ys.size();
  int64_t M = ys[rank - 2], N = ys[rank - 1];
  auto batchShape = ys.drop_back(2);
  int64_t batch = 1;
  for (int64_t d : batchShape) batch *= d;
  // Each operand either spans the full batch (stride = matrix size), is
  // shared by every batch element (stride 0), or is broadcast into a full
  // copy first.
  auto operand = [&](Value v, int64_t rows, int64_t cols, int64_t &stride) -> Value {
    auto s = cast<ShapedType>(v.getType()).getShape();
    Value m = buf(v);
    int64_t own = 1;
    for (int64_t d : s.drop_back(2)) own *= d;
    if (own == 1) { stride = 0; return m; }
    SmallVector<int64_t> full(batchShape);
    full.push_back(rows);
    full.push_back(cols);
    stride = rows * cols;
    if (s.size() == full.size() && s.drop_back(2) == batchShape) return m;
    Value copy = alloc(full);
    elementwise(ValueRange{m}, copy, [](OpBuilder &, Location, ValueRange a) { return a[0]; });
    return copy;
  };
  auto as = cast<ShapedType>(op.getA().getType()).getShape();
  int64_t K = as.back();
  int64_t sa, sb;
  if (stridedIns.count(op.getA()) || stridedIns.count(op.getB())) {
    // A prologue's operand is read where the chain's source holds it; the
    // other operand as usual; the result contiguous or through a Transpose.
    auto view = [&](Value v, int64_t rows, int64_t cols, int64_t &stride, int64_t &ld, int64_t &trans) -> Value {
      auto it = stridedIns.find(v);
      if (it == stridedIns.end()) {
        ld = cols, trans = 0;
        return ptr(operand(v, rows, cols, stride));
      }
      const StridedOperand &sv = it->second;
      stride = sv.batchStride, trans = sv.colStride != 1, ld = trans ? sv.colStride : sv.rowStride;
      Value p = ptr(buf(sv.source));
      if (sv.offset)
        p = b.create<arith::AddIOp>(loc, p, b.create<arith::ConstantIndexOp>(loc, sv.offset * 4));
      return p;
    };
    int64_t lda, ta, ldb, tb;
    Value pa = view(op.getA(), M, K, sa, lda, ta), pb = view(op.getB(), K, N, sb, ldb, tb);
    Value y = stridedOut ? stridedOut->buffer : dest(op.getResult());
    int64_t sy = stridedOut ? stridedOut->layout.batchStride : M * N, ldy = stridedOut ? stridedOut->layout.rowStride : N;
    call("kiln_rt_matmul_strided", {pa, pb, ptr(y), ci(batch), ci(M), ci(N), ci(K), ci(sa), ci(lda), ci(ta), ci(sb),
                                    ci(ldb), ci(tb), ci(sy), ci(ldy)});
    return success();
  }
  Value a = operand(op.getA(), M, K, sa);
  // A constant B shared by the whole batch (a weight) is packed here.
  if (packsWeights(op))
    if (auto w = constantFloats(op.getB())) {
      Value bp = sparseWeights(op);
      bool bcr = bool(bp);
      const char *kernelName = bcr ? "kiln_rt_matmul_bcr" : "kiln_rt_matmul_packed";
      if (!bp) bp = packedB(*w, N, false, K, N);
      float inf = std::numeric_limits<float>::infinity();
      Value noBias = b.create<arith::ConstantIndexOp>(loc, 0);
      if (stridedOut)
        call(kernelName, {ptr(a), bp, ptr(stridedOut->buffer), ci(batch), ci(M), ci(N), ci(K), ci(sa), ci(K), ci(0),
                          ci(stridedOut->layout.batchStride), ci(stridedOut->layout.rowStride), noBias, cf(-inf),
                          cf(inf)});
      else if (matmulAct)
        call(bcr ? "kiln_rt_matmul_bcr_act" : "kiln_rt_matmul_packed_act",
             {ptr(a), bp, ptr(dest(op.getResult())), ci(batch), ci(M), ci(N), ci(K), ci(sa), ci(K), ci(0),
              ci(M * N), ci(N), noBias, cf(-inf), cf(inf), ci(matmulAct)});
      else
        call(kernelName, {ptr(a), bp, ptr(dest(op.getResult())), ci(batch), ci(M), ci(N), ci(K), ci(sa), ci(K),
                          ci(0), ci(M * N), ci(N), noBias, cf(-inf), cf(inf)});
      return success();
    }
  Value bm = operand(op.getB(), K, N, sb);
  if (stridedOut) {
    // Fused with a following Transpose: write each row to its place.
    call("kiln_rt_matmul_strided",
         {ptr(a), ptr(bm), ptr(stridedOut->buffer), ci(batch), ci(M), ci(N), ci(K), ci(sa), ci(K),
          ci(0), ci(sb), ci(N), ci(0), ci(stridedOut->layout.batchStride),
          ci(stridedOut->layout.rowStride)});
    return success();
  }
  Value out = dest(op.getResult());
  call("kiln_rt_matmul", {ptr(a), ptr(bm), ptr(out), ci(batch), ci(M), ci(N), ci(K), ci(sa), ci(sb)});
  return success();
}

LogicalResult BufferLowering::lowerPool(Operation *op, bool isMax) {
  Value inV = op->getOperand(0);
  auto xs = cast<ShapedType>(inV.getType()).getShape();
  auto ys = cast<ShapedType>(op->getResult(0).getType()).getShape();
  auto k = cast<DenseI64ArrayAttr>(op->getAttr("kernel_shape")).asArrayRef();
  auto s = cast<DenseI64ArrayAttr>(op->getAttr("strides")).asArrayRef();
  auto d = cast<DenseI64ArrayAttr>(op->getAttr("dilations")).asArrayRef();
  auto p = cast<DenseI64ArrayAttr>(op->getAttr("pads")).asArrayRef();
  bool includePad = cast<BoolAttr>(op->getAttr("count_include_pad")).getValue();
  if (isMax && xs.size() == 4 && !portableOp(op)) {
    // The runtime's window kernel (shared with depthwise convs): padding
    // and ceil_mode's extra windows read -inf, no padded copy.
    call("kiln_rt_maxpool2d", {ptr(buf(inV)), ptr(dest(op->getResult(0))), ci(xs[0]), ci(xs[1]), ci(xs[2]),
                               ci(xs[3]), ci(k[0]), ci(k[1]), ci(ys[2]), ci(ys[3]), ci(s[0]), ci(s[1]), ci(d[0]),
                               ci(d[1]), ci(p[0]), ci(p[1])});
    return success();
  }
  // Pad so every window (ceil_mode included) lies inside the buffer.
  SmallVector<int64_t> lo{0, 0, p[0], p[1]}, hi{0, 0, 0, 0};
  for (int i = 0; i < 2; ++i) {
    int64_t need = (ys[2 + i] - 1) * s[i] + (k[i] - 1) * d[i] + 1;
    hi[2 + i] = std::max<int64_t>(0, need - xs[2 + i] - p[i]);
  }
  double fill = isMax ? -std::numeric_limits<double>::infinity() : 0.0;
  Value in = buf(inV);
  if (llvm::any_of(lo, [](int64_t v) { return v; }) || llvm::any_of(hi, [](int64_t v) { return v; }))
    in = padded(in, lo, hi, fill);
  Value out = dest(op->getResult(0));
  Value window = alloc({k[0], k[1]});
  b.create<linalg::FillOp>(loc, ValueRange{cf(fill)}, ValueRange{out});
  auto i64v = [&](ArrayRef<int64_t> v) {
    return DenseIntElementsAttr::get(RankedTensorType::get({2}, b.getI64Type()), v);
  };
  if (isMax)
    b.create<linalg::PoolingNchwMaxOp>(loc, TypeRange{}, ValueRange{in, window}, ValueRange{out},
                                       i64v({s[0], s[1]}), i64v({d[0], d[1]}));
  else
    b.create<linalg::PoolingNchwSumOp>(loc, TypeRange{}, ValueRange{in, window}, ValueRange{out},
                                       i64v({s[0], s[1]}), i64v({d[0], d[1]}));
  if (isMax)
    return success();
  // Divisor per output position, computed now: the whole window with
  // count_include_pad (as the ONNX reference, which with ceil_mode extends
  // the padding to cover the last window), else the window clipped to the
  // real input.
  std::vector<float> inv(ys[2] * ys[3]);
  bool uniform = true;
  for (int64_t oh = 0; oh < ys[2]; ++oh)
    for (int64_t ow = 0; ow < ys[3]; ++ow) {
      int64_t cnt = 1;
      for (int i = 0; i < 2; ++i) {
        int64_t o = i == 0 ? oh : ow, n = 0;
        for (int64_t t = 0; t < k[i]; ++t) {
          int64_t pos = o * s[i] + t * d[i] - p[i];
          bool inside = includePad || (pos >= 0 && pos < xs[2 + i]);
          n += inside;
        }
        cnt *= n;
      }
      inv[oh * ys[3] + ow] = cnt ? 1.0f / cnt : 0.0f;
      uniform &= inv[oh * ys[3] + ow] == inv[0];
    }
  if (uniform) {
    Value scale = cf(inv[0]);
    elementwise(ValueRange{out}, out, [&](OpBuilder &nb, Location l, ValueRange a) {
      return nb.create<arith::MulFOp>(l, a[0], scale).getResult();
    });
  } else {
    auto t = RankedTensorType::get({ys[2], ys[3]}, f32());
    Value scales = globalConstant(DenseElementsAttr::get(t, ArrayRef<float>(inv)));
    elementwise(ValueRange{out, scales}, out, [&](OpBuilder &nb, Location l, ValueRange a) {
      return nb.create<arith::MulFOp>(l, a[0], a[1]).getResult();
    });
  }
  return success();
}

LogicalResult BufferLowering::lowerReduce(Operation *op, ArrayRef<int64_t> axes) {
  auto xs = cast<ShapedType>(op->getOperand(0).getType()).getShape();
  SmallVector<int64_t> keepShape(xs);
  int64_t n = 1;
  for (int64_t a : axes) {
    n *= xs[a];
    keepShape[a] = 1;
  }
  Value in = buf(op->getOperand(0));
  Value out = dest(op->getResult(0));
  // f32 ReduceSum / ReduceMean over trailing axes (a global average pool):
  // the runtime's row kernel, parallel over rows. The generated loop nest
  // summed each 49-float plane of MobileNetV2's and ResNet-50's pools with
  // a horizontal add per row: 12 and 23 us (ONNX Runtime: 2-5).
  bool trailing = !axes.empty();
  for (size_t i = 0; i < axes.size(); ++i)
    trailing &= axes[i] == (int64_t)(xs.size() - axes.size() + i);
  if (trailing && isa<ReduceSumOp, ReduceMeanOp>(op) && eltOf(in).isF32() && !portableOp(op) && n > 0) {
    call("kiln_rt_row_sums", {ptr(in), ptr(out), ci(ShapedType::getNumElements(xs) / n), ci(n),
                              cf(isa<ReduceMeanOp>(op) ? 1.0 / n : 1.0)});
    return success();
  }
  // Without keepdims the result has the same elements in the same order.
  Value acc = viewAs(out, keepShape);
  auto id = [](OpBuilder &, Location, Value x, ValueRange) { return x; };
  auto post = [&](function_ref<Value(OpBuilder &, Location, Value)> fn) {
    elementwise(ValueRange{acc}, acc,
                [&](OpBuilder &nb, Location l, ValueRange a) { return fn(nb, l, a[0]); });
  };
  if (isa<ReduceSumOp, ReduceMeanOp>(op)) {
    reduceInto(in, acc, axes, Combine::Sum, id);
    if (isa<ReduceMeanOp>(op)) {
      Value scale = typedConst(b, loc, eltOf(in), 1.0 / n);
      post([&](OpBuilder &nb, Location l, Value v) { return nb.create<arith::MulFOp>(l, v, scale); });
    }
  } else if (isa<ReduceMaxOp>(op)) {
    reduceInto(in, acc, axes, Combine::Max, id);
  } else if (isa<ReduceMinOp>(op)) {
    reduceInto(in, acc, axes, Combine::Min, id);
  } else if (isa<ReduceProdOp>(op)) {
    reduceInto(in, acc, axes, Combine::Prod, id);
  } else if (isa<ReduceL1Op>(op)) {
    reduceInto(in, acc, axes, Combine::Sum,
               [](OpBuilder &nb, Location l, Value x, ValueRange) { return nb.create<math::AbsFOp>(l, x); });
  } else if (isa<ReduceL2Op, ReduceSumSquareOp>(op)) {
    reduceInto(in, acc, axes, Combine::Sum,
               [](OpBuilder &nb, Location l, Value x, ValueRange) { return nb.create<arith::MulFOp>(l, x, x); });
    if (isa<ReduceL2Op>(op))
      post([](OpBuilder &nb, Location l, Value v) { return nb.create<math::SqrtOp>(l, v); });
  } else if (isa<ReduceLogSumOp>(op)) {
    reduceInto(in, acc, axes, Combine::Sum, id);
    post([](OpBuilder &nb, Location l, Value v) { return nb.create<math::LogOp>(l, v); });
  } else if (isa<ReduceLogSumExpOp>(op)) {
    // log(sum(exp(x - m))) + m with m the max, so large inputs do not overflow.
    Value mx = alloc(keepShape, eltOf(in));
    reduceInto(in, mx, axes, Combine::Max, id);
    reduceInto(in, acc, axes, Combine::Sum,
               [](OpBuilder &nb, Location l, Value x, ValueRange m) {
                 return nb.create<math::ExpOp>(l, nb.create<arith::SubFOp>(l, x, m[0]));
               },
               ValueRange{mx});
    elementwise(ValueRange{acc, mx}, acc, [](OpBuilder &nb, Location l, ValueRange a) {
      return nb.create<arith::AddFOp>(l, nb.create<math::LogOp>(l, a[0]), a[1]).getResult();
    });
  } else {
    return op->emitError("no lowering for this reduction");
  }
  return success();
}

LogicalResult BufferLowering::lowerLayerNorm(LayerNormOp op) {
  auto xs = cast<ShapedType>(op.getType()).getShape();
  // Normalised over trailing dims with scale and bias varying along all of
  // them (LayerNormalization): the runtime's row kernel, parallel over rows.
  auto axes = op.getAxes();
  int64_t rank = xs.size(), first = rank - (int64_t)axes.size(), cols = 1;
  bool trailing = !axes.empty();
  for (size_t i = 0; i < axes.size(); ++i) trailing &= axes[i] == first + (int64_t)i;
  for (int64_t a = std::max<int64_t>(first, 0); a < rank; ++a) cols *= xs[a];
  auto perColumn = [&](Value v) {
    if (!v) return true;
    auto vs = cast<ShapedType>(v.getType()).getShape();
    if (ShapedType::getNumElements(vs) != cols) return false;
    for (int64_t i = 0; i < std::min<int64_t>(vs.size(), rank - first); ++i)
      if (vs[vs.size() - 1 - i] != xs[rank - 1 - i]) return false;
    return true;
  };
  if (trailing && cols > 0 && !portableOp(op) && perColumn(op.getScale()) && perColumn(op.getBias())) {
    Value bias = op.getBias() ? ptr(buf(op.getBias())) : b.create<arith::ConstantIndexOp>(loc, 0).getResult();
    call("kiln_rt_layernorm", {ptr(buf(op.getInput())), ptr(buf(op.getScale())), bias, ptr(dest(op.getResult())),
                               ci(ShapedType::getNumElements(xs) / cols), ci(cols),
                               cf(op.getEpsilon().convertToFloat())});
    return success();
  }
  SmallVector<int64_t> keepShape(xs);
  int64_t n = 1;
  for (int64_t a : op.getAxes()) {
    n *= xs[a];
    keepShape[a] = 1;
  }
  Value in = buf(op.getInput());
  Value out = dest(op.getResult());
  Value mean = alloc(keepShape), var = alloc(keepShape);
  Value invN = cf(1.0 / n), eps = cf(op.getEpsilon().convertToFloat());
  reduceInto(in, mean, op.getAxes(), Combine::Sum,
             [](OpBuilder &, Location, Value x, ValueRange) { return x; });
  elementwise(ValueRange{mean}, mean, [&](OpBuilder &nb, Location l, ValueRange a) {
    return nb.create<arith::MulFOp>(l, a[0], invN).getResult();
  });
  reduceInto(in, var, op.getAxes(), Combine::Sum,
             [](OpBuilder &nb, Location l, Value x, ValueRange m) {
               Value d = nb.create<arith::SubFOp>(l, x, m[0]);
               return nb.create<arith::MulFOp>(l, d, d);
             },
             ValueRange{mean});
  // var <- 1 / sqrt(var / n + eps)
  elementwise(ValueRange{var}, var, [&](OpBuilder &nb, Location l, ValueRange a) {
    Value v = nb.create<arith::AddFOp>(l, nb.create<arith::MulFOp>(l, a[0], invN), eps);
    return nb.create<math::RsqrtOp>(l, v).getResult();
  });
  SmallVector<Value> ins{in, mean, var, buf(op.getScale())};
  if (op.getBias()) ins.push_back(buf(op.getBias()));
  bool hasBias = (bool)op.getBias();
  elementwise(ins, out, [&](OpBuilder &nb, Location l, ValueRange a) {
    Value y = nb.create<arith::MulFOp>(l, nb.create<arith::SubFOp>(l, a[0], a[1]), a[2]);
    y = nb.create<arith::MulFOp>(l, y, a[3]);
    if (hasBias) y = nb.create<arith::AddFOp>(l, y, a[4]);
    return y;
  });
  return success();
}

LogicalResult BufferLowering::lowerTrilu(TriluOp op) {
  auto ys = cast<ShapedType>(op.getType()).getShape();
  int64_t rank = ys.size();
  Value in = buf(op.getInput());
  Value out = dest(op.getResult());
  bool upper = op.getUpper();
  int64_t k = op.getK();
  b.create<linalg::GenericOp>(
      loc, ValueRange{in}, ValueRange{out},
      SmallVector<AffineMap>{b.getMultiDimIdentityMap(rank), b.getMultiDimIdentityMap(rank)},
      SmallVector<IterTy>(rank, IterTy::parallel), [&](OpBuilder &nb, Location l, ValueRange a) {
        Value i = nb.create<linalg::IndexOp>(l, rank - 2), j = nb.create<linalg::IndexOp>(l, rank - 1);
        Value d = nb.create<arith::SubIOp>(l, j, i);
        Value kv = nb.create<arith::ConstantIndexOp>(l, k);
        Value keep = nb.create<arith::CmpIOp>(l, upper ? arith::CmpIPredicate::sge : arith::CmpIPredicate::sle, d, kv);
        Value zero = typedConst(nb, l, a[0].getType(), 0.0);
        nb.create<linalg::YieldOp>(l, ValueRange{nb.create<arith::SelectOp>(l, keep, a[0], zero)});
      });
  return success();
}

LogicalResult BufferLowering::lowerCast(CastOp op) {
  Value out = dest(op.getResult());
  Type from = eltOf(op.getInput()), to = eltOf(op.getResult());
  elementwise(ValueRange{buf(op.getInput())}, out, [&](OpBuilder &nb, Location l, ValueRange a) {
    return castScalar(nb, l, a[0], from, to, op.getSaturate());
  });
  return success();
}

Value BufferLowering::castScalar(OpBuilder &nb, Location l, Value x, Type from, Type to, bool saturate) {
  // `from` and `to` are the kiln element types (they say whether an
  // integer is unsigned); the scalars are signless.
  bool fromU = from.isUnsignedInteger() || from.isInteger(1), toU = to.isUnsignedInteger();
  if (isFloat8(from)) { // decode to f32, then on as from f32
    if (from == to) return x;
    return castScalar(nb, l, float8ToF32(nb, l, x, from), nb.getF32Type(), to, saturate);
  }
  if (isFloat8(to)) { // to f32 first (exact from f16/bf16), then encode
    Value f = castScalar(nb, l, x, from, nb.getF32Type(), saturate);
    return f32ToFloat8(nb, l, f, to, saturate);
  }
  from = storageType(from);
  to = storageType(to);
  if (from == to) return x;
  auto fromF = dyn_cast<FloatType>(from), toF = dyn_cast<FloatType>(to);
  if (to.isInteger(1)) { // anything -> bool: x != 0
    Value zero = typedConst(nb, l, from, 0);
    if (fromF) return nb.create<arith::CmpFOp>(l, arith::CmpFPredicate::UNE, x, zero);
    return nb.create<arith::CmpIOp>(l, arith::CmpIPredicate::ne, x, zero);
  }
  if (fromF && toF) {
    if (fromF.getWidth() == toF.getWidth()) // f16 <-> bf16: through f32
      return nb.create<arith::TruncFOp>(l, to, nb.create<arith::ExtFOp>(l, nb.getF32Type(), x));
    return fromF.getWidth() < toF.getWidth() ? nb.create<arith::ExtFOp>(l, to, x).getResult()
                                             : nb.create<arith::TruncFOp>(l, to, x).getResult();
  }
  if (fromF) {
    // Narrow floats convert through float32 (LLVM has no direct half <-> int).
    if (fromF.getWidth() < 32) x = nb.create<arith::ExtFOp>(l, nb.getF32Type(), x);
    return toU ? nb.create<arith::FPToUIOp>(l, to, x).getResult()
               : nb.create<arith::FPToSIOp>(l, to, x).getResult();
  }
  if (toF) {
    Type mid = toF.getWidth() < 32 ? Type(nb.getF32Type()) : to;
    Value f = fromU ? nb.create<arith::UIToFPOp>(l, mid, x).getResult()
                    : nb.create<arith::SIToFPOp>(l, mid, x).getResult();
    return mid == to ? f : nb.create<arith::TruncFOp>(l, to, f).getResult();
  }
  unsigned fw = from.getIntOrFloatBitWidth(), tw = to.getIntOrFloatBitWidth();
  if (fw == tw) return x; // i8 <-> ui8: the same bits
  if (fw < tw) return fromU ? nb.create<arith::ExtUIOp>(l, to, x).getResult()
                            : nb.create<arith::ExtSIOp>(l, to, x).getResult();
  return nb.create<arith::TruncIOp>(l, to, x);
}

/// An index loaded from a tensor as `index`: negative counts from the end,
/// then clamped into [0, n) so a bad index never reads outside the buffer.
static Value normalizedIndex(OpBuilder &nb, Location l, Value raw, int64_t n) {
  Value i = nb.create<arith::IndexCastOp>(l, nb.getIndexType(), raw);
  Value zero = nb.create<arith::ConstantIndexOp>(l, 0);
  Value isNeg = nb.create<arith::CmpIOp>(l, arith::CmpIPredicate::slt, i, zero);
  i = nb.create<arith::SelectOp>(l, isNeg, nb.create<arith::AddIOp>(l, i, nb.create<arith::ConstantIndexOp>(l, n)), i);
  i = nb.create<arith::MaxSIOp>(l, i, zero);
  return nb.create<arith::MinSIOp>(l, i, nb.create<arith::ConstantIndexOp>(l, n - 1));
}

/// Resize: one loop nest over the output; per resized axis the taps'
/// indices and weights are loaded from the compile-time tables, then every
/// tap combination is accumulated (weights multiplied across axes).
LogicalResult BufferLowering::lowerResize(ResizeOp op) {
  auto ys = cast<ShapedType>(op.getType()).getShape();
  int64_t r = ys.size();
  auto axes = op.getAxes();
  bool weighted = op.getWeighted(), extrapolate = op.getExtrapolate();
  Value in = buf(op.getInput());
  SmallVector<Value> idxT, wT;
  SmallVector<int64_t> taps;
  for (size_t k = 0; k < axes.size(); ++k) {
    Value it = op.getTables()[weighted ? 2 * k : k];
    idxT.push_back(buf(it));
    if (weighted) wT.push_back(buf(op.getTables()[2 * k + 1]));
    taps.push_back(cast<ShapedType>(it.getType()).getShape()[1]);
  }
  Type et = eltOf(in);
  b.create<linalg::GenericOp>(
      loc, ValueRange{}, ValueRange{dest(op.getResult())}, SmallVector<AffineMap>{b.getMultiDimIdentityMap(r)},
      SmallVector<IterTy>(r, IterTy::parallel), [&](OpBuilder &nb, Location l, ValueRange) {
        SmallVector<Value> at;
        for (int64_t d = 0; d < r; ++d) at.push_back(nb.create<linalg::IndexOp>(l, d));
        Value zero = nb.create<arith::ConstantIndexOp>(l, 0);
        Value outside;
        SmallVector<SmallVector<Value>> idx(axes.size()), w(axes.size());
        for (size_t k = 0; k < axes.size(); ++k) {
          Value o = at[axes[k]];
          for (int64_t t = 0; t < taps[k]; ++t) {
            Value tc = nb.create<arith::ConstantIndexOp>(l, t);
            Value i = nb.create<arith::IndexCastOp>(l, nb.getIndexType(),
                                                    nb.create<memref::LoadOp>(l, idxT[k], ValueRange{o, tc}));
            if (extrapolate && t == 0) {
              Value out = nb.create<arith::CmpIOp>(l, arith::CmpIPredicate::slt, i, zero);
              outside = outside ? nb.create<arith::OrIOp>(l, outside, out) : out;
            }
            idx[k].push_back(nb.create<arith::MaxSIOp>(l, i, zero));
            if (weighted) w[k].push_back(nb.create<memref::LoadOp>(l, wT[k], ValueRange{o, tc}));
          }
        }
        // Every combination of taps, first axis slowest.
        Value acc;
        SmallVector<int64_t> pick(axes.size(), 0);
        while (true) {
          SmallVector<Value> coords(at);
          Value wp;
          for (size_t k = 0; k < axes.size(); ++k) {
            coords[axes[k]] = idx[k][pick[k]];
            if (weighted) wp = wp ? nb.create<arith::MulFOp>(l, wp, w[k][pick[k]]).getResult() : w[k][pick[k]];
          }
          Value v = nb.create<memref::LoadOp>(l, in, coords);
          if (wp) v = nb.create<arith::MulFOp>(l, v, wp);
          acc = acc ? nb.create<arith::AddFOp>(l, acc, v).getResult() : v;
          int64_t k = (int64_t)axes.size() - 1;
          while (k >= 0 && ++pick[k] == taps[k]) pick[k--] = 0;
          if (k < 0) break;
        }
        if (extrapolate)
          acc = nb.create<arith::SelectOp>(l, outside, typedConst(nb, l, et, op.getExtrapolationValue().convertToDouble()), acc);
        nb.create<linalg::YieldOp>(l, ValueRange{acc});
      });
  return success();
}

/// A sequential scf.for nest over `shape` (dims in `skip` left out), for the
/// ops whose iterations depend on each other (scatter, scans, selection).
static void loopNest(OpBuilder &b, Location loc, ArrayRef<int64_t> shape, std::optional<int64_t> skip,
                     function_ref<void(OpBuilder &, Location, ValueRange)> body) {
  SmallVector<Value> lbs, ubs, steps;
  for (int64_t d = 0; d < (int64_t)shape.size(); ++d) {
    if (skip && d == *skip) continue;
    lbs.push_back(b.create<arith::ConstantIndexOp>(loc, 0));
    ubs.push_back(b.create<arith::ConstantIndexOp>(loc, shape[d]));
    steps.push_back(b.create<arith::ConstantIndexOp>(loc, 1));
  }
  scf::buildLoopNest(b, loc, lbs, ubs, steps, body);
}

/// GatherND: out[b..., i..., r...] = data[b..., indices[b..., i..., :], r...].
LogicalResult BufferLowering::lowerGatherND(GatherNDOp op) {
  auto ds = cast<ShapedType>(op.getData().getType()).getShape();
  auto is = cast<ShapedType>(op.getIndices().getType()).getShape();
  int64_t r = cast<ShapedType>(op.getType()).getRank(), bd = op.getBatchDims();
  int64_t q = is.size(), k = is.back();
  Value data = buf(op.getData()), idx = buf(op.getIndices());
  b.create<linalg::GenericOp>(
      loc, ValueRange{}, ValueRange{dest(op.getResult())}, SmallVector<AffineMap>{b.getMultiDimIdentityMap(r)},
      SmallVector<IterTy>(r, IterTy::parallel), [&](OpBuilder &nb, Location l, ValueRange) {
        SmallVector<Value> o;
        for (int64_t d = 0; d < r; ++d) o.push_back(nb.create<linalg::IndexOp>(l, d));
        // Output dims: batch (bd), index dims (q - 1 - bd), then the rest.
        SmallVector<Value> ic(o.begin(), o.begin() + (q - 1)), at(o.begin(), o.begin() + bd);
        ic.push_back(Value());
        for (int64_t j = 0; j < k; ++j) {
          ic.back() = nb.create<arith::ConstantIndexOp>(l, j);
          at.push_back(normalizedIndex(nb, l, nb.create<memref::LoadOp>(l, idx, ic), ds[bd + j]));
        }
        at.append(o.begin() + (q - 1), o.end());
        nb.create<linalg::YieldOp>(l, ValueRange{nb.create<memref::LoadOp>(l, data, at)});
      });
  return success();
}

/// ScatterElements (axis) and ScatterND (no axis): copy data to the result,
/// then visit every update in order and write or combine it in place.
LogicalResult BufferLowering::lowerScatter(Operation *op, Value dataV, Value indicesV, Value updatesV,
                                           StringRef reduction, std::optional<int64_t> axis) {
  auto ds = cast<ShapedType>(dataV.getType()).getShape();
  auto is = cast<ShapedType>(indicesV.getType()).getShape();
  auto us = cast<ShapedType>(updatesV.getType()).getShape();
  Value out = dest(op->getResult(0)), idx = buf(indicesV), upd = buf(updatesV);
  b.create<memref::CopyOp>(loc, buf(dataV), out);
  loopNest(b, loc, us, std::nullopt, [&](OpBuilder &nb, Location l, ValueRange iv) {
    SmallVector<Value> at;
    if (axis) {
      at.assign(iv.begin(), iv.end());
      at[*axis] = normalizedIndex(nb, l, nb.create<memref::LoadOp>(l, idx, iv), ds[*axis]);
    } else {
      int64_t q = is.size(), k = is.back();
      SmallVector<Value> ic(iv.begin(), iv.begin() + (q - 1));
      ic.push_back(Value());
      for (int64_t j = 0; j < k; ++j) {
        ic.back() = nb.create<arith::ConstantIndexOp>(l, j);
        at.push_back(normalizedIndex(nb, l, nb.create<memref::LoadOp>(l, idx, ic), ds[j]));
      }
      at.append(iv.begin() + (q - 1), iv.end());
    }
    Value v = nb.create<memref::LoadOp>(l, upd, iv);
    if (reduction != "none") {
      Value cur = nb.create<memref::LoadOp>(l, out, at);
      bool isF = isa<FloatType>(v.getType());
      if (reduction == "add") v = isF ? (Value)nb.create<arith::AddFOp>(l, cur, v) : nb.create<arith::AddIOp>(l, cur, v);
      else if (reduction == "mul") v = isF ? (Value)nb.create<arith::MulFOp>(l, cur, v) : nb.create<arith::MulIOp>(l, cur, v);
      else if (reduction == "max") v = isF ? (Value)nb.create<arith::MaximumFOp>(l, cur, v) : nb.create<arith::MaxSIOp>(l, cur, v);
      else v = isF ? (Value)nb.create<arith::MinimumFOp>(l, cur, v) : nb.create<arith::MinSIOp>(l, cur, v);
    }
    nb.create<memref::StoreOp>(l, v, out, at);
  });
  return success();
}

/// CumSum: a loop nest over the other dims, then a sequential loop along
/// the axis carrying the running sum.
LogicalResult BufferLowering::lowerCumSum(CumSumOp op) {
  auto xs = cast<ShapedType>(op.getInput().getType()).getShape();
  int64_t axis = op.getAxis(), n = xs[axis];
  bool excl = op.getExclusive(), rev = op.getReverse();
  Value in = buf(op.getInput()), out = dest(op.getResult());
  Type et = eltOf(in);
  loopNest(b, loc, xs, axis, [&](OpBuilder &nb, Location l, ValueRange iv) {
    Value c0 = nb.create<arith::ConstantIndexOp>(l, 0), c1 = nb.create<arith::ConstantIndexOp>(l, 1);
    Value cn = nb.create<arith::ConstantIndexOp>(l, n), last = nb.create<arith::ConstantIndexOp>(l, n - 1);
    Value zero = typedConst(nb, l, et, 0);
    nb.create<scf::ForOp>(l, c0, cn, c1, ValueRange{zero}, [&](OpBuilder &fb, Location fl, Value i, ValueRange acc) {
      Value j = rev ? fb.create<arith::SubIOp>(fl, last, i).getResult() : i;
      SmallVector<Value> at(iv.begin(), iv.end());
      at.insert(at.begin() + axis, j);
      Value x = fb.create<memref::LoadOp>(fl, in, at);
      bool isF = isa<FloatType>(et);
      Value next = isF ? (Value)fb.create<arith::AddFOp>(fl, acc[0], x) : fb.create<arith::AddIOp>(fl, acc[0], x);
      fb.create<memref::StoreOp>(fl, excl ? acc[0] : next, out, at);
      fb.create<scf::YieldOp>(fl, ValueRange{next});
    });
  });
  return success();
}

/// GridSample, following the ONNX reference: per output element and
/// spatial axis, denormalise the grid coordinate, fix it up for border or
/// reflection padding, then interpolate over the taps of every axis
/// (1 nearest, 2 linear, 4 cubic), reading 0 outside for zeros padding.
LogicalResult BufferLowering::lowerGridSample(GridSampleOp op) {
  auto xs = cast<ShapedType>(op.getInput().getType()).getShape();
  auto ys = cast<ShapedType>(op.getType()).getShape();
  int64_t r = ys.size(), k = r - 2;
  StringRef mode = op.getMode(), pad = op.getPaddingMode();
  bool align = op.getAlignCorners();
  Value in = buf(op.getInput()), grid = buf(op.getGrid());
  b.create<linalg::GenericOp>(
      loc, ValueRange{}, ValueRange{dest(op.getResult())}, SmallVector<AffineMap>{b.getMultiDimIdentityMap(r)},
      SmallVector<IterTy>(r, IterTy::parallel), [&](OpBuilder &nb, Location l, ValueRange) {
        auto cf = [&](double v) { return nb.create<arith::ConstantOp>(l, nb.getF32FloatAttr((float)v)).getResult(); };
        auto add = [&](Value a, Value c) { return nb.create<arith::AddFOp>(l, a, c).getResult(); };
        auto sub = [&](Value a, Value c) { return nb.create<arith::SubFOp>(l, a, c).getResult(); };
        auto mul = [&](Value a, Value c) { return nb.create<arith::MulFOp>(l, a, c).getResult(); };
        auto lt = [&](Value a, Value c) { return nb.create<arith::CmpFOp>(l, arith::CmpFPredicate::OLT, a, c).getResult(); };
        auto sel = [&](Value c, Value a, Value e) { return nb.create<arith::SelectOp>(l, c, a, e).getResult(); };
        // The reference's reflection of x into [lo, hi].
        auto reflect = [&](Value x, double lo, double hi) {
          Value vlo = cf(lo), vhi = cf(hi), rng = cf(hi - lo), two = cf(2);
          auto fold = [&](Value dx, Value near, Value far, bool down) {
            Value n = nb.create<math::FloorOp>(l, nb.create<arith::DivFOp>(l, dx, rng));
            Value rem = sub(dx, mul(n, rng));
            Value even = nb.create<arith::CmpFOp>(l, arith::CmpFPredicate::OEQ, nb.create<arith::RemFOp>(l, n, two), cf(0));
            Value a = down ? add(near, rem) : sub(near, rem), c = down ? sub(far, rem) : add(far, rem);
            return sel(even, a, c);
          };
          Value below = fold(sub(vlo, x), vlo, vhi, true), above = fold(sub(x, vhi), vhi, vlo, false);
          return sel(lt(x, vlo), below, sel(lt(vhi, x), above, x));
        };
        SmallVector<Value> o;
        for (int64_t d = 0; d < r; ++d) o.push_back(nb.create<linalg::IndexOp>(l, d));
        // Per axis: the taps' integer positions (as f32) and weights.
        SmallVector<SmallVector<Value>> pos(k), w(k);
        for (int64_t i = 0; i < k; ++i) {
          int64_t dim = xs[2 + i];
          double lo = align ? 0 : -0.5, hi = align ? dim - 1 : dim - 0.5;
          SmallVector<Value> gi{o[0]};
          gi.append(o.begin() + 2, o.end());
          gi.push_back(nb.create<arith::ConstantIndexOp>(l, k - 1 - i));
          Value nx = nb.create<memref::LoadOp>(l, grid, gi);
          Value x = align ? mul(mul(add(nx, cf(1)), cf(0.5)), cf(dim - 1))
                          : mul(sub(mul(add(nx, cf(1)), cf(dim)), cf(1)), cf(0.5));
          if (mode == "nearest") x = nb.create<math::RoundEvenOp>(l, x);
          Value outside = nb.create<arith::OrIOp>(l, lt(x, cf(lo)), lt(cf(hi), x));
          if (pad == "border")
            x = sel(outside, nb.create<arith::MinimumFOp>(l, nb.create<arith::MaximumFOp>(l, x, cf(0)), cf(dim - 1)), x);
          else if (pad == "reflection")
            x = reflect(x, lo, hi);
          if (mode == "nearest") {
            pos[i].push_back(x);
            continue;
          }
          Value x0 = nb.create<math::FloorOp>(l, x), t = sub(x, x0);
          if (mode == "linear") {
            pos[i] = {x0, add(x0, cf(1))};
            w[i] = {sub(cf(1), t), t};
          } else {
            double A = -0.75;
            auto c0 = [&](Value v) { // |v| in [1, 2)
              return sub(mul(add(mul(sub(mul(cf(A), v), cf(5 * A)), v), cf(8 * A)), v), cf(4 * A));
            };
            auto c1 = [&](Value v) { // |v| <= 1
              return add(mul(mul(sub(mul(cf(A + 2), v), cf(A + 3)), v), v), cf(1));
            };
            Value one = cf(1);
            pos[i] = {sub(x0, one), x0, add(x0, one), add(x0, cf(2))};
            w[i] = {c0(add(t, one)), c1(t), c1(sub(one, t)), c0(sub(cf(2), t))};
          }
        }
        // Every tap combination; a tap's value follows the padding mode.
        Value acc;
        SmallVector<int64_t> pick(k, 0);
        while (true) {
          SmallVector<Value> at{o[0], o[1]};
          Value valid, wp;
          for (int64_t i = 0; i < k; ++i) {
            int64_t dim = xs[2 + i];
            Value p = pos[i][pick[i]];
            if (pad == "border") {
              p = nb.create<arith::MinimumFOp>(l, nb.create<arith::MaximumFOp>(l, p, cf(0)), cf(dim - 1));
            } else if (pad == "reflection" && mode != "nearest") {
              double lo = align ? 0 : -0.5, hi = align ? dim - 1 : dim - 0.5;
              p = reflect(p, lo, hi);
            }
            // float -> index truncates toward zero, as int() does; clamp so
            // that the load stays in bounds (zeros padding masks it).
            Value ip = nb.create<arith::FPToSIOp>(l, nb.getI64Type(),
                                                   nb.create<arith::MinimumFOp>(l, nb.create<arith::MaximumFOp>(l, p, cf(-2)), cf(dim + 2)));
            Value ok = nb.create<arith::AndIOp>(
                l, nb.create<arith::CmpIOp>(l, arith::CmpIPredicate::sge, ip, nb.create<arith::ConstantIntOp>(l, 0, 64)),
                nb.create<arith::CmpIOp>(l, arith::CmpIPredicate::slt, ip, nb.create<arith::ConstantIntOp>(l, dim, 64)));
            valid = valid ? nb.create<arith::AndIOp>(l, valid, ok).getResult() : ok;
            Value idx = nb.create<arith::IndexCastOp>(l, nb.getIndexType(), ip);
            idx = nb.create<arith::MaxSIOp>(l, idx, nb.create<arith::ConstantIndexOp>(l, 0));
            idx = nb.create<arith::MinSIOp>(l, idx, nb.create<arith::ConstantIndexOp>(l, dim - 1));
            at.push_back(idx);
            if (mode != "nearest") wp = wp ? mul(wp, w[i][pick[i]]) : w[i][pick[i]];
          }
          Value v = nb.create<memref::LoadOp>(l, in, at);
          if (pad == "zeros") v = sel(valid, v, cf(0));
          if (wp) v = mul(v, wp);
          acc = acc ? add(acc, v) : v;
          int64_t i = k - 1;
          while (i >= 0 && ++pick[i] == (int64_t)pos[i].size()) pick[i--] = 0;
          if (i < 0) break;
        }
        nb.create<linalg::YieldOp>(l, ValueRange{acc});
      });
  return success();
}

/// TopK: every element counts how many elements of its slice come before
/// it (greater, or equal at a lower index; reversed for smallest); the
/// elements ranked below k are stored at their rank.
LogicalResult BufferLowering::lowerTopK(TopKOp op) {
  auto xs = cast<ShapedType>(op.getInput().getType()).getShape();
  int64_t axis = op.getAxis();
  int64_t k = cast<ShapedType>(op.getValues().getType()).getShape()[axis];
  bool largest = op.getLargest();
  Value in = buf(op.getInput()), vals = dest(op.getValues()), idxs = dest(op.getIndices());
  Type et = eltOf(in);
  bool isF = isa<FloatType>(et);
  loopNest(b, loc, xs, std::nullopt, [&](OpBuilder &nb, Location l, ValueRange iv) {
    Value vi = nb.create<memref::LoadOp>(l, in, iv);
    Value i = iv[axis];
    Value c0 = nb.create<arith::ConstantIndexOp>(l, 0), c1 = nb.create<arith::ConstantIndexOp>(l, 1);
    auto count = nb.create<scf::ForOp>(
        l, c0, nb.create<arith::ConstantIndexOp>(l, xs[axis]), c1, ValueRange{c0},
        [&](OpBuilder &fb, Location fl, Value e, ValueRange acc) {
          SmallVector<Value> at(iv.begin(), iv.end());
          at[axis] = e;
          Value ve = fb.create<memref::LoadOp>(fl, in, at);
          Value better = isF ? fb.create<arith::CmpFOp>(fl, largest ? arith::CmpFPredicate::OGT : arith::CmpFPredicate::OLT, ve, vi).getResult()
                             : fb.create<arith::CmpIOp>(fl, largest ? arith::CmpIPredicate::sgt : arith::CmpIPredicate::slt, ve, vi).getResult();
          Value same = isF ? fb.create<arith::CmpFOp>(fl, arith::CmpFPredicate::OEQ, ve, vi).getResult()
                           : fb.create<arith::CmpIOp>(fl, arith::CmpIPredicate::eq, ve, vi).getResult();
          Value earlier = fb.create<arith::CmpIOp>(fl, arith::CmpIPredicate::ult, e, i);
          Value before = fb.create<arith::OrIOp>(fl, better, fb.create<arith::AndIOp>(fl, same, earlier));
          Value next = fb.create<arith::SelectOp>(fl, before, fb.create<arith::AddIOp>(fl, acc[0], c1), acc[0]);
          fb.create<scf::YieldOp>(fl, ValueRange{next});
        });
    Value rank = count.getResult(0);
    Value inTop = nb.create<arith::CmpIOp>(l, arith::CmpIPredicate::ult, rank, nb.create<arith::ConstantIndexOp>(l, k));
    nb.create<scf::IfOp>(l, inTop, [&](OpBuilder &tb, Location tl) {
      SmallVector<Value> at(iv.begin(), iv.end());
      at[axis] = rank;
      tb.create<memref::StoreOp>(tl, vi, vals, at);
      tb.create<memref::StoreOp>(tl, tb.create<arith::IndexCastOp>(tl, tb.getI64Type(), i), idxs, at);
      tb.create<scf::YieldOp>(tl);
    });
  });
  return success();
}

/// Einsum: zero the result, then one linalg.generic with the importer's
/// maps accumulating the product of the operands.
LogicalResult BufferLowering::lowerEinsum(EinsumOp op) {
  Value out = dest(op.getResult());
  Type et = eltOf(out);
  bool isF = isa<FloatType>(et);
  b.create<linalg::FillOp>(loc, ValueRange{typedConst(b, loc, et, 0)}, ValueRange{out});
  SmallVector<Value> ins;
  for (Value v : op.getInputs()) ins.push_back(buf(v));
  SmallVector<AffineMap> maps;
  for (Attribute a : op.getIndexingMaps()) maps.push_back(cast<AffineMapAttr>(a).getValue());
  SmallVector<IterTy> iters;
  for (bool r : op.getReductionDims()) iters.push_back(r ? IterTy::reduction : IterTy::parallel);
  b.create<linalg::GenericOp>(loc, ValueRange(ins), ValueRange{out}, maps, iters,
                              [&](OpBuilder &nb, Location l, ValueRange a) {
                                Value p = a[0];
                                for (size_t i = 1; i + 1 < a.size(); ++i)
                                  p = isF ? nb.create<arith::MulFOp>(l, p, a[i]).getResult()
                                          : nb.create<arith::MulIOp>(l, p, a[i]).getResult();
                                Value s = isF ? nb.create<arith::AddFOp>(l, a.back(), p).getResult()
                                              : nb.create<arith::AddIOp>(l, a.back(), p).getResult();
                                nb.create<linalg::YieldOp>(l, ValueRange{s});
                              });
  return success();
}

LogicalResult BufferLowering::lowerGather(GatherOp op) {
  auto ds = cast<ShapedType>(op.getData().getType()).getShape();
  auto is = cast<ShapedType>(op.getIndices().getType()).getShape();
  auto ys = cast<ShapedType>(op.getType()).getShape();
  int64_t axis = op.getAxis(), r = ys.size(), ir = is.size();
  Value data = buf(op.getData());
  Value out = dest(op.getResult());
  SmallVector<AffineExpr> idxExprs;
  for (int64_t i = 0; i < ir; ++i) idxExprs.push_back(b.getAffineDimExpr(axis + i));
  SmallVector<AffineMap> maps{AffineMap::get(r, 0, idxExprs, b.getContext()), b.getMultiDimIdentityMap(r)};
  b.create<linalg::GenericOp>(
      loc, ValueRange{buf(op.getIndices())}, ValueRange{out}, maps, SmallVector<IterTy>(r, IterTy::parallel),
      [&](OpBuilder &nb, Location l, ValueRange a) {
        // Negative indices count from the end; others are clamped into range
        // so a bad index can never read outside the buffer.
        Value i = normalizedIndex(nb, l, a[0], ds[axis]);
        SmallVector<Value> at;
        for (int64_t d = 0; d < axis; ++d) at.push_back(nb.create<linalg::IndexOp>(l, d));
        at.push_back(i);
        for (int64_t d = axis + 1; d < (int64_t)ds.size(); ++d)
          at.push_back(nb.create<linalg::IndexOp>(l, d - 1 + ir));
        nb.create<linalg::YieldOp>(l, ValueRange{nb.create<memref::LoadOp>(l, data, at)});
      });
  return success();
}

LogicalResult BufferLowering::lowerGatherElements(GatherElementsOp op) {
  auto ds = cast<ShapedType>(op.getData().getType()).getShape();
  int64_t axis = op.getAxis(), r = ds.size();
  Value data = buf(op.getData());
  SmallVector<AffineMap> maps(2, b.getMultiDimIdentityMap(r));
  b.create<linalg::GenericOp>(
      loc, ValueRange{buf(op.getIndices())}, ValueRange{dest(op.getResult())}, maps,
      SmallVector<IterTy>(r, IterTy::parallel), [&](OpBuilder &nb, Location l, ValueRange a) {
        SmallVector<Value> at;
        for (int64_t d = 0; d < r; ++d)
          at.push_back(d == axis ? normalizedIndex(nb, l, a[0], ds[axis]) : nb.create<linalg::IndexOp>(l, d));
        nb.create<linalg::YieldOp>(l, ValueRange{nb.create<memref::LoadOp>(l, data, at)});
      });
  return success();
}

LogicalResult BufferLowering::lowerArg(Operation *op, int64_t axis, bool selectLast, bool isMax) {
  Value inV = op->getOperand(0);
  auto xs = cast<ShapedType>(inV.getType()).getShape();
  SmallVector<int64_t> keepShape(xs);
  keepShape[axis] = 1;
  Value in = buf(inV);
  Value out = dest(op->getResult(0));
  Value acc = viewAs(out, keepShape);
  Type et = eltOf(in);
  // Pass 1: the extreme value along the axis.
  Value ext = alloc(keepShape, et);
  double lim = isa<FloatType>(et) ? std::numeric_limits<double>::infinity()
                                  : (double)(et.getIntOrFloatBitWidth() == 64 ? INT64_MAX : INT32_MAX);
  b.create<linalg::FillOp>(loc, ValueRange{typedConst(b, loc, et, isMax ? -lim : lim)}, ValueRange{ext});
  SmallVector<AffineExpr> keepExprs;
  SmallVector<IterTy> iters;
  for (size_t i = 0; i < xs.size(); ++i) {
    keepExprs.push_back((int64_t)i == axis ? b.getAffineConstantExpr(0) : b.getAffineDimExpr(i));
    iters.push_back((int64_t)i == axis ? IterTy::reduction : IterTy::parallel);
  }
  AffineMap keep = AffineMap::get(xs.size(), 0, keepExprs, b.getContext());
  AffineMap id = b.getMultiDimIdentityMap(xs.size());
  bool isF = isa<FloatType>(et);
  b.create<linalg::GenericOp>(loc, ValueRange{in}, ValueRange{ext}, SmallVector<AffineMap>{id, keep}, iters,
                              [&](OpBuilder &nb, Location l, ValueRange a) {
                                Value r;
                                if (isF) r = isMax ? nb.create<arith::MaxNumFOp>(l, a[0], a[1]).getResult()
                                                   : nb.create<arith::MinNumFOp>(l, a[0], a[1]).getResult();
                                else r = isMax ? nb.create<arith::MaxSIOp>(l, a[0], a[1]).getResult()
                                               : nb.create<arith::MinSIOp>(l, a[0], a[1]).getResult();
                                nb.create<linalg::YieldOp>(l, r);
                              });
  // Pass 2: the first (or last) index holding it.
  b.create<linalg::FillOp>(loc, ValueRange{typedConst(b, loc, b.getI64Type(), selectLast ? -1 : xs[axis])},
                           ValueRange{acc});
  b.create<linalg::GenericOp>(
      loc, ValueRange{in, ext}, ValueRange{acc}, SmallVector<AffineMap>{id, keep, keep}, iters,
      [&](OpBuilder &nb, Location l, ValueRange a) {
        Value eq = isF ? nb.create<arith::CmpFOp>(l, arith::CmpFPredicate::OEQ, a[0], a[1]).getResult()
                       : nb.create<arith::CmpIOp>(l, arith::CmpIPredicate::eq, a[0], a[1]).getResult();
        Value i = nb.create<arith::IndexCastOp>(l, nb.getI64Type(), nb.create<linalg::IndexOp>(l, axis));
        Value best = selectLast ? nb.create<arith::MaxSIOp>(l, a[2], i).getResult()
                                : nb.create<arith::MinSIOp>(l, a[2], i).getResult();
        nb.create<linalg::YieldOp>(l, ValueRange{nb.create<arith::SelectOp>(l, eq, best, a[2])});
      });
  return success();
}

LogicalResult BufferLowering::lowerTile(TileOp op) {
  auto xs = cast<ShapedType>(op.getInput().getType()).getShape();
  auto ys = cast<ShapedType>(op.getType()).getShape();
  SmallVector<AffineExpr> exprs;
  for (size_t i = 0; i < ys.size(); ++i)
    exprs.push_back(xs[i] == ys[i] ? b.getAffineDimExpr(i) : b.getAffineDimExpr(i) % xs[i]);
  Value out = dest(op.getResult());
  b.create<linalg::GenericOp>(loc, ValueRange{buf(op.getInput())}, ValueRange{out},
                              SmallVector<AffineMap>{AffineMap::get(ys.size(), 0, exprs, b.getContext()),
                                                     b.getMultiDimIdentityMap(ys.size())},
                              SmallVector<IterTy>(ys.size(), IterTy::parallel),
                              [](OpBuilder &nb, Location l, ValueRange a) {
                                nb.create<linalg::YieldOp>(l, a[0]);
                              });
  return success();
}

/// softmax = exp(x - m) / sum(exp(x - m)); log-softmax = (x - m) - log(sum(exp(x - m)))
/// with m the max along the axis.
LogicalResult BufferLowering::lowerSoftmax(Operation *op, int64_t axis, bool log) {
  auto xs = cast<ShapedType>(op->getResult(0).getType()).getShape();
  if (axis == (int64_t)xs.size() - 1 && !portableOp(op)) {
    // Over the last axis: the runtime's row kernel, parallel over rows.
    int64_t cols = xs.back(), rows = cols ? ShapedType::getNumElements(xs) / cols : 0;
    call("kiln_rt_softmax",
         {ptr(buf(op->getOperand(0))), ptr(dest(op->getResult(0))), ci(rows), ci(cols), ci(log ? 1 : 0)});
    return success();
  }
  SmallVector<int64_t> red(xs);
  red[axis] = 1;
  Value in = buf(op->getOperand(0));
  Value out = dest(op->getResult(0));
  auto id = [](OpBuilder &, Location, Value x, ValueRange) { return x; };
  Value mx = alloc(red);
  reduceInto(in, mx, {axis}, Combine::Max, id);
  elementwise(ValueRange{in, mx}, out, [&](OpBuilder &nb, Location l, ValueRange a) -> Value {
    Value d = nb.create<arith::SubFOp>(l, a[0], a[1]);
    return log ? d : nb.create<math::ExpOp>(l, d).getResult();
  });
  Value sum = alloc(red);
  if (log)
    reduceInto(out, sum, {axis}, Combine::Sum, [](OpBuilder &nb, Location l, Value x, ValueRange) {
      return nb.create<math::ExpOp>(l, x);
    });
  else
    reduceInto(out, sum, {axis}, Combine::Sum, id);
  elementwise(ValueRange{out, sum}, out, [&](OpBuilder &nb, Location l, ValueRange a) -> Value {
    if (log)
      return nb.create<arith::SubFOp>(l, a[0], nb.create<math::LogOp>(l, a[1]));
    return nb.create<arith::DivFOp>(l, a[0], a[1]);
  });
  return success();
}

LogicalResult BufferLowering::lowerBatchNorm(BatchNormOp op) {
  auto xs = cast<ShapedType>(op.getType()).getShape();
  int64_t C = xs[1];
  float eps = op.getEpsilon().convertToFloat();
  SmallVector<int64_t> cshape(xs.size(), 1);
  cshape[1] = C;
  auto consts = [&](Value v) -> std::optional<std::vector<float>> {
    // Inside a fusion block, look through the region argument to the input.
    if (auto arg = dyn_cast<BlockArgument>(v))
      if (auto f = dyn_cast<FusedOp>(arg.getOwner()->getParentOp()))
        v = f.getInputs()[arg.getArgNumber()];
    auto c = v.getDefiningOp<ConstantOp>();
    if (!c) return std::nullopt;
    auto vals = c.getValue().tryGetValues<float>();
    if (!vals) return std::nullopt;
    return std::vector<float>(vals->begin(), vals->end());
  };
  auto sc = consts(op.getScale()), bi = consts(op.getBias()), mean = consts(op.getMean()),
       var = consts(op.getVar());
  Value in = buf(op.getInput());
  Value out = dest(op.getResult());
  if (sc && bi && mean && var) {
    // Constant statistics: y = x * a + c with a, c computed now.
    std::vector<float> a(C), c(C);
    for (int64_t i = 0; i < C; ++i) {
      a[i] = (*sc)[i] / std::sqrt((*var)[i] + eps);
      c[i] = (*bi)[i] - (*mean)[i] * a[i];
    }
    auto t = RankedTensorType::get(cshape, f32());
    Value ga = globalConstant(DenseElementsAttr::get(t, ArrayRef<float>(a)));
    Value gc = globalConstant(DenseElementsAttr::get(t, ArrayRef<float>(c)));
    elementwise(ValueRange{in, ga, gc}, out, [&](OpBuilder &nb, Location l, ValueRange v) {
      return nb.create<arith::AddFOp>(l, nb.create<arith::MulFOp>(l, v[0], v[1]), v[2]).getResult();
    });
    return success();
  }
  auto view = [&](Value v) { return viewAs(buf(v), cshape); };
  Value epsV = cf(eps);
  elementwise(ValueRange{in, view(op.getScale()), view(op.getBias()), view(op.getMean()),
                         view(op.getVar())},
              out, [&](OpBuilder &nb, Location l, ValueRange v) {
                Value den = nb.create<math::SqrtOp>(l, nb.create<arith::AddFOp>(l, v[4], epsV));
                Value n = nb.create<arith::SubFOp>(l, v[0], v[3]);
                Value r = nb.create<arith::MulFOp>(l, nb.create<arith::DivFOp>(l, n, den), v[1]);
                return nb.create<arith::AddFOp>(l, r, v[2]).getResult();
              });
  return success();
}

LogicalResult BufferLowering::lowerConcat(ConcatOp op) {
  Value out = dest(op.getResult());
  int64_t axis = op.getAxis();
  SmallVector<int64_t> offsets(cast<ShapedType>(op.getType()).getRank(), 0);
  for (Value in : op.getInputs()) {
    copyInto(buf(in), out, offsets);
    offsets[axis] += cast<ShapedType>(in.getType()).getDimSize(axis);
  }
  return success();
}

LogicalResult BufferLowering::lowerSlice(SliceOp op) {
  auto ys = cast<ShapedType>(op.getType()).getShape();
  auto st = op.getStarts(), sp = op.getSteps();
  Value in = buf(op.getInput());
  Value out = dest(op.getResult());
  if (llvm::all_of(sp, [](int64_t s) { return s > 0; })) {
    // Positive steps: a strided view of the input, copied.
    Value view = b.create<memref::SubViewOp>(loc, in, st, ys, sp);
    b.create<linalg::CopyOp>(loc, view, out);
    return success();
  }
  // Negative steps: each output element loads input[start + i * step]
  // (loop bounds come from the output alone).
  int64_t rank = ys.size();
  b.create<linalg::GenericOp>(
      loc, ValueRange{}, ValueRange{out}, SmallVector<AffineMap>{b.getMultiDimIdentityMap(rank)},
      SmallVector<IterTy>(rank, IterTy::parallel), [&](OpBuilder &nb, Location l, ValueRange) {
        SmallVector<Value> at;
        for (int64_t d = 0; d < rank; ++d) {
          Value i = nb.create<linalg::IndexOp>(l, d);
          Value scaled = nb.create<arith::MulIOp>(l, i, nb.create<arith::ConstantIndexOp>(l, sp[d]));
          at.push_back(nb.create<arith::AddIOp>(l, scaled, nb.create<arith::ConstantIndexOp>(l, st[d])));
        }
        nb.create<linalg::YieldOp>(l, ValueRange{nb.create<memref::LoadOp>(l, in, at)});
      });
  return success();
}

LogicalResult BufferLowering::lowerPad(PadOp op) {
  auto xs = cast<ShapedType>(op.getInput().getType()).getShape();
  auto ys = cast<ShapedType>(op.getType()).getShape();
  int64_t rank = xs.size();
  auto pads = op.getPads();
  Value in = buf(op.getInput());
  Value out = dest(op.getResult());
  if (op.getMode() == "constant") {
    b.create<linalg::FillOp>(loc, ValueRange{typedConst(b, loc, eltOf(out), op.getValue().convertToFloat())},
                             ValueRange{out});
    copyInto(in, out, pads.take_front(rank));
    return success();
  }
  bool reflect = op.getMode() == "reflect";
  // Gather form: each output element loads the input element its index maps to.
  b.create<linalg::GenericOp>(
      loc, ValueRange{}, ValueRange{out}, SmallVector<AffineMap>{b.getMultiDimIdentityMap(rank)},
      SmallVector<IterTy>(rank, IterTy::parallel), [&](OpBuilder &nb, Location l, ValueRange) {
        SmallVector<Value> idx;
        for (int64_t i = 0; i < rank; ++i) {
          Value o = nb.create<linalg::IndexOp>(l, i);
          Value lo = nb.create<arith::ConstantIndexOp>(l, pads[i]);
          Value n = nb.create<arith::ConstantIndexOp>(l, xs[i]);
          Value zero = nb.create<arith::ConstantIndexOp>(l, 0);
          Value one = nb.create<arith::ConstantIndexOp>(l, 1);
          Value j = nb.create<arith::SubIOp>(l, o, lo); // may be negative
          Value last = nb.create<arith::SubIOp>(l, n, one);
          if (reflect) {
            // j < 0 -> -j ; j > last -> 2*last - j
            Value negJ = nb.create<arith::SubIOp>(l, zero, j);
            Value isNeg = nb.create<arith::CmpIOp>(l, arith::CmpIPredicate::slt, j, zero);
            j = nb.create<arith::SelectOp>(l, isNeg, negJ, j);
            Value twoLast = nb.create<arith::AddIOp>(l, last, last);
            Value over = nb.create<arith::CmpIOp>(l, arith::CmpIPredicate::sgt, j, last);
            j = nb.create<arith::SelectOp>(l, over, nb.create<arith::SubIOp>(l, twoLast, j), j);
          } else {
            j = nb.create<arith::MaxSIOp>(l, j, zero);
            j = nb.create<arith::MinSIOp>(l, j, last);
          }
          idx.push_back(j);
        }
        Value v = nb.create<memref::LoadOp>(l, in, idx);
        nb.create<linalg::YieldOp>(l, v);
      });
  (void)ys;
  return success();
}


/// Index expressions of `in` (shape inShape) for a numpy broadcast into the
/// result index `idx` (shape outShape).
static SmallVector<AffineExpr> broadcastIndex(ArrayRef<AffineExpr> idx, ArrayRef<int64_t> inShape,
                                              ArrayRef<int64_t> outShape, MLIRContext *ctx) {
  SmallVector<AffineExpr> r;
  size_t off = outShape.size() - inShape.size();
  for (size_t i = 0; i < inShape.size(); ++i)
    r.push_back(inShape[i] == 1 && outShape[i + off] != 1 ? getAffineConstantExpr(0, ctx) : idx[i + off]);
  return r;
}

/// Index expressions of a Reshape's input for its result index: dims are
/// matched in groups with equal products, and only a group that really
/// changes is linearised and split again.
static SmallVector<AffineExpr> reshapeIndex(ArrayRef<AffineExpr> idx, ArrayRef<int64_t> inShape,
                                            ArrayRef<int64_t> outShape, unsigned nd, MLIRContext *ctx) {
  SmallVector<AffineExpr> r;
  // An empty tensor has no element to index (and its zero dims would divide
  // by zero below).
  if (llvm::is_contained(inShape, 0) || llvm::is_contained(outShape, 0))
    return SmallVector<AffineExpr>(inShape.size(), getAffineConstantExpr(0, ctx));
  size_t i = 0, o = 0;
  while (i < inShape.size() || o < outShape.size()) {
    size_t i0 = i, o0 = o;
    int64_t pi = 1, po = 1;
    if (i < inShape.size()) pi *= inShape[i++];
    if (o < outShape.size()) po *= outShape[o++];
    while (pi != po) {
      if (pi < po && i < inShape.size()) pi *= inShape[i++];
      else if (o < outShape.size()) po *= outShape[o++];
      else break;
    }
    AffineExpr lin = getAffineConstantExpr(0, ctx);
    for (size_t k = o0; k < o; ++k) lin = lin * outShape[k] + idx[k];
    int64_t stride = pi;
    for (size_t k = i0; k < i; ++k) {
      stride /= inShape[k];
      AffineExpr e = lin.floorDiv(stride);
      if (k > i0) e = e % inShape[k];
      r.push_back(simplifyAffineExpr(e, nd, 0));
    }
  }
  return r;
}

void BufferLowering::emitPointwise(Value outValue, Value outBuf, const DenseSet<Operation *> &inside) {
  MLIRContext *ctx = b.getContext();
  auto outShape = cast<ShapedType>(outValue.getType()).getShape();
  unsigned nd = outShape.size();
  SmallVector<AffineExpr> ident;
  for (unsigned d = 0; d < nd; ++d) ident.push_back(getAffineDimExpr(d, ctx));
  // Leaves: (value read from memory, its index map), in first-use order.
  SmallVector<std::pair<Value, AffineMap>> leaves;
  DenseMap<std::pair<Value, AffineMap>, unsigned> leafIndex;
  // Walks the composition; with `args` set, builds the body too.
  DenseMap<std::pair<Value, AffineMap>, Value> memo;
  std::function<Value(Value, ArrayRef<AffineExpr>, OpBuilder *, ValueRange)> at =
      [&](Value v, ArrayRef<AffineExpr> idx, OpBuilder *nb, ValueRange args) -> Value {
    AffineMap map = AffineMap::get(nd, 0, idx, ctx);
    auto key = std::make_pair(v, map);
    if (auto it = memo.find(key); it != memo.end()) return it->second;
    Operation *d = v.getDefiningOp();
    Value result;
    if (!d || !inside.count(d)) {
      auto [it, fresh] = leafIndex.try_emplace(key, leaves.size());
      if (fresh) leaves.push_back(key);
      result = nb ? args[it->second] : Value();
    } else {
      auto shapeOf = [](Value x) { return cast<ShapedType>(x.getType()).getShape(); };
      auto rs = shapeOf(d->getResult(0));
      SmallVector<Value> ops;
      auto operandAt = [&](unsigned k, ArrayRef<AffineExpr> e) { ops.push_back(at(d->getOperand(k), e, nb, args)); };
      if (auto t = dyn_cast<TransposeOp>(d)) {
        SmallVector<AffineExpr> in(idx.size());
        for (size_t k = 0; k < idx.size(); ++k) in[t.getPerm()[k]] = idx[k];
        operandAt(0, in);
        result = ops[0];
      } else if (auto r = dyn_cast<ReshapeOp>(d)) {
        operandAt(0, reshapeIndex(idx, shapeOf(r.getInput()), rs, nd, ctx));
        result = ops[0];
      } else if (auto sl = dyn_cast<SliceOp>(d)) {
        SmallVector<AffineExpr> in;
        for (size_t k = 0; k < idx.size(); ++k) in.push_back(idx[k] * sl.getSteps()[k] + sl.getStarts()[k]);
        operandAt(0, in);
        result = ops[0];
      } else {
        for (unsigned k = 0; k < d->getNumOperands(); ++k)
          operandAt(k, broadcastIndex(idx, shapeOf(d->getOperand(k)), rs, ctx));
        if (nb) {
          Location l = d->getLoc();
          if (isa<ExpandOp>(d)) result = ops[0];
          else if (isa<WhereOp>(d)) result = nb->create<arith::SelectOp>(l, ops[0], ops[1], ops[2]);
          else if (isa<CastOp>(d)) result = castScalar(*nb, l, ops[0], eltOf(d->getOperand(0)), eltOf(d->getResult(0)),
                                                         cast<CastOp>(d).getSaturate());
          else if (ops.size() == 1) result = unaryScalar(d, *nb, l, ops[0]);
          else result = binaryScalar(d, *nb, l, ops[0], ops[1]);
        }
      }
    }
    if (nb) memo[key] = result;
    return result;
  };
  at(outValue, ident, nullptr, {});
  SmallVector<Value> ins;
  SmallVector<AffineMap> maps;
  // (outShape: the loop extents, the output value's shape)
  for (auto &[v, m] : leaves) {
    // A Slice starting at 0 composes to a plain dim index, which linalg
    // takes as the operand's extent: read that part of the buffer through
    // a subview of the loop's extent instead.
    Value in = buf(v);
    auto mt = cast<MemRefType>(in.getType());
    SmallVector<int64_t> sizes(mt.getShape());
    bool narrowed = false;
    for (auto [r, e] : llvm::enumerate(m.getResults()))
      if (auto de = dyn_cast<AffineDimExpr>(e); de && sizes[r] != outShape[de.getPosition()]) {
        sizes[r] = outShape[de.getPosition()];
        narrowed = true;
      }
    if (narrowed)
      in = b.create<memref::SubViewOp>(loc, in, SmallVector<int64_t>(sizes.size(), 0), sizes,
                                       SmallVector<int64_t>(sizes.size(), 1));
    ins.push_back(in);
    maps.push_back(m);
  }
  maps.push_back(AffineMap::getMultiDimIdentityMap(nd, ctx));
  SmallVector<IterTy> iters(nd, IterTy::parallel);
  b.create<linalg::GenericOp>(loc, ins, ValueRange{outBuf}, maps, iters,
                              [&](OpBuilder &nb, Location l, ValueRange args) {
                                memo.clear();
                                Value v = at(outValue, ident, &nb, args.drop_back());
                                nb.create<linalg::YieldOp>(l, v);
                              });
}

/// What a person reading a profile needs to recognise a kernel: its ops
/// (ONNX-style names, '+'-joined, Reshapes left out) and output shape, e.g.
/// "Conv+Relu 1x64x56x56".
static std::string kernelLabel(FusedOp f) {
  std::string ops;
  for (Operation &op : f.getBody().front().without_terminator()) {
    if (isa<ReshapeOp>(op) && f.getBody().front().getOperations().size() > 2) continue;
    std::string name;
    bool up = true;
    for (char c : op.getName().stripDialect()) {
      if (c == '_') { up = true; continue; }
      name += up ? (char)toupper(c) : c;
      up = false;
    }
    if (auto info = op.getAttrOfType<DictionaryAttr>("kiln.bcr"))
      if (auto sparse = info.getAs<BoolAttr>("sparse"); sparse && sparse.getValue()) name += "[bcr]";
    ops += (ops.empty() ? "" : "+") + name;
  }
  if (ops.size() > 60) ops = ops.substr(0, 57) + "...";
  std::string shape;
  if (f.getNumResults())
    if (auto t = dyn_cast<ShapedType>(f.getResult(0).getType()))
      for (int64_t d : t.getShape()) shape += (shape.empty() ? "" : "x") + std::to_string(d);
  return ops + " " + (shape.empty() ? "scalar" : shape);
}

/// A fusion block becomes one kernel: a function @kiln_kernel_N taking its
/// input, output and scratch buffers, called from @kiln_main. A block of
/// one op is lowered as that op; a block with a head (an op that is not
/// pointwise) lowers the head into the output buffer and then runs the
/// epilogue in place as one generic; a pointwise block is one generic.
LogicalResult BufferLowering::lowerFused(FusedOp f) {
  Block &body = f.getBody().front();
  auto yield = cast<YieldOp>(body.getTerminator());
  // Output buffers live in @kiln_main.
  SmallVector<Value> outer;
  for (Value r : f.getResults()) outer.push_back(dest(r));
  // A block whose results are all empty has nothing to compute (and
  // zero-sized memrefs have no bare-pointer form): no kernel.
  if (llvm::all_of(f.getResults(), [](Value r) { return cast<ShapedType>(r.getType()).getNumElements() == 0; }))
    return success();
  int kernelId = kernelCounter++;
  std::string name = "kiln_kernel_" + std::to_string(kernelId);
  func::FuncOp fn;
  {
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPoint(newFn);
    fn = b.create<func::FuncOp>(f.getLoc(), name, b.getFunctionType({}, {}));
    fn.setPrivate();
    // One function per kernel keeps LLVM's work per function small.
    fn->setAttr("passthrough", b.getArrayAttr({b.getStringAttr("noinline")}));
  }
  Block *mainBlock = b.getInsertionBlock();
  auto mainIP = b.getInsertionPoint();
  kernel = KernelState{mainBlock, mainIP, fn.addEntryBlock(), {}};
  b.setInsertionPointToStart(kernel->entry);
  for (auto [arg, in] : llvm::zip(body.getArguments(), f.getInputs()))
    buffers[arg] = kernelArg(buf(in));
  SmallVector<Value> outArgs;
  for (Value o : outer) outArgs.push_back(kernelArg(o));

  SmallVector<Operation *> ops;
  for (Operation &op : body.without_terminator()) ops.push_back(&op);
  Operation *head = blockHead(body);
  LogicalResult result = success();
  bool headFedInside = head && llvm::any_of(head->getOperands(), [&](Value v) {
    return v.getDefiningOp() && v.getDefiningOp()->getBlock() == &body;
  });
  // A MatMul fed by Slice/Reshape/Transpose prologues (attention's Q, K
  // and V, sliced out of the QKV projection): the GEMM reads the operands
  // in place through strides, the prologues' ops are not lowered at all.
  if (headFedInside && isa<MatMulOp>(head) && !portableOp(head) && eltOf(head->getResult(0)).isF32()) {
    auto inBody = [&](Operation *o) { return o->getBlock() == &body; };
    auto rs = cast<ShapedType>(head->getResult(0).getType()).getShape();
    DenseMap<Value, StridedOperand> views;
    DenseSet<Operation *> chain;
    bool ok = true;
    for (Value v : head->getOperands()) {
      if (!v.getDefiningOp() || !inBody(v.getDefiningOp())) continue;
      auto view = stridedMatMulOperand(v, inBody);
      auto vs = cast<ShapedType>(v.getType()).getShape();
      int64_t own = 1;
      for (int64_t d : vs.drop_back(2)) own *= d;
      ok = ok && view && isa<BlockArgument>(view->source) && (own == 1 || vs.drop_back(2) == rs.drop_back(2));
      if (!ok) break;
      chain.insert(view->ops.begin(), view->ops.end());
      views[v] = std::move(*view);
    }
    // Every op of the chain feeds only the chain or the head.
    ok = ok && llvm::all_of(chain, [&](Operation *o) {
      return llvm::all_of(o->getUsers(), [&](Operation *u) { return u == head || chain.count(u); });
    });
    if (ok) {
      stridedIns = std::move(views);
      llvm::erase_if(ops, [&](Operation *o) { return chain.count(o); });
      headFedInside = false;
    }
  }
  // A conv chain (kiln-plan-fusion): one runtime call.
  std::optional<ConvChainOps> chain;
  if (yield.getNumOperands() == 1 && !portable) chain = matchConvChain(ops, winograd);
  if (chain) {
    loc = chain->tail.getLoc();
    result = lowerConvChain(*chain, outArgs[0]);
    buffers[yield.getValues()[0]] = outArgs[0];
  } else
  // The general form (each op into its own buffer) serves single ops, and
  // any block the planner would not make (a head fed from inside the block,
  // several outputs): correct, only not fused.
  if (ops.size() == 1 || yield.getNumOperands() != 1 || headFedInside) {
    for (auto [v, o] : llvm::zip(yield.getValues(), outArgs)) outBuffer[v] = o;
    for (Operation *op : ops)
      if (failed(lowerOp(op))) { result = failure(); break; }
  } else {
    Value out = yield.getValues()[0];
    Value outArg = outArgs[0];
    DenseSet<Operation *> inside(ops.begin(), ops.end());
    bool math = llvm::any_of(ops, [](Operation *op) { return isElementwiseMath(op) || isa<ExpandOp, TransposeOp, SliceOp>(op); });
    // A Transpose fused after a MatMul head (see kiln-plan-fusion).
    TransposeOp shuffle;
    if (!portableOp(head) && head && isa<MatMulOp>(head) && head->getResult(0).hasOneUse())
      shuffle = dyn_cast<TransposeOp>(*head->getResult(0).getUsers().begin());
    if (shuffle) {
      loc = head->getLoc();
      auto shape = cast<ShapedType>(head->getResult(0).getType()).getShape();
      auto tshape = cast<ShapedType>(shuffle.getType()).getShape();
      stridedOut = StridedOut{outArg, *transposedMatMulLayout(shape, shuffle.getPerm())};
      result = lowerOp(head);
      stridedOut.reset();
      buffers[shuffle.getResult()] = viewAs(outArg, tshape);
      inside.erase(head);
      inside.erase(shuffle);
      math = llvm::any_of(inside, [](Operation *op) {
        return isElementwiseMath(op) || isa<ExpandOp, TransposeOp, SliceOp>(op);
      });
    } else if (!portableOp(head) && head && isa<ConvOp>(head) && ops.size() == 2 && isa<ReluOp, ClipOp>(ops[1]) &&
               ops[1]->getOperand(0) == head->getResult(0) && out == ops[1]->getResult(0) &&
               eltOf(out).isF32()) {
      // Conv + Relu/Clip: the conv kernel clamps each output as it stores it.
      convAct = clampBounds(ops[1]);
      loc = head->getLoc();
      outBuffer[head->getResult(0)] = outArg;
      result = lowerOp(head);
      convAct.reset();
      inside.clear();
      math = false;
    } else if (Value residual = portableOp(head) ? Value() : convResidualOf(head, ops, out)) {
      // Conv + Add (+ Relu/Clip), the Add's other operand from outside the
      // block: the conv kernel adds it (and clamps) as it stores each tile.
      float inf = std::numeric_limits<float>::infinity();
      convAct = ops.size() == 3 ? clampBounds(ops[2]) : std::pair<float, float>{-inf, inf};
      convResidual = buf(residual);
      loc = head->getLoc();
      outBuffer[head->getResult(0)] = outArg;
      result = lowerOp(head);
      // Not where the block reads the residual elsewhere too (a conv over
      // its own residual: its output would overwrite input it still reads).
      if (convResidualInPlace && residual.hasOneUse())
        inPlace = {kernel->callArgs[cast<BlockArgument>(outArg).getArgNumber()],
                   kernel->callArgs[cast<BlockArgument>(convResidual).getArgNumber()]};
      convResidualInPlace = false;
      convAct.reset();
      convResidual = Value();
      inside.clear();
      math = false;
    } else if (!portableOp(head) && geluAfter(head, ops, out)) {
      // Gemm/MatMul + GELU: the kernel applies the GELU to each tile as it
      // stores it (parallel, in cache), not a pass over the output after.
      matmulAct = 1;
      loc = head->getLoc();
      outBuffer[head->getResult(0)] = viewAs(outArg, cast<ShapedType>(head->getResult(0).getType()).getShape());
      result = lowerOp(head);
      matmulAct = 0;
      inside.clear();
      math = false;
    } else if (head) {
      // The head writes the output buffer (viewed in its shape); the
      // epilogue then reads each element where it writes it.
      loc = head->getLoc();
      // In place only when the epilogue reads each element where it writes
      // it: a Transpose, Slice or Expand after the head (the CPU lowering
      // folds MatMul + Transpose into the call instead) reads elsewhere, so
      // the head gets a buffer of its own.
      bool reindexes = llvm::any_of(inside, [&](Operation *o) {
        return o != head && isa<TransposeOp, SliceOp, ExpandOp>(o);
      });
      // So does a head whose epilogue changes the element type (a Cast).
      bool retypes = storageType(eltOf(head->getResult(0))) != cast<MemRefType>(outArg.getType()).getElementType();
      if (!reindexes && !retypes)
        outBuffer[head->getResult(0)] = viewAs(outArg, cast<ShapedType>(head->getResult(0).getType()).getShape());
      result = lowerOp(head);
      inside.erase(head);
    }
    if (succeeded(result) && (math || !head)) {
      loc = f.getLoc();
      emitPointwise(out, outArg, inside);
      buffers[out] = outArg;
    } else if (succeeded(result)) {
      // Only Reshapes after the head: the output already holds the result.
      buffers[out] = outArg;
    }
  }
  stridedIns.clear();
  loc = f.getLoc();
  // Outputs that were not written in place (views, repeated values).
  if (succeeded(result))
    for (auto [v, o] : llvm::zip(yield.getValues(), outArgs))
      if (buf(v) != o) b.create<linalg::CopyOp>(loc, buf(v), o);
  b.create<func::ReturnOp>(loc);
  // Inputs the kernel does not read (weights replaced by a packed copy)
  // are not passed, so their buffers can go.
  for (int i = (int)kernel->entry->getNumArguments() - 1; i >= 0; --i)
    if (kernel->entry->getArgument(i).use_empty()) {
      kernel->entry->eraseArgument(i);
      kernel->callArgs.erase(kernel->callArgs.begin() + i);
    }
  SmallVector<Type> types;
  for (BlockArgument a : kernel->entry->getArguments()) types.push_back(a.getType());
  fn.setFunctionType(b.getFunctionType(types, {}));
  SmallVector<Value> callArgs = kernel->callArgs;
  kernel.reset();
  b.setInsertionPoint(mainBlock, mainIP);
  // Timing hooks around the call (kiln_rt_kernel_begin/end): a test of a
  // thread-local pointer unless the context is profiling (kiln-run --profile).
  loc = f.getLoc();
  Value id = ci(kernelId);
  call("kiln_rt_kernel_begin", {id});
  auto kcall = b.create<func::CallOp>(f.getLoc(), fn, callArgs);
  if (inPlace) {
    // The output may take the residual's buffer where this call is its
    // last use (kiln-plan-arena): [output operand, input operand].
    auto pos = [&](Value v) { return int64_t(llvm::find(callArgs, v) - callArgs.begin()); };
    int64_t o = pos(inPlace->first), i = pos(inPlace->second);
    if (o < (int64_t)callArgs.size() && i < (int64_t)callArgs.size())
      kcall->setAttr("kiln.in_place", b.getDenseI64ArrayAttr({o, i}));
    inPlace.reset();
  }
  call("kiln_rt_kernel_end", {id});
  kernelLabels.push_back(b.getStringAttr(kernelLabel(f)));
  double flops = 0;
  for (Operation &op : f.getBody().front().without_terminator()) {
    double opFlops = opCost(&op).flops;
    // Sparse layers count the multiply-adds they do: the kept weights'.
    if (auto info = op.getAttrOfType<DictionaryAttr>("kiln.bcr"))
      if (auto sparse = info.getAs<BoolAttr>("sparse"); sparse && sparse.getValue())
        if (auto s = info.getAs<FloatAttr>("sparsity")) // absent in hand-written IR
          opFlops *= 1.0 - s.getValueAsDouble();
    flops += opFlops;
  }
  kernelFlops.push_back((int64_t)flops);
  for (auto [r, o] : llvm::zip(f.getResults(), outer)) buffers[r] = o;
  return result;
}

LogicalResult BufferLowering::lowerOp(Operation *op) {
  loc = op->getLoc();
  if (auto f = dyn_cast<FusedOp>(op))
    return lowerFused(f);
  if (auto c = dyn_cast<ConstantOp>(op)) {
    buffers[c.getResult()] = globalConstant(c.getValue());
    return success();
  }
  if (auto r = dyn_cast<ReshapeOp>(op)) {
    auto t = memrefOf(r.getResult());
    SmallVector<int64_t> strides(t.getRank(), 1);
    for (int64_t i = t.getRank() - 2; i >= 0; --i) strides[i] = strides[i + 1] * t.getDimSize(i + 1);
    buffers[r.getResult()] =
        b.create<memref::ReinterpretCastOp>(loc, t, buf(r.getInput()), 0, t.getShape(), strides);
    return success();
  }
  // Unary elementwise ops share one generic form.
  if (isa<SqrtOp, ExpOp, LogOp, NegOp, AbsOp, ReciprocalOp, ReluOp, SigmoidOp, TanhOp, ErfOp,
          HardSwishOp, LeakyReluOp, HardSigmoidOp, ClipOp, SoftplusOp, SoftsignOp, MishOp, FloorOp,
          CeilOp, RoundOp, SignOp, SinOp, CosOp, TanOp, AsinOp, AcosOp, AtanOp, SinhOp, CoshOp,
          AsinhOp, AcoshOp, AtanhOp, EluOp, CeluOp, ThresholdedReluOp, SeluOp, ShrinkOp, GeluOp,
          NotOp, IsNaNOp, IsInfOp>(op)) {
    Value in = buf(op->getOperand(0));
    Value out = dest(op->getResult(0));
    elementwise(ValueRange{in}, out, [&](OpBuilder &nb, Location l, ValueRange a) {
      return unaryScalar(op, nb, l, a[0]);
    });
    return success();
  }
  if (isa<AddOp, SubOp, MulOp, DivOp, PowOp, PReluOp, MaxOp, MinOp, ModOp, EqualOp, LessOp,
          LessOrEqualOp, GreaterOp, GreaterOrEqualOp, AndOp, OrOp, XorOp, BitShiftOp>(op)) {
    Value x = buf(op->getOperand(0)), y = buf(op->getOperand(1));
    Value out = dest(op->getResult(0));
    elementwise(ValueRange{x, y}, out, [&](OpBuilder &nb, Location l, ValueRange a) {
      return binaryScalar(op, nb, l, a[0], a[1]);
    });
    return success();
  }
  return TypeSwitch<Operation *, LogicalResult>(op)
      .Case([&](ConvOp o) { return lowerConv(o); })
      .Case([&](ConvTransposeOp o) { return lowerConvTranspose(o); })
      .Case([&](GemmOp o) { return lowerGemm(o); })
      .Case([&](MatMulOp o) { return lowerMatMul(o); })
      .Case([&](MaxPoolOp o) { return lowerPool(o, true); })
      .Case([&](AveragePoolOp o) { return lowerPool(o, false); })
      .Case<ReduceSumOp, ReduceMeanOp, ReduceMaxOp, ReduceMinOp, ReduceProdOp, ReduceL1Op, ReduceL2Op, ReduceSumSquareOp, ReduceLogSumOp,
            ReduceLogSumExpOp>([&](auto o) { return lowerReduce(o, o.getAxes()); })
      .Case([&](LogSoftmaxOp o) { return lowerSoftmax(o, o.getAxis(), /*log=*/true); })
      .Case([&](LayerNormOp o) { return lowerLayerNorm(o); })
      .Case([&](TriluOp o) { return lowerTrilu(o); })
      .Case([&](TileOp o) { return lowerTile(o); })
      .Case([&](CastOp o) { return lowerCast(o); })
      .Case([&](GatherOp o) { return lowerGather(o); })
      .Case([&](GatherElementsOp o) { return lowerGatherElements(o); })
      .Case([&](ResizeOp o) { return lowerResize(o); })
      .Case([&](GatherNDOp o) { return lowerGatherND(o); })
      .Case([&](ScatterElementsOp o) {
        return lowerScatter(o, o.getData(), o.getIndices(), o.getUpdates(), o.getReduction(), o.getAxis());
      })
      .Case([&](ScatterNDOp o) {
        return lowerScatter(o, o.getData(), o.getIndices(), o.getUpdates(), o.getReduction(), std::nullopt);
      })
      .Case([&](CumSumOp o) { return lowerCumSum(o); })
      .Case([&](GridSampleOp o) { return lowerGridSample(o); })
      .Case([&](TopKOp o) { return lowerTopK(o); })
      .Case([&](EinsumOp o) { return lowerEinsum(o); })
      .Case([&](ArgMaxOp o) { return lowerArg(o, o.getAxis(), o.getSelectLastIndex(), true); })
      .Case([&](ArgMinOp o) { return lowerArg(o, o.getAxis(), o.getSelectLastIndex(), false); })
      .Case([&](WhereOp o) {
        Value out = dest(o.getResult());
        elementwise(ValueRange{buf(o.getCond()), buf(o.getX()), buf(o.getY())}, out,
                    [](OpBuilder &nb, Location l, ValueRange a) {
                      return nb.create<arith::SelectOp>(l, a[0], a[1], a[2]).getResult();
                    });
        return success();
      })
      .Case([&](ExpandOp o) {
        Value out = dest(o.getResult());
        elementwise(ValueRange{buf(o.getInput())}, out,
                    [](OpBuilder &, Location, ValueRange a) { return a[0]; });
        return success();
      })
      .Case([&](SoftmaxOp o) { return lowerSoftmax(o, o.getAxis(), /*log=*/false); })
      .Case([&](BatchNormOp o) { return lowerBatchNorm(o); })
      .Case([&](ConcatOp o) { return lowerConcat(o); })
      .Case([&](SliceOp o) { return lowerSlice(o); })
      .Case([&](PadOp o) { return lowerPad(o); })
      .Case([&](TransposeOp o) {
        Value out = dest(o.getResult());
        b.create<linalg::TransposeOp>(loc, buf(o.getInput()), out, o.getPerm());
        return success();
      })
      .Default([&](Operation *o) {
        return o->emitError("no lowering for '") << o->getName() << "'";
      });
}

LogicalResult BufferLowering::run() {
  auto fn = module.lookupSymbol<func::FuncOp>("main");
  if (!fn)
    return module.emitError("no @main function to lower");
  auto ftype = fn.getFunctionType();
  SmallVector<Type> argTypes;
  for (Type t : ftype.getInputs()) {
    auto rt = cast<RankedTensorType>(t);
    argTypes.push_back(MemRefType::get(rt.getShape(), storageType(rt.getElementType())));
  }
  for (Type t : ftype.getResults()) {
    auto rt = cast<RankedTensorType>(t);
    argTypes.push_back(MemRefType::get(rt.getShape(), storageType(rt.getElementType())));
  }
  b.setInsertionPoint(fn);
  newFn = b.create<func::FuncOp>(fn.getLoc(), "kiln_main", b.getFunctionType(argTypes, {}));
  for (auto attr : fn->getAttrs())
    if (attr.getName().strref().starts_with("kiln."))
      newFn->setAttr(attr.getName(), attr.getValue());
  Block *entry = newFn.addEntryBlock();
  b.setInsertionPointToStart(entry);

  Block &body = fn.getBody().front();
  unsigned nIn = ftype.getNumInputs();
  for (unsigned i = 0; i < nIn; ++i)
    buffers[body.getArgument(i)] = entry->getArgument(i);
  auto ret = cast<func::ReturnOp>(body.getTerminator());
  for (auto [i, v] : llvm::enumerate(ret.getOperands()))
    if (!outBuffer.count(v) && !v.getDefiningOp<ConstantOp>() && !isa<BlockArgument>(v) &&
        !v.getDefiningOp<ReshapeOp>())
      outBuffer[v] = entry->getArgument(nIn + i);

  for (Operation &op : body.without_terminator())
    if (failed(lowerOp(&op)))
      return failure();

  // Results not written in place (inputs, constants, views, repeated
  // outputs) are copied into their output buffer.
  loc = ret.getLoc();
  for (auto [i, v] : llvm::enumerate(ret.getOperands())) {
    Value dst = entry->getArgument(nIn + i);
    if (buf(v) != dst && cast<MemRefType>(dst.getType()).getNumElements() != 0) // nothing to copy when empty
      b.create<linalg::CopyOp>(loc, buf(v), dst);
  }
  b.create<func::ReturnOp>(loc);
  fn.erase();
  // An empty input or output that nothing touches has no bare-pointer form
  // in LLVM (a zero-sized memref): it becomes memref<1xT>, never read.
  SmallVector<Type> types(newFn.getArgumentTypes());
  bool retyped = false;
  for (auto [i, arg] : llvm::enumerate(newFn.getArguments())) {
    auto mt = dyn_cast<MemRefType>(arg.getType());
    if (!mt || mt.getNumElements() != 0 || !arg.use_empty()) continue;
    types[i] = MemRefType::get({1}, mt.getElementType());
    arg.setType(types[i]);
    retyped = true;
  }
  if (retyped) newFn.setType(b.getFunctionType(types, {}));
  module->setAttr("kiln.kernel_labels", b.getArrayAttr(kernelLabels));
  module->setAttr("kiln.kernel_flops", b.getI64ArrayAttr(kernelFlops));
  return success();
}

struct LowerKilnToLinalgPass : kiln::impl::LowerKilnToLinalgBase<LowerKilnToLinalgPass> {
  using LowerKilnToLinalgBase::LowerKilnToLinalgBase;
  void runOnOperation() override {
    if (winograd != "auto" && winograd != "off" && winograd != "2" && winograd != "4") {
      getOperation().emitError("--winograd must be auto, off, 2 or 4, not '") << winograd << "'";
      return signalPassFailure();
    }
    BufferLowering lowering(getOperation(), portable, winograd);
    if (failed(lowering.run()))
      signalPassFailure();
  }
};

} // namespace
