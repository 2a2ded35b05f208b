// Conv chains, kiln's extension of the fusion table (docs/fusion.md): a
// Winograd 3x3 conv block joins the block of the 1x1 conv that reads it.
// RUN: kiln-opt %s -split-input-file -pass-pipeline='builtin.module(func.func(kiln-plan-fusion{conv-chains=true}))' | FileCheck %s
// RUN: kiln-opt %s -split-input-file -pass-pipeline='builtin.module(func.func(kiln-plan-fusion))' | FileCheck %s --check-prefix=OFF
// RUN: kiln-opt %s -split-input-file -pass-pipeline='builtin.module(func.func(kiln-plan-fusion{conv-chains=true winograd=off}))' | FileCheck %s --check-prefix=OFF
// RUN: kiln-opt %s -split-input-file -pass-pipeline='builtin.module(func.func(kiln-plan-fusion{conv-chains=true}),kiln-lower-to-linalg)' | FileCheck %s --check-prefix=LOWER

// Fires: Conv 3x3 + Relu -> Conv 1x1 + Add + Relu, 16x16 pixels: one block,
// lowered to one runtime call with both clamps (Relu: [0, inf]).
// CHECK-LABEL: func @main
// CHECK: kiln.fused
// CHECK-NEXT: ^bb0
// CHECK-NEXT: kiln.conv
// CHECK-NEXT: kiln.relu
// CHECK-NEXT: kiln.conv
// CHECK-NEXT: kiln.add
// CHECK-NEXT: kiln.relu
// CHECK-NEXT: kiln.yield
// CHECK-NOT: kiln.fused
// Without conv-chains, or without Winograd, the table's "no" holds.
// OFF-LABEL: func @main
// OFF-COUNT-2: kiln.fused
// LOWER-LABEL: func.func private @kiln_kernel_0(
// LOWER: call @kiln_rt_conv2d_winograd_chain(
// LOWER-NOT: linalg.generic
// LOWER-NOT: call @kiln_rt_conv2d
// LOWER-LABEL: func.func @kiln_main
// LOWER-NOT: memref.alloc
// LOWER: call @kiln_kernel_0
// LOWER-NOT: call @kiln_kernel_1
// LOWER: {{^}}module
func.func @main(%x: tensor<1x16x16x16xf32>, %r: tensor<1x32x16x16xf32>) -> tensor<1x32x16x16xf32> {
  %w = kiln.constant dense<0.01> : tensor<16x16x3x3xf32> : tensor<16x16x3x3xf32>
  %w2 = kiln.constant dense<0.02> : tensor<32x16x1x1xf32> : tensor<32x16x1x1xf32>
  %0 = kiln.conv %x, %w {strides = array<i64: 1, 1>, dilations = array<i64: 1, 1>, pads = array<i64: 1, 1, 1, 1>, group = 1 : i64} : (tensor<1x16x16x16xf32>, tensor<16x16x3x3xf32>) -> tensor<1x16x16x16xf32>
  %1 = kiln.relu %0 : (tensor<1x16x16x16xf32>) -> tensor<1x16x16x16xf32>
  %2 = kiln.conv %1, %w2 {strides = array<i64: 1, 1>, dilations = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, group = 1 : i64} : (tensor<1x16x16x16xf32>, tensor<32x16x1x1xf32>) -> tensor<1x32x16x16xf32>
  %3 = kiln.add %2, %r : (tensor<1x32x16x16xf32>, tensor<1x32x16x16xf32>) -> tensor<1x32x16x16xf32>
  %4 = kiln.relu %3 : (tensor<1x32x16x16xf32>) -> tensor<1x32x16x16xf32>
  return %4 : tensor<1x32x16x16xf32>
}

// -----

// Must not fire: 8x8 = 64 pixels, fewer than kChainMinPixels (at 2
// threads the tail's GEMM would read all its weights on each thread).
// CHECK-LABEL: func @main
// CHECK-COUNT-2: kiln.fused
func.func @main(%x: tensor<1x16x8x8xf32>) -> tensor<1x32x8x8xf32> {
  %w = kiln.constant dense<0.01> : tensor<16x16x3x3xf32> : tensor<16x16x3x3xf32>
  %w2 = kiln.constant dense<0.02> : tensor<32x16x1x1xf32> : tensor<32x16x1x1xf32>
  %0 = kiln.conv %x, %w {strides = array<i64: 1, 1>, dilations = array<i64: 1, 1>, pads = array<i64: 1, 1, 1, 1>, group = 1 : i64} : (tensor<1x16x8x8xf32>, tensor<16x16x3x3xf32>) -> tensor<1x16x8x8xf32>
  %1 = kiln.relu %0 : (tensor<1x16x8x8xf32>) -> tensor<1x16x8x8xf32>
  %2 = kiln.conv %1, %w2 {strides = array<i64: 1, 1>, dilations = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, group = 1 : i64} : (tensor<1x16x8x8xf32>, tensor<32x16x1x1xf32>) -> tensor<1x32x8x8xf32>
  return %2 : tensor<1x32x8x8xf32>
}

// -----

// Must not fire: the first conv's result is read elsewhere too (it must
// be written out whole).
// CHECK-LABEL: func @main
// CHECK-COUNT-2: kiln.fused
func.func @main(%x: tensor<1x16x16x16xf32>) -> (tensor<1x32x16x16xf32>, tensor<1x16x16x16xf32>) {
  %w = kiln.constant dense<0.01> : tensor<16x16x3x3xf32> : tensor<16x16x3x3xf32>
  %w2 = kiln.constant dense<0.02> : tensor<32x16x1x1xf32> : tensor<32x16x1x1xf32>
  %0 = kiln.conv %x, %w {strides = array<i64: 1, 1>, dilations = array<i64: 1, 1>, pads = array<i64: 1, 1, 1, 1>, group = 1 : i64} : (tensor<1x16x16x16xf32>, tensor<16x16x3x3xf32>) -> tensor<1x16x16x16xf32>
  %1 = kiln.relu %0 : (tensor<1x16x16x16xf32>) -> tensor<1x16x16x16xf32>
  %2 = kiln.conv %1, %w2 {strides = array<i64: 1, 1>, dilations = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, group = 1 : i64} : (tensor<1x16x16x16xf32>, tensor<32x16x1x1xf32>) -> tensor<1x32x16x16xf32>
  return %2, %1 : tensor<1x32x16x16xf32>, tensor<1x16x16x16xf32>
}

// -----

// Must not fire: the second conv is 3x3 (it reads neighbouring rows).
// CHECK-LABEL: func @main
// CHECK-COUNT-2: kiln.fused
func.func @main(%x: tensor<1x16x16x16xf32>) -> tensor<1x16x16x16xf32> {
  %w = kiln.constant dense<0.01> : tensor<16x16x3x3xf32> : tensor<16x16x3x3xf32>
  %0 = kiln.conv %x, %w {strides = array<i64: 1, 1>, dilations = array<i64: 1, 1>, pads = array<i64: 1, 1, 1, 1>, group = 1 : i64} : (tensor<1x16x16x16xf32>, tensor<16x16x3x3xf32>) -> tensor<1x16x16x16xf32>
  %1 = kiln.relu %0 : (tensor<1x16x16x16xf32>) -> tensor<1x16x16x16xf32>
  %2 = kiln.conv %1, %w {strides = array<i64: 1, 1>, dilations = array<i64: 1, 1>, pads = array<i64: 1, 1, 1, 1>, group = 1 : i64} : (tensor<1x16x16x16xf32>, tensor<16x16x3x3xf32>) -> tensor<1x16x16x16xf32>
  return %2 : tensor<1x16x16x16xf32>
}

// -----

// Must not fire: a stride-2 3x3 conv does not run by Winograd.
// CHECK-LABEL: func @main
// CHECK-COUNT-2: kiln.fused
func.func @main(%x: tensor<1x16x32x32xf32>) -> tensor<1x32x16x16xf32> {
  %w = kiln.constant dense<0.01> : tensor<16x16x3x3xf32> : tensor<16x16x3x3xf32>
  %w2 = kiln.constant dense<0.02> : tensor<32x16x1x1xf32> : tensor<32x16x1x1xf32>
  %0 = kiln.conv %x, %w {strides = array<i64: 2, 2>, dilations = array<i64: 1, 1>, pads = array<i64: 1, 1, 1, 1>, group = 1 : i64} : (tensor<1x16x32x32xf32>, tensor<16x16x3x3xf32>) -> tensor<1x16x16x16xf32>
  %1 = kiln.relu %0 : (tensor<1x16x16x16xf32>) -> tensor<1x16x16x16xf32>
  %2 = kiln.conv %1, %w2 {strides = array<i64: 1, 1>, dilations = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, group = 1 : i64} : (tensor<1x16x16x16xf32>, tensor<32x16x1x1xf32>) -> tensor<1x32x16x16xf32>
  return %2 : tensor<1x32x16x16xf32>
}
