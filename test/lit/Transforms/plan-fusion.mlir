// RUN: kiln-opt %s -split-input-file -pass-pipeline='builtin.module(func.func(kiln-plan-fusion))' | FileCheck %s
// RUN: kiln-opt %s -split-input-file -pass-pipeline='builtin.module(func.func(kiln-plan-fusion{no-fusion=true}))' | FileCheck %s --check-prefix=NOFUSE
// RUN: kiln-opt %s -split-input-file -pass-pipeline='builtin.module(func.func(kiln-plan-fusion),kiln-lower-to-linalg)' | FileCheck %s --check-prefix=LOWER

// Many-to-Many then One-to-One: fuse (Conv + bias add + Relu, one block).
// Many-to-Many then Many-to-Many: never (the second Conv is its own block).
// CHECK-LABEL: func @main
// CHECK: kiln.fused(%arg0, %{{.*}}) {block_id = [[B0:[0-9]+]] : i64}
// CHECK-NEXT: ^bb0
// CHECK-NEXT: kiln.conv
// CHECK-NEXT: kiln.relu
// CHECK-NEXT: kiln.yield
// CHECK: kiln.fused
// CHECK-NEXT: ^bb0
// CHECK-NEXT: kiln.conv
// CHECK-NEXT: kiln.yield
// NOFUSE-LABEL: func @main
// NOFUSE-COUNT-3: kiln.fused
// The Relu is applied by the conv kernel as it stores (clamp to [0, inf]).
// LOWER-LABEL: func.func private @kiln_kernel_0(
// LOWER-DAG: %[[LO:.*]] = arith.constant 0.000000e+00 : f32
// LOWER-DAG: %[[HI:.*]] = arith.constant 0x7F800000 : f32
// LOWER: call @kiln_rt_conv2d_packed({{.*}}, %[[LO]], %[[HI]])
// LOWER-NOT: linalg.generic
// LOWER-LABEL: func.func private @kiln_kernel_1
// LOWER: call @kiln_rt_conv2d_packed(
// LOWER-NOT: linalg.generic
// Only the block-to-block buffer is allocated (not the Conv's own result).
// LOWER-LABEL: func.func @kiln_main
// LOWER: memref.alloc() : memref<1x2x4x4xf32>
// LOWER-NOT: memref.alloc
// LOWER: call @kiln_kernel_0
// LOWER: call @kiln_kernel_1
func.func @main(%x: tensor<1x1x4x4xf32>) -> tensor<1x2x4x4xf32> {
  %w = kiln.constant dense<1.0> : tensor<2x1x1x1xf32> : tensor<2x1x1x1xf32>
  %w2 = kiln.constant dense<1.0> : tensor<2x2x1x1xf32> : tensor<2x2x1x1xf32>
  %0 = kiln.conv %x, %w {strides = array<i64: 1, 1>, dilations = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, group = 1 : i64} : (tensor<1x1x4x4xf32>, tensor<2x1x1x1xf32>) -> tensor<1x2x4x4xf32>
  %1 = kiln.relu %0 : (tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  %2 = kiln.conv %1, %w2 {strides = array<i64: 1, 1>, dilations = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, group = 1 : i64} : (tensor<1x2x4x4xf32>, tensor<2x2x1x1xf32>) -> tensor<1x2x4x4xf32>
  return %2 : tensor<1x2x4x4xf32>
}

// -----
// An intermediate used outside the block is not fused away: the Conv's
// result is also returned, so Relu gets its own block.
// CHECK-LABEL: func @main
// CHECK: kiln.fused
// CHECK-NEXT: ^bb0
// CHECK-NEXT: kiln.conv
// CHECK-NEXT: kiln.yield
// CHECK: kiln.fused
// CHECK-NEXT: ^bb0
// CHECK-NEXT: kiln.relu
// CHECK-NEXT: kiln.yield
func.func @main(%x: tensor<1x1x4x4xf32>) -> (tensor<1x2x4x4xf32>, tensor<1x2x4x4xf32>) {
  %w = kiln.constant dense<1.0> : tensor<2x1x1x1xf32> : tensor<2x1x1x1xf32>
  %0 = kiln.conv %x, %w {strides = array<i64: 1, 1>, dilations = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, group = 1 : i64} : (tensor<1x1x4x4xf32>, tensor<2x1x1x1xf32>) -> tensor<1x2x4x4xf32>
  %1 = kiln.relu %0 : (tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  return %1, %0 : tensor<1x2x4x4xf32>, tensor<1x2x4x4xf32>
}

// -----
// Pointwise chains fuse through Shuffle and Reorganize ops and broadcasts:
// one block, one generic whose maps do the transpose and reshape.
// CHECK-LABEL: func @main
// CHECK-COUNT-1: kiln.fused
// CHECK-NOT: kiln.fused
// LOWER-LABEL: func.func private @kiln_kernel_0(%{{.*}}: memref<2x3xf32>, %{{.*}}: memref<3xf32>, %{{.*}}: memref<3x2xf32>)
// LOWER: linalg.generic {indexing_maps = [#{{.*}}, #{{.*}}, #{{.*}}]
// LOWER: arith.addf
// LOWER: math.exp
// LOWER-NOT: linalg.generic
// LOWER: return
func.func @main(%a: tensor<2x3xf32>, %b: tensor<3xf32>) -> tensor<3x2xf32> {
  %0 = kiln.add %a, %b : (tensor<2x3xf32>, tensor<3xf32>) -> tensor<2x3xf32>
  %1 = kiln.transpose %0 {perm = array<i64: 1, 0>} : (tensor<2x3xf32>) -> tensor<3x2xf32>
  %2 = kiln.exp %1 : (tensor<3x2xf32>) -> tensor<3x2xf32>
  return %2 : tensor<3x2xf32>
}

// -----
// Many-to-Many then Shuffle: a MatMul followed by a Transpose that keeps its
// rows contiguous is one block; the GEMM writes every row straight to its
// transposed place (batch stride 4 = N, row stride 8 = batch x N).
// CHECK-LABEL: func @main
// CHECK: kiln.fused
// CHECK-NEXT: ^bb0
// CHECK-NEXT: kiln.matmul
// CHECK-NEXT: kiln.transpose
// CHECK-NEXT: kiln.reshape
// CHECK-NEXT: kiln.yield
// LOWER-LABEL: func.func private @kiln_kernel_0(%{{.*}}: memref<2x3x5xf32>, %{{.*}}: memref<2x5x4xf32>, %{{.*}}: memref<3x8xf32>)
// LOWER: call @kiln_rt_matmul_strided({{.*}}, %c4_i64{{(_[0-9]+)?}}, %c8_i64)
// LOWER-NOT: linalg
// LOWER: return
func.func @main(%a: tensor<2x3x5xf32>, %b: tensor<2x5x4xf32>) -> tensor<3x8xf32> {
  %0 = kiln.matmul %a, %b : (tensor<2x3x5xf32>, tensor<2x5x4xf32>) -> tensor<2x3x4xf32>
  %1 = kiln.transpose %0 {perm = array<i64: 1, 0, 2>} : (tensor<2x3x4xf32>) -> tensor<3x2x4xf32>
  %2 = kiln.reshape %1 : (tensor<3x2x4xf32>) -> tensor<3x8xf32>
  return %2 : tensor<3x8xf32>
}

// -----
// An operand prologue (Shuffle then Many-to-Many): attention's K^T sliced
// out of a QKV projection [8, 1, 24] (columns 8..15, 2 heads of 4), split
// into heads and transposed, is read in place by the MatMul: one block,
// one strided GEMM call. The view: 32 bytes in (offset 8), B transposed
// with ldb 24, batch stride 4; A contiguous (batch stride 32, lda 4).
// CHECK-LABEL: func @main
// CHECK: kiln.fused
// CHECK-NEXT: ^bb0
// CHECK-NEXT: kiln.slice
// CHECK-NEXT: kiln.reshape
// CHECK-NEXT: kiln.transpose
// CHECK-NEXT: kiln.matmul
// CHECK-NEXT: kiln.yield
// CHECK-NOT: kiln.fused
// LOWER-LABEL: func.func private @kiln_kernel_0(
// LOWER-NOT: linalg
// LOWER: %[[B:.*]] = arith.addi %{{.*}}, %c32
// LOWER: call @kiln_rt_matmul_strided(%{{.*}}, %[[B]], %{{.*}}, %c2_i64{{(_[0-9]+)?}}, %c8_i64{{(_[0-9]+)?}}, %c8_i64{{(_[0-9]+)?}}, %c4_i64{{(_[0-9]+)?}}, %c32_i64{{(_[0-9]+)?}}, %c4_i64{{(_[0-9]+)?}}, %c0_i64{{(_[0-9]+)?}}, %c4_i64{{(_[0-9]+)?}}, %c24_i64{{(_[0-9]+)?}}, %c1_i64{{(_[0-9]+)?}}, %c64_i64{{(_[0-9]+)?}}, %c8_i64{{(_[0-9]+)?}})
// LOWER-NOT: linalg
// LOWER: return
func.func @main(%qkv: tensor<8x1x24xf32>, %q: tensor<2x8x4xf32>) -> tensor<2x8x8xf32> {
  %0 = kiln.slice %qkv {starts = array<i64: 0, 0, 8>, steps = array<i64: 1, 1, 1>} : (tensor<8x1x24xf32>) -> tensor<8x1x8xf32>
  %1 = kiln.reshape %0 : (tensor<8x1x8xf32>) -> tensor<8x2x4xf32>
  %2 = kiln.transpose %1 {perm = array<i64: 1, 2, 0>} : (tensor<8x2x4xf32>) -> tensor<2x4x8xf32>
  %3 = kiln.matmul %q, %2 : (tensor<2x8x4xf32>, tensor<2x4x8xf32>) -> tensor<2x8x8xf32>
  return %3 : tensor<2x8x8xf32>
}

// -----
// Both operands through prologues (attention's Q and K^T from one QKV
// buffer): one block; A with lda 24 and batch stride 4, B as above.
// CHECK-LABEL: func @main
// CHECK: kiln.fused
// CHECK-NEXT: ^bb0
// CHECK-COUNT-2: kiln.slice
// CHECK: kiln.matmul
// CHECK-NEXT: kiln.yield
// CHECK-NOT: kiln.fused
// LOWER-LABEL: func.func private @kiln_kernel_0(
// LOWER-NOT: linalg
// LOWER: call @kiln_rt_matmul_strided(%{{.*}}, %{{.*}}, %{{.*}}, %c2_i64{{(_[0-9]+)?}}, %c8_i64{{(_[0-9]+)?}}, %c8_i64{{(_[0-9]+)?}}, %c4_i64{{(_[0-9]+)?}}, %c4_i64{{(_[0-9]+)?}}, %c24_i64{{(_[0-9]+)?}}, %c0_i64{{(_[0-9]+)?}}, %c4_i64{{(_[0-9]+)?}}, %c24_i64{{(_[0-9]+)?}}, %c1_i64{{(_[0-9]+)?}}, %c64_i64{{(_[0-9]+)?}}, %c8_i64{{(_[0-9]+)?}})
// LOWER: return
func.func @main(%qkv: tensor<8x1x24xf32>) -> tensor<2x8x8xf32> {
  %0 = kiln.slice %qkv {starts = array<i64: 0, 0, 0>, steps = array<i64: 1, 1, 1>} : (tensor<8x1x24xf32>) -> tensor<8x1x8xf32>
  %1 = kiln.reshape %0 : (tensor<8x1x8xf32>) -> tensor<8x2x4xf32>
  %2 = kiln.transpose %1 {perm = array<i64: 1, 0, 2>} : (tensor<8x2x4xf32>) -> tensor<2x8x4xf32>
  %3 = kiln.slice %qkv {starts = array<i64: 0, 0, 8>, steps = array<i64: 1, 1, 1>} : (tensor<8x1x24xf32>) -> tensor<8x1x8xf32>
  %4 = kiln.reshape %3 : (tensor<8x1x8xf32>) -> tensor<8x2x4xf32>
  %5 = kiln.transpose %4 {perm = array<i64: 1, 2, 0>} : (tensor<8x2x4xf32>) -> tensor<2x4x8xf32>
  %6 = kiln.matmul %2, %5 : (tensor<2x8x4xf32>, tensor<2x4x8xf32>) -> tensor<2x8x8xf32>
  return %6 : tensor<2x8x8xf32>
}

// -----
// Not a prologue: a chain with arithmetic (the Div), and a slice whose
// rows and columns are both strided (step 2 on the columns), which no
// GEMM operand layout reads: each MatMul stays a block of its own.
// CHECK-LABEL: func @main
// CHECK: kiln.fused
// CHECK: kiln.div
// CHECK: kiln.fused
// CHECK-NEXT: ^bb0
// CHECK-NEXT: kiln.matmul
// CHECK-NEXT: kiln.yield
// CHECK: kiln.fused
// CHECK-NEXT: ^bb0
// CHECK-NEXT: kiln.slice
// CHECK-NEXT: kiln.yield
// CHECK: kiln.fused
// CHECK-NEXT: ^bb0
// CHECK-NEXT: kiln.matmul
// CHECK-NEXT: kiln.yield
// LOWER-LABEL: func.func private @kiln_kernel_0(%{{.*}}: memref<4x8xf32>, %{{.*}}: memref<f32>
// LOWER: arith.divf
// LOWER-LABEL: func.func private @kiln_kernel_1(
// LOWER: call @kiln_rt_matmul(
func.func @main(%x: tensor<8x4xf32>, %y: tensor<4x8xf32>, %c: tensor<f32>, %z: tensor<8x16xf32>) -> (tensor<8x8xf32>, tensor<8x8xf32>) {
  %0 = kiln.transpose %y {perm = array<i64: 1, 0>} : (tensor<4x8xf32>) -> tensor<8x4xf32>
  %1 = kiln.div %0, %c : (tensor<8x4xf32>, tensor<f32>) -> tensor<8x4xf32>
  %2 = kiln.matmul %1, %y : (tensor<8x4xf32>, tensor<4x8xf32>) -> tensor<8x8xf32>
  %3 = kiln.slice %z {starts = array<i64: 0, 0>, steps = array<i64: 1, 2>} : (tensor<8x16xf32>) -> tensor<8x8xf32>
  %4 = kiln.matmul %2, %3 : (tensor<8x8xf32>, tensor<8x8xf32>) -> tensor<8x8xf32>
  return %2, %4 : tensor<8x8xf32>, tensor<8x8xf32>
}

// -----
// A Conv with a residual Add and Relu: one kernel, no generic: the conv
// kernel adds the residual (the block's input %x, passed as the 4th
// pointer) and clamps each tile as it stores it. The constant weights are
// packed for the GEMM (2 rows padded to 6 x K 2) and passed in packed.
// CHECK-LABEL: func @main
// CHECK: kiln.fused
// CHECK-NEXT: ^bb0
// CHECK-NEXT: kiln.conv
// CHECK-NEXT: kiln.add
// CHECK-NEXT: kiln.relu
// CHECK-NEXT: kiln.yield
// LOWER-LABEL: func.func private @kiln_kernel_0(
// LOWER-SAME: %[[X:.*]]: memref<1x2x4x4xf32>, %{{.*}}: memref<1x2x4x4xf32>, %{{.*}}: memref<20xf32>)
// LOWER-DAG: %[[LO:.*]] = arith.constant 0.000000e+00 : f32
// LOWER-DAG: %[[HI:.*]] = arith.constant 0x7F800000 : f32
// LOWER: %[[R:.*]] = memref.extract_aligned_pointer_as_index %[[X]]
// LOWER: call @kiln_rt_conv2d_packed(%{{.*}}, %{{.*}}, %{{.*}}, %[[R]], {{.*}}, %[[LO]], %[[HI]])
// LOWER-NOT: linalg.generic
// LOWER: return
// Here the residual is the conv's own input, which the kernel reads while
// it writes: the call does not offer the residual's buffer.
// LOWER-LABEL: func.func @kiln_main(
// LOWER: call @kiln_kernel_0(
// LOWER-NOT: kiln.in_place
// LOWER: return
func.func @main(%x: tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32> {
  %w = kiln.constant dense<1.0> : tensor<2x2x1x1xf32> : tensor<2x2x1x1xf32>
  %0 = kiln.conv %x, %w {strides = array<i64: 1, 1>, dilations = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, group = 1 : i64} : (tensor<1x2x4x4xf32>, tensor<2x2x1x1xf32>) -> tensor<1x2x4x4xf32>
  %1 = kiln.add %x, %0 : (tensor<1x2x4x4xf32>, tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  %2 = kiln.relu %1 : (tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  return %2 : tensor<1x2x4x4xf32>
}

// -----
// The same block with a 3x3 conv (im2col in the runtime): the call does
// not offer the residual's buffer.
// LOWER-LABEL: func.func @kiln_main(
// LOWER: call @kiln_kernel_0(
// LOWER-NOT: kiln.in_place
// LOWER: return
func.func @main(%x: tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32> {
  %w = kiln.constant dense<1.0> : tensor<2x2x3x3xf32> : tensor<2x2x3x3xf32>
  %0 = kiln.conv %x, %w {strides = array<i64: 1, 1>, dilations = array<i64: 1, 1>, pads = array<i64: 1, 1, 1, 1>, group = 1 : i64} : (tensor<1x2x4x4xf32>, tensor<2x2x3x3xf32>) -> tensor<1x2x4x4xf32>
  %1 = kiln.add %x, %0 : (tensor<1x2x4x4xf32>, tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  %2 = kiln.relu %1 : (tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  return %2 : tensor<1x2x4x4xf32>
}

// -----
// A 1x1 conv over one K block reads each residual element just before it
// stores the output there: the call lets the output (operand 2) take the
// residual's buffer (operand 1) where kiln-plan-arena finds it dead.
// LOWER-LABEL: func.func @kiln_main(
// LOWER: call @kiln_kernel_0(%{{.*}}) {kiln.in_place = array<i64: 2, 1>}
func.func @main(%x: tensor<1x2x4x4xf32>, %r: tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32> {
  %w = kiln.constant dense<1.0> : tensor<2x2x1x1xf32> : tensor<2x2x1x1xf32>
  %0 = kiln.conv %x, %w {strides = array<i64: 1, 1>, dilations = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, group = 1 : i64} : (tensor<1x2x4x4xf32>, tensor<2x2x1x1xf32>) -> tensor<1x2x4x4xf32>
  %1 = kiln.add %r, %0 : (tensor<1x2x4x4xf32>, tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  %2 = kiln.relu %1 : (tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  return %2 : tensor<1x2x4x4xf32>
}
