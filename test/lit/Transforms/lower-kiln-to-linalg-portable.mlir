// RUN: kiln-opt %s -split-input-file -kiln-lower-to-linalg=portable=true | FileCheck %s

// Portable lowering (device targets): a Conv is one linalg.generic over its
// output whose body sums over channels and taps with scf.for loops; padding
// is a bounds check (select), the bias the initial value. No runtime calls.
// CHECK-NOT: kiln_rt_conv
// CHECK-LABEL: func @kiln_main(
// CHECK: linalg.generic {{.*}}iterator_types = ["parallel", "parallel", "parallel", "parallel"]
// CHECK: linalg.index 1
// CHECK: memref.load %{{.*}} : memref<2xf32>
// CHECK: scf.for
// CHECK: scf.for
// CHECK: scf.for
// CHECK: arith.cmpi slt, %{{.*}}, %c4
// CHECK: arith.select
// CHECK: memref.load %{{.*}} : memref<1x3x4x4xf32>
// CHECK: memref.load %{{.*}} : memref<2x3x3x3xf32>
// CHECK: arith.mulf
// CHECK: arith.addf
// CHECK-NOT: kiln_rt_
func.func @main(%x: tensor<1x3x4x4xf32>, %w: tensor<2x3x3x3xf32>, %b: tensor<2xf32>) -> tensor<1x2x4x4xf32> {
  %0 = kiln.conv %x, %w, %b {dilations = array<i64: 1, 1>, group = 1 : i64, pads = array<i64: 1, 1, 1, 1>, strides = array<i64: 1, 1>} : (tensor<1x3x4x4xf32>, tensor<2x3x3x3xf32>, tensor<2xf32>) -> tensor<1x2x4x4xf32>
  return %0 : tensor<1x2x4x4xf32>
}

// -----

// A batched MatMul with a broadcast operand: the shared B is indexed without
// the batch dim; one scf.for over K.
// CHECK-NOT: kiln_rt_matmul
// CHECK-LABEL: func @kiln_main(
// CHECK: linalg.generic {{.*}}iterator_types = ["parallel", "parallel", "parallel"]
// CHECK: scf.for %{{.*}} = %{{.*}} to %c8
// CHECK: memref.load %{{.*}} : memref<3x4x8xf32>
// CHECK: memref.load %{{.*}} : memref<8x5xf32>
func.func @main(%a: tensor<3x4x8xf32>, %b: tensor<8x5xf32>) -> tensor<3x4x5xf32> {
  %0 = kiln.matmul %a, %b : (tensor<3x4x8xf32>, tensor<8x5xf32>) -> tensor<3x4x5xf32>
  return %0 : tensor<3x4x5xf32>
}

// -----

// A sparse MatMul (kiln.bcr sparse) in portable form walks the BCR blob for
// each output: the row's strip slot (a table of 8), per chunk the strip's
// segments, the lane's bit of each mask (ctpop for its value index), the
// gathered input column. A dense-marked layer stays a plain sum.
// CHECK-NOT: kiln_rt_matmul
// CHECK-LABEL: func @kiln_main(
// CHECK: memref.get_global @{{.*}} : memref<{{[0-9]+}}xi32>
// CHECK: memref.get_global @{{.*}} : memref<8xi32>
// CHECK: linalg.generic
// CHECK: memref.load %{{.*}} : memref<8xi32>
// CHECK: scf.for
// CHECK: scf.for
// CHECK: math.ctpop
// CHECK: scf.if
// CHECK: arith.bitcast %{{.*}} : i32 to f32
// CHECK: memref.load %{{.*}} : memref<16x4xf32>
// CHECK: linalg.generic
// CHECK-NOT: math.ctpop
// CHECK: return
func.func @main(%a: tensor<16x4xf32>) -> (tensor<16x8xf32>, tensor<16x8xf32>) {
  %b = kiln.constant dense<[[1.0, 0.0, 2.0, 0.0, 3.0, 0.0, 4.0, 0.0], [0.0, 5.0, 0.0, 6.0, 0.0, 7.0, 0.0, 8.0], [1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0]]> : tensor<4x8xf32> : tensor<4x8xf32>
  %0 = kiln.matmul %a, %b {kiln.bcr = {block = array<i64: 4, 4>, sparse = true}} : (tensor<16x4xf32>, tensor<4x8xf32>) -> tensor<16x8xf32>
  %1 = kiln.matmul %a, %b {kiln.bcr = {block = array<i64: 4, 4>, sparse = false}} : (tensor<16x4xf32>, tensor<4x8xf32>) -> tensor<16x8xf32>
  return %0, %1 : tensor<16x8xf32>, tensor<16x8xf32>
}
