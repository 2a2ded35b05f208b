// RUN: kiln-opt %s -kiln-parallelize-kernels | FileCheck %s
// RUN: kiln-opt %s -kiln-parallelize-kernels=min-work=1000000 | FileCheck %s --check-prefix=NONE

#id3 = affine_map<(d0, d1, d2) -> (d0, d1, d2)>
#tr3 = affine_map<(d0, d1, d2) -> (d1, d0, d2)>
#row = affine_map<(d0, d1) -> (d0, d1)>
#col = affine_map<(d0, d1) -> (d1)>
#red = affine_map<(d0, d1) -> (d1)>

// A transpose with a bias over 12 x 128 x 64: the two leading loops
// (12 x 128 >= 32 needs both) become one range [0, 1536) on the pool; the
// body rebuilds both buffers from ctx slots, delinearises the index and
// keeps the last loop serial inside.
// CHECK-LABEL: func.func private @kiln_kernel_0(
// CHECK-NOT: linalg.generic
// CHECK: %[[CTX:.*]] = llvm.alloca %{{.*}} x i64
// CHECK: memref.extract_aligned_pointer_as_index %arg0
// CHECK: llvm.store
// CHECK: memref.extract_aligned_pointer_as_index %arg1
// CHECK: llvm.store
// CHECK: %[[FN:.*]] = constant @kiln_kernel_0_par0 : (!llvm.ptr, i64, i64) -> ()
// CHECK: %[[N:.*]] = arith.constant 1536 : i64
// CHECK: call @kiln_rt_parallel_for(%[[N]], %[[FN]], %[[CTX]])
// CHECK-LABEL: func.func private @kiln_kernel_0_par0(%arg0: !llvm.ptr, %arg1: i64, %arg2: i64)
// CHECK: llvm.load
// CHECK: builtin.unrealized_conversion_cast {{.*}} to memref<128x12x64xf32>
// CHECK: builtin.unrealized_conversion_cast {{.*}} to memref<12x128x64xf32>
// CHECK: scf.for %[[L:.*]] = %{{.*}} to %{{.*}} step
// CHECK: arith.remui %[[L]], %c128
// CHECK: arith.divui %[[L]], %c128
// CHECK: scf.for
// CHECK: arith.addf
// CHECK: memref.store
func.func private @kiln_kernel_0(%x: memref<128x12x64xf32>, %y: memref<12x128x64xf32>) {
  %c = arith.constant 0.5 : f32
  linalg.generic {indexing_maps = [#tr3, #id3], iterator_types = ["parallel", "parallel", "parallel"]}
      ins(%x : memref<128x12x64xf32>) outs(%y : memref<12x128x64xf32>) {
  ^bb0(%a: f32, %o: f32):
    %s = arith.addf %a, %c : f32
    linalg.yield %s : f32
  }
  return
}

// Must not fire: too little work; a leading reduction; an in-place
// transpose (the input reads the output's buffer through another map); a
// function that is not a kernel.
// CHECK-LABEL: func.func private @kiln_kernel_1(
// CHECK-NOT: kiln_rt_parallel_for
// CHECK: linalg.generic
// CHECK: linalg.generic
// CHECK: linalg.generic
// CHECK: return
func.func private @kiln_kernel_1(%s: memref<8x8xf32>, %t: memref<8x8xf32>, %big: memref<1024x768xf32>,
                                 %v: memref<768xf32>, %sq: memref<512x512xf32>) {
  linalg.generic {indexing_maps = [#row, #row], iterator_types = ["parallel", "parallel"]}
      ins(%s : memref<8x8xf32>) outs(%t : memref<8x8xf32>) {
  ^bb0(%a: f32, %o: f32):
    linalg.yield %a : f32
  }
  linalg.generic {indexing_maps = [#row, #red], iterator_types = ["reduction", "parallel"]}
      ins(%big : memref<1024x768xf32>) outs(%v : memref<768xf32>) {
  ^bb0(%a: f32, %o: f32):
    %r = arith.addf %a, %o : f32
    linalg.yield %r : f32
  }
  %tr = memref.transpose %sq (d0, d1) -> (d1, d0) : memref<512x512xf32> to memref<512x512xf32, strided<[1, 512]>>
  linalg.generic {indexing_maps = [#row, #row], iterator_types = ["parallel", "parallel"]}
      ins(%tr : memref<512x512xf32, strided<[1, 512]>>) outs(%sq : memref<512x512xf32>) {
  ^bb0(%a: f32, %o: f32):
    linalg.yield %a : f32
  }
  return
}
// CHECK-LABEL: func.func @kiln_main(
// CHECK-NOT: kiln_rt_parallel_for
// CHECK: linalg.copy
func.func @kiln_main(%a: memref<1024x768xf32>, %b: memref<1024x768xf32>) {
  linalg.copy ins(%a : memref<1024x768xf32>) outs(%b : memref<1024x768xf32>)
  return
}

// NONE-NOT: kiln_rt_parallel_for
// NONE-NOT: _par0
