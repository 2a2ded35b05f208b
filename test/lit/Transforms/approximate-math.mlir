// RUN: kiln-opt %s -kiln-approximate-math | FileCheck %s

// f32 erf and tanh become arithmetic (polynomials), scalar and vector.
// CHECK-LABEL: func.func @erf_tanh
// CHECK-NOT: math.erf
// CHECK-NOT: math.tanh
// CHECK: arith.mulf
// CHECK: return
func.func @erf_tanh(%x: f32, %v: vector<8xf32>) -> (f32, vector<8xf32>) {
  %0 = math.erf %x : f32
  %1 = math.tanh %v : vector<8xf32>
  return %0, %1 : f32, vector<8xf32>
}

// Other functions, and other element types, keep their exact lowering.
// CHECK-LABEL: func.func @kept
// CHECK: math.exp
// CHECK: math.log
// CHECK: math.erf {{.*}} : f64
func.func @kept(%x: f32, %d: f64) -> (f32, f32, f64) {
  %0 = math.exp %x : f32
  %1 = math.log %x : f32
  %2 = math.erf %d : f64
  return %0, %1, %2 : f32, f32, f64
}
