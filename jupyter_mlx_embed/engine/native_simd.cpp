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

// What attention() computes. The same definition is in native_kernels.cpp and in both copies
// of this file, outside their ISA namespaces: plain data, no member functions.
struct AttentionSpec {
  int64_t heads, kv_heads, width;  // query heads, key/value heads (dividing heads), head width
  int64_t left, right;             // query i sees keys i - left ... i + right of its sequence
  const float* query_bias;         // (heads * width) added to the queries, or null
  const float* q_norm;             // (width) RMSNorm weights of every query head, or null
  const float* k_norm;             // likewise for the keys
  float norm_eps;
  const float* rope;               // rotary table: per position, width/2 cosines then sines
};

// A packed product's epilogue (the same values in native_kernels.cpp): an activation in the
// low bits, then flags.
constexpr int kActivationMask = 3;  // 0 none, then:
constexpr int kGelu = 1;            // exact (erf) GELU
constexpr int kSilu = 2;            // x * sigmoid(x)
constexpr int kGeluTanh = 3;        // GELU's tanh approximation
constexpr int kGlu = 4;             // gated: each panel holds W activated and W gate columns,
                                    // and the result is act(activated) * gate
constexpr int kAccumulate = 8;      // c += result rather than c = result

// norm_rows' flags (the same values in native_kernels.cpp).
constexpr int kRms = 1;             // RMSNorm rather than LayerNorm
constexpr int kNormAccumulate = 2;  // out += the result

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

// Every lane x, written out so that the compiler sees one broadcast (from memory, in the
// products' tiles). Not vf{} + x: adding 0 is no identity for -0, so the addition stays, and a
// register broadcast after it, two more floating-point operations per use; nor a loop over
// the lanes, which becomes lane inserts.
inline vf splat(float x) {
#if JME_WIDTH == 8
  return vf{x, x, x, x, x, x, x, x};
#elif JME_WIDTH == 16
  return vf{x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x};
#else
#error "JME_WIDTH must be 8 or 16"
#endif
}

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

// x * sigmoid(x); vexp's clamping keeps both tails finite (x, and -0 rather than NaN).
inline vf vsilu(vf v) { return v / (1.0f + vexp(-v)); }

// 0.5 x (1 + tanh(u)) with u = sqrt(2 / pi) (x + 0.044715 x^3), written as x * sigmoid(2u).
inline vf vgelu_tanh(vf v) {
  const vf u = 0.79788456080286536f * (v + 0.044715f * v * v * v);
  return v / (1.0f + vexp(-2.0f * u));
}

inline vf activate(vf v, int activation) {
  switch (activation) {
    case kGelu: return vgelu(v);
    case kSilu: return vsilu(v);
    case kGeluTanh: return vgelu_tanh(v);
    default: return v;
  }
}

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

// out = norm(x) * gamma + beta over rows of `cols` floats, or out += that with
// kNormAccumulate: LayerNorm (mean and variance), or RMSNorm (root mean square) with kRms.
// gamma and beta may be null (1 and 0); out may be x itself (without kNormAccumulate).
void norm_rows(const float* x, const float* gamma, const float* beta, float* out, int64_t rows,
               int64_t cols, float eps, int mode) {
  const int64_t full = cols - cols % W;
  const bool rms = mode & kRms, accumulate = mode & kNormAccumulate;
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * cols;
    float* orow = out + r * cols;
    float mean = 0.0f;
    if (!rms) {
      vf sum = {};
      for (int64_t c = 0; c < full; c += W) sum += load(xr + c);
      float total = hsum(sum);
      for (int64_t c = full; c < cols; ++c) total += xr[c];
      mean = total / static_cast<float>(cols);
    }
    vf squares = {};
    for (int64_t c = 0; c < full; c += W) {
      const vf d = load(xr + c) - mean;
      squares += d * d;
    }
    float var = hsum(squares);
    for (int64_t c = full; c < cols; ++c) var += (xr[c] - mean) * (xr[c] - mean);
    const float scale = 1.0f / __builtin_sqrtf(var / static_cast<float>(cols) + eps);
    for (int64_t c = 0; c < full; c += W) {
      vf v = (load(xr + c) - mean) * scale;
      if (gamma) v *= load(gamma + c);
      if (beta) v += load(beta + c);
      if (accumulate) v += load(orow + c);
      store(orow + c, v);
    }
    for (int64_t c = full; c < cols; ++c) {
      float v = (xr[c] - mean) * scale;
      if (gamma) v *= gamma[c];
      if (beta) v += beta[c];
      orow[c] = accumulate ? orow[c] + v : v;
    }
  }
}

// Queries handled together: each key and value vector loaded serves this many rows, and
// their sums for two vectors of keys (or of value columns) fill 12 of the 16 ymm (AVX2) or 24
// of the 32 zmm (AVX-512) registers, as a product's tile.
constexpr int64_t kRows = W == 16 ? 12 : 6;

namespace {

// dst (width floats) = one head's projection src (+ bias), RMS-normalised with `norm`'s
// weights if given, then rotated by the table row `rope` (the halves' rotation, as
// mx.fast.rope with traditional=False) if given.
void prepare_head(const float* src, const float* bias, const float* norm, float eps,
                  const float* rope, int64_t width, float* dst) {
  const int64_t full = width - width % W;
  vf squares = {};
  for (int64_t c = 0; c < full; c += W) {
    vf v = load(src + c);
    if (bias) v += load(bias + c);
    store(dst + c, v);
    squares += v * v;
  }
  float total = hsum(squares);
  for (int64_t c = full; c < width; ++c) {
    dst[c] = src[c] + (bias ? bias[c] : 0.0f);
    total += dst[c] * dst[c];
  }
  if (norm) {
    const float scale = 1.0f / __builtin_sqrtf(total / static_cast<float>(width) + eps);
    for (int64_t c = 0; c < full; c += W) store(dst + c, load(dst + c) * scale * load(norm + c));
    for (int64_t c = full; c < width; ++c) dst[c] = dst[c] * scale * norm[c];
  }
  if (rope) {
    const int64_t half = width / 2, half_full = half - half % W;
    const float* cosines = rope;
    const float* sines = rope + half;
    for (int64_t i = 0; i < half_full; i += W) {
      const vf a = load(dst + i), b = load(dst + half + i);
      const vf cs = load(cosines + i), sn = load(sines + i);
      store(dst + i, a * cs - b * sn);
      store(dst + half + i, a * sn + b * cs);
    }
    for (int64_t i = half_full; i < half; ++i) {
      const float a = dst[i], b = dst[half + i];
      dst[i] = a * cosines[i] - b * sines[i];
      dst[half + i] = a * sines[i] + b * cosines[i];
    }
  }
}

// Attention of the R queries first ... first + R - 1 of a sequence of `valid` tokens (in
// `queries`: R x width, contiguous, prepared) against one head's keys (transposed: width x
// padded) and values (row stride `stride`), written to `out` (row stride `dim`). Query i sees
// keys i - left ... i + right; only the keys some query of the block sees are scored.
// `scores` holds R x padded floats.
template <int R>
void query_block(const float* queries, const float* keys_t, const float* v, float* scores,
                 float* out, int64_t first, int64_t valid, int64_t padded, int64_t width,
                 int64_t stride, int64_t dim, int64_t left, int64_t right) {
  const int64_t lo = first - left > 0 ? first - left : 0;
  const int64_t hi = first + R + right < valid ? first + R + right : valid;
  const int64_t kb = lo - lo % W;                // first key scored, vector-aligned
  const int64_t ke = (hi + W - 1) / W * W;       // past the last key scored (<= padded)
  const int64_t n = ke - kb;                     // a row of scores
  // scores[r, j - kb] = q[r] . k[j], two vectors of keys at a time
  int64_t c = kb;
  for (; c + 2 * W <= ke; c += 2 * W) {
    vf acc0[R] = {}, acc1[R] = {};
    for (int64_t d = 0; d < width; ++d) {
      const vf k0 = load(keys_t + d * padded + c), k1 = load(keys_t + d * padded + c + W);
      for (int r = 0; r < R; ++r) {
        const vf q = splat(queries[r * width + d]);
        acc0[r] += q * k0;
        acc1[r] += q * k1;
      }
    }
    for (int r = 0; r < R; ++r) {
      store(scores + r * n + (c - kb), acc0[r]);
      store(scores + r * n + (c - kb) + W, acc1[r]);
    }
  }
  if (c < ke) {  // one vector left
    vf acc[R] = {};
    for (int64_t d = 0; d < width; ++d) {
      const vf kv = load(keys_t + d * padded + c);
      for (int r = 0; r < R; ++r) acc[r] += queries[r * width + d] * kv;
    }
    for (int r = 0; r < R; ++r) store(scores + r * n + (c - kb), acc[r]);
  }
  // Softmax over each row's own keys; the others (window, padding) get weight 0.
  float inverse[R];
  for (int r = 0; r < R; ++r) {
    float* s = scores + r * n;
    const int64_t i = first + r;
    const int64_t own_lo = (i - left > 0 ? i - left : 0) - kb;
    const int64_t own_hi = (i + right + 1 < valid ? i + right + 1 : valid) - kb;
    for (int64_t j = 0; j < own_lo; ++j) s[j] = -3.0e38f;
    for (int64_t j = own_hi; j < n; ++j) s[j] = -3.0e38f;
    vf m = splat(-3.0e38f);
    for (int64_t c = 0; c < n; c += W) m = vmax(m, load(s + c));
    const float row_max = hmax(m);
    vf sum = {};
    for (int64_t c = 0; c < n; c += W) {
      const vf e = vexp(load(s + c) - row_max);
      store(s + c, e);
      sum += e;
    }
    float total = hsum(sum);
    for (int64_t j = 0; j < own_lo; ++j) {
      total -= s[j];
      s[j] = 0.0f;
    }
    for (int64_t j = own_hi; j < n; ++j) {
      total -= s[j];
      s[j] = 0.0f;
    }
    inverse[r] = 1.0f / total;
  }
  // out[r] = sum_j scores[r, j] v[j] / total[r], over the keys some row sees, two vectors of
  // value columns at a time
  const int64_t full_width = width - width % W;
  int64_t col = 0;
  for (; col + 2 * W <= full_width; col += 2 * W) {
    vf acc0[R] = {}, acc1[R] = {};
    for (int64_t j = lo; j < hi; ++j) {
      const vf v0 = load(v + j * stride + col), v1 = load(v + j * stride + col + W);
      for (int r = 0; r < R; ++r) {
        const vf s = splat(scores[r * n + (j - kb)]);
        acc0[r] += s * v0;
        acc1[r] += s * v1;
      }
    }
    for (int r = 0; r < R; ++r) {
      store(out + r * dim + col, acc0[r] * inverse[r]);
      store(out + r * dim + col + W, acc1[r] * inverse[r]);
    }
  }
  if (col < full_width) {  // one vector left
    vf acc[R] = {};
    for (int64_t j = lo; j < hi; ++j) {
      const vf vv = load(v + j * stride + col);
      for (int r = 0; r < R; ++r) acc[r] += scores[r * n + (j - kb)] * vv;
    }
    for (int r = 0; r < R; ++r) store(out + r * dim + col, acc[r] * inverse[r]);
  }
  for (int64_t c = full_width; c < width; ++c) {
    for (int r = 0; r < R; ++r) {
      float acc = 0.0f;
      for (int64_t j = lo; j < hi; ++j) acc += scores[r * n + (j - kb)] * v[j * stride + c];
      out[r * dim + c] = acc * inverse[r];
    }
  }
}

// query_block for the `rows` (< R) queries left at the end of a sequence.
template <int R>
void query_tail(int64_t rows, const float* queries, const float* keys_t, const float* v,
                float* scores, float* out, int64_t first, int64_t valid, int64_t padded,
                int64_t width, int64_t stride, int64_t dim, int64_t left, int64_t right) {
  if constexpr (R > 0) {
    if (rows == R)
      return query_block<R>(queries, keys_t, v, scores, out, first, valid, padded, width, stride,
                            dim, left, right);
    query_tail<R - 1>(rows, queries, keys_t, v, scores, out, first, valid, padded, width, stride,
                      dim, left, right);
  }
}

}  // namespace

// Floats of scratch memory attention() needs for sequences of up to `length` tokens.
int64_t attention_scratch(int64_t length, int64_t head_width) {
  const int64_t padded = (length + W - 1) / W * W;
  return 2 * padded * head_width + kRows * padded + kRows * head_width + head_width;
}

// Self-attention of a packed batch, for the (sequence, query head) pairs b * heads + h in
// [first, last), so that threads may split them.
//
// qkv: (tokens, (heads + 2 * kv_heads) * width), the fused projection of all sequences one
// after the other (no padding): the query heads, then the key heads, then the value heads;
// queries already scaled (or their norm weights). Query head h reads key/value head
// h / (heads / kv_heads). Sequence b is rows offsets[b] to offsets[b + 1]; its rotary
// positions count from 0. out: (tokens, heads * width). The queries are read in place; each
// key/value head is prepared once per run of pairs that share it (its keys normalised,
// rotated and transposed, its values copied together).
void attention(const AttentionSpec* spec, const float* qkv, const int32_t* offsets, float* out,
               float* scratch, int64_t first, int64_t last) {
  const int64_t heads = spec->heads, kv_heads = spec->kv_heads, width = spec->width;
  const int64_t dim = heads * width;
  const int64_t stride = (heads + 2 * kv_heads) * width;
  const int64_t group = heads / kv_heads;
  int64_t prepared = -1;  // the (sequence, key head) whose keys are in keys_t
  for (int64_t pair = first; pair < last; ++pair) {
    const int64_t b = pair / heads, h = pair % heads, kvh = h / group;
    const int64_t valid = offsets[b + 1] - offsets[b];
    const int64_t padded = (valid + W - 1) / W * W;
    float* keys_t = scratch;                           // (width, padded): keys transposed
    float* scores = keys_t + padded * width;           // (kRows, padded)
    float* queries = scores + kRows * padded;          // (kRows, width)
    float* row = queries + kRows * width;              // (width)
    float* values = row + width;                       // (valid, width): the head's values
    const float* base = qkv + offsets[b] * stride;
    float* out_b = out + offsets[b] * dim;
    const float* k = base + dim + kvh * width;
    const float* v = base + dim + kv_heads * width + kvh * width;
    const float* bias = spec->query_bias ? spec->query_bias + h * width : nullptr;
    const float* rope = spec->rope;
    if (prepared != b * kv_heads + kvh) {
      prepared = b * kv_heads + kvh;
      for (int64_t j = 0; j < valid; ++j) {
        const float* key = k + j * stride;
        if (spec->k_norm || rope) {
          prepare_head(key, nullptr, spec->k_norm, spec->norm_eps,
                       rope ? rope + j * width : nullptr, width, row);
          key = row;
        }
        for (int64_t d = 0; d < width; ++d) keys_t[d * padded + j] = key[d];
      }
      for (int64_t d = 0; d < width; ++d)
        for (int64_t j = valid; j < padded; ++j) keys_t[d * padded + j] = 0.0f;
      // The values too, contiguous: in place their rows lie a whole qkv row apart, and every
      // block of queries reads them all.
      for (int64_t j = 0; j < valid; ++j)
        for (int64_t d = 0; d < width; ++d) values[j * width + d] = v[j * stride + d];
    }
    for (int64_t i0 = 0; i0 < valid; i0 += kRows) {
      const int64_t rows = valid - i0 < kRows ? valid - i0 : kRows;
      for (int64_t r = 0; r < rows; ++r)
        prepare_head(base + (i0 + r) * stride + h * width, bias, spec->q_norm, spec->norm_eps,
                     rope ? rope + (i0 + r) * width : nullptr, width, queries + r * width);
      float* o = out_b + i0 * dim + h * width;
      if (rows == kRows) {
        query_block<kRows>(queries, keys_t, values, scores, o, i0, valid, padded, width, width,
                           dim, spec->left, spec->right);
      } else {
        query_tail<kRows - 1>(rows, queries, keys_t, values, scores, o, i0, valid, padded, width,
                              width, dim, spec->left, spec->right);
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
// Cache blocking for products deeper than one depth block: a panel's block of kDepthBlock
// rows (16 KiB) stays in the L1 cache while every row tile of a row block uses it, and the
// row block's inputs (kRowBlock rows of kDepthBlock floats: 120 KiB with AVX2) stay in L2
// while the kPanelGroup panels of a group use them. A tile's sums between depth blocks are
// kept in a scratch buffer (kPanelGroup x kRowBlock x kPanel floats per thread). Without
// blocking, every panel re-read all the inputs from L3 and its own rows from L2: 46 against
// 70 GFLOP/s (MKL's) per core at Qwen3-0.6B's and ModernBERT-base's shapes on Zen 3.
constexpr int64_t kDepthBlock = 4096 / kPanel;
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
// stride lda) over `depth` panel rows of kPanel floats; bias (or null) holds this panel's
// kPanel values. With kGlu the panel's two halves are the activated and the gate columns of
// `cols` (<= W) outputs. A depth block of a deeper product starts from the sums in `partial`
// (R x kPanel) unless it is the first, and leaves its sums there unless it is the last.
template <int R>
inline void product_tile(const float* a, int64_t lda, int64_t depth, const float* panel,
                         float* c, int64_t ldc, int64_t cols, const float* bias, int mode,
                         float* partial, bool first, bool last) {
  vf low[R], high[R];
  for (int r = 0; r < R; ++r) {
    low[r] = first ? vf{} : load(partial + r * kPanel);
    high[r] = first ? vf{} : load(partial + r * kPanel + W);
  }
  for (int64_t p = 0; p < depth; ++p) {
    const float* ahead = panel + (p + kPrefetchAhead) * kPanel;
    for (int64_t line = 0; line < kPanel; line += 16) __builtin_prefetch(ahead + line);
    const vf b0 = load(panel + p * kPanel), b1 = load(panel + p * kPanel + W);
    for (int r = 0; r < R; ++r) {
      const vf x = splat(a[r * lda + p]);
      low[r] += x * b0;
      high[r] += x * b1;
    }
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
void tail_tile(int64_t rows, const float* a, int64_t lda, int64_t depth, const float* panel,
               float* c, int64_t ldc, int64_t cols, const float* bias, int mode, float* partial,
               bool first, bool last) {
  if constexpr (R > 0) {
    if (rows == R)
      return product_tile<R>(a, lda, depth, panel, c, ldc, cols, bias, mode, partial, first,
                             last);
    tail_tile<R - 1>(rows, a, lda, depth, panel, c, ldc, cols, bias, mode, partial, first, last);
  }
}

}  // namespace

int64_t panel_width() { return kPanel; }

// Floats of scratch memory packed_product() needs per thread.
int64_t product_scratch() { return kPanelGroup * kRowBlock * kPanel; }

// c (rows x cols) = a (rows x depth) @ w^T (+ bias, then the epilogue `mode`) for the panels
// [first, last) of w packed by pack_linear: panel p holds w's rows p*kPanel... as `depth` rows
// of kPanel floats, and zeros past the last row. Panels are independent, so threads may split
// them. bias (or null) holds `cols` floats. scratch: product_scratch() floats (or null when
// depth <= kDepthBlock).
//
// With kGlu, w was packed by pack_glu: panel p holds W rows of the activated half and the
// same W rows of the gate half, for the outputs p*W...; c has `cols` of those, and bias (or
// null) holds kPanel floats per panel in the same order.
void packed_product(const float* a, const float* packed, const float* bias, int mode, float* c,
                    int64_t rows, int64_t depth, int64_t cols, int64_t first, int64_t last,
                    float* scratch) {
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
        for (int64_t p = g0; p < g1; ++p) {
          const float* panel = packed + (p * depth + k0) * kPanel;
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
            product_tile<kTileRows>(a + r * depth + k0, depth, kc, panel, out + r * cols, cols,
                                    width, b, mode, partial ? partial + (r - m0) * kPanel : nullptr,
                                    first_block, last_block);
          tail_tile<kTileRows - 1>(m1 - r, a + r * depth + k0, depth, kc, panel, out + r * cols,
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
