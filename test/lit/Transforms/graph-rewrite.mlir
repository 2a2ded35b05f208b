// RUN: kiln-opt %s -split-input-file -pass-pipeline='builtin.module(func.func(kiln-rewrite))' | FileCheck %s
// Each rule: a case where it fires (the cost drops) and one where it must not.

// Distributive: A*B + A*C -> A*(B+C).
// CHECK-LABEL: func @distribute
// CHECK: %[[S:.*]] = kiln.add %arg1, %arg2
// CHECK: %[[M:.*]] = kiln.mul %arg0, %[[S]]
// CHECK: return %[[M]]
func.func @distribute(%a: tensor<4x8xf32>, %b: tensor<4x8xf32>, %c: tensor<4x8xf32>) -> tensor<4x8xf32> {
  %0 = kiln.mul %a, %b : (tensor<4x8xf32>, tensor<4x8xf32>) -> tensor<4x8xf32>
  %1 = kiln.mul %a, %c : (tensor<4x8xf32>, tensor<4x8xf32>) -> tensor<4x8xf32>
  %2 = kiln.add %0, %1 : (tensor<4x8xf32>, tensor<4x8xf32>) -> tensor<4x8xf32>
  return %2 : tensor<4x8xf32>
}

// -----
// Not when a product is also used elsewhere: it stays computed, so the
// rewrite would add work.
// CHECK-LABEL: func @distribute_shared
// CHECK: kiln.mul
// CHECK: kiln.mul
// CHECK: kiln.add
// CHECK-NOT: kiln.mul
func.func @distribute_shared(%a: tensor<4x8xf32>, %b: tensor<4x8xf32>, %c: tensor<4x8xf32>) -> (tensor<4x8xf32>, tensor<4x8xf32>) {
  %0 = kiln.mul %a, %b : (tensor<4x8xf32>, tensor<4x8xf32>) -> tensor<4x8xf32>
  %1 = kiln.mul %a, %c : (tensor<4x8xf32>, tensor<4x8xf32>) -> tensor<4x8xf32>
  %2 = kiln.add %0, %1 : (tensor<4x8xf32>, tensor<4x8xf32>) -> tensor<4x8xf32>
  return %2, %0 : tensor<4x8xf32>, tensor<4x8xf32>
}

// -----
// Distributive: A + A*K -> A*(K+1), K+1 folded.
// CHECK-LABEL: func @add_self
// CHECK: %[[K:.*]] = kiln.constant dense<[3.000000e+00, 5.000000e+00]>
// CHECK: %[[M:.*]] = kiln.mul %arg0, %[[K]]
// CHECK-NOT: kiln.add
// CHECK: return %[[M]]
func.func @add_self(%a: tensor<3x2xf32>) -> tensor<3x2xf32> {
  %k = kiln.constant dense<[2.0, 4.0]> : tensor<2xf32> : tensor<2xf32>
  %0 = kiln.mul %a, %k : (tensor<3x2xf32>, tensor<2xf32>) -> tensor<3x2xf32>
  %1 = kiln.add %a, %0 : (tensor<3x2xf32>, tensor<3x2xf32>) -> tensor<3x2xf32>
  return %1 : tensor<3x2xf32>
}

// -----
// Not when the factor is not a constant (nothing to fold, no saving).
// CHECK-LABEL: func @add_self_dynamic
// CHECK: kiln.mul %arg0, %arg1
// CHECK: kiln.add
func.func @add_self_dynamic(%a: tensor<3x2xf32>, %k: tensor<3x2xf32>) -> tensor<3x2xf32> {
  %0 = kiln.mul %a, %k : (tensor<3x2xf32>, tensor<3x2xf32>) -> tensor<3x2xf32>
  %1 = kiln.add %a, %0 : (tensor<3x2xf32>, tensor<3x2xf32>) -> tensor<3x2xf32>
  return %1 : tensor<3x2xf32>
}

// -----
// Associative + multiplicative: Abs(A)*B*Abs(C) -> Abs(A*C)*B.
// CHECK-LABEL: func @abs_product
// CHECK: %[[AC:.*]] = kiln.mul %arg0, %arg2
// CHECK: %[[ABS:.*]] = kiln.abs %[[AC]]
// CHECK: %[[R:.*]] = kiln.mul %[[ABS]], %arg1
// CHECK: return %[[R]]
func.func @abs_product(%a: tensor<8xf32>, %b: tensor<8xf32>, %c: tensor<8xf32>) -> tensor<8xf32> {
  %0 = kiln.abs %a : (tensor<8xf32>) -> tensor<8xf32>
  %1 = kiln.mul %0, %b : (tensor<8xf32>, tensor<8xf32>) -> tensor<8xf32>
  %2 = kiln.abs %c : (tensor<8xf32>) -> tensor<8xf32>
  %3 = kiln.mul %1, %2 : (tensor<8xf32>, tensor<8xf32>) -> tensor<8xf32>
  return %3 : tensor<8xf32>
}

// -----
// Associative: (A*Sqrt(B))*(Sqrt(B)*C) -> A*C*B: the square roots go away.
// CHECK-LABEL: func @sqrt_pair
// CHECK-NOT: kiln.sqrt
// CHECK: kiln.mul
// CHECK: kiln.mul
// CHECK-NOT: kiln.mul
func.func @sqrt_pair(%a: tensor<8xf32>, %b: tensor<8xf32>, %c: tensor<8xf32>) -> tensor<8xf32> {
  %s = kiln.sqrt %b : (tensor<8xf32>) -> tensor<8xf32>
  %0 = kiln.mul %a, %s : (tensor<8xf32>, tensor<8xf32>) -> tensor<8xf32>
  %1 = kiln.mul %s, %c : (tensor<8xf32>, tensor<8xf32>) -> tensor<8xf32>
  %2 = kiln.mul %0, %1 : (tensor<8xf32>, tensor<8xf32>) -> tensor<8xf32>
  return %2 : tensor<8xf32>
}

// -----
// Not when the Abs values are used elsewhere.
// CHECK-LABEL: func @abs_shared
// CHECK: kiln.abs %arg0
// CHECK: kiln.abs %arg1
// CHECK: kiln.mul
func.func @abs_shared(%a: tensor<8xf32>, %c: tensor<8xf32>) -> (tensor<8xf32>, tensor<8xf32>) {
  %0 = kiln.abs %a : (tensor<8xf32>) -> tensor<8xf32>
  %2 = kiln.abs %c : (tensor<8xf32>) -> tensor<8xf32>
  %3 = kiln.mul %0, %2 : (tensor<8xf32>, tensor<8xf32>) -> tensor<8xf32>
  return %3, %0 : tensor<8xf32>, tensor<8xf32>
}

// -----
// Commutative: ReduceProd(Exp(A)) -> Exp(ReduceSum(A)).
// CHECK-LABEL: func @prod_exp
// CHECK: %[[S:.*]] = kiln.reduce_sum %arg0
// CHECK: %[[E:.*]] = kiln.exp %[[S]]
// CHECK: return %[[E]]
func.func @prod_exp(%a: tensor<16x32xf32>) -> tensor<16x1xf32> {
  %0 = kiln.exp %a : (tensor<16x32xf32>) -> tensor<16x32xf32>
  %1 = kiln.reduce_prod %0 {axes = array<i64: 1>, keepdims = true} : (tensor<16x32xf32>) -> tensor<16x1xf32>
  return %1 : tensor<16x1xf32>
}

// -----
// Not when the exponentials are needed anyway.
// CHECK-LABEL: func @prod_exp_shared
// CHECK: kiln.exp %arg0
// CHECK: kiln.reduce_prod
func.func @prod_exp_shared(%a: tensor<16x32xf32>) -> (tensor<16x1xf32>, tensor<16x32xf32>) {
  %0 = kiln.exp %a : (tensor<16x32xf32>) -> tensor<16x32xf32>
  %1 = kiln.reduce_prod %0 {axes = array<i64: 1>, keepdims = true} : (tensor<16x32xf32>) -> tensor<16x1xf32>
  return %1, %0 : tensor<16x1xf32>, tensor<16x32xf32>
}

// -----
// Linear: ReduceSum(A * k) -> ReduceSum(A) * k for a scalar constant k.
// CHECK-LABEL: func @scale_after_sum
// CHECK: %[[S:.*]] = kiln.reduce_sum %arg0
// CHECK: kiln.mul %[[S]]
func.func @scale_after_sum(%a: tensor<16x32xf32>) -> tensor<16x1xf32> {
  %k = kiln.constant dense<0.5> : tensor<f32> : tensor<f32>
  %0 = kiln.mul %a, %k : (tensor<16x32xf32>, tensor<f32>) -> tensor<16x32xf32>
  %1 = kiln.reduce_sum %0 {axes = array<i64: 1>, keepdims = true} : (tensor<16x32xf32>) -> tensor<16x1xf32>
  return %1 : tensor<16x1xf32>
}

// -----
// Not for a per-element factor (it does not commute with the sum).
// CHECK-LABEL: func @scale_vector
// CHECK: kiln.mul %arg0
// CHECK: kiln.reduce_sum
func.func @scale_vector(%a: tensor<16x32xf32>) -> tensor<16x1xf32> {
  %k = kiln.constant dense<0.5> : tensor<32xf32> : tensor<32xf32>
  %0 = kiln.mul %a, %k : (tensor<16x32xf32>, tensor<32xf32>) -> tensor<16x32xf32>
  %1 = kiln.reduce_sum %0 {axes = array<i64: 1>, keepdims = true} : (tensor<16x32xf32>) -> tensor<16x1xf32>
  return %1 : tensor<16x1xf32>
}

// -----
// BatchNormalization and a per-channel Mul/Add fold into the Conv's weights.
// CHECK-LABEL: func @fold_bn
// CHECK-DAG: %[[W:.*]] = kiln.constant dense<{{\[\[\[\[}}2.000000e+00]]], {{\[\[\[}}3.000000e+00]]]]>
// CHECK-DAG: %[[B:.*]] = kiln.constant dense<[1.000000e+00, -2.000000e+00]>
// CHECK: %[[C:.*]] = kiln.conv %arg0, %[[W]], %[[B]]
// CHECK-NOT: kiln.batch_norm
// CHECK: return %[[C]]
func.func @fold_bn(%x: tensor<1x1x4x4xf32>) -> tensor<1x2x4x4xf32> {
  %w = kiln.constant dense<[[[[1.0]]], [[[1.0]]]]> : tensor<2x1x1x1xf32> : tensor<2x1x1x1xf32>
  %0 = kiln.conv %x, %w {strides = array<i64: 1, 1>, dilations = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, group = 1 : i64} : (tensor<1x1x4x4xf32>, tensor<2x1x1x1xf32>) -> tensor<1x2x4x4xf32>
  %s = kiln.constant dense<[2.0, 3.0]> : tensor<2xf32> : tensor<2xf32>
  %b = kiln.constant dense<[1.0, 1.0]> : tensor<2xf32> : tensor<2xf32>
  %m = kiln.constant dense<[0.0, 1.0]> : tensor<2xf32> : tensor<2xf32>
  %v = kiln.constant dense<[1.0, 1.0]> : tensor<2xf32> : tensor<2xf32>
  %1 = kiln.batch_norm %0, %s, %b, %m, %v {epsilon = 0.0 : f32} : (tensor<1x2x4x4xf32>, tensor<2xf32>, tensor<2xf32>, tensor<2xf32>, tensor<2xf32>) -> tensor<1x2x4x4xf32>
  return %1 : tensor<1x2x4x4xf32>
}

// -----
// A per-channel Add after a Conv becomes its bias.
// CHECK-LABEL: func @fold_add
// CHECK: %[[B:.*]] = kiln.constant dense<[1.000000e+00, 2.000000e+00]>
// CHECK: %[[C:.*]] = kiln.conv %arg0, %{{.*}}, %[[B]]
// CHECK-NOT: kiln.add
// CHECK: return %[[C]]
func.func @fold_add(%x: tensor<1x1x4x4xf32>) -> tensor<1x2x4x4xf32> {
  %w = kiln.constant dense<[[[[1.0]]], [[[1.0]]]]> : tensor<2x1x1x1xf32> : tensor<2x1x1x1xf32>
  %0 = kiln.conv %x, %w {strides = array<i64: 1, 1>, dilations = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, group = 1 : i64} : (tensor<1x1x4x4xf32>, tensor<2x1x1x1xf32>) -> tensor<1x2x4x4xf32>
  %k = kiln.constant dense<[[[1.0]], [[2.0]]]> : tensor<2x1x1xf32> : tensor<2x1x1xf32>
  %1 = kiln.add %0, %k : (tensor<1x2x4x4xf32>, tensor<2x1x1xf32>) -> tensor<1x2x4x4xf32>
  return %1 : tensor<1x2x4x4xf32>
}

// -----
// Not when the Conv's result is used elsewhere too.
// CHECK-LABEL: func @fold_add_shared
// CHECK: kiln.conv
// CHECK: kiln.add
func.func @fold_add_shared(%x: tensor<1x1x4x4xf32>) -> (tensor<1x2x4x4xf32>, tensor<1x2x4x4xf32>) {
  %w = kiln.constant dense<[[[[1.0]]], [[[1.0]]]]> : tensor<2x1x1x1xf32> : tensor<2x1x1x1xf32>
  %0 = kiln.conv %x, %w {strides = array<i64: 1, 1>, dilations = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, group = 1 : i64} : (tensor<1x1x4x4xf32>, tensor<2x1x1x1xf32>) -> tensor<1x2x4x4xf32>
  %k = kiln.constant dense<[[[1.0]], [[2.0]]]> : tensor<2x1x1xf32> : tensor<2x1x1xf32>
  %1 = kiln.add %0, %k : (tensor<1x2x4x4xf32>, tensor<2x1x1xf32>) -> tensor<1x2x4x4xf32>
  return %1, %0 : tensor<1x2x4x4xf32>, tensor<1x2x4x4xf32>
}

// -----
// MatMul of a batch of rows by a weight + bias -> Gemm with C.
// CHECK-LABEL: func @matmul_bias
// CHECK: %[[A:.*]] = kiln.reshape %arg0 {{.*}} -> tensor<8x3xf32>
// CHECK: %[[G:.*]] = kiln.gemm %[[A]], %arg1, %{{.*}} {{.*}} -> tensor<8x5xf32>
// CHECK: %[[R:.*]] = kiln.reshape %[[G]] {{.*}} -> tensor<2x4x5xf32>
// CHECK: return %[[R]]
func.func @matmul_bias(%a: tensor<2x4x3xf32>, %w: tensor<3x5xf32>) -> tensor<2x4x5xf32> {
  %0 = kiln.matmul %a, %w : (tensor<2x4x3xf32>, tensor<3x5xf32>) -> tensor<2x4x5xf32>
  %b = kiln.constant dense<1.0> : tensor<5xf32> : tensor<5xf32>
  %1 = kiln.add %0, %b : (tensor<2x4x5xf32>, tensor<5xf32>) -> tensor<2x4x5xf32>
  return %1 : tensor<2x4x5xf32>
}

// -----
// Not when the addend is a full tensor (a residual), not a bias row.
// CHECK-LABEL: func @matmul_residual
// CHECK: kiln.matmul
// CHECK: kiln.add
func.func @matmul_residual(%a: tensor<2x4x3xf32>, %w: tensor<3x5xf32>, %r: tensor<2x4x5xf32>) -> tensor<2x4x5xf32> {
  %0 = kiln.matmul %a, %w : (tensor<2x4x3xf32>, tensor<3x5xf32>) -> tensor<2x4x5xf32>
  %1 = kiln.add %0, %r : (tensor<2x4x5xf32>, tensor<2x4x5xf32>) -> tensor<2x4x5xf32>
  return %1 : tensor<2x4x5xf32>
}

// -----
// Transpose chains collapse (here they cancel); constant transposes fold.
// CHECK-LABEL: func @transposes
// CHECK-NOT: kiln.transpose
// CHECK: kiln.constant dense<{{\[\[}}1.000000e+00, 3.000000e+00], [2.000000e+00, 4.000000e+00]]>
// CHECK: return %arg0
func.func @transposes(%a: tensor<2x3x4xf32>) -> (tensor<2x3x4xf32>, tensor<2x2xf32>) {
  %0 = kiln.transpose %a {perm = array<i64: 1, 2, 0>} : (tensor<2x3x4xf32>) -> tensor<3x4x2xf32>
  %1 = kiln.transpose %0 {perm = array<i64: 2, 0, 1>} : (tensor<3x4x2xf32>) -> tensor<2x3x4xf32>
  %c = kiln.constant dense<[[1.0, 2.0], [3.0, 4.0]]> : tensor<2x2xf32> : tensor<2x2xf32>
  %2 = kiln.transpose %c {perm = array<i64: 1, 0>} : (tensor<2x2xf32>) -> tensor<2x2xf32>
  return %1, %2 : tensor<2x3x4xf32>, tensor<2x2xf32>
}

// -----
// A single transpose of a graph input stays.
// CHECK-LABEL: func @one_transpose
// CHECK: kiln.transpose %arg0
func.func @one_transpose(%a: tensor<2x3xf32>) -> tensor<3x2xf32> {
  %0 = kiln.transpose %a {perm = array<i64: 1, 0>} : (tensor<2x3xf32>) -> tensor<3x2xf32>
  return %0 : tensor<3x2xf32>
}

// -----
// A transpose that only moves unit dims moves no data: a reshape. One
// that swaps two dims larger than 1 (the 4s around a unit dim) stays.
// CHECK-LABEL: func @transpose_unit_dims
// CHECK: %[[R:.*]] = kiln.reshape %arg0 : (tensor<1x128x768xf32>) -> tensor<128x1x768xf32>
// CHECK-NOT: kiln.transpose %arg0
// CHECK: kiln.transpose %arg1 {perm = array<i64: 2, 1, 0>}
// CHECK: return %[[R]]
func.func @transpose_unit_dims(%a: tensor<1x128x768xf32>, %b: tensor<4x1x4xf32>) -> (tensor<128x1x768xf32>, tensor<4x1x4xf32>) {
  %0 = kiln.transpose %a {perm = array<i64: 1, 0, 2>} : (tensor<1x128x768xf32>) -> tensor<128x1x768xf32>
  %1 = kiln.transpose %b {perm = array<i64: 2, 1, 0>} : (tensor<4x1x4xf32>) -> tensor<4x1x4xf32>
  return %0, %1 : tensor<128x1x768xf32>, tensor<4x1x4xf32>
}

// -----
// A scalar scale of a column slice of a Gemm with constant weights (Q / 2
// on the Q part of a QKV projection) folds into those weight columns and
// bias entries: the Div is gone; columns 2..5, read by the other slice,
// keep their values.
// CHECK-LABEL: func @scale_columns
// CHECK-NOT: kiln.div
// CHECK: kiln.constant dense<[1.000000e+00, 1.000000e+00, 2.000000e+00, 2.000000e+00, 2.000000e+00, 2.000000e+00]>
// CHECK: kiln.constant dense<{{\[\[}}5.000000e-01, 5.000000e-01, 1.000000e+00, 1.000000e+00, 1.000000e+00, 1.000000e+00]
// CHECK: kiln.gemm
// CHECK-NOT: kiln.div
// CHECK: return
func.func @scale_columns(%x: tensor<2x3xf32>) -> (tensor<1x2x2xf32>, tensor<2x1x4xf32>) {
  %w = kiln.constant dense<1.0> : tensor<3x6xf32> : tensor<3x6xf32>
  %b = kiln.constant dense<2.0> : tensor<6xf32> : tensor<6xf32>
  %k = kiln.constant dense<2.0> : tensor<f32> : tensor<f32>
  %g = kiln.gemm %x, %w, %b {alpha = 1.0 : f32, beta = 1.0 : f32, transA = false, transB = false} : (tensor<2x3xf32>, tensor<3x6xf32>, tensor<6xf32>) -> tensor<2x6xf32>
  %r = kiln.reshape %g : (tensor<2x6xf32>) -> tensor<2x1x6xf32>
  %q = kiln.slice %r {starts = array<i64: 0, 0, 0>, steps = array<i64: 1, 1, 1>} : (tensor<2x1x6xf32>) -> tensor<2x1x2xf32>
  %t = kiln.transpose %q {perm = array<i64: 1, 0, 2>} : (tensor<2x1x2xf32>) -> tensor<1x2x2xf32>
  %d = kiln.div %t, %k : (tensor<1x2x2xf32>, tensor<f32>) -> tensor<1x2x2xf32>
  %v = kiln.slice %r {starts = array<i64: 0, 0, 2>, steps = array<i64: 1, 1, 1>} : (tensor<2x1x6xf32>) -> tensor<2x1x4xf32>
  return %d, %v : tensor<1x2x2xf32>, tensor<2x1x4xf32>
}

// -----
// Must not fold: the Gemm's whole output is also returned, so scaling its
// weight columns would change that result.
// CHECK-LABEL: func @scale_columns_shared
// CHECK: kiln.gemm
// CHECK: kiln.div
func.func @scale_columns_shared(%x: tensor<2x3xf32>) -> (tensor<2x2xf32>, tensor<2x6xf32>) {
  %w = kiln.constant dense<1.0> : tensor<3x6xf32> : tensor<3x6xf32>
  %k = kiln.constant dense<2.0> : tensor<f32> : tensor<f32>
  %g = kiln.gemm %x, %w {alpha = 1.0 : f32, beta = 1.0 : f32, transA = false, transB = false} : (tensor<2x3xf32>, tensor<3x6xf32>) -> tensor<2x6xf32>
  %q = kiln.slice %g {starts = array<i64: 0, 0>, steps = array<i64: 1, 1>} : (tensor<2x6xf32>) -> tensor<2x2xf32>
  %d = kiln.div %q, %k : (tensor<2x2xf32>, tensor<f32>) -> tensor<2x2xf32>
  return %d, %g : tensor<2x2xf32>, tensor<2x6xf32>
}
