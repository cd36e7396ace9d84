// Matrix products of the vectorised kernels (engine-private): x @ w^T for weights packed once
// into panels, blocked for the caches, with bias, an activation, a gated (GLU) product or an
// accumulation into the result fused into the epilogue.
//
// Compiled once per instruction set (JME_ISA, JME_WIDTH) like every simd_*.cpp file, and
// bound by the same rule (see simd_vec.h): no C++ standard library, no inline function shared
// with another translation unit. This file alone is compiled a third time, with JME_BF16 and
// AVX512_BF16 flags (JME_ISA=avx512bf16): the same products on bfloat16 weights, whose panel
// rows hold pairs of depth rows, and inputs rounded to bfloat16 pairs as they are read, with
// float32 sums (vdpbf16ps: twice the multiply-adds of an FMA per instruction).

#include "simd_vec.h"

#if JME_BF16
#include <immintrin.h>  // intrinsics only: always inlined, never emitted as shared symbols
#endif

namespace jme_native {
namespace JME_ISA {

// Columns per panel (two vectors) and rows per tile. A tile keeps its rows x panel results in
// registers: 2 * kTileRows accumulators, two panel vectors and one broadcast fit the 16 ymm
// (AVX2) or 32 zmm (AVX-512) registers.
constexpr int64_t kPanel = 2 * W;
constexpr int kTileRows = W == 16 ? 12 : 6;
#if JME_BF16
typedef uint16_t weight_t;  // bfloat16 bits
typedef uint32_t input_t;   // a pair of bfloat16 inputs (two depth rows)
constexpr int64_t kDepthStep = 2;
#else
typedef float weight_t;
typedef float input_t;
constexpr int64_t kDepthStep = 1;
#endif
// Depth rows per panel row, and weights per panel row (128 bytes either way).
constexpr int64_t kPanelRow = kPanel * kDepthStep;
// How far ahead a tile prefetches its panel. With few rows the product streams the weights
// from memory (a small model's layers outgrow the L3 cache) faster than the hardware
// prefetcher fetches them: 12 KiB ahead took a 23-row product over six MiniLM layers from
// 163 to 223 GFLOP/s on one Zen 5 core (none, 2, 4, 8, 12 and 16 KiB tried).
constexpr int64_t kPrefetchAhead = 12288 / (kPanel * 4);  // in panel rows
// Cache blocking for products deeper than one depth block: a panel's block of kDepthBlock
// rows (16 KiB) stays in the L1 cache while every row tile of a row block uses it, and the
// row block's inputs (kRowBlock rows of kDepthBlock floats: 120 KiB with AVX2) stay in L2
// while the kPanelGroup panels of a group use them. A tile's sums between depth blocks are
// kept in a scratch buffer (kPanelGroup x kRowBlock x kPanel floats per thread). Without
// blocking, every panel re-read all the inputs from L3 and its own rows from L2: 46 against
// 70 GFLOP/s (MKL's) per core at Qwen3-0.6B's and ModernBERT-base's shapes on Zen 3.
constexpr int64_t kDepthBlock = 4096 * kDepthStep / kPanel;
constexpr int64_t kRowBlock = 20 * kTileRows;
constexpr int64_t kPanelGroup = 8;

namespace {

// Writes the first n floats of v to p (all W when n == W), or adds them with `accumulate`.
inline void put(float* p, vf v, int64_t n, bool accumulate) {
  if (n == W) {
    store(p, accumulate ? v + load(p) : v);
  } else {
    store_part(p, accumulate ? v + load_part(p, n, 0.0f) : v, n);
  }
}

// c[r, 0:cols] = a[r, :] . panel (+ bias, then the epilogue `mode`) for R rows of `a` (row
// stride lda) over `depth` panel rows of kPanelRow weights; bias (or null) holds this panel's
// kPanel values. With kGlu the panel's two halves are the activated and the gate columns of
// `cols` (<= W) outputs. A depth block of a deeper product starts from the sums in `partial`
// (R x kPanel) unless it is the first, and leaves its sums there unless it is the last.
template <int R>
inline void product_tile(const input_t* a, int64_t lda, int64_t depth, const weight_t* panel,
                         float* c, int64_t ldc, int64_t cols, const float* bias, int mode,
                         float* partial, bool first, bool last) {
  vf low[R], high[R];
  for (int r = 0; r < R; ++r) {
    low[r] = first ? vf{} : load(partial + r * kPanel);
    high[r] = first ? vf{} : load(partial + r * kPanel + W);
  }
  for (int64_t p = 0; p < depth; ++p) {
    const weight_t* ahead = panel + (p + kPrefetchAhead) * kPanelRow;
    for (int64_t line = 0; line < kPanelRow; line += 64 / sizeof(weight_t))
      __builtin_prefetch(ahead + line);
#if JME_BF16
    const __m512bh b0 = (__m512bh)_mm512_loadu_si512(panel + p * kPanelRow);
    const __m512bh b1 = (__m512bh)_mm512_loadu_si512(panel + p * kPanelRow + kPanel);
    for (int r = 0; r < R; ++r) {
      const __m512bh x = (__m512bh)_mm512_set1_epi32(static_cast<int>(a[r * lda + p]));
      low[r] = _mm512_dpbf16_ps(low[r], x, b0);
      high[r] = _mm512_dpbf16_ps(high[r], x, b1);
    }
#else
    const vf b0 = load(panel + p * kPanel), b1 = load(panel + p * kPanel + W);
    for (int r = 0; r < R; ++r) {
      const vf x = splat(a[r * lda + p]);
      low[r] += x * b0;
      high[r] += x * b1;
    }
#endif
  }
  if (!last) {
    for (int r = 0; r < R; ++r) {
      store(partial + r * kPanel, low[r]);
      store(partial + r * kPanel + W, high[r]);
    }
    return;
  }
  const vf bias0 = bias ? load(bias) : vf{}, bias1 = bias ? load(bias + W) : vf{};
  const int activation = mode & kActivationMask;
  const bool accumulate = mode & kAccumulate;
  for (int r = 0; r < R; ++r) {
    float* row = c + r * ldc;
    if (mode & kGlu) {
      put(row, activate(low[r] + bias0, activation) * (high[r] + bias1), cols, accumulate);
      continue;
    }
    const vf v0 = activate(low[r] + bias0, activation), v1 = activate(high[r] + bias1, activation);
    if (cols > W) {
      put(row, v0, W, accumulate);
      put(row + W, v1, cols - W, accumulate);
    } else {
      put(row, v0, cols, accumulate);
    }
  }
}

template <int R>
void tail_tile(int64_t rows, const input_t* a, int64_t lda, int64_t depth, const weight_t* panel,
               float* c, int64_t ldc, int64_t cols, const float* bias, int mode, float* partial,
               bool first, bool last) {
  if constexpr (R > 0) {
    if (rows == R)
      return product_tile<R>(a, lda, depth, panel, c, ldc, cols, bias, mode, partial, first,
                             last);
    tail_tile<R - 1>(rows, a, lda, depth, panel, c, ldc, cols, bias, mode, partial, first, last);
  }
}

#if JME_BF16
// Rows [0, rows) of a (row stride lda), depth [0, depth), rounded to bfloat16 (to nearest,
// ties to even) into `pairs` (row stride kDepthBlock / 2 pairs); an odd depth's last pair
// gets a zero.
inline void to_bf16_pairs(const float* a, int64_t lda, int64_t rows, int64_t depth,
                          uint32_t* pairs) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* src = a + r * lda;
    uint16_t* dst = reinterpret_cast<uint16_t*>(pairs + r * (kDepthBlock / 2));
    for (int64_t j = 0; j < depth; j += 2 * W) {
      const int64_t n = depth - j < 2 * W ? depth - j : 2 * W;
      const __mmask16 lo = n >= W ? 0xffff : static_cast<__mmask16>((1u << n) - 1);
      const __mmask16 hi = n > W ? static_cast<__mmask16>((1u << (n - W)) - 1) : 0;
      const __m512bh v = _mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(hi, src + j + W),
                                             _mm512_maskz_loadu_ps(lo, src + j));
      const int64_t keep = (n + 1) & ~int64_t{1};
      const __mmask32 mask = keep == 2 * W ? 0xffffffffu : (1u << keep) - 1;
      _mm512_mask_storeu_epi16(dst + j, mask, (__m512i)v);
    }
  }
}
#endif

}  // namespace

int64_t panel_width() { return kPanel; }

// Floats of scratch memory packed_product() needs per thread: the sums between depth blocks,
// and (bf16) a row block's inputs rounded to bfloat16.
int64_t product_scratch() {
  return kPanelGroup * kRowBlock * kPanel + (kDepthStep == 2 ? kRowBlock * kDepthBlock / 2 : 0);
}

// c (rows x cols) = a (rows x depth) @ w^T (+ bias, then the epilogue `mode`) for the panels
// [first, last) of w packed by pack_linear: panel p holds w's rows p*kPanel... as `depth` rows
// of kPanel floats (bf16: depth / 2 rows, rounded up, each holding two depth rows' weights
// as a pair per column), and zeros past the last row. Panels are independent, so threads may
// split them. bias (or null) holds `cols` floats. scratch: product_scratch() floats (fp32:
// or null when depth <= kDepthBlock).
//
// With kGlu, w was packed by pack_glu: panel p holds W rows of the activated half and the
// same W rows of the gate half, for the outputs p*W...; c has `cols` of those, and bias (or
// null) holds kPanel floats per panel in the same order.
void packed_product(const float* a, const void* weights, const float* bias, int mode, float* c,
                    int64_t rows, int64_t depth, int64_t cols, int64_t first, int64_t last,
                    float* scratch) {
  const weight_t* packed = static_cast<const weight_t*>(weights);
  const int64_t steps = (depth + kDepthStep - 1) / kDepthStep;  // panel rows
  float panel_bias[kPanel];
  const bool glu = mode & kGlu;
  const int64_t step = glu ? W : kPanel;  // outputs per panel
  for (int64_t g0 = first; g0 < last; g0 += kPanelGroup) {
    const int64_t g1 = g0 + kPanelGroup < last ? g0 + kPanelGroup : last;
    for (int64_t m0 = 0; m0 < rows; m0 += kRowBlock) {
      const int64_t m1 = m0 + kRowBlock < rows ? m0 + kRowBlock : rows;
      for (int64_t k0 = 0; k0 < depth; k0 += kDepthBlock) {
        const int64_t kc = depth - k0 < kDepthBlock ? depth - k0 : kDepthBlock;
        const bool first_block = k0 == 0, last_block = k0 + kc == depth;
#if JME_BF16
        uint32_t* inputs = reinterpret_cast<uint32_t*>(scratch + kPanelGroup * kRowBlock * kPanel);
        to_bf16_pairs(a + m0 * depth + k0, depth, m1 - m0, kc, inputs);
        const int64_t lda = kDepthBlock / 2;
        auto row_inputs = [&](int64_t r) { return inputs + (r - m0) * lda; };
#else
        const int64_t lda = depth;
        auto row_inputs = [&](int64_t r) { return a + r * depth + k0; };
#endif
        const int64_t kn = (kc + kDepthStep - 1) / kDepthStep;  // this block's panel rows
        for (int64_t p = g0; p < g1; ++p) {
          const weight_t* panel = packed + (p * steps + k0 / kDepthStep) * kPanelRow;
          const int64_t width = cols - p * step < step ? cols - p * step : step;
          const float* b = nullptr;
          if (bias && glu) {
            b = bias + p * kPanel;
          } else if (bias) {  // the panel's share, zero-padded: the tiles load whole vectors
            for (int64_t j = 0; j < kPanel; ++j)
              panel_bias[j] = j < width ? bias[p * kPanel + j] : 0;
            b = panel_bias;
          }
          float* out = c + p * step;
          float* partial = scratch ? scratch + (p - g0) * kRowBlock * kPanel : nullptr;
          int64_t r = m0;
          for (; r + kTileRows <= m1; r += kTileRows)
            product_tile<kTileRows>(row_inputs(r), lda, kn, panel, out + r * cols, cols,
                                    width, b, mode, partial ? partial + (r - m0) * kPanel : nullptr,
                                    first_block, last_block);
          tail_tile<kTileRows - 1>(m1 - r, row_inputs(r), lda, kn, panel, out + r * cols,
                                   cols, width, b, mode,
                                   partial ? partial + (r - m0) * kPanel : nullptr, first_block,
                                   last_block);
        }
      }
    }
  }
}

}  // namespace JME_ISA
}  // namespace jme_native
