// RUN: kiln-opt %s -split-input-file -kiln-plan-arena | FileCheck %s

// Three 4 KiB buffers in a chain: %a dies when %c is made, so %c reuses
// %a's memory and the arena holds two buffers, not three. Pointers passed to
// kernels are computed as arena base + offset.
// CHECK-LABEL: func @kiln_main(
// CHECK-SAME: %[[ARENA:.*]]: memref<8192xi8>
// CHECK-SAME: kiln.arena_bytes = 8192 : i64, kiln.arena_unplanned_bytes = 12288 : i64
// CHECK: %[[OA:.*]] = arith.constant [[OFFA:[0-9]+]] : index
// CHECK: %[[A:.*]] = memref.view %[[ARENA]][%[[OA]]][] : memref<8192xi8> to memref<1024xf32>
// CHECK: %[[OB:.*]] = arith.constant [[OFFB:[0-9]+]] : index
// CHECK: memref.view %[[ARENA]][%[[OB]]][]
// CHECK: %[[OC:.*]] = arith.constant [[OFFA]] : index
// CHECK: %[[C:.*]] = memref.view %[[ARENA]][%[[OC]]][]
// CHECK: %[[BASE:.*]] = memref.extract_aligned_pointer_as_index %[[ARENA]]
// CHECK: %[[PTR:.*]] = arith.addi %[[BASE]], %[[OC]] : index
// CHECK: call @use(%[[PTR]])
// CHECK-NOT: memref.alloc
func.func private @use(index)
func.func @kiln_main(%in: memref<1024xf32>, %out: memref<1024xf32>) {
  %a = memref.alloc() : memref<1024xf32>
  linalg.copy ins(%in : memref<1024xf32>) outs(%a : memref<1024xf32>)
  %b = memref.alloc() : memref<1024xf32>
  linalg.copy ins(%a : memref<1024xf32>) outs(%b : memref<1024xf32>)
  %c = memref.alloc() : memref<1024xf32>
  linalg.copy ins(%b : memref<1024xf32>) outs(%c : memref<1024xf32>)
  %p = memref.extract_aligned_pointer_as_index %c : memref<1024xf32> -> index
  func.call @use(%p) : (index) -> ()
  linalg.copy ins(%c : memref<1024xf32>) outs(%out : memref<1024xf32>)
  return
}

// -----

// A call marked kiln.in_place = [2, 1] where %r dies: its output %y takes
// %r's buffer (same offset), so the arena holds two buffers, not three.
// CHECK-LABEL: func @kiln_main(
// CHECK-SAME: memref<8192xi8>
// CHECK-SAME: kiln.arena_bytes = 8192 : i64, kiln.arena_unplanned_bytes = 12288 : i64
// CHECK: %[[OR:.*]] = arith.constant [[OFFR:[0-9]+]] : index
// CHECK: %[[R:.*]] = memref.view %{{.*}}[%[[OR]]][]
// CHECK: %[[OX:.*]] = arith.constant [[OFFX:[0-9]+]] : index
// CHECK: %[[X:.*]] = memref.view %{{.*}}[%[[OX]]][]
// CHECK: %[[OY:.*]] = arith.constant [[OFFR]] : index
// CHECK: %[[Y:.*]] = memref.view %{{.*}}[%[[OY]]][]
// CHECK: call @conv_add(%[[X]], %[[R]], %[[Y]])
// CHECK-NOT: memref.alloc
func.func private @conv_add(memref<1024xf32>, memref<1024xf32>, memref<1024xf32>)
func.func @kiln_main(%in: memref<1024xf32>, %out: memref<1024xf32>) {
  %r = memref.alloc() : memref<1024xf32>
  linalg.copy ins(%in : memref<1024xf32>) outs(%r : memref<1024xf32>)
  %x = memref.alloc() : memref<1024xf32>
  linalg.copy ins(%in : memref<1024xf32>) outs(%x : memref<1024xf32>)
  %y = memref.alloc() : memref<1024xf32>
  func.call @conv_add(%x, %r, %y) {kiln.in_place = array<i64: 2, 1>} : (memref<1024xf32>, memref<1024xf32>, memref<1024xf32>) -> ()
  linalg.copy ins(%y : memref<1024xf32>) outs(%out : memref<1024xf32>)
  return
}

// -----

// The same call, but %r is read after it: %y keeps a buffer of its own.
// CHECK-LABEL: func @kiln_main(
// CHECK-SAME: memref<12288xi8>
// CHECK-SAME: kiln.arena_bytes = 12288 : i64
func.func private @conv_add(memref<1024xf32>, memref<1024xf32>, memref<1024xf32>)
func.func @kiln_main(%in: memref<1024xf32>, %out: memref<1024xf32>) {
  %r = memref.alloc() : memref<1024xf32>
  linalg.copy ins(%in : memref<1024xf32>) outs(%r : memref<1024xf32>)
  %x = memref.alloc() : memref<1024xf32>
  linalg.copy ins(%in : memref<1024xf32>) outs(%x : memref<1024xf32>)
  %y = memref.alloc() : memref<1024xf32>
  func.call @conv_add(%x, %r, %y) {kiln.in_place = array<i64: 2, 1>} : (memref<1024xf32>, memref<1024xf32>, memref<1024xf32>) -> ()
  linalg.copy ins(%r : memref<1024xf32>) outs(%out : memref<1024xf32>)
  return
}

// -----

// Buffers of different sizes are not shared.
// CHECK-LABEL: func @kiln_main(
// CHECK-SAME: kiln.arena_bytes = 10240 : i64
func.func private @conv_add2(memref<1024xf32>, memref<512xf32>, memref<1024xf32>)
func.func @kiln_main(%in: memref<1024xf32>, %out: memref<1024xf32>) {
  %r = memref.alloc() : memref<512xf32>
  %x = memref.alloc() : memref<1024xf32>
  linalg.copy ins(%in : memref<1024xf32>) outs(%x : memref<1024xf32>)
  %y = memref.alloc() : memref<1024xf32>
  func.call @conv_add2(%x, %r, %y) {kiln.in_place = array<i64: 2, 1>} : (memref<1024xf32>, memref<512xf32>, memref<1024xf32>) -> ()
  linalg.copy ins(%y : memref<1024xf32>) outs(%out : memref<1024xf32>)
  return
}

// -----

// The residual is also the call's first operand (a conv over its own
// residual): the output keeps a buffer of its own.
// CHECK-LABEL: func @kiln_main(
// CHECK-SAME: kiln.arena_bytes = 8192 : i64
func.func private @conv_add(memref<1024xf32>, memref<1024xf32>, memref<1024xf32>)
func.func @kiln_main(%in: memref<1024xf32>, %out: memref<1024xf32>) {
  %r = memref.alloc() : memref<1024xf32>
  linalg.copy ins(%in : memref<1024xf32>) outs(%r : memref<1024xf32>)
  %y = memref.alloc() : memref<1024xf32>
  func.call @conv_add(%r, %r, %y) {kiln.in_place = array<i64: 2, 1>} : (memref<1024xf32>, memref<1024xf32>, memref<1024xf32>) -> ()
  linalg.copy ins(%y : memref<1024xf32>) outs(%out : memref<1024xf32>)
  return
}
