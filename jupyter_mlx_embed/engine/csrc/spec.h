// What the vectorised kernels (simd_*.cpp, once per instruction set) and the rest of the
// native module share: AttentionSpec, the flags of a product's epilogue and of norm_rows, and
// the entry points of each instruction set's copy.
//
// Included by the simd_*.cpp files, so it holds to their rule (see simd_vec.h): no C++
// standard library and no inline function, only plain data, constants and declarations.

#ifndef JME_NATIVE_SPEC_H
#define JME_NATIVE_SPEC_H

#include <stddef.h>
#include <stdint.h>

namespace jme_native {

// What attention() computes: plain data, no member functions.
struct AttentionSpec {
  int64_t heads, kv_heads, width;  // query heads, key/value heads (dividing heads), head width
  int64_t left, right;             // query i sees keys i - left ... i + right of its sequence
  const float* query_bias;         // (heads * width) added to the queries, or null
  const float* q_norm;             // (width) RMSNorm weights of every query head, or null
  const float* k_norm;             // likewise for the keys
  float norm_eps;
  const float* rope;               // rotary table: per position, width/2 cosines then sines
};

// A packed product's epilogue: an activation in the low bits, then flags.
constexpr int kActivationMask = 3;  // 0 none, then:
constexpr int kGelu = 1;            // exact (erf) GELU
constexpr int kSilu = 2;            // x * sigmoid(x)
constexpr int kGeluTanh = 3;        // GELU's tanh approximation
constexpr int kGlu = 4;             // gated: each panel holds W activated and W gate columns,
                                    // and the result is act(activated) * gate
constexpr int kAccumulate = 8;      // c += result rather than c = result

// int8 products: where a product's depth is a multiple of this, its inputs and weights are
// both rotated, in blocks of this many values, by the orthonormal Hadamard matrix of this
// order (Sylvester's, entries +-1/8) before they are rounded to int8. The product is the same
// in exact arithmetic (H H^T = I); the rotation spreads a few outlier channels over their
// block, so that one scale per row rounds the rest finely (BENCHMARKS.md, int8).
constexpr int64_t kRotationBlock = 64;

// norm_rows' flags.
constexpr int kRms = 1;             // RMSNorm rather than LayerNorm
constexpr int kNormAccumulate = 2;  // out += the result

// The entry points of one instruction set's copy (defined in simd_norm_attention.cpp and
// simd_products.cpp, documented there).
#define JME_DECLARE_KERNELS(isa)                                                             \
  namespace isa {                                                                            \
  void add_layernorm(const float*, const float*, const float*, const float*, const float*,   \
                     float*, int64_t, int64_t, float);                                       \
  void norm_rows(const float*, const float*, const float*, float*, int64_t, int64_t, float,  \
                 int);                                                                       \
  int64_t attention_scratch(int64_t, int64_t);                                               \
  void attention(const AttentionSpec*, const float*, const int32_t*, float*, float*,         \
                 int64_t, int64_t);                                                          \
  JME_DECLARE_PRODUCTS()                                                                     \
  }
#define JME_DECLARE_PRODUCTS()                                                               \
  int64_t panel_width();                                                                     \
  int64_t tile_panels();                                                                     \
  int64_t product_scratch();                                                                 \
  void packed_product(const void*, const void*, const float*, int, float*, int64_t,           \
                      int64_t, int64_t, int64_t, int64_t, float*);
JME_DECLARE_KERNELS(avx2)
JME_DECLARE_KERNELS(avx512)
// The products on bfloat16 weights (simd_products.cpp built with AVX512_BF16).
namespace avx512bf16 {
JME_DECLARE_PRODUCTS()
}
// Products whose inputs are prepared once per product first (quantize_inputs): on int8
// weights (simd_products.cpp built with JME_INT8), and on bfloat16 weights with AMX tiles
// (built with JME_AMX).
#define JME_DECLARE_PREPARED_PRODUCTS(isa)                                                   \
  namespace isa {                                                                            \
  JME_DECLARE_PRODUCTS()                                                                     \
  int64_t quantized_size(int64_t, int64_t);                                                  \
  void quantize_inputs(const float*, int64_t, int64_t, int64_t, int64_t, void*);             \
  }
JME_DECLARE_PREPARED_PRODUCTS(avx2int8)
JME_DECLARE_PREPARED_PRODUCTS(avx512int8)
JME_DECLARE_PREPARED_PRODUCTS(avx512amx)

}  // namespace jme_native

#endif  // JME_NATIVE_SPEC_H
