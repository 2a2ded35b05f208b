// Tests of kiln_rt_conv2d and kiln_rt_conv_transpose2d (ONNX Conv and
// ConvTranspose on NCHW tensors) against naive direct loops: every code path
// (1x1 without im2col, im2col + GEMM, depthwise) with strides, dilations,
// asymmetric pads, groups, with and without bias, serial and on a pool.
#include "kernels.h"
#include "kiln/bcr_layout.h"
#include "kiln/gemm_layout.h"
#include "kiln/winograd_layout.h"
#include "test_util.h"
#include "thread_pool.h"

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <limits>

using kiln::test::GuardedBuffer;
using kiln::test::mismatches;
using kiln::test::PoolScope;
using kiln::test::randomFloats;
using kiln::test::Reference;

namespace {

/// Shape and attributes of one convolution. Pads are top, left, bottom,
/// right; the kernels take only top/left and infer the rest from OH/OW.
struct ConvCase {
  const char *name;
  int64_t N, C, H, W, F, KH, KW, SH, SW, DH, DW, PT, PL, PB, PR, G;
  /// ConvTranspose only: output_padding.
  int64_t OPH = 0, OPW = 0;

  int64_t convOH() const { return (H + PT + PB - DH * (KH - 1) - 1) / SH + 1; }
  int64_t convOW() const { return (W + PL + PR - DW * (KW - 1) - 1) / SW + 1; }
  int64_t transposeOH() const { return (H - 1) * SH - PT - PB + DH * (KH - 1) + 1 + OPH; }
  int64_t transposeOW() const { return (W - 1) * SW - PL - PR + DW * (KW - 1) + 1 + OPW; }
};

/// Conv: x[N,C,H,W], w[F,C/G,KH,KW], bias[F] or null -> y[N,F,OH,OW].
Reference naiveConv(const ConvCase &c, const float *x, const float *w, const float *bias) {
  int64_t OH = c.convOH(), OW = c.convOW(), Cg = c.C / c.G, Fg = c.F / c.G;
  Reference ref(c.N * c.F * OH * OW);
  for (int64_t n = 0; n < c.N; ++n)
    for (int64_t f = 0; f < c.F; ++f)
      for (int64_t oh = 0; oh < OH; ++oh)
        for (int64_t ow = 0; ow < OW; ++ow) {
          size_t o = ((n * c.F + f) * OH + oh) * OW + ow;
          if (bias)
            ref.add(o, bias[f]);
          int64_t g = f / Fg;
          for (int64_t ci = 0; ci < Cg; ++ci)
            for (int64_t kh = 0; kh < c.KH; ++kh)
              for (int64_t kw = 0; kw < c.KW; ++kw) {
                int64_t ih = oh * c.SH + kh * c.DH - c.PT, iw = ow * c.SW + kw * c.DW - c.PL;
                if (ih < 0 || ih >= c.H || iw < 0 || iw >= c.W)
                  continue;
                double xv = x[((n * c.C + g * Cg + ci) * c.H + ih) * c.W + iw];
                double wv = w[((f * Cg + ci) * c.KH + kh) * c.KW + kw];
                ref.add(o, xv * wv);
              }
        }
  return ref;
}

/// ConvTranspose by scattering every input element into the output:
/// x[N,C,H,W], w[C,F/G,KH,KW], bias[F] or null -> y[N,F,OH,OW].
Reference naiveConvTranspose(const ConvCase &c, const float *x, const float *w, const float *bias) {
  int64_t OH = c.transposeOH(), OW = c.transposeOW(), Cg = c.C / c.G, Fg = c.F / c.G;
  Reference ref(c.N * c.F * OH * OW);
  if (bias)
    for (int64_t n = 0; n < c.N; ++n)
      for (int64_t f = 0; f < c.F; ++f)
        for (int64_t i = 0; i < OH * OW; ++i)
          ref.add((n * c.F + f) * OH * OW + i, bias[f]);
  for (int64_t n = 0; n < c.N; ++n)
    for (int64_t ch = 0; ch < c.C; ++ch)
      for (int64_t ih = 0; ih < c.H; ++ih)
        for (int64_t iw = 0; iw < c.W; ++iw) {
          double xv = x[((n * c.C + ch) * c.H + ih) * c.W + iw];
          int64_t g = ch / Cg;
          for (int64_t fi = 0; fi < Fg; ++fi)
            for (int64_t kh = 0; kh < c.KH; ++kh)
              for (int64_t kw = 0; kw < c.KW; ++kw) {
                int64_t oh = ih * c.SH + kh * c.DH - c.PT, ow = iw * c.SW + kw * c.DW - c.PL;
                if (oh < 0 || oh >= OH || ow < 0 || ow >= OW)
                  continue;
                double wv = w[((ch * Fg + fi) * c.KH + kh) * c.KW + kw];
                ref.add(((n * c.F + g * Fg + fi) * OH + oh) * OW + ow, xv * wv);
              }
        }
  return ref;
}

enum class Op { Conv, ConvTranspose };

/// Runs one case with and without bias, serially and on a 3-thread pool.
void checkCase(Op op, const ConvCase &c, uint32_t seed) {
  bool conv = op == Op::Conv;
  int64_t OH = conv ? c.convOH() : c.transposeOH(), OW = conv ? c.convOW() : c.transposeOW();
  int64_t wSize = conv ? c.F * (c.C / c.G) * c.KH * c.KW : c.C * (c.F / c.G) * c.KH * c.KW;
  std::vector<float> x = randomFloats(c.N * c.C * c.H * c.W, seed);
  std::vector<float> w = randomFloats(wSize, seed + 1);
  std::vector<float> bias = randomFloats(c.F, seed + 2);
  kiln::rt::ThreadPool pool(3);
  for (bool withBias : {false, true}) {
    const float *b = withBias ? bias.data() : nullptr;
    Reference ref =
        conv ? naiveConv(c, x.data(), w.data(), b) : naiveConvTranspose(c, x.data(), w.data(), b);
    for (kiln::rt::ThreadPool *p : {(kiln::rt::ThreadPool *)nullptr, &pool}) {
      INFO(c.name << (withBias ? ", with bias" : ", no bias") << ", threads=" << (p ? p->size() : 1)
                  << ", OH=" << OH << " OW=" << OW);
      GuardedBuffer y(c.N * c.F * OH * OW);
      {
        PoolScope scope(p);
        auto fn = conv ? kiln_rt_conv2d : kiln_rt_conv_transpose2d;
        fn((intptr_t)x.data(), (intptr_t)w.data(), (intptr_t)b, y.addr(), c.N, c.C, c.H, c.W, c.F,
           c.KH, c.KW, OH, OW, c.SH, c.SW, c.DH, c.DW, c.PT, c.PL, c.G);
      }
      CHECK(mismatches(y.data(), ref) == "");
      CHECK(y.guardsIntact());
    }
  }
}

/// Whether the last output row/column of a Conv reads bottom/right padding.
bool readsBottomPad(const ConvCase &c) {
  return (c.convOH() - 1) * c.SH + (c.KH - 1) * c.DH - c.PT >= c.H;
}
bool readsRightPad(const ConvCase &c) {
  return (c.convOW() - 1) * c.SW + (c.KW - 1) * c.DW - c.PL >= c.W;
}

/// Outputs of a fused kernel (conv + residual + clamp) that differ from
/// clamp(plain + residual, lo, hi) computed from the unfused result.
int64_t residualClampMismatches(const float *fused, const float *plain, const std::vector<float> &res, int64_t n,
                                float lo, float hi) {
  int64_t bad = 0;
  for (int64_t i = 0; i < n; ++i) bad += fused[i] != std::min(std::max(plain[i] + res[i], lo), hi);
  return bad;
}

// name, N, C, H, W, F, KH, KW, SH, SW, DH, DW, PT, PL, PB, PR, G
const ConvCase kConvCases[] = {
    {"3x3 pad 1", 2, 3, 8, 7, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1},
    {"3x3 stride 2 asymmetric pads", 1, 4, 9, 10, 5, 3, 3, 2, 2, 1, 1, 1, 0, 1, 2, 1},
    {"3x3 dilation 2", 1, 3, 11, 12, 2, 3, 3, 1, 1, 2, 2, 2, 2, 2, 2, 1},
    {"3x2 stride 2x1 dilation 2", 2, 2, 10, 9, 3, 3, 2, 2, 1, 2, 2, 0, 1, 3, 1, 1},
    {"2x5 asymmetric pads", 1, 3, 6, 11, 4, 2, 5, 1, 1, 1, 1, 0, 2, 1, 1, 1},
    {"no padding", 1, 3, 7, 8, 5, 3, 3, 1, 1, 1, 1, 0, 0, 0, 0, 1},
    {"1x1", 2, 8, 5, 6, 12, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1},
    {"1x1 stride 2", 1, 5, 7, 7, 3, 1, 1, 2, 2, 1, 1, 0, 0, 0, 0, 1},
    {"1x1 pad 1", 1, 4, 5, 5, 6, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1},
    {"single channel", 2, 1, 9, 8, 1, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1},
    {"depthwise 3x3", 2, 6, 8, 8, 6, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 6},
    {"depthwise stride 2 dilation 2", 1, 5, 11, 10, 5, 3, 3, 2, 2, 2, 2, 1, 2, 2, 1, 5},
    {"depthwise 5x5 asymmetric pads", 1, 4, 9, 9, 4, 5, 5, 1, 1, 1, 1, 2, 1, 3, 2, 4},
    // Rows wide enough for the 32- and 8-wide vector blocks plus a tail.
    {"depthwise wide rows", 1, 3, 5, 75, 3, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 3},
    {"depthwise wide rows stride 2", 2, 2, 7, 91, 2, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 2},
    // 3x3 on blocks of 8 channels (strided, or planes up to 28x28): full
    // and partial blocks, rows with whole 8-column transposes and tails,
    // pads on one side only, and a 30x30 stride-1 plane (plane kernel).
    {"depthwise 3x3 channel blocks", 2, 20, 9, 19, 20, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 20},
    {"depthwise 3x3 channel blocks stride 2", 1, 16, 14, 14, 16, 3, 3, 2, 2, 1, 1, 0, 0, 1, 1, 16},
    {"depthwise 3x3 dilated stride 2", 1, 9, 12, 17, 9, 3, 3, 2, 2, 2, 2, 2, 1, 2, 0, 9},
    {"depthwise 3x3 30x30 plane", 1, 10, 30, 30, 10, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 10},
    // Planes of 2x2 and 3x1 outputs: a partial chunk must not spill past
    // its plane (the next channel block, or the end of the output).
    {"depthwise 3x3 stride 2 to 2x2, 16 channels", 2, 16, 4, 4, 16, 3, 3, 2, 2, 1, 1, 1, 1, 0, 0, 16},
    {"depthwise 3x3 to 3x1, 24 channels", 1, 24, 3, 1, 24, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 24},
    // MobileNetV2's planes (the row kernel, window3.h: AVX-512 blocks of 7
    // output rows, 16- or 8-lane chunks; AVX2 blocks of 4 rows, 8 lanes;
    // stride 2 through even/odd column phases).
    {"depthwise 3x3 14x14", 1, 5, 14, 14, 5, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 5},
    // Planes larger than L1 (rows-outer order): 7-row blocks, and 4-row
    // blocks with pads on one side.
    {"depthwise 3x3 98x90 plane", 1, 2, 98, 90, 2, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 2},
    {"depthwise 3x3 86x101 plane, pads on one side", 1, 3, 86, 101, 3, 3, 3, 1, 1, 1, 1, 1, 0, 0, 1, 3},
    // 288 x 576 im2col (> 512 KiB, 196-2047 pixels): with packed weights,
    // built and multiplied one K block (256 rows) at a time (dilated, so
    // that CPUs without AVX-512 do not take the phase planes instead).
    {"3x3 stride 2 dilation 2, im2col in K blocks", 2, 32, 50, 50, 20, 3, 3, 2, 2, 2, 2, 1, 1, 0, 0, 1},
    // Square 5x5 and 7x7 windows over few channels (AVX-512: the pixels
    // in the lanes on phase planes, 4 filters x runs of 64 pixels per
    // tile, convPhased): a 7x7 stride-2 stem with 40 filters (32 + 8) and
    // 23 output columns (one run, its last vector partial), 2 images; 5x5
    // stride 1 over 4 channels, asymmetric pads, 33 filters (the last
    // group of 4 holds one), 30 columns; 70 columns (a run of 64 and one
    // of 6) to 37 filters; 112 columns (64 + 48, ResNet-50's rows); 5x5
    // stride 2, 50 columns.
    {"7x7 stride 2, 3 -> 40 channels (a stem)", 2, 3, 37, 45, 40, 7, 7, 2, 2, 1, 1, 3, 3, 3, 3, 1},
    {"5x5 stride 1, 4 -> 33 channels", 1, 4, 12, 31, 33, 5, 5, 1, 1, 1, 1, 1, 2, 3, 1, 1},
    {"7x7 stride 2, 3 -> 37 channels, 70 columns", 1, 3, 11, 140, 37, 7, 7, 2, 2, 1, 1, 3, 3, 3, 3, 1},
    {"7x7 stride 2, 3 -> 8 channels, 112 columns", 1, 3, 9, 224, 8, 7, 7, 2, 2, 1, 1, 3, 3, 3, 3, 1},
    {"5x5 stride 2, 2 -> 6 channels, 50 columns", 2, 2, 13, 100, 6, 5, 5, 2, 2, 1, 1, 2, 2, 2, 1, 1},
    // Other large windows over few channels (AVX-512: direct, filters in
    // the lanes, convDirect): 5x7, stride 2, 35 filters (32 + 3).
    {"5x7 stride 2, 3 -> 35 channels", 1, 3, 15, 33, 35, 5, 7, 2, 2, 1, 1, 2, 3, 2, 3, 1},
    // Stride-2 3x3 convs with constant weights (AVX-512: direct, filters in
    // the lanes): 40 channels (360 taps: two K blocks of the packed
    // weights) to 36 filters (32 + 4), 14 output columns (one tile), 2
    // images; rows of 7 (two rows a tile, 7 rows: the last one alone).
    {"3x3 stride 2, 40 -> 36 channels, 14 columns", 2, 40, 17, 27, 36, 3, 3, 2, 2, 1, 1, 1, 1, 0, 1, 1},
    {"3x3 stride 2, 24 -> 70 channels, rows of 7", 1, 24, 14, 14, 70, 3, 3, 2, 2, 1, 1, 1, 1, 0, 0, 1},
    // 720 x 196 (564 KiB): the fewest pixels that still go in K blocks.
    {"3x3 stride 2 dilation 2, 14x14 output, im2col in K blocks", 1, 80, 31, 31, 12, 3, 3, 2, 2, 2, 2, 1, 1, 0, 0, 1},
    // Without AVX-512, stride 1: the GEMM reads the padded input in place
    // (implicit im2col, at least 512 columns of the wide grid): 3x3, 28 x
    // 30 wide columns (52 whole panels of 16 and 8), 20 filters (3 panels
    // of 6 and 2 rows); 5x5, 24 x 34, 2 images.
    {"3x3 on the padded planes", 1, 24, 28, 28, 20, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1},
    {"5x5 on the padded planes", 2, 6, 24, 30, 13, 5, 5, 1, 1, 1, 1, 2, 2, 2, 2, 1},
    // A row 21 wide: the wide grid's last columns read 20 floats past the
    // last plane; 3x3 over 32 channels: two K blocks (288 rows).
    {"1x21 on the padded planes", 1, 2, 30, 40, 5, 1, 21, 1, 1, 1, 1, 0, 10, 0, 10, 1},
    {"3x3 over 32 channels on the padded planes, two K blocks", 1, 32, 20, 24, 7, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1},
    // A stem: 3 input channels, stride 2, 20 filters (16 + 4), 2 images.
    {"3x3 stride 2, 3 -> 20 channels", 2, 3, 17, 35, 20, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 1},
    // Direct small-channel 3x3 (AVX-512, at least 16 output columns):
    // stride 2 with no left pad, two whole groups of 16 filters, two whole
    // 16-column chunks and a tail; stride 1 with pads of 2, 16 + 1 filters.
    {"3x3 stride 2 left pad 0, 3 -> 32 channels", 1, 3, 22, 70, 32, 3, 3, 2, 2, 1, 1, 0, 0, 1, 1, 1},
    {"3x3 pads 2, 2 -> 17 channels", 2, 2, 6, 19, 17, 3, 3, 1, 1, 1, 1, 2, 2, 2, 2, 1},
    {"depthwise 3x3 7x7", 2, 3, 7, 7, 3, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 3},
    // At most 64 outputs, AVX-512: 16 channels in the lanes (16 + 4; 16 +
    // 16 + 8 with pads on one side, stride 2, outputs not a multiple of 16).
    {"depthwise 3x3 7x7, 20 channels in the lanes", 2, 20, 7, 7, 20, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 20},
    {"depthwise 3x3 14x13 stride 2 to 7x6, 40 channels in the lanes", 1, 40, 14, 13, 40, 3, 3, 2, 2, 1, 1, 0, 1,
     1, 0, 40},
    {"depthwise 3x3 56x56 stride 2", 1, 3, 56, 56, 3, 3, 3, 2, 2, 1, 1, 1, 1, 0, 0, 3},
    {"depthwise 3x3 15x38 stride 2, pads on one side", 1, 2, 15, 38, 2, 3, 3, 2, 2, 1, 1, 0, 1, 0, 0, 2},
    // Stride 2 on a plane larger than L1 with rows of at most 28 outputs:
    // the AVX2 row kernel walks it rows outer (blocks of 4 rows, left pad
    // 1 and 0).
    {"depthwise 3x3 150x56 stride 2, rows outer", 1, 2, 150, 56, 2, 3, 3, 2, 2, 1, 1, 1, 1, 0, 0, 2},
    {"depthwise 3x3 151x55 stride 2 no left pad, rows outer", 1, 2, 151, 55, 2, 3, 3, 2, 2, 1, 1, 0, 0, 0, 0, 2},
    // im2col built in bands of output rows (>= 2048 outputs, > 1 MiB of
    // columns): 5 bands of 11 rows (>= 512 outputs each), the last of 5.
    // 5 channels: with at most 4, CPUs without AVX-512 run the direct
    // stem kernel instead.
    {"7x7 stride 2, banded im2col", 1, 5, 97, 101, 10, 7, 7, 2, 2, 1, 1, 3, 3, 3, 3, 1},
    // A 7x7 stride-2 stem (direct on phase planes without AVX-512): a
    // 16-column chunk and a tail of 10, 4 + 4 + 2 filters, 2 images.
    {"7x7 stride 2 stem, 3 -> 10 channels", 2, 3, 40, 53, 10, 7, 7, 2, 2, 1, 1, 3, 3, 3, 2, 1},
    {"depth multiplier 2", 1, 3, 7, 6, 6, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 3},
    {"groups 2", 2, 4, 7, 6, 6, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 2},
    {"groups 2 stride 2", 1, 6, 9, 9, 4, 3, 3, 2, 2, 1, 1, 0, 0, 2, 2, 2},
    {"groups 2 1x1", 1, 4, 5, 6, 8, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 2},
    {"16 to 32 channels", 2, 16, 20, 18, 32, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1},
    {"deep reduction", 1, 40, 12, 12, 24, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1},
    // Rows wide enough for im2col's stride-2 vector path.
    {"7x7 stride 2 wide rows", 1, 3, 9, 45, 4, 7, 7, 2, 2, 1, 1, 3, 3, 3, 2, 1},
    // The sparse kernel's tap gathering: stride-2 and stride-1 rows with
    // vector runs between the padded edges.
    {"3x3 stride 2 wide rows", 1, 8, 11, 43, 8, 3, 3, 2, 2, 1, 1, 1, 1, 1, 0, 1},
    {"3x3 wide rows", 1, 4, 5, 37, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1},
};

// name, N, C, H, W, F, KH, KW, SH, SW, DH, DW, PT, PL, PB, PR, G, OPH, OPW
const ConvCase kConvTransposeCases[] = {
    {"3x3 stride 2 pad 1", 1, 3, 5, 4, 2, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 1},
    {"4x4 stride 2 pad 1 groups 2", 2, 4, 4, 5, 6, 4, 4, 2, 2, 1, 1, 1, 1, 1, 1, 2},
    {"3x3 stride 2 pad 1 output padding", 1, 3, 5, 6, 4, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1},
    {"3x3 stride 2 dilation 2 groups 2", 1, 4, 4, 4, 2, 3, 3, 2, 2, 2, 2, 1, 0, 2, 1, 2},
    {"3x3 stride 1 no padding", 2, 2, 5, 5, 3, 3, 3, 1, 1, 1, 1, 0, 0, 0, 0, 1},
    {"2x3 stride 3x2", 1, 3, 4, 5, 2, 2, 3, 3, 2, 1, 1, 0, 1, 0, 1, 1},
    {"20 to 16 channels", 1, 20, 9, 9, 16, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 1},
};

} // namespace

TEST_CASE("conv2d cases read bottom and right padding where they have it", "[conv]") {
  // Checks the test's own cases: asymmetric pads must be exercised.
  for (const ConvCase &c : kConvCases) {
    INFO(c.name);
    CHECK(readsBottomPad(c) == (c.PB > 0));
    CHECK(readsRightPad(c) == (c.PR > 0));
  }
}

TEST_CASE("conv2d matches a naive convolution", "[conv]") {
  uint32_t seed = 100;
  for (const ConvCase &c : kConvCases)
    checkCase(Op::Conv, c, seed += 3);
}

TEST_CASE("conv_transpose2d matches a naive scatter", "[conv]") {
  uint32_t seed = 500;
  for (const ConvCase &c : kConvTransposeCases)
    checkCase(Op::ConvTranspose, c, seed += 3);
}

TEST_CASE("kiln_rt_conv2d_act clamps every output as it is stored (fused Relu/Clip)", "[conv]") {
  // The fused form must equal the plain conv followed by the clamp, exactly
  // (same accumulation order), for the im2col, 1x1 and depthwise paths.
  kiln::rt::ThreadPool pool(2);
  const ConvCase cases[] = {kConvCases[0], kConvCases[6], kConvCases[10],
                            {"depthwise 7x7, channels in the lanes", 1, 20, 7, 7, 20, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 20}};
  const std::pair<float, float> acts[] = {{0.0f, std::numeric_limits<float>::infinity()}, {0.0f, 0.5f},
                                          {-0.25f, 0.25f}};
  uint32_t seed = 9100;
  for (const ConvCase &c : cases)
    for (bool withBias : {false, true})
      for (auto [lo, hi] : acts) {
        int64_t OH = c.convOH(), OW = c.convOW(), n = c.N * c.F * OH * OW;
        std::vector<float> x = randomFloats(c.N * c.C * c.H * c.W, seed++);
        std::vector<float> w = randomFloats(c.F * (c.C / c.G) * c.KH * c.KW, seed++);
        std::vector<float> bias = randomFloats(c.F, seed++);
        const float *b = withBias ? bias.data() : nullptr;
        INFO(c.name << (withBias ? ", with bias" : ", no bias") << ", clamp [" << lo << ", " << hi << "]");
        GuardedBuffer plain(n), fused(n);
        PoolScope scope(&pool);
        kiln_rt_conv2d((intptr_t)x.data(), (intptr_t)w.data(), (intptr_t)b, plain.addr(), c.N, c.C, c.H,
                       c.W, c.F, c.KH, c.KW, OH, OW, c.SH, c.SW, c.DH, c.DW, c.PT, c.PL, c.G);
        kiln_rt_conv2d_act((intptr_t)x.data(), (intptr_t)w.data(), (intptr_t)b, fused.addr(), c.N, c.C,
                           c.H, c.W, c.F, c.KH, c.KW, OH, OW, c.SH, c.SW, c.DH, c.DW, c.PT, c.PL, c.G, lo,
                           hi);
        int64_t bad = 0;
        for (int64_t i = 0; i < n; ++i)
          bad += fused.data()[i] != std::min(std::max(plain.data()[i], lo), hi);
        CHECK(bad == 0);
        CHECK(fused.guardsIntact());
      }
}

TEST_CASE("kiln_rt_conv2d_packed with weights packed ahead equals kiln_rt_conv2d_act", "[conv]") {
  // The compiler packs constant weights with kiln::gemm::packAFull; the
  // result must be exactly the runtime-packed one (same panels, same sums)
  // for every ungrouped case: 1x1, im2col, several K blocks, edge panels.
  kiln::rt::ThreadPool pool(2);
  uint32_t seed = 9700;
  std::vector<ConvCase> cases;
  for (const ConvCase &c : kConvCases)
    if (c.G == 1 && !(c.C == 1 && c.F == 1)) cases.push_back(c); // 1 -> 1 channel is depthwise
  cases.push_back({"deep reduction over two K blocks", 1, 40, 9, 9, 13, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1});
  // 1x1 convs with the residual in Y's own buffer: over one K block (read
  // in place, 256 channels: the most) and over two (a copy first).
  cases.push_back({"1x1 over one whole K block", 2, 256, 7, 9, 14, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1});
  cases.push_back({"1x1 over two K blocks", 1, 300, 6, 7, 20, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1});
  // 49 and 52 pixels: AVX-512 6 x 48 tiles, then the last 1 or 4 columns'
  // own kernel (colKernelWide), reading the residual in place too.
  cases.push_back({"1x1 at 7x7, 6 x 48 tiles and the last column", 1, 64, 7, 7, 30, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1});
  cases.push_back({"1x1 at 4x13, 6 x 48 tiles and the last 4 columns", 2, 40, 4, 13, 18, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0,
                   1});
  for (const ConvCase &c : cases) {
    INFO(c.name);
    // Each case's packed weights may reuse the last one's address: drop
    // the regrouped copies kept by address (as kiln_model_close does).
    kiln::rt::forgetGroupedWeights();
    int64_t OH = c.convOH(), OW = c.convOW(), n = c.N * c.F * OH * OW, K = c.C * c.KH * c.KW;
    std::vector<float> x = randomFloats(c.N * c.C * c.H * c.W, seed++);
    std::vector<float> w = randomFloats(c.F * K, seed++);
    std::vector<float> bias = randomFloats(c.F, seed++);
    std::vector<float> packed(kiln::gemm::packedASize(c.F, K));
    kiln::gemm::packAFull(w.data(), K, false, c.F, K, packed.data());
    GuardedBuffer want(n), got(n);
    PoolScope scope(&pool);
    kiln_rt_conv2d_act((intptr_t)x.data(), (intptr_t)w.data(), (intptr_t)bias.data(), want.addr(), c.N, c.C,
                       c.H, c.W, c.F, c.KH, c.KW, OH, OW, c.SH, c.SW, c.DH, c.DW, c.PT, c.PL, 1, 0.0f, 0.75f);
    kiln_rt_conv2d_packed((intptr_t)x.data(), (intptr_t)packed.data(), (intptr_t)bias.data(), 0, got.addr(),
                          c.N, c.C, c.H, c.W, c.F, c.KH, c.KW, OH, OW, c.SH, c.SW, c.DH, c.DW, c.PT, c.PL, 0.0f,
                          0.75f);
    CHECK(std::equal(want.data(), want.data() + n, got.data()));
    CHECK(got.guardsIntact());
    // Each thread owning runs of output channels rather than of pixels
    // (kiln_rt_conv2d_packed_part, partition 1): other blocks, same bits.
    GuardedBuffer byChannels(n);
    kiln_rt_conv2d_packed_part((intptr_t)x.data(), (intptr_t)packed.data(), (intptr_t)bias.data(), 0,
                               byChannels.addr(), c.N, c.C, c.H, c.W, c.F, c.KH, c.KW, OH, OW, c.SH, c.SW, c.DH, c.DW,
                               c.PT, c.PL, 0.0f, 0.75f, 1);
    CHECK(std::equal(want.data(), want.data() + n, byChannels.data()));
    CHECK(byChannels.guardsIntact());
    // And it is a convolution: the naive loop agrees within rounding.
    Reference ref = naiveConv(c, x.data(), w.data(), bias.data());
    for (size_t i = 0; i < ref.value.size(); ++i) ref.value[i] = std::min(std::max(ref.value[i], 0.0), 0.75);
    CHECK(mismatches(got.data(), ref) == "");
    // With a residual (conv + Add + clamp in one kernel): exactly the
    // unclamped conv plus the residual, then the clamp.
    std::vector<float> res = randomFloats(n, seed++);
    GuardedBuffer plain(n), fused(n);
    float inf = std::numeric_limits<float>::infinity();
    kiln_rt_conv2d_packed((intptr_t)x.data(), (intptr_t)packed.data(), (intptr_t)bias.data(), 0, plain.addr(),
                          c.N, c.C, c.H, c.W, c.F, c.KH, c.KW, OH, OW, c.SH, c.SW, c.DH, c.DW, c.PT, c.PL, -inf, inf);
    kiln_rt_conv2d_packed((intptr_t)x.data(), (intptr_t)packed.data(), (intptr_t)bias.data(), (intptr_t)res.data(),
                          fused.addr(), c.N, c.C, c.H, c.W, c.F, c.KH, c.KW, OH, OW, c.SH, c.SW, c.DH, c.DW, c.PT,
                          c.PL, 0.0f, 0.75f);
    CHECK(residualClampMismatches(fused.data(), plain.data(), res, n, 0.0f, 0.75f) == 0);
    CHECK(fused.guardsIntact());
    // The residual in Y's buffer (kiln-plan-arena's in-place buffers): the
    // same bits, on every path (those that would overwrite it early copy
    // it first).
    GuardedBuffer inPlace(n);
    std::copy(res.begin(), res.end(), inPlace.data());
    kiln_rt_conv2d_packed((intptr_t)x.data(), (intptr_t)packed.data(), (intptr_t)bias.data(), inPlace.addr(),
                          inPlace.addr(), c.N, c.C, c.H, c.W, c.F, c.KH, c.KW, OH, OW, c.SH, c.SW, c.DH, c.DW, c.PT,
                          c.PL, 0.0f, 0.75f);
    CHECK(std::equal(fused.data(), fused.data() + n, inPlace.data()));
    CHECK(inPlace.guardsIntact());
    std::copy(res.begin(), res.end(), inPlace.data());
    kiln_rt_conv2d_packed_part((intptr_t)x.data(), (intptr_t)packed.data(), (intptr_t)bias.data(), inPlace.addr(),
                               inPlace.addr(), c.N, c.C, c.H, c.W, c.F, c.KH, c.KW, OH, OW, c.SH, c.SW, c.DH, c.DW,
                               c.PT, c.PL, 0.0f, 0.75f, 1);
    CHECK(std::equal(fused.data(), fused.data() + n, inPlace.data()));
  }
}

TEST_CASE("regrouped copies of packed conv weights are forgotten with the model", "[conv]") {
  // The direct paths regroup constant weights once per address (AVX-512:
  // stride-2 3x3 convs, convDirect; stems, convSmallC3 and convPhased, or
  // without AVX-512 convSmallPhased); after forgetGroupedWeights
  // (kiln_model_close), new weights at the same address are read afresh.
  float inf = std::numeric_limits<float>::infinity();
  for (const ConvCase &s : {ConvCase{"3x3 stride 2, 32 -> 32 channels", 1, 32, 14, 14, 32, 3, 3, 2, 2, 1, 1, 1, 1,
                                     1, 1, 1},
                            ConvCase{"a 3x3 stride-2 stem, 3 -> 20 channels", 1, 3, 40, 40, 20, 3, 3, 2, 2, 1, 1, 1, 1,
                                     1, 1, 1},
                            ConvCase{"a 7x7 stride-2 stem, 3 -> 20 channels", 1, 3, 40, 40, 20, 7, 7, 2, 2, 1, 1, 3, 3,
                                     3, 3, 1}}) {
    INFO(s.name);
    const int64_t OH = s.convOH(), OW = s.convOW(), K = s.C * s.KH * s.KW;
    std::vector<float> x = randomFloats(s.C * s.H * s.W, 9901);
    std::vector<float> packed(kiln::gemm::packedASize(s.F, K)), out(s.F * OH * OW);
    for (uint32_t seed : {9902u, 9903u}) {
      std::vector<float> w = randomFloats(s.F * K, seed);
      kiln::gemm::packAFull(w.data(), K, false, s.F, K, packed.data()); // same buffer, new weights
      kiln::rt::forgetGroupedWeights();
      kiln_rt_conv2d_packed((intptr_t)x.data(), (intptr_t)packed.data(), 0, 0, (intptr_t)out.data(), 1, s.C, s.H,
                            s.W, s.F, s.KH, s.KW, OH, OW, 2, 2, 1, 1, s.PT, s.PL, -inf, inf);
      INFO("weights seed " << seed);
      CHECK(mismatches(out.data(), naiveConv(s, x.data(), w.data(), nullptr)) == "");
    }
  }
  const ConvCase c{"3x3 stride 2, 32 -> 32 channels", 1, 32, 14, 14, 32, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 1};
  const int64_t OH = c.convOH(), OW = c.convOW(), n = c.F * OH * OW, K = c.C * 9;
  std::vector<float> x = randomFloats(c.C * c.H * c.W, 9901);
  std::vector<float> packed(kiln::gemm::packedASize(c.F, K));
  std::vector<float> out(n);
  // Forgetting an address range (one model's library) drops the copies of
  // weights inside it only: here two weight buffers, both regrouped, then
  // both rewritten; after forgetting the first one's range, it is read
  // afresh while the second still runs its kept copy of the old weights
  // (a model's weights never change while it is open).
  if (!kiln::rt::wideKernels()) return; // no copies without AVX-512
  std::vector<float> packed2(packed.size()), out2(n);
  std::vector<float> wa = randomFloats(c.F * K, 9904), wb = randomFloats(c.F * K, 9905);
  auto run = [&](const std::vector<float> &p, std::vector<float> &o) {
    kiln_rt_conv2d_packed((intptr_t)x.data(), (intptr_t)p.data(), 0, 0, (intptr_t)o.data(), 1, c.C, c.H, c.W, c.F,
                          3, 3, OH, OW, 2, 2, 1, 1, 1, 1, -inf, inf);
  };
  kiln::rt::forgetGroupedWeights();
  kiln::gemm::packAFull(wa.data(), K, false, c.F, K, packed.data());
  kiln::gemm::packAFull(wa.data(), K, false, c.F, K, packed2.data());
  run(packed, out);
  run(packed2, out2); // both regrouped from wa
  kiln::gemm::packAFull(wb.data(), K, false, c.F, K, packed.data());
  kiln::gemm::packAFull(wb.data(), K, false, c.F, K, packed2.data());
  kiln::rt::forgetGroupedWeights(packed.data(), packed.data() + packed.size());
  run(packed, out);
  run(packed2, out2);
  CHECK(mismatches(out.data(), naiveConv(c, x.data(), wb.data(), nullptr)) == "");  // read afresh
  CHECK(mismatches(out2.data(), naiveConv(c, x.data(), wa.data(), nullptr)) == ""); // its copy kept
  kiln::rt::forgetGroupedWeights();
}

TEST_CASE("kiln_rt_conv2d_bcr with BCR-pruned weights matches a naive convolution", "[conv][bcr]") {
  // Every ungrouped case (1x1 read in place, im2col of the used rows only,
  // strides, dilations, pads), weights pruned at three rates; bias,
  // residual and clamp as the dense packed kernel applies them.
  kiln::rt::ThreadPool pool(2);
  uint32_t seed = 12000;
  for (const ConvCase &c : kConvCases) {
    if (c.G != 1) continue;
    for (double rate : {0.5, 0.75, 0.9}) {
      INFO(c.name << " at " << rate);
      int64_t OH = c.convOH(), OW = c.convOW(), n = c.N * c.F * OH * OW, K = c.C * c.KH * c.KW;
      std::vector<float> x = randomFloats(c.N * c.C * c.H * c.W, seed++);
      std::vector<float> w = randomFloats(c.F * K, seed++);
      std::vector<float> bias = randomFloats(c.F, seed++), res = randomFloats(n, seed++);
      kiln::bcr::prune(w.data(), c.F, K, 4, 8, rate);
      // Small chunks of used columns (7) exercise the partial sums.
      std::vector<uint32_t> blob =
          kiln::bcr::pack(w.data(), c.F, K, kiln::bcr::rowOrder(w.data(), c.F, K, 4, 8), 4, 8, rate == 0.75 ? 7 : 256);
      REQUIRE(kiln::bcr::View::valid(blob.data(), (int64_t)blob.size()));
      GuardedBuffer got(n), fused(n);
      float inf = std::numeric_limits<float>::infinity();
      PoolScope scope(&pool);
      kiln_rt_conv2d_bcr((intptr_t)x.data(), (intptr_t)blob.data(), (intptr_t)bias.data(), 0, got.addr(), c.N, c.C,
                         c.H, c.W, c.F, c.KH, c.KW, OH, OW, c.SH, c.SW, c.DH, c.DW, c.PT, c.PL, -inf, inf);
      Reference ref = naiveConv(c, x.data(), w.data(), bias.data());
      CHECK(mismatches(got.data(), ref) == "");
      CHECK(got.guardsIntact());
      kiln_rt_conv2d_bcr((intptr_t)x.data(), (intptr_t)blob.data(), (intptr_t)bias.data(), (intptr_t)res.data(),
                         fused.addr(), c.N, c.C, c.H, c.W, c.F, c.KH, c.KW, OH, OW, c.SH, c.SW, c.DH, c.DW, c.PT,
                         c.PL, 0.0f, 0.75f);
      CHECK(residualClampMismatches(fused.data(), got.data(), res, n, 0.0f, 0.75f) == 0);
      CHECK(fused.guardsIntact());
    }
  }
}

TEST_CASE("kiln_rt_conv2d_winograd_ft matches a naive convolution", "[conv][winograd]") {
  // F(2x2, 3x3) and F(4x4, 3x3) with weights transformed as the compiler
  // does (kiln::winograd::transformWeights): edge tiles (output sizes not
  // multiples of m), pads 0..2 on each side, channel and filter counts
  // that are not multiples of 8, batches, bias, residual and clamp,
  // serially and on a pool. The tiles run in the lanes, up to 8 of one
  // row of tiles at a time: rows of 1-35 tiles, runs that cross the
  // GEMM's panels of 16 tiles. Winograd rounds differently from a direct
  // sum, so the check is against the naive loop within the tests'
  // tolerance.
  kiln::rt::ThreadPool pool(3);
  // name, N, C, H, W, F, KH, KW, SH, SW, DH, DW, PT, PL, PB, PR, G
  const ConvCase cases[] = {
      {"pad 1, 8x8", 1, 8, 8, 8, 8, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1},
      {"odd sizes and counts", 2, 5, 7, 11, 13, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1},
      {"no padding", 1, 16, 9, 10, 24, 3, 3, 1, 1, 1, 1, 0, 0, 0, 0, 1},
      {"asymmetric pads", 1, 12, 6, 5, 9, 3, 3, 1, 1, 1, 1, 2, 0, 1, 2, 1},
      {"ResNet-like 14x14", 1, 64, 14, 14, 32, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1},
      {"channels over two K blocks", 1, 300, 6, 7, 20, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1},
      {"filters over two task groups", 2, 16, 9, 13, 70, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1},
      {"many filters", 2, 20, 9, 11, 130, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1},
      {"many filters over two K blocks", 1, 300, 5, 6, 128, 3, 3, 1, 1, 1, 1, 1, 0, 1, 2, 1},
      // Rows of 18 (m = 4) and 35 (m = 2) tiles: several runs per row, and
      // runs across the panels; ResNet-50's 56x56 shape.
      {"rows of many tiles", 1, 9, 10, 70, 20, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1},
      {"ResNet-like 56x56", 1, 64, 56, 56, 16, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1},
  };
  uint32_t seed = 15000;
  float inf = std::numeric_limits<float>::infinity();
  for (const ConvCase &c : cases)
    for (int m : {2, 4}) {
      int64_t OH = c.convOH(), OW = c.convOW(), n = c.N * c.F * OH * OW;
      std::vector<float> x = randomFloats(c.N * c.C * c.H * c.W, seed++);
      std::vector<float> w = randomFloats(c.F * c.C * 9, seed++);
      std::vector<float> bias = randomFloats(c.F, seed++), res = randomFloats(n, seed++);
      std::vector<float> up(kiln::winograd::packedSize(m, c.F, c.C));
      kiln::winograd::transformWeights(m, w.data(), c.F, c.C, up.data());
      Reference ref = naiveConv(c, x.data(), w.data(), bias.data());
      // On the pool, both ways of sharing the work: every phase over the
      // threads, and each thread a band of tile rows alone.
      for (int split : {-1, 0, 1}) {
        kiln::rt::ThreadPool *p = split >= 0 ? &pool : nullptr;
        const int was = kiln::rt::setWinogradSplit(split);
        INFO(c.name << ", m=" << m << ", threads=" << (p ? p->size() : 1) << ", split " << split);
        PoolScope scope(p);
        GuardedBuffer got(n), fused(n);
        kiln_rt_conv2d_winograd_ft((intptr_t)x.data(), (intptr_t)up.data(), (intptr_t)bias.data(), 0, got.addr(),
                                   c.N, c.C, c.H, c.W, c.F, OH, OW, c.PT, c.PL, m, -inf, inf);
        CHECK(mismatches(got.data(), ref, 1e-4) == "");
        CHECK(got.guardsIntact());
        // Residual and clamp: clamp(conv + bias + residual) exactly.
        kiln_rt_conv2d_winograd_ft((intptr_t)x.data(), (intptr_t)up.data(), (intptr_t)bias.data(),
                                   (intptr_t)res.data(), fused.addr(), c.N, c.C, c.H, c.W, c.F, OH, OW, c.PT, c.PL, m,
                                   0.0f, 0.75f);
        CHECK(residualClampMismatches(fused.data(), got.data(), res, n, 0.0f, 0.75f) == 0);
        CHECK(fused.guardsIntact());
        kiln::rt::setWinogradSplit(was);
      }
    }
}

TEST_CASE("kiln_rt_conv2d_winograd_chain matches the two convs run apart", "[conv][winograd]") {
  // A fusion block Conv 3x3 (+ Relu) -> Conv 1x1 (+ residual Add + Relu)
  // against the naive convs run apart, within tolerance. Bands of one row
  // of tiles and of several, the last one short (output rows not a
  // multiple of m); a batch; the intermediate over two K blocks (the
  // residual in y's buffer is then copied first); serially and on a pool
  // under both Winograd splits (and on 5 threads, whose bands of 2-3 rows
  // of tiles are shorter than a band of the tail); the residual in y's
  // buffer (the same bits).
  kiln::rt::ThreadPool pool(2), pool5(5);
  struct ChainCase {
    const char *name;
    int64_t N, C, H, W, F, F2;
  };
  const ChainCase cases[] = {
      {"small", 1, 8, 8, 8, 8, 16},
      {"odd sizes, batch", 2, 5, 7, 11, 13, 9},
      {"ResNet-like 14x14", 1, 32, 14, 14, 48, 64},
      {"intermediate over two K blocks", 1, 16, 6, 9, 300, 24},
      {"ResNet-like 56x56", 1, 64, 56, 56, 64, 96},
  };
  uint32_t seed = 16000;
  float inf = std::numeric_limits<float>::infinity();
  for (const ChainCase &k : cases)
    for (int m : {2, 4}) {
      const ConvCase a{"a", k.N, k.C, k.H, k.W, k.F, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1};
      const int64_t OH = a.convOH(), OW = a.convOW(), nt = k.N * k.F * OH * OW, n = k.N * k.F2 * OH * OW;
      std::vector<float> x = randomFloats(k.N * k.C * k.H * k.W, seed++), w = randomFloats(k.F * k.C * 9, seed++);
      std::vector<float> bias = randomFloats(k.F, seed++), w2 = randomFloats(k.F2 * k.F, seed++);
      std::vector<float> bias2 = randomFloats(k.F2, seed++), res = randomFloats(n, seed++);
      std::vector<float> up(kiln::winograd::packedSize(m, k.F, k.C)), p2(kiln::gemm::packedASize(k.F2, k.F));
      kiln::winograd::transformWeights(m, w.data(), k.F, k.C, up.data());
      kiln::gemm::packAFull(w2.data(), k.F, false, k.F2, k.F, p2.data());
      // The naive reference: Relu(conv3x3), then conv1x1 + residual, Relu.
      Reference t = naiveConv(a, x.data(), w.data(), bias.data());
      std::vector<float> tv(nt);
      for (int64_t i = 0; i < nt; ++i) tv[i] = (float)std::max(t.value[i], 0.0);
      const ConvCase b{"b", k.N, k.F, OH, OW, k.F2, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1};
      Reference ref = naiveConv(b, tv.data(), w2.data(), bias2.data());
      for (int64_t i = 0; i < n; ++i) {
        ref.add(i, res[i]);
        ref.value[i] = std::max(ref.value[i], 0.0);
      }
      for (int split : {-1, 0, 1, 2}) {
        kiln::rt::ThreadPool *p = split == 2 ? &pool5 : split >= 0 ? &pool : nullptr;
        const int was = kiln::rt::setWinogradSplit(split == 2 ? 1 : split);
        INFO(k.name << ", m=" << m << ", threads=" << (p ? p->size() : 1) << ", split " << split);
        PoolScope scope(p);
        GuardedBuffer got(n), inPlace(n);
        kiln_rt_conv2d_winograd_chain((intptr_t)x.data(), (intptr_t)up.data(), (intptr_t)bias.data(),
                                      (intptr_t)p2.data(), (intptr_t)bias2.data(), (intptr_t)res.data(), got.addr(),
                                      k.N, k.C, k.H, k.W, k.F, OH, OW, 1, 1, m, 0.0f, inf, k.F2, 0.0f, inf);
        CHECK(mismatches(got.data(), ref, 1e-4) == "");
        CHECK(got.guardsIntact());
        std::copy(res.begin(), res.end(), inPlace.data());
        kiln_rt_conv2d_winograd_chain((intptr_t)x.data(), (intptr_t)up.data(), (intptr_t)bias.data(),
                                      (intptr_t)p2.data(), (intptr_t)bias2.data(), inPlace.addr(), inPlace.addr(),
                                      k.N, k.C, k.H, k.W, k.F, OH, OW, 1, 1, m, 0.0f, inf, k.F2, 0.0f, inf);
        CHECK(std::equal(inPlace.data(), inPlace.data() + n, got.data()));
        CHECK(inPlace.guardsIntact());
        kiln::rt::setWinogradSplit(was);
      }
    }
}

TEST_CASE("kiln_rt_maxpool2d matches a naive max over each window", "[conv][pool]") {
  // Windows, strides, dilations and pads of ONNX MaxPool; OH/OW one larger
  // than floor mode gives exercises ceil_mode (the last windows read past
  // the input, which counts as -inf). Serial and on a pool; depthwise convs
  // share the kernel's plane buffers, so one runs in between.
  kiln::rt::ThreadPool pool(3);
  // name, N, C, H, W, F(=C), KH, KW, SH, SW, DH, DW, PT, PL, PB, PR, G(unused)
  const ConvCase cases[] = {
      {"3x3 stride 2 pad 1 (ResNet)", 1, 4, 16, 16, 4, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 1},
      {"2x2 stride 2", 2, 3, 8, 9, 3, 2, 2, 2, 2, 1, 1, 0, 0, 0, 0, 1},
      {"3x3 stride 1 asymmetric pads", 1, 2, 7, 40, 2, 3, 3, 1, 1, 1, 1, 2, 0, 1, 2, 1},
      {"dilation 2 stride 3", 1, 3, 13, 12, 3, 3, 2, 3, 3, 2, 2, 1, 1, 1, 1, 1},
      {"5x5 wide rows", 1, 2, 9, 70, 2, 5, 5, 1, 2, 1, 1, 2, 2, 2, 2, 1},
      // Channel blocks of 8 (2x2 windows; 3x3 ones, strided or small
      // planes, without AVX-512: the kernel tests run again with
      // KILN_NO_AVX512=1).
      {"3x3 stride 2 pad 1, 20 channels", 2, 20, 17, 23, 20, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 1},
      {"2x2 stride 2, 16 channels", 1, 16, 14, 14, 16, 2, 2, 2, 2, 1, 1, 0, 0, 0, 0, 1},
      {"3x3 stride 1 on 14x14, 9 channels", 1, 9, 14, 14, 9, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1},
      {"3x3 stride 2 to 2x2, 16 channels", 2, 16, 4, 4, 16, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 1},
      // The plane kernel (every 3x3 window above too, with AVX-512): stride
      // 2 without left padding, rows of more than 16 outputs; stride 1 with
      // a partial last chunk; stride 2 in blocks of 7 rows (ResNet-50's
      // geometry, 28 -> 14); rows of at most 8 outputs (8 lanes) at stride
      // 1 and at stride 2 without left padding; a plane larger than L1
      // (rows outer).
      {"3x3 stride 2 pad 0, wide rows", 1, 3, 11, 41, 3, 3, 3, 2, 2, 1, 1, 0, 0, 0, 0, 1},
      {"3x3 stride 1 pad 1, 37 columns", 1, 2, 9, 37, 2, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1},
      {"3x3 stride 2 pad 1, 28x28 (7-row blocks)", 1, 3, 28, 28, 3, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 1},
      {"3x3 stride 1 on 7x7", 2, 2, 7, 7, 2, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1},
      {"3x3 stride 2 pad 0 to 7x7", 1, 2, 15, 15, 2, 3, 3, 2, 2, 1, 1, 0, 0, 0, 0, 1},
      {"3x3 stride 1 on a 98x90 plane (rows outer)", 1, 1, 98, 90, 1, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1},
  };
  uint32_t seed = 17000;
  for (const ConvCase &c : cases)
    for (int ceil : {0, 1}) {
      int64_t OH = c.convOH() + ceil, OW = c.convOW() + ceil;
      std::vector<float> x = randomFloats(c.N * c.C * c.H * c.W, seed++);
      std::vector<float> want(c.N * c.C * OH * OW);
      for (int64_t p = 0; p < c.N * c.C; ++p)
        for (int64_t oh = 0; oh < OH; ++oh)
          for (int64_t ow = 0; ow < OW; ++ow) {
            float m = -std::numeric_limits<float>::infinity();
            for (int64_t kh = 0; kh < c.KH; ++kh)
              for (int64_t kw = 0; kw < c.KW; ++kw) {
                int64_t ih = oh * c.SH + kh * c.DH - c.PT, iw = ow * c.SW + kw * c.DW - c.PL;
                if (ih >= 0 && ih < c.H && iw >= 0 && iw < c.W) m = std::max(m, x[(p * c.H + ih) * c.W + iw]);
              }
            want[(p * OH + oh) * OW + ow] = m;
          }
      for (kiln::rt::ThreadPool *pl : {(kiln::rt::ThreadPool *)nullptr, &pool}) {
        INFO(c.name << (ceil ? ", ceil mode" : "") << ", threads=" << (pl ? pl->size() : 1));
        PoolScope scope(pl);
        GuardedBuffer y(want.size());
        kiln_rt_maxpool2d((intptr_t)x.data(), y.addr(), c.N, c.C, c.H, c.W, c.KH, c.KW, OH, OW, c.SH, c.SW, c.DH,
                          c.DW, c.PT, c.PL);
        CHECK(std::equal(want.begin(), want.end(), y.data()));
        CHECK(y.guardsIntact());
        // Same geometry as a depthwise conv next: its zero padding must not
        // leak into pooling, nor -inf into the conv.
        std::vector<float> w = randomFloats(c.C * c.KH * c.KW, seed++);
        GuardedBuffer dw(want.size());
        kiln_rt_conv2d((intptr_t)x.data(), (intptr_t)w.data(), 0, dw.addr(), c.N, c.C, c.H, c.W, c.C, c.KH, c.KW, OH,
                       OW, c.SH, c.SW, c.DH, c.DW, c.PT, c.PL, c.C);
        bool finite = std::all_of(dw.data(), dw.data() + want.size(), [](float v) { return std::isfinite(v); });
        CHECK(finite);
        kiln_rt_maxpool2d((intptr_t)x.data(), y.addr(), c.N, c.C, c.H, c.W, c.KH, c.KW, OH, OW, c.SH, c.SW, c.DH,
                          c.DW, c.PT, c.PL);
        CHECK(std::equal(want.begin(), want.end(), y.data()));
      }
    }
}

TEST_CASE("kiln_rt_maxpool2d pads with -inf, not zero", "[conv][pool]") {
  // All inputs negative: a window over the padding must still give the
  // largest input it covers (the plane kernel with AVX-512, channel blocks
  // or plane windows without).
  for (int64_t S : {1, 2})
    for (int64_t C : {1, 16}) {
      const int64_t H = 10, W = 34, OH = (H + 2 - 3) / S + 1, OW = (W + 2 - 3) / S + 1;
      std::vector<float> x = randomFloats(C * H * W, 17400);
      for (float &v : x) v = -2.0f - std::fabs(v);
      std::vector<float> y(C * OH * OW);
      kiln_rt_maxpool2d((intptr_t)x.data(), (intptr_t)y.data(), 1, C, H, W, 3, 3, OH, OW, S, S, 1, 1, 1, 1);
      for (int64_t p = 0; p < C; ++p)
        for (int64_t oh = 0; oh < OH; ++oh)
          for (int64_t ow = 0; ow < OW; ++ow) {
            float m = -std::numeric_limits<float>::infinity();
            for (int64_t ih = oh * S - 1; ih <= oh * S + 1; ++ih)
              for (int64_t iw = ow * S - 1; iw <= ow * S + 1; ++iw)
                if (ih >= 0 && ih < H && iw >= 0 && iw < W) m = std::max(m, x[(p * H + ih) * W + iw]);
            INFO("stride " << S << " channels " << C << " output " << oh << ", " << ow);
            CHECK(y[(p * OH + oh) * OW + ow] == m);
          }
    }
}

TEST_CASE("kiln_rt_maxpool2d propagates NaN from a window, as ONNX's max does", "[conv][pool]") {
  const int64_t H = 9, W = 20, OH = 4, OW = 10; // 3x3, stride 2, pad 1
  for (int64_t C : {1, 16}) { // one plane; a block of 8 channels with the NaN in channel 11
    const int64_t c = C - 5 > 0 ? 11 : 0;
    std::vector<float> x = randomFloats(C * H * W, 17500);
    x[(c * H + 4) * W + 7] = std::numeric_limits<float>::quiet_NaN();
    std::vector<float> y(C * OH * OW);
    kiln_rt_maxpool2d((intptr_t)x.data(), (intptr_t)y.data(), 1, C, H, W, 3, 3, OH, OW, 2, 2, 1, 1, 1, 1);
    for (int64_t k = 0; k < C; ++k)
      for (int64_t oh = 0; oh < OH; ++oh)
        for (int64_t ow = 0; ow < OW; ++ow) {
          bool covers = k == c && 4 >= oh * 2 - 1 && 4 <= oh * 2 + 1 && 7 >= ow * 2 - 1 && 7 <= ow * 2 + 1;
          INFO("channel " << k << " output " << oh << ", " << ow);
          CHECK(std::isnan(y[(k * OH + oh) * OW + ow]) == covers);
        }
  }
}

TEST_CASE("depthwise convs propagate NaN through the bias and the clamp", "[conv]") {
  // A NaN input reaches exactly the outputs whose window holds it, with or
  // without a fused Relu-style clamp (as std::min/std::max: NaN kept), on
  // every depthwise path: stride 1 and 2, wide and narrow rows.
  struct Geo { int64_t H, W, S; };
  for (Geo g : {Geo{14, 14, 1}, Geo{7, 7, 1}, Geo{20, 37, 2}, Geo{9, 9, 2}, Geo{30, 30, 1}})
    for (bool clamp : {false, true}) {
      const int64_t C = 3, OH = (g.H + 2 - 3) / g.S + 1, OW = (g.W + 2 - 3) / g.S + 1, c = 1, ih = 4, iw = 5;
      std::vector<float> x = randomFloats(C * g.H * g.W, 17600), w = randomFloats(C * 9, 17601);
      std::vector<float> b = randomFloats(C, 17602);
      x[(c * g.H + ih) * g.W + iw] = std::numeric_limits<float>::quiet_NaN();
      std::vector<float> y(C * OH * OW);
      float lo = clamp ? 0.0f : -std::numeric_limits<float>::infinity();
      float hi = clamp ? 6.0f : std::numeric_limits<float>::infinity();
      kiln_rt_conv2d_act((intptr_t)x.data(), (intptr_t)w.data(), (intptr_t)b.data(), (intptr_t)y.data(), 1, C,
                         g.H, g.W, C, 3, 3, OH, OW, g.S, g.S, 1, 1, 1, 1, C, lo, hi);
      int64_t bad = 0;
      for (int64_t k = 0; k < C; ++k)
        for (int64_t oh = 0; oh < OH; ++oh)
          for (int64_t ow = 0; ow < OW; ++ow) {
            bool covers = k == c && ih >= oh * g.S - 1 && ih <= oh * g.S + 1 && iw >= ow * g.S - 1 &&
                          iw <= ow * g.S + 1;
            bad += std::isnan(y[(k * OH + oh) * OW + ow]) != covers;
          }
      INFO(g.H << "x" << g.W << " stride " << g.S << (clamp ? ", clamped" : ""));
      CHECK(bad == 0);
    }
}
