// RUN: kiln-opt %s -split-input-file -kiln-lower-to-linalg | FileCheck %s --check-prefixes=CHECK,AUTO
// RUN: kiln-opt %s -split-input-file -kiln-lower-to-linalg=winograd=off | FileCheck %s --check-prefixes=CHECK,OFF
// RUN: kiln-opt %s -split-input-file -kiln-lower-to-linalg=winograd=2 | FileCheck %s --check-prefixes=CHECK,TWO
// RUN: not kiln-opt %s -split-input-file -kiln-lower-to-linalg=winograd=3 2>&1 | FileCheck %s --check-prefix=BAD

// A 3x3 stride-1 conv with constant weights and 16 channels in and out:
// Winograd, with the weights transformed and packed at compile time.
// F(4x4, 3x3) at 24x24 (auto): 36 positions, each packed as a GEMM A of
// 16 filters (padded to 18) x 16 channels + 8 of slack = 296 floats,
// 10656 in all; F(2x2, 3x3): 16 x 296 = 4736. With winograd=off: im2col + GEMM, the
// weights packed as the GEMM's A (16 rows padded to 18, x 144 = 2592 floats, + 8 of slack).
// BAD: --winograd must be auto, off, 2 or 4, not '3'
// CHECK-LABEL: func @kiln_main(
// AUTO: %[[U:.*]] = memref.get_global @__kiln_const_{{[0-9]+}} : memref<10656xf32>
// AUTO: %[[M:.*]] = arith.constant 4 : i64
// AUTO: call @kiln_rt_conv2d_winograd_ft({{.*}}, %[[M]], %{{.*}}, %{{.*}}) : (index, index, index, index, index, i64, i64, i64, i64, i64, i64, i64, i64, i64, i64, f32, f32) -> ()
// TWO: memref.get_global @__kiln_const_{{[0-9]+}} : memref<4736xf32>
// TWO: %[[M:.*]] = arith.constant 2 : i64
// TWO: call @kiln_rt_conv2d_winograd_ft({{.*}}, %[[M]], %{{.*}}, %{{.*}})
// OFF-NOT: kiln_rt_conv2d_winograd_ft
// OFF: memref.get_global @__kiln_const_{{[0-9]+}} : memref<2600xf32>
// OFF: call @kiln_rt_conv2d_packed(
func.func @main(%x: tensor<1x16x24x24xf32>) -> tensor<1x16x24x24xf32> {
  %w = kiln.constant dense<0.5> : tensor<16x16x3x3xf32> : tensor<16x16x3x3xf32>
  %0 = kiln.conv %x, %w {dilations = array<i64: 1, 1>, group = 1 : i64, pads = array<i64: 1, 1, 1, 1>, strides = array<i64: 1, 1>} : (tensor<1x16x24x24xf32>, tensor<16x16x3x3xf32>) -> tensor<1x16x24x24xf32>
  return %0 : tensor<1x16x24x24xf32>
}

// -----

// Smaller outputs (below 20x20: 12x12 here) take F(2x2, 3x3) under auto.
// CHECK-LABEL: func @kiln_main(
// AUTO: memref.get_global @__kiln_const_{{[0-9]+}} : memref<4736xf32>
// AUTO: %[[M:.*]] = arith.constant 2 : i64
// AUTO: call @kiln_rt_conv2d_winograd_ft({{.*}}, %[[M]], %{{.*}}, %{{.*}})
// OFF: call @kiln_rt_conv2d_packed(
func.func @main(%x: tensor<1x16x12x12xf32>) -> tensor<1x16x12x12xf32> {
  %w = kiln.constant dense<0.5> : tensor<16x16x3x3xf32> : tensor<16x16x3x3xf32>
  %0 = kiln.conv %x, %w {dilations = array<i64: 1, 1>, group = 1 : i64, pads = array<i64: 1, 1, 1, 1>, strides = array<i64: 1, 1>} : (tensor<1x16x12x12xf32>, tensor<16x16x3x3xf32>) -> tensor<1x16x12x12xf32>
  return %0 : tensor<1x16x12x12xf32>
}

// -----

// Where Winograd must not be used: stride 2 and dilation 2 (any mode), and
// a shallow conv (3 input channels: the transforms would dominate) under
// auto; winograd=2 forces it on the shallow one only.
// CHECK-LABEL: func @kiln_main(
// AUTO-NOT: kiln_rt_conv2d_winograd_ft
// OFF-NOT: kiln_rt_conv2d_winograd_ft
// TWO: call @kiln_rt_conv2d_packed(
// TWO: call @kiln_rt_conv2d_packed(
// TWO: call @kiln_rt_conv2d_winograd_ft(
// CHECK: return
func.func @main(%x: tensor<1x16x12x12xf32>, %s: tensor<1x3x12x12xf32>) -> (tensor<1x16x6x6xf32>, tensor<1x16x12x12xf32>, tensor<1x16x12x12xf32>) {
  %w = kiln.constant dense<0.5> : tensor<16x16x3x3xf32> : tensor<16x16x3x3xf32>
  %w3 = kiln.constant dense<0.25> : tensor<16x3x3x3xf32> : tensor<16x3x3x3xf32>
  %0 = kiln.conv %x, %w {dilations = array<i64: 1, 1>, group = 1 : i64, pads = array<i64: 1, 1, 1, 1>, strides = array<i64: 2, 2>} : (tensor<1x16x12x12xf32>, tensor<16x16x3x3xf32>) -> tensor<1x16x6x6xf32>
  %1 = kiln.conv %x, %w {dilations = array<i64: 2, 2>, group = 1 : i64, pads = array<i64: 2, 2, 2, 2>, strides = array<i64: 1, 1>} : (tensor<1x16x12x12xf32>, tensor<16x16x3x3xf32>) -> tensor<1x16x12x12xf32>
  %2 = kiln.conv %s, %w3 {dilations = array<i64: 1, 1>, group = 1 : i64, pads = array<i64: 1, 1, 1, 1>, strides = array<i64: 1, 1>} : (tensor<1x3x12x12xf32>, tensor<16x3x3x3xf32>) -> tensor<1x16x12x12xf32>
  return %0, %1, %2 : tensor<1x16x6x6xf32>, tensor<1x16x12x12xf32>, tensor<1x16x12x12xf32>
}
