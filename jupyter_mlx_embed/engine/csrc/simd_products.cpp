// Matrix products of the vectorised kernels (engine-private): x @ w^T for weights packed once
// into panels, blocked for the caches, with bias, an activation, a gated (GLU) product or an
// accumulation into the result fused into the epilogue.
//
// Compiled once per instruction set (JME_ISA, JME_WIDTH) like every simd_*.cpp file, and
// bound by the same rule (see simd_vec.h): no C++ standard library, no inline function shared
// with another translation unit. This file alone is compiled more times:
// - with JME_BF16 and AVX512_BF16 flags (JME_ISA=avx512bf16): the same products on bfloat16
//   weights, whose panel rows hold pairs of depth rows, and inputs rounded to bfloat16 pairs
//   as they are read, with float32 sums (vdpbf16ps: twice an FMA's multiply-adds);
// - with JME_AMX and AMX flags as well (JME_ISA=avx512amx): the same products on the same
//   bfloat16 panels with AMX tiles (tdpbf16ps: 16 x 16 sums of 32 products per instruction),
//   the inputs rounded to bfloat16 once per product (quantize_inputs, as int8's are);
// - with JME_INT8, once per instruction set (JME_ISA=avx2int8, avx512int8): the products on
//   int8 weights (per output column scales), whose panel rows hold quads of depth rows, and
//   inputs quantized once per product to int8 with one scale per row (quantize_inputs), with
//   int32 sums: AVX-512 VNNI's vpdpbusd (four times an FMA's multiply-adds per instruction) on
//   the inputs offset to unsigned bytes; on AVX2 vpmaddubsw on the inputs' magnitudes and the
//   weights given the inputs' signs (so that no pair of products overflows 16 bits), then
//   vpmaddwd. Both compute the same integer sums.

#include "simd_vec.h"

#ifndef JME_BF16
#define JME_BF16 0
#endif
#ifndef JME_INT8
#define JME_INT8 0
#endif
#ifndef JME_AMX
#define JME_AMX 0
#endif
#if JME_AMX  // the AVX512_BF16 products' weights and rounding, on AMX tiles
#undef JME_BF16
#define JME_BF16 1
#endif

#if JME_BF16 || JME_INT8
#include <immintrin.h>  // intrinsics only: always inlined, never emitted as shared symbols
#endif

namespace jme_native {
namespace JME_ISA {

// Columns per panel (two vectors), and the shape of a tile, whose sums stay in registers:
// kTileRows rows by kTilePanels panels (2 * kTilePanels vectors each), plus the panels'
// vectors and one broadcast, fit the 16 ymm (AVX2) or 32 zmm (AVX-512) registers; AVX2's int8
// products need four more (both forms of the input, the signed weights, the 16-bit ones).
// With AVX-512, 6 rows by two panels (four vectors per broadcast) rather than 12 rows by one:
// 1.08-1.10x the speed on one Sapphire Rapids-class core at 1200 x 768 x 3072 and 2900 x 768
// x 768 (paired runs). A group's odd last panel takes tiles of kLoneRows rows by one panel.
constexpr int64_t kPanel = 2 * W;
constexpr int kTilePanels = W == 16 ? 2 : 1;
constexpr int kTileRows = W == 16 ? 6 : JME_INT8 ? 4 : 6;
constexpr int kLoneRows = kTileRows * kTilePanels;
// Up to this many rows (a text or two), a product streams its weights from memory once, in its
// first tile; the others compute from the cache while nothing streams. So rows beyond one
// tile's take the taller one-panel tiles (fewer passes): 1.12-1.15x at 8-12 rows, 1.04-1.09x
// at 16-24 over MiniLM's six layers on one Sapphire Rapids-class core; 0.98x at 48 rows.
constexpr int64_t kFewRows = 2 * kLoneRows;
#if JME_BF16
typedef uint16_t weight_t;  // bfloat16 bits
typedef uint32_t input_t;   // a pair of bfloat16 inputs (two depth rows)
typedef vf sum_t;
constexpr int64_t kDepthStep = 2;
#elif JME_INT8
typedef int8_t weight_t;   // quantized weights
typedef uint32_t input_t;  // a quad of quantized inputs (four depth rows)
typedef vi sum_t;
constexpr int64_t kDepthStep = 4;
#else
typedef float weight_t;
typedef float input_t;
typedef vf sum_t;
constexpr int64_t kDepthStep = 1;
#endif
// Depth rows per panel row, and weights per panel row (128 bytes either way).
constexpr int64_t kPanelRow = kPanel * kDepthStep;
// How far ahead the first tile of a row block prefetches its panels (the others find them in
// L1). With few rows the product streams the weights from memory (a small model's layers
// outgrow the L3 cache) faster than the hardware prefetcher fetches them: 12 KiB ahead took a
// 23-row product over six MiniLM layers from 163 to 223 GFLOP/s on one Zen 5 core (none, 2,
// 4, 8, 12 and 16 KiB tried). Every tile prefetching cost 1.04-1.07x at 1200 rows.
constexpr int64_t kPrefetchAhead = 12288 / (kPanel * 4);  // in panel rows
// Cache blocking: a panel's block of kDepthBlock rows (16 KiB; a tile's two: 32 KiB, 3%
// faster than blocks half as deep on Sapphire Rapids) stays in the L1 cache while every row
// tile of a row block uses it, and the row block's inputs (kRowBlock rows of kDepthBlock
// floats: 120 KiB with AVX2) stay in L2 while the kPanelGroup panels of a group use them. The
// row block's sums by the group's panels are kept in a scratch buffer (kPanelGroup x kRowBlock
// x kPanel floats per thread) until their results are written. Without blocking, every panel
// re-read all the inputs from L3 and its own rows from L2: 46 against 70 GFLOP/s (MKL's) per
// core at Qwen3-0.6B's and ModernBERT-base's shapes on Zen 3.
constexpr int64_t kDepthBlock = 4096 * kDepthStep / kPanel;
constexpr int64_t kRowBlock = 20 * kLoneRows;
constexpr int64_t kPanelGroup = 8;
#if JME_AMX
// AMX tiles hold 16 rows of 64 bytes: a tile of inputs is 16 rows x 32 depth values, a tile of
// weights 16 panel rows (pairs of depth rows) x the W columns of one half panel (AMX's layout
// for its second operand, as the panels already are), a tile of sums 16 rows x W floats.
constexpr int64_t kTile = 16;            // rows of every tile
constexpr int64_t kTileDepth = 2 * kTile;  // depth values per tile step
// A product's panels are taken a group at a time, the group's weights (about 1 MiB) staying
// in the L2 cache while every block of two row tiles uses them, each over the whole depth.
// (Chunks of 8 tile steps, the inputs' chunk kept in L1 and the sums spilled between chunks,
// were slower: 1,190 against 1,330 GFLOP/s at bge-base's 768 x 3072 on two cores.)
constexpr int64_t kGroupBytes = int64_t{1} << 20;
// How many tile steps ahead the weights and inputs are prefetched (from L2 and beyond; the
// tile loads alone left the tiles waiting): 1,050 -> 1,420 GFLOP/s on two Sapphire Rapids-
// class cores at bge-base's 768 x 3072 (1, 2 and 4 steps tried).
constexpr int64_t kTileAhead = 2;
#endif

namespace {

// Writes the first n floats of v to p (all W when n == W), or adds them with `accumulate`.
inline void put(float* p, vf v, int64_t n, bool accumulate) {
  if (n == W) {
    store(p, accumulate ? v + load(p) : v);
  } else {
    store_part(p, accumulate ? v + load_part(p, n, 0.0f) : v, n);
  }
}

#if JME_INT8
// No correction for the inputs' offset (AVX2, whose inputs are not offset).
alignas(64) const int32_t kNoOffsets[kPanel] = {};

inline vf vabs(vf v) { return v < 0 ? -v : v; }

// To the nearest integer, ties to even (the default rounding mode).
inline vi vround(vf v) {
#if JME_WIDTH == 16
  return (vi)_mm512_cvtps_epi32((__m512)v);
#else
  return (vi)_mm256_cvtps_epi32((__m256)v);
#endif
}
#endif

// A tile's sums: float32, or int32 scaled to float32 (with kInt8) by the row's input scale
// and the column's weight scale, less the inputs' offset times the column's weight sums.
struct Scales {
  const float* rows;     // each row's input scale, or null (float sums)
  const float* columns;  // the panel's kPanel weight scales
  const int32_t* offsets;  // the panel's kPanel corrections for the inputs' offset (VNNI)
};

inline sum_t load_sum(const float* p) {
  sum_t v;
  __builtin_memcpy(&v, p, sizeof v);
  return v;
}

inline void store_sum(float* p, sum_t v) { __builtin_memcpy(p, &v, sizeof v); }

// The float value of sums `v` of row r, columns half*W...
inline vf scaled(sum_t v, const Scales& s, int r, int half) {
#if JME_INT8
  vi offset;
  __builtin_memcpy(&offset, s.offsets + half * W, sizeof offset);
  return __builtin_convertvector(v - offset, vf) * (splat(s.rows[r]) * load(s.columns + half * W));
#else
  (void)s, (void)r, (void)half;
  return v;
#endif
}

// One row's results from its panel's two vectors of sums (bias added): the epilogue `mode`
// on `cols` outputs written (or added, kAccumulate) to `row`. With kGlu the two halves are
// the activated and the gate columns of `cols` (<= W) outputs.
inline void finish_row(float* row, vf sum0, vf sum1, int64_t cols, int mode) {
  const int activation = mode & kActivationMask;
  const bool accumulate = mode & kAccumulate;
  if (mode & kGlu) {
    put(row, activate(sum0, activation) * sum1, cols, accumulate);
    return;
  }
  const vf v0 = activate(sum0, activation), v1 = activate(sum1, activation);
  if (cols > W) {
    put(row, v0, W, accumulate);
    put(row + W, v1, cols - W, accumulate);
  } else {
    put(row, v0, cols, accumulate);
  }
}

// The bias (or null) of panel p's `width` outputs as the tiles read it: kPanel values, in
// `own` zero-padded (a gated product's packed bias is read in place).
inline const float* panel_bias(const float* bias, bool glu, int64_t p, int64_t width,
                               float* own) {
  if (!bias) return nullptr;
  if (glu) return bias + p * kPanel;
  for (int64_t j = 0; j < kPanel; ++j) own[j] = j < width ? bias[p * kPanel + j] : 0;
  return own;
}

// Adds the products of R rows of `a` (row stride lda) by NP adjacent panels (`pstride` weights
// apart) over `depth` panel rows of kPanelRow weights to their sums, which start from zero
// (`first`) or from `sums`, and are left there: panel i's row r at sums + i * sstride +
// r * kPanel. int8 on AVX2: each row's input magnitudes follow its signed inputs at
// a + row * lda + lda / 2.
template <int R, int NP>
inline void product_tile(const input_t* a, int64_t lda, int64_t depth, const weight_t* panel,
                         int64_t pstride, float* sums, int64_t sstride, bool first, bool fetch) {
  sum_t acc[R][2 * NP];
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < 2 * NP; ++j)
      acc[r][j] = first ? sum_t{} : load_sum(sums + (j / 2) * sstride + r * kPanel + (j % 2) * W);
#if JME_INT8 && JME_WIDTH == 8
  const __m256i ones = _mm256_set1_epi16(1);
#endif
  for (int64_t p = 0; p < depth; ++p) {
    for (int i = 0; i < (fetch ? NP : 0); ++i) {
      const weight_t* ahead = panel + i * pstride + (p + kPrefetchAhead) * kPanelRow;
      for (int64_t line = 0; line < kPanelRow; line += 64 / sizeof(weight_t))
        __builtin_prefetch(ahead + line);
    }
#if JME_BF16
    __m512bh b[2 * NP];
    for (int j = 0; j < 2 * NP; ++j)
      b[j] = (__m512bh)_mm512_loadu_si512(panel + (j / 2) * pstride + p * kPanelRow +
                                          (j % 2) * kPanel);
    for (int r = 0; r < R; ++r) {
      const __m512bh x = (__m512bh)_mm512_set1_epi32(static_cast<int>(a[r * lda + p]));
      for (int j = 0; j < 2 * NP; ++j) acc[r][j] = _mm512_dpbf16_ps(acc[r][j], x, b[j]);
    }
#elif JME_INT8 && JME_WIDTH == 16
    __m512i b[2 * NP];
    for (int j = 0; j < 2 * NP; ++j)
      b[j] = _mm512_loadu_si512(panel + (j / 2) * pstride + p * kPanelRow + (j % 2) * 4 * W);
    for (int r = 0; r < R; ++r) {
      const __m512i x = _mm512_set1_epi32(static_cast<int>(a[r * lda + p]));
      for (int j = 0; j < 2 * NP; ++j)
        acc[r][j] = (vi)_mm512_dpbusd_epi32((__m512i)acc[r][j], x, b[j]);
    }
#elif JME_INT8
    __m256i b[2 * NP];
    for (int j = 0; j < 2 * NP; ++j)
      b[j] = _mm256_loadu_si256(
          (const __m256i*)(panel + (j / 2) * pstride + p * kPanelRow + (j % 2) * 4 * W));
    for (int r = 0; r < R; ++r) {
      const __m256i x = _mm256_set1_epi32(static_cast<int>(a[r * lda + p]));
      const __m256i size = _mm256_set1_epi32(static_cast<int>(a[r * lda + lda / 2 + p]));
      for (int j = 0; j < 2 * NP; ++j)
        acc[r][j] += (vi)_mm256_madd_epi16(
            _mm256_maddubs_epi16(size, _mm256_sign_epi8(b[j], x)), ones);
    }
#else
    vf b[2 * NP];
    for (int j = 0; j < 2 * NP; ++j)
      b[j] = load(panel + (j / 2) * pstride + p * kPanel + (j % 2) * W);
    for (int r = 0; r < R; ++r) {
      const vf x = splat(a[r * lda + p]);
      for (int j = 0; j < 2 * NP; ++j) acc[r][j] += x * b[j];
    }
#endif
  }
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < 2 * NP; ++j)
      store_sum(sums + (j / 2) * sstride + r * kPanel + (j % 2) * W, acc[r][j]);
}

// product_tile<rows, NP> for 0 <= rows <= R.
template <int R, int NP>
void tail_tile(int64_t rows, const input_t* a, int64_t lda, int64_t depth, const weight_t* panel,
               int64_t pstride, float* sums, int64_t sstride, bool first, bool fetch) {
  if constexpr (R > 0) {
    if (rows == R)
      return product_tile<R, NP>(a, lda, depth, panel, pstride, sums, sstride, first, fetch);
    tail_tile<R - 1, NP>(rows, a, lda, depth, panel, pstride, sums, sstride, first, fetch);
  }
}

// The sums of rows [m0, m1) by NP adjacent panels, in tiles of R rows (the last one shorter):
// row r's inputs at row_inputs(r). Only the first tile prefetches the weights; the others find
// them in cache.
template <int R, int NP, typename Inputs>
inline void row_tiles(int64_t m0, int64_t m1, const Inputs& row_inputs, int64_t lda,
                      int64_t depth, const weight_t* panel, int64_t pstride, float* sums,
                      int64_t sstride, bool first) {
  int64_t r = m0;
  for (; r + R <= m1; r += R)
    product_tile<R, NP>(row_inputs(r), lda, depth, panel, pstride, sums + r * kPanel, sstride,
                        first, r == m0);
  tail_tile<R - 1, NP>(m1 - r, row_inputs(r), lda, depth, panel, pstride, sums + r * kPanel,
                       sstride, first, r == m0);
}

#if JME_BF16
// The first n (1 to 2 W) floats at src rounded to bfloat16 (to nearest, ties to even), zeros
// after them: 2 W values.
inline __m512bh to_bf16(const float* src, int64_t n) {
  const __mmask16 lo = n >= W ? 0xffff : static_cast<__mmask16>((1u << n) - 1);
  const __mmask16 hi = n > W ? static_cast<__mmask16>((1u << (n - W)) - 1) : 0;
  return _mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(hi, src + W), _mm512_maskz_loadu_ps(lo, src));
}

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
      const __m512bh v = to_bf16(src + j, n);
      const int64_t keep = (n + 1) & ~int64_t{1};
      const __mmask32 mask = keep == 2 * W ? 0xffffffffu : (1u << keep) - 1;
      _mm512_mask_storeu_epi16(dst + j, mask, (__m512i)v);
    }
  }
}
#endif

}  // namespace

int64_t panel_width() { return kPanel; }

// Adjacent panels that a tile takes at once: threads split a product's panels in runs of as
// many (an odd run's last panel would take the slower one-panel tiles).
int64_t tile_panels() { return JME_AMX ? 1 : kTilePanels; }

// Floats of scratch memory packed_product() needs per thread: the sums between depth blocks,
// and (bf16) a row block's inputs rounded to bfloat16; with AMX, a block's sums and weights.
int64_t product_scratch() {
#if JME_AMX  // two row tiles' sums, and a tile step of weights
  return 2 * kTile * kPanel + kTile * kPanelRow / 2;
#else
  return kPanelGroup * kRowBlock * kPanel + (JME_BF16 ? kRowBlock * kDepthBlock / 2 : 0);
#endif
}

#if JME_INT8
namespace {
// quantize_inputs()'s layout: the rows' scales (padded to a cache line), then per row its
// quads of signed inputs (VNNI: offset by 128 to unsigned bytes), and on AVX2 their
// magnitudes after them; lda: a row's stride in quads.
constexpr int64_t quad_stride(int64_t depth) { return (JME_WIDTH == 8 ? 2 : 1) * ((depth + 3) / 4); }
constexpr int64_t scales_size(int64_t rows) { return (rows + 15) / 16 * 16; }

// One step of the fast Walsh-Hadamard transform between lanes h apart: lane i becomes
// v[i] + v[i ^ h] where bit h of i is clear, v[i ^ h] - v[i] where it is set.
inline vf butterfly(vf v, int h) {
  vi partner;
  vf sign;
  for (int i = 0; i < W; ++i) {
    partner[i] = i ^ h;
    sign[i] = (i & h) ? -1.0f : 1.0f;
  }
  return __builtin_shuffle(v, partner) + sign * v;
}

// `x` (depth values, a multiple of kRotationBlock) times the orthonormal Hadamard matrix of
// order kRotationBlock, block by block, into `out` (see kRotationBlock in spec.h).
void rotate_blocks(const float* x, int64_t depth, float* out) {
  constexpr int V = kRotationBlock / W;  // vectors per block
  for (int64_t b = 0; b < depth; b += kRotationBlock) {
    vf v[V];
    for (int i = 0; i < V; ++i) v[i] = load(x + b + i * W);
    for (int h = 1; h < W; h *= 2)
      for (int i = 0; i < V; ++i) v[i] = butterfly(v[i], h);
    for (int h = 1; h < V; h *= 2) {
      for (int i = 0; i < V; ++i) {
        if (i & h) continue;
        const vf first = v[i], second = v[i + h];
        v[i] = first + second;
        v[i + h] = first - second;
      }
    }
    for (int i = 0; i < V; ++i) store(out + b + i * W, v[i] * splat(0.125f));
  }
}
}  // namespace

// Bytes quantize_inputs() writes for `rows` inputs of `depth` values.
int64_t quantized_size(int64_t rows, int64_t depth) {
  return 4 * (scales_size(rows) + rows * quad_stride(depth));
}

// The rows [first, last) of a (rows x depth floats) quantized for packed_product into `out`
// (quantized_size(rows, depth) bytes): each row rotated (where depth is a multiple of
// kRotationBlock, as the weights were at packing), scaled by 127 / its largest magnitude and
// rounded to the nearest integer (ties to even), its scale being the inverse; a row of zeros
// has scale 0. Rows are independent, so threads may split them.
void quantize_inputs(const float* a, int64_t rows, int64_t depth, int64_t first, int64_t last,
                     void* out) {
  float* scales = static_cast<float*>(out);
  const int64_t lda = quad_stride(depth), quads = (depth + 3) / 4;
  const bool rotated = depth % kRotationBlock == 0;
  // One row's rotated values, on the stack (4 bytes per value of depth).
  float* turned = rotated ? static_cast<float*>(__builtin_alloca(4 * depth)) : nullptr;
  for (int64_t r = first; r < last; ++r) {
    const float* x = a + r * depth;
    if (rotated) {
      rotate_blocks(x, depth, turned);
      x = turned;
    }
    vf big{};
    int64_t j = 0;
    for (; j + W <= depth; j += W) big = vmax(big, vabs(load(x + j)));
    float largest = hmax(big);
    for (; j < depth; ++j) largest = __builtin_fabsf(x[j]) > largest ? __builtin_fabsf(x[j]) : largest;
    scales[r] = largest / 127.0f;
    const float inverse = largest > 0 ? 127.0f / largest : 0.0f;
    int8_t* q = reinterpret_cast<int8_t*>(scales + scales_size(rows) + r * lda);
    for (j = 0; j + W <= depth; j += W) {
      const vi v = vround(load(x + j) * inverse);
      for (int i = 0; i < W; ++i) q[j + i] = static_cast<int8_t>(v[i]);
    }
    for (; j < depth; ++j) q[j] = static_cast<int8_t>(__builtin_nearbyintf(x[j] * inverse));
    for (; j < 4 * quads; ++j) q[j] = 0;
#if JME_WIDTH == 8
    int8_t* size = q + 4 * quads;
    for (j = 0; j < 4 * quads; ++j) size[j] = static_cast<int8_t>(q[j] < 0 ? -q[j] : q[j]);
#else
    for (j = 0; j < 4 * quads; ++j) q[j] = static_cast<int8_t>(q[j] ^ 0x80);
#endif
  }
}
#endif

#if JME_AMX
namespace {
inline int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

struct alignas(64) TileConfig {
  uint8_t palette, start_row, reserved[14];
  uint16_t bytes[16];
  uint8_t rows[16];
};

// Tiles 0-3: the sums of two row tiles x two half panels; 4-5: the row tiles' inputs; 6-7:
// the half panels' weights.
inline void configure_tiles() {
  TileConfig config{};
  config.palette = 1;
  for (int t = 0; t < 8; ++t) {
    config.rows[t] = kTile;
    config.bytes[t] = 64;
  }
  _tile_loadconfig(&config);
}

// Adds to the sums `steps` tile steps of one row tile's inputs (Two: two row tiles, the
// second kTile rows further) at `a` (row stride lda bytes) times the panel rows at `panel`.
template <bool Two>
inline void tile_steps(const uint16_t* a, int64_t lda, const uint16_t* panel, int64_t steps) {
  constexpr int64_t kPanelBytes = kPanelRow * 2;
  for (int64_t t = 0; t < steps; ++t) {
    const uint16_t* b = panel + t * kTile * kPanelRow;
    const uint16_t* x = a + t * kTileDepth;
    for (int64_t line = 0; line < kTile * kPanelRow; line += 32)
      __builtin_prefetch(b + kTileAhead * kTile * kPanelRow + line);
    for (int64_t r = 0; r < (Two ? 2 : 1) * kTile; ++r)
      __builtin_prefetch(x + kTileAhead * kTileDepth + r * (lda / 2));
    _tile_loadd(6, b, kPanelBytes);
    _tile_loadd(7, b + 2 * W, kPanelBytes);
    _tile_loadd(4, x, lda);
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(1, 4, 7);
    if constexpr (Two) {
      _tile_loadd(5, x + kTile * (lda / 2), lda);
      _tile_dpbf16ps(2, 5, 6);
      _tile_dpbf16ps(3, 5, 7);
    }
  }
}

// The sums of rows [0, 2 kTile) (Two) or [0, kTile) of `a` by one panel, into `sums` (row
// stride kPanel floats). A depth that is no multiple of kTileDepth ends with a tile step
// on the panel's last rows copied into `tail` with zeros after them (inputs are zero there).
template <bool Two>
void panel_sums(const uint16_t* a, int64_t lda, const uint16_t* panel, int64_t steps,
                uint16_t* tail, float* sums) {
  _tile_zero(0);
  _tile_zero(1);
  if constexpr (Two) {
    _tile_zero(2);
    _tile_zero(3);
  }
  const int64_t whole = steps / kTile, rest = steps % kTile;
  tile_steps<Two>(a, lda, panel, whole);
  if (rest) {
    const uint16_t* from = panel + whole * kTile * kPanelRow;
    for (int64_t i = 0; i < kTile * kPanelRow; ++i) tail[i] = i < rest * kPanelRow ? from[i] : 0;
    tile_steps<Two>(a + whole * kTileDepth, lda, tail, 1);
  }
  constexpr int64_t ldc = kPanel * 4;
  _tile_stored(0, sums, ldc);
  _tile_stored(1, sums + W, ldc);
  if constexpr (Two) {
    _tile_stored(2, sums + kTile * kPanel, ldc);
    _tile_stored(3, sums + kTile * kPanel + W, ldc);
  }
}
}  // namespace

// Bytes quantize_inputs() writes for `rows` inputs of `depth` values: rows of a multiple of
// kTileDepth bfloat16 values, and a multiple of kTile rows.
int64_t quantized_size(int64_t rows, int64_t depth) {
  return 2 * round_up(rows, kTile) * round_up(depth, kTileDepth);
}

// The rows [first, last) of a (rows x depth floats) rounded to bfloat16 (to nearest, ties to
// even) for packed_product into `out` (quantized_size(rows, depth) bytes), zeros after each
// row's depth; the call that ends at `rows` also writes the zero rows after it. Rows are
// independent, so threads may split them.
void quantize_inputs(const float* a, int64_t rows, int64_t depth, int64_t first, int64_t last,
                     void* out) {
  const int64_t stride = round_up(depth, kTileDepth);
  uint16_t* base = static_cast<uint16_t*>(out);
  for (int64_t r = first; r < last; ++r) {
    const float* src = a + r * depth;
    for (int64_t j = 0; j < stride; j += 2 * W) {
      const int64_t n = depth - j < 2 * W ? depth - j : 2 * W;
      _mm512_storeu_si512(base + r * stride + j, (__m512i)to_bf16(src + j, n));
    }
  }
  if (last == rows)
    __builtin_memset(base + rows * stride, 0, 2 * (round_up(rows, kTile) - rows) * stride);
}

// packed_product() on AMX tiles: `a` is what quantize_inputs() made of the inputs, the
// weights are the bfloat16 panels, scratch is product_scratch() floats.
void packed_product(const void* a, const void* weights, const float* bias, int mode, float* c,
                    int64_t rows, int64_t depth, int64_t cols, int64_t first, int64_t last,
                    float* scratch) {
  const uint16_t* inputs = static_cast<const uint16_t*>(a);
  const uint16_t* packed = static_cast<const uint16_t*>(weights);
  const int64_t stride = round_up(depth, kTileDepth), lda = 2 * stride;
  const int64_t steps = (depth + 1) / 2;  // panel rows
  const int64_t group_bytes = steps * kPanelRow * 2;
  const int64_t group = kGroupBytes / group_bytes > 1 ? kGroupBytes / group_bytes : 1;
  const bool glu = mode & kGlu;
  const int64_t step = glu ? W : kPanel;  // outputs per panel
  float* sums = scratch;  // 2 kTile x kPanel
  uint16_t* tail = reinterpret_cast<uint16_t*>(scratch + 2 * kTile * kPanel);
  float own_bias[kPanel];
  configure_tiles();
  for (int64_t g0 = first; g0 < last; g0 += group) {
    const int64_t g1 = g0 + group < last ? g0 + group : last;
    for (int64_t m0 = 0; m0 < rows; m0 += 2 * kTile) {
      const int64_t m = rows - m0 < 2 * kTile ? rows - m0 : 2 * kTile;
      const uint16_t* x = inputs + m0 * stride;
      for (int64_t p = g0; p < g1; ++p) {
        const uint16_t* panel = packed + p * steps * kPanelRow;
        if (m > kTile) {
          panel_sums<true>(x, lda, panel, steps, tail, sums);
        } else {
          panel_sums<false>(x, lda, panel, steps, tail, sums);
        }
        const int64_t width = cols - p * step < step ? cols - p * step : step;
        const float* b = panel_bias(bias, glu, p, width, own_bias);
        const vf bias0 = b ? load(b) : vf{}, bias1 = b ? load(b + W) : vf{};
        float* out = c + m0 * cols + p * step;
        for (int64_t r = 0; r < m; ++r)
          finish_row(out + r * cols, load(sums + r * kPanel) + bias0,
                     load(sums + r * kPanel + W) + bias1, width, mode);
      }
    }
  }
  _tile_release();
}
#else
// c (rows x cols) = a (rows x depth) @ w^T (+ bias, then the epilogue `mode`) for the panels
// [first, last) of w packed by pack_linear: panel p holds w's rows p*kPanel... as `depth` rows
// of kPanel floats (bf16: depth / 2 rows, rounded up, each holding two depth rows' weights
// as a pair per column; int8: depth / 4 rows, rounded up, of quads, then a row of the kPanel
// columns' float scales and one of their int32 sums times 128), and zeros past the last row.
// Panels are independent, so threads may split them. a: rows x depth floats (int8: what
// quantize_inputs() made of them). bias (or null) holds `cols` floats. scratch:
// product_scratch() floats.
//
// With kGlu, w was packed by pack_glu: panel p holds W rows of the activated half and the
// same W rows of the gate half, for the outputs p*W...; c has `cols` of those, and bias (or
// null) holds kPanel floats per panel in the same order.
void packed_product(const void* a, const void* weights, const float* bias, int mode, float* c,
                    int64_t rows, int64_t depth, int64_t cols, int64_t first, int64_t last,
                    float* scratch) {
  const weight_t* packed = static_cast<const weight_t*>(weights);
  const int64_t steps = (depth + kDepthStep - 1) / kDepthStep;  // panel rows of weights
  const int64_t panel_rows = steps + (JME_INT8 ? 2 : 0);         // and of the scales
  const int64_t pstride = panel_rows * kPanelRow;                // weights per panel
  const int64_t sstride = kRowBlock * kPanel;                    // sums per panel
  const bool glu = mode & kGlu;
  const int64_t step = glu ? W : kPanel;  // outputs per panel
  float own_bias[kPanelGroup][kPanel];
  const float* biases[kPanelGroup];
  int64_t widths[kPanelGroup];  // outputs per panel (the last one's may be fewer)
  Scales scales[kPanelGroup] = {};
#if JME_INT8
  const float* row_scales = static_cast<const float*>(a);
  const input_t* quads = reinterpret_cast<const input_t*>(row_scales + scales_size(rows));
  const int64_t lda = quad_stride(depth);
#endif
  for (int64_t g0 = first; g0 < last; g0 += kPanelGroup) {
    const int64_t g1 = g0 + kPanelGroup < last ? g0 + kPanelGroup : last;
    for (int64_t p = g0; p < g1; ++p) {
      widths[p - g0] = cols - p * step < step ? cols - p * step : step;
      biases[p - g0] = panel_bias(bias, glu, p, widths[p - g0], own_bias[p - g0]);
#if JME_INT8
      const weight_t* trailer = packed + p * pstride + steps * kPanelRow;
      scales[p - g0].columns = reinterpret_cast<const float*>(trailer);
      scales[p - g0].offsets = JME_WIDTH == 16
                                   ? reinterpret_cast<const int32_t*>(trailer + kPanelRow)
                                   : kNoOffsets;
#endif
    }
    for (int64_t m0 = 0; m0 < rows; m0 += kRowBlock) {
      const int64_t m1 = m0 + kRowBlock < rows ? m0 + kRowBlock : rows;
      // The sums of every panel of the group for the row block, depth block by depth block.
      for (int64_t k0 = 0; k0 < depth; k0 += kDepthBlock) {
        const int64_t kc = depth - k0 < kDepthBlock ? depth - k0 : kDepthBlock;
#if JME_BF16
        uint32_t* inputs = reinterpret_cast<uint32_t*>(scratch + kPanelGroup * sstride);
        to_bf16_pairs(static_cast<const float*>(a) + m0 * depth + k0, depth, m1 - m0, kc, inputs);
        const int64_t lda = kDepthBlock / 2;
        auto row_inputs = [&](int64_t r) { return inputs + (r - m0) * lda; };
#elif JME_INT8
        auto row_inputs = [&](int64_t r) { return quads + r * lda + k0 / 4; };
#else
        const int64_t lda = depth;
        auto row_inputs = [&](int64_t r) { return static_cast<const float*>(a) + r * depth + k0; };
#endif
        const int64_t kn = (kc + kDepthStep - 1) / kDepthStep;  // this block's panel rows
        const bool first_block = k0 == 0;
        for (int64_t p = g0; p < g1; p += kTilePanels) {
          const weight_t* panel = packed + p * pstride + k0 / kDepthStep * kPanelRow;
          float* sums = scratch + (p - g0) * sstride - m0 * kPanel;  // row r's at r * kPanel
          const bool few = m1 - m0 > kTileRows && m1 - m0 <= kFewRows;
          if (p + kTilePanels <= g1 && !few) {
            row_tiles<kTileRows, kTilePanels>(m0, m1, row_inputs, lda, kn, panel, pstride, sums,
                                              sstride, first_block);
          } else {  // an odd last panel, or few rows: a panel at a time, in taller tiles
            for (int64_t q = p; q < p + kTilePanels && q < g1; ++q)
              row_tiles<kLoneRows, 1>(m0, m1, row_inputs, lda, kn, panel + (q - p) * pstride,
                                      pstride, sums + (q - p) * sstride, sstride, first_block);
          }
        }
      }
      // The row block's results, row by row: each row's outputs of the group in one run.
      for (int64_t r = m0; r < m1; ++r) {
        for (int64_t p = g0; p < g1; ++p) {
          const float* sums = scratch + (p - g0) * sstride + (r - m0) * kPanel;
          const float* b = biases[p - g0];
          const vf bias0 = b ? load(b) : vf{}, bias1 = b ? load(b + W) : vf{};
          Scales& s = scales[p - g0];
#if JME_INT8
          s.rows = row_scales + r;
#endif
          finish_row(c + r * cols + p * step, scaled(load_sum(sums), s, 0, 0) + bias0,
                     scaled(load_sum(sums + W), s, 0, 1) + bias1, widths[p - g0], mode);
        }
      }
    }
  }
}
#endif  // JME_AMX

}  // namespace JME_ISA
}  // namespace jme_native
