// Norms and attention of the vectorised kernels (engine-private): residual add + LayerNorm,
// LayerNorm or RMSNorm of rows, and self-attention over a fused QKV projection (grouped
// key/value heads, windows, per-head RMSNorm and rotary embeddings applied as q and k are
// read).
//
// Compiled once per instruction set (JME_ISA, JME_WIDTH) like every simd_*.cpp file, and
// bound by the same rule (see simd_vec.h): no C++ standard library, no inline function shared
// with another translation unit.

#include "simd_vec.h"

namespace jme_native {
namespace JME_ISA {

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

}  // namespace JME_ISA
}  // namespace jme_native
