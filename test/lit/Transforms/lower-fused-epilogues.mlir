// RUN: kiln-opt %s -split-input-file -kiln-plan-fusion -kiln-lower-to-linalg | FileCheck %s

// A Slice starting at 0 fused into a pointwise block composes to a plain
// dim index; linalg takes that as the operand's extent, so the wider buffer
// is read through a subview of the loop's extent (GRU/LSTM gate slices).
// CHECK-LABEL: func.func private @kiln_kernel_0(%arg0: memref<4x12xf32>
// CHECK: %[[V:.*]] = memref.subview %arg0[0, 0] [4, 4] [1, 1] : memref<4x12xf32> to memref<4x4xf32, strided<[12, 1]>>
// CHECK: linalg.generic {{.*}} ins(%[[V]], %arg1 : memref<4x4xf32, strided<[12, 1]>>, memref<4x4xf32>)
// CHECK: math.exp
// CHECK: arith.addf
func.func @main(%a: tensor<4x12xf32>, %b: tensor<4x4xf32>) -> tensor<4x4xf32> {
  %s = kiln.slice %a {starts = array<i64: 0, 0>, steps = array<i64: 1, 1>} : (tensor<4x12xf32>) -> tensor<4x4xf32>
  %e = kiln.exp %b : (tensor<4x4xf32>) -> tensor<4x4xf32>
  %r = kiln.add %s, %e : (tensor<4x4xf32>, tensor<4x4xf32>) -> tensor<4x4xf32>
  return %r : tensor<4x4xf32>
}

// -----

// A head whose epilogue changes the element type (reduce_max then a Cast
// to bool) reduces into a buffer of its own type, not the block's output.
// CHECK-LABEL: func.func private @kiln_kernel_0(%arg0: memref<4x8xf32>, %arg1: memref<4xi1>, %arg2: memref<4xf32>)
// CHECK: outs(%{{.*}} : memref<4x1xf32>)
// CHECK: arith.maximumf
// CHECK: ins(%arg2 : memref<4xf32>) outs(%arg1 : memref<4xi1>)
// CHECK: arith.cmpf une
func.func @main(%a: tensor<4x8xf32>) -> tensor<4xi1> {
  %m = kiln.reduce_max %a {axes = array<i64: 1>, keepdims = false} : (tensor<4x8xf32>) -> tensor<4xf32>
  %c = kiln.cast %m : (tensor<4xf32>) -> tensor<4xi1>
  return %c : tensor<4xi1>
}
