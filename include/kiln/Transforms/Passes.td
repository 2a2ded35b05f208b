// Passes of the kiln pipeline (assembled in lib/Pipeline/Pipeline.cpp).
#ifndef KILN_PASSES
#define KILN_PASSES

include "mlir/Pass/PassBase.td"

def GraphRewrite : Pass<"kiln-rewrite", "mlir::func::FuncOp"> {
  let summary = "Rewrite the graph by algebraic properties when it lowers the cost";
  let description = [{
    DNNFusion's mathematical rewriting (associative, distributive and
    commutative rules) and the classic inference rewrites (BatchNorm and
    per-channel Mul/Add folded into Conv weights, MatMul + bias to Gemm,
    Transpose/Reshape chains collapsed, constant subgraphs folded). Each
    candidate's saving is the cost (FLOPs, then bytes) of the ops it removes
    minus those it adds, from MappingTypeOpInterface::getCost; the largest
    saving is applied first, until none lowers the cost. The rules applied
    are recorded in the function's `kiln.rewrites` attribute.
  }];
  let statistics = [Statistic<"numRewrites", "rewrites", "Rewrites applied">];
  let dependentDialects = ["::kiln::KilnDialect"];
}

def PlanFusion : Pass<"kiln-plan-fusion", "mlir::func::FuncOp"> {
  let summary = "Plan fusion blocks (DNNFusion) and wrap each in a kiln.fused op";
  let description = [{
    Seeds, growth toward consumers and producers, the fusion table's
    fuse/profile/no decisions, a roofline cost model for "profile" cells and
    the code generator's constraints (passes/PlanFusion.cpp says which).
    Each block becomes a `kiln.fused` op whose region holds its ops; the
    lowering emits one kernel function per block.
  }];
  let options = [
    Option<"noFusion", "no-fusion", "bool", "false", "One block per op (the unfused baseline)">,
    Option<"maxOps", "max-ops", "int64_t", "64", "Most ops in one block (register-pressure bound)">,
    Option<"convChains", "conv-chains", "bool", "false",
           "Fuse a Winograd 3x3 conv block with the 1x1 conv block after it (kiln's extension of the "
           "fusion table: a profile cell where the table says no; CPU targets)">,
    Option<"winograd", "winograd", "std::string", "\"auto\"",
           "The lowering's Winograd mode (auto, off, 2, 4): which convs can head a chain">,
  ];
  let statistics = [Statistic<"numBlocks", "blocks", "Fusion blocks (kernels)">,
                    Statistic<"numChains", "chains", "Conv chains fused">,
                    Statistic<"numProfiled", "profiled", "Profile cells decided by measurement">,
                    Statistic<"numModelled", "modelled", "Profile cells decided by the cost model">];
  let dependentDialects = ["::kiln::KilnDialect"];
}

def DetectSparsity : Pass<"kiln-detect-sparsity", "mlir::ModuleOp"> {
  let summary = "Find BCR structure in constant weights and choose sparse or dense code per layer";
  let description = [{
    For every layer whose constant weights the lowering packs (ungrouped
    Conv, MatMul/Gemm with a constant B), the weight matrix W[rows, cols]
    (y = W x) is analysed for BCR (block-based column-row) sparsity: exact
    zeros, and the largest candidate block (4-32 rows x 4-32 columns) in
    which every block's non-zeros fill a kept-rows x kept-columns rectangle.
    The layer is annotated with `kiln.bcr` = {sparsity, block, exact,
    sparse, dense_bytes, sparse_bytes, speedup}; kiln-lower-to-linalg then
    packs the BCR blob (kiln/bcr_layout.h) and calls the sparse kernels
    where `sparse` is true.

    mode=auto: layers with at least 30% zeros are packed and lowered sparse
    when the cost model of the sparse kernel (kiln::bcr::estimate, for
    `lanes`-wide vectors; kiln-compile passes 16 for x86-64, whose runtime
    takes AVX-512 where the CPU has it, 8 for aarch64) predicts at least
    1.15x over the dense GEMM (or its Winograd form). mode=bcr:RxC: every layer with zeros
    is lowered sparse, blocked RxC, without the cost model. mode=off:
    nothing is annotated (all dense).
  }];
  let options = [Option<"mode", "mode", "std::string", "\"auto\"", "auto, off or bcr:RxC">,
                 Option<"winograd", "winograd", "std::string", "\"auto\"",
                        "the lowering's --winograd mode: auto compares sparse code with the "
                        "Winograd form of 3x3 convs that take it">,
                 Option<"lanes", "lanes", "int", "8",
                        "vector lanes of the target's sparse register tile in the cost model: "
                        "8 (AVX2, NEON) or 16 (AVX-512)">];
  let statistics = [Statistic<"numSparse", "sparse-layers", "Layers lowered sparse">];
  let dependentDialects = ["::kiln::KilnDialect"];
}

def LowerKilnToLinalg : Pass<"kiln-lower-to-linalg", "mlir::ModuleOp"> {
  let summary = "Lower kiln graph ops to buffers: linalg on memrefs and runtime kernel calls";
  let description = [{
    Rewrites the tensor-level entry function `@main` into `@kiln_main`, whose
    arguments are the input buffers followed by the output buffers. Every
    intermediate tensor gets a `memref.alloc` (later placed in the arena by
    kiln-plan-arena); Reorganize ops become views; elementwise, pooling,
    reduction and data-movement ops become linalg ops on memrefs; Conv,
    ConvTranspose, Gemm and MatMul call the runtime's microkernels
    (`kiln_rt_*`), which are tuned per target and use its thread pool.
  }];
  let dependentDialects = ["mlir::linalg::LinalgDialect", "mlir::memref::MemRefDialect",
                           "mlir::arith::ArithDialect", "mlir::math::MathDialect",
                           "mlir::func::FuncDialect", "mlir::scf::SCFDialect"];
  let options = [
    Option<"portable", "portable", "bool", /*default=*/"false",
           "Lower Conv, ConvTranspose, Gemm and MatMul to linalg loop nests "
           "(one generic over the output) instead of runtime microkernel calls, "
           "for device targets (OpenCL)">,
    Option<"winograd", "winograd", "std::string", /*default=*/"\"auto\"",
           "3x3 stride-1 convs with constant weights by Winograd F(m x m, 3 x 3): "
           "auto (m chosen per layer), off (im2col + GEMM), 2 or 4 (that m for every such conv)">
  ];
}

def ExtractWeights : Pass<"kiln-extract-weights", "mlir::ModuleOp"> {
  let summary = "Move large constant buffers into one weights blob";
  let description = [{
    Every constant memref.global of at least `min-bytes` bytes is appended
    (64-byte aligned) to one blob, recorded as the module's `kiln.weights`
    dense resource; its uses become `memref.view`s of the external global
    `kiln_model_weights`. The target writes the blob straight into a data
    section of the library, so weights never pass through LLVM IR constants
    (ResNet-50: 100 MB of weights, compile time and memory stay small).
  }];
  let options = [Option<"minBytes", "min-bytes", "int64_t", "1024",
                        "Smallest constant (in bytes) moved into the blob">];
  let dependentDialects = ["mlir::memref::MemRefDialect", "mlir::arith::ArithDialect"];
}

def ParallelizeKernels : Pass<"kiln-parallelize-kernels", "mlir::ModuleOp"> {
  let summary = "Run the large loop nests of generated kernels on the runtime's thread pool";
  let description = [{
    CPU targets. Each linalg op at the top level of a kernel function
    (`@kiln_kernel_N`) with static loop ranges, at least `min-work`
    iterations and a leading parallel loop is lowered to `scf.parallel`,
    and the leading parallel loops (the fewest whose product reaches 32
    iterations, their index linearised) are outlined into a function
    `@kiln_kernel_N_parK(ctx, begin, end)` that runs that range of them.
    The kernel calls `kiln_rt_parallel_for(n, fn, ctx)`, which cuts [0, n)
    into consecutive ranges on the context's thread pool. `ctx` holds the
    captured values, one 8-byte slot each: memrefs as their aligned
    pointer (the outlined function rebuilds the descriptor from the static
    type), scalars as themselves. Pure ops the body needs (constants,
    views, globals) are cloned into it instead of captured.

    Not parallelised: ops whose outputs are not written one element per
    leading index (the index must be a result of every output's map), ops
    that read an output's buffer through another map, and nests of
    memrefs the kernel did not get as arguments. Loops written as
    `scf.for` by the lowering (scatters, cumulative sums, top-k) stay
    serial.
  }];
  let options = [Option<"minWork", "min-work", "int64_t", "16384",
                        "fewest loop iterations (the product of all loop ranges) worth a fork-join">];
  let statistics = [Statistic<"numParallel", "parallel-loops", "Loop nests run on the thread pool">];
  let dependentDialects = ["mlir::scf::SCFDialect", "mlir::LLVM::LLVMDialect", "mlir::func::FuncDialect"];
}

def ApproximateMath : Pass<"kiln-approximate-math", "mlir::ModuleOp"> {
  let summary = "Replace f32 math.exp, math.erf and math.tanh with polynomial approximations";
  let description = [{
    MLIR's own polynomial approximations (math dialect transforms) for exp,
    erf and tanh on f32, scalar or vector: plain arithmetic the LLVM loop
    vectoriser can widen, where a libm call (expf, erff, tanhf) would run
    one element at a time. Softmax (exp), GELU (erf) and tanh-GELU are the
    users. The exp approximation keeps inf, -inf (0), overflow and NaN.
    Other functions keep their exact lowering.
  }];
  let dependentDialects = ["mlir::math::MathDialect", "mlir::arith::ArithDialect",
                           "mlir::vector::VectorDialect"];
}

def PlanArena : Pass<"kiln-plan-arena", "mlir::ModuleOp"> {
  let summary = "Place intermediate buffers in one arena, reusing memory by liveness";
  let description = [{
    Replaces every top-level `memref.alloc` of `@kiln_main` with a
    `memref.view` into a new first argument, the arena (an i8 buffer the
    runtime allocates per context). Offsets are assigned first-fit in op
    order, so buffers whose live ranges do not overlap share memory. The
    arena size is recorded as the `kiln.arena_bytes` attribute.
  }];
  let dependentDialects = ["mlir::memref::MemRefDialect", "mlir::arith::ArithDialect"];
}

#endif
