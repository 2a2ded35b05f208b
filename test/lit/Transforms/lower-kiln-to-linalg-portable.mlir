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
