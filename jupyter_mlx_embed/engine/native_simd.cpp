// Vectorised float32 kernels of the CPU fast path (engine-private), compiled twice:
// once with -mavx2 -mfma (JME_ISA=avx2, JME_WIDTH=8) and once with AVX-512 flags
// (JME_ISA=avx512, JME_WIDTH=16). native_kernels.cpp picks one copy at run time.
//
// This file must stay free of the C++ standard library and of any other inline function
// shared with other translation units: the linker keeps one copy of each inline function,
// and if that copy came from the AVX-512 build, an AVX2-only CPU would fault in it.
// Everything here is plain C-style code in its own namespace, on GCC vector extensions
// (the same source becomes zmm code in one build and ymm code in the other).

#include <stddef.h>
#include <stdint.h>

#ifndef JME_ISA
#error "compile with -DJME_ISA=avx2 -DJME_WIDTH=8 or -DJME_ISA=avx512 -DJME_WIDTH=16"
#endif

namespace jme_native {
namespace JME_ISA {

namespace {

constexpr int64_t W = JME_WIDTH;  // floats per vector
typedef float vf __attribute__((vector_size(W * 4)));
typedef int32_t vi __attribute__((vector_size(W * 4)));

inline vf load(const float* p) {
  vf v;
  __builtin_memcpy(&v, p, sizeof v);
  return v;
}

inline void store(float* p, vf v) { __builtin_memcpy(p, &v, sizeof v); }

inline vf splat(float x) { return vf{} + x; }

inline vf vmin(vf a, vf b) { return a < b ? a : b; }

inline vf vmax(vf a, vf b) { return a > b ? a : b; }

inline float hsum(vf v) {
  float s = 0.0f;
  for (int i = 0; i < W; ++i) s += v[i];
  return s;
}

inline float hmax(vf v) {
  float m = v[0];
  for (int i = 1; i < W; ++i) m = v[i] > m ? v[i] : m;
  return m;
}

// A partial vector: the first n floats of p, the rest filled with `fill`.
inline vf load_part(const float* p, int64_t n, float fill) {
  vf v = splat(fill);
  for (int64_t i = 0; i < n; ++i) v[i] = p[i];
  return v;
}

inline void store_part(float* p, vf v, int64_t n) {
  for (int64_t i = 0; i < n; ++i) p[i] = v[i];
}

// exp(x) to about 2 ulp (Cephes' expf polynomial after a reduction by n*ln 2); inputs
// below -87.3 give about 1e-38 rather than 0, which callers mask where it matters.
inline vf vexp(vf x) {
  x = vmax(vmin(x, splat(88.37626f)), splat(-87.33654f));
  vf fx = x * 1.44269504088896341f + 0.5f;
  vf n = __builtin_convertvector(__builtin_convertvector(fx, vi), vf);
  n = n > fx ? n - 1.0f : n;  // floor (the conversion truncates towards zero)
  vf r = x - n * 0.693359375f + n * 2.12194440e-4f;
  vf r2 = r * r;
  vf y = 1.9875691500e-4f * r + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  y = y * r2 + r + 1.0f;
  vi bits = (__builtin_convertvector(n, vi) + 127) << 23;
  vf scale;
  __builtin_memcpy(&scale, &bits, sizeof scale);
  return y * scale;
}

// erf(x) as x * P(x^2) / Q(x^2) on [-4, 4] (the float32 rational approximation of Eigen
// and XLA; |erf(4)| rounds to 1 in float32).
inline vf verf(vf x) {
  x = vmax(vmin(x, splat(4.0f)), splat(-4.0f));
  vf x2 = x * x;
  vf p = -2.72614225801306e-10f * x2 + 2.77068142495902e-08f;
  p = p * x2 - 2.10102402082508e-06f;
  p = p * x2 - 5.69250639462346e-05f;
  p = p * x2 - 7.34990630326855e-04f;
  p = p * x2 - 2.95459980854025e-03f;
  p = p * x2 - 1.60960333262415e-02f;
  vf q = -1.45660718464996e-05f * x2 - 2.13374055278905e-04f;
  q = q * x2 - 1.68282697438203e-03f;
  q = q * x2 - 7.37332916720468e-03f;
  q = q * x2 - 1.42647390514189e-02f;
  return x * p / q;
}

inline vf vgelu(vf v) { return 0.5f * v * (1.0f + verf(v * 0.70710678118654752f)); }

}  // namespace

// out = LayerNorm(h + residual + bias) * gamma + beta over rows of `cols` floats;
// residual and bias may be null.
void add_layernorm(const float* h, const float* residual, const float* bias, const float* gamma,
                   const float* beta, float* out, int64_t rows, int64_t cols, float eps) {
  const int64_t full = cols - cols % W;
  const int64_t n = cols - full;
  for (int64_t r = 0; r < rows; ++r) {
    const float* hr = h + r * cols;
    const float* rr = residual ? residual + r * cols : nullptr;
    float* orow = out + r * cols;
    vf sum = {};
    for (int64_t c = 0; c < full; c += W) {
      vf v = load(hr + c);
      if (rr) v += load(rr + c);
      if (bias) v += load(bias + c);
      store(orow + c, v);
      sum += v;
    }
    float total = hsum(sum);
    for (int64_t c = full; c < cols; ++c) {
      float v = hr[c] + (rr ? rr[c] : 0.0f) + (bias ? bias[c] : 0.0f);
      orow[c] = v;
      total += v;
    }
    const float mean = total / static_cast<float>(cols);
    vf squares = {};
    for (int64_t c = 0; c < full; c += W) {
      vf d = load(orow + c) - mean;
      squares += d * d;
    }
    float var = hsum(squares);
    for (int64_t c = full; c < cols; ++c) var += (orow[c] - mean) * (orow[c] - mean);
    var /= static_cast<float>(cols);
    const float rstd = 1.0f / __builtin_sqrtf(var + eps);
    for (int64_t c = 0; c < full; c += W)
      store(orow + c, (load(orow + c) - mean) * rstd * load(gamma + c) + load(beta + c));
    if (n) {
      vf v = (load_part(orow + full, n, 0) - mean) * rstd;
      store_part(orow + full, v * load_part(gamma + full, n, 0) + load_part(beta + full, n, 0), n);
    }
  }
}

// Queries handled together: each key and value vector loaded serves this many rows.
constexpr int64_t kRows = 8;

namespace {

// Attention of the R queries in `queries` (R x width, contiguous, bias added) against one
// head's keys (transposed: width x padded) and values (row stride `stride`), written to
// `out` (row stride `dim`). `scores` holds R x padded floats.
template <int R>
void query_block(const float* queries, const float* keys_t, const float* v, float* scores,
                 float* out, int64_t valid, int64_t padded, int64_t width, int64_t stride,
                 int64_t dim) {
  // scores[r, j] = q[r] . k[j]
  for (int64_t c = 0; c < padded; c += W) {
    vf acc[R] = {};
    for (int64_t d = 0; d < width; ++d) {
      const vf kv = load(keys_t + d * padded + c);
      for (int r = 0; r < R; ++r) acc[r] += queries[r * width + d] * kv;
    }
    for (int r = 0; r < R; ++r) store(scores + r * padded + c, acc[r]);
  }
  // Softmax over the valid keys; the padded tail gets weight 0.
  float inverse[R];
  for (int r = 0; r < R; ++r) {
    float* s = scores + r * padded;
    for (int64_t j = valid; j < padded; ++j) s[j] = -3.0e38f;
    vf m = splat(-3.0e38f);
    for (int64_t c = 0; c < padded; c += W) m = vmax(m, load(s + c));
    const float row_max = hmax(m);
    vf sum = {};
    for (int64_t c = 0; c < padded; c += W) {
      const vf e = vexp(load(s + c) - row_max);
      store(s + c, e);
      sum += e;
    }
    float total = hsum(sum);
    for (int64_t j = valid; j < padded; ++j) {
      total -= s[j];
      s[j] = 0.0f;
    }
    inverse[r] = 1.0f / total;
  }
  // out[r] = sum_j scores[r, j] v[j] / total[r]
  const int64_t full_width = width - width % W;
  for (int64_t c = 0; c < full_width; c += W) {
    vf acc[R] = {};
    for (int64_t j = 0; j < valid; ++j) {
      const vf vv = load(v + j * stride + c);
      for (int r = 0; r < R; ++r) acc[r] += scores[r * padded + j] * vv;
    }
    for (int r = 0; r < R; ++r) store(out + r * dim + c, acc[r] * inverse[r]);
  }
  for (int64_t c = full_width; c < width; ++c) {
    for (int r = 0; r < R; ++r) {
      float acc = 0.0f;
      for (int64_t j = 0; j < valid; ++j) acc += scores[r * padded + j] * v[j * stride + c];
      out[r * dim + c] = acc * inverse[r];
    }
  }
}

}  // namespace

// Floats of scratch memory attention() needs for sequences of up to `length` tokens.
int64_t attention_scratch(int64_t length, int64_t head_width) {
  const int64_t padded = (length + W - 1) / W * W;
  return padded * head_width + kRows * padded + kRows * head_width;
}

// Multi-head self-attention of a packed batch, for the (sequence, head) pairs b * heads + h
// in [first, last), so that threads may split them.
//
// qkv: (tokens, 3 * heads * width), the fused projection of all sequences one after the
// other (no padding), queries already scaled; query_bias: (heads * width) added to the
// queries, or null; sequence b is rows offsets[b] to offsets[b + 1]; out: (tokens,
// heads * width). The heads are read in place (row stride 3 * dim): no head-split copies.
void attention(const float* qkv, const float* query_bias, const int32_t* offsets, float* out,
               float* scratch, int64_t first, int64_t last, int64_t heads, int64_t width) {
  const int64_t dim = heads * width;
  const int64_t stride = 3 * dim;
  for (int64_t pair = first; pair < last; ++pair) {
    const int64_t b = pair / heads, h = pair % heads;
    const int64_t valid = offsets[b + 1] - offsets[b];
    const int64_t padded = (valid + W - 1) / W * W;
    float* keys_t = scratch;                           // (width, padded): keys transposed
    float* scores = keys_t + padded * width;           // (kRows, padded)
    float* queries = scores + kRows * padded;          // (kRows, width)
    const float* base = qkv + offsets[b] * stride;
    float* out_b = out + offsets[b] * dim;
    const float* k = base + dim + h * width;
    const float* v = base + 2 * dim + h * width;
    const float* bias = query_bias ? query_bias + h * width : nullptr;
    for (int64_t j = 0; j < valid; ++j)
      for (int64_t d = 0; d < width; ++d) keys_t[d * padded + j] = k[j * stride + d];
    for (int64_t d = 0; d < width; ++d)
      for (int64_t j = valid; j < padded; ++j) keys_t[d * padded + j] = 0.0f;
    for (int64_t i0 = 0; i0 < valid; i0 += kRows) {
      const int64_t rows = valid - i0 < kRows ? valid - i0 : kRows;
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t d = 0; d < width; ++d)
          queries[r * width + d] = base[(i0 + r) * stride + h * width + d] + (bias ? bias[d] : 0.0f);
      float* o = out_b + i0 * dim + h * width;
      if (rows == kRows) {
        query_block<kRows>(queries, keys_t, v, scores, o, valid, padded, width, stride, dim);
      } else {
        for (int64_t r = 0; r < rows; ++r)
          query_block<1>(queries + r * width, keys_t, v, scores, o + r * dim, valid, padded,
                         width, stride, dim);
      }
    }
  }
}

// ------------------------------------------------------------------------------------------
// Matrix products with weights packed once (x @ w^T for a linear layer's (out, in) weight)
// ------------------------------------------------------------------------------------------

// Columns per panel (two vectors) and rows per tile. A tile keeps its rows x panel results in
// registers: 2 * kTileRows accumulators, two panel vectors and one broadcast fit the 16 ymm
// (AVX2) or 32 zmm (AVX-512) registers.
constexpr int64_t kPanel = 2 * W;
constexpr int kTileRows = W == 16 ? 12 : 6;
// How far ahead a tile prefetches its panel. With few rows the product streams the weights
// from memory (a small model's layers outgrow the L3 cache) faster than the hardware
// prefetcher fetches them: 12 KiB ahead took a 23-row product over six MiniLM layers from
// 163 to 223 GFLOP/s on one Zen 5 core (none, 2, 4, 8, 12 and 16 KiB tried).
constexpr int64_t kPrefetchAhead = 12288 / (kPanel * 4);  // in panel rows

namespace {

// c[r, 0:cols] = a[r, :] . panel (+ bias, then GELU if asked) for R rows; the panel holds
// `depth` rows of kPanel floats, bias (or null) this panel's kPanel values.
template <int R>
inline void product_tile(const float* a, int64_t depth, const float* panel, float* c,
                         int64_t ldc, int64_t cols, const float* bias, bool gelu) {
  vf low[R] = {}, high[R] = {};
  for (int64_t p = 0; p < depth; ++p) {
    const float* ahead = panel + (p + kPrefetchAhead) * kPanel;
    for (int64_t line = 0; line < kPanel; line += 16) __builtin_prefetch(ahead + line);
    const vf b0 = load(panel + p * kPanel), b1 = load(panel + p * kPanel + W);
    for (int r = 0; r < R; ++r) {
      const vf x = splat(a[r * depth + p]);
      low[r] += x * b0;
      high[r] += x * b1;
    }
  }
  const vf bias0 = bias ? load(bias) : vf{}, bias1 = bias ? load(bias + W) : vf{};
  for (int r = 0; r < R; ++r) {
    vf v0 = low[r] + bias0, v1 = high[r] + bias1;
    if (gelu) {
      v0 = vgelu(v0);
      v1 = vgelu(v1);
    }
    float* row = c + r * ldc;
    if (cols == kPanel) {
      store(row, v0);
      store(row + W, v1);
    } else if (cols > W) {
      store(row, v0);
      store_part(row + W, v1, cols - W);
    } else {
      store_part(row, v0, cols);
    }
  }
}

template <int R>
void tail_tile(int64_t rows, const float* a, int64_t depth, const float* panel, float* c,
               int64_t ldc, int64_t cols, const float* bias, bool gelu) {
  if constexpr (R > 0) {
    if (rows == R) return product_tile<R>(a, depth, panel, c, ldc, cols, bias, gelu);
    tail_tile<R - 1>(rows, a, depth, panel, c, ldc, cols, bias, gelu);
  }
}

}  // namespace

int64_t panel_width() { return kPanel; }

// c (rows x cols) = a (rows x depth) @ w^T (+ bias, then GELU if asked) for the panels
// [first, last) of w packed by pack_linear: panel p holds w's rows p*kPanel... as `depth` rows
// of kPanel floats, and zeros past the last row. Panels are independent, so threads may split
// them. bias (or null) holds `cols` floats.
void packed_product(const float* a, const float* packed, const float* bias, bool gelu, float* c,
                    int64_t rows, int64_t depth, int64_t cols, int64_t first, int64_t last) {
  float panel_bias[kPanel];
  for (int64_t p = first; p < last; ++p) {
    const float* panel = packed + p * depth * kPanel;
    const int64_t width = cols - p * kPanel < kPanel ? cols - p * kPanel : kPanel;
    const float* b = nullptr;
    if (bias) {  // the panel's share, zero-padded so that the tiles load whole vectors
      for (int64_t j = 0; j < kPanel; ++j) panel_bias[j] = j < width ? bias[p * kPanel + j] : 0;
      b = panel_bias;
    }
    float* out = c + p * kPanel;
    int64_t r = 0;
    for (; r + kTileRows <= rows; r += kTileRows)
      product_tile<kTileRows>(a + r * depth, depth, panel, out + r * cols, cols, width, b, gelu);
    tail_tile<kTileRows - 1>(rows - r, a + r * depth, depth, panel, out + r * cols, cols, width,
                             b, gelu);
  }
}

}  // namespace JME_ISA
}  // namespace jme_native
