// RUN: kiln-opt %s -kiln-extract-weights=min-bytes=64 | FileCheck %s

// The 256-byte constant moves into the weights blob (a view of the external
// kiln_model_weights); the 16-byte one stays an LLVM constant.
// CHECK: module attributes {kiln.weights = dense_resource<kiln_weights> : tensor<256xi8>}
// CHECK: memref.global constant @kiln_model_weights : memref<256xi8>
// CHECK-NOT: memref.global "private" constant @big
// CHECK: memref.global "private" constant @small : memref<4xf32>
// CHECK-LABEL: func @kiln_main
// CHECK: %[[W:.*]] = memref.get_global @kiln_model_weights : memref<256xi8>
// CHECK: %[[OFF:.*]] = arith.constant 0 : index
// CHECK: memref.view %[[W]][%[[OFF]]][] : memref<256xi8> to memref<64xf32>
// CHECK: memref.get_global @small
// The blob holds the splat expanded: 64 x 2.0f (after the 4-byte alignment header).
// CHECK: kiln_weights: "0x40000000[[BLOB:(00000040)+]]"{{$}}
memref.global "private" constant @big : memref<64xf32> = dense<2.0> {alignment = 64 : i64}
memref.global "private" constant @small : memref<4xf32> = dense<1.0> {alignment = 64 : i64}
func.func @kiln_main(%out: memref<64xf32>, %out2: memref<4xf32>) {
  %0 = memref.get_global @big : memref<64xf32>
  linalg.copy ins(%0 : memref<64xf32>) outs(%out : memref<64xf32>)
  %1 = memref.get_global @small : memref<4xf32>
  linalg.copy ins(%1 : memref<4xf32>) outs(%out2 : memref<4xf32>)
  return
}
