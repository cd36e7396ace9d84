// The native module's shared declarations (engine-private), for runtime.cpp, primitives.cpp
// and ops.cpp: the kernels table of the instruction set in use, the helper threads, shared
// utilities, and the MLX primitives that the ops build arrays with. Never included by the
// simd_*.cpp files (they include spec.h alone).

#ifndef JME_NATIVE_NATIVE_H
#define JME_NATIVE_NATIVE_H

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "mlx/mlx.h"
#include "mlx/primitives.h"

#include "spec.h"

namespace jme_native {

namespace mx = mlx::core;

// A window side that no sequence reaches.
constexpr int64_t kUnbounded = int64_t{1} << 40;

// ------------------------------------------------------------------------------------------
// Instruction sets and helper threads (runtime.cpp)
// ------------------------------------------------------------------------------------------

// What packed weights hold (pack_linear's precision; their dtype tells it).
enum class Weights { kFloat32, kBFloat16, kInt8 };

// The products on one kind of packed weights, or null entries where the CPU lacks them.
struct Products {
  decltype(&avx2::product_scratch) scratch;
  decltype(&avx2::packed_product) product;
  decltype(&avx2::tile_panels) tile_panels;
  // int8, and bfloat16 on AMX: the inputs' preparation (quantize_inputs), which the product
  // then reads in place of the float inputs; null for the others.
  decltype(&avx2int8::quantized_size) quantized_size;
  decltype(&avx2int8::quantize_inputs) quantize;
  const char* name;  // what runs them, as precisions() and bf16_products() name it
};

// One instruction set's copy of the vectorised kernels.
struct Kernels {
  const char* name;
  decltype(&avx2::add_layernorm) add_layernorm;
  decltype(&avx2::norm_rows) norm_rows;
  decltype(&avx2::attention_scratch) attention_scratch;
  decltype(&avx2::attention) attention;
  decltype(&avx2::panel_width) panel_width;  // every kind of weights' panels: one width
  Products fp32;
  Products bf16;  // only the AVX-512 copy: AMX tiles, else AVX512_BF16, where the CPU has them
  Products int8;  // AVX2; AVX-512 on a CPU with AVX512_VNNI

  const Products& products(Weights w) const {
    return w == Weights::kBFloat16 ? bf16 : w == Weights::kInt8 ? int8 : fp32;
  }
};

// The kernels in use: the widest the CPU runs, until set_isa() says otherwise. Throws
// std::runtime_error on a CPU with neither AVX2+FMA nor AVX-512.
const Kernels& kernels();
// Picks the 'avx2' or 'avx512' kernels; throws std::invalid_argument for another name or one
// this CPU cannot run.
void set_isa(const std::string& name);
// The instruction sets this CPU runs, widest first.
std::vector<std::string> supported_isas();
// What runs the bfloat16 products of the AVX-512 kernels: 'amx' or 'avx512_bf16', whichever
// this CPU has (AMX first); an empty string where it has neither.
std::string bf16_products();
// Picks 'amx' or 'avx512_bf16' for them; throws std::invalid_argument for another name or one
// this CPU cannot run.
void set_bf16_products(const std::string& name);

// A share of a job split over threads: the items [first, last) of `job`.
using Task = void (*)(const void* job, int64_t first, int64_t last);
// Runs task over [0, count) on this thread and up to `threads - 1` helper threads; on this
// thread alone while another caller holds the helpers.
void run_on_helpers(Task task, const void* job, int64_t count, int threads);

// ------------------------------------------------------------------------------------------
// Shared utilities
// ------------------------------------------------------------------------------------------

// pack_linear's layout: a weight of `cols` output features and `depth` inputs becomes
// (panels(cols, panel), depth, panel), panel being the width of the kernels in use.
inline int64_t panels(int64_t cols, int64_t panel) { return (cols + panel - 1) / panel; }

// What a packed weight holds, from its dtype.
inline Weights weights_of(const mx::array& packed) {
  return packed.dtype() == mx::bfloat16 ? Weights::kBFloat16
         : packed.dtype() == mx::int8   ? Weights::kInt8
                                        : Weights::kFloat32;
}

// The depth (inputs) a packed weight was packed for: its rows, twice as many with bfloat16
// (which pairs them), four times as many less the two rows of scales with int8 (which takes
// quads); a depth that is no multiple comes back larger, its extra inputs meeting zero weights.
inline int64_t packed_depth(const mx::array& packed) {
  switch (weights_of(packed)) {
    case Weights::kBFloat16: return packed.shape(1) * 2;
    case Weights::kInt8: return (packed.shape(1) - 2) * 4;
    default: return packed.shape(1);
  }
}

// An op's float32 input, contiguous, on its stream; throws std::invalid_argument naming it
// if it is not float32.
inline mx::array float_input(const mx::array& a, const char* what, mx::Stream s) {
  if (a.dtype() != mx::float32)
    throw std::invalid_argument(std::string(what) + " must be float32");
  return mx::contiguous(a, false, s);
}

// pack_glu's layout: a gated product of `cols` outputs has panels(cols, panel / 2) panels,
// each the panel / 2 activated rows then the same rows of the gate.
inline int64_t glu_panels(int64_t cols, int64_t panel) { return panels(cols, panel / 2); }

// Rotary tables: row t holds cos(t f_i) for i < width / 2, then sin(t f_i), with
// f_i = theta^(-2i / width) (mx.fast.rope's frequencies), computed in double precision.
// One table per (theta, width), grown as longer sequences come and shared: a table handed
// out stays valid while its holder runs (runtime.cpp).
using RopeTable = std::shared_ptr<const std::vector<float>>;
RopeTable rope_table(double theta, int64_t width, int64_t length);

// ------------------------------------------------------------------------------------------
// Primitives (their evaluation in primitives.cpp; the ops in ops.cpp check their inputs)
// ------------------------------------------------------------------------------------------

class CpuOnly : public mx::Primitive {
 public:
  using mx::Primitive::Primitive;
  void eval_gpu(const std::vector<mx::array>&, std::vector<mx::array>&) override;
};

// Input: any contiguous array; output: a copy of it whose data starts at a cache line (as
// every output of these primitives: allocate() in primitives.cpp), for packed weights, which
// the products read a whole vector at a time.
class Aligned : public CpuOnly {
 public:
  using CpuOnly::CpuOnly;
  const char* name() const override { return "JmeAligned"; }
  bool is_equivalent(const mx::Primitive& other) const override {
    return dynamic_cast<const Aligned*>(&other) != nullptr;
  }
  void eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override;
};

// Inputs: h, then residual and bias if given, then the norm's weight and bias.
class AddLayerNorm : public CpuOnly {
 public:
  AddLayerNorm(mx::Stream stream, float eps, bool residual, bool bias)
      : CpuOnly(stream), eps_(eps), residual_(residual), bias_(bias) {}
  const char* name() const override { return "JmeAddLayerNorm"; }
  bool is_equivalent(const mx::Primitive& other) const override {
    auto* o = dynamic_cast<const AddLayerNorm*>(&other);
    return o && o->eps_ == eps_ && o->residual_ == residual_ && o->bias_ == bias_;
  }
  void eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override;

 private:
  float eps_;
  bool residual_;
  bool bias_;
};

// Inputs: x, then weight and bias if given.
class Norm : public CpuOnly {
 public:
  Norm(mx::Stream stream, float eps, bool rms, bool weight, bool bias, int threads)
      : CpuOnly(stream), eps_(eps), rms_(rms), weight_(weight), bias_(bias), threads_(threads) {}
  const char* name() const override { return "JmeNorm"; }
  bool is_equivalent(const mx::Primitive& other) const override {
    auto* o = dynamic_cast<const Norm*>(&other);
    return o && o->eps_ == eps_ && o->rms_ == rms_ && o->weight_ == weight_ &&
           o->bias_ == bias_ && o->threads_ == threads_;
  }
  void eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override;

 private:
  float eps_;
  bool rms_, weight_, bias_;
  int threads_;
};

// Attention's settings as a primitive keeps them (the arrays come at evaluation).
struct AttentionSettings {
  int64_t heads, kv_heads, width, left, right;
  float eps;
  double rope_theta;  // 0: no rotary embedding

  bool operator==(const AttentionSettings&) const = default;
};

// Inputs: qkv, int32 offsets, then query_bias, q_norm and k_norm if given.
class Attention : public CpuOnly {
 public:
  Attention(mx::Stream stream, AttentionSettings settings, bool query_bias, bool q_norm,
            bool k_norm, int threads)
      : CpuOnly(stream),
        settings_(settings),
        present_{query_bias, q_norm, k_norm},
        threads_(threads) {}
  const char* name() const override { return "JmeAttention"; }
  bool is_equivalent(const mx::Primitive& other) const override {
    auto* o = dynamic_cast<const Attention*>(&other);
    return o && o->settings_ == settings_ && o->present_ == present_ && o->threads_ == threads_;
  }
  void eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override;

 private:
  AttentionSettings settings_;
  std::vector<bool> present_;  // query_bias, q_norm, k_norm
  int threads_;
};

// Inputs: x, the packed weight, then the bias and the residual if given.
class PackedLinear : public CpuOnly {
 public:
  PackedLinear(mx::Stream stream, int64_t cols, bool bias, int mode, bool residual, int threads)
      : CpuOnly(stream),
        cols_(cols),
        bias_(bias),
        mode_(mode),
        residual_(residual),
        threads_(threads) {}
  const char* name() const override { return "JmePackedLinear"; }
  bool is_equivalent(const mx::Primitive& other) const override {
    auto* o = dynamic_cast<const PackedLinear*>(&other);
    return o && o->cols_ == cols_ && o->bias_ == bias_ && o->mode_ == mode_ &&
           o->residual_ == residual_ && o->threads_ == threads_;
  }
  void eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override;

 private:
  int64_t cols_;
  bool bias_;
  int mode_;
  bool residual_;
  int threads_;
};

// A whole BERT encoder (post-LayerNorm layers) in one task: the products, attention and
// LayerNorms of every layer one after the other, on this stream's thread and the helpers.
// One primitive instead of seven per layer saves MLX's graph building and scheduling, which
// for one sentence is about a tenth of the forward pass, and keeps the helpers busy.
// Inputs: x, int32 offsets, then kSlots per layer.
class Encoder : public CpuOnly {
 public:
  // Inputs of one layer, in this order (see encoder() in ops.cpp).
  enum Slot { kQkv, kQueryBias, kOutput, kOutputBias, kNorm1, kNorm1Bias,
              kUp, kUpBias, kDown, kDownBias, kNorm2, kNorm2Bias, kSlots };

  Encoder(mx::Stream stream, int heads, float eps, int threads)
      : CpuOnly(stream), heads_(heads), eps_(eps), threads_(threads) {}
  const char* name() const override { return "JmeEncoder"; }
  bool is_equivalent(const mx::Primitive& other) const override {
    auto* o = dynamic_cast<const Encoder*>(&other);
    return o && o->heads_ == heads_ && o->eps_ == eps_ && o->threads_ == threads_;
  }
  void eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override;

 private:
  int heads_;
  float eps_;
  int threads_;
};

// A pre-norm transformer (ModernBERT, Qwen3; the shape of Gemma 3's too) in one task, on this
// stream's thread and the helpers: per layer
//
//   x += [post_attn_norm] (attention(attn_norm(x) @ Wqkv (+ b)) @ Wo (+ b))
//   x += [post_mlp_norm] (glu(mlp_norm(x) @ Wup (+ b)) @ Wdown (+ b))
//
// with each norm a LayerNorm or an RMSNorm (weight and bias optional; an absent attn_norm or
// mlp_norm is the identity, an absent post norm is left out), glu the gated activation
// act(a) * g of the two halves of the up projection, and attention the fused kernel
// (grouped key/value heads, the layer's window, causal or not, per-head q/k RMSNorm and the
// layer's rotary embedding). An embedding norm may come first and a final norm last. The
// residual additions ride in the products' epilogues.
// Inputs: x, int32 offsets, then those of kHeads and of kSlots per layer that are present.
class Transformer : public CpuOnly {
 public:
  // Inputs of one layer, in this order (see transformer() in ops.cpp); None where absent.
  enum Slot { kAttnNorm, kAttnNormBias, kQkv, kQkvBias, kQNorm, kKNorm, kOut, kOutBias,
              kPostAttnNorm, kPostAttnNormBias, kMlpNorm, kMlpNormBias, kUp, kUpBias, kDown,
              kDownBias, kPostMlpNorm, kPostMlpNormBias, kSlots };
  // Inputs before the layers', after x and offsets.
  enum Head { kEmbedNorm, kEmbedNormBias, kFinalNorm, kFinalNormBias, kHeads };

  struct Settings {
    int64_t heads, kv_heads, width;
    bool rms, causal;
    int activation;
    float eps;
    bool gated;  // the up product is gated (GLU, packed by pack_glu), else plain
    std::vector<int64_t> windows;  // per layer: keys within this distance, or < 0 (all)
    std::vector<double> thetas;    // per layer: rotary base, or 0 (none)
    // The post-attention and post-MLP norms take the residual sum, x = norm(x + f(x)) (a
    // post-norm BERT: NomicBERT), else f's output before it is added, x += norm(f(x)) (Gemma 3).
    bool post_norm;

    bool operator==(const Settings&) const = default;
  };

  Transformer(mx::Stream stream, Settings settings, std::vector<bool> present, int threads)
      : CpuOnly(stream),
        settings_(std::move(settings)),
        present_(std::move(present)),
        threads_(threads) {}
  const char* name() const override { return "JmeTransformer"; }
  bool is_equivalent(const mx::Primitive& other) const override {
    auto* o = dynamic_cast<const Transformer*>(&other);
    return o && o->settings_ == settings_ && o->present_ == present_ && o->threads_ == threads_;
  }
  void eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override;

 private:
  // The forward pass on the stream's thread (and the helpers), once the inputs are known.
  static void run(const Kernels& k, const Settings& s, const float* x_in,
                  const int32_t* offsets, int64_t sequences, float* x, int64_t tokens,
                  int64_t dim, int64_t hidden, const std::vector<const float*>& w,
                  Weights weights, int threads);

  Settings settings_;
  std::vector<bool> present_;  // per input after x and offsets: given or None
  int threads_;
};

// ------------------------------------------------------------------------------------------
// Packed weights (packing.cpp; the ops' documentation is in ops.cpp's bindings)
// ------------------------------------------------------------------------------------------

// Whether `packed` has pack_linear's layout for `depth` inputs (its panel count aside) with
// the kernels in use.
bool packed_for(const mx::array& packed, int64_t depth);
mx::array pack_linear(const mx::array& weight, const std::string& precision,
                      mx::StreamOrDevice stream = {});
mx::array pack_glu(const mx::array& activated, const mx::array& gate,
                   const std::string& precision, mx::StreamOrDevice stream = {});
mx::array pack_glu_bias(const mx::array& activated, const mx::array& gate,
                        mx::StreamOrDevice stream = {});

}  // namespace jme_native

#endif  // JME_NATIVE_NATIVE_H
