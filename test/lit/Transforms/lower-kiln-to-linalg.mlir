// RUN: kiln-opt %s -split-input-file -kiln-lower-to-linalg | FileCheck %s

// Elementwise ops become linalg.generic with broadcasting maps; the returned
// value is written straight into the output buffer (no copy).
// CHECK-DAG: #[[BCAST:.*]] = affine_map<(d0, d1) -> (0, d1)>
// CHECK-DAG: #[[ID:.*]] = affine_map<(d0, d1) -> (d0, d1)>
// CHECK-LABEL: func @kiln_main(
// CHECK-SAME: %[[A:.*]]: memref<4x3xf32>, %[[B:.*]]: memref<1x3xf32>, %[[OUT:.*]]: memref<4x3xf32>)
// CHECK: %[[T:.*]] = memref.alloc() : memref<4x3xf32>
// CHECK: linalg.generic {indexing_maps = [#[[ID]], #[[BCAST]], #[[ID]]]{{.*}} ins(%[[A]], %[[B]] : {{.*}}) outs(%[[T]] : memref<4x3xf32>)
// CHECK: arith.addf
// CHECK: linalg.generic {{.*}} ins(%[[T]] : memref<4x3xf32>) outs(%[[OUT]] : memref<4x3xf32>)
// CHECK: arith.maximumf
// CHECK-NOT: linalg.copy
// CHECK: return
func.func @main(%a: tensor<4x3xf32>, %b: tensor<1x3xf32>) -> tensor<4x3xf32> {
  %0 = kiln.add %a, %b : (tensor<4x3xf32>, tensor<1x3xf32>) -> tensor<4x3xf32>
  %1 = kiln.relu %0 : (tensor<4x3xf32>) -> tensor<4x3xf32>
  return %1 : tensor<4x3xf32>
}

// -----

// Conv calls the runtime microkernel with raw pointers and its geometry;
// constant weights are packed at compile time for the GEMM (2 x 27 padded
// to 6 x 27 = 162 floats and 8 of slack, kiln/gemm_layout.h); a reshape is a view
// (reinterpret_cast), and a returned view is copied.
// CHECK: func.func private @kiln_rt_conv2d_packed(index, index, index, index, index, i64, i64, i64, i64, i64, i64, i64, i64, i64, i64, i64, i64, i64, i64, i64, f32, f32)
// CHECK-LABEL: func @kiln_main(
// CHECK: %[[Y:.*]] = memref.alloc() : memref<1x2x4x4xf32>
// CHECK: memref.get_global @__kiln_const_1 : memref<170xf32>
// CHECK: call @kiln_rt_conv2d_packed(
// CHECK: %[[V:.*]] = memref.reinterpret_cast %[[Y]] to offset: [0], sizes: [1, 32], strides: [32, 1]
// CHECK: linalg.copy ins(%[[V]] : memref<1x32xf32>) outs(%{{.*}} : memref<1x32xf32>)
func.func @main(%x: tensor<1x3x4x4xf32>) -> tensor<1x32xf32> {
  %w = kiln.constant dense<1.0> : tensor<2x3x3x3xf32> : tensor<2x3x3x3xf32>
  %0 = kiln.conv %x, %w {dilations = array<i64: 1, 1>, group = 1 : i64, pads = array<i64: 1, 1, 1, 1>, strides = array<i64: 1, 1>} : (tensor<1x3x4x4xf32>, tensor<2x3x3x3xf32>) -> tensor<1x2x4x4xf32>
  %1 = kiln.reshape %0 : (tensor<1x2x4x4xf32>) -> tensor<1x32xf32>
  return %1 : tensor<1x32xf32>
}

// -----

// Weights that are not constants go to the conv kernel as they are.
// CHECK: func.func private @kiln_rt_conv2d(index, index, index, index, i64, i64, i64, i64, i64, i64, i64, i64, i64, i64, i64, i64, i64, i64, i64, i64)
// CHECK-LABEL: func @kiln_main(
// CHECK: call @kiln_rt_conv2d(
func.func @main(%x: tensor<1x3x4x4xf32>, %w: tensor<2x3x3x3xf32>) -> tensor<1x2x4x4xf32> {
  %0 = kiln.conv %x, %w {dilations = array<i64: 1, 1>, group = 1 : i64, pads = array<i64: 1, 1, 1, 1>, strides = array<i64: 1, 1>} : (tensor<1x3x4x4xf32>, tensor<2x3x3x3xf32>) -> tensor<1x2x4x4xf32>
  return %0 : tensor<1x2x4x4xf32>
}

// -----

// f32 Softmax over the last axis: the runtime's row kernel (rows, columns,
// not log).
// CHECK-LABEL: func @kiln_main(
// CHECK-DAG: %[[R:.*]] = arith.constant 6 : i64
// CHECK-DAG: %[[C:.*]] = arith.constant 5 : i64
// CHECK-DAG: %[[L:.*]] = arith.constant 0 : i64
// CHECK: call @kiln_rt_softmax(%{{.*}}, %{{.*}}, %[[R]], %[[C]], %[[L]])
// CHECK-NOT: linalg.generic
func.func @main(%x: tensor<2x3x5xf32>) -> tensor<2x3x5xf32> {
  %0 = kiln.softmax %x {axis = 2 : i64} : (tensor<2x3x5xf32>) -> tensor<2x3x5xf32>
  return %0 : tensor<2x3x5xf32>
}

// -----

// Softmax over another axis: max-reduce, exp(x - max), sum-reduce, divide.
// CHECK-LABEL: func @kiln_main(
// CHECK-NOT: kiln_rt_softmax
// CHECK: linalg.fill ins(%{{.*}} : f32)
// CHECK: linalg.generic {{.*}}iterator_types = ["reduction", "parallel"]
// CHECK: arith.maximumf
// CHECK: math.exp
// CHECK: iterator_types = ["reduction", "parallel"]
// CHECK: arith.addf
// CHECK: arith.divf
func.func @main(%x: tensor<2x5xf32>) -> tensor<2x5xf32> {
  %0 = kiln.softmax %x {axis = 0 : i64} : (tensor<2x5xf32>) -> tensor<2x5xf32>
  return %0 : tensor<2x5xf32>
}

// -----

// LayerNormalization over the last axis with per-column scale and bias:
// the runtime's row kernel; a scale that broadcasts over the normalised
// dims (InstanceNormalization's per-channel form) keeps generated code.
// CHECK-LABEL: func @kiln_main(
// CHECK: call @kiln_rt_layernorm(
// CHECK-NOT: kiln_rt_layernorm
// CHECK: linalg.generic
// CHECK: math.rsqrt
func.func @main(%x: tensor<4x8xf32>, %s: tensor<8xf32>, %b: tensor<8xf32>, %y: tensor<2x3x4xf32>, %c: tensor<3x1xf32>) -> (tensor<4x8xf32>, tensor<2x3x4xf32>) {
  %0 = kiln.layer_norm %x, %s, %b {axes = array<i64: 1>, epsilon = 1.0e-5 : f32} : (tensor<4x8xf32>, tensor<8xf32>, tensor<8xf32>) -> tensor<4x8xf32>
  %1 = kiln.layer_norm %y, %c {axes = array<i64: 2>, epsilon = 1.0e-5 : f32} : (tensor<2x3x4xf32>, tensor<3x1xf32>) -> tensor<2x3x4xf32>
  return %0, %1 : tensor<4x8xf32>, tensor<2x3x4xf32>
}

// -----

// A slice with positive steps is a strided view copied out; with a
// negative step, each output element loads input[start + i * step].
// CHECK-LABEL: func @kiln_main(
// CHECK: %[[V:.*]] = memref.subview %arg0[1, 0] [3, 4] [2, 1]
// CHECK: linalg.copy ins(%[[V]] : {{.*}}) outs(%arg1 : memref<3x4xf32>)
func.func @main(%x: tensor<6x5xf32>) -> tensor<3x4xf32> {
  %0 = kiln.slice %x {starts = array<i64: 1, 0>, steps = array<i64: 2, 1>} : (tensor<6x5xf32>) -> tensor<3x4xf32>
  return %0 : tensor<3x4xf32>
}

// -----

// CHECK-LABEL: func @kiln_main(
// CHECK: linalg.generic {{.*}} outs(%arg1 : memref<3x5xf32>)
// CHECK: %[[I:.*]] = linalg.index 1 : index
// CHECK: arith.muli %[[I]], %c-1
// CHECK: memref.load %arg0
func.func @main(%x: tensor<6x5xf32>) -> tensor<3x5xf32> {
  %0 = kiln.slice %x {starts = array<i64: 1, 4>, steps = array<i64: 2, -1>} : (tensor<6x5xf32>) -> tensor<3x5xf32>
  return %0 : tensor<3x5xf32>
}

// -----

// BatchNorm with constant statistics folds to x * a + c with precomputed a, c.
// CHECK-LABEL: func @kiln_main(
// CHECK-COUNT-2: memref.get_global
// CHECK: linalg.generic
// CHECK: arith.mulf
// CHECK: arith.addf
// CHECK-NOT: math.sqrt
func.func @main(%x: tensor<1x2x3x3xf32>) -> tensor<1x2x3x3xf32> {
  %s = kiln.constant dense<[1.0, 2.0]> : tensor<2xf32> : tensor<2xf32>
  %b = kiln.constant dense<[0.5, 0.0]> : tensor<2xf32> : tensor<2xf32>
  %m = kiln.constant dense<[0.1, 0.2]> : tensor<2xf32> : tensor<2xf32>
  %v = kiln.constant dense<[1.0, 4.0]> : tensor<2xf32> : tensor<2xf32>
  %0 = kiln.batch_norm %x, %s, %b, %m, %v {epsilon = 0.0 : f32} : (tensor<1x2x3x3xf32>, tensor<2xf32>, tensor<2xf32>, tensor<2xf32>, tensor<2xf32>) -> tensor<1x2x3x3xf32>
  return %0 : tensor<1x2x3x3xf32>
}

// -----

// Resize reads its compile-time tap tables (indices and weights per resized
// axis) and accumulates every tap combination in one loop nest.
// CHECK-LABEL: func @kiln_main(
// CHECK: linalg.generic {{.*}} outs(%{{.*}} : memref<1x4xf32>)
// CHECK-COUNT-2: memref.load %{{.*}} : memref<4x2xi64>
// CHECK: arith.mulf
// CHECK: arith.addf
// CHECK-NOT: arith.select
func.func @main(%x: tensor<1x2xf32>) -> tensor<1x4xf32> {
  %i = kiln.constant dense<[[0, 1], [0, 1], [0, 1], [1, 1]]> : tensor<4x2xi64> : tensor<4x2xi64>
  %w = kiln.constant dense<[[1.0, 0.0], [0.75, 0.25], [0.25, 0.75], [1.0, 0.0]]> : tensor<4x2xf32> : tensor<4x2xf32>
  %0 = kiln.resize %x, %i, %w {axes = array<i64: 1>, weighted = true, extrapolate = false, extrapolation_value = 0.0 : f32} : (tensor<1x2xf32>, tensor<4x2xi64>, tensor<4x2xf32>) -> tensor<1x4xf32>
  return %0 : tensor<1x4xf32>
}

// -----

// CumSum: a sequential loop along the axis carries the running sum; an
// exclusive sum stores the value before adding.
// CHECK-LABEL: func @kiln_main(
// CHECK: scf.for
// CHECK: scf.for {{.*}} iter_args(%[[ACC:.*]] = %{{.*}}) -> (f32)
// CHECK: %[[NEXT:.*]] = arith.addf %[[ACC]]
// CHECK: memref.store %[[ACC]]
// CHECK: scf.yield %[[NEXT]]
func.func @main(%x: tensor<3x5xf32>) -> tensor<3x5xf32> {
  %0 = kiln.cum_sum %x {axis = 1 : i64, exclusive = true, reverse = false} : (tensor<3x5xf32>) -> tensor<3x5xf32>
  return %0 : tensor<3x5xf32>
}

// -----

// ScatterND copies the data, then writes each update row at its index.
// CHECK-LABEL: func @kiln_main(
// CHECK: memref.copy
// CHECK: scf.for
// CHECK: memref.load %{{.*}} : memref<2x1xi64>
// CHECK: memref.store
func.func @main(%d: tensor<4x3xf32>, %i: tensor<2x1xi64>, %u: tensor<2x3xf32>) -> tensor<4x3xf32> {
  %0 = kiln.scatter_nd %d, %i, %u {reduction = "none"} : (tensor<4x3xf32>, tensor<2x1xi64>, tensor<2x3xf32>) -> tensor<4x3xf32>
  return %0 : tensor<4x3xf32>
}

// -----

// Layers kiln-detect-sparsity marked sparse get their weights packed as a
// BCR blob of 32-bit words (kiln/bcr_layout.h: 10 header words, 2 list
// offsets (1 chunk x 1 strip, and the end), 4 row slots, 27 used columns,
// 1 segment count, 1 segment head, 14 words of column positions, 2 x 27
// values = 113) and call the sparse kernel with the dense packed kernel's
// arguments.
// CHECK: func.func private @kiln_rt_conv2d_bcr(index, index, index, index, index, i64, i64, i64, i64, i64, i64, i64, i64, i64, i64, i64, i64, i64, i64, i64, f32, f32)
// CHECK-LABEL: func @kiln_main(
// CHECK: memref.get_global @__kiln_const_1 : memref<113xi32>
// CHECK: call @kiln_rt_conv2d_bcr(
func.func @main(%x: tensor<1x3x4x4xf32>) -> tensor<1x2x4x4xf32> {
  %w = kiln.constant dense<1.0> : tensor<2x3x3x3xf32> : tensor<2x3x3x3xf32>
  %0 = kiln.conv %x, %w {dilations = array<i64: 1, 1>, group = 1 : i64, pads = array<i64: 1, 1, 1, 1>, strides = array<i64: 1, 1>, kiln.bcr = {block = array<i64: 0, 0>, sparse = true}} : (tensor<1x3x4x4xf32>, tensor<2x3x3x3xf32>) -> tensor<1x2x4x4xf32>
  return %0 : tensor<1x2x4x4xf32>
}

// -----

// A MatMul with a sparse constant B: the blob holds B^T (8 x 4: 2 strips);
// layers marked dense (sparse = false) keep the dense packed kernel.
// CHECK-DAG: func.func private @kiln_rt_matmul_bcr(index, index, index, i64, i64, i64, i64, i64, i64, i64, i64, i64, index, f32, f32)
// CHECK-DAG: func.func private @kiln_rt_matmul_packed(
// CHECK-LABEL: func @kiln_main(
// CHECK: memref.get_global @{{.*}} : memref<{{[0-9]+}}xi32>
// CHECK: call @kiln_rt_matmul_bcr(
// CHECK: memref.get_global @{{.*}} : memref<64xf32>
// CHECK: call @kiln_rt_matmul_packed(
func.func @main(%a: tensor<16x4xf32>) -> (tensor<16x8xf32>, tensor<16x8xf32>) {
  %b = kiln.constant dense<[[1.0, 0.0, 2.0, 0.0, 3.0, 0.0, 4.0, 0.0], [0.0, 5.0, 0.0, 6.0, 0.0, 7.0, 0.0, 8.0], [1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0]]> : tensor<4x8xf32> : tensor<4x8xf32>
  %0 = kiln.matmul %a, %b {kiln.bcr = {block = array<i64: 4, 4>, sparse = true}} : (tensor<16x4xf32>, tensor<4x8xf32>) -> tensor<16x8xf32>
  %1 = kiln.matmul %a, %b {kiln.bcr = {block = array<i64: 4, 4>, sparse = false}} : (tensor<16x4xf32>, tensor<4x8xf32>) -> tensor<16x8xf32>
  return %0, %1 : tensor<16x8xf32>, tensor<16x8xf32>
}

// -----

// f32 MaxPool calls the runtime's window kernel (the one depthwise convs
// use): no padded copy, the pads and the geometry as arguments.
// CHECK: func.func private @kiln_rt_maxpool2d(index, index, i64, i64, i64, i64, i64, i64, i64, i64, i64, i64, i64, i64, i64, i64)
// CHECK-LABEL: func @kiln_main(
// CHECK-NOT: linalg.pooling_nchw_max
// CHECK: call @kiln_rt_maxpool2d(
// CHECK-NOT: linalg.pooling_nchw_max
func.func @main(%x: tensor<1x4x8x8xf32>) -> tensor<1x4x4x4xf32> {
  %0 = kiln.max_pool %x {count_include_pad = false, dilations = array<i64: 1, 1>, kernel_shape = array<i64: 3, 3>, pads = array<i64: 1, 1, 1, 1>, strides = array<i64: 2, 2>} : (tensor<1x4x8x8xf32>) -> tensor<1x4x4x4xf32>
  return %0 : tensor<1x4x4x4xf32>
}

// -----

// Other element types keep the linalg pooling on a -inf padded copy.
// CHECK-LABEL: func @kiln_main(
// CHECK-NOT: kiln_rt_maxpool2d
// CHECK: linalg.pooling_nchw_max
func.func @main(%x: tensor<1x4x8x8xf64>) -> tensor<1x4x4x4xf64> {
  %0 = kiln.max_pool %x {count_include_pad = false, dilations = array<i64: 1, 1>, kernel_shape = array<i64: 3, 3>, pads = array<i64: 1, 1, 1, 1>, strides = array<i64: 2, 2>} : (tensor<1x4x8x8xf64>) -> tensor<1x4x4x4xf64>
  return %0 : tensor<1x4x4x4xf64>
}

// -----

// f32 ReduceMean over the trailing axes (a global average pool): the
// runtime's row sums (rows, columns, scale 1 / columns).
// CHECK-LABEL: func @kiln_main(
// CHECK-DAG: %[[R:.*]] = arith.constant 6 : i64
// CHECK-DAG: %[[C:.*]] = arith.constant 20 : i64
// CHECK-DAG: %[[S:.*]] = arith.constant 5.000000e-02 : f32
// CHECK: call @kiln_rt_row_sums(%{{.*}}, %{{.*}}, %[[R]], %[[C]], %[[S]])
// CHECK-NOT: linalg.generic
func.func @main(%x: tensor<2x3x4x5xf32>) -> tensor<2x3x1x1xf32> {
  %0 = kiln.reduce_mean %x {axes = array<i64: 2, 3>, keepdims = true} : (tensor<2x3x4x5xf32>) -> tensor<2x3x1x1xf32>
  return %0 : tensor<2x3x1x1xf32>
}

// -----

// ReduceSum over a leading axis keeps the generated reduction.
// CHECK-LABEL: func @kiln_main(
// CHECK-NOT: kiln_rt_row_sums
// CHECK: linalg.generic {{.*}}iterator_types = ["reduction", "parallel"]
// CHECK: arith.addf
func.func @main(%x: tensor<4x5xf32>) -> tensor<5xf32> {
  %0 = kiln.reduce_sum %x {axes = array<i64: 0>, keepdims = false} : (tensor<4x5xf32>) -> tensor<5xf32>
  return %0 : tensor<5xf32>
}
