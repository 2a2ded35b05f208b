// RUN: kiln-opt %s -kiln-approximate-math | FileCheck %s

// f32 exp, erf and tanh become arithmetic (polynomials), scalar and vector.
// CHECK-LABEL: func.func @erf_tanh_exp
// CHECK-NOT: math.erf
// CHECK-NOT: math.tanh
// CHECK-NOT: math.exp
// CHECK: arith.mulf
// CHECK: return
func.func @erf_tanh_exp(%x: f32, %v: vector<8xf32>) -> (f32, vector<8xf32>, f32) {
  %0 = math.erf %x : f32
  %1 = math.tanh %v : vector<8xf32>
  %2 = math.exp %x : f32
  return %0, %1, %2 : f32, vector<8xf32>, f32
}

// Other functions, and other element types, keep their exact lowering.
// CHECK-LABEL: func.func @kept
// CHECK: math.log
// CHECK: math.sin
// CHECK: math.erf {{.*}} : f64
// CHECK: math.exp {{.*}} : f64
func.func @kept(%x: f32, %d: f64) -> (f32, f32, f64, f64) {
  %0 = math.log %x : f32
  %1 = math.sin %x : f32
  %2 = math.erf %d : f64
  %3 = math.exp %d : f64
  return %0, %1, %2, %3 : f32, f32, f64, f64
}
