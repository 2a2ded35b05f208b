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

// -----

// A 1x1 conv whose output only a depthwise conv reads: its GEMM gives each
// thread whole output channels (kiln_rt_conv2d_packed_part, partition 1),
// the planes the depthwise kernel's threads read. The depthwise conv's
// output feeds a 1x1 conv, which reads by pixels: kiln_rt_conv2d_packed.
// CHECK-LABEL: func.func private @kiln_kernel_0(
// (The printer names a constant by its value: %c1_i64 is 1 : i64.)
// CHECK: call @kiln_rt_conv2d_packed_part({{.*}}, %c1_i64{{(_[0-9]+)?}}) : (index, index, index, index, index, i64, i64, i64, i64, i64, i64, i64, i64, i64, i64, i64, i64, i64, i64, i64, f32, f32, i64) -> ()
// CHECK-LABEL: func.func private @kiln_kernel_1(
// CHECK: call @kiln_rt_conv2d(
// CHECK-LABEL: func.func private @kiln_kernel_2(
// CHECK-NOT: kiln_rt_conv2d_packed_part
// CHECK: call @kiln_rt_conv2d_packed(
// CHECK-LABEL: func.func @kiln_main
func.func @main(%x: tensor<1x4x6x6xf32>) -> tensor<1x4x6x6xf32> {
  %we = kiln.constant dense<0.5> : tensor<8x4x1x1xf32> : tensor<8x4x1x1xf32>
  %wd = kiln.constant dense<0.25> : tensor<8x1x3x3xf32> : tensor<8x1x3x3xf32>
  %wp = kiln.constant dense<0.125> : tensor<4x8x1x1xf32> : tensor<4x8x1x1xf32>
  %0 = kiln.conv %x, %we {strides = array<i64: 1, 1>, dilations = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, group = 1 : i64} : (tensor<1x4x6x6xf32>, tensor<8x4x1x1xf32>) -> tensor<1x8x6x6xf32>
  %1 = kiln.relu %0 : (tensor<1x8x6x6xf32>) -> tensor<1x8x6x6xf32>
  %2 = kiln.conv %1, %wd {strides = array<i64: 1, 1>, dilations = array<i64: 1, 1>, pads = array<i64: 1, 1, 1, 1>, group = 8 : i64} : (tensor<1x8x6x6xf32>, tensor<8x1x3x3xf32>) -> tensor<1x8x6x6xf32>
  %3 = kiln.conv %2, %wp {strides = array<i64: 1, 1>, dilations = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, group = 1 : i64} : (tensor<1x8x6x6xf32>, tensor<4x8x1x1xf32>) -> tensor<1x4x6x6xf32>
  return %3 : tensor<1x4x6x6xf32>
}

// -----

// A max pool reads by channels too.
// CHECK-LABEL: func.func private @kiln_kernel_0(
// CHECK: call @kiln_rt_conv2d_packed_part({{.*}}, %c1_i64{{(_[0-9]+)?}})
// CHECK-LABEL: func.func private @kiln_kernel_1(
// CHECK: call @kiln_rt_maxpool2d(
func.func @main(%x: tensor<1x4x8x8xf32>) -> tensor<1x8x4x4xf32> {
  %we = kiln.constant dense<0.5> : tensor<8x4x1x1xf32> : tensor<8x4x1x1xf32>
  %0 = kiln.conv %x, %we {strides = array<i64: 1, 1>, dilations = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, group = 1 : i64} : (tensor<1x4x8x8xf32>, tensor<8x4x1x1xf32>) -> tensor<1x8x8x8xf32>
  %1 = kiln.max_pool %0 {count_include_pad = false, dilations = array<i64: 1, 1>, kernel_shape = array<i64: 3, 3>, pads = array<i64: 1, 1, 1, 1>, strides = array<i64: 2, 2>} : (tensor<1x8x8x8xf32>) -> tensor<1x8x4x4xf32>
  return %1 : tensor<1x8x4x4xf32>
}

// -----

// Not when the output also feeds a conv that reads by pixels (here a 1x1
// conv beside the depthwise one).
// CHECK-LABEL: func.func private @kiln_kernel_0(
// CHECK-NOT: kiln_rt_conv2d_packed_part
// CHECK: call @kiln_rt_conv2d_packed(
// CHECK-NOT: kiln_rt_conv2d_packed_part
// CHECK-LABEL: func.func @kiln_main
func.func @main(%x: tensor<1x4x6x6xf32>) -> (tensor<1x8x6x6xf32>, tensor<1x4x6x6xf32>) {
  %we = kiln.constant dense<0.5> : tensor<8x4x1x1xf32> : tensor<8x4x1x1xf32>
  %wd = kiln.constant dense<0.25> : tensor<8x1x3x3xf32> : tensor<8x1x3x3xf32>
  %wp = kiln.constant dense<0.125> : tensor<4x8x1x1xf32> : tensor<4x8x1x1xf32>
  %0 = kiln.conv %x, %we {strides = array<i64: 1, 1>, dilations = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, group = 1 : i64} : (tensor<1x4x6x6xf32>, tensor<8x4x1x1xf32>) -> tensor<1x8x6x6xf32>
  %2 = kiln.conv %0, %wd {strides = array<i64: 1, 1>, dilations = array<i64: 1, 1>, pads = array<i64: 1, 1, 1, 1>, group = 8 : i64} : (tensor<1x8x6x6xf32>, tensor<8x1x3x3xf32>) -> tensor<1x8x6x6xf32>
  %3 = kiln.conv %0, %wp {strides = array<i64: 1, 1>, dilations = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, group = 1 : i64} : (tensor<1x8x6x6xf32>, tensor<4x8x1x1xf32>) -> tensor<1x4x6x6xf32>
  return %2, %3 : tensor<1x8x6x6xf32>, tensor<1x4x6x6xf32>
}
