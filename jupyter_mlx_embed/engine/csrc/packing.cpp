// Packing weights for the products (engine-private): pack_linear, pack_glu and their layouts
// for each kind of weights (float32, bfloat16, int8 with scales), made once at load; and the
// check that a packed weight fits the kernels in use.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "native.h"

namespace jme_native {

namespace {

// The packed weights a precision name asks for ('fp32', 'bf16' or 'int8'), which the kernels
// in use must have.
Weights precision_weights(const std::string& precision) {
  if (precision == "fp32") return Weights::kFloat32;
  if (precision == "bf16") {
    if (!kernels().bf16.product)
      throw std::invalid_argument("precision='bf16' needs the avx512 kernels on a CPU with "
                                  "AMX or AVX512_BF16 (see has_bf16())");
    return Weights::kBFloat16;
  }
  if (precision == "int8") {
    if (!kernels().int8.product)
      throw std::invalid_argument("precision='int8' needs the avx2 kernels, or the avx512 "
                                  "ones on a CPU with AVX512_VNNI (see has_int8())");
    return Weights::kInt8;
  }
  throw std::invalid_argument("precision must be 'fp32', 'bf16' or 'int8', got '" + precision +
                              "'");
}

// `row` (depth values, a multiple of kRotationBlock) times the orthonormal Hadamard matrix of
// that order, block by block, in place: what quantize_inputs() does to each input row.
void rotate_blocks(float* row, int64_t depth) {
  for (int64_t b = 0; b < depth; b += kRotationBlock) {
    float* block = row + b;
    for (int64_t h = 1; h < kRotationBlock; h *= 2) {
      for (int64_t i = 0; i < kRotationBlock; ++i) {
        if (i & h) continue;
        const float first = block[i], second = block[i + h];
        block[i] = first + second;
        block[i + h] = first - second;
      }
    }
    for (int64_t i = 0; i < kRotationBlock; ++i) block[i] *= 0.125f;
  }
}

// to_panels' int8 layout, computed here in one pass over the evaluated weights (MLX ops took
// five times as long as packing float32 at load). Rows are rotated first where the depth is
// a multiple of kRotationBlock.
mx::array int8_panels(const mx::array& rows, int64_t count, mx::Stream s) {
  const int64_t panel = kernels().panel_width(), depth = rows.shape(1);
  const int64_t steps = (depth + 3) / 4, line = 4 * panel;  // panel rows of quads, their bytes
  mx::array weights = mx::contiguous(rows, false, s);
  mx::eval(weights);
  const float* w = weights.data<float>();
  const bool rotated = depth % kRotationBlock == 0;
  std::vector<float> turned(rotated ? depth : 0);
  std::vector<int8_t> packed(static_cast<size_t>(count * (steps + 2) * line), 0);
  for (int64_t c = 0; c < count * panel; ++c) {
    const float* row = w + c * depth;
    if (rotated) {
      std::copy(row, row + depth, turned.begin());
      rotate_blocks(turned.data(), depth);
      row = turned.data();
    }
    float largest = 0.0f;
    for (int64_t k = 0; k < depth; ++k) largest = std::max(largest, std::fabs(row[k]));
    const float scale = largest / 127.0f, divisor = scale == 0.0f ? 1.0f : scale;
    int8_t* base = packed.data() + (c / panel) * (steps + 2) * line + (c % panel) * 4;
    int32_t sum = 0;
    for (int64_t k = 0; k < depth; ++k) {
      // To the nearest integer, ties to even, as MLX's round (|x| <= 127 here): adding and
      // taking away 1.5 * 2^23 leaves no fraction bits (a call to nearbyint took 3x as long).
      const float q = std::clamp((row[k] / divisor + 12582912.0f) - 12582912.0f, -127.0f, 127.0f);
      base[(k / 4) * line + k % 4] = static_cast<int8_t>(q);
      sum += static_cast<int32_t>(q);
    }
    const int32_t offset = 128 * sum;
    std::memcpy(base + steps * line, &scale, 4);
    std::memcpy(base + (steps + 1) * line, &offset, 4);
  }
  return mx::array(packed.begin(),
                   {static_cast<int>(count), static_cast<int>(steps + 2), static_cast<int>(line)},
                   mx::int8);
}

// Rows (count * panel, depth) of float32 weights laid out as panels of `weights`:
// - float32 (count, depth, panel);
// - bfloat16 (count, depth / 2 rounded up, 2 * panel) holding, per panel row, each column's
//   weights of two consecutive depth rows side by side (a zero pads an odd depth);
// - int8 (count, depth / 4 rounded up + 2, 4 * panel): per panel row each column's weights of
//   four consecutive depth rows (zeros pad the depth), each row (column) rounded to the
//   nearest of 255 steps of its largest magnitude / 127 (ties to even); then a row of the
//   columns' float32 scales (that magnitude / 127; 0 for a row of zeros) and one of 128 times
//   their int32 sums (what inputs offset by 128 add, see simd_products.cpp), as bytes.
mx::array to_panels(const mx::array& rows, int64_t count, Weights weights, mx::Stream s) {
  const int panel = static_cast<int>(kernels().panel_width());
  const int n = static_cast<int>(count);
  const int depth = rows.shape(1);
  if (weights == Weights::kInt8) return int8_panels(rows, count, s);
  if (weights == Weights::kFloat32) {
    mx::array packed = mx::reshape(rows, {n, panel, depth}, s);
    return mx::contiguous(mx::transpose(packed, {0, 2, 1}, s), false, s);
  }
  mx::array even =
      depth % 2 ? mx::pad(rows, {{0, 0}, {0, 1}}, mx::array(0), "constant", s) : rows;
  mx::array pairs = mx::reshape(even, {n, panel, (depth + 1) / 2, 2}, s);
  pairs = mx::transpose(pairs, {0, 2, 1, 3}, s);
  return mx::contiguous(
      mx::astype(mx::reshape(pairs, {n, (depth + 1) / 2, 2 * panel}, s), mx::bfloat16, s),
      false, s);
}

// `packed` (contiguous) copied to data that starts at a cache line (Aligned).
mx::array aligned(const mx::array& packed, mx::Stream s) {
  return mx::array(packed.shape(), packed.dtype(), std::make_shared<Aligned>(s), {packed});
}

// The rows of `a` and `b` (same shape, (out, ...)) interleaved by half panels, zero-padded:
// (glu_panels(out), panel, ...), each panel / 2 rows of a then the same rows of b.
mx::array interleave_halves(const mx::array& a, const mx::array& b, mx::Stream s) {
  const int64_t half = kernels().panel_width() / 2;
  const int64_t count = panels(a.shape(0), half);
  auto split = [&](const mx::array& m) {
    std::vector<std::pair<int, int>> pad(m.ndim(), {0, 0});
    pad[0].second = static_cast<int>(count * half - m.shape(0));
    mx::Shape shape = m.shape();
    shape[0] = static_cast<int>(half);
    shape.insert(shape.begin(), static_cast<int>(count));
    return mx::reshape(mx::pad(m, pad, mx::array(0), "constant", s), shape, s);
  };
  mx::array both = mx::concatenate({split(a), split(b)}, 1, s);
  mx::Shape shape = a.shape();
  shape[0] = static_cast<int>(count * 2 * half);
  return mx::reshape(both, shape, s);
}

}  // namespace

// Whether `packed` has pack_linear's layout for `depth` inputs (its panel count aside):
// float32 (panels, depth, panel), bfloat16 (panels, depth / 2 rounded up, 2 * panel) or int8
// (panels, depth / 4 rounded up + 2, 4 * panel) on kernels with those products.
bool packed_for(const mx::array& packed, int64_t depth) {
  const int64_t panel = kernels().panel_width();
  if (packed.ndim() != 3) return false;
  if (packed.dtype() == mx::bfloat16)
    return kernels().bf16.product && packed.shape(2) == 2 * panel &&
           packed.shape(1) == (depth + 1) / 2;
  if (packed.dtype() == mx::int8)
    return kernels().int8.product && packed.shape(2) == 4 * panel &&
           packed.shape(1) == (depth + 3) / 4 + 2;
  return packed.dtype() == mx::float32 && packed.shape(2) == panel && packed.shape(1) == depth;
}

mx::array pack_linear(const mx::array& weight, const std::string& precision,
                      mx::StreamOrDevice stream) {
  if (weight.ndim() != 2) throw std::invalid_argument("weight must be (out, in)");
  const Weights weights = precision_weights(precision);
  const mx::Stream s = mx::to_stream(stream);
  const int64_t panel = kernels().panel_width();
  const int64_t count = panels(weight.shape(0), panel);
  mx::array padded = mx::pad(float_input(weight, "weight", s),
                             {{0, static_cast<int>(count * panel - weight.shape(0))}, {0, 0}},
                             mx::array(0), "constant", s);
  return aligned(to_panels(padded, count, weights, s), s);
}

mx::array pack_glu(const mx::array& activated, const mx::array& gate,
                   const std::string& precision, mx::StreamOrDevice stream) {
  if (activated.ndim() != 2 || gate.shape() != activated.shape())
    throw std::invalid_argument("activated and gate must be (out, in) weights of one shape");
  const Weights weights = precision_weights(precision);
  const mx::Stream s = mx::to_stream(stream);
  mx::array rows = interleave_halves(float_input(activated, "activated", s),
                                     float_input(gate, "gate", s), s);
  return aligned(to_panels(rows, rows.shape(0) / kernels().panel_width(), weights, s), s);
}

mx::array pack_glu_bias(const mx::array& activated, const mx::array& gate,
                        mx::StreamOrDevice stream) {
  if (activated.ndim() != 1 || gate.shape() != activated.shape())
    throw std::invalid_argument("activated and gate must be bias vectors of one shape");
  const mx::Stream s = mx::to_stream(stream);
  return mx::contiguous(interleave_halves(float_input(activated, "activated", s),
                                          float_input(gate, "gate", s), s),
                        false, s);
}

}  // namespace jme_native
