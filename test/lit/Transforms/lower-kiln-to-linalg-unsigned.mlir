// RUN: kiln-opt %s -kiln-lower-to-linalg | FileCheck %s

// Unsigned integers (ui8, ui16, ...) are stored signless; the lowering picks
// the unsigned arith ops from the kiln-level type. Shifts by the width or
// more give 0 (numpy), not LLVM poison.
// CHECK-LABEL: func @kiln_main(%arg0: memref<4xi8>, %arg1: memref<4xi8>, %arg2: memref<4xi16>, %arg3: memref<4xi8>, %arg4: memref<4xi8>, %arg5: memref<4xi1>, %arg6: memref<4xf32>, %arg7: memref<4xi16>, %arg8: memref<4xi8>)
// CHECK: arith.divui %{{.*}}, %{{.*}} : i8
// CHECK: arith.cmpi ult, %{{.*}}, %{{.*}} : i8
// CHECK: arith.uitofp %{{.*}} : i8 to f32
// CHECK: arith.shrui %{{.*}}, %{{.*}} : i16
// CHECK: arith.cmpi ult, %{{.*}}, %c16_i16 : i16
// CHECK: arith.select
// Signed i8 keeps the signed forms.
// CHECK: arith.maxsi %{{.*}}, %{{.*}} : i8
// CHECK-NOT: divsi
func.func @main(%x: tensor<4xui8>, %y: tensor<4xui8>, %s: tensor<4xui16>, %a: tensor<4xi8>) -> (tensor<4xui8>, tensor<4xi1>, tensor<4xf32>, tensor<4xui16>, tensor<4xi8>) {
  %0 = kiln.div %x, %y : (tensor<4xui8>, tensor<4xui8>) -> tensor<4xui8>
  %1 = kiln.less %x, %y : (tensor<4xui8>, tensor<4xui8>) -> tensor<4xi1>
  %2 = kiln.cast %x : (tensor<4xui8>) -> tensor<4xf32>
  %3 = kiln.bit_shift %s, %s {left = false} : (tensor<4xui16>, tensor<4xui16>) -> tensor<4xui16>
  %4 = kiln.max %a, %a : (tensor<4xi8>, tensor<4xi8>) -> tensor<4xi8>
  return %0, %1, %2, %3, %4 : tensor<4xui8>, tensor<4xi1>, tensor<4xf32>, tensor<4xui16>, tensor<4xi8>
}
