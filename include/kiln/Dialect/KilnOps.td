// The kiln dialect: graph-level tensor ops imported from ONNX.
//
// Ops carry ONNX semantics with every attribute normalised at import
// (auto_pad resolved into explicit pads, negative axes made positive, shape
// inputs folded into result types), so passes never see opset differences.
#ifndef KILN_OPS
#define KILN_OPS

include "mlir/IR/OpBase.td"
include "mlir/IR/BuiltinAttributes.td"
include "mlir/Interfaces/SideEffectInterfaces.td"
include "mlir/Interfaces/InferTypeOpInterface.td"
include "kiln/Dialect/KilnInterfaces.td"

def Kiln_Dialect : Dialect {
  let name = "kiln";
  let summary = "Graph-level neural network ops imported from ONNX";
  let cppNamespace = "::kiln";
  let dependentDialects = ["::mlir::arith::ArithDialect"];
}

// Every op answers Kiln_MappingTypeOpInterface (KilnInterfaces.td):
//   mapping      a kiln::MappingType name (KilnDialect.h)
//   algebra      mask of kiln::AlgebraicProperty, as C++ (0: none)
//   flopsPerElt  FLOPs per result element (default cost model)
//   customCost   1 when the op defines getCost() itself (contractions,
//                windows, reductions: their FLOPs depend on input shapes)
class Kiln_Op<string mnemonic, string mapping, list<Trait> traits = [], bit customCost = 0>
    : Op<Kiln_Dialect, mnemonic,
         !listconcat(traits, [Pure, !if(customCost,
             DeclareOpInterfaceMethods<Kiln_MappingTypeOpInterface, ["getCost"]>,
             DeclareOpInterfaceMethods<Kiln_MappingTypeOpInterface>)])> {
  string mappingType = mapping;
  string algebra = "0";
  string flopsPerElt = "1";
  string costFormula = "1 per output element";
  string mappingBody = "return ::kiln::MappingType::" # mapping # ";";
  string broadcasting = "false";
  string extraDefinitions = "";
  let extraClassDefinition = [{
    ::kiln::MappingType $cppClass::getMappingType() { }] # mappingBody # [{ }
    ::kiln::MappingType $cppClass::getBaseMappingType() { return ::kiln::MappingType::}] # mapping # [{; }
    bool $cppClass::isBroadcasting() { return }] # broadcasting # [{; }
    unsigned $cppClass::getAlgebraicProperties() { return }] # algebra # [{; }
    double $cppClass::getFlopsPerElement() { return }] # flopsPerElt # [{; }
    ::llvm::StringRef $cppClass::getCostFormula() { return "}] # costFormula # [{"; }
  }] # extraDefinitions;
}

// Shorthands for the algebra masks.
defvar kAssocComm = "::kiln::Associative | ::kiln::Commutative";
defvar kMove = "::kiln::DataMovement";

def Kiln_ConstantOp : Kiln_Op<"constant", "OneToOne", [ConstantLike]> {
  let summary = "A constant tensor (weights and folded shape values)";
  let arguments = (ins ElementsAttr:$value);
  let results = (outs AnyRankedTensor:$result);
  let assemblyFormat = "attr-dict $value `:` type($result)";
  let hasFolder = 1;
  let flopsPerElt = "0";
  let costFormula = "0";
  let builders = [OpBuilder<(ins "::mlir::ElementsAttr":$value), [{
    build($_builder, $_state, ::mlir::cast<::mlir::Type>(value.getShapedType()), value);
  }]>];
}

//===-- Many-to-Many: windows and contractions ----------------------------===//

def Kiln_ConvOp : Kiln_Op<"conv", "ManyToMany", [], 1> {
  let algebra = "::kiln::Linear";
  let costFormula = "2 x output elements x (input channels / group) x kernel size";
  let summary = "N-d convolution (NCHW), explicit pads [begin..., end...]";
  let arguments = (ins AnyRankedTensor:$input, AnyRankedTensor:$weight,
                   Optional<AnyRankedTensor>:$bias,
                   DenseI64ArrayAttr:$strides, DenseI64ArrayAttr:$dilations,
                   DenseI64ArrayAttr:$pads, I64Attr:$group);
  let results = (outs AnyRankedTensor:$result);
  let assemblyFormat = "$input `,` $weight (`,` $bias^)? attr-dict `:` functional-type(operands, results)";
  let hasVerifier = 1;
}

def Kiln_ConvTransposeOp : Kiln_Op<"conv_transpose", "ManyToMany", [], 1> {
  let algebra = "::kiln::Linear";
  let costFormula = "2 x input elements x (output channels / group) x kernel size";
  let summary = "2-d transposed convolution (NCHW), explicit pads";
  let arguments = (ins AnyRankedTensor:$input, AnyRankedTensor:$weight,
                   Optional<AnyRankedTensor>:$bias,
                   DenseI64ArrayAttr:$strides, DenseI64ArrayAttr:$dilations,
                   DenseI64ArrayAttr:$pads, I64Attr:$group);
  let results = (outs AnyRankedTensor:$result);
  let assemblyFormat = "$input `,` $weight (`,` $bias^)? attr-dict `:` functional-type(operands, results)";
}

def Kiln_GemmOp : Kiln_Op<"gemm", "ManyToMany", [], 1> {
  let algebra = "::kiln::Linear";
  let costFormula = "2 x M x N x K + 2 x M x N (alpha, beta C)";
  let summary = "Y = alpha * op(A) * op(B) + beta * C";
  let arguments = (ins AnyRankedTensor:$a, AnyRankedTensor:$b,
                   Optional<AnyRankedTensor>:$c, F32Attr:$alpha, F32Attr:$beta,
                   BoolAttr:$transA, BoolAttr:$transB);
  let results = (outs AnyRankedTensor:$result);
  let assemblyFormat = "$a `,` $b (`,` $c^)? attr-dict `:` functional-type(operands, results)";
}

def Kiln_MatMulOp : Kiln_Op<"matmul", "ManyToMany", [], 1> {
  let algebra = "::kiln::Associative | ::kiln::Linear";
  let costFormula = "2 x output elements x K";
  let summary = "numpy-style (batched, broadcasting) matrix product";
  let arguments = (ins AnyRankedTensor:$a, AnyRankedTensor:$b);
  let results = (outs AnyRankedTensor:$result);
  let assemblyFormat = "$a `,` $b attr-dict `:` functional-type(operands, results)";
}

class Kiln_PoolOp<string mnemonic> : Kiln_Op<mnemonic, "ManyToMany", [], 1> {
  let costFormula = "output elements x window size";
  let arguments = (ins AnyRankedTensor:$input, DenseI64ArrayAttr:$kernel_shape,
                   DenseI64ArrayAttr:$strides, DenseI64ArrayAttr:$dilations,
                   DenseI64ArrayAttr:$pads, BoolAttr:$count_include_pad);
  let results = (outs AnyRankedTensor:$result);
  let assemblyFormat = "$input attr-dict `:` functional-type(operands, results)";
}
def Kiln_MaxPoolOp : Kiln_PoolOp<"max_pool"> { let summary = "2-d max pooling"; }
def Kiln_AveragePoolOp : Kiln_PoolOp<"average_pool"> {
  let summary = "2-d average pooling";
  let algebra = "::kiln::Linear";
}

class Kiln_ReduceOp<string mnemonic> : Kiln_Op<mnemonic, "ManyToMany", [], 1> {
  let costFormula = "input elements x flops per element";
  let arguments = (ins AnyRankedTensor:$input, DenseI64ArrayAttr:$axes, BoolAttr:$keepdims);
  let results = (outs AnyRankedTensor:$result);
  let assemblyFormat = "$input attr-dict `:` functional-type(operands, results)";
}
def Kiln_ReduceSumOp : Kiln_ReduceOp<"reduce_sum"> { let summary = "sum over axes";  let flopsPerElt = "1"; let algebra = "::kiln::Linear"; }
def Kiln_ReduceMeanOp : Kiln_ReduceOp<"reduce_mean"> { let summary = "mean over axes";  let flopsPerElt = "1"; let algebra = "::kiln::Linear"; }
def Kiln_ReduceMaxOp : Kiln_ReduceOp<"reduce_max"> { let summary = "max over axes";  let flopsPerElt = "1"; }
def Kiln_ReduceMinOp : Kiln_ReduceOp<"reduce_min"> { let summary = "min over axes";  let flopsPerElt = "1"; }
def Kiln_ReduceProdOp : Kiln_ReduceOp<"reduce_prod"> { let summary = "product over axes";  let flopsPerElt = "1"; let algebra = "::kiln::Multiplicative"; }
def Kiln_ReduceL1Op : Kiln_ReduceOp<"reduce_l1"> { let summary = "sum of |x| over axes";  let flopsPerElt = "2"; }
def Kiln_ReduceL2Op : Kiln_ReduceOp<"reduce_l2"> { let summary = "sqrt of the sum of x^2 over axes";  let flopsPerElt = "2"; }
def Kiln_ReduceSumSquareOp : Kiln_ReduceOp<"reduce_sum_square"> { let summary = "sum of x^2 over axes";  let flopsPerElt = "2"; }
def Kiln_ReduceLogSumOp : Kiln_ReduceOp<"reduce_log_sum"> { let summary = "log of the sum over axes";  let flopsPerElt = "1"; }
def Kiln_ReduceLogSumExpOp : Kiln_ReduceOp<"reduce_log_sum_exp"> { let summary = "log(sum(exp(x))) over axes, computed stably";  let flopsPerElt = "10"; }

def Kiln_SoftmaxOp : Kiln_Op<"softmax", "ManyToMany", [], 1> {
  let flopsPerElt = "13";
  let costFormula = "13 per element (max, exp, sum, divide)";
  let summary = "softmax along one axis (opset 13 semantics)";
  let arguments = (ins AnyRankedTensor:$input, I64Attr:$axis);
  let results = (outs AnyRankedTensor:$result);
  let assemblyFormat = "$input attr-dict `:` functional-type(operands, results)";
}

def Kiln_LogSoftmaxOp : Kiln_Op<"log_softmax", "ManyToMany", [], 1> {
  let flopsPerElt = "13";
  let costFormula = "13 per element (max, exp, sum, subtract)";
  let summary = "log of softmax along one axis (opset 13 semantics)";
  let arguments = (ins AnyRankedTensor:$input, I64Attr:$axis);
  let results = (outs AnyRankedTensor:$result);
  let assemblyFormat = "$input attr-dict `:` functional-type(operands, results)";
}

def Kiln_LayerNormOp : Kiln_Op<"layer_norm", "ManyToMany", [], 1> {
  let flopsPerElt = "8";
  let costFormula = "8 per element (mean, variance, normalise, scale, shift)";
  let summary = "normalise over the dims from `axis` on, then scale and shift";
  let description = [{
    LayerNormalization, and InstanceNormalization after the importer moves
    the channel scale/bias into broadcastable shapes: y = (x - mean) /
    sqrt(var + epsilon) * scale + bias with mean and var over `axes`.
  }];
  let arguments = (ins AnyRankedTensor:$input, AnyRankedTensor:$scale,
                   Optional<AnyRankedTensor>:$bias, DenseI64ArrayAttr:$axes,
                   F32Attr:$epsilon);
  let results = (outs AnyRankedTensor:$result);
  let assemblyFormat = "$input `,` $scale (`,` $bias^)? attr-dict `:` functional-type(operands, results)";
}

//===-- One-to-One (One-to-Many when inputs broadcast) --------------------===//

class Kiln_UnaryOp<string mnemonic, list<Trait> traits = []>
    : Kiln_Op<mnemonic, "OneToOne", !listconcat(traits, [SameOperandsAndResultType])> {
  let arguments = (ins AnyRankedTensor:$input);
  let results = (outs AnyRankedTensor:$result);
  let assemblyFormat = "$input attr-dict `:` functional-type(operands, results)";
}
def Kiln_SqrtOp : Kiln_UnaryOp<"sqrt"> {
  let algebra = "::kiln::Multiplicative";
 }
def Kiln_ExpOp : Kiln_UnaryOp<"exp"> {
  let algebra = "::kiln::ExpLog";
  let flopsPerElt = "8";
  let costFormula = "8 per output element";
 }
def Kiln_LogOp : Kiln_UnaryOp<"log"> {
  let algebra = "::kiln::ExpLog";
  let flopsPerElt = "8";
  let costFormula = "8 per output element";
 }
def Kiln_NegOp : Kiln_UnaryOp<"neg"> {
  let algebra = "::kiln::Linear";
  let flopsPerElt = "1";
 }
def Kiln_AbsOp : Kiln_UnaryOp<"abs"> {
  let algebra = "::kiln::Multiplicative";
  let flopsPerElt = "1";
 }
def Kiln_ReciprocalOp : Kiln_UnaryOp<"reciprocal"> {
  let algebra = "::kiln::Multiplicative";
  let flopsPerElt = "1";
 }
def Kiln_ReluOp : Kiln_UnaryOp<"relu"> {
  let flopsPerElt = "1";
 }
def Kiln_SigmoidOp : Kiln_UnaryOp<"sigmoid"> {
  let flopsPerElt = "8";
  let costFormula = "8 per output element";
 }
def Kiln_TanhOp : Kiln_UnaryOp<"tanh"> {
  let flopsPerElt = "8";
  let costFormula = "8 per output element";
 }
def Kiln_ErfOp : Kiln_UnaryOp<"erf"> {
  let flopsPerElt = "8";
  let costFormula = "8 per output element";
 }
def Kiln_HardSwishOp : Kiln_UnaryOp<"hard_swish"> {
  let flopsPerElt = "4";
  let costFormula = "4 per output element";
 }

def Kiln_SoftplusOp : Kiln_UnaryOp<"softplus"> {
  let flopsPerElt = "8";
  let costFormula = "8 per output element";
 }
def Kiln_SoftsignOp : Kiln_UnaryOp<"softsign"> {
  let flopsPerElt = "3";
  let costFormula = "3 per output element";
 }
def Kiln_MishOp : Kiln_UnaryOp<"mish"> {
  let flopsPerElt = "24";
  let costFormula = "24 per output element";
 }
def Kiln_FloorOp : Kiln_UnaryOp<"floor">;
def Kiln_CeilOp : Kiln_UnaryOp<"ceil">;
def Kiln_RoundOp : Kiln_UnaryOp<"round"> { let summary = "round half to even"; }
def Kiln_SignOp : Kiln_UnaryOp<"sign"> {
  let algebra = "::kiln::Multiplicative";
  let flopsPerElt = "1";
 }
def Kiln_SinOp : Kiln_UnaryOp<"sin"> {
  let flopsPerElt = "8";
  let costFormula = "8 per output element";
 }
def Kiln_CosOp : Kiln_UnaryOp<"cos"> {
  let flopsPerElt = "8";
  let costFormula = "8 per output element";
 }
def Kiln_TanOp : Kiln_UnaryOp<"tan"> {
  let flopsPerElt = "8";
  let costFormula = "8 per output element";
 }
def Kiln_AsinOp : Kiln_UnaryOp<"asin"> {
  let flopsPerElt = "8";
  let costFormula = "8 per output element";
 }
def Kiln_AcosOp : Kiln_UnaryOp<"acos"> {
  let flopsPerElt = "8";
  let costFormula = "8 per output element";
 }
def Kiln_AtanOp : Kiln_UnaryOp<"atan"> {
  let flopsPerElt = "8";
  let costFormula = "8 per output element";
 }
def Kiln_SinhOp : Kiln_UnaryOp<"sinh"> {
  let flopsPerElt = "8";
  let costFormula = "8 per output element";
 }
def Kiln_CoshOp : Kiln_UnaryOp<"cosh"> {
  let flopsPerElt = "8";
  let costFormula = "8 per output element";
 }
def Kiln_AsinhOp : Kiln_UnaryOp<"asinh"> {
  let flopsPerElt = "8";
  let costFormula = "8 per output element";
 }
def Kiln_AcoshOp : Kiln_UnaryOp<"acosh"> {
  let flopsPerElt = "8";
  let costFormula = "8 per output element";
 }
def Kiln_AtanhOp : Kiln_UnaryOp<"atanh"> {
  let flopsPerElt = "8";
  let costFormula = "8 per output element";
 }

class Kiln_UnaryAlphaOp<string mnemonic> : Kiln_UnaryOp<mnemonic> {
  let arguments = (ins AnyRankedTensor:$input, F32Attr:$alpha);
}
def Kiln_EluOp : Kiln_UnaryAlphaOp<"elu"> {
  let flopsPerElt = "8";
  let costFormula = "8 per output element";
 }
def Kiln_CeluOp : Kiln_UnaryAlphaOp<"celu"> {
  let flopsPerElt = "8";
  let costFormula = "8 per output element";
 }
def Kiln_ThresholdedReluOp : Kiln_UnaryAlphaOp<"thresholded_relu"> {
  let flopsPerElt = "1";
 }
def Kiln_SeluOp : Kiln_UnaryOp<"selu"> {
  let flopsPerElt = "8";
  let costFormula = "8 per output element";

  let arguments = (ins AnyRankedTensor:$input, F32Attr:$alpha, F32Attr:$gamma);
}
def Kiln_ShrinkOp : Kiln_UnaryOp<"shrink"> {
  let flopsPerElt = "2";
  let costFormula = "2 per output element";

  let arguments = (ins AnyRankedTensor:$input, F32Attr:$bias, F32Attr:$lambd);
}
def Kiln_GeluOp : Kiln_UnaryOp<"gelu"> {
  let flopsPerElt = "12";
  let costFormula = "12 per output element";

  let summary = "GELU, exact (erf) or tanh approximation";
  let arguments = (ins AnyRankedTensor:$input, BoolAttr:$tanh_approximation);
}

def Kiln_LeakyReluOp : Kiln_UnaryOp<"leaky_relu"> {
  let flopsPerElt = "2";
  let costFormula = "2 per output element";

  let arguments = (ins AnyRankedTensor:$input, F32Attr:$alpha);
}
def Kiln_HardSigmoidOp : Kiln_UnaryOp<"hard_sigmoid"> {
  let flopsPerElt = "4";
  let costFormula = "4 per output element";

  let arguments = (ins AnyRankedTensor:$input, F32Attr:$alpha, F32Attr:$beta);
}
def Kiln_ClipOp : Kiln_UnaryOp<"clip"> {
  let flopsPerElt = "2";
  let costFormula = "2 per output element";

  let summary = "clamp to [min, max] (bounds folded from inputs/attributes)";
  let arguments = (ins AnyRankedTensor:$input, F32Attr:$min, F32Attr:$max);
}

class Kiln_BinaryOp<string mnemonic> : Kiln_Op<mnemonic, "OneToOne"> {
  let summary = "elementwise with numpy broadcasting";
  let arguments = (ins AnyRankedTensor:$lhs, AnyRankedTensor:$rhs);
  let results = (outs AnyRankedTensor:$result);
  let assemblyFormat = "$lhs `,` $rhs attr-dict `:` functional-type(operands, results)";
  let hasVerifier = 1;
  // Broadcasting makes the op One-to-Many (an input element feeds many outputs).
  let mappingBody = "return ::kiln::binaryMappingType(getOperation());";
  let broadcasting = "true";
  let extraDefinitions = [{
    ::mlir::LogicalResult $cppClass::verify() {
      return ::kiln::verifyBroadcast(getOperation());
    }
  }];
}
def Kiln_AddOp : Kiln_BinaryOp<"add"> {
  let algebra = kAssocComm # " | ::kiln::Linear";
 }
def Kiln_SubOp : Kiln_BinaryOp<"sub"> {
  let algebra = "::kiln::Linear";
 }
def Kiln_MulOp : Kiln_BinaryOp<"mul"> {
  let algebra = kAssocComm # " | ::kiln::Distributive";
 }
def Kiln_DivOp : Kiln_BinaryOp<"div"> {
  let algebra = "::kiln::Distributive";
 }
def Kiln_PowOp : Kiln_BinaryOp<"pow"> {
  let algebra = "::kiln::Multiplicative";
  let flopsPerElt = "8";
  let costFormula = "8 per output element";
 }
def Kiln_PReluOp : Kiln_BinaryOp<"prelu">;
def Kiln_MaxOp : Kiln_BinaryOp<"max"> {
  let algebra = kAssocComm;
 }
def Kiln_MinOp : Kiln_BinaryOp<"min"> {
  let algebra = kAssocComm;
 }
def Kiln_ModOp : Kiln_BinaryOp<"mod"> {
  let summary = "remainder: sign of the dividend if fmod (C fmod), else of the divisor (Python %)";
  let arguments = (ins AnyRankedTensor:$lhs, AnyRankedTensor:$rhs, BoolAttr:$fmod);
}

// Comparisons and logic produce i1 (bool) tensors; operands broadcast.
class Kiln_CompareOp<string mnemonic> : Kiln_BinaryOp<mnemonic> {
  let summary = "elementwise comparison with numpy broadcasting, i1 result";
}
def Kiln_EqualOp : Kiln_CompareOp<"equal"> {
  let algebra = "::kiln::Commutative";
 }
def Kiln_LessOp : Kiln_CompareOp<"less">;
def Kiln_LessOrEqualOp : Kiln_CompareOp<"less_or_equal">;
def Kiln_GreaterOp : Kiln_CompareOp<"greater">;
def Kiln_GreaterOrEqualOp : Kiln_CompareOp<"greater_or_equal">;
def Kiln_AndOp : Kiln_BinaryOp<"and"> {
  let algebra = kAssocComm # " | ::kiln::Distributive";
 }
def Kiln_OrOp : Kiln_BinaryOp<"or"> {
  let algebra = kAssocComm # " | ::kiln::Distributive";
 }
def Kiln_XorOp : Kiln_BinaryOp<"xor"> {
  let algebra = kAssocComm;
 }
def Kiln_NotOp : Kiln_UnaryOp<"not">;
def Kiln_BitShiftOp : Kiln_BinaryOp<"bit_shift"> {
  let summary = "integer shift of lhs by rhs bits, left or right (logical for unsigned)";
  let arguments = (ins AnyRankedTensor:$lhs, AnyRankedTensor:$rhs, BoolAttr:$left);
}

def Kiln_IsNaNOp : Kiln_Op<"is_nan", "OneToOne"> {
  let arguments = (ins AnyRankedTensor:$input);
  let results = (outs AnyRankedTensor:$result);
  let assemblyFormat = "$input attr-dict `:` functional-type(operands, results)";
}
def Kiln_IsInfOp : Kiln_Op<"is_inf", "OneToOne"> {
  let arguments = (ins AnyRankedTensor:$input, BoolAttr:$detect_positive, BoolAttr:$detect_negative);
  let results = (outs AnyRankedTensor:$result);
  let assemblyFormat = "$input attr-dict `:` functional-type(operands, results)";
}

def Kiln_CastOp : Kiln_Op<"cast", "OneToOne"> {
  let summary = "convert elements to the result's element type (ONNX Cast semantics)";
  let description = [{
    `saturate` applies to float8 results only: out-of-range values become
    the largest finite value (else NaN, or infinity for f8E5M2).
  }];
  let arguments = (ins AnyRankedTensor:$input, DefaultValuedAttr<BoolAttr, "true">:$saturate);
  let results = (outs AnyRankedTensor:$result);
  let assemblyFormat = "$input attr-dict `:` functional-type(operands, results)";
}

def Kiln_WhereOp : Kiln_Op<"where", "OneToOne"> {
  let summary = "select x where cond else y, numpy broadcasting";
  let arguments = (ins AnyRankedTensor:$cond, AnyRankedTensor:$x, AnyRankedTensor:$y);
  let results = (outs AnyRankedTensor:$result);
  let assemblyFormat = "$cond `,` $x `,` $y attr-dict `:` functional-type(operands, results)";
  let mappingBody = "return ::kiln::binaryMappingType(getOperation());";
  let broadcasting = "true";
}

def Kiln_GatherOp : Kiln_Op<"gather", "OneToMany"> {
  let algebra = kMove;
  let flopsPerElt = "0";
  let costFormula = "0 (data movement)";

  let summary = "take slices of data along axis at integer indices (negative from the end)";
  let arguments = (ins AnyRankedTensor:$data, AnyRankedTensor:$indices, I64Attr:$axis);
  let results = (outs AnyRankedTensor:$result);
  let assemblyFormat = "$data `,` $indices attr-dict `:` functional-type(operands, results)";
}

def Kiln_GatherElementsOp : Kiln_Op<"gather_elements", "OneToMany"> {
  let algebra = kMove;
  let flopsPerElt = "0";
  let costFormula = "0 (data movement)";

  let summary = "out[..., i, ...] = data[..., indices[..., i, ...], ...] along axis";
  let description = [{
    ONNX GatherElements: the result has the shape of `indices`; each element
    reads data at its own position with the `axis` coordinate replaced by
    the index (negative counts from the end).
  }];
  let arguments = (ins AnyRankedTensor:$data, AnyRankedTensor:$indices, I64Attr:$axis);
  let results = (outs AnyRankedTensor:$result);
  let assemblyFormat = "$data `,` $indices attr-dict `:` functional-type(operands, results)";
}

def Kiln_GatherNDOp : Kiln_Op<"gather_nd", "OneToMany"> {
  let algebra = kMove;
  let flopsPerElt = "0";
  let costFormula = "0 (data movement)";

  let summary = "ONNX GatherND: slices of data addressed by the last axis of indices";
  let arguments = (ins AnyRankedTensor:$data, AnyRankedTensor:$indices, I64Attr:$batch_dims);
  let results = (outs AnyRankedTensor:$result);
  let assemblyFormat = "$data `,` $indices attr-dict `:` functional-type(operands, results)";
}

def Kiln_ScatterElementsOp : Kiln_Op<"scatter_elements", "ManyToMany"> {
  let flopsPerElt = "1";

  let summary = "copy of data with updates written (or combined) at indices along axis";
  let description = [{
    ONNX ScatterElements (and the deprecated Scatter). `reduction` is none,
    add, mul, max or min; updates are applied in index order, so with
    duplicate indices and `none` the last one wins.
  }];
  let arguments = (ins AnyRankedTensor:$data, AnyRankedTensor:$indices, AnyRankedTensor:$updates,
                   I64Attr:$axis, StrAttr:$reduction);
  let results = (outs AnyRankedTensor:$result);
  let assemblyFormat = "$data `,` $indices `,` $updates attr-dict `:` functional-type(operands, results)";
}

def Kiln_ScatterNDOp : Kiln_Op<"scatter_nd", "ManyToMany"> {
  let flopsPerElt = "1";

  let summary = "copy of data with slices replaced (or combined) at the N-d indices";
  let arguments = (ins AnyRankedTensor:$data, AnyRankedTensor:$indices, AnyRankedTensor:$updates,
                   StrAttr:$reduction);
  let results = (outs AnyRankedTensor:$result);
  let assemblyFormat = "$data `,` $indices `,` $updates attr-dict `:` functional-type(operands, results)";
}

def Kiln_TopKOp : Kiln_Op<"top_k", "ManyToMany", [], 1> {
  let costFormula = "input elements x axis length (rank counting)";
  let summary = "the k largest (or smallest) values along axis, sorted, with their i64 indices";
  let description = [{
    Ties are broken by the lower index, as ONNX specifies. Each element's
    rank is counted against its whole slice (O(n^2) per slice): simple and
    exact, meant for the small k-selections of classifier heads.
  }];
  let arguments = (ins AnyRankedTensor:$input, I64Attr:$axis, BoolAttr:$largest);
  let results = (outs AnyRankedTensor:$values, AnyRankedTensor:$indices);
  let assemblyFormat = "$input attr-dict `:` functional-type(operands, results)";
}

def Kiln_EinsumOp : Kiln_Op<"einsum", "ManyToMany", [], 1> {
  let algebra = "::kiln::Linear";
  let costFormula = "2 x product of all loop dims x operands";
  let summary = "Einstein summation, as the importer's indexing maps over one loop nest";
  let description = [{
    The importer parses the ONNX equation (ellipsis, implicit output,
    repeated letters for diagonals) into one affine map per operand and
    the result, over loop dims ordered ellipsis first, then letters by
    first appearance; `reduction_dims` marks the summed dims. The result is
    the sum over the reduced dims of the product of the operands.
  }];
  let arguments = (ins Variadic<AnyRankedTensor>:$inputs, StrAttr:$equation,
                   AffineMapArrayAttr:$indexing_maps, DenseBoolArrayAttr:$reduction_dims);
  let results = (outs AnyRankedTensor:$result);
  let assemblyFormat = "$inputs attr-dict `:` functional-type(operands, results)";
}

def Kiln_CumSumOp : Kiln_Op<"cum_sum", "ManyToMany"> {
  let algebra = "::kiln::Linear";

  let summary = "running sum along axis (optionally exclusive and/or reversed)";
  let arguments = (ins AnyRankedTensor:$input, I64Attr:$axis, BoolAttr:$exclusive, BoolAttr:$reverse);
  let results = (outs AnyRankedTensor:$result);
  let assemblyFormat = "$input attr-dict `:` functional-type(operands, results)";
}

class Kiln_ArgOp<string mnemonic> : Kiln_Op<mnemonic, "ManyToMany", [], 1> {
  let costFormula = "input elements";
  let summary = "index (i64) of the extreme value along axis";
  let arguments = (ins AnyRankedTensor:$input, I64Attr:$axis, BoolAttr:$select_last_index);
  let results = (outs AnyRankedTensor:$result);
  let assemblyFormat = "$input attr-dict `:` functional-type(operands, results)";
}
def Kiln_ArgMaxOp : Kiln_ArgOp<"arg_max">;
def Kiln_ArgMinOp : Kiln_ArgOp<"arg_min">;

def Kiln_BatchNormOp : Kiln_Op<"batch_norm", "OneToOne"> {
  let flopsPerElt = "2";
  let costFormula = "2 per output element";

  let summary = "inference BatchNormalization over axis 1";
  let arguments = (ins AnyRankedTensor:$input, AnyRankedTensor:$scale,
                   AnyRankedTensor:$bias, AnyRankedTensor:$mean,
                   AnyRankedTensor:$var, F32Attr:$epsilon);
  let results = (outs AnyRankedTensor:$result);
  let assemblyFormat = "$input `,` $scale `,` $bias `,` $mean `,` $var attr-dict `:` functional-type(operands, results)";
}

def Kiln_ConcatOp : Kiln_Op<"concat", "OneToOne"> {
  let algebra = kMove;
  let flopsPerElt = "0";
  let costFormula = "0 (data movement)";

  let summary = "concatenate along an axis";
  let arguments = (ins Variadic<AnyRankedTensor>:$inputs, I64Attr:$axis);
  let results = (outs AnyRankedTensor:$result);
  let assemblyFormat = "$inputs attr-dict `:` functional-type(operands, results)";
  let hasVerifier = 1;
}

def Kiln_SliceOp : Kiln_Op<"slice", "OneToOne"> {
  let algebra = kMove;
  let flopsPerElt = "0";
  let costFormula = "0 (data movement)";

  let summary = "strided slice; starts/steps given for every dim, normalised";
  let arguments = (ins AnyRankedTensor:$input, DenseI64ArrayAttr:$starts,
                   DenseI64ArrayAttr:$steps);
  let results = (outs AnyRankedTensor:$result);
  let assemblyFormat = "$input attr-dict `:` functional-type(operands, results)";
}

def Kiln_TriluOp : Kiln_Op<"trilu", "OneToOne"> {
  let algebra = kMove;
  let flopsPerElt = "0";
  let costFormula = "0 (data movement)";

  let summary = "keep the upper or lower triangle (offset k) of the last two dims";
  let arguments = (ins AnyRankedTensor:$input, BoolAttr:$upper, I64Attr:$k);
  let results = (outs AnyRankedTensor:$result);
  let assemblyFormat = "$input attr-dict `:` functional-type(operands, results)";
}

def Kiln_PadOp : Kiln_Op<"pad", "OneToOne"> {
  let algebra = kMove;
  let flopsPerElt = "0";
  let costFormula = "0 (data movement)";

  let summary = "pad with constant, edge or reflect mode; pads [begin..., end...]";
  let arguments = (ins AnyRankedTensor:$input, DenseI64ArrayAttr:$pads,
                   StrAttr:$mode, F32Attr:$value);
  let results = (outs AnyRankedTensor:$result);
  let assemblyFormat = "$input attr-dict `:` functional-type(operands, results)";
}

def Kiln_ResizeOp : Kiln_Op<"resize", "OneToMany"> {
  let algebra = "::kiln::Linear";
  let flopsPerElt = "2";
  let costFormula = "2 per output element";

  let summary = "separable resampling (Resize, Upsample) through per-axis tap tables";
  let description = [{
    For each axis in `axes` (the others are copied), `tables` holds an i64
    tensor [out_len, taps] of input indices and, when `weighted`, an f32
    tensor [out_len, taps] of weights (the tables of axis k are operands 2k
    and 2k+1, or operand k when not weighted). Output element =
    sum over tap combinations of the product of the axes' weights times the
    input at the tapped indices. The importer computes the tables at compile
    time from the ONNX mode (nearest, linear, cubic, antialias), coordinate
    transformation and scales/sizes. When `extrapolate`, an index of -1 in
    tap 0 marks an output coordinate outside the input (tf_crop_and_resize):
    such elements take `extrapolation_value`.
  }];
  let arguments = (ins AnyRankedTensor:$input, Variadic<AnyRankedTensor>:$tables,
                   DenseI64ArrayAttr:$axes, BoolAttr:$weighted, BoolAttr:$extrapolate,
                   F32Attr:$extrapolation_value);
  let results = (outs AnyRankedTensor:$result);
  let assemblyFormat = "$input (`,` $tables^)? attr-dict `:` functional-type(operands, results)";
}

def Kiln_GridSampleOp : Kiln_Op<"grid_sample", "ManyToMany"> {
  let algebra = "::kiln::Linear";
  let flopsPerElt = "12";
  let costFormula = "12 per output element";

  let summary = "sample the input at the grid's normalised coordinates (ONNX GridSample)";
  let description = [{
    Input [N, C, D1..Dk], grid [N, O1..Ok, k] with the last axis ordered
    (x, y[, z]) = (Dk, ..., D1); result [N, C, O1..Ok]. `mode` is linear,
    nearest or cubic; `padding_mode` zeros, border or reflection.
  }];
  let arguments = (ins AnyRankedTensor:$input, AnyRankedTensor:$grid, StrAttr:$mode,
                   StrAttr:$padding_mode, BoolAttr:$align_corners);
  let results = (outs AnyRankedTensor:$result);
  let assemblyFormat = "$input `,` $grid attr-dict `:` functional-type(operands, results)";
}

def Kiln_ExpandOp : Kiln_Op<"expand", "OneToMany"> {
  let algebra = kMove;
  let flopsPerElt = "0";
  let costFormula = "0 (data movement)";

  let summary = "broadcast to the result shape (numpy rules)";
  let arguments = (ins AnyRankedTensor:$input);
  let results = (outs AnyRankedTensor:$result);
  let assemblyFormat = "$input attr-dict `:` functional-type(operands, results)";
}

def Kiln_TileOp : Kiln_Op<"tile", "OneToMany"> {
  let algebra = kMove;
  let flopsPerElt = "0";
  let costFormula = "0 (data movement)";

  let summary = "repeat the input along every dim (repeats = result / input dims)";
  let arguments = (ins AnyRankedTensor:$input);
  let results = (outs AnyRankedTensor:$result);
  let assemblyFormat = "$input attr-dict `:` functional-type(operands, results)";
}

//===-- Fusion blocks -----------------------------------------------------===//

def Kiln_FusedOp : Op<Kiln_Dialect, "fused", [IsolatedFromAbove,
    DeclareOpInterfaceMethods<Kiln_MappingTypeOpInterface, ["getCost"]>]> {
  let summary = "one fusion block: the ops of its region become one kernel";
  let description = [{
    Made by kiln-plan-fusion. The region's arguments are the block's inputs
    (in `inputs` order); `kiln.yield` returns its outputs, the only values
    of the block that are written to memory. `block_id` numbers the blocks
    in plan order; the op's mapping type is the fused type of its ops
    (dnnfusion.md section 2), its cost the sum of theirs.
  }];
  let arguments = (ins Variadic<AnyRankedTensor>:$inputs, I64Attr:$block_id);
  let results = (outs Variadic<AnyRankedTensor>:$results);
  let regions = (region SizedRegion<1>:$body);
  let assemblyFormat = "`(` $inputs `)` attr-dict `:` functional-type($inputs, $results) $body";
  let hasVerifier = 1;
  let extraClassDefinition = [{
    unsigned $cppClass::getAlgebraicProperties() { return 0; }
    double $cppClass::getFlopsPerElement() { return 0; }
    bool $cppClass::isBroadcasting() { return false; }
    ::kiln::MappingType $cppClass::getBaseMappingType() { return ::kiln::MappingType::ManyToMany; }
    ::llvm::StringRef $cppClass::getCostFormula() { return "sum of its ops"; }
  }];
}

def Kiln_YieldOp : Op<Kiln_Dialect, "yield", [Pure, Terminator, HasParent<"FusedOp">]> {
  let summary = "the outputs of a fusion block";
  let arguments = (ins Variadic<AnyRankedTensor>:$values);
  let assemblyFormat = "$values attr-dict `:` type($values)";
}

//===-- Reorganize and Shuffle --------------------------------------------===//

def Kiln_ReshapeOp : Kiln_Op<"reshape", "Reorganize"> {
  let algebra = kMove;
  let flopsPerElt = "0";
  let costFormula = "0 (data movement)";

  let summary = "Reshape/Flatten/Squeeze/Unsqueeze: same elements, new static shape";
  let arguments = (ins AnyRankedTensor:$input);
  let results = (outs AnyRankedTensor:$result);
  let assemblyFormat = "$input attr-dict `:` functional-type(operands, results)";
  let hasVerifier = 1;
  let hasFolder = 1;
}

def Kiln_TransposeOp : Kiln_Op<"transpose", "Shuffle"> {
  let algebra = kMove;
  let flopsPerElt = "0";
  let costFormula = "0 (data movement)";

  let summary = "permute dimensions";
  let arguments = (ins AnyRankedTensor:$input, DenseI64ArrayAttr:$perm);
  let results = (outs AnyRankedTensor:$result);
  let assemblyFormat = "$input attr-dict `:` functional-type(operands, results)";
  let hasVerifier = 1;
}

#endif
