// ONNX importer: reads a ModelProto with Debian's libonnx protobuf classes and
// builds a func.func of kiln ops with fully static shapes.
//
// - Every node's location is loc(fused["node_name"] : "OpType") so any later
//   diagnostic names the ONNX node and its op.
// - Shapes are inferred here, per op, from the operand types (the ONNX 1.12
//   checker is not used: it does not know newer opsets).
// - Integer tensors (shapes, axes, indices) are folded at import time:
//   Shape -> Gather -> Concat -> Reshape chains become static result types.
// - Float initializers become dense resource attributes that point into the
//   protobuf's own buffer, so weights are not copied a second time.
#include "kiln/Import/OnnxImporter.h"
#include "kiln/Dialect/KilnDialect.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/IR/DialectResourceBlobManager.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/AsmState.h"

#include <onnx/defs/schema.h>
#include <onnx/onnx_pb.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <numeric>
#include <set>
#include <sstream>
#include <unordered_map>

using namespace mlir;

namespace kiln {
namespace {

/// A compile-time integer tensor (shape arithmetic).
struct IntConst {
  std::vector<int64_t> shape;
  std::vector<int64_t> data;
  int32_t dtype = 7; // ONNX TensorProto dtype (INT64 unless known otherwise)
};

/// Thrown inside a node converter to report a problem with that node.
struct NodeError {
  std::string msg;
};

[[noreturn]] void fail(const std::string &msg) { throw NodeError{msg}; }

std::string joinDims(ArrayRef<int64_t> dims) {
  std::string s;
  for (size_t i = 0; i < dims.size(); ++i)
    s += (i ? "x" : "") + std::to_string(dims[i]);
  return s.empty() ? "scalar" : s;
}

/// Element count of a shape; fails (never wraps) when it overflows int64.
int64_t product(ArrayRef<int64_t> d) {
  int64_t p = 1;
  for (int64_t x : d) {
    if (x < 0) fail("shape " + joinDims(d) + " has a negative dimension");
    if (__builtin_mul_overflow(p, x, &p))
      fail("shape " + joinDims(d) + " has more elements than int64 can count");
  }
  return p;
}

/// Largest magnitude accepted for geometry attributes (pads, strides, ...).
constexpr int64_t kMaxGeometry = int64_t(1) << 31;

/// a * b for dimensions, failing instead of overflowing.
int64_t mulDims(int64_t a, int64_t b) {
  int64_t r;
  if (__builtin_mul_overflow(a, b, &r))
    fail("dimension product " + std::to_string(a) + " x " + std::to_string(b) + " overflows int64");
  return r;
}

/// Most elements a tensor folded at compile time (integer shape arithmetic,
/// Range, ConstantOfShape) may have; beyond it folding would only exhaust
/// the compiler's memory.
constexpr int64_t kMaxFoldElements = int64_t(1) << 24;

const char *dtypeName(int t) {
  switch (t) {
  case onnx::TensorProto::FLOAT: return "float32";
  case onnx::TensorProto::UINT8: return "uint8";
  case onnx::TensorProto::INT8: return "int8";
  case onnx::TensorProto::UINT16: return "uint16";
  case onnx::TensorProto::INT16: return "int16";
  case onnx::TensorProto::INT32: return "int32";
  case onnx::TensorProto::INT64: return "int64";
  case onnx::TensorProto::STRING: return "string";
  case onnx::TensorProto::BOOL: return "bool";
  case onnx::TensorProto::FLOAT16: return "float16";
  case onnx::TensorProto::DOUBLE: return "float64";
  case onnx::TensorProto::UINT32: return "uint32";
  case onnx::TensorProto::UINT64: return "uint64";
  case onnx::TensorProto::BFLOAT16: return "bfloat16";
  case onnx::TensorProto::COMPLEX64: return "complex64";
  case onnx::TensorProto::COMPLEX128: return "complex128";
  // Newer than Debian's libonnx 1.12 enum.
  case 17: return "float8e4m3fn";
  case 18: return "float8e4m3fnuz";
  case 19: return "float8e5m2";
  case 20: return "float8e5m2fnuz";
  case 21: return "uint4";
  case 22: return "int4";
  default: return "unknown";
  }
}

class Importer {
public:
  Importer(MLIRContext &ctx, std::string path, const ImportOptions &opts)
      : ctx(ctx), b(&ctx), path(std::move(path)), opts(opts) {}

  ImportedModel run(std::string bytes);

private:
  MLIRContext &ctx;
  OpBuilder b;
  std::string path;
  const ImportOptions &opts;
  std::shared_ptr<onnx::ModelProto> model;
  int64_t opset = 0;
  bool hadError = false;

  std::unordered_map<std::string, Value> values;
  std::unordered_map<std::string, IntConst> ints;
  std::set<std::string> poisoned; // outputs of nodes that failed

  // State of the node being converted.
  const onnx::NodeProto *node = nullptr;
  Location loc = UnknownLoc::get(&ctx);

  // -- diagnostics -------------------------------------------------------
  Location fileLoc() { return FileLineColLoc::get(&ctx, path, 0, 0); }
  void error(Location l, const Twine &msg) {
    hadError = true;
    emitError(l) << msg;
  }
  Location nodeLoc(const onnx::NodeProto &n, int index) {
    std::string name = n.name().empty() ? (n.op_type() + "_" + std::to_string(index)) : n.name();
    return FusedLoc::get(&ctx, {NameLoc::get(StringAttr::get(&ctx, name), fileLoc())},
                         StringAttr::get(&ctx, n.op_type()));
  }

  // -- attributes --------------------------------------------------------
  const onnx::AttributeProto *attr(StringRef name) {
    for (const auto &a : node->attribute())
      if (a.name() == name)
        return &a;
    return nullptr;
  }
  int64_t attrInt(StringRef name, int64_t def) {
    auto *a = attr(name);
    if (!a) return def;
    if (a->type() != onnx::AttributeProto::INT)
      fail("attribute '" + name.str() + "' must be an int");
    return a->i();
  }
  float attrFloat(StringRef name, float def) {
    auto *a = attr(name);
    if (!a) return def;
    if (a->type() != onnx::AttributeProto::FLOAT)
      fail("attribute '" + name.str() + "' must be a float");
    return a->f();
  }
  std::string attrString(StringRef name, std::string def) {
    auto *a = attr(name);
    if (!a) return def;
    if (a->type() != onnx::AttributeProto::STRING)
      fail("attribute '" + name.str() + "' must be a string");
    return a->s();
  }
  std::optional<std::vector<int64_t>> attrInts(StringRef name) {
    auto *a = attr(name);
    if (!a) return std::nullopt;
    if (a->type() != onnx::AttributeProto::INTS)
      fail("attribute '" + name.str() + "' must be a list of ints");
    // Geometry attributes feed shape arithmetic: bound them so that it
    // cannot overflow (real models stay far below).
    static const std::set<std::string> geometry = {"pads", "strides", "dilations", "kernel_shape",
                                                   "output_padding", "output_shape"};
    if (geometry.count(name.str()))
      for (int64_t v : a->ints())
        if (v < -kMaxGeometry || v > kMaxGeometry)
          fail("attribute '" + name.str() + "' value " + std::to_string(v) + " is out of range");
    return std::vector<int64_t>(a->ints().begin(), a->ints().end());
  }

  // -- operands ----------------------------------------------------------
  int numInputs() { return node->input_size(); }
  bool hasInput(int i) { return i < node->input_size() && !node->input(i).empty(); }
  bool isIntConst(int i) { return hasInput(i) && ints.count(node->input(i)); }
  const IntConst &intInput(int i, StringRef what) {
    if (!hasInput(i))
      fail(("missing input '" + what + "'").str());
    auto it = ints.find(node->input(i));
    if (it == ints.end())
      needConstant(i, what);
    return it->second;
  }
  /// Input i's value must be known at compile time but is not. Names the
  /// tensor, which --freeze-input can pin when it is a graph input.
  [[noreturn]] void needConstant(int i, StringRef what) {
    fail(("input '" + what + "' must be a compile-time constant ('" + node->input(i) +
          "' is computed at run time; a graph input can be pinned with --freeze-input)")
             .str());
  }
  /// The float constant behind input i (which must be one).
  ElementsAttr floatConstInput(int i, StringRef what) {
    if (!hasInput(i)) fail(("missing input '" + what + "'").str());
    if (isIntConst(i)) fail(("input '" + what + "' must be a float tensor").str());
    auto c = constantOf(input(i));
    if (!c) needConstant(i, what);
    return *c;
  }
  Value input(int i) {
    if (!hasInput(i))
      fail("missing required input " + std::to_string(i));
    const std::string &name = node->input(i);
    auto it = values.find(name);
    if (it != values.end())
      return it->second;
    auto ic = ints.find(name);
    if (ic != ints.end()) // an integer constant used as a tensor
      return materializeInt(ic->second);
    fail("input '" + name + "' is not produced by any node, initializer or graph input");
  }
  std::optional<Value> optInput(int i) {
    if (!hasInput(i)) return std::nullopt;
    return input(i);
  }
  static RankedTensorType ttype(Value v) { return cast<RankedTensorType>(v.getType()); }
  static ArrayRef<int64_t> shapeOf(Value v) { return ttype(v).getShape(); }
  RankedTensorType f32(ArrayRef<int64_t> shape) {
    return RankedTensorType::get(shape, b.getF32Type());
  }
  /// A tensor type with `v`'s element type and a new shape.
  RankedTensorType like(Value v, ArrayRef<int64_t> shape) {
    return RankedTensorType::get(shape, ttype(v).getElementType());
  }
  RankedTensorType boolType(ArrayRef<int64_t> shape) {
    return RankedTensorType::get(shape, b.getI1Type());
  }
  /// MLIR element type of an ONNX dtype kiln supports, else null.
  Type elementType(int dtype) {
    switch (dtype) {
    case onnx::TensorProto::FLOAT: return b.getF32Type();
    case onnx::TensorProto::DOUBLE: return b.getF64Type();
    case onnx::TensorProto::INT64: return b.getI64Type();
    case onnx::TensorProto::INT32: return b.getI32Type();
    case onnx::TensorProto::INT16: return b.getI16Type();
    case onnx::TensorProto::INT8: return b.getI8Type();
    // Unsigned integers keep their signedness in the kiln dialect (ui8, ...);
    // the buffer lowering stores them signless and picks unsigned arith.
    case onnx::TensorProto::UINT8: return b.getIntegerType(8, false);
    case onnx::TensorProto::UINT16: return b.getIntegerType(16, false);
    case onnx::TensorProto::UINT32: return b.getIntegerType(32, false);
    case onnx::TensorProto::UINT64: return b.getIntegerType(64, false);
    case onnx::TensorProto::BOOL: return b.getI1Type();
    case onnx::TensorProto::FLOAT16: return b.getF16Type();
    case onnx::TensorProto::BFLOAT16: return b.getBF16Type();
    // float8 (Cast, CastLike, QuantizeLinear and DequantizeLinear only);
    // numbered as onnx.proto, newer than Debian's protobuf schema.
    case 17: return b.getFloat8E4M3FNType();
    case 18: return b.getFloat8E4M3FNUZType();
    case 19: return b.getFloat8E5M2Type();
    case 20: return b.getFloat8E5M2FNUZType();
    default: return Type();
    }
  }
  bool isFloat(Value v) { return isa<FloatType>(ttype(v).getElementType()); }
  void requireSameType(Value a, Value c, StringRef what) {
    if (ttype(a).getElementType() != ttype(c).getElementType())
      fail(("inputs of different dtypes (" + what + ")").str());
  }
  /// Returns the float constant behind a value, if it is one.
  std::optional<ElementsAttr> constantOf(Value v) {
    if (auto c = v.getDefiningOp<ConstantOp>())
      return c.getValue();
    return std::nullopt;
  }
  Value materializeInt(const IntConst &c) {
    Type et = elementType(c.dtype);
    if (!et || isa<FloatType>(et))
      fail(std::string("integer tensor of dtype ") + dtypeName(c.dtype) + " is not supported");
    auto t = RankedTensorType::get(c.shape, et);
    SmallVector<APInt> vals;
    for (int64_t v : c.data)
      vals.push_back(APInt(et.getIntOrFloatBitWidth(), v, /*isSigned=*/!et.isUnsignedInteger()));
    return b.create<ConstantOp>(loc, DenseElementsAttr::get(t, vals));
  }
  Value materializeIntAsFloat(const IntConst &c) {
    std::vector<float> f(c.data.begin(), c.data.end());
    auto t = f32(c.shape);
    return b.create<ConstantOp>(loc, DenseElementsAttr::get(t, ArrayRef<float>(f)));
  }
  int64_t normAxis(int64_t axis, int64_t rank) {
    if (axis < -rank || axis >= rank)
      fail("axis " + std::to_string(axis) + " is out of range for rank " + std::to_string(rank));
    return axis < 0 ? axis + rank : axis;
  }
  /// Constant indices must lie in [-n, n).
  void checkConstantIndices(Value idx, int64_t n) {
    if (auto c = constantOf(idx))
      for (APInt v : c->getValues<APInt>()) {
        int64_t i = v.getSExtValue();
        if (i < -n || i >= n)
          fail("index " + std::to_string(i) + " is out of range for a dimension of " + std::to_string(n));
      }
  }
  void setOutput(int i, Value v) {
    if (i < node->output_size() && !node->output(i).empty()) {
      auto t = ttype(v);
      checkTensorSize(t.getShape(), t.getElementType(), "output '" + node->output(i) + "'");
      values[node->output(i)] = v;
    }
  }
  void setIntOutput(int i, IntConst c) {
    if (i < node->output_size() && !node->output(i).empty())
      ints[node->output(i)] = std::move(c);
  }
  void requireNoOutput(int i, StringRef what) {
    if (i < node->output_size() && !node->output(i).empty())
      fail(("output '" + what + "' is not supported (inference only)").str());
  }
  /// float32, or float64 for ops whose lowering is type-generic.
  void requireFloat(Value v, StringRef what) {
    Type et = ttype(v).getElementType();
    if (!et.isF32() && !et.isF64())
      fail(("input '" + what + "' must be float32 or float64").str());
  }
  void requireF32(Value v, StringRef what) {
    if (!ttype(v).getElementType().isF32())
      fail(("input '" + what + "' must be float32").str());
  }

  // -- graph -------------------------------------------------------------
  bool loadModel(std::string bytes);
  bool loadExternalData(onnx::TensorProto &t);
  bool freezeInputs();
  bool checkSchemas();
  void checkTensorSize(ArrayRef<int64_t> shape, Type elt, const std::string &what);
  bool importGraph(func::FuncOp &fn, ModuleOp module);
  std::optional<Type> valueInfoType(const onnx::ValueInfoProto &vi, bool isInput);
  void importInitializer(const onnx::TensorProto &t);
  bool tensorToInt(const onnx::TensorProto &t, IntConst &out);
  Value tensorToFloat(const onnx::TensorProto &t);
  void convertNode();
  bool tryFoldInts();

  // -- op converters -----------------------------------------------------
  using Converter = std::function<void(Importer &)>;
  static const std::unordered_map<std::string, Converter> &converters();

  void convConv();
  void convConvTranspose();
  void convGemm();
  void convMatMul();
  template <typename OpT> void convBinary();
  template <typename OpT> void convUnary();
  template <typename OpT> void convUnaryAlpha(float def);
  void convSelu();
  void convShrink();
  void convGelu();
  template <typename OpT> void convVariadic();
  void convSum(bool mean);
  void convMod();
  void convLayerNorm();
  void convInstanceNorm();
  void convDepthToSpace();
  void convSpaceToDepth();
  void convExpand();
  void convTile();
  void convTrilu();
  void convSplit();
  void convCast();
  template <typename OpT> void convCompare();
  template <typename OpT> void convLogic();
  void convNot();
  template <typename OpT> void convBitwise();
  void convBitwiseNot();
  void convBitShift();
  void convPow();
  Value buildConv(Value x, Value w, std::optional<Value> bias);
  Value buildMatMul(Value a, Value b);
  Value quantParam(Value v, int64_t axis, int64_t rank, ArrayRef<int64_t> xShape);
  int64_t quantAxis(Value x, Value scale);
  Value quantize(Value x, Value scale, std::optional<Value> zp, Type out, int64_t axis);
  Value dequantize(Value x, Value scale, std::optional<Value> zp, int64_t axis);
  Value integerOperand(Value x, std::optional<Value> zp, int64_t axis);
  void convQuantizeLinear();
  void convDequantizeLinear();
  void convDynamicQuantizeLinear();
  void convMatMulInteger();
  void convConvInteger();
  void convQLinearMatMul();
  void convQLinearConv();
  void convEyeLike();
  void convWindow();
  void convMeanVarianceNormalization();
  void convLRN();
  void convGroupNormalization();
  void convCompress();
  void convCol2Im();
  void convAffineGrid();
  void convCenterCropPad();
  void convRecurrent();
  Value sliceAxis(Value v, int64_t axis, int64_t start, int64_t len) {
    SmallVector<int64_t> st(shapeOf(v).size(), 0), out(shapeOf(v));
    st[axis] = start;
    out[axis] = len;
    if (ArrayRef<int64_t>(out) == shapeOf(v)) return v;
    return b.create<SliceOp>(loc, like(v, out), v, b.getDenseI64ArrayAttr(st),
                             b.getDenseI64ArrayAttr(SmallVector<int64_t>(out.size(), 1)));
  }
  Value transpose(Value v, ArrayRef<int64_t> perm) {
    SmallVector<int64_t> out;
    for (int64_t p : perm) out.push_back(shapeOf(v)[p]);
    return b.create<TransposeOp>(loc, like(v, out), v, b.getDenseI64ArrayAttr(perm));
  }
  Value floatConst(ArrayRef<int64_t> shape, ArrayRef<float> data) {
    return b.create<ConstantOp>(loc, DenseElementsAttr::get(f32(shape), data));
  }
  Value binary(StringRef op, Value x, Value y);
  /// An empty tensor of x's dtype: a constant (nothing to compute).
  Value emptyLike(Value x, ArrayRef<int64_t> shape) {
    auto t = like(x, shape);
    Type et = t.getElementType();
    Attribute zero = isa<FloatType>(et) ? Attribute(FloatAttr::get(et, 0.0)) : Attribute(IntegerAttr::get(et, 0));
    return b.create<ConstantOp>(loc, DenseElementsAttr::get(t, zero));
  }
  Value castTo(Value v, Type et);
  /// While it lives, the node's input `i` reads as `v` (the converter sees
  /// a cast copy); the original binding comes back when it ends, also when
  /// the converter fails.
  struct InputOverride {
    Importer &im;
    std::vector<std::pair<std::string, Value>> saved; // null: was not bound
    void set(int i, Value v) {
      const std::string &name = im.node->input(i);
      auto it = im.values.find(name);
      saved.emplace_back(name, it == im.values.end() ? Value() : it->second);
      im.values[name] = v;
    }
    ~InputOverride() {
      for (auto it = saved.rbegin(); it != saved.rend(); ++it) {
        if (it->second) im.values[it->first] = it->second;
        else im.values.erase(it->first);
      }
    }
  };
  void convWhere();
  void convIsNaN();
  void convIsInf();
  void convGather();
  void convGatherElements();
  Value nllLoss(Value x, Value target, std::optional<Value> weight);
  void convNLLLoss();
  void convResize();
  void convGatherND();
  void convScatter();
  void convCumSum();
  Value iotaAlong(int64_t n, int64_t axis, int64_t r);
  void convHardmax();
  void convOneHot();
  void convGridSample();
  void convTopK();
  void convEinsum();
  void convSoftmaxCrossEntropyLoss();
  template <typename OpT> void convArg();
  void convRange();
  void convLeakyRelu();
  void convHardSigmoid();
  void convClip();
  template <typename OpT> void convSoftmax();
  template <typename OpT> void convPool();
  template <typename OpT> Value buildPool(Value x, bool forceIncludePad);
  void convLpPool();
  template <typename OpT> void convGlobalPool();
  template <typename OpT> void convReduce();
  void convBatchNorm();
  void convConcat();
  SmallVector<int64_t> viewShape(ArrayRef<int64_t> xs);
  void convView();
  void convTranspose();
  void convSlice();
  void convPad();
  void convIdentity();
  void convConstant();

  Value reshape(Value v, ArrayRef<int64_t> shape) {
    if (shapeOf(v) == shape)
      return v;
    return b.create<ReshapeOp>(loc, like(v, shape), v);
  }
  std::vector<int64_t> spatialPads(int64_t spatial, ArrayRef<int64_t> inSpatial,
                                   ArrayRef<int64_t> kernel, ArrayRef<int64_t> strides,
                                   ArrayRef<int64_t> dilations);
};

//===----------------------------------------------------------------------===//
// Loading
//===----------------------------------------------------------------------===//

bool Importer::loadModel(std::string bytes) {
  model = std::make_shared<onnx::ModelProto>();
  if (bytes.empty() || !model->ParseFromString(bytes)) {
    error(fileLoc(), "not a valid ONNX model (protobuf parse failed: truncated, corrupted or not ONNX)");
    return false;
  }
  bytes.clear();
  bytes.shrink_to_fit();
  if (!model->has_graph()) {
    error(fileLoc(), "ONNX model has no graph");
    return false;
  }
  for (const auto &o : model->opset_import()) {
    if (o.domain().empty() || o.domain() == "ai.onnx")
      opset = o.version();
  }
  if (opset == 0 && model->opset_import_size() == 0)
    opset = 1;
  if (opset == 0) {
    error(fileLoc(), "the model imports no default-domain (ai.onnx) opset; only ai.onnx ops are supported");
    return false;
  }
  if (opset < kMinOpset || opset > kMaxOpset) {
    error(fileLoc(), "default-domain opset " + std::to_string(opset) +
                         " is not supported (supported: " + std::to_string(kMinOpset) +
                         " to " + std::to_string(kMaxOpset) + ")");
    return false;
  }
  if (!freezeInputs())
    return false;
  // Weights stored outside the model file are read into raw_data now, so
  // the rest of the importer sees ordinary tensors.
  bool ok = true;
  auto *g = model->mutable_graph();
  for (auto &t : *g->mutable_initializer())
    if (t.data_location() == onnx::TensorProto::EXTERNAL)
      ok &= loadExternalData(t);
  for (auto &n : *g->mutable_node())
    for (auto &a : *n.mutable_attribute())
      if (a.has_t() && a.t().data_location() == onnx::TensorProto::EXTERNAL)
        ok &= loadExternalData(*a.mutable_t());
  return ok;
}

/// --freeze-input: each named graph input becomes an initializer holding the
/// tensor read from its file (the graph input itself is then skipped, as
/// inputs that have initializers are).
bool Importer::freezeInputs() {
  auto *g = model->mutable_graph();
  bool ok = true;
  for (const auto &[name, file] : opts.frozenInputs) {
    const onnx::ValueInfoProto *vi = nullptr;
    for (const auto &in : g->input())
      if (in.name() == name) vi = &in;
    if (!vi) {
      error(fileLoc(), "--freeze-input names '" + name + "', which is not a graph input");
      ok = false;
      continue;
    }
    std::ifstream f(file, std::ios::binary);
    onnx::TensorProto t;
    if (!f || !t.ParseFromIstream(&f)) {
      error(fileLoc(), "--freeze-input " + name + ": cannot read a TensorProto from '" + file + "'");
      ok = false;
      continue;
    }
    const auto &tt = vi->type().tensor_type();
    if (vi->type().has_tensor_type() && tt.elem_type() != t.data_type()) {
      error(fileLoc(), "--freeze-input " + name + ": tensor has dtype " + dtypeName(t.data_type()) +
                           " but the input is " + dtypeName(tt.elem_type()));
      ok = false;
      continue;
    }
    if (vi->type().has_tensor_type() && tt.has_shape()) {
      bool same = tt.shape().dim_size() == t.dims_size();
      for (int i = 0; same && i < t.dims_size(); ++i)
        if (tt.shape().dim(i).has_dim_value() && tt.shape().dim(i).dim_value() != t.dims(i))
          same = false;
      if (!same) {
        error(fileLoc(), "--freeze-input " + name + ": tensor shape " +
                             joinDims(std::vector<int64_t>(t.dims().begin(), t.dims().end())) +
                             " does not fit the input's declared shape");
        ok = false;
        continue;
      }
    }
    t.set_name(name);
    *g->add_initializer() = std::move(t);
  }
  return ok;
}

/// Reads a tensor's external data (keys location, offset, length) from a
/// file beside the model; the location must stay inside that directory.
bool Importer::loadExternalData(onnx::TensorProto &t) {
  namespace fs = std::filesystem;
  std::string location;
  int64_t offset = 0, length = -1;
  auto bad = [&](const std::string &why) {
    error(fileLoc(), "tensor '" + t.name() + "': " + why);
    return false;
  };
  for (const auto &kv : t.external_data()) {
    auto asInt = [&](int64_t &out) {
      StringRef v(kv.value());
      return !v.getAsInteger(10, out) && out >= 0;
    };
    if (kv.key() == "location") location = kv.value();
    else if (kv.key() == "offset" && !asInt(offset)) return bad("external data offset '" + kv.value() + "' is not a non-negative integer");
    else if (kv.key() == "length" && !asInt(length)) return bad("external data length '" + kv.value() + "' is not a non-negative integer");
  }
  if (location.empty())
    return bad("external data has no 'location'");
  fs::path rel(location);
  bool escapes = rel.is_absolute();
  for (const auto &part : rel)
    if (part == "..") escapes = true;
  if (escapes)
    return bad("external data location '" + location +
               "' must be a relative path inside the model's directory");
  fs::path file = fs::path(path).parent_path() / rel;
  std::error_code ec;
  auto size = fs::file_size(file, ec);
  if (ec || !fs::is_regular_file(file, ec))
    return bad("external data file '" + file.string() + "' not found");
  if (length < 0) {
    if ((uint64_t)offset > size)
      return bad("external data offset " + std::to_string(offset) + " is past the end of '" +
                 file.string() + "' (" + std::to_string(size) + " bytes)");
    length = (int64_t)size - offset;
  }
  if ((uint64_t)offset > size || (uint64_t)length > size - (uint64_t)offset)
    return bad("external data wants bytes " + std::to_string(offset) + ".." +
               std::to_string(offset + length) + " but '" + file.string() + "' has " +
               std::to_string(size));
  std::ifstream f(file, std::ios::binary);
  std::string data(length, '\0');
  if (!f.seekg(offset) || !f.read(data.data(), length))
    return bad("cannot read external data file '" + file.string() + "'");
  t.set_raw_data(std::move(data));
  t.clear_external_data();
  t.set_data_location(onnx::TensorProto::DEFAULT);
  return true;
}

static const char *attrTypeName(int t) {
  switch (t) {
  case onnx::AttributeProto::FLOAT: return "a float";
  case onnx::AttributeProto::INT: return "an int";
  case onnx::AttributeProto::STRING: return "a string";
  case onnx::AttributeProto::TENSOR: return "a tensor";
  case onnx::AttributeProto::GRAPH: return "a graph";
  case onnx::AttributeProto::FLOATS: return "a list of floats";
  case onnx::AttributeProto::INTS: return "a list of ints";
  case onnx::AttributeProto::STRINGS: return "a list of strings";
  case onnx::AttributeProto::TENSORS: return "a list of tensors";
  case onnx::AttributeProto::GRAPHS: return "a list of graphs";
  default: return "of another kind";
  }
}

/// Checks every node against the ONNX operator schema of the model's opset
/// (Debian's libonnx knows opsets up to its own release): input and output
/// counts, required attributes and attribute kinds. One error per problem.
bool Importer::checkSchemas() {
  const auto &ranges = onnx::OpSchemaRegistry::DomainToVersionRange::Instance().Map();
  auto it = ranges.find("");
  int64_t known = it == ranges.end() ? 0 : it->second.second;
  bool exact = opset <= known; // newer opsets may add inputs/attributes
  const auto &g = model->graph();
  bool ok = true;
  for (int i = 0; i < g.node_size(); ++i) {
    const auto &n = g.node(i);
    auto bad = [&](const std::string &msg) {
      error(nodeLoc(n, i), msg);
      ok = false;
    };
    const onnx::OpSchema *schema =
        onnx::OpSchemaRegistry::Schema(n.op_type(), exact ? (int)opset : (int)known, "");
    if (!schema) {
      if (exact && onnx::OpSchemaRegistry::Schema(n.op_type(), (int)known, ""))
        bad("op does not exist yet in opset " + std::to_string(opset));
      continue;
    }
    int nin = n.input_size(), nout = n.output_size();
    if (exact && (nin < schema->min_input() || nin > schema->max_input())) {
      bad("takes " +
          (schema->min_input() == schema->max_input()
               ? std::to_string(schema->min_input())
               : std::to_string(schema->min_input()) + " to " +
                     (schema->max_input() == std::numeric_limits<int>::max()
                          ? std::string("any number of")
                          : std::to_string(schema->max_input()))) +
          (schema->max_input() == 1 ? " input" : " inputs") + ", got " + std::to_string(nin));
    }
    if (exact && (nout < schema->min_output() || nout > schema->max_output()))
      bad("has " + std::to_string(nout) + " outputs; opset " + std::to_string(opset) +
          " allows " + std::to_string(schema->min_output()) + " to " +
          std::to_string(schema->max_output()));
    std::set<std::string> seen;
    for (const auto &a : n.attribute()) {
      if (!seen.insert(a.name()).second) {
        bad("attribute '" + a.name() + "' is given twice");
        continue;
      }
      auto def = schema->attributes().find(a.name());
      if (def == schema->attributes().end())
        continue; // unknown attributes are ignored, as ONNX Runtime does
      if (a.type() != onnx::AttributeProto::UNDEFINED && (int)a.type() != (int)def->second.type)
        bad("attribute '" + a.name() + "' must be " + attrTypeName(def->second.type) + " (got " +
            attrTypeName(a.type()) + ")");
    }
    if (exact)
      for (const auto &[name, def] : schema->attributes())
        if (def.required && !seen.count(name))
          bad("missing required attribute '" + name + "'");
  }
  return ok;
}

void Importer::checkTensorSize(ArrayRef<int64_t> shape, Type elt, const std::string &what) {
  int64_t n;
  try {
    n = product(shape);
  } catch (NodeError &e) {
    fail(what + ": " + e.msg);
  }
  int64_t es = elt.isIntOrFloat() ? std::max<int64_t>(1, elt.getIntOrFloatBitWidth() / 8) : 1;
  if (n > opts.maxTensorBytes / es)
    fail(what + " of shape " + joinDims(shape) + " would need " + std::to_string(n) + " x " +
         std::to_string(es) + " bytes, over the " + std::to_string(opts.maxTensorBytes >> 20) +
         " MiB tensor limit (--max-tensor-mib)");
}

std::optional<Type> Importer::valueInfoType(const onnx::ValueInfoProto &vi, bool isInput) {
  if (!vi.type().has_tensor_type()) {
    error(fileLoc(), "graph value '" + vi.name() +
                         "' is not a tensor (sequences, maps and optionals are not supported)");
    return std::nullopt;
  }
  const auto &tt = vi.type().tensor_type();
  Type elt = elementType(tt.elem_type());
  if (!elt) {
    error(fileLoc(), "graph value '" + vi.name() + "' has dtype " + dtypeName(tt.elem_type()) +
                         "; supported: float32, float64, float16, bfloat16, float8 (e4m3fn, e4m3fnuz, e5m2, "
                         "e5m2fnuz), int64, int32, int16, int8, uint64, uint32, uint16, uint8, bool");
    return std::nullopt;
  }
  SmallVector<int64_t> shape;
  auto pinned = opts.inputShapes.find(vi.name());
  if (isInput && pinned != opts.inputShapes.end()) {
    if (tt.has_shape() && tt.shape().dim_size() != (int)pinned->second.size()) {
      error(fileLoc(), "--input-shape for '" + vi.name() + "' has rank " +
                           std::to_string(pinned->second.size()) + " but the model says " +
                           std::to_string(tt.shape().dim_size()));
      return std::nullopt;
    }
    shape.assign(pinned->second.begin(), pinned->second.end());
  } else {
    if (!tt.has_shape()) {
      error(fileLoc(), "graph input '" + vi.name() + "' has no shape; pin it with --input-shape " +
                           vi.name() + "=d0,d1,...");
      return std::nullopt;
    }
    for (const auto &d : tt.shape().dim()) {
      if (d.has_dim_value() && d.dim_value() >= 0) {
        shape.push_back(d.dim_value());
        continue;
      }
      if (!isInput)
        return Type(); // output shapes are inferred
      error(fileLoc(), "input '" + vi.name() + "' has symbolic dimension '" + d.dim_param() +
                           "'; pin it with --input-shape " + vi.name() + "=d0,d1,...");
      return std::nullopt;
    }
  }
  try {
    checkTensorSize(shape, elt, "input '" + vi.name() + "'");
  } catch (NodeError &e) {
    error(fileLoc(), e.msg);
    return std::nullopt;
  }
  return Type(RankedTensorType::get(shape, elt));
}

bool Importer::tensorToInt(const onnx::TensorProto &t, IntConst &out) {
  out.shape.assign(t.dims().begin(), t.dims().end());
  int64_t n = product(out.shape);
  out.data.clear();
  out.dtype = t.data_type();
  switch (t.data_type()) {
  case onnx::TensorProto::INT64:
    if (t.has_raw_data()) {
      if ((int64_t)t.raw_data().size() != n * 8) fail("initializer '" + t.name() + "': raw_data size disagrees with its shape");
      out.data.resize(n);
      if (n) memcpy(out.data.data(), t.raw_data().data(), n * 8);
    } else {
      out.data.assign(t.int64_data().begin(), t.int64_data().end());
    }
    break;
  case onnx::TensorProto::INT32:
  case onnx::TensorProto::INT16:
  case onnx::TensorProto::INT8:
  case onnx::TensorProto::UINT8:
  case onnx::TensorProto::UINT16:
  case onnx::TensorProto::UINT32:
  case onnx::TensorProto::UINT64:
  case onnx::TensorProto::BOOL: {
    int dt = t.data_type();
    bool isUnsigned = dt == onnx::TensorProto::UINT8 || dt == onnx::TensorProto::UINT16 ||
                      dt == onnx::TensorProto::UINT32 || dt == onnx::TensorProto::UINT64 ||
                      dt == onnx::TensorProto::BOOL;
    size_t es = dt == onnx::TensorProto::UINT64 ? 8
                : dt == onnx::TensorProto::INT32 || dt == onnx::TensorProto::UINT32 ? 4
                : dt == onnx::TensorProto::INT16 || dt == onnx::TensorProto::UINT16 ? 2 : 1;
    if (t.has_raw_data()) {
      if ((int64_t)t.raw_data().size() != n * (int64_t)es) fail("initializer '" + t.name() + "': raw_data size disagrees with its shape");
      const char *raw = t.raw_data().data();
      for (int64_t i = 0; i < n; ++i) {
        uint64_t u = 0;
        memcpy(&u, raw + es * i, es); // little-endian, as ONNX stores raw data
        int64_t v = (int64_t)u;
        if (!isUnsigned && es < 8) { // sign-extend
          unsigned sh = 64 - 8 * es;
          v = (int64_t)(u << sh) >> sh;
        }
        out.data.push_back(v);
      }
    } else if (dt == onnx::TensorProto::UINT32 || dt == onnx::TensorProto::UINT64) {
      out.data.assign(t.uint64_data().begin(), t.uint64_data().end());
    } else {
      out.data.assign(t.int32_data().begin(), t.int32_data().end());
      if (isUnsigned) // int32_data holds the values; keep them in range
        for (int64_t &v : out.data) v &= (int64_t(1) << (8 * es)) - 1;
    }
    break;
  }
  default:
    return false;
  }
  if ((int64_t)out.data.size() != n)
    fail("tensor '" + t.name() + "': data has " + std::to_string(out.data.size()) +
         " elements but its shape " + joinDims(out.shape) + " needs " + std::to_string(n));
  return true;
}

Value Importer::tensorToFloat(const onnx::TensorProto &t) {
  SmallVector<int64_t> shape(t.dims().begin(), t.dims().end());
  for (int64_t d : shape)
    if (d < 0) fail("tensor '" + t.name() + "' has a negative dimension");
  int64_t n = product(shape);
  if (n > (int64_t(1) << 33))
    fail("tensor '" + t.name() + "' is larger than 32 GiB");
  if (t.data_type() == onnx::TensorProto::DOUBLE) {
    std::vector<float> f;
    if (t.has_raw_data()) {
      if ((int64_t)t.raw_data().size() != n * 8) fail("tensor '" + t.name() + "': raw_data size disagrees with its shape");
      for (int64_t i = 0; i < n; ++i) { double d; memcpy(&d, t.raw_data().data() + 8 * i, 8); f.push_back((float)d); }
    } else {
      f.assign(t.double_data().begin(), t.double_data().end());
    }
    if ((int64_t)f.size() != n) fail("tensor '" + t.name() + "': data size disagrees with its shape");
    return b.create<ConstantOp>(loc, DenseElementsAttr::get(f32(shape), ArrayRef<float>(f)));
  }
  if (Type f8 = elementType(t.data_type()); f8 && isFloat8(f8)) {
    // float8: one byte each, in raw_data or int32_data.
    std::vector<uint8_t> bits;
    if (t.has_raw_data()) bits.assign(t.raw_data().begin(), t.raw_data().end());
    else for (int32_t v : t.int32_data()) bits.push_back((uint8_t)v);
    if ((int64_t)bits.size() != n) fail("tensor '" + t.name() + "': data size disagrees with its shape");
    SmallVector<APFloat> vals;
    for (uint8_t v : bits) vals.push_back(APFloat(cast<FloatType>(f8).getFloatSemantics(), APInt(8, v)));
    return b.create<ConstantOp>(loc, DenseElementsAttr::get(RankedTensorType::get(shape, f8), vals));
  }
  if (t.data_type() == onnx::TensorProto::FLOAT16 || t.data_type() == onnx::TensorProto::BFLOAT16) {
    // 16-bit floats: raw_data holds them, or int32_data their bit patterns.
    bool half = t.data_type() == onnx::TensorProto::FLOAT16;
    std::vector<uint16_t> bits;
    if (t.has_raw_data()) {
      if ((int64_t)t.raw_data().size() != n * 2) fail("tensor '" + t.name() + "': raw_data size disagrees with its shape");
      bits.resize(n);
      if (n) memcpy(bits.data(), t.raw_data().data(), n * 2);
    } else {
      for (int32_t v : t.int32_data()) bits.push_back((uint16_t)v);
    }
    if ((int64_t)bits.size() != n) fail("tensor '" + t.name() + "': data size disagrees with its shape");
    const llvm::fltSemantics &sem = half ? APFloat::IEEEhalf() : APFloat::BFloat();
    SmallVector<APFloat> vals;
    for (uint16_t v : bits) vals.push_back(APFloat(sem, APInt(16, v)));
    Type et = half ? Type(b.getF16Type()) : Type(b.getBF16Type());
    return b.create<ConstantOp>(loc, DenseElementsAttr::get(RankedTensorType::get(shape, et), vals));
  }
  if (t.data_type() != onnx::TensorProto::FLOAT)
    fail("tensor '" + t.name() + "' has unsupported dtype " + dtypeName(t.data_type()));
  auto type = f32(shape);
  if (t.has_raw_data()) {
    if ((int64_t)t.raw_data().size() != n * 4)
      fail("tensor '" + t.name() + "': raw_data has " + std::to_string(t.raw_data().size()) +
           " bytes but shape " + joinDims(shape) + " needs " + std::to_string(n * 4));
    ArrayRef<char> raw(t.raw_data().data(), t.raw_data().size());
    if (n >= 64 && reinterpret_cast<uintptr_t>(raw.data()) % alignof(float) == 0) {
      // Large weights: reference the protobuf's buffer (kept alive by the
      // ImportedModel) instead of copying it.
      auto blob = UnmanagedAsmResourceBlob::allocateWithAlign(raw, alignof(float));
      // Resource keys must be identifiers to print and parse back.
      std::string key = t.name().empty() ? "weight" : t.name();
      for (char &ch : key)
        if (!isalnum((unsigned char)ch) && ch != '_' && ch != '.') ch = '_';
      if (isdigit((unsigned char)key[0])) key.insert(0, "w");
      auto attr = DenseResourceElementsAttr::get(type, key, std::move(blob));
      return b.create<ConstantOp>(loc, attr);
    }
    std::vector<float> f(n);
    if (n) memcpy(f.data(), raw.data(), n * 4);
    return b.create<ConstantOp>(loc, DenseElementsAttr::get(type, ArrayRef<float>(f)));
  }
  if (t.float_data_size() != n)
    fail("tensor '" + t.name() + "': float_data has " + std::to_string(t.float_data_size()) +
         " elements but shape " + joinDims(shape) + " needs " + std::to_string(n));
  ArrayRef<float> data(t.float_data().data(), t.float_data_size());
  return b.create<ConstantOp>(loc, DenseElementsAttr::get(type, data));
}

void Importer::importInitializer(const onnx::TensorProto &t) {
  IntConst ic;
  if (t.data_type() != onnx::TensorProto::FLOAT && t.data_type() != onnx::TensorProto::DOUBLE &&
      tensorToInt(t, ic)) {
    ints[t.name()] = std::move(ic);
    return;
  }
  values[t.name()] = tensorToFloat(t);
}

ImportedModel Importer::run(std::string bytes) {
  ImportedModel result;
  if (!loadModel(std::move(bytes)))
    return result;
  result.storage = model;
  result.opset = opset;
  const onnx::GraphProto &g = model->graph();
  result.onnxNodes = g.node_size();

  auto module = ModuleOp::create(fileLoc());
  b.setInsertionPointToEnd(module.getBody());
  func::FuncOp fn;
  if (!importGraph(fn, module) || hadError) {
    module.erase();
    return result;
  }
  module->setAttr("kiln.onnx_nodes", b.getI64IntegerAttr(g.node_size()));
  module->setAttr("kiln.opset", b.getI64IntegerAttr(opset));
  result.module = module;
  return result;
}

bool Importer::importGraph(func::FuncOp &fn, ModuleOp module) {
  const onnx::GraphProto &g = model->graph();
  if (g.node_size() == 0 && g.output_size() == 0) {
    error(fileLoc(), "graph is empty (no nodes and no outputs)");
    return false;
  }
  if (g.output_size() == 0) {
    error(fileLoc(), "graph has no outputs");
    return false;
  }

  // Check every node's domain and op first, so all unsupported ops are
  // listed at once before any conversion work.
  const auto &table = converters();
  bool unsupported = false;
  for (int i = 0; i < g.node_size(); ++i) {
    const auto &n = g.node(i);
    if (!n.domain().empty() && n.domain() != "ai.onnx") {
      error(nodeLoc(n, i), "unsupported domain '" + n.domain() + "'");
      unsupported = true;
    } else if (!table.count(n.op_type())) {
      error(nodeLoc(n, i), "unsupported op");
      unsupported = true;
    }
  }
  if (opset < kMinFullOpset) {
    // Opsets 1-6 (2017 and before): only ops whose semantics for the inputs
    // we accept are unchanged since then; the rest changed attributes,
    // defaults or broadcasting rules.
    static const std::set<std::string> legacyOpsetOps = {
        "Relu", "Sigmoid", "Tanh", "Elu", "Selu", "HardSigmoid", "Softplus", "Softsign",
        "LeakyRelu", "Abs", "Neg", "Exp", "Log", "Sqrt", "Floor", "Ceil", "Reciprocal",
        "Not", "Identity", "Transpose", "GlobalAveragePool", "GlobalMaxPool",
        "InstanceNormalization"};
    for (int i = 0; i < g.node_size(); ++i)
      if (!legacyOpsetOps.count(g.node(i).op_type())) {
        error(nodeLoc(g.node(i), i), "opset " + std::to_string(opset) + " is older than " +
                                         std::to_string(kMinFullOpset) +
                                         ", where only elementwise activations, Not, Transpose, global "
                                         "pooling and InstanceNormalization are supported");
        unsupported = true;
      }
  }
  if (unsupported || !checkSchemas())
    return false;

  std::set<std::string> initNames;
  for (const auto &t : g.initializer()) {
    if (!initNames.insert(t.name()).second) {
      error(fileLoc(), "duplicate initializer name '" + t.name() + "'");
      return false;
    }
  }

  SmallVector<Type> argTypes;
  SmallVector<Attribute> inNames;
  SmallVector<std::string> argNames;
  for (const auto &vi : g.input()) {
    if (initNames.count(vi.name()))
      continue; // an initializer with a default value; treat as constant
    auto t = valueInfoType(vi, /*isInput=*/true);
    if (!t)
      continue;
    argTypes.push_back(*t);
    argNames.push_back(vi.name());
    inNames.push_back(b.getStringAttr(vi.name()));
  }
  for (auto &kv : opts.inputShapes) {
    if (std::find(argNames.begin(), argNames.end(), kv.first) == argNames.end())
      error(fileLoc(), "--input-shape names '" + kv.first + "', which is not a graph input");
  }
  if (hadError)
    return false;

  fn = b.create<func::FuncOp>(fileLoc(), "main", b.getFunctionType(argTypes, {}));
  Block *entry = fn.addEntryBlock();
  b.setInsertionPointToStart(entry);
  for (size_t i = 0; i < argNames.size(); ++i) {
    if (values.count(argNames[i])) {
      error(fileLoc(), "duplicate graph input name '" + argNames[i] + "'");
      return false;
    }
    values[argNames[i]] = entry->getArgument(i);
  }

  loc = fileLoc();
  for (const auto &t : g.initializer()) {
    try {
      importInitializer(t);
    } catch (NodeError &e) {
      error(fileLoc(), e.msg);
    }
  }
  if (hadError)
    return false;

  for (int i = 0; i < g.node_size(); ++i) {
    node = &g.node(i);
    loc = nodeLoc(*node, i);
    bool skip = false;
    for (const auto &in : node->input())
      if (poisoned.count(in))
        skip = true;
    for (const auto &out : node->output()) {
      if (!out.empty() && (values.count(out) || ints.count(out))) {
        error(loc, "output name '" + out + "' is already defined (duplicate tensor name)");
        skip = true;
      }
    }
    if (!skip) {
      try {
        convertNode();
        continue;
      } catch (NodeError &e) {
        error(loc, e.msg);
      }
    }
    for (const auto &out : node->output())
      poisoned.insert(out);
  }
  if (hadError)
    return false;

  SmallVector<Value> results;
  SmallVector<Attribute> outNames;
  for (const auto &vo : g.output()) {
    auto it = values.find(vo.name());
    Value v;
    if (it != values.end()) {
      v = it->second;
    } else if (ints.count(vo.name())) {
      try {
        v = materializeInt(ints[vo.name()]);
      } catch (NodeError &e) {
        error(fileLoc(), "graph output '" + vo.name() + "': " + e.msg);
        continue;
      }
    } else {
      error(fileLoc(), "graph output '" + vo.name() + "' is not produced by any node");
      continue;
    }
    results.push_back(v);
    outNames.push_back(b.getStringAttr(vo.name()));
  }
  if (hadError)
    return false;
  b.create<func::ReturnOp>(fileLoc(), results);
  fn.setType(b.getFunctionType(argTypes, ValueRange(results).getTypes()));
  fn->setAttr("kiln.input_names", b.getArrayAttr(inNames));
  fn->setAttr("kiln.output_names", b.getArrayAttr(outNames));
  (void)module;
  return true;
}

//===----------------------------------------------------------------------===//
// Integer constant folding (shape arithmetic)
//===----------------------------------------------------------------------===//

/// Folds nodes whose inputs are all compile-time integer tensors (or, for
/// Shape, any tensor with a static shape). Returns true if folded.
bool Importer::tryFoldInts() {
  const std::string &op = node->op_type();
  auto allInt = [&]() {
    for (int i = 0; i < numInputs(); ++i)
      if (hasInput(i) && !isIntConst(i))
        return false;
    return numInputs() > 0;
  };
  if (op == "Shape") {
    std::vector<int64_t> dims;
    if (isIntConst(0))
      dims = intInput(0, "data").shape;
    else {
      auto s = shapeOf(input(0));
      dims.assign(s.begin(), s.end());
    }
    int64_t r = dims.size();
    int64_t start = attrInt("start", 0), end = attrInt("end", r);
    if (start < 0) start += r;
    if (end < 0) end += r;
    start = std::clamp<int64_t>(start, 0, r);
    end = std::clamp<int64_t>(end, start, r);
    IntConst c;
    c.data.assign(dims.begin() + start, dims.begin() + end);
    c.shape = {(int64_t)c.data.size()};
    setIntOutput(0, c);
    return true;
  }
  if (op == "Size") {
    auto s = isIntConst(0) ? ArrayRef<int64_t>(intInput(0, "data").shape) : shapeOf(input(0));
    setIntOutput(0, IntConst{{}, {product(s)}});
    return true;
  }
  if (op == "Constant") {
    if (auto *a = attr("value")) {
      IntConst c;
      if (a->has_t() && a->t().data_type() != onnx::TensorProto::FLOAT &&
          a->t().data_type() != onnx::TensorProto::DOUBLE && tensorToInt(a->t(), c)) {
        setIntOutput(0, c);
        return true;
      }
    }
    if (auto *a = attr("value_int")) { setIntOutput(0, IntConst{{}, {a->i()}}); return true; }
    if (auto *a = attr("value_ints")) {
      IntConst c; c.data.assign(a->ints().begin(), a->ints().end());
      c.shape = {(int64_t)c.data.size()};
      setIntOutput(0, c);
      return true;
    }
    return false;
  }
  if (op == "ConstantOfShape") {
    const IntConst &s = intInput(0, "shape");
    auto *a = attr("value");
    if (!a || !a->has_t() || a->t().data_type() == onnx::TensorProto::FLOAT) {
      float v = 0;
      if (a && a->has_t()) {
        auto t = a->t();
        if (t.has_raw_data() && t.raw_data().size() >= 4) memcpy(&v, t.raw_data().data(), 4);
        else if (t.float_data_size()) v = t.float_data(0);
      }
      for (int64_t d : s.data) if (d < 0) fail("negative dimension in shape");
      auto type = f32(s.data);
      setOutput(0, b.create<ConstantOp>(loc, DenseElementsAttr::get(type, v)));
      return true;
    }
    IntConst val;
    if (!tensorToInt(a->t(), val) || val.data.size() != 1) fail("'value' must hold one element");
    for (int64_t d : s.data) if (d < 0) fail("negative dimension in shape");
    if (product(s.data) > kMaxFoldElements) {
      // Too big to fold: a splat constant tensor (checked against the limit).
      Type et = elementType(val.dtype);
      if (!et || isa<FloatType>(et)) fail(std::string("dtype ") + dtypeName(val.dtype) + " is not supported");
      auto t = RankedTensorType::get(s.data, et);
      auto splat = DenseElementsAttr::get(t, APInt(t.getElementTypeBitWidth(), val.data[0], true));
      setOutput(0, b.create<ConstantOp>(loc, splat));
      return true;
    }
    IntConst c{s.data, std::vector<int64_t>(product(s.data), val.data[0]), val.dtype};
    setIntOutput(0, c);
    return true;
  }
  if (!allInt())
    return false;
  if (op == "Identity" || op == "Cast") {
    IntConst c = intInput(0, "input");
    if (op == "Cast") {
      int64_t to = attrInt("to", 0);
      if (to == onnx::TensorProto::FLOAT) {
        setOutput(0, materializeIntAsFloat(c));
        return true;
      }
      if (to != onnx::TensorProto::INT64 && to != onnx::TensorProto::INT32 &&
          to != onnx::TensorProto::BOOL)
        return false;
      for (int64_t &v : c.data) {
        if (to == onnx::TensorProto::BOOL) v = v != 0;
        else if (to == onnx::TensorProto::INT32) v = (int32_t)v;
      }
      c.dtype = (int32_t)to;
    }
    setIntOutput(0, c);
    return true;
  }
  if (op == "Unsqueeze" || op == "Squeeze" || op == "Reshape" || op == "Flatten") {
    // Shape-only ops on integer constants: same data, new shape.
    IntConst in = intInput(0, "data");
    auto s = viewShape(in.shape);
    setIntOutput(0, IntConst{{s.begin(), s.end()}, in.data, in.dtype});
    return true;
  }
  if (op == "Concat") {
    IntConst c;
    for (int i = 0; i < numInputs(); ++i) {
      const IntConst &x = intInput(i, "input");
      c.dtype = x.dtype;
      if (x.shape.size() > 1) return false;
      c.data.insert(c.data.end(), x.data.begin(), x.data.end());
    }
    c.shape = {(int64_t)c.data.size()};
    setIntOutput(0, c);
    return true;
  }
  if (op == "Gather") {
    const IntConst &d = intInput(0, "data");
    const IntConst &idx = intInput(1, "indices");
    if (d.shape.size() != 1) return false;
    int64_t n = d.data.size();
    IntConst c{idx.shape, {}, d.dtype};
    for (int64_t i : idx.data) {
      if (i < -n || i >= n) fail("gather index out of range");
      c.data.push_back(d.data[i < 0 ? i + n : i]);
    }
    setIntOutput(0, c);
    return true;
  }
  if (op == "Slice") {
    const IntConst &d = intInput(0, "data");
    if (d.shape.size() != 1 || opset < 10) return false;
    int64_t n = d.data.size();
    int64_t s = intInput(1, "starts").data.at(0), e = intInput(2, "ends").data.at(0);
    int64_t st = hasInput(4) ? intInput(4, "steps").data.at(0) : 1;
    if (st != 1) return false;
    if (s < 0) s += n;
    if (e < 0) e += n;
    s = std::clamp<int64_t>(s, 0, n);
    e = std::clamp<int64_t>(e, s, n);
    IntConst c{{e - s}, std::vector<int64_t>(d.data.begin() + s, d.data.begin() + e), d.dtype};
    setIntOutput(0, c);
    return true;
  }
  // Arithmetic is folded for the index dtypes only; narrow and unsigned
  // integers wrap and compare differently, so the generated code does it.
  auto indexDtype = [](int32_t dt) {
    return dt == onnx::TensorProto::INT64 || dt == onnx::TensorProto::INT32;
  };
  if (op == "Neg" || op == "Abs" || op == "Sign") {
    if (!indexDtype(intInput(0, "X").dtype)) return false;
    IntConst c = intInput(0, "X");
    for (int64_t &v : c.data)
      v = op == "Neg"   ? (int64_t)(0 - (uint64_t)v)
          : op == "Abs" ? (v < 0 ? (int64_t)(0 - (uint64_t)v) : v)
                        : (v > 0) - (v < 0);
    setIntOutput(0, c);
    return true;
  }
  if (op == "Add" || op == "Sub" || op == "Mul" || op == "Div" || op == "Equal" ||
      op == "Max" || op == "Min" || op == "Less" || op == "Greater" || op == "LessOrEqual" ||
      op == "GreaterOrEqual") {
    if (numInputs() != 2) return false;
    const IntConst &x = intInput(0, "A"), &y = intInput(1, "B");
    if (!indexDtype(x.dtype) || !indexDtype(y.dtype)) return false;
    if (x.data.size() != y.data.size() && x.data.size() != 1 && y.data.size() != 1)
      return false;
    // Same element count (or one side a single element): the result takes
    // the higher-rank shape, as broadcasting would.
    const IntConst *big = x.data.size() > y.data.size() ? &x
                          : y.data.size() > x.data.size() ? &y
                          : x.shape.size() >= y.shape.size() ? &x : &y;
    if (x.data.size() == y.data.size() && x.shape.size() == y.shape.size() && x.shape != y.shape)
      return false;
    bool compare = op == "Equal" || op == "Less" || op == "Greater" || op == "LessOrEqual" ||
                   op == "GreaterOrEqual";
    IntConst c{big->shape, {}, compare ? (int32_t)onnx::TensorProto::BOOL : x.dtype};
    for (size_t i = 0; i < big->data.size(); ++i) {
      int64_t a = x.data[x.data.size() == 1 ? 0 : i], bb = y.data[y.data.size() == 1 ? 0 : i];
      // Two's-complement wrap-around, as the generated code would compute.
      auto wrap = [](uint64_t v) { return (int64_t)v; };
      if (op == "Add") c.data.push_back(wrap((uint64_t)a + (uint64_t)bb));
      else if (op == "Sub") c.data.push_back(wrap((uint64_t)a - (uint64_t)bb));
      else if (op == "Mul") c.data.push_back(wrap((uint64_t)a * (uint64_t)bb));
      else if (op == "Max") c.data.push_back(std::max(a, bb));
      else if (op == "Min") c.data.push_back(std::min(a, bb));
      else if (op == "Equal") c.data.push_back(a == bb);
      else if (op == "Less") c.data.push_back(a < bb);
      else if (op == "Greater") c.data.push_back(a > bb);
      else if (op == "LessOrEqual") c.data.push_back(a <= bb);
      else if (op == "GreaterOrEqual") c.data.push_back(a >= bb);
      else {
        if (bb == 0) fail("integer division by zero in a constant expression");
        if (bb == -1) { c.data.push_back(wrap(0 - (uint64_t)a)); continue; }
        int64_t q = a / bb;
        if ((a % bb != 0) && ((a < 0) != (bb < 0))) --q; // numpy floor division
        c.data.push_back(q);
      }
    }
    setIntOutput(0, c);
    return true;
  }
  return false;
}

void Importer::convertNode() {
  if (tryFoldInts())
    return;
  for (int i = 0; i < numInputs(); ++i) {
    if (!hasInput(i)) continue;
    const std::string &n = node->input(i);
    if (!values.count(n) && !ints.count(n))
      fail("input '" + n + "' is not produced by any node, initializer or graph input"
           " (or the graph is not in topological order / has a cycle)");
  }
  // float16/bfloat16: the op computes in float32 (casts in, casts its
  // float outputs back), as ONNX Runtime does for most ops on CPU. Cast and
  // CastLike convert between the types themselves.
  Type half;
  bool hasF64 = false;
  const std::string &op = node->op_type();
  bool casts = op == "Cast" || op == "CastLike", quant = op == "QuantizeLinear" || op == "DequantizeLinear";
  auto inputType = [&](int i) -> Type {
    auto it = hasInput(i) ? values.find(node->input(i)) : values.end();
    return it == values.end() ? Type() : ttype(it->second).getElementType();
  };
  for (int i = 0; i < numInputs() && !casts; ++i) {
    Type et = inputType(i);
    if (!et) continue;
    if (isFloat8(et) && !quant)
      fail("float8 tensors are supported by Cast, CastLike, QuantizeLinear and DequantizeLinear only");
    if (et.isF16() || et.isBF16()) half = et;
    hasF64 |= et.isF64();
  }
  if (!half || hasF64) {
    converters().at(op)(*this);
    return;
  }
  {
    InputOverride inputs{*this, {}};
    for (int i = 0; i < numInputs(); ++i)
      if (inputType(i) == half) {
        Value v = values[node->input(i)];
        inputs.set(i, b.create<CastOp>(loc, f32(shapeOf(v)), v));
      }
    converters().at(op)(*this);
  }
  for (const std::string &out : node->output()) {
    auto it = out.empty() ? values.end() : values.find(out);
    if (it != values.end() && ttype(it->second).getElementType().isF32())
      it->second = b.create<CastOp>(loc, RankedTensorType::get(shapeOf(it->second), half), it->second);
  }
}

//===----------------------------------------------------------------------===//
// Op converters
//===----------------------------------------------------------------------===//

std::vector<int64_t> Importer::spatialPads(int64_t spatial, ArrayRef<int64_t> in,
                                           ArrayRef<int64_t> kernel, ArrayRef<int64_t> strides,
                                           ArrayRef<int64_t> dil) {
  std::string autoPad = attrString("auto_pad", "NOTSET");
  std::vector<int64_t> pads(2 * spatial, 0);
  if (autoPad == "NOTSET") {
    if (auto p = attrInts("pads")) {
      if ((int64_t)p->size() != 2 * spatial)
        fail("'pads' must have " + std::to_string(2 * spatial) + " values");
      pads = *p;
    }
  } else if (autoPad == "SAME_UPPER" || autoPad == "SAME_LOWER") {
    for (int64_t i = 0; i < spatial; ++i) {
      int64_t out = (in[i] + strides[i] - 1) / strides[i];
      int64_t total = std::max<int64_t>(0, (out - 1) * strides[i] + (kernel[i] - 1) * dil[i] + 1 - in[i]);
      int64_t small = total / 2, large = total - small;
      pads[i] = autoPad == "SAME_UPPER" ? small : large;
      pads[i + spatial] = autoPad == "SAME_UPPER" ? large : small;
    }
  } else if (autoPad != "VALID") {
    fail("unknown auto_pad '" + autoPad + "'");
  }
  for (int64_t p : pads)
    if (p < 0) fail("negative pads are not allowed");
  return pads;
}

static std::vector<int64_t> defaults(std::optional<std::vector<int64_t>> v, size_t n, int64_t d) {
  return v ? *v : std::vector<int64_t>(n, d);
}

void Importer::convConv() {
  Value x = input(0), w = input(1);
  requireF32(x, "X");
  requireF32(w, "W");
  setOutput(0, buildConv(x, w, optInput(2)));
}

/// A Conv of x and w (float32, or int32 for ConvInteger/QLinearConv) with
/// the node's attributes.
Value Importer::buildConv(Value x, Value w, std::optional<Value> bias) {
  auto xs = shapeOf(x), ws = shapeOf(w);
  if (xs.size() < 3 || xs.size() > 4)
    fail("only 1-d and 2-d convolutions are supported (input rank " + std::to_string(xs.size()) + ")");
  if (ws.size() != xs.size())
    fail("weight rank " + std::to_string(ws.size()) + " does not match input rank " + std::to_string(xs.size()));
  int64_t spatial = xs.size() - 2;
  int64_t group = attrInt("group", 1);
  if (group <= 0) fail("group must be positive");
  if (xs[1] % group || ws[0] % group)
    fail("group " + std::to_string(group) + " does not divide channels (" + std::to_string(xs[1]) +
         " in, " + std::to_string(ws[0]) + " out)");
  if (xs[1] / group != ws[1])
    fail("weight expects " + std::to_string(ws[1] * group) + " input channels but input has " +
         std::to_string(xs[1]));
  std::vector<int64_t> kernel(ws.begin() + 2, ws.end());
  if (auto k = attrInts("kernel_shape"); k && std::vector<int64_t>(*k) != kernel)
    fail("kernel_shape disagrees with the weight shape");
  auto strides = defaults(attrInts("strides"), spatial, 1);
  auto dil = defaults(attrInts("dilations"), spatial, 1);
  if ((int64_t)strides.size() != spatial || (int64_t)dil.size() != spatial)
    fail("strides/dilations must have one value per spatial dim");
  for (int64_t i = 0; i < spatial; ++i)
    if (strides[i] <= 0 || dil[i] <= 0) fail("strides and dilations must be positive");
  auto pads = spatialPads(spatial, xs.drop_front(2), kernel, strides, dil);
  if (bias && (shapeOf(*bias).size() != 1 || shapeOf(*bias)[0] != ws[0]))
    fail("bias must have shape [" + std::to_string(ws[0]) + "]");

  // 1-d convolution runs as 2-d with a unit height.
  if (spatial == 1) {
    x = reshape(x, {xs[0], xs[1], 1, xs[2]});
    w = reshape(w, {ws[0], ws[1], 1, ws[2]});
    kernel.insert(kernel.begin(), 1);
    strides.insert(strides.begin(), 1);
    dil.insert(dil.begin(), 1);
    pads = {0, pads[0], 0, pads[1]};
  }
  auto x4 = shapeOf(x);
  SmallVector<int64_t> out{x4[0], ws[0]};
  for (int i = 0; i < 2; ++i) {
    int64_t eff = (kernel[i] - 1) * dil[i] + 1;
    int64_t o = (x4[2 + i] + pads[i] + pads[i + 2] - eff) / strides[i] + 1;
    if (x4[2 + i] + pads[i] + pads[i + 2] < eff || o <= 0)
      fail("kernel is larger than the padded input");
    out.push_back(o);
  }
  Value r = b.create<ConvOp>(loc, like(x, out), x, w, bias.value_or(Value()),
                             b.getDenseI64ArrayAttr(strides), b.getDenseI64ArrayAttr(dil),
                             b.getDenseI64ArrayAttr(pads), b.getI64IntegerAttr(group));
  if (spatial == 1)
    r = reshape(r, {out[0], out[1], out[3]});
  return r;
}

void Importer::convConvTranspose() {
  Value x = input(0), w = input(1);
  requireF32(x, "X");
  auto xs = shapeOf(x), ws = shapeOf(w);
  if (xs.size() != 4 || ws.size() != 4)
    fail("only 2-d transposed convolution is supported");
  int64_t group = attrInt("group", 1);
  if (group <= 0 || xs[1] % group) fail("group must divide input channels");
  if (ws[0] != xs[1]) fail("weight's first dim must equal input channels");
  std::vector<int64_t> kernel(ws.begin() + 2, ws.end());
  auto strides = defaults(attrInts("strides"), 2, 1);
  auto dil = defaults(attrInts("dilations"), 2, 1);
  auto outPad = defaults(attrInts("output_padding"), 2, 0);
  std::vector<int64_t> pads = defaults(attrInts("pads"), 4, 0);
  if (strides.size() != 2 || dil.size() != 2 || outPad.size() != 2 || pads.size() != 4)
    fail("attribute lengths do not match 2 spatial dims");
  for (int i = 0; i < 2; ++i)
    if (strides[i] <= 0 || dil[i] <= 0) fail("strides and dilations must be positive");
  std::string autoPad = attrString("auto_pad", "NOTSET");
  auto outShape = attrInts("output_shape");
  SmallVector<int64_t> out{xs[0], ws[1] * group};
  for (int i = 0; i < 2; ++i) {
    int64_t full = strides[i] * (xs[2 + i] - 1) + outPad[i] + (kernel[i] - 1) * dil[i] + 1;
    if (outShape || autoPad == "SAME_UPPER" || autoPad == "SAME_LOWER") {
      int64_t target = outShape ? (*outShape)[outShape->size() - 2 + i] : xs[2 + i] * strides[i];
      int64_t total = full - target;
      if (total < 0) fail("output_shape is larger than the transposed convolution can produce");
      bool lower = autoPad == "SAME_LOWER";
      pads[i] = lower ? total - total / 2 : total / 2;
      pads[i + 2] = total - pads[i];
    } else if (autoPad == "VALID") {
      pads[i] = pads[i + 2] = 0;
    }
    out.push_back(full - pads[i] - pads[i + 2]);
  }
  std::optional<Value> bias = optInput(2);
  setOutput(0, b.create<ConvTransposeOp>(loc, f32(out), x, w, bias.value_or(Value()),
                                         b.getDenseI64ArrayAttr(strides),
                                         b.getDenseI64ArrayAttr(dil),
                                         b.getDenseI64ArrayAttr(pads), b.getI64IntegerAttr(group)));
}

void Importer::convGemm() {
  Value a = input(0), bb = input(1);
  requireF32(a, "A");
  requireF32(bb, "B");
  auto as = shapeOf(a), bs = shapeOf(bb);
  if (as.size() != 2 || bs.size() != 2) fail("A and B must be 2-d");
  bool ta = attrInt("transA", 0), tb = attrInt("transB", 0);
  int64_t M = ta ? as[1] : as[0], K = ta ? as[0] : as[1];
  int64_t K2 = tb ? bs[1] : bs[0], N = tb ? bs[0] : bs[1];
  if (K != K2) fail("inner dimensions differ: " + std::to_string(K) + " vs " + std::to_string(K2));
  std::optional<Value> c = optInput(2);
  if (c && failed(broadcastShapes(shapeOf(*c), {M, N})))
    fail("C of shape " + joinDims(shapeOf(*c)) + " cannot broadcast to " + joinDims({M, N}));
  if (c && ArrayRef<int64_t>(*broadcastShapes(shapeOf(*c), {M, N})) != ArrayRef<int64_t>{M, N})
    fail("C must broadcast to [M, N]");
  setOutput(0, b.create<GemmOp>(loc, f32({M, N}), a, bb, c.value_or(Value()),
                                b.getF32FloatAttr(attrFloat("alpha", 1.0f)),
                                b.getF32FloatAttr(attrFloat("beta", 1.0f)), b.getBoolAttr(ta),
                                b.getBoolAttr(tb)));
}

void Importer::convMatMul() {
  Value a = input(0), bb = input(1);
  requireF32(a, "A");
  requireF32(bb, "B");
  setOutput(0, buildMatMul(a, bb));
}

/// numpy matmul of a and bb (float32, or int32 for the integer ops).
Value Importer::buildMatMul(Value a, Value bb) {
  SmallVector<int64_t> as(shapeOf(a)), bs(shapeOf(bb));
  if (as.empty() || bs.empty()) fail("MatMul operands must have rank >= 1");
  bool vecA = as.size() == 1, vecB = bs.size() == 1;
  if (vecA) { as.insert(as.begin(), 1); a = reshape(a, as); }
  if (vecB) { bs.push_back(1); bb = reshape(bb, bs); }
  if (as.back() != bs[bs.size() - 2])
    fail("inner dimensions differ: " + joinDims(shapeOf(a)) + " x " + joinDims(shapeOf(bb)));
  auto batch = broadcastShapes(ArrayRef<int64_t>(as).drop_back(2), ArrayRef<int64_t>(bs).drop_back(2));
  if (failed(batch)) fail("batch dimensions cannot broadcast");
  SmallVector<int64_t> out(*batch);
  out.push_back(as[as.size() - 2]);
  out.push_back(bs.back());
  Value r = b.create<MatMulOp>(loc, like(a, out), a, bb);
  SmallVector<int64_t> fin(*batch);
  if (!vecA) fin.push_back(out[out.size() - 2]);
  if (!vecB) fin.push_back(out.back());
  return reshape(r, fin);
}

//===----------------------------------------------------------------------===//
// Quantization: decomposed into kiln's elementwise ops (which fuse with
// their neighbours) and int32 contractions.
//===----------------------------------------------------------------------===//

/// A scale or zero point shaped to broadcast against x (of shape xShape):
/// a scalar as it is, a 1-d per-axis tensor along `axis`, a blocked one
/// (same rank as x, dim `axis` = blocks) repeated over each block.
Value Importer::quantParam(Value v, int64_t axis, int64_t rank, ArrayRef<int64_t> xShape) {
  auto s = shapeOf(v);
  int64_t n = ttype(v).getNumElements();
  if (s.empty() || (s.size() == 1 && n == 1 && (rank == 0 || xShape[axis] != 1))) return reshape(v, {});
  if (s.size() == 1) {
    if (s[0] != xShape[axis])
      fail("per-axis scale/zero point has " + std::to_string(s[0]) + " values but axis " +
           std::to_string(axis) + " has " + std::to_string(xShape[axis]));
    SmallVector<int64_t> shape(rank, 1);
    shape[axis] = s[0];
    return reshape(v, shape);
  }
  int64_t block = attrInt("block_size", 0);
  if ((int64_t)s.size() != rank || block <= 0)
    fail("scale/zero point of shape " + joinDims(s) + " needs a block_size for blocked quantization");
  for (int64_t i = 0; i < rank; ++i)
    if (i != axis && s[i] != xShape[i]) fail("blocked scale/zero point must match the input off the axis");
  if (s[axis] * block != xShape[axis])
    fail("blocked quantization needs the axis (" + std::to_string(xShape[axis]) +
         ") to be a multiple of block_size " + std::to_string(block));
  SmallVector<int64_t> split(s), full(s);
  split.insert(split.begin() + axis + 1, 1);
  full.insert(full.begin() + axis + 1, block);
  Value e = b.create<ExpandOp>(loc, like(v, full), reshape(v, split));
  return reshape(e, xShape);
}

/// The node's quantization axis; only checked when the scale is not a
/// scalar (per-tensor quantization ignores it).
int64_t Importer::quantAxis(Value x, Value scale) {
  int64_t rank = shapeOf(x).size();
  if (ttype(scale).getNumElements() == 1 && shapeOf(scale).size() <= 1) return 0;
  return normAxis(attrInt("axis", 1), rank);
}

/// y = saturate(round_half_even(x / scale) + zp), as `out` (an integer type).
Value Importer::quantize(Value x, Value scale, std::optional<Value> zp, Type out, int64_t axis) {
  auto xs = shapeOf(x);
  int64_t rank = xs.size();
  auto it = cast<IntegerType>(out);
  unsigned w = it.getWidth();
  double lo = it.isUnsigned() ? 0 : -std::ldexp(1.0, w - 1);
  double hi = it.isUnsigned() ? std::ldexp(1.0, w) - 1 : std::ldexp(1.0, w - 1) - 1;
  Value q = b.create<DivOp>(loc, x.getType(), x, quantParam(scale, axis, rank, xs));
  q = b.create<RoundOp>(loc, q.getType(), q);
  if (zp) {
    Value z = castTo(quantParam(*zp, axis, rank, xs), b.getF32Type());
    q = b.create<AddOp>(loc, q.getType(), q, z);
  }
  q = b.create<ClipOp>(loc, q.getType(), q, b.getF32FloatAttr((float)lo), b.getF32FloatAttr((float)hi));
  return castTo(q, out);
}

/// y = (x - zp) * scale in float32 (an int32 x is exact below 2^24).
Value Importer::dequantize(Value x, Value scale, std::optional<Value> zp, int64_t axis) {
  auto xs = shapeOf(x);
  int64_t rank = xs.size();
  Value f = castTo(x, b.getF32Type());
  if (zp) {
    Value z = castTo(quantParam(*zp, axis, rank, xs), b.getF32Type());
    f = b.create<SubOp>(loc, f.getType(), f, z);
  }
  Value sc = quantParam(scale, axis, rank, xs);
  auto s = broadcastShapes(shapeOf(f), shapeOf(sc));
  return b.create<MulOp>(loc, f32(*s), f, sc);
}

/// An 8-bit integer operand minus its zero point, as int32.
Value Importer::integerOperand(Value x, std::optional<Value> zp, int64_t axis) {
  Type et = ttype(x).getElementType();
  if (!isa<IntegerType>(et) || et.isInteger(1) || et.getIntOrFloatBitWidth() > 16)
    fail("quantized operands must be 8- or 16-bit integers");
  Type i32 = b.getI32Type();
  Value v = castTo(x, i32);
  if (!zp) return v;
  if (ttype(*zp).getElementType() != et) fail("zero point dtype differs from its tensor's");
  auto xs = shapeOf(x);
  Value z = castTo(quantParam(*zp, axis, xs.size(), xs), i32);
  auto s = broadcastShapes(shapeOf(v), shapeOf(z));
  if (failed(s)) fail("zero point does not broadcast");
  return b.create<SubOp>(loc, like(v, *s), v, z);
}

void Importer::convQuantizeLinear() {
  Value x = input(0), scale = input(1);
  std::optional<Value> zp = optInput(2);
  requireF32(x, "x");
  int64_t axis = quantAxis(x, scale);
  Type out = zp ? ttype(*zp).getElementType() : Type();
  if (int64_t od = attrInt("output_dtype", 0)) {
    Type t = elementType(od);
    if (!t) fail(std::string("output_dtype ") + dtypeName(od) + " is not supported");
    if (out && out != t) fail("output_dtype disagrees with the zero point's dtype");
    out = t;
  }
  if (!out) out = b.getIntegerType(8, false);
  if (isFloat8(out)) {
    // y = cast(x / scale + zp) with Cast's rounding and saturation.
    auto xs = shapeOf(x);
    Value q = b.create<DivOp>(loc, x.getType(), x, quantParam(scale, axis, xs.size(), xs));
    if (zp) q = b.create<AddOp>(loc, q.getType(), q, castTo(quantParam(*zp, axis, xs.size(), xs), b.getF32Type()));
    setOutput(0, b.create<CastOp>(loc, RankedTensorType::get(xs, out), q,
                                  b.getBoolAttr(attrInt("saturate", 1) != 0)));
    return;
  }
  if (!isa<IntegerType>(out) || out.isInteger(1))
    fail("only integer and float8 quantization is supported");
  setOutput(0, quantize(x, scale, zp, out, axis));
}

void Importer::convDequantizeLinear() {
  Value x = input(0), scale = input(1);
  std::optional<Value> zp = optInput(2);
  requireF32(scale, "x_scale");
  Type et = ttype(x).getElementType();
  if ((!isa<IntegerType>(et) || et.isInteger(1)) && !isFloat8(et))
    fail("only integer and float8 inputs are supported");
  setOutput(0, dequantize(x, scale, zp, quantAxis(x, scale)));
}

/// y_scale = (max(0, max x) - min(0, min x)) / 255, y_zero_point =
/// saturate(round(-min / y_scale)), y = QuantizeLinear(x) as uint8.
void Importer::convDynamicQuantizeLinear() {
  Value x = input(0);
  requireF32(x, "x");
  int64_t rank = shapeOf(x).size();
  SmallVector<int64_t> all;
  for (int64_t i = 0; i < rank; ++i) all.push_back(i);
  auto axes = b.getDenseI64ArrayAttr(all);
  auto scalar = f32({});
  Value zero = b.create<ConstantOp>(loc, DenseElementsAttr::get(scalar, 0.0f));
  Value mn = b.create<ReduceMinOp>(loc, scalar, x, axes, b.getBoolAttr(false));
  Value mx = b.create<ReduceMaxOp>(loc, scalar, x, axes, b.getBoolAttr(false));
  mn = b.create<MinOp>(loc, scalar, mn, zero);
  mx = b.create<MaxOp>(loc, scalar, mx, zero);
  Value range = b.create<SubOp>(loc, scalar, mx, mn);
  Value c255 = b.create<ConstantOp>(loc, DenseElementsAttr::get(scalar, 255.0f));
  Value scale = b.create<DivOp>(loc, scalar, range, c255);
  Value z = b.create<DivOp>(loc, scalar, b.create<NegOp>(loc, scalar, mn), scale);
  z = b.create<RoundOp>(loc, scalar, z);
  z = b.create<ClipOp>(loc, scalar, z, b.getF32FloatAttr(0), b.getF32FloatAttr(255));
  Type u8 = b.getIntegerType(8, false);
  Value zp = castTo(z, u8);
  setOutput(0, quantize(x, scale, zp, u8, 0));
  setOutput(1, scale);
  setOutput(2, zp);
}

void Importer::convMatMulInteger() {
  Value a = input(0), bb = input(1);
  auto as = shapeOf(a);
  // a_zero_point: scalar, or one per row of A (its second-to-last axis);
  // b_zero_point: scalar, or one per column of B (its last axis).
  Value ai = integerOperand(a, optInput(2), as.size() >= 2 ? as.size() - 2 : 0);
  Value bi = integerOperand(bb, optInput(3), shapeOf(bb).size() - 1);
  setOutput(0, buildMatMul(ai, bi));
}

void Importer::convConvInteger() {
  Value x = input(0), w = input(1);
  // The input's zero point is a scalar; the weight's one per output channel.
  Value xi = integerOperand(x, optInput(2), 1);
  Value wi = integerOperand(w, optInput(3), 0);
  setOutput(0, buildConv(xi, wi, std::nullopt));
}

void Importer::convQLinearMatMul() {
  Value a = input(0), bb = input(3);
  auto as = shapeOf(a);
  Value ai = integerOperand(a, input(2), as.size() >= 2 ? as.size() - 2 : 0);
  Value bi = integerOperand(bb, input(5), shapeOf(bb).size() - 1);
  Value acc = castTo(buildMatMul(ai, bi), b.getF32Type());
  Value sa = quantParam(input(1), as.size() >= 2 ? as.size() - 2 : 0, as.size(), as);
  Value sb = quantParam(input(4), shapeOf(bb).size() - 1, shapeOf(bb).size(), shapeOf(bb));
  auto mulB = [&](Value x, Value y) {
    auto s = broadcastShapes(shapeOf(x), shapeOf(y));
    if (failed(s)) fail("scales do not broadcast");
    return b.create<MulOp>(loc, f32(*s), x, y).getResult();
  };
  Value real = mulB(mulB(acc, sa), sb);
  int64_t r = shapeOf(real).size();
  setOutput(0, quantize(real, input(6), input(7), ttype(input(7)).getElementType(), r ? r - 1 : 0));
}

void Importer::convQLinearConv() {
  Value x = input(0), w = input(3);
  Value xi = integerOperand(x, input(2), 1);
  Value wi = integerOperand(w, input(5), 0);
  std::optional<Value> bias = optInput(8);
  if (bias && ttype(*bias).getElementType() != b.getI32Type()) fail("bias must be int32");
  Value acc = castTo(buildConv(xi, wi, bias), b.getF32Type());
  auto ys = shapeOf(acc);
  Value sx = quantParam(input(1), 1, shapeOf(x).size(), shapeOf(x));
  Value sw = quantParam(input(4), 1, ys.size(), ys); // per output channel
  Value real = b.create<MulOp>(loc, acc.getType(), b.create<MulOp>(loc, acc.getType(), acc, sx), sw);
  setOutput(0, quantize(real, input(6), input(7), ttype(input(7)).getElementType(), 1));
}

template <typename OpT> void Importer::convBinary() {
  if (std::is_same_v<OpT, PReluOp> ? false : numInputs() != 2)
    fail("expects 2 inputs");
  Value x = input(0), y = input(1);
  constexpr bool intOk = std::is_same_v<OpT, AddOp> || std::is_same_v<OpT, SubOp> ||
                         std::is_same_v<OpT, MulOp> || std::is_same_v<OpT, DivOp>;
  if (!intOk || isFloat(x)) {
    requireF32(x, "A");
    requireF32(y, "B");
  }
  requireSameType(x, y, "A and B");
  if (ttype(x).getElementType().isInteger(1)) fail("arithmetic on bool tensors is not defined");
  if (opset < 7 && attr("broadcast"))
    fail("legacy 'broadcast' attribute is not supported");
  auto s = broadcastShapes(shapeOf(x), shapeOf(y));
  if (failed(s))
    fail("shapes " + joinDims(shapeOf(x)) + " and " + joinDims(shapeOf(y)) + " cannot broadcast");
  if (std::is_same_v<OpT, PReluOp> && ArrayRef<int64_t>(*s) != shapeOf(x))
    fail("slope must broadcast to the input's shape");
  setOutput(0, b.create<OpT>(loc, like(x, *s), x, y));
}

template <typename OpT> void Importer::convUnary() {
  Value x = input(0);
  constexpr bool intOk = std::is_same_v<OpT, NegOp> || std::is_same_v<OpT, AbsOp> ||
                         std::is_same_v<OpT, SignOp> || std::is_same_v<OpT, ReluOp>;
  if (!intOk || isFloat(x) || ttype(x).getElementType().isInteger(1))
    requireFloat(x, "X");
  setOutput(0, b.create<OpT>(loc, x.getType(), x));
}

void Importer::convLeakyRelu() {
  Value x = input(0);
  requireF32(x, "X");
  setOutput(0, b.create<LeakyReluOp>(loc, x.getType(), x, b.getF32FloatAttr(attrFloat("alpha", 0.01f))));
}

void Importer::convHardSigmoid() {
  Value x = input(0);
  requireF32(x, "X");
  setOutput(0, b.create<HardSigmoidOp>(loc, x.getType(), x,
                                       b.getF32FloatAttr(attrFloat("alpha", 0.2f)),
                                       b.getF32FloatAttr(attrFloat("beta", 0.5f))));
}

void Importer::convClip() {
  Value x = input(0);
  Type et = ttype(x).getElementType();
  if (isa<IntegerType>(et) && !et.isInteger(1) && opset >= 11) {
    // Integer Clip: Min(Max(x, min), max) with the bound tensors themselves.
    Value r = x;
    for (int i : {1, 2}) {
      if (!hasInput(i)) continue;
      Value bnd = input(i);
      requireSameType(x, bnd, i == 1 ? "input and min" : "input and max");
      if (ttype(bnd).getNumElements() != 1) fail("min/max must be scalars");
      r = i == 1 ? b.create<MaxOp>(loc, x.getType(), r, bnd).getResult()
                 : b.create<MinOp>(loc, x.getType(), r, bnd).getResult();
    }
    setOutput(0, r);
    return;
  }
  requireF32(x, "X");
  float lo = -std::numeric_limits<float>::infinity(), hi = std::numeric_limits<float>::infinity();
  if (opset < 11) {
    lo = attrFloat("min", lo);
    hi = attrFloat("max", hi);
  } else {
    auto bound = [&](int i, float &v) {
      if (!hasInput(i)) return;
      auto c = constantOf(input(i));
      if (!c) needConstant(i, i == 1 ? "min" : "max");
      auto vals = c->getValues<float>();
      if (c->getNumElements() != 1) fail("min/max must be scalars");
      v = *vals.begin();
    };
    bound(1, lo);
    bound(2, hi);
  }
  setOutput(0, b.create<ClipOp>(loc, x.getType(), x, b.getF32FloatAttr(lo), b.getF32FloatAttr(hi)));
}

template <typename OpT> void Importer::convSoftmax() {
  Value x = input(0);
  requireF32(x, "input");
  auto s = shapeOf(x);
  int64_t rank = s.size();
  if (rank == 0) fail("input must have rank >= 1");
  int64_t axis = normAxis(attrInt("axis", opset < 13 ? 1 : -1), rank);
  if (opset < 13 && axis != rank - 1) {
    // Legacy semantics: softmax over the flattened trailing dims.
    int64_t outer = product(s.take_front(axis)), inner = product(s.drop_front(axis));
    Value flat = reshape(x, {outer, inner});
    Value r = b.create<OpT>(loc, flat.getType(), flat, b.getI64IntegerAttr(1));
    setOutput(0, reshape(r, s));
    return;
  }
  setOutput(0, b.create<OpT>(loc, x.getType(), x, b.getI64IntegerAttr(axis)));
}

/// LpPool: (sum over the window of |x|^p)^(1/p), as an average pool that
/// counts padding (times the window size) between two elementwise powers.
void Importer::convLpPool() {
  Value x = input(0);
  requireF32(x, "X");
  int64_t p = attrInt("p", 2);
  if (p < 1 || p > 64) fail("p must be between 1 and 64");
  auto k = attrInts("kernel_shape");
  if (!k) fail("kernel_shape is required");
  int64_t window = 1;
  for (int64_t v : *k) window = mulDims(window, std::max<int64_t>(v, 1));
  auto scalar = [&](float v) { return b.create<ConstantOp>(loc, DenseElementsAttr::get(f32({}), v)); };
  Value a = b.create<AbsOp>(loc, x.getType(), x);
  a = p == 1 ? a : p == 2 ? Value(b.create<MulOp>(loc, x.getType(), a, a))
                          : Value(b.create<PowOp>(loc, x.getType(), a, scalar((float)p)));
  Value pooled = buildPool<AveragePoolOp>(a, /*forceIncludePad=*/true);
  auto t = pooled.getType();
  Value sum = b.create<MulOp>(loc, t, pooled, scalar((float)window));
  Value r = p == 1 ? sum : p == 2 ? Value(b.create<SqrtOp>(loc, t, sum))
                                  : Value(b.create<PowOp>(loc, t, sum, scalar(1.0f / (float)p)));
  setOutput(0, r);
}

template <typename OpT> void Importer::convPool() {
  Value x = input(0);
  Type et = ttype(x).getElementType();
  if (std::is_same_v<OpT, MaxPoolOp>) {
    requireNoOutput(1, "Indices");
    if (attrInt("storage_order", 0) != 0) fail("storage_order=1 is not supported");
    if (isa<IntegerType>(et) && !et.isInteger(1) && et.getIntOrFloatBitWidth() <= 16) {
      // 8/16-bit integers are exact in float32: pool there and cast back.
      setOutput(0, castTo(buildPool<OpT>(castTo(x, b.getF32Type()), false), et));
      return;
    }
  }
  requireF32(x, "X");
  setOutput(0, buildPool<OpT>(x, false));
}

template <typename OpT> Value Importer::buildPool(Value x, bool forceIncludePad) {
  auto xs = shapeOf(x);
  if (xs.size() < 3 || xs.size() > 5)
    fail("only 1-d, 2-d and 3-d pooling is supported (input rank " + std::to_string(xs.size()) + ")");
  int64_t spatial = xs.size() - 2;
  auto k = attrInts("kernel_shape");
  if (!k || (int64_t)k->size() != spatial) fail("kernel_shape is required, one value per spatial dim");
  std::vector<int64_t> kernel = *k;
  auto strides = defaults(attrInts("strides"), spatial, 1);
  auto dil = defaults(attrInts("dilations"), spatial, 1);
  if ((int64_t)strides.size() != spatial || (int64_t)dil.size() != spatial)
    fail("strides/dilations must have one value per spatial dim");
  for (int64_t i = 0; i < spatial; ++i)
    if (strides[i] <= 0 || dil[i] <= 0 || kernel[i] <= 0)
      fail("kernel, strides and dilations must be positive");
  auto pads = spatialPads(spatial, xs.drop_front(2), kernel, strides, dil);
  bool ceil = attrInt("ceil_mode", 0);
  bool includePad = forceIncludePad || attrInt("count_include_pad", 0);
  // The dialect's pooling ops are 2-d over the last two dims; pads {t, l, b, r}.
  auto pool2 = [&](Value x4, std::array<int64_t, 2> kk, std::array<int64_t, 2> ss,
                   std::array<int64_t, 2> dd, std::array<int64_t, 4> pp) -> Value {
    auto s4 = shapeOf(x4);
    SmallVector<int64_t> out{s4[0], s4[1]};
    for (int i = 0; i < 2; ++i) {
      int64_t eff = (kk[i] - 1) * dd[i] + 1;
      int64_t span = s4[2 + i] + pp[i] + pp[i + 2] - eff;
      if (span < 0) fail("kernel is larger than the padded input");
      int64_t o = (ceil ? (span + ss[i] - 1) / ss[i] : span / ss[i]) + 1;
      // The last window must start inside the input or its begin padding.
      if (ceil && (o - 1) * ss[i] >= s4[2 + i] + pp[i]) --o;
      out.push_back(o);
    }
    return b.create<OpT>(loc, f32(out), x4, b.getDenseI64ArrayAttr(kk), b.getDenseI64ArrayAttr(ss),
                         b.getDenseI64ArrayAttr(dd), b.getDenseI64ArrayAttr(pp), b.getBoolAttr(includePad));
  };
  if (spatial == 1) {
    Value r = pool2(reshape(x, {xs[0], xs[1], 1, xs[2]}), {1, kernel[0]}, {1, strides[0]}, {1, dil[0]},
                    {0, pads[0], 0, pads[1]});
    auto rs = shapeOf(r);
    return reshape(r, {rs[0], rs[1], rs[3]});
  }
  if (spatial == 2)
    return pool2(x, {kernel[0], kernel[1]}, {strides[0], strides[1]}, {dil[0], dil[1]},
                 {pads[0], pads[1], pads[2], pads[3]});
  // 3-d: box windows are separable for max and (with per-axis counts, whose
  // product is the window's count) for average: pool H and W, then D.
  int64_t n = xs[0], c = xs[1], d = xs[2];
  Value hw = pool2(reshape(x, {n, mulDims(c, d), xs[3], xs[4]}), {kernel[1], kernel[2]},
                   {strides[1], strides[2]}, {dil[1], dil[2]}, {pads[1], pads[2], pads[4], pads[5]});
  auto hs = shapeOf(hw);
  Value r = pool2(reshape(hw, {n, c, d, hs[2] * hs[3]}), {kernel[0], 1}, {strides[0], 1}, {dil[0], 1},
                  {pads[0], 0, pads[3], 0});
  return reshape(r, {n, c, shapeOf(r)[2], hs[2], hs[3]});
}

template <typename OpT> void Importer::convGlobalPool() {
  Value x = input(0);
  requireF32(x, "X");
  auto xs = shapeOf(x);
  if (xs.size() < 3) fail("input must have rank >= 3");
  SmallVector<int64_t> axes, out{xs[0], xs[1]};
  for (size_t i = 2; i < xs.size(); ++i) {
    axes.push_back(i);
    out.push_back(1);
  }
  setOutput(0, b.create<OpT>(loc, f32(out), x, b.getDenseI64ArrayAttr(axes), b.getBoolAttr(true)));
}

template <typename OpT> void Importer::convReduce() {
  Value x = input(0);
  if constexpr (std::is_same_v<OpT, ReduceMaxOp> || std::is_same_v<OpT, ReduceMinOp>) {
    if (ttype(x).getElementType().isInteger(1)) {
      // bool max/min (any/all): reduce 0/1 as float32, then back to bool.
      {
        InputOverride inputs{*this, {}};
        inputs.set(0, castTo(x, b.getF32Type()));
        convReduce<OpT>();
      }
      const std::string &out = node->output(0);
      values[out] = castTo(values[out], b.getI1Type());
      return;
    }
  }
  requireFloat(x, "data");
  auto xs = shapeOf(x);
  int64_t rank = xs.size();
  std::optional<std::vector<int64_t>> axes;
  bool axesAsInput = (std::is_same_v<OpT, ReduceSumOp> && opset >= 13) || opset >= 18;
  if (axesAsInput) {
    if (hasInput(1)) axes = intInput(1, "axes").data;
  } else {
    axes = attrInts("axes");
  }
  bool keep = attrInt("keepdims", 1);
  if ((!axes || axes->empty()) && attrInt("noop_with_empty_axes", 0)) {
    setOutput(0, x);
    return;
  }
  std::vector<int64_t> ax;
  if (!axes || axes->empty())
    for (int64_t i = 0; i < rank; ++i) ax.push_back(i);
  else
    for (int64_t a : *axes) ax.push_back(normAxis(a, rank));
  std::sort(ax.begin(), ax.end());
  ax.erase(std::unique(ax.begin(), ax.end()), ax.end());
  SmallVector<int64_t> out;
  for (int64_t i = 0; i < rank; ++i) {
    bool red = std::binary_search(ax.begin(), ax.end(), i);
    if (!red) out.push_back(xs[i]);
    else if (keep) out.push_back(1);
  }
  if (product(xs) == 0) {
    // Reducing an empty set: every result element is the reduction's
    // identity (ONNX: 0 for sums, 1 for products, -inf/+inf for max/min and
    // the log-sums, NaN for the mean).
    double inf = std::numeric_limits<double>::infinity(), v = 0;
    if (std::is_same_v<OpT, ReduceProdOp>) v = 1;
    else if (std::is_same_v<OpT, ReduceMaxOp> || std::is_same_v<OpT, ReduceLogSumOp> ||
             std::is_same_v<OpT, ReduceLogSumExpOp>) v = -inf;
    else if (std::is_same_v<OpT, ReduceMinOp>) v = inf;
    else if (std::is_same_v<OpT, ReduceMeanOp>) v = std::numeric_limits<double>::quiet_NaN();
    auto t = like(x, out);
    setOutput(0, b.create<ConstantOp>(loc, DenseElementsAttr::get(t, FloatAttr::get(t.getElementType(), v))));
    return;
  }
  setOutput(0, b.create<OpT>(loc, like(x, out), x, b.getDenseI64ArrayAttr(ax), b.getBoolAttr(keep)));
}

void Importer::convBatchNorm() {
  Value x = input(0);
  requireF32(x, "X");
  if (attrInt("training_mode", 0)) fail("training_mode=1 is not supported (inference only)");
  for (int i = 1; i < node->output_size(); ++i)
    requireNoOutput(i, "running statistics");
  auto xs = shapeOf(x);
  if (xs.size() < 2) fail("input must have rank >= 2");
  for (int i = 1; i <= 4; ++i) {
    auto s = shapeOf(input(i));
    if (s.size() != 1 || s[0] != xs[1])
      fail("scale, B, mean and var must have shape [" + std::to_string(xs[1]) + "]");
  }
  setOutput(0, b.create<BatchNormOp>(loc, x.getType(), x, input(1), input(2), input(3), input(4),
                                     b.getF32FloatAttr(attrFloat("epsilon", 1e-5f))));
}

void Importer::convConcat() {
  SmallVector<Value> ins;
  for (int i = 0; i < numInputs(); ++i)
    if (hasInput(i)) ins.push_back(input(i));
  if (ins.empty()) fail("needs at least one input");
  int64_t rank = shapeOf(ins[0]).size();
  auto *a = attr("axis");
  if (!a) fail("attribute 'axis' is required");
  int64_t axis = normAxis(a->i(), rank);
  SmallVector<int64_t> out(shapeOf(ins[0]));
  out[axis] = 0;
  for (Value v : ins) {
    requireSameType(ins[0], v, "inputs");
    auto s = shapeOf(v);
    if ((int64_t)s.size() != rank) fail("inputs have different ranks");
    for (int64_t d = 0; d < rank; ++d)
      if (d != axis && s[d] != shapeOf(ins[0])[d])
        fail("input shapes " + joinDims(shapeOf(ins[0])) + " and " + joinDims(s) +
             " differ outside the concat axis");
    out[axis] += s[axis];
  }
  if (ins.size() == 1) { setOutput(0, ins[0]); return; }
  setOutput(0, b.create<ConcatOp>(loc, like(ins[0], out), ins, b.getI64IntegerAttr(axis)));
}

/// The result shape of Reshape, Flatten, Squeeze or Unsqueeze (the node being
/// converted) for an input of shape `xs`. Shared by the tensor path and the
/// integer-constant folding path.
SmallVector<int64_t> Importer::viewShape(ArrayRef<int64_t> xs) {
  const std::string &op = node->op_type();
  int64_t rank = xs.size();
  if (op == "Reshape") {
    std::vector<int64_t> shape;
    if (opset < 5) {
      auto s = attrInts("shape");
      if (!s) fail("attribute 'shape' is required");
      shape = *s;
    } else {
      shape = intInput(1, "shape").data;
    }
    bool allowZero = attrInt("allowzero", 0);
    int64_t infer = -1, known = 1;
    for (size_t i = 0; i < shape.size(); ++i) {
      if (shape[i] == 0 && !allowZero) {
        if (i >= xs.size()) fail("shape has 0 at a dim the input does not have");
        shape[i] = xs[i];
      }
      if (shape[i] == -1) {
        if (infer >= 0) fail("shape has more than one -1");
        infer = i;
      } else if (shape[i] < 0) {
        fail("shape has a negative dimension");
      } else {
        known = mulDims(known, shape[i]);
      }
    }
    int64_t total = product(xs);
    if (infer >= 0) {
      if (known == 0 || total % known) fail("cannot infer the -1 dimension");
      shape[infer] = total / known;
    }
    if (product(shape) != total)
      fail("cannot reshape " + joinDims(xs) + " to " + joinDims(shape));
    return SmallVector<int64_t>(shape.begin(), shape.end());
  }
  if (op == "Flatten") {
    int64_t axis = attrInt("axis", 1);
    if (axis < -rank || axis > rank) fail("axis out of range");
    if (axis < 0) axis += rank;
    return {product(xs.take_front(axis)), product(xs.drop_front(axis))};
  }
  if (op == "Squeeze") {
    std::optional<std::vector<int64_t>> axes;
    if (opset >= 13) { if (hasInput(1)) axes = intInput(1, "axes").data; }
    else axes = attrInts("axes");
    std::vector<bool> drop(rank, false);
    if (!axes) {
      for (int64_t i = 0; i < rank; ++i) drop[i] = xs[i] == 1;
    } else {
      for (int64_t a : *axes) {
        int64_t n = normAxis(a, rank);
        if (xs[n] != 1) fail("cannot squeeze axis " + std::to_string(a) + " of size " + std::to_string(xs[n]));
        drop[n] = true;
      }
    }
    SmallVector<int64_t> out;
    for (int64_t i = 0; i < rank; ++i) if (!drop[i]) out.push_back(xs[i]);
    return out;
  }
  // Unsqueeze
  std::vector<int64_t> axes;
  if (opset >= 13) axes = intInput(1, "axes").data;
  else if (auto a = attrInts("axes")) axes = *a;
  else fail("attribute 'axes' is required");
  int64_t outRank = rank + axes.size();
  std::vector<bool> isNew(outRank, false);
  for (int64_t a : axes) {
    int64_t n = normAxis(a, outRank);
    if (isNew[n]) fail("duplicate axis");
    isNew[n] = true;
  }
  SmallVector<int64_t> out;
  size_t j = 0;
  for (int64_t i = 0; i < outRank; ++i) out.push_back(isNew[i] ? 1 : xs[j++]);
  return out;
}

void Importer::convView() {
  Value x = input(0);
  setOutput(0, reshape(x, viewShape(shapeOf(x))));
}

void Importer::convTranspose() {
  Value x = input(0);
  auto xs = shapeOf(x);
  int64_t rank = xs.size();
  std::vector<int64_t> perm;
  if (auto p = attrInts("perm")) perm = *p;
  else for (int64_t i = rank - 1; i >= 0; --i) perm.push_back(i);
  if ((int64_t)perm.size() != rank) fail("perm has the wrong length");
  SmallVector<int64_t> out;
  std::vector<bool> seen(rank);
  for (int64_t p : perm) {
    if (p < 0 || p >= rank || seen[p]) fail("perm is not a permutation");
    seen[p] = true;
    out.push_back(xs[p]);
  }
  bool identity = true;
  for (int64_t i = 0; i < rank; ++i) identity &= perm[i] == i;
  if (identity) { setOutput(0, x); return; }
  setOutput(0, b.create<TransposeOp>(loc, like(x, out), x, b.getDenseI64ArrayAttr(perm)));
}

void Importer::convSlice() {
  Value x = input(0);
  auto xs = shapeOf(x);
  int64_t rank = xs.size();
  std::vector<int64_t> starts, ends, axes, steps;
  if (opset < 10) {
    starts = attrInts("starts").value_or(std::vector<int64_t>{});
    ends = attrInts("ends").value_or(std::vector<int64_t>{});
    axes = attrInts("axes").value_or(std::vector<int64_t>{});
  } else {
    starts = intInput(1, "starts").data;
    ends = intInput(2, "ends").data;
    if (hasInput(3)) axes = intInput(3, "axes").data;
    if (hasInput(4)) steps = intInput(4, "steps").data;
  }
  if (starts.size() != ends.size()) fail("starts and ends differ in length");
  if (axes.empty()) for (size_t i = 0; i < starts.size(); ++i) axes.push_back(i);
  if (steps.empty()) steps.assign(starts.size(), 1);
  if (axes.size() != starts.size() || steps.size() != starts.size())
    fail("axes/steps must match starts in length");
  SmallVector<int64_t> st(rank, 0), sp(rank, 1), out(xs);
  std::vector<bool> seen(rank, false);
  for (size_t i = 0; i < starts.size(); ++i) {
    int64_t a = normAxis(axes[i], rank);
    if (seen[a]) fail("axis repeated");
    seen[a] = true;
    int64_t d = xs[a], s = starts[i], e = ends[i], step = steps[i];
    if (step == 0) fail("steps must be non-zero");
    if (s < 0) s += d;
    if (e < 0) e += d;
    int64_t n;
    if (step > 0) {
      s = std::clamp<int64_t>(s, 0, d);
      e = std::clamp<int64_t>(e, 0, d);
      n = e > s ? (e - s + step - 1) / step : 0;
    } else {
      s = std::clamp<int64_t>(s, 0, d - 1);
      e = std::clamp<int64_t>(e, -1, d - 1);
      n = s > e ? (s - e + (-step) - 1) / (-step) : 0;
    }
    st[a] = s;
    sp[a] = step;
    out[a] = n;
  }
  if (llvm::is_contained(out, 0)) { // an empty result: an empty constant
    setOutput(0, emptyLike(x, out));
    return;
  }
  setOutput(0, b.create<SliceOp>(loc, like(x, out), x, b.getDenseI64ArrayAttr(st),
                                 b.getDenseI64ArrayAttr(sp)));
}

void Importer::convPad() {
  Value x = input(0);
  if (ttype(x).getElementType().isInteger(1)) fail("bool tensors are not supported");
  auto xs = shapeOf(x);
  int64_t rank = xs.size();
  std::string mode = attrString("mode", "constant");
  if (mode != "constant" && mode != "reflect" && mode != "edge")
    fail("mode '" + mode + "' is not supported");
  std::vector<int64_t> pads;
  float value = 0;
  if (opset < 11) {
    pads = attrInts("pads").value_or(std::vector<int64_t>{});
    value = attrFloat("value", 0);
  } else {
    pads = intInput(1, "pads").data;
    if (hasInput(2)) {
      if (isIntConst(2)) {
        value = (float)intInput(2, "constant_value").data.at(0);
      } else {
        auto c = constantOf(input(2));
        if (!c) needConstant(2, "constant_value");
        value = *c->getValues<float>().begin();
      }
    }
    if (hasInput(3)) {
      auto axes = intInput(3, "axes").data;
      std::vector<int64_t> full(2 * rank, 0);
      if (pads.size() != 2 * axes.size()) fail("pads must have 2 values per axis");
      for (size_t i = 0; i < axes.size(); ++i) {
        int64_t a = normAxis(axes[i], rank);
        full[a] = pads[i];
        full[a + rank] = pads[i + axes.size()];
      }
      pads = full;
    }
  }
  if ((int64_t)pads.size() != 2 * rank) fail("pads must have 2 * rank values");
  SmallVector<int64_t> out;
  for (int64_t i = 0; i < rank; ++i) {
    if (pads[i] < 0 || pads[i + rank] < 0) fail("negative pads (cropping) are not supported");
    if (pads[i] > kMaxGeometry || pads[i + rank] > kMaxGeometry) fail("pads are out of range");
    if (mode == "reflect" && (pads[i] >= xs[i] || pads[i + rank] >= xs[i]))
      fail("reflect pads must be smaller than the dimension");
    out.push_back(xs[i] + pads[i] + pads[i + rank]);
  }
  setOutput(0, b.create<PadOp>(loc, like(x, out), x, b.getDenseI64ArrayAttr(pads),
                               b.getStringAttr(mode), b.getF32FloatAttr(value)));
}

void Importer::convIdentity() {
  if (node->op_type() == "Dropout") {
    // training_mode must be known to be false at compile time.
    if (hasInput(2) && (!isIntConst(2) || intInput(2, "training_mode").data.at(0)))
      fail("training_mode must be a constant false (training is not supported)");
    // In inference nothing is dropped: the mask is all true.
    if (node->output_size() > 1 && !node->output(1).empty()) {
      auto t = boolType(shapeOf(input(0)));
      setOutput(1, b.create<ConstantOp>(loc, DenseElementsAttr::get(t, true)));
    }
  }
  setOutput(0, input(0));
}

void Importer::convConstant() {
  if (auto *a = attr("value")) {
    if (!a->has_t()) fail("'value' must be a tensor");
    setOutput(0, tensorToFloat(a->t()));
    return;
  }
  if (auto *a = attr("value_float")) {
    setOutput(0, b.create<ConstantOp>(loc, DenseElementsAttr::get(f32({}), a->f())));
    return;
  }
  if (auto *a = attr("value_floats")) {
    std::vector<float> v(a->floats().begin(), a->floats().end());
    setOutput(0, b.create<ConstantOp>(loc, DenseElementsAttr::get(f32({(int64_t)v.size()}), ArrayRef<float>(v))));
    return;
  }
  fail("unsupported Constant form (sparse or string values)");
}


template <typename OpT> void Importer::convUnaryAlpha(float def) {
  Value x = input(0);
  requireF32(x, "X");
  setOutput(0, b.create<OpT>(loc, x.getType(), x, b.getF32FloatAttr(attrFloat("alpha", def))));
}

void Importer::convSelu() {
  Value x = input(0);
  requireF32(x, "X");
  setOutput(0, b.create<SeluOp>(loc, x.getType(), x,
                                b.getF32FloatAttr(attrFloat("alpha", 1.67326319217681884765625f)),
                                b.getF32FloatAttr(attrFloat("gamma", 1.05070102214813232421875f))));
}

void Importer::convShrink() {
  Value x = input(0);
  requireF32(x, "input");
  setOutput(0, b.create<ShrinkOp>(loc, x.getType(), x, b.getF32FloatAttr(attrFloat("bias", 0.0f)),
                                  b.getF32FloatAttr(attrFloat("lambd", 0.5f))));
}

void Importer::convGelu() {
  Value x = input(0);
  requireF32(x, "X");
  std::string approx = attrString("approximate", "none");
  if (approx != "none" && approx != "tanh") fail("unknown approximate '" + approx + "'");
  setOutput(0, b.create<GeluOp>(loc, x.getType(), x, b.getBoolAttr(approx == "tanh")));
}

/// Max/Min over any number of inputs: a chain of broadcasting binary ops.
template <typename OpT> void Importer::convVariadic() {
  Value acc = input(0);
  if (ttype(acc).getElementType().isInteger(1)) fail("bool inputs are not supported");
  for (int i = 1; i < numInputs(); ++i) {
    Value y = input(i);
    requireSameType(acc, y, "data_0 and data_" + std::to_string(i));
    auto s = broadcastShapes(shapeOf(acc), shapeOf(y));
    if (failed(s)) fail("inputs cannot broadcast");
    acc = b.create<OpT>(loc, like(acc, *s), acc, y);
  }
  setOutput(0, acc);
}

void Importer::convSum(bool mean) {
  convVariadic<AddOp>();
  if (!mean || numInputs() == 1)
    return;
  Value acc = values[node->output(0)];
  Value inv = b.create<ConstantOp>(loc, DenseElementsAttr::get(f32({}), 1.0f / numInputs()));
  setOutput(0, b.create<MulOp>(loc, acc.getType(), acc, inv));
}

void Importer::convMod() {
  Value x = input(0), y = input(1);
  requireSameType(x, y, "A and B");
  bool fmod = attrInt("fmod", 0);
  if (isFloat(x) && !fmod) fail("fmod=0 is not defined for float tensors");
  if (ttype(x).getElementType().isInteger(1)) fail("Mod on bool tensors is not defined");
  auto s = broadcastShapes(shapeOf(x), shapeOf(y));
  if (failed(s)) fail("shapes cannot broadcast");
  setOutput(0, b.create<ModOp>(loc, like(x, *s), x, y, b.getBoolAttr(fmod)));
}

void Importer::convLayerNorm() {
  Value x = input(0), scale = input(1);
  requireF32(x, "X");
  int64_t rank = shapeOf(x).size();
  int64_t axis = normAxis(attrInt("axis", -1), rank);
  SmallVector<int64_t> axes;
  for (int64_t i = axis; i < rank; ++i) axes.push_back(i);
  auto bias = optInput(2);
  for (std::optional<Value> v : {std::optional<Value>(scale), bias}) {
    if (!v) continue;
    auto s = broadcastShapes(shapeOf(*v), shapeOf(x));
    if (failed(s) || ArrayRef<int64_t>(*s) != shapeOf(x)) fail("Scale/B must broadcast to X");
  }
  float eps = attrFloat("epsilon", 1e-5f);
  setOutput(0, b.create<LayerNormOp>(loc, x.getType(), x, scale, bias.value_or(Value()),
                                     b.getDenseI64ArrayAttr(axes), b.getF32FloatAttr(eps)));
  // The optional Mean and InvStdDev outputs (training uses them; some
  // exports keep them): computed by separate reductions when asked for.
  bool wantMean = node->output_size() > 1 && !node->output(1).empty();
  bool wantInv = node->output_size() > 2 && !node->output(2).empty();
  if (!wantMean && !wantInv) return;
  SmallVector<int64_t> rshape(shapeOf(x));
  for (int64_t a : axes) rshape[a] = 1;
  auto rtype = f32(rshape);
  auto axesAttr = b.getDenseI64ArrayAttr(axes);
  Value mean = b.create<ReduceMeanOp>(loc, rtype, x, axesAttr, b.getBoolAttr(true));
  setOutput(1, mean);
  if (!wantInv) return;
  Value d = b.create<SubOp>(loc, x.getType(), x, mean);
  Value var = b.create<ReduceMeanOp>(loc, rtype, b.create<MulOp>(loc, x.getType(), d, d), axesAttr,
                                     b.getBoolAttr(true));
  Value e = b.create<ConstantOp>(loc, DenseElementsAttr::get(f32({}), eps));
  Value inv = b.create<ReciprocalOp>(loc, rtype, b.create<SqrtOp>(loc, rtype, b.create<AddOp>(loc, rtype, var, e)));
  setOutput(2, inv);
}

void Importer::convInstanceNorm() {
  Value x = input(0);
  requireF32(x, "input");
  auto xs = shapeOf(x);
  if (xs.size() < 3) fail("input must have rank >= 3");
  SmallVector<int64_t> cshape(xs.size() - 1, 1), axes;
  cshape[0] = xs[1];
  for (size_t i = 2; i < xs.size(); ++i) axes.push_back(i);
  for (int i = 1; i <= 2; ++i)
    if (shapeOf(input(i)).size() != 1 || shapeOf(input(i))[0] != xs[1])
      fail("scale and B must have shape [C]");
  setOutput(0, b.create<LayerNormOp>(loc, x.getType(), x, reshape(input(1), cshape),
                                     reshape(input(2), cshape), b.getDenseI64ArrayAttr(axes),
                                     b.getF32FloatAttr(attrFloat("epsilon", 1e-5f))));
}

void Importer::convDepthToSpace() {
  Value x = input(0);
  auto xs = shapeOf(x);
  if (xs.size() != 4) fail("input must be 4-d");
  int64_t bs = attrInt("blocksize", 0);
  if (bs <= 0 || bs > xs[1] || xs[1] % (bs * bs)) fail("blocksize must be positive and divide C by blocksize^2");
  int64_t n = xs[0], c = xs[1], h = xs[2], w = xs[3];
  bool crd = attrString("mode", "DCR") == "CRD";
  Value t;
  if (crd) {
    Value r = reshape(x, {n, c / (bs * bs), bs, bs, h, w});
    t = b.create<TransposeOp>(loc, f32({n, c / (bs * bs), h, bs, w, bs}), r,
                              b.getDenseI64ArrayAttr({0, 1, 4, 2, 5, 3}));
  } else {
    Value r = reshape(x, {n, bs, bs, c / (bs * bs), h, w});
    t = b.create<TransposeOp>(loc, f32({n, c / (bs * bs), h, bs, w, bs}), r,
                              b.getDenseI64ArrayAttr({0, 3, 4, 1, 5, 2}));
  }
  setOutput(0, reshape(t, {n, c / (bs * bs), h * bs, w * bs}));
}

void Importer::convSpaceToDepth() {
  Value x = input(0);
  auto xs = shapeOf(x);
  if (xs.size() != 4) fail("input must be 4-d");
  int64_t bs = attrInt("blocksize", 0);
  if (bs <= 0 || xs[2] % bs || xs[3] % bs) fail("blocksize must divide H and W");
  int64_t n = xs[0], c = xs[1], h = xs[2], w = xs[3];
  Value r = reshape(x, {n, c, h / bs, bs, w / bs, bs});
  Value t = b.create<TransposeOp>(loc, f32({n, bs, bs, c, h / bs, w / bs}), r,
                                  b.getDenseI64ArrayAttr({0, 3, 5, 1, 2, 4}));
  setOutput(0, reshape(t, {n, c * bs * bs, h / bs, w / bs}));
}

void Importer::convExpand() {
  Value x = input(0);
  const auto &shape = intInput(1, "shape").data;
  auto s = broadcastShapes(shapeOf(x), shape);
  if (failed(s)) fail("input shape " + joinDims(shapeOf(x)) + " cannot expand to " + joinDims(shape));
  if (ArrayRef<int64_t>(*s) == shapeOf(x)) { setOutput(0, x); return; }
  setOutput(0, b.create<ExpandOp>(loc, like(x, *s), x));
}

void Importer::convTile() {
  Value x = input(0);
  const auto &rep = intInput(1, "repeats").data;
  auto xs = shapeOf(x);
  if (rep.size() != xs.size()) fail("repeats must have one value per dim");
  SmallVector<int64_t> out;
  for (size_t i = 0; i < xs.size(); ++i) {
    if (rep[i] < 1) fail("repeats must be positive");
    out.push_back(mulDims(xs[i], rep[i]));
  }
  setOutput(0, b.create<TileOp>(loc, like(x, out), x));
}

void Importer::convTrilu() {
  Value x = input(0);
  if (shapeOf(x).size() < 2) fail("input must have rank >= 2");
  int64_t k = hasInput(1) ? intInput(1, "k").data.at(0) : 0;
  setOutput(0, b.create<TriluOp>(loc, x.getType(), x, b.getBoolAttr(attrInt("upper", 1)),
                                 b.getI64IntegerAttr(k)));
}

void Importer::convSplit() {
  Value x = input(0);
  auto xs = shapeOf(x);
  int64_t rank = xs.size();
  int64_t axis = normAxis(attrInt("axis", 0), rank);
  int64_t nOut = node->output_size();
  std::vector<int64_t> sizes;
  if (opset >= 13 && hasInput(1)) sizes = intInput(1, "split").data;
  else if (auto a = attrInts("split")) sizes = *a;
  if (sizes.empty()) {
    int64_t parts = attr("num_outputs") ? attrInt("num_outputs", nOut) : nOut;
    if (parts <= 0) fail("the number of outputs must be positive");
    int64_t chunk = (xs[axis] + parts - 1) / parts;
    for (int64_t i = 0, left = xs[axis]; i < parts; ++i, left -= chunk)
      sizes.push_back(std::min(chunk, left));
  }
  if ((int64_t)sizes.size() != nOut) fail("split sizes do not match the number of outputs");
  int64_t total = 0;
  for (int64_t v : sizes) {
    if (v < 0) fail("split sizes must not be negative");
    if (v > xs[axis]) fail("split sizes do not add up to the axis length");
    total += v; // no overflow: each term is at most the axis length
    if (total > xs[axis]) fail("split sizes do not add up to the axis length");
  }
  if (total != xs[axis]) fail("split sizes do not add up to the axis length");
  int64_t off = 0;
  for (int64_t i = 0; i < nOut; ++i) {
    SmallVector<int64_t> st(rank, 0), sp(rank, 1), out(xs);
    st[axis] = off;
    out[axis] = sizes[i];
    off += sizes[i];
    if (llvm::is_contained(out, 0)) setOutput(i, emptyLike(x, out));
    else setOutput(i, b.create<SliceOp>(loc, like(x, out), x, b.getDenseI64ArrayAttr(st), b.getDenseI64ArrayAttr(sp)));
  }
}

/// Cast and CastLike between the supported dtypes (integer constants are
/// folded at import by tryFoldInts).
void Importer::convCast() {
  Value x = input(0);
  Type to;
  if (node->op_type() == "Cast") {
    int64_t code = attrInt("to", 0);
    to = elementType(code);
    if (!to) fail(std::string("cast to ") + dtypeName(code) + " is not supported");
  } else {
    to = ttype(input(1)).getElementType();
  }
  if (to == ttype(x).getElementType()) {
    setOutput(0, x);
    return;
  }
  bool saturate = attrInt("saturate", 1) != 0;
  setOutput(0, b.create<CastOp>(loc, RankedTensorType::get(shapeOf(x), to), x, b.getBoolAttr(saturate)));
}

template <typename OpT> void Importer::convCompare() {
  Value x = input(0), y = input(1);
  requireSameType(x, y, "A and B");
  auto s = broadcastShapes(shapeOf(x), shapeOf(y));
  if (failed(s)) fail("shapes " + joinDims(shapeOf(x)) + " and " + joinDims(shapeOf(y)) + " cannot broadcast");
  setOutput(0, b.create<OpT>(loc, boolType(*s), x, y));
}

template <typename OpT> void Importer::convLogic() {
  Value x = input(0), y = input(1);
  if (!ttype(x).getElementType().isInteger(1) || !ttype(y).getElementType().isInteger(1))
    fail("inputs must be bool tensors");
  auto s = broadcastShapes(shapeOf(x), shapeOf(y));
  if (failed(s)) fail("shapes cannot broadcast");
  setOutput(0, b.create<OpT>(loc, boolType(*s), x, y));
}

/// BitwiseAnd/Or/Xor on integer tensors (the same kiln ops as And/Or/Xor).
template <typename OpT> void Importer::convBitwise() {
  Value x = input(0), y = input(1);
  requireSameType(x, y, "A and B");
  Type et = ttype(x).getElementType();
  if (!isa<IntegerType>(et) || et.isInteger(1)) fail("inputs must be integer tensors");
  auto s = broadcastShapes(shapeOf(x), shapeOf(y));
  if (failed(s)) fail("shapes " + joinDims(shapeOf(x)) + " and " + joinDims(shapeOf(y)) + " cannot broadcast");
  setOutput(0, b.create<OpT>(loc, like(x, *s), x, y));
}

void Importer::convBitwiseNot() {
  Value x = input(0);
  Type et = ttype(x).getElementType();
  if (!isa<IntegerType>(et) || et.isInteger(1)) fail("input must be an integer tensor");
  setOutput(0, b.create<NotOp>(loc, x.getType(), x));
}

void Importer::convBitShift() {
  Value x = input(0), y = input(1);
  requireSameType(x, y, "X and Y");
  if (!ttype(x).getElementType().isUnsignedInteger())
    fail("inputs must be unsigned integer tensors");
  std::string dir = attrString("direction", "");
  if (dir != "LEFT" && dir != "RIGHT") fail("'direction' must be LEFT or RIGHT, got '" + dir + "'");
  auto s = broadcastShapes(shapeOf(x), shapeOf(y));
  if (failed(s)) fail("shapes cannot broadcast");
  setOutput(0, b.create<BitShiftOp>(loc, like(x, *s), x, y, b.getBoolAttr(dir == "LEFT")));
}

Value Importer::castTo(Value v, Type et) {
  if (ttype(v).getElementType() == et) return v;
  return b.create<CastOp>(loc, RankedTensorType::get(shapeOf(v), et), v);
}

/// Pow: float bases take any exponent type (cast to the base's type);
/// integer bases compute in float64 and truncate back, as ONNX Runtime does.
void Importer::convPow() {
  Value x = input(0), y = input(1);
  Type xt = ttype(x).getElementType(), yt = ttype(y).getElementType();
  if (xt.isInteger(1) || yt.isInteger(1)) fail("bool inputs are not supported");
  auto s = broadcastShapes(shapeOf(x), shapeOf(y));
  if (failed(s)) fail("shapes " + joinDims(shapeOf(x)) + " and " + joinDims(shapeOf(y)) + " cannot broadcast");
  if (isa<FloatType>(xt)) {
    y = castTo(y, xt);
    setOutput(0, b.create<PowOp>(loc, like(x, *s), x, y));
    return;
  }
  Type f64 = b.getF64Type();
  Value p = b.create<PowOp>(loc, RankedTensorType::get(*s, f64), castTo(x, f64), castTo(y, f64));
  setOutput(0, castTo(p, xt));
}

//===----------------------------------------------------------------------===//
// Ops built from others: constants, normalisations, crops
//===----------------------------------------------------------------------===//

/// x op y with numpy broadcasting, op one of Add, Sub, Mul, Div (float32).
Value Importer::binary(StringRef op, Value x, Value y) {
  auto s = broadcastShapes(shapeOf(x), shapeOf(y));
  if (failed(s)) fail("shapes " + joinDims(shapeOf(x)) + " and " + joinDims(shapeOf(y)) + " cannot broadcast");
  auto t = like(x, *s);
  if (op == "Add") return b.create<AddOp>(loc, t, x, y);
  if (op == "Sub") return b.create<SubOp>(loc, t, x, y);
  if (op == "Mul") return b.create<MulOp>(loc, t, x, y);
  return b.create<DivOp>(loc, t, x, y);
}

/// EyeLike: a compile-time constant with ones on diagonal k.
void Importer::convEyeLike() {
  Value x = input(0);
  auto xs = shapeOf(x);
  if (xs.size() != 2) fail("input must be 2-d");
  Type et = ttype(x).getElementType();
  if (int64_t dt = attrInt("dtype", 0)) {
    et = elementType(dt);
    if (!et) fail(std::string("dtype ") + dtypeName(dt) + " is not supported");
  }
  int64_t k = attrInt("k", 0);
  std::vector<float> v(xs[0] * xs[1], 0.0f);
  for (int64_t i = 0; i < xs[0]; ++i)
    if (i + k >= 0 && i + k < xs[1]) v[i * xs[1] + i + k] = 1.0f;
  setOutput(0, castTo(floatConst(xs, v), et));
}

/// Hann, Hamming and Blackman windows of a constant size.
void Importer::convWindow() {
  const IntConst &sz = intInput(0, "size");
  if (sz.data.size() != 1) fail("size must be a scalar");
  int64_t n = sz.data[0];
  if (n <= 0 || n > kMaxFoldElements) fail("window size " + std::to_string(n) + " is out of range");
  bool periodic = attrInt("periodic", 1) != 0;
  double den = periodic ? (double)n : (double)(n - 1);
  const std::string &op = node->op_type();
  std::vector<float> w(n);
  for (int64_t i = 0; i < n; ++i) {
    double t = den > 0 ? 2.0 * M_PI * i / den : 0.0;
    if (op == "HannWindow") w[i] = (float)(0.5 - 0.5 * std::cos(t));
    else if (op == "HammingWindow") w[i] = (float)(25.0 / 46.0 - 21.0 / 46.0 * std::cos(t));
    else w[i] = (float)(0.42 - 0.5 * std::cos(t) + 0.08 * std::cos(2 * t));
  }
  Type et = elementType(attrInt("output_datatype", onnx::TensorProto::FLOAT));
  if (!et) fail("output_datatype is not supported");
  setOutput(0, castTo(floatConst({n}, w), et));
}

/// (X - E[X]) / (sqrt(E[X^2] - E[X]^2) + 1e-9), as the ONNX function body.
void Importer::convMeanVarianceNormalization() {
  Value x = input(0);
  requireF32(x, "X");
  int64_t rank = shapeOf(x).size();
  SmallVector<int64_t> axes;
  for (int64_t a : attrInts("axes").value_or(std::vector<int64_t>{0, 2, 3})) axes.push_back(normAxis(a, rank));
  llvm::sort(axes);
  SmallVector<int64_t> keep(shapeOf(x));
  for (int64_t a : axes) keep[a] = 1;
  auto axesAttr = b.getDenseI64ArrayAttr(axes);
  Value mean = b.create<ReduceMeanOp>(loc, f32(keep), x, axesAttr, b.getBoolAttr(true));
  Value meanSq = b.create<ReduceMeanOp>(loc, f32(keep), b.create<MulOp>(loc, x.getType(), x, x), axesAttr,
                                        b.getBoolAttr(true));
  Value var = b.create<SubOp>(loc, f32(keep), meanSq, b.create<MulOp>(loc, f32(keep), mean, mean));
  Value sd = b.create<AddOp>(loc, f32(keep), b.create<SqrtOp>(loc, f32(keep), var), floatConst({}, {1e-9f}));
  setOutput(0, binary("Div", binary("Sub", x, mean), sd));
}

/// LRN: x / (bias + alpha / size * sum of x^2 over `size` channels)^beta;
/// the channel sum is an average pool (count_include_pad) times size.
void Importer::convLRN() {
  Value x = input(0);
  requireF32(x, "X");
  auto xs = shapeOf(x);
  if (xs.size() < 3) fail("input must have rank >= 3");
  int64_t size = attrInt("size", 0);
  if (size <= 0) fail("size must be positive");
  float alpha = attrFloat("alpha", 1e-4f), beta = attrFloat("beta", 0.75f), bias = attrFloat("bias", 1.0f);
  int64_t rest = 1;
  for (size_t i = 2; i < xs.size(); ++i) rest *= xs[i];
  Value sq = b.create<MulOp>(loc, x.getType(), x, x);
  Value sq4 = reshape(sq, {xs[0], 1, xs[1], rest});
  int64_t lo = (size - 1) / 2, hi = size - 1 - lo;
  Value avg = b.create<AveragePoolOp>(loc, f32({xs[0], 1, xs[1], rest}), sq4, b.getDenseI64ArrayAttr({size, 1}),
                                      b.getDenseI64ArrayAttr({1, 1}), b.getDenseI64ArrayAttr({1, 1}),
                                      b.getDenseI64ArrayAttr({lo, 0, hi, 0}), b.getBoolAttr(true));
  avg = reshape(avg, xs);
  Value d = binary("Add", binary("Mul", avg, floatConst({}, {alpha})), floatConst({}, {bias}));
  d = b.create<PowOp>(loc, d.getType(), d, floatConst({}, {beta}));
  setOutput(0, binary("Div", x, d));
}

/// GroupNormalization: per (batch, group) mean and variance, then a scale
/// and bias per channel (opset 21) or per group (opset 18).
void Importer::convGroupNormalization() {
  Value x = input(0), scale = input(1), bias = input(2);
  requireF32(x, "X");
  auto xs = shapeOf(x);
  if (xs.size() < 3) fail("input must have rank >= 3");
  int64_t g = attrInt("num_groups", 0), c = xs[1];
  if (g <= 0 || c % g) fail("num_groups must divide the channels");
  float eps = attrFloat("epsilon", 1e-5f);
  int64_t rest = 1;
  for (size_t i = 2; i < xs.size(); ++i) rest *= xs[i];
  Value xr = reshape(x, {xs[0], g, c / g * rest});
  auto axes = b.getDenseI64ArrayAttr({2});
  auto kt = f32({xs[0], g, 1});
  Value mean = b.create<ReduceMeanOp>(loc, kt, xr, axes, b.getBoolAttr(true));
  Value d = binary("Sub", xr, mean);
  Value var = b.create<ReduceMeanOp>(loc, kt, b.create<MulOp>(loc, d.getType(), d, d), axes, b.getBoolAttr(true));
  Value inv = b.create<ReciprocalOp>(loc, kt, b.create<SqrtOp>(loc, kt, binary("Add", var, floatConst({}, {eps}))));
  Value y = reshape(binary("Mul", d, inv), xs);
  auto perChannel = [&](Value v) {
    int64_t n = ttype(v).getNumElements();
    if (n == g && g != c) { // one per group: repeat over its channels
      v = b.create<ExpandOp>(loc, f32({g, c / g}), reshape(v, {g, 1}));
    } else if (n != c) {
      fail("scale/bias must have num_groups or channel values");
    }
    SmallVector<int64_t> shape(xs.size(), 1);
    shape[1] = c;
    return reshape(v, shape);
  };
  setOutput(0, binary("Add", binary("Mul", y, perChannel(scale)), perChannel(bias)));
}

/// Compress with a constant condition: a Gather of the kept indices.
void Importer::convCompress() {
  Value x = input(0);
  const IntConst &cond = intInput(1, "condition");
  auto xs = shapeOf(x);
  std::optional<int64_t> axis;
  if (attr("axis")) axis = normAxis(attrInt("axis", 0), xs.size());
  if (!axis) {
    x = reshape(x, {ttype(x).getNumElements()});
    axis = 0;
  }
  int64_t n = shapeOf(x)[*axis];
  IntConst idx{{}, {}, onnx::TensorProto::INT64};
  for (int64_t i = 0; i < (int64_t)cond.data.size() && i < n; ++i)
    if (cond.data[i]) idx.data.push_back(i);
  if ((int64_t)cond.data.size() > n && llvm::any_of(ArrayRef<int64_t>(cond.data).drop_front(n), [](int64_t v) { return v != 0; }))
    fail("condition selects past the end of the axis");
  if (idx.data.empty()) fail("the condition selects nothing (empty outputs are not supported)");
  idx.shape = {(int64_t)idx.data.size()};
  SmallVector<int64_t> out(shapeOf(x));
  out[*axis] = idx.shape[0];
  setOutput(0, b.create<GatherOp>(loc, like(x, out), x, materializeInt(idx), b.getI64IntegerAttr(*axis)));
}

/// Col2Im (2-d): a grouped ConvTranspose whose weights are one-hot over the
/// block, which adds every column back at its place in the image.
void Importer::convCol2Im() {
  Value x = input(0);
  requireF32(x, "input");
  const IntConst &img = intInput(1, "image_shape"), &blk = intInput(2, "block_shape");
  if (img.data.size() != 2 || blk.data.size() != 2) fail("only 2-d images are supported");
  auto xs = shapeOf(x);
  if (xs.size() != 3) fail("input must be [N, C*prod(block_shape), L]");
  int64_t kh = blk.data[0], kw = blk.data[1], k = kh * kw;
  if (kh <= 0 || kw <= 0 || xs[1] % k) fail("block_shape does not divide the input's second dim");
  int64_t c = xs[1] / k;
  auto strides = defaults(attrInts("strides"), 2, 1), dil = defaults(attrInts("dilations"), 2, 1);
  auto pads = defaults(attrInts("pads"), 4, 0);
  if (strides.size() != 2 || dil.size() != 2 || pads.size() != 4) fail("attributes must be 2-d");
  int64_t blocks[2];
  for (int i = 0; i < 2; ++i) {
    int64_t eff = dil[i] * (blk.data[i] - 1) + 1, span = img.data[i] + pads[i] + pads[i + 2] - eff;
    if (strides[i] <= 0 || dil[i] <= 0 || span < 0 || span % strides[i])
      fail("image_shape, block_shape, pads and strides do not tile exactly");
    blocks[i] = span / strides[i] + 1;
  }
  if (blocks[0] * blocks[1] != xs[2]) fail("L does not match the number of blocks");
  std::vector<float> w(c * k * k, 0.0f); // [C*K, 1, kh, kw]
  for (int64_t ci = 0; ci < c; ++ci)
    for (int64_t j = 0; j < k; ++j) w[(ci * k + j) * k + j] = 1.0f;
  Value x4 = reshape(x, {xs[0], xs[1], blocks[0], blocks[1]});
  SmallVector<int64_t> out{xs[0], c, img.data[0], img.data[1]};
  setOutput(0, b.create<ConvTransposeOp>(loc, f32(out), x4, floatConst({c * k, 1, kh, kw}, w), Value(),
                                         b.getDenseI64ArrayAttr(strides), b.getDenseI64ArrayAttr(dil),
                                         b.getDenseI64ArrayAttr(pads), b.getI64IntegerAttr(c)));
}

/// AffineGrid: the base grid of normalised coordinates (a constant) times
/// theta^T, one MatMul.
void Importer::convAffineGrid() {
  Value theta = input(0);
  requireF32(theta, "theta");
  const IntConst &size = intInput(1, "size");
  bool align = attrInt("align_corners", 0) != 0;
  int64_t nd = (int64_t)size.data.size() - 2; // spatial dims: 2 or 3
  if (nd != 2 && nd != 3) fail("size must have 4 or 5 values");
  auto ts = shapeOf(theta);
  if (ts.size() != 3 || ts[1] != nd || ts[2] != nd + 1) fail("theta must be [N, " + std::to_string(nd) + ", " + std::to_string(nd + 1) + "]");
  SmallVector<int64_t> dims(size.data.begin() + 2, size.data.end()); // (D,) H, W
  int64_t points = 1;
  for (int64_t d : dims) {
    if (d <= 0) fail("size must be positive");
    points *= d;
  }
  auto coord = [&](int64_t i, int64_t n) {
    if (n == 1) return 0.0f;
    return align ? (float)(-1.0 + 2.0 * i / (n - 1)) : (float)((2.0 * i + 1) / n - 1.0);
  };
  std::vector<float> base;
  for (int64_t p = 0; p < points; ++p) {
    SmallVector<int64_t> at(nd);
    for (int64_t r = p, d = nd - 1; d >= 0; --d) { at[d] = r % dims[d]; r /= dims[d]; }
    for (int64_t d = nd - 1; d >= 0; --d) base.push_back(coord(at[d], dims[d])); // x (W) first
    base.push_back(1.0f);
  }
  Value g = floatConst({points, nd + 1}, base);
  Value tT = b.create<TransposeOp>(loc, f32({ts[0], nd + 1, nd}), theta, b.getDenseI64ArrayAttr({0, 2, 1}));
  Value r = buildMatMul(g, tT); // [N, points, nd]
  SmallVector<int64_t> out{ts[0]};
  out.append(dims.begin(), dims.end());
  out.push_back(nd);
  setOutput(0, reshape(r, out));
}

/// CenterCropPad: a centred Slice where the input is larger, a centred
/// zero Pad where it is smaller.
void Importer::convCenterCropPad() {
  Value x = input(0);
  const IntConst &shape = intInput(1, "shape");
  auto xs = shapeOf(x);
  int64_t rank = xs.size();
  SmallVector<int64_t> axes;
  if (auto a = attrInts("axes")) for (int64_t v : *a) axes.push_back(normAxis(v, rank));
  else for (int64_t i = 0; i < rank; ++i) axes.push_back(i);
  if (axes.size() != shape.data.size()) fail("shape must have one value per axis");
  SmallVector<int64_t> st(rank, 0), sliced(xs), pads(2 * rank, 0), padded;
  for (size_t i = 0; i < axes.size(); ++i) {
    int64_t a = axes[i], want = shape.data[i];
    if (want <= 0) fail("target shape must be positive");
    if (xs[a] > want) { st[a] = (xs[a] - want) / 2; sliced[a] = want; }
    else if (xs[a] < want) { pads[a] = (want - xs[a]) / 2; pads[a + rank] = want - xs[a] - pads[a]; }
  }
  Value r = x;
  if (ArrayRef<int64_t>(sliced) != xs)
    r = b.create<SliceOp>(loc, like(x, sliced), x, b.getDenseI64ArrayAttr(st),
                          b.getDenseI64ArrayAttr(SmallVector<int64_t>(rank, 1)));
  if (llvm::any_of(pads, [](int64_t p) { return p != 0; })) {
    for (int64_t i = 0; i < rank; ++i) padded.push_back(sliced[i] + pads[i] + pads[i + rank]);
    r = b.create<PadOp>(loc, like(x, padded), r, b.getDenseI64ArrayAttr(pads), b.getStringAttr("constant"),
                        b.getF32FloatAttr(0.0f));
  }
  setOutput(0, r);
}

/// RNN, GRU and LSTM, unrolled over the (static) sequence: the input
/// projection is one MatMul for all steps, then per step a MatMul with the
/// recurrence weights and the gates' elementwise ops (which fuse).
void Importer::convRecurrent() {
  const std::string &op = node->op_type();
  int64_t G = op == "RNN" ? 1 : op == "GRU" ? 3 : 4;
  Value X = input(0), W = input(1), R = input(2);
  requireF32(X, "X");
  requireF32(W, "W");
  requireF32(R, "R");
  if (shapeOf(X).size() != 3) fail("X must be 3-d");
  bool batchFirst = attrInt("layout", 0) != 0;
  if (batchFirst) X = transpose(X, {1, 0, 2});
  int64_t seq = shapeOf(X)[0], batch = shapeOf(X)[1], inSz = shapeOf(X)[2];
  std::string dir = attrString("direction", "forward");
  if (dir != "forward" && dir != "reverse" && dir != "bidirectional") fail("unknown direction '" + dir + "'");
  int64_t dirs = dir == "bidirectional" ? 2 : 1;
  int64_t hid = attrInt("hidden_size", shapeOf(R).size() == 3 ? shapeOf(R)[2] : 0);
  if (hid <= 0) fail("hidden_size must be positive");
  if (shapeOf(W) != ArrayRef<int64_t>{dirs, G * hid, inSz}) fail("W must be [" + std::to_string(dirs) + ", " + std::to_string(G * hid) + ", " + std::to_string(inSz) + "]");
  if (shapeOf(R) != ArrayRef<int64_t>{dirs, G * hid, hid}) fail("R must be [" + std::to_string(dirs) + ", " + std::to_string(G * hid) + ", " + std::to_string(hid) + "]");
  std::optional<Value> B = optInput(3), lens = optInput(4), h0 = optInput(5);
  std::optional<Value> c0 = op == "LSTM" ? optInput(6) : std::nullopt, P = op == "LSTM" ? optInput(7) : std::nullopt;
  if (attrInt("input_forget", 0)) fail("input_forget=1 is not supported");
  bool linearBeforeReset = attrInt("linear_before_reset", 0) != 0;
  std::vector<std::string> acts;
  if (auto *a = attr("activations")) for (const auto &n : a->strings()) acts.push_back(n);
  std::vector<std::string> defaults = op == "RNN" ? std::vector<std::string>{"Tanh"}
                                      : op == "GRU" ? std::vector<std::string>{"Sigmoid", "Tanh"}
                                                    : std::vector<std::string>{"Sigmoid", "Tanh", "Tanh"};
  if (acts.empty()) {
    for (int64_t d = 0; d < dirs; ++d) acts.insert(acts.end(), defaults.begin(), defaults.end());
  } else if (acts.size() != defaults.size() * dirs) {
    fail("expects " + std::to_string(defaults.size() * dirs) + " activations");
  }
  std::optional<float> clip;
  if (attr("clip")) clip = attrFloat("clip", 0);
  auto activate = [&](const std::string &name, Value v) -> Value {
    if (clip) v = b.create<ClipOp>(loc, v.getType(), v, b.getF32FloatAttr(-*clip), b.getF32FloatAttr(*clip));
    if (name == "Sigmoid") return b.create<SigmoidOp>(loc, v.getType(), v);
    if (name == "Tanh") return b.create<TanhOp>(loc, v.getType(), v);
    if (name == "Relu") return b.create<ReluOp>(loc, v.getType(), v);
    fail("activation '" + name + "' is not supported (Sigmoid, Tanh, Relu are)");
  };
  auto perDir = [&](std::optional<Value> v, int64_t d, ArrayRef<int64_t> shape) -> Value {
    if (v) return reshape(sliceAxis(*v, 0, d, 1), shape);
    return floatConst(shape, std::vector<float>(product(shape), 0.0f));
  };
  Type i32 = b.getI32Type();
  std::optional<Value> lensI32;
  if (lens) lensI32 = reshape(castTo(*lens, i32), {batch, 1});
  Value zeros = floatConst({batch, hid}, std::vector<float>(batch * hid, 0.0f));
  std::vector<std::vector<Value>> ys(seq, std::vector<Value>(dirs));
  SmallVector<Value> yh, yc;
  for (int64_t d = 0; d < dirs; ++d) {
    bool reverse = dir == "reverse" || d == 1;
    const std::string *f = &acts[d * defaults.size()];
    Value WdT = transpose(reshape(sliceAxis(W, 0, d, 1), {G * hid, inSz}), {1, 0});
    Value RdT = transpose(reshape(sliceAxis(R, 0, d, 1), {G * hid, hid}), {1, 0});
    Value xw = buildMatMul(reshape(X, {seq * batch, inSz}), WdT);
    Value rb;
    if (B) {
      Value bd = reshape(sliceAxis(*B, 0, d, 1), {2 * G * hid});
      xw = binary("Add", xw, sliceAxis(bd, 0, 0, G * hid));
      rb = sliceAxis(bd, 0, G * hid, G * hid);
    }
    xw = reshape(xw, {seq, batch, G * hid});
    Value H = perDir(h0, d, {batch, hid}), C = perDir(c0, d, {batch, hid});
    Value peep = P ? reshape(sliceAxis(*P, 0, d, 1), {3 * hid}) : Value();
    auto gate = [&](Value v, int64_t k) { return sliceAxis(v, 1, k * hid, hid); };
    for (int64_t step = 0; step < seq; ++step) {
      int64_t t = reverse ? seq - 1 - step : step;
      Value xt = reshape(sliceAxis(xw, 0, t, 1), {batch, G * hid});
      Value Hn, Cn = C;
      if (op == "GRU") {
        // Gates z, r, h.
        Value rzT = sliceAxis(RdT, 1, 0, 2 * hid), rhT = sliceAxis(RdT, 1, 2 * hid, hid);
        Value hr = buildMatMul(H, rzT);
        if (rb) hr = binary("Add", hr, sliceAxis(rb, 0, 0, 2 * hid));
        Value z = activate(f[0], binary("Add", gate(xt, 0), gate(hr, 0)));
        Value r = activate(f[0], binary("Add", gate(xt, 1), gate(hr, 1)));
        Value rbh = rb ? sliceAxis(rb, 0, 2 * hid, hid) : Value();
        Value hh;
        if (linearBeforeReset) {
          hh = buildMatMul(H, rhT);
          if (rbh) hh = binary("Add", hh, rbh);
          hh = binary("Mul", r, hh);
        } else {
          hh = buildMatMul(binary("Mul", r, H), rhT);
          if (rbh) hh = binary("Add", hh, rbh);
        }
        Value ht = activate(f[1], binary("Add", gate(xt, 2), hh));
        // H = (1 - z) * ht + z * H = ht + z * (H - ht)
        Hn = binary("Add", ht, binary("Mul", z, binary("Sub", H, ht)));
      } else {
        Value g = binary("Add", xt, buildMatMul(H, RdT));
        if (rb) g = binary("Add", g, rb);
        if (op == "RNN") {
          Hn = activate(f[0], g);
        } else {
          // Gates i, o, f, c; peepholes P = [Pi, Po, Pf].
          auto withPeep = [&](Value v, int64_t k, Value c) {
            return peep ? binary("Add", v, binary("Mul", sliceAxis(peep, 0, k * hid, hid), c)) : v;
          };
          Value ig = activate(f[0], withPeep(gate(g, 0), 0, C));
          Value fg = activate(f[0], withPeep(gate(g, 2), 2, C));
          Value cc = activate(f[1], gate(g, 3));
          Cn = binary("Add", binary("Mul", fg, C), binary("Mul", ig, cc));
          Value og = activate(f[0], withPeep(gate(g, 1), 1, Cn));
          Hn = binary("Mul", og, activate(f[2], Cn));
        }
      }
      Value y = Hn;
      if (lensI32) {
        // Steps past a batch entry's length keep its state and output 0.
        Value tc = materializeInt(IntConst{{}, {t}, onnx::TensorProto::INT32});
        Value live = b.create<LessOp>(loc, boolType({batch, 1}), tc, *lensI32);
        Hn = b.create<WhereOp>(loc, Hn.getType(), live, Hn, H);
        Cn = b.create<WhereOp>(loc, Cn.getType(), live, Cn, C);
        y = b.create<WhereOp>(loc, Hn.getType(), live, y, zeros);
      }
      H = Hn;
      C = Cn;
      ys[t][d] = reshape(y, {1, 1, batch, hid});
    }
    yh.push_back(reshape(H, {1, batch, hid}));
    yc.push_back(reshape(C, {1, batch, hid}));
  }
  auto concat = [&](ArrayRef<Value> vs, int64_t axis) -> Value {
    if (vs.size() == 1) return vs[0];
    SmallVector<int64_t> out(shapeOf(vs[0]));
    out[axis] = 0;
    for (Value v : vs) out[axis] += shapeOf(v)[axis];
    return b.create<ConcatOp>(loc, like(vs[0], out), vs, b.getI64IntegerAttr(axis));
  };
  SmallVector<Value> steps;
  for (auto &perT : ys) steps.push_back(concat(perT, 1));
  Value Y = concat(steps, 0), Yh = concat(yh, 0), Yc = concat(yc, 0);
  if (batchFirst) {
    Y = transpose(Y, {2, 0, 1, 3});
    Yh = transpose(Yh, {1, 0, 2});
    Yc = transpose(Yc, {1, 0, 2});
  }
  setOutput(0, Y);
  setOutput(1, Yh);
  if (op == "LSTM") setOutput(2, Yc);
}

void Importer::convNot() {
  Value x = input(0);
  if (!ttype(x).getElementType().isInteger(1)) fail("input must be a bool tensor");
  setOutput(0, b.create<NotOp>(loc, x.getType(), x));
}

void Importer::convWhere() {
  Value c = input(0), x = input(1), y = input(2);
  if (!ttype(c).getElementType().isInteger(1)) fail("condition must be a bool tensor");
  requireSameType(x, y, "X and Y");
  auto s1 = broadcastShapes(shapeOf(c), shapeOf(x));
  if (failed(s1)) fail("shapes cannot broadcast");
  auto s = broadcastShapes(*s1, shapeOf(y));
  if (failed(s)) fail("shapes cannot broadcast");
  setOutput(0, b.create<WhereOp>(loc, like(x, *s), c, x, y));
}

void Importer::convIsNaN() {
  Value x = input(0);
  requireF32(x, "X");
  setOutput(0, b.create<IsNaNOp>(loc, boolType(shapeOf(x)), x));
}

void Importer::convIsInf() {
  Value x = input(0);
  requireF32(x, "X");
  setOutput(0, b.create<IsInfOp>(loc, boolType(shapeOf(x)), x,
                                 b.getBoolAttr(attrInt("detect_positive", 1)),
                                 b.getBoolAttr(attrInt("detect_negative", 1))));
}

void Importer::convGather() {
  Value data = input(0), idx = input(1);
  auto it = ttype(idx).getElementType();
  if (!it.isSignlessInteger(64) && !it.isSignlessInteger(32)) fail("indices must be int32 or int64");
  auto ds = shapeOf(data);
  if (ds.empty()) fail("data must have rank >= 1");
  int64_t axis = normAxis(attrInt("axis", 0), ds.size());
  checkConstantIndices(idx, ds[axis]);
  SmallVector<int64_t> out(ds.begin(), ds.begin() + axis);
  llvm::append_range(out, shapeOf(idx));
  out.append(ds.begin() + axis + 1, ds.end());
  setOutput(0, b.create<GatherOp>(loc, like(data, out), data, idx, b.getI64IntegerAttr(axis)));
}

void Importer::convGatherElements() {
  Value data = input(0), idx = input(1);
  auto it = ttype(idx).getElementType();
  if (!it.isSignlessInteger(64) && !it.isSignlessInteger(32)) fail("indices must be int32 or int64");
  auto ds = shapeOf(data), is = shapeOf(idx);
  if (ds.empty()) fail("data must have rank >= 1");
  if (ds.size() != is.size()) fail("data and indices must have the same rank");
  int64_t axis = normAxis(attrInt("axis", 0), ds.size());
  for (size_t d = 0; d < ds.size(); ++d)
    if ((int64_t)d != axis && is[d] > ds[d])
      fail("indices dim " + std::to_string(d) + " (" + std::to_string(is[d]) +
           ") exceeds the data dim (" + std::to_string(ds[d]) + ")");
  checkConstantIndices(idx, ds[axis]);
  setOutput(0, b.create<GatherElementsOp>(loc, like(data, is), data, idx, b.getI64IntegerAttr(axis)));
}

/// NegativeLogLikelihoodLoss over log-probabilities `x` [N, C, d...] and
/// class indices `target` [N, d...], as a composite of kiln ops:
///   picked = GatherElements(x, target, axis 1); loss = -picked * weight[target]
/// with ignored targets weighted 0; reduction none, sum, or mean (the sum
/// divided by the sum of the weights).
Value Importer::nllLoss(Value x, Value target, std::optional<Value> weight) {
  auto xs = shapeOf(x), ts = shapeOf(target);
  auto it = ttype(target).getElementType();
  if (!it.isSignlessInteger(64) && !it.isSignlessInteger(32)) fail("target must be int32 or int64");
  if (xs.size() < 2 || ts.size() + 1 != xs.size() || ts[0] != xs[0] ||
      !std::equal(ts.begin() + 1, ts.end(), xs.begin() + 2))
    fail("target shape " + joinDims(ts) + " does not fit input shape " + joinDims(xs) + " ([N, C, d...] vs [N, d...])");
  if (weight && (shapeOf(*weight).size() != 1 || shapeOf(*weight)[0] != xs[1]))
    fail("weight must have shape [C]");
  std::string reduction = attrString("reduction", "mean");
  if (reduction != "none" && reduction != "sum" && reduction != "mean")
    fail("reduction '" + reduction + "' is not none, sum or mean");
  Value safe = target, keep;
  if (attr("ignore_index")) {
    Value ign = b.create<ConstantOp>(loc, DenseElementsAttr::get(RankedTensorType::get({}, it),
                                                                 APInt(it.getIntOrFloatBitWidth(), attrInt("ignore_index", 0), true)));
    Value zero = b.create<ConstantOp>(loc, DenseElementsAttr::get(RankedTensorType::get({}, it),
                                                                  APInt(it.getIntOrFloatBitWidth(), 0)));
    Value isIgn = b.create<EqualOp>(loc, boolType(ts), target, ign);
    safe = b.create<WhereOp>(loc, target.getType(), isIgn, zero, target);
    keep = b.create<CastOp>(loc, f32(ts), b.create<NotOp>(loc, boolType(ts), isIgn));
  } else {
    checkConstantIndices(target, xs[1]);
  }
  SmallVector<int64_t> idxShape(ts);
  idxShape.insert(idxShape.begin() + 1, 1);
  Value picked = b.create<GatherElementsOp>(loc, f32(idxShape), x, reshape(safe, idxShape), b.getI64IntegerAttr(1));
  Value loss = b.create<NegOp>(loc, f32(ts), reshape(picked, ts));
  Value w;
  if (weight) w = b.create<GatherOp>(loc, f32(ts), *weight, safe, b.getI64IntegerAttr(0));
  if (keep) w = w ? Value(b.create<MulOp>(loc, f32(ts), w, keep)) : keep;
  if (w) loss = b.create<MulOp>(loc, f32(ts), loss, w);
  if (reduction == "none") return loss;
  SmallVector<int64_t> all;
  for (size_t i = 0; i < ts.size(); ++i) all.push_back(i);
  auto allAttr = b.getDenseI64ArrayAttr(all);
  if (reduction == "mean" && !w)
    return b.create<ReduceMeanOp>(loc, f32({}), loss, allAttr, b.getBoolAttr(false));
  Value sum = b.create<ReduceSumOp>(loc, f32({}), loss, allAttr, b.getBoolAttr(false));
  if (reduction == "sum") return sum;
  Value wsum = b.create<ReduceSumOp>(loc, f32({}), w, allAttr, b.getBoolAttr(false));
  return b.create<DivOp>(loc, f32({}), sum, wsum);
}

void Importer::convNLLLoss() {
  requireF32(input(0), "input");
  setOutput(0, nllLoss(input(0), input(1), optInput(2)));
}

void Importer::convSoftmaxCrossEntropyLoss() {
  Value x = input(0);
  requireF32(x, "scores");
  if (shapeOf(x).size() < 2) fail("scores must have rank >= 2");
  Value logp = b.create<LogSoftmaxOp>(loc, x.getType(), x, b.getI64IntegerAttr(1));
  setOutput(0, nllLoss(logp, input(1), optInput(2)));
  setOutput(1, logp);
}

namespace {
/// One output coordinate's taps along one axis: input indices and weights.
struct Taps {
  std::vector<int64_t> idx;
  std::vector<double> w;
  bool outside = false;
};

/// How Resize maps an output coordinate to taps along one axis; a port of
/// the ONNX reference implementation (onnx/reference/ops/op_resize.py).
struct ResizeAxis {
  std::string mode, ctm, nearestMode;
  double cubicA = -0.75, scale = 1, roiStart = 0, roiEnd = 1;
  bool excludeOutside = false, antialias = false;
  int64_t inLen = 1, outLen = 1;

  std::vector<double> coeffs(double ratio) const {
    if (mode == "nearest") {
      if (ratio == std::floor(ratio)) return {0, 1};
      if (nearestMode == "round_prefer_ceil") return {double(ratio < 0.5), double(ratio >= 0.5)};
      if (nearestMode == "floor") return {1, 0};
      if (nearestMode == "ceil") return {0, 1};
      return {double(ratio <= 0.5), double(ratio > 0.5)}; // round_prefer_floor
    }
    double s = std::min(scale, 1.0);
    std::vector<double> c;
    if (mode == "linear") {
      if (!antialias) return {1 - ratio, ratio};
      int64_t start = (int64_t)std::floor(-1 / s) + 1, footprint = 2 - 2 * start;
      for (int64_t i = start; i < start + footprint; ++i)
        c.push_back(std::clamp(1 - std::abs((i - ratio) * s), 0.0, 1.0));
    } else { // cubic
      double A = cubicA;
      if (!antialias) {
        double r1 = ratio + 1, q = 1 - ratio, q1 = q + 1;
        return {((A * r1 - 5 * A) * r1 + 8 * A) * r1 - 4 * A, ((A + 2) * ratio - (A + 3)) * ratio * ratio + 1,
                ((A + 2) * q - (A + 3)) * q * q + 1, ((A * q1 - 5 * A) * q1 + 8 * A) * q1 - 4 * A};
      }
      auto f = [&](double x) {
        x = std::abs(x);
        if (x <= 1) return (A + 2) * x * x * x - (A + 3) * x * x + 1;
        if (x < 2) return A * x * x * x - 5 * A * x * x + 8 * A * x - 4 * A;
        return 0.0;
      };
      int64_t iStart = (int64_t)std::floor(-2 / s) + 1, iEnd = 2 - iStart;
      for (int64_t i = iStart; i < iEnd; ++i) c.push_back(f(s * (i - ratio)));
    }
    double sum = 0;
    for (double v : c) sum += v;
    for (double &v : c) v /= sum;
    return c;
  }

  Taps taps(int64_t x) const {
    Taps t;
    double outW = scale * (double)inLen, xo;
    if (ctm == "align_corners") xo = outW == 1 ? 0 : x * (inLen - 1) / (outW - 1);
    else if (ctm == "asymmetric") xo = x / scale;
    else if (ctm == "tf_crop_and_resize") {
      xo = outW == 1 ? (roiEnd - roiStart) * (inLen - 1) / 2 : x * (roiEnd - roiStart) * (inLen - 1) / (outW - 1);
      xo += roiStart * (inLen - 1);
      if (xo < 0 || xo > inLen - 1) { t.outside = true; t.idx = {-1}; t.w = {0}; return t; }
    } else if (ctm == "pytorch_half_pixel") xo = outW == 1 ? -0.5 : (x + 0.5) / scale - 0.5;
    else if (ctm == "half_pixel_symmetric") {
      double adjustment = outLen / outW, center = inLen / 2.0;
      xo = center * (1 - adjustment) + (x + 0.5) / scale - 0.5;
    } else xo = (x + 0.5) / scale - 0.5; // half_pixel
    double fl = std::floor(xo), ratio = xo == fl ? 1 : xo - fl;
    std::vector<double> c = coeffs(ratio);
    int64_t n = c.size(), pad = (n + 1) / 2;
    // The n indices of the edge-padded axis nearest to xo (ties: smaller).
    double xp = xo + pad;
    std::vector<int64_t> cand;
    for (int64_t i = (int64_t)std::floor(xp) - n - 1; i <= (int64_t)std::floor(xp) + n + 1; ++i)
      if (i >= 0 && i < inLen + 2 * pad) cand.push_back(i);
    std::stable_sort(cand.begin(), cand.end(), [&](int64_t a, int64_t b) {
      double da = std::abs(xp - a), db = std::abs(xp - b);
      return da != db ? da < db : a < b;
    });
    cand.resize(std::min<size_t>(cand.size(), n));
    std::sort(cand.begin(), cand.end());
    if ((int64_t)cand.size() != n) fail("resize: cannot place the interpolation taps");
    if (excludeOutside) {
      double sum = 0;
      for (int64_t i = 0; i < n; ++i) {
        int64_t src = cand[i] - pad;
        if (src < 0 || src >= inLen) c[i] = 0;
        sum += c[i];
      }
      for (double &v : c) v /= sum;
    }
    // Edge padding: clamp, then merge taps that read the same element.
    for (int64_t i = 0; i < n; ++i) {
      int64_t src = std::clamp<int64_t>(cand[i] - pad, 0, inLen - 1);
      if (c[i] == 0) continue;
      auto it = std::find(t.idx.begin(), t.idx.end(), src);
      if (it != t.idx.end()) t.w[it - t.idx.begin()] += c[i];
      else t.idx.push_back(src), t.w.push_back(c[i]);
    }
    if (t.idx.empty()) t.idx = {std::clamp<int64_t>((int64_t)std::floor(xo), 0, inLen - 1)}, t.w = {0};
    return t;
  }
};
} // namespace

/// Resize (opset 10+) and Upsample (opset 7-9): the scales/sizes/roi inputs
/// must be constants; the per-axis tap tables are computed here.
void Importer::convResize() {
  Value x = input(0);
  requireF32(x, "X");
  auto xs = shapeOf(x);
  int64_t r = xs.size();
  bool upsample = node->op_type() == "Upsample";
  ResizeAxis proto;
  proto.mode = attrString("mode", "nearest");
  if (proto.mode != "nearest" && proto.mode != "linear" && proto.mode != "cubic")
    fail("mode '" + proto.mode + "' is not nearest, linear or cubic");
  if (upsample && proto.mode == "cubic") fail("Upsample has no cubic mode");
  bool legacy = upsample || opset < 11;
  proto.ctm = legacy ? "asymmetric" : attrString("coordinate_transformation_mode", "half_pixel");
  static const std::set<std::string> ctms = {"half_pixel", "half_pixel_symmetric", "pytorch_half_pixel",
                                             "align_corners", "asymmetric", "tf_crop_and_resize"};
  if (!ctms.count(proto.ctm)) fail("coordinate_transformation_mode '" + proto.ctm + "' is not supported");
  proto.nearestMode = legacy ? "floor" : attrString("nearest_mode", "round_prefer_floor");
  proto.cubicA = attrFloat("cubic_coeff_a", -0.75f);
  proto.excludeOutside = attrInt("exclude_outside", 0);
  proto.antialias = attrInt("antialias", 0);
  if (proto.antialias && proto.mode == "nearest") fail("antialias is not defined for nearest mode");
  float extrapolation = attrFloat("extrapolation_value", 0.f);
  std::string policy = attrString("keep_aspect_ratio_policy", "stretch");

  auto floats = [&](int i, StringRef what) {
    std::vector<double> v;
    if (!hasInput(i)) return v;
    if (isIntConst(i) && intInput(i, what).data.empty()) return v;
    for (float f : floatConstInput(i, what).getValues<float>()) v.push_back(f);
    return v;
  };
  std::vector<double> scales, roi;
  std::vector<int64_t> sizes;
  if (upsample && opset < 9) {
    auto a = attr("scales");
    if (!a || a->type() != onnx::AttributeProto::FLOATS) fail("attribute 'scales' (floats) is required");
    scales.assign(a->floats().begin(), a->floats().end());
  } else if (legacy) {
    scales = floats(1, "scales");
  } else {
    roi = floats(1, "roi");
    scales = floats(2, "scales");
    if (hasInput(3)) sizes = intInput(3, "sizes").data;
  }
  std::vector<int64_t> axes;
  if (auto a = attrInts("axes")) {
    for (int64_t v : *a) axes.push_back(normAxis(v, r));
  } else {
    for (int64_t i = 0; i < r; ++i) axes.push_back(i);
  }
  int64_t na = axes.size();
  if (scales.empty() == sizes.empty()) fail("exactly one of scales and sizes must be given");
  if (!scales.empty() && (int64_t)scales.size() != na) fail("scales must have one value per axis");
  if (!sizes.empty() && (int64_t)sizes.size() != na) fail("sizes must have one value per axis");
  if (!roi.empty() && (int64_t)roi.size() != 2 * na) fail("roi must have 2 values per axis");
  std::vector<double> scale(r, 1.0), roiS(r, 0.0), roiE(r, 1.0);
  std::vector<int64_t> out(xs.begin(), xs.end());
  for (int64_t i = 0; i < na; ++i)
    if (!roi.empty()) roiS[axes[i]] = roi[i], roiE[axes[i]] = roi[na + i];
  if (!scales.empty()) {
    for (int64_t i = 0; i < na; ++i) {
      if (!(scales[i] > 0) || scales[i] > 1e6) fail("scales must be positive");
      scale[axes[i]] = scales[i];
      out[axes[i]] = (int64_t)(scales[i] * (double)xs[axes[i]]);
    }
  } else {
    for (int64_t i = 0; i < na; ++i) {
      if (sizes[i] <= 0 || sizes[i] > kMaxGeometry) fail("sizes must be positive");
      scale[axes[i]] = (double)sizes[i] / (double)xs[axes[i]];
      out[axes[i]] = sizes[i];
    }
    if (policy != "stretch") {
      if (policy != "not_larger" && policy != "not_smaller")
        fail("keep_aspect_ratio_policy '" + policy + "' is not supported");
      double s = scale[axes[0]];
      for (int64_t a : axes) s = policy == "not_larger" ? std::min(s, scale[a]) : std::max(s, scale[a]);
      for (int64_t a : axes) scale[a] = s, out[a] = (int64_t)(s * xs[a] + 0.5);
    }
  }
  for (int64_t d = 0; d < r; ++d)
    if (out[d] <= 0) fail("the output would be empty");

  SmallVector<Value> tables;
  SmallVector<int64_t> keptAxes;
  bool weighted = false, extrapolate = false;
  std::vector<std::vector<Taps>> all;
  for (int64_t d = 0; d < r; ++d) {
    ResizeAxis ax = proto;
    ax.scale = scale[d], ax.inLen = xs[d], ax.outLen = out[d], ax.roiStart = roiS[d], ax.roiEnd = roiE[d];
    std::vector<Taps> tv;
    bool identity = out[d] == xs[d];
    for (int64_t o = 0; o < out[d]; ++o) {
      tv.push_back(ax.taps(o));
      const Taps &t = tv.back();
      identity &= !t.outside && t.idx.size() == 1 && t.idx[0] == o && t.w[0] == 1;
    }
    if (identity) continue;
    keptAxes.push_back(d);
    all.push_back(std::move(tv));
  }
  if (keptAxes.empty()) { setOutput(0, x); return; }
  for (auto &tv : all)
    for (auto &t : tv) {
      weighted |= t.idx.size() > 1 || t.w[0] != 1;
      extrapolate |= t.outside;
    }
  for (auto &tv : all) {
    int64_t T = 1;
    for (auto &t : tv) T = std::max<int64_t>(T, t.idx.size());
    int64_t O = tv.size();
    SmallVector<APInt> idx;
    std::vector<float> w;
    for (auto &t : tv)
      for (int64_t k = 0; k < T; ++k) {
        bool real = k < (int64_t)t.idx.size();
        idx.push_back(APInt(64, real ? t.idx[k] : (t.outside ? 0 : t.idx[0]), true));
        w.push_back(real ? (float)t.w[k] : 0.f);
      }
    auto it = RankedTensorType::get({O, T}, b.getI64Type());
    tables.push_back(b.create<ConstantOp>(loc, DenseElementsAttr::get(it, idx)));
    if (weighted) tables.push_back(b.create<ConstantOp>(loc, DenseElementsAttr::get(f32({O, T}), ArrayRef<float>(w))));
  }
  setOutput(0, b.create<ResizeOp>(loc, like(x, out), x, tables, b.getDenseI64ArrayAttr(keptAxes),
                                  b.getBoolAttr(weighted), b.getBoolAttr(extrapolate),
                                  b.getF32FloatAttr(extrapolation)));
}

void Importer::convGatherND() {
  Value data = input(0), idx = input(1);
  if (!ttype(idx).getElementType().isSignlessInteger(64)) fail("indices must be int64");
  auto ds = shapeOf(data), is = shapeOf(idx);
  int64_t bd = attrInt("batch_dims", 0), q = is.size(), r = ds.size();
  if (q < 1 || r < 1) fail("data and indices must have rank >= 1");
  if (bd < 0 || bd >= std::min(q, r)) fail("batch_dims is out of range");
  int64_t k = is.back();
  if (k < 1 || bd + k > r) fail("indices' last dim must be between 1 and rank(data) - batch_dims");
  for (int64_t i = 0; i < bd; ++i)
    if (ds[i] != is[i]) fail("batch dims of data and indices differ");
  SmallVector<int64_t> out(is.begin(), is.end() - 1);
  out.append(ds.begin() + bd + k, ds.end());
  setOutput(0, b.create<GatherNDOp>(loc, like(data, out), data, idx, b.getI64IntegerAttr(bd)));
}

void Importer::convScatter() {
  Value data = input(0), idx = input(1), upd = input(2);
  auto it = ttype(idx).getElementType();
  if (!it.isSignlessInteger(64) && !it.isSignlessInteger(32)) fail("indices must be int32 or int64");
  requireSameType(data, upd, "data, updates");
  auto ds = shapeOf(data), is = shapeOf(idx), us = shapeOf(upd);
  std::string red = attrString("reduction", "none");
  if (red != "none" && red != "add" && red != "mul" && red != "max" && red != "min")
    fail("reduction '" + red + "' is not supported");
  if (ttype(data).getElementType().isInteger(1) && red != "none") fail("bool data needs reduction none");
  if (node->op_type() == "ScatterND") {
    int64_t q = is.size(), k = q ? is.back() : 0;
    if (q < 1 || k < 1 || k > (int64_t)ds.size()) fail("indices' last dim must be between 1 and rank(data)");
    SmallVector<int64_t> want(is.begin(), is.end() - 1);
    want.append(ds.begin() + k, ds.end());
    if (ArrayRef<int64_t>(want) != us) fail("updates must have shape " + joinDims(want));
    setOutput(0, b.create<ScatterNDOp>(loc, data.getType(), data, idx, upd, b.getStringAttr(red)));
    return;
  }
  if (ds.size() != is.size() || is != us) fail("data, indices and updates must have the same rank, indices and updates the same shape");
  int64_t axis = normAxis(attrInt("axis", 0), ds.size());
  for (size_t d = 0; d < ds.size(); ++d)
    if ((int64_t)d != axis && is[d] > ds[d]) fail("indices exceed the data along dim " + std::to_string(d));
  checkConstantIndices(idx, ds[axis]);
  setOutput(0, b.create<ScatterElementsOp>(loc, data.getType(), data, idx, upd, b.getI64IntegerAttr(axis),
                                           b.getStringAttr(red)));
}

void Importer::convCumSum() {
  Value x = input(0);
  Type et = ttype(x).getElementType();
  if (et.isInteger(1)) fail("bool input is not supported");
  auto xs = shapeOf(x);
  if (xs.empty()) fail("input must have rank >= 1");
  const IntConst &a = intInput(1, "axis");
  if (a.data.size() != 1) fail("axis must hold one value");
  int64_t axis = normAxis(a.data[0], xs.size());
  setOutput(0, b.create<CumSumOp>(loc, x.getType(), x, b.getI64IntegerAttr(axis),
                                  b.getBoolAttr(attrInt("exclusive", 0)), b.getBoolAttr(attrInt("reverse", 0))));
}

/// [0, 1, ..., n-1] as i64, shaped to broadcast along `axis` of a rank-r tensor.
Value Importer::iotaAlong(int64_t n, int64_t axis, int64_t r) {
  SmallVector<int64_t> shape(r, 1);
  shape[axis] = n;
  SmallVector<APInt> v;
  for (int64_t i = 0; i < n; ++i) v.push_back(APInt(64, i));
  return b.create<ConstantOp>(loc, DenseElementsAttr::get(RankedTensorType::get(shape, b.getI64Type()), v));
}

/// Hardmax: 1 at the first maximum along axis, else 0
/// (= ArgMax, compared with an iota, cast).
void Importer::convHardmax() {
  Value x = input(0);
  requireFloat(x, "input");
  auto xs = shapeOf(x);
  int64_t r = xs.size();
  if (r == 0) fail("input must have rank >= 1");
  int64_t axis = normAxis(attrInt("axis", opset < 13 ? 1 : -1), r);
  if (opset < 13 && axis != r - 1) fail("opset < 13 Hardmax over flattened trailing dims is not supported");
  SmallVector<int64_t> keep(xs);
  keep[axis] = 1;
  Value am = b.create<ArgMaxOp>(loc, RankedTensorType::get(keep, b.getI64Type()), x, b.getI64IntegerAttr(axis),
                                b.getBoolAttr(false));
  Value eq = b.create<EqualOp>(loc, boolType(xs), am, iotaAlong(xs[axis], axis, r));
  setOutput(0, b.create<CastOp>(loc, x.getType(), eq));
}

/// OneHot: out = (normalised indices, unsqueezed at axis) == iota ? on : off.
void Importer::convOneHot() {
  Value idx = input(0), values = input(2);
  Type it = ttype(idx).getElementType();
  if (it.isInteger(1)) fail("indices must be numeric");
  auto is = shapeOf(idx);
  int64_t r = is.size() + 1;
  int64_t axis = normAxis(attrInt("axis", -1), r);
  int64_t depth;
  if (isIntConst(1)) {
    depth = intInput(1, "depth").data.at(0);
  } else {
    auto c = floatConstInput(1, "depth");
    depth = (int64_t)*c.getValues<float>().begin();
  }
  if (depth < 1 || depth > kMaxGeometry) fail("depth must be positive");
  if (shapeOf(values).size() != 1 || shapeOf(values)[0] != 2) fail("values must be [off_value, on_value]");
  SmallVector<int64_t> us(is);
  us.insert(us.begin() + axis, 1);
  Value i64 = idx;
  if (!it.isSignlessInteger(64)) i64 = b.create<CastOp>(loc, RankedTensorType::get(is, b.getI64Type()), idx);
  i64 = reshape(i64, us);
  // Negative indices count from the end.
  auto i64t = RankedTensorType::get(us, b.getI64Type());
  Value zero = b.create<ConstantOp>(loc, DenseElementsAttr::get(RankedTensorType::get({}, b.getI64Type()), APInt(64, 0)));
  Value d = b.create<ConstantOp>(loc, DenseElementsAttr::get(RankedTensorType::get({}, b.getI64Type()), APInt(64, depth)));
  Value neg = b.create<LessOp>(loc, boolType(us), i64, zero);
  i64 = b.create<WhereOp>(loc, i64t, neg, b.create<AddOp>(loc, i64t, i64, d), i64);
  SmallVector<int64_t> out(is);
  out.insert(out.begin() + axis, depth);
  Value eq = b.create<EqualOp>(loc, boolType(out), i64, iotaAlong(depth, axis, r));
  auto vt = ttype(values).getElementType();
  Value off = reshape(b.create<SliceOp>(loc, RankedTensorType::get({1}, vt), values, b.getDenseI64ArrayAttr({0}),
                                        b.getDenseI64ArrayAttr({1})), {});
  Value on = reshape(b.create<SliceOp>(loc, RankedTensorType::get({1}, vt), values, b.getDenseI64ArrayAttr({1}),
                                       b.getDenseI64ArrayAttr({1})), {});
  setOutput(0, b.create<WhereOp>(loc, RankedTensorType::get(out, vt), eq, on, off));
}

void Importer::convTopK() {
  Value x = input(0);
  if (ttype(x).getElementType().isInteger(1)) fail("bool input is not supported");
  auto xs = shapeOf(x);
  if (xs.empty()) fail("input must have rank >= 1");
  int64_t axis = normAxis(attrInt("axis", -1), xs.size());
  int64_t k = opset < 10 ? attrInt("k", -1) : intInput(1, "K").data.at(0);
  if (k < 1 || k > xs[axis]) fail("k must be between 1 and the axis length " + std::to_string(xs[axis]));
  SmallVector<int64_t> out(xs);
  out[axis] = k;
  auto op = b.create<TopKOp>(loc, TypeRange{like(x, out), RankedTensorType::get(out, b.getI64Type())}, x,
                             b.getI64IntegerAttr(axis), b.getBoolAttr(attrInt("largest", 1)));
  setOutput(0, op.getValues());
  setOutput(1, op.getIndices());
}

/// Einsum: the equation becomes indexing maps over one loop nest (see the
/// op's description). Operand dims of size 1 under an ellipsis broadcast.
void Importer::convEinsum() {
  std::string eq;
  for (char ch : attrString("equation", "")) if (ch != ' ') eq += ch;
  if (eq.empty()) fail("attribute 'equation' is required");
  int n = numInputs();
  if (n < 1) fail("needs at least one input");
  Type et = ttype(input(0)).getElementType();
  if (et.isInteger(1)) fail("bool inputs are not supported");
  for (int i = 0; i < n; ++i) requireSameType(input(0), input(i), "inputs");
  size_t arrow = eq.find("->");
  std::string lhs = eq.substr(0, arrow);
  std::vector<std::string> terms;
  for (size_t st = 0;;) {
    size_t c = lhs.find(',', st);
    terms.push_back(lhs.substr(st, c == std::string::npos ? std::string::npos : c - st));
    if (c == std::string::npos) break;
    st = c + 1;
  }
  if ((int)terms.size() != n) fail("equation has " + std::to_string(terms.size()) + " operands, node has " + std::to_string(n));
  // Per operand: its subscripts, '.' standing for each ellipsis dim.
  auto expand = [&](const std::string &t, int64_t rank) -> std::string {
    size_t e = t.find("...");
    std::string letters = e == std::string::npos ? t : t.substr(0, e) + t.substr(e + 3);
    for (char ch : letters)
      if (!isalpha((unsigned char)ch)) fail("bad character '" + std::string(1, ch) + "' in equation");
    if (e == std::string::npos) {
      if ((int64_t)t.size() != rank) fail("term '" + t + "' does not match an operand of rank " + std::to_string(rank));
      return t;
    }
    int64_t ne = rank - (int64_t)letters.size();
    if (ne < 0) fail("term '" + t + "' has more letters than its operand's rank");
    return t.substr(0, e) + std::string(ne, '.') + t.substr(e + 3);
  };
  std::vector<std::string> subs;
  int64_t E = 0;
  for (int i = 0; i < n; ++i) {
    subs.push_back(expand(terms[i], shapeOf(input(i)).size()));
    E = std::max<int64_t>(E, std::count(subs.back().begin(), subs.back().end(), '.'));
  }
  // Loop dims: E ellipsis dims, then letters by first appearance.
  std::string letters;
  std::map<char, int> count;
  for (auto &t : subs)
    for (char ch : t)
      if (ch != '.') { if (!count[ch]++) letters += ch; }
  std::string rhs;
  if (arrow != std::string::npos) {
    rhs = eq.substr(arrow + 2);
  } else {
    rhs = E ? "..." : "";
    std::string once;
    for (char ch : letters) if (count[ch] == 1) once += ch;
    std::sort(once.begin(), once.end());
    rhs += once;
  }
  size_t re = rhs.find("...");
  std::string rsub = re == std::string::npos ? rhs : rhs.substr(0, re) + std::string(E, '.') + rhs.substr(re + 3);
  int64_t nd = E + letters.size();
  auto dimOf = [&](char ch) { return (int64_t)(E + letters.find(ch)); };
  SmallVector<int64_t> size(nd, 1);
  SmallVector<bool> known(nd, false);
  SmallVector<AffineMap> maps;
  for (int i = 0; i < n; ++i) {
    auto sh = shapeOf(input(i));
    int64_t ne = std::count(subs[i].begin(), subs[i].end(), '.'), ei = 0;
    SmallVector<AffineExpr> ex;
    for (size_t j = 0; j < subs[i].size(); ++j) {
      int64_t d = subs[i][j] == '.' ? E - ne + ei++ : dimOf(subs[i][j]);
      if (subs[i][j] == '.' && sh[j] == 1) { ex.push_back(b.getAffineConstantExpr(0)); continue; }
      if (known[d] && size[d] != sh[j]) fail("dimension sizes disagree for '" + std::string(1, subs[i][j]) + "'");
      size[d] = sh[j], known[d] = true;
      ex.push_back(b.getAffineDimExpr(d));
    }
    maps.push_back(AffineMap::get(nd, 0, ex, b.getContext()));
  }
  SmallVector<AffineExpr> oex;
  SmallVector<int64_t> out;
  SmallVector<bool> red(nd, true);
  int64_t oe = 0;
  for (char ch : rsub) {
    if (ch != '.' && !count.count(ch)) fail("output letter '" + std::string(1, ch) + "' is not in any input");
    int64_t d = ch == '.' ? oe++ : dimOf(ch);
    if (!red[d]) fail("output letter repeated");
    red[d] = false;
    oex.push_back(b.getAffineDimExpr(d));
    out.push_back(size[d]);
  }
  for (int64_t d = 0; d < E; ++d)
    if (red[d]) fail("ellipsis dims must appear in the output");
  maps.push_back(AffineMap::get(nd, 0, oex, b.getContext()));
  SmallVector<Value> ins;
  for (int i = 0; i < n; ++i) ins.push_back(input(i));
  setOutput(0, b.create<EinsumOp>(loc, RankedTensorType::get(out, et), ins, b.getStringAttr(eq),
                                  b.getAffineMapArrayAttr(maps), b.getDenseBoolArrayAttr(red)));
}

void Importer::convGridSample() {
  Value x = input(0), grid = input(1);
  requireF32(x, "X");
  requireF32(grid, "grid");
  auto xs = shapeOf(x), gs = shapeOf(grid);
  int64_t k = (int64_t)xs.size() - 2;
  if (k < 1 || k > 3) fail("input must have 1 to 3 spatial dims");
  if ((int64_t)gs.size() != k + 2 || gs[0] != xs[0] || gs.back() != k)
    fail("grid must have shape [N, O1..O" + std::to_string(k) + ", " + std::to_string(k) + "]");
  std::string mode = attrString("mode", opset >= 20 ? "linear" : "bilinear");
  if (mode == "bilinear") mode = "linear";
  if (mode == "bicubic") mode = "cubic";
  if (mode != "linear" && mode != "nearest" && mode != "cubic") fail("mode '" + mode + "' is not supported");
  std::string pad = attrString("padding_mode", "zeros");
  if (pad != "zeros" && pad != "border" && pad != "reflection") fail("padding_mode '" + pad + "' is not supported");
  SmallVector<int64_t> out{xs[0], xs[1]};
  out.append(gs.begin() + 1, gs.end() - 1);
  setOutput(0, b.create<GridSampleOp>(loc, f32(out), x, grid, b.getStringAttr(mode), b.getStringAttr(pad),
                                      b.getBoolAttr(attrInt("align_corners", 0))));
}

template <typename OpT> void Importer::convArg() {
  Value x = input(0);
  if (ttype(x).getElementType().isInteger(1)) fail("bool input is not supported");
  auto xs = shapeOf(x);
  int64_t axis = normAxis(attrInt("axis", 0), xs.size());
  bool keep = attrInt("keepdims", 1);
  SmallVector<int64_t> out;
  for (int64_t i = 0; i < (int64_t)xs.size(); ++i) {
    if (i != axis) out.push_back(xs[i]);
    else if (keep) out.push_back(1);
  }
  Value r = b.create<OpT>(loc, RankedTensorType::get(out, b.getI64Type()), x, b.getI64IntegerAttr(axis),
                          b.getBoolAttr(attrInt("select_last_index", 0)));
  setOutput(0, r);
}

/// Range with constant inputs becomes a constant (integer or float).
void Importer::convRange() {
  if (isIntConst(0) && isIntConst(1) && isIntConst(2)) {
    int64_t st = intInput(0, "start").data.at(0), lim = intInput(1, "limit").data.at(0),
            d = intInput(2, "delta").data.at(0);
    if (d == 0) fail("delta must be non-zero");
    // Exact element count: ceil((limit - start) / delta), at least 0.
    __int128 diff = (__int128)lim - st, q = diff / d;
    if (q * d != diff && (diff < 0) == (d < 0)) ++q;
    int64_t count = q < 0 ? 0 : q > kMaxFoldElements ? kMaxFoldElements + 1 : (int64_t)q;
    if (count > kMaxFoldElements)
      fail("range is too large to build at compile time (over " + std::to_string(kMaxFoldElements) + " elements)");
    IntConst c{{}, {}, intInput(0, "start").dtype};
    for (int64_t i = 0; i < count; ++i)
      c.data.push_back((int64_t)((uint64_t)st + (uint64_t)i * (uint64_t)d));
    c.shape = {(int64_t)c.data.size()};
    if (c.data.empty()) fail("empty range is not supported");
    setIntOutput(0, c);
    return;
  }
  auto cs = constantOf(input(0)), cl = constantOf(input(1)), cd = constantOf(input(2));
  if (!cs) needConstant(0, "start");
  if (!cl) needConstant(1, "limit");
  if (!cd) needConstant(2, "delta");
  float st = *cs->getValues<float>().begin(), lim = *cl->getValues<float>().begin(),
        d = *cd->getValues<float>().begin();
  if (d == 0) fail("delta must be non-zero");
  double count = std::ceil(((double)lim - (double)st) / (double)d);
  if (!(count <= (double)kMaxFoldElements))
    fail("range is too large (or NaN) to build at compile time");
  int64_t n = std::max<int64_t>(0, (int64_t)count);
  if (n == 0) fail("empty range is not supported");
  std::vector<float> v(n);
  for (int64_t i = 0; i < n; ++i) v[i] = st + i * d;
  setOutput(0, b.create<ConstantOp>(loc, DenseElementsAttr::get(f32({n}), ArrayRef<float>(v))));
}

// Integer-only ops (shape arithmetic) that are valid only when folded.
static void foldOnly(Importer &) {
  throw NodeError{"only supported on compile-time constant integer inputs (shape arithmetic)"};
}

const std::unordered_map<std::string, Importer::Converter> &Importer::converters() {
  static const std::unordered_map<std::string, Converter> table = {
      {"Conv", &Importer::convConv},
      {"ConvTranspose", &Importer::convConvTranspose},
      {"Gemm", &Importer::convGemm},
      {"MatMul", &Importer::convMatMul},
      {"Add", &Importer::convBinary<AddOp>},
      {"Sub", &Importer::convBinary<SubOp>},
      {"Mul", &Importer::convBinary<MulOp>},
      {"Div", &Importer::convBinary<DivOp>},
      {"Pow", &Importer::convPow},
      {"PRelu", &Importer::convBinary<PReluOp>},
      {"Sqrt", &Importer::convUnary<SqrtOp>},
      {"Exp", &Importer::convUnary<ExpOp>},
      {"Log", &Importer::convUnary<LogOp>},
      {"Neg", &Importer::convUnary<NegOp>},
      {"Abs", &Importer::convUnary<AbsOp>},
      {"Reciprocal", &Importer::convUnary<ReciprocalOp>},
      {"Relu", &Importer::convUnary<ReluOp>},
      {"Sigmoid", &Importer::convUnary<SigmoidOp>},
      {"Tanh", &Importer::convUnary<TanhOp>},
      {"Erf", &Importer::convUnary<ErfOp>},
      {"HardSwish", &Importer::convUnary<HardSwishOp>},
      {"LeakyRelu", &Importer::convLeakyRelu},
      {"HardSigmoid", &Importer::convHardSigmoid},
      {"Clip", &Importer::convClip},
      {"Softmax", &Importer::convSoftmax<SoftmaxOp>},
      {"LogSoftmax", &Importer::convSoftmax<LogSoftmaxOp>},
      {"Softplus", &Importer::convUnary<SoftplusOp>},
      {"Softsign", &Importer::convUnary<SoftsignOp>},
      {"Mish", &Importer::convUnary<MishOp>},
      {"Floor", &Importer::convUnary<FloorOp>},
      {"Ceil", &Importer::convUnary<CeilOp>},
      {"Round", &Importer::convUnary<RoundOp>},
      {"Sign", &Importer::convUnary<SignOp>},
      {"Sin", &Importer::convUnary<SinOp>},
      {"Cos", &Importer::convUnary<CosOp>},
      {"Tan", &Importer::convUnary<TanOp>},
      {"Asin", &Importer::convUnary<AsinOp>},
      {"Acos", &Importer::convUnary<AcosOp>},
      {"Atan", &Importer::convUnary<AtanOp>},
      {"Sinh", &Importer::convUnary<SinhOp>},
      {"Cosh", &Importer::convUnary<CoshOp>},
      {"Asinh", &Importer::convUnary<AsinhOp>},
      {"Acosh", &Importer::convUnary<AcoshOp>},
      {"Atanh", &Importer::convUnary<AtanhOp>},
      {"Elu", [](Importer &i) { i.convUnaryAlpha<EluOp>(1.0f); }},
      {"Celu", [](Importer &i) { i.convUnaryAlpha<CeluOp>(1.0f); }},
      {"ThresholdedRelu", [](Importer &i) { i.convUnaryAlpha<ThresholdedReluOp>(1.0f); }},
      {"Selu", &Importer::convSelu},
      {"Shrink", &Importer::convShrink},
      {"Gelu", &Importer::convGelu},
      {"Max", &Importer::convVariadic<MaxOp>},
      {"Min", &Importer::convVariadic<MinOp>},
      {"Sum", [](Importer &i) { i.convSum(false); }},
      {"Mean", [](Importer &i) { i.convSum(true); }},
      {"Mod", &Importer::convMod},
      {"ReduceMin", &Importer::convReduce<ReduceMinOp>},
      {"ReduceProd", &Importer::convReduce<ReduceProdOp>},
      {"ReduceL1", &Importer::convReduce<ReduceL1Op>},
      {"ReduceL2", &Importer::convReduce<ReduceL2Op>},
      {"ReduceSumSquare", &Importer::convReduce<ReduceSumSquareOp>},
      {"ReduceLogSum", &Importer::convReduce<ReduceLogSumOp>},
      {"ReduceLogSumExp", &Importer::convReduce<ReduceLogSumExpOp>},
      {"LayerNormalization", &Importer::convLayerNorm},
      {"InstanceNormalization", &Importer::convInstanceNorm},
      {"DepthToSpace", &Importer::convDepthToSpace},
      {"SpaceToDepth", &Importer::convSpaceToDepth},
      {"Expand", &Importer::convExpand},
      {"Tile", &Importer::convTile},
      {"Trilu", &Importer::convTrilu},
      {"Split", &Importer::convSplit},
      {"CastLike", &Importer::convCast},
      {"MaxPool", &Importer::convPool<MaxPoolOp>},
      {"AveragePool", &Importer::convPool<AveragePoolOp>},
      {"GlobalAveragePool", &Importer::convGlobalPool<ReduceMeanOp>},
      {"GlobalMaxPool", &Importer::convGlobalPool<ReduceMaxOp>},
      {"ReduceMean", &Importer::convReduce<ReduceMeanOp>},
      {"ReduceSum", &Importer::convReduce<ReduceSumOp>},
      {"ReduceMax", &Importer::convReduce<ReduceMaxOp>},
      {"BatchNormalization", &Importer::convBatchNorm},
      {"Concat", &Importer::convConcat},
      {"Reshape", &Importer::convView},
      {"Flatten", &Importer::convView},
      {"Transpose", &Importer::convTranspose},
      {"Squeeze", &Importer::convView},
      {"Unsqueeze", &Importer::convView},
      {"Slice", &Importer::convSlice},
      {"Pad", &Importer::convPad},
      {"Identity", &Importer::convIdentity},
      {"Dropout", &Importer::convIdentity},
      {"Constant", &Importer::convConstant},
      // Folded at import when their inputs are compile-time integers.
      {"Shape", foldOnly},
      {"Size", foldOnly},
      {"Gather", &Importer::convGather},
      {"GatherElements", &Importer::convGatherElements},
      {"NegativeLogLikelihoodLoss", &Importer::convNLLLoss},
      {"Resize", &Importer::convResize},
      {"GatherND", &Importer::convGatherND},
      {"ScatterElements", &Importer::convScatter},
      {"Scatter", &Importer::convScatter},
      {"ScatterND", &Importer::convScatter},
      {"CumSum", &Importer::convCumSum},
      {"Hardmax", &Importer::convHardmax},
      {"OneHot", &Importer::convOneHot},
      {"LpPool", &Importer::convLpPool},
      {"GridSample", &Importer::convGridSample},
      {"TopK", &Importer::convTopK},
      {"Einsum", &Importer::convEinsum},
      {"Upsample", &Importer::convResize},
      {"SoftmaxCrossEntropyLoss", &Importer::convSoftmaxCrossEntropyLoss},
      {"Equal", &Importer::convCompare<EqualOp>},
      {"Less", &Importer::convCompare<LessOp>},
      {"LessOrEqual", &Importer::convCompare<LessOrEqualOp>},
      {"Greater", &Importer::convCompare<GreaterOp>},
      {"GreaterOrEqual", &Importer::convCompare<GreaterOrEqualOp>},
      {"And", &Importer::convLogic<AndOp>},
      {"Or", &Importer::convLogic<OrOp>},
      {"Xor", &Importer::convLogic<XorOp>},
      {"Not", &Importer::convNot},
      {"BitwiseAnd", &Importer::convBitwise<AndOp>},
      {"BitwiseOr", &Importer::convBitwise<OrOp>},
      {"BitwiseXor", &Importer::convBitwise<XorOp>},
      {"BitwiseNot", &Importer::convBitwiseNot},
      {"BitShift", &Importer::convBitShift},
      {"QuantizeLinear", &Importer::convQuantizeLinear},
      {"DequantizeLinear", &Importer::convDequantizeLinear},
      {"DynamicQuantizeLinear", &Importer::convDynamicQuantizeLinear},
      {"MatMulInteger", &Importer::convMatMulInteger},
      {"ConvInteger", &Importer::convConvInteger},
      {"QLinearMatMul", &Importer::convQLinearMatMul},
      {"QLinearConv", &Importer::convQLinearConv},
      {"EyeLike", &Importer::convEyeLike},
      {"HannWindow", &Importer::convWindow},
      {"HammingWindow", &Importer::convWindow},
      {"BlackmanWindow", &Importer::convWindow},
      {"MeanVarianceNormalization", &Importer::convMeanVarianceNormalization},
      {"LRN", &Importer::convLRN},
      {"GroupNormalization", &Importer::convGroupNormalization},
      {"Compress", &Importer::convCompress},
      {"Col2Im", &Importer::convCol2Im},
      {"AffineGrid", &Importer::convAffineGrid},
      {"CenterCropPad", &Importer::convCenterCropPad},
      {"RNN", &Importer::convRecurrent},
      {"GRU", &Importer::convRecurrent},
      {"LSTM", &Importer::convRecurrent},
      {"Where", &Importer::convWhere},
      {"IsNaN", &Importer::convIsNaN},
      {"IsInf", &Importer::convIsInf},
      {"ArgMax", &Importer::convArg<ArgMaxOp>},
      {"ArgMin", &Importer::convArg<ArgMinOp>},
      {"Range", &Importer::convRange},
      {"Cast", &Importer::convCast},
      {"ConstantOfShape", foldOnly},
  };
  return table;
}

} // namespace

ImportedModel importOnnxBytes(MLIRContext &ctx, std::string bytes, const std::string &path,
                              const ImportOptions &options) {
  ctx.loadDialect<KilnDialect, func::FuncDialect>();
  Importer imp(ctx, path, options);
  return imp.run(std::move(bytes));
}

ImportedModel importOnnxFile(MLIRContext &ctx, const std::string &path,
                             const ImportOptions &options) {
  std::ifstream f(path, std::ios::binary);
  if (!f) {
    ctx.loadDialect<KilnDialect, func::FuncDialect>();
    emitError(FileLineColLoc::get(&ctx, path, 0, 0)) << "cannot open file";
    return {};
  }
  std::string bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  return importOnnxBytes(ctx, std::move(bytes), path, options);
}

} // namespace kiln
