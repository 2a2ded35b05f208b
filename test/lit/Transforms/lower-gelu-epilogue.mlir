// RUN: kiln-opt %s -split-input-file -kiln-plan-fusion -kiln-lower-to-linalg | FileCheck %s

// MatMul with constant weights followed by GELU as PyTorch exports it
// (x / sqrt(2) -> Erf -> + 1 -> * x -> * 0.5): one kernel call that applies
// the GELU to each tile as it stores it (act = 1), no generated erf loop.
// CHECK-LABEL: func.func private @kiln_kernel_0(
// CHECK: call @kiln_rt_matmul_packed_act({{.*}}) : (index, index, index, i64, i64, i64, i64, i64, i64, i64, i64, i64, index, f32, f32, i64) -> ()
// CHECK-NOT: math.erf
// CHECK: return
func.func @main(%x: tensor<4x8xf32>) -> tensor<4x16xf32> {
  %w = kiln.constant dense<0.25> : tensor<8x16xf32> : tensor<8x16xf32>
  %c = kiln.constant dense<1.41421354> : tensor<f32> : tensor<f32>
  %one = kiln.constant dense<1.0> : tensor<f32> : tensor<f32>
  %half = kiln.constant dense<0.5> : tensor<f32> : tensor<f32>
  %y = kiln.matmul %x, %w : (tensor<4x8xf32>, tensor<8x16xf32>) -> tensor<4x16xf32>
  %d = kiln.div %y, %c : (tensor<4x16xf32>, tensor<f32>) -> tensor<4x16xf32>
  %e = kiln.erf %d : (tensor<4x16xf32>) -> tensor<4x16xf32>
  %a = kiln.add %e, %one : (tensor<4x16xf32>, tensor<f32>) -> tensor<4x16xf32>
  %m = kiln.mul %y, %a : (tensor<4x16xf32>, tensor<4x16xf32>) -> tensor<4x16xf32>
  %r = kiln.mul %m, %half : (tensor<4x16xf32>, tensor<f32>) -> tensor<4x16xf32>
  return %r : tensor<4x16xf32>
}

// -----

// Not GELU (divided by 2, not sqrt(2)): the plain kernel, then the
// epilogue as generated code.
// CHECK-LABEL: func.func private @kiln_kernel_0(
// CHECK-NOT: kiln_rt_matmul_packed_act
// CHECK: call @kiln_rt_matmul_packed(
// CHECK: math.erf
func.func @main(%x: tensor<4x8xf32>) -> tensor<4x16xf32> {
  %w = kiln.constant dense<0.25> : tensor<8x16xf32> : tensor<8x16xf32>
  %c = kiln.constant dense<2.0> : tensor<f32> : tensor<f32>
  %one = kiln.constant dense<1.0> : tensor<f32> : tensor<f32>
  %half = kiln.constant dense<0.5> : tensor<f32> : tensor<f32>
  %y = kiln.matmul %x, %w : (tensor<4x8xf32>, tensor<8x16xf32>) -> tensor<4x16xf32>
  %d = kiln.div %y, %c : (tensor<4x16xf32>, tensor<f32>) -> tensor<4x16xf32>
  %e = kiln.erf %d : (tensor<4x16xf32>) -> tensor<4x16xf32>
  %a = kiln.add %e, %one : (tensor<4x16xf32>, tensor<f32>) -> tensor<4x16xf32>
  %m = kiln.mul %y, %a : (tensor<4x16xf32>, tensor<4x16xf32>) -> tensor<4x16xf32>
  %r = kiln.mul %m, %half : (tensor<4x16xf32>, tensor<f32>) -> tensor<4x16xf32>
  return %r : tensor<4x16xf32>
}

// -----

// The same with BCR-sparse weights (marked by kiln-detect-sparsity): the
// sparse kernel applies the GELU as it stores each block of rows.
// CHECK-LABEL: func.func private @kiln_kernel_0(
// CHECK: call @kiln_rt_matmul_bcr_act({{.*}}) : (index, index, index, i64, i64, i64, i64, i64, i64, i64, i64, i64, index, f32, f32, i64) -> ()
// CHECK-NOT: math.erf
// CHECK: return
func.func @main(%x: tensor<4x8xf32>) -> tensor<4x16xf32> {
  %w = kiln.constant dense<[[1.0, 0.0, 2.0, 0.0, 3.0, 0.0, 4.0, 0.0, 1.0, 0.0, 2.0, 0.0, 3.0, 0.0, 4.0, 0.0], [0.0, 5.0, 0.0, 6.0, 0.0, 7.0, 0.0, 8.0, 0.0, 5.0, 0.0, 6.0, 0.0, 7.0, 0.0, 8.0], [1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]]> : tensor<8x16xf32> : tensor<8x16xf32>
  %c = kiln.constant dense<1.41421354> : tensor<f32> : tensor<f32>
  %one = kiln.constant dense<1.0> : tensor<f32> : tensor<f32>
  %half = kiln.constant dense<0.5> : tensor<f32> : tensor<f32>
  %y = kiln.matmul %x, %w {kiln.bcr = {block = array<i64: 4, 4>, sparse = true}} : (tensor<4x8xf32>, tensor<8x16xf32>) -> tensor<4x16xf32>
  %d = kiln.div %y, %c : (tensor<4x16xf32>, tensor<f32>) -> tensor<4x16xf32>
  %e = kiln.erf %d : (tensor<4x16xf32>) -> tensor<4x16xf32>
  %a = kiln.add %e, %one : (tensor<4x16xf32>, tensor<f32>) -> tensor<4x16xf32>
  %m = kiln.mul %y, %a : (tensor<4x16xf32>, tensor<4x16xf32>) -> tensor<4x16xf32>
  %r = kiln.mul %m, %half : (tensor<4x16xf32>, tensor<f32>) -> tensor<4x16xf32>
  return %r : tensor<4x16xf32>
}
