// Microkernels of the runtime. The kiln_rt_* entry points are called by
// compiled models (signatures fixed by passes/LowerKilnToLinalg.cpp).
#ifndef KILN_RUNTIME_KERNELS_H
#define KILN_RUNTIME_KERNELS_H

#include <cstddef>
#include <cstdint>

#include <limits>

namespace kiln::rt {
/// Applied to each C tile as it is stored: C[i][j] = clamp(C[i][j] +
/// rowBias[i] + colBias[j] + residual[i][j], lo, hi) (any may be null;
/// default: no clamp).
struct Epilogue {
  const float *rowBias = nullptr;
  float lo = -std::numeric_limits<float>::infinity();
  float hi = std::numeric_limits<float>::infinity();
  const float *colBias = nullptr; // added to every row (Gemm's C of shape [N])
  const float *residual = nullptr; // same shape and ldc as C (a residual Add)
  /// An activation applied after the clamp: 0 none, 1 GELU (erf form,
  /// vgelu in simd.h).
  int act = 0;
  bool clamps() const {
    return lo > -std::numeric_limits<float>::infinity() || hi < std::numeric_limits<float>::infinity();
  }
};

/// C[M,N] = op(A)[M,K] * op(B)[K,N], row-major, parallel on the current
/// pool, then the epilogue (if any).
void sgemm(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, bool transA,
           const float *B, int64_t ldb, bool transB, float *C, int64_t ldc,
           const Epilogue *ep = nullptr, const float *packedA = nullptr,
           const float *packedB = nullptr, int64_t kBlock = 0, bool accumulate = false,
           const int64_t *bRows = nullptr, bool rowsOwned = false);
/// With packedA (packedB) set, A (B) is ignored: the operand is read from
/// its compile-time packing (kiln/gemm_layout.h). kBlock: the K block, 0
/// for gemm::kBlock(packedA); convolutions pass gemm::KC whether or not
/// their weights come packed, so both forms give the same bits.
/// accumulate: C += op(A) op(B) (then the epilogue) instead of C =; a
/// product split into calls at K-block boundaries, the epilogue on the
/// last, gives the same bits as one call (but for one row of unpacked A,
/// which one call runs as a GEMV).
/// bRows (B not transposed, not packed): row k of B starts at B +
/// bRows[k] rather than B + k * ldb (ldb ignored), each row read in place:
/// an implicit im2col (convIndirect's taps on phase planes).
/// rowsOwned: with several threads, each one writes a run of whole rows
/// of C (for a conv: output channels): the product is cut into more row
/// blocks for the threads, never into more column blocks than NC-wide. By
/// default a conv's product (A packed, B read in place) gives each thread
/// a run of columns (pixels) of every row instead: see sgemm.

/// Whether the AVX-512 kernels run: sgemm's wide tile, the direct window
/// kernels of kernels_avx512.cpp, the sparse kernels' 16-lane form
/// (x86-64 CPUs with AVX-512F and AVX512VL, unless KILN_NO_AVX512 is set
/// to a value other than 0). setWideKernels turns it
/// off or back on (if the CPU has it; tests run both) and returns the
/// previous setting; not to be called while kernels run.
bool wideKernels();
bool setWideKernels(bool on);
/// How Winograd convs share their work at several threads (winograd.cpp):
/// -1 as each conv's sizes say, 0 every phase over the threads, 1 each
/// thread a band of tile rows where there are enough. KILN_WINO_SPLIT (0
/// or 1) sets it at first use. setWinogradSplit returns the previous
/// setting; not to be called while kernels run (tests, comparisons).
int winogradSplit();
int setWinogradSplit(int mode);
/// Whether the running model's weights are read from memory on each run
/// (they outgrow the cache: weightsOutgrowCache), for this thread's
/// kiln_run (set and restored there; false elsewhere). sgemm then fetches
/// the next block of constant weights ahead (TilePrefetch::nextA).
/// setWeightsStreamed returns the previous setting.
bool weightsStreamed();
bool setWeightsStreamed(bool on);
/// Whether `bytes` of weights outgrow the last-level cache: more than a
/// quarter of the L3 the OS reports, capped at 32 MiB (a VM may report its
/// host's whole L3: 480 MiB on the Intel machine measured, where
/// ResNet-50's 100 MB of weights came from memory and MobileNetV2's 14 MB
/// did not). A quarter: the L3 also holds the arena and the input, other
/// processes share it, and AMD's is filled only by what L2 evicts. On a
/// Zen 5 VM with a 32 MiB L3, MobileNetV2's 7x7 convs found their weights
/// gone: with the next weights fetched ahead they took 0.82-0.90x the
/// time, the model 0.98x at 1 and 2 threads.
bool weightsOutgrowCache(std::size_t bytes);
/// Drops the regrouped copies of constant conv weights that conv2d keeps
/// (keyed by address, as another model may be loaded at the same
/// addresses): all of them, or those of weights in [lo, hi), a closed
/// model's library (kiln_model_close), leaving other models' copies.
void forgetGroupedWeights();
void forgetGroupedWeights(const void *lo, const void *hi);
/// Applies activation `act` (Epilogue::act) in place to rows x cols of c
/// (row stride ldc), with the same arithmetic for every element.
void actTile(float *c, int64_t ldc, int64_t rows, int64_t cols, int act);

/// Conv2d behind kiln_rt_conv2d*, with weights optionally packed (G == 1).
/// residual (may be 0): a tensor shaped as y added before the clamp.
/// channelsOwned: its GEMMs give each thread a run of output channels
/// rather than of pixels (sgemm's rowsOwned; kiln_rt_conv2d_packed_part).
void conv2d(intptr_t x, intptr_t w, bool packedW, intptr_t bias, intptr_t residual, intptr_t y,
            int64_t N, int64_t C, int64_t H, int64_t W, int64_t F, int64_t KH, int64_t KW, int64_t OH,
            int64_t OW, int64_t SH, int64_t SW, int64_t DH, int64_t DW, int64_t PT, int64_t PL,
            int64_t G, float lo, float hi, bool channelsOwned = false);
/// im2col of one image group xg [C, H, W]: row i of colp ([rows, OH*OW])
/// is row which[i] (all rows in order if which is null) of the matrix
/// whose row (c*KH + kh)*KW + kw holds the input each output reads
/// through tap (kh, kw) of channel c (zeros in the padding).
void im2col(const float *xg, int64_t rows, const int32_t *which, float *colp, int64_t H, int64_t W,
            int64_t KH, int64_t KW, int64_t OH, int64_t OW, int64_t SH, int64_t SW, int64_t DH,
            int64_t DW, int64_t PT, int64_t PL);
} // namespace kiln::rt

extern "C" {
/// Profiling hooks around every kernel call of a compiled model (runtime.cpp).
void kiln_rt_kernel_begin(int64_t id);
void kiln_rt_kernel_end(int64_t id);
/// The loop nests of generated code on the context's thread pool
/// (thread_pool.cpp; emitted by kiln-parallelize-kernels): fn(ctx, begin,
/// end) over consecutive ranges that cover [0, n) once, serially without a
/// pool or inside another parallel loop.
void kiln_rt_parallel_for(int64_t n, void (*fn)(void *, int64_t, int64_t), void *ctx);
void kiln_rt_gemm(intptr_t a, intptr_t b, intptr_t c, intptr_t y, int64_t M, int64_t N, int64_t K,
                  int64_t transA, int64_t transB, float alpha, float beta, int64_t cRows,
                  int64_t cCols);
void kiln_rt_matmul(intptr_t a, intptr_t b, intptr_t y, int64_t batch, int64_t M, int64_t N,
                    int64_t K, int64_t strideA, int64_t strideB);
/// Batched MatMul over strided operands: for each batch i,
/// Y_i[M,N] = op(A_i)[M,K] * op(B_i)[K,N] with A_i = a + i*strideA (leading
/// dimension lda, transposed if transA), likewise B, and Y_i = y + i*strideY
/// with row stride ldy. Fusion uses it to read transposed or sliced
/// operands and to write each result straight to its transposed place.
void kiln_rt_matmul_strided(intptr_t a, intptr_t b, intptr_t y, int64_t batch, int64_t M, int64_t N,
                            int64_t K, int64_t strideA, int64_t lda, int64_t transA, int64_t strideB,
                            int64_t ldb, int64_t transB, int64_t strideY, int64_t ldy);
void kiln_rt_conv2d(intptr_t x, intptr_t w, intptr_t bias, intptr_t y, int64_t N, int64_t C,
                    int64_t H, int64_t W, int64_t F, int64_t KH, int64_t KW, int64_t OH, int64_t OW,
                    int64_t SH, int64_t SW, int64_t DH, int64_t DW, int64_t PT, int64_t PL,
                    int64_t G);
/// kiln_rt_conv2d with a fused activation: every output is clamped to
/// [lo, hi] (Relu: [0, inf], Clip: [min, max]) as it is stored.
void kiln_rt_conv2d_act(intptr_t x, intptr_t w, intptr_t bias, intptr_t y, int64_t N, int64_t C,
                        int64_t H, int64_t W, int64_t F, int64_t KH, int64_t KW, int64_t OH,
                        int64_t OW, int64_t SH, int64_t SW, int64_t DH, int64_t DW, int64_t PT,
                        int64_t PL, int64_t G, float lo, float hi);
/// kiln_rt_conv2d_act with G == 1 and the weights packed at compile time as
/// GEMM operand A ([F, C*KH*KW], kiln/gemm_layout.h); residual (0 if
/// none, else shaped as y) is added before the clamp: a fused residual Add.
void kiln_rt_conv2d_packed(intptr_t x, intptr_t wp, intptr_t bias, intptr_t residual, intptr_t y,
                           int64_t N, int64_t C, int64_t H, int64_t W, int64_t F, int64_t KH,
                           int64_t KW, int64_t OH, int64_t OW, int64_t SH, int64_t SW, int64_t DH,
                           int64_t DW, int64_t PT, int64_t PL, float lo, float hi);
/// Batched Y_i = clamp(op(A_i) * B + bias, lo, hi) with B (K x N, shared by
/// the batch) packed at compile time as GEMM operand B; bias ([N]) may be 0.
/// Strides and leading dimensions as kiln_rt_matmul_strided.
void kiln_rt_matmul_packed(intptr_t a, intptr_t bp, intptr_t y, int64_t batch, int64_t M, int64_t N,
                           int64_t K, int64_t strideA, int64_t lda, int64_t transA, int64_t strideY,
                           int64_t ldy, intptr_t bias, float lo, float hi);
/// kiln_rt_conv2d_packed for a conv whose output the next kernels read
/// by channels (a depthwise conv, a pool): partition 1 gives each thread
/// a run of whole output channels, so they find them in their own core's
/// cache; 0 is kiln_rt_conv2d_packed (runs of pixels of every channel,
/// for a next conv that reads by pixels).
void kiln_rt_conv2d_packed_part(intptr_t x, intptr_t wp, intptr_t bias, intptr_t residual, intptr_t y,
                                int64_t N, int64_t C, int64_t H, int64_t W, int64_t F, int64_t KH,
                                int64_t KW, int64_t OH, int64_t OW, int64_t SH, int64_t SW, int64_t DH,
                                int64_t DW, int64_t PT, int64_t PL, float lo, float hi, int64_t partition);
/// kiln_rt_matmul_packed followed by an activation on each tile as it is
/// stored (act: 1 = GELU, erf form), while the tile is in cache.
void kiln_rt_matmul_packed_act(intptr_t a, intptr_t bp, intptr_t y, int64_t batch, int64_t M, int64_t N,
                               int64_t K, int64_t strideA, int64_t lda, int64_t transA, int64_t strideY,
                               int64_t ldy, intptr_t bias, float lo, float hi, int64_t act);
/// kiln_rt_conv2d_packed with the weights in BCR sparse form
/// (kiln/bcr_layout.h; sparse.cpp).
void kiln_rt_conv2d_bcr(intptr_t x, intptr_t blob, intptr_t bias, intptr_t residual, intptr_t y,
                        int64_t N, int64_t C, int64_t H, int64_t W, int64_t F, int64_t KH, int64_t KW,
                        int64_t OH, int64_t OW, int64_t SH, int64_t SW, int64_t DH, int64_t DW,
                        int64_t PT, int64_t PL, float lo, float hi);
/// 3x3, stride 1, undilated, ungrouped conv by Winograd F(m x m, 3 x 3)
/// (m = 2 or 4) with weights transformed and packed by
/// kiln::winograd::transformWeights (winograd.cpp); bias, residual and
/// clamp as kiln_rt_conv2d_packed. (_ft: the weights packed as the
/// products' A, filters by tiles; the name changed with that layout in
/// session 23, so that a model compiled for the old one fails to load
/// rather than compute wrong values.)
void kiln_rt_conv2d_winograd_ft(intptr_t x, intptr_t up, intptr_t bias, intptr_t residual, intptr_t y, int64_t N,
                                int64_t C, int64_t H, int64_t W, int64_t F, int64_t OH, int64_t OW, int64_t PT,
                                int64_t PL, int64_t m, float lo, float hi);
/// A conv chain, one fusion block: t = clamp(conv3x3(x) + bias, lo, hi) as
/// kiln_rt_conv2d_winograd_ft (up: its weights so transformed), then y =
/// clamp(conv1x1(t, w2) + bias2 + residual, lo2, hi2), w2 [F2, F] packed
/// as GEMM operand A. Each band of t's rows is multiplied by w2 while in
/// cache; t is never stored whole. bias, bias2, residual may be 0, and
/// residual may be y.
void kiln_rt_conv2d_winograd_chain(intptr_t x, intptr_t up, intptr_t bias, intptr_t w2, intptr_t bias2,
                                   intptr_t residual, intptr_t y, int64_t N, int64_t C, int64_t H, int64_t W,
                                   int64_t F, int64_t OH, int64_t OW, int64_t PT, int64_t PL, int64_t m, float lo,
                                   float hi, int64_t F2, float lo2, float hi2);
/// 2-d max pooling of float32 NCHW planes (any window, strides,
/// dilations; pads and ceil_mode through PT/PL and OH/OW: windows may read
/// past the input, which counts as -inf).
void kiln_rt_maxpool2d(intptr_t x, intptr_t y, int64_t N, int64_t C, int64_t H, int64_t W, int64_t KH,
                       int64_t KW, int64_t OH, int64_t OW, int64_t SH, int64_t SW, int64_t DH, int64_t DW,
                       int64_t PT, int64_t PL);
/// Softmax (log: LogSoftmax) of each row of x [rows, cols] (rowwise.cpp).
void kiln_rt_softmax(intptr_t x, intptr_t y, int64_t rows, int64_t cols, int64_t log);
/// LayerNormalization of each row: (x - mean) / sqrt(var + eps) * scale[j]
/// (+ bias[j]; bias may be 0).
/// y[r] = scale * (the sum of row r of x [rows, cols]): ReduceSum (scale 1)
/// and ReduceMean (1 / cols) over trailing axes, e.g. a global average
/// pool's 7x7 planes.
void kiln_rt_row_sums(intptr_t x, intptr_t y, int64_t rows, int64_t cols, float scale);
void kiln_rt_layernorm(intptr_t x, intptr_t scale, intptr_t bias, intptr_t y, int64_t rows, int64_t cols,
                       float eps);
/// kiln_rt_matmul_packed with B in BCR sparse form: the blob holds B^T
/// (N x K, one output feature per row).
void kiln_rt_matmul_bcr(intptr_t a, intptr_t blob, intptr_t y, int64_t batch, int64_t M, int64_t N,
                        int64_t K, int64_t strideA, int64_t lda, int64_t transA, int64_t strideY,
                        int64_t ldy, intptr_t bias, float lo, float hi);
/// kiln_rt_matmul_bcr, then the activation `act` (as in
/// kiln_rt_matmul_packed_act) on each block of output rows as it is stored.
void kiln_rt_matmul_bcr_act(intptr_t a, intptr_t blob, intptr_t y, int64_t batch, int64_t M, int64_t N,
                            int64_t K, int64_t strideA, int64_t lda, int64_t transA, int64_t strideY,
                            int64_t ldy, intptr_t bias, float lo, float hi, int64_t act);
void kiln_rt_conv_transpose2d(intptr_t x, intptr_t w, intptr_t bias, intptr_t y, int64_t N,
                              int64_t C, int64_t H, int64_t W, int64_t F, int64_t KH, int64_t KW,
                              int64_t OH, int64_t OW, int64_t SH, int64_t SW, int64_t DH,
                              int64_t DW, int64_t PT, int64_t PL, int64_t G);
}

#endif
