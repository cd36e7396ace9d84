// The native module's ops and Python bindings (engine-private): matrix products with weights
// packed once (packing.cpp) (bias and an activation fused in, gated (GLU) products, results added to a
// residual), LayerNorm and RMSNorm, attention over a fused QKV projection (grouped key/value
// heads, sliding windows, causal masks, per-head RMSNorm and rotary embeddings applied as q
// and k are read), and whole encoders in one op: BERT's post-LayerNorm layers (`encoder`) and
// the other transformers (`transformer`: pre-norm ModernBERT, Qwen3, Gemma 3 and SigLIP, and
// with post_norm NomicBERT). Each op checks its inputs and returns an array computed by one
// of the primitives of native.h (primitives.cpp), each one pass of vectorised code where
// MLX's x86 CPU backend runs several scalar ones (or OpenBLAS, slow on a few rows, the
// products).
//
// Built at install time (jupyter_mlx_embed/engine/native.py) with nanobind in MLX's nanobind
// domain, so mlx.core.array objects pass in and out as they are and the ops join MLX's lazy
// graph like any other. Like MLX's own ops, each takes a `stream` (an mx.Stream or mx.Device,
// passed as mx::StreamOrDevice) and runs on the stream that is current when it is called if
// given none.

#include <algorithm>
#include <cmath>
#include <map>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <nanobind/nanobind.h>
#include <nanobind/stl/map.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/variant.h>
#include <nanobind/stl/vector.h>

#include "native.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace jme_native {

namespace {

// An op's int32 offsets, contiguous, on its stream.
mx::array offsets_input(const mx::array& offsets, mx::Stream s) {
  return mx::contiguous(mx::astype(offsets, mx::int32, s), false, s);
}

void check_vector(const mx::array& v, int64_t size, const char* what) {
  if (v.ndim() != 1 || v.shape(0) != size)
    throw std::invalid_argument(std::string(what) + " must have shape (" +
                                std::to_string(size) + ",)");
}

// A packed weight (checked by packed_for), contiguous, on the op's stream.
mx::array packed_input(const mx::array& packed, mx::Stream s) {
  return mx::contiguous(packed, false, s);
}

// The epilogue code of an activation's name ("" for none).
int activation_code(const std::string& name) {
  if (name.empty() || name == "none") return 0;
  if (name == "gelu") return kGelu;
  if (name == "silu") return kSilu;
  if (name == "gelu_tanh") return kGeluTanh;
  throw std::invalid_argument("activation must be 'gelu', 'silu' or 'gelu_tanh', got '" + name +
                              "'");
}

}  // namespace

mx::array add_layernorm(const mx::array& h, const std::optional<mx::array>& residual,
                        const std::optional<mx::array>& bias, const mx::array& weight,
                        const mx::array& norm_bias, float eps, mx::StreamOrDevice stream = {}) {
  if (h.ndim() < 1) throw std::invalid_argument("h must have at least one dimension");
  const mx::Stream s = mx::to_stream(stream);
  const int64_t cols = h.shape(-1);
  std::vector<mx::array> inputs{float_input(h, "h", s)};
  if (residual) {
    if (residual->shape() != h.shape())
      throw std::invalid_argument("residual must have the shape of h");
    inputs.push_back(float_input(*residual, "residual", s));
  }
  if (bias) {
    check_vector(*bias, cols, "bias");
    inputs.push_back(float_input(*bias, "bias", s));
  }
  check_vector(weight, cols, "weight");
  check_vector(norm_bias, cols, "norm_bias");
  inputs.push_back(float_input(weight, "weight", s));
  inputs.push_back(float_input(norm_bias, "norm_bias", s));
  return mx::array(h.shape(), mx::float32,
                   std::make_shared<AddLayerNorm>(s, eps, residual.has_value(), bias.has_value()),
                   std::move(inputs));
}

mx::array norm(const mx::array& x, const std::optional<mx::array>& weight,
               const std::optional<mx::array>& bias, float eps, bool rms, int threads,
               mx::StreamOrDevice stream = {}) {
  if (x.ndim() < 1) throw std::invalid_argument("x must have at least one dimension");
  if (threads < 1) throw std::invalid_argument("threads must be at least 1");
  const mx::Stream s = mx::to_stream(stream);
  const int64_t cols = x.shape(-1);
  std::vector<mx::array> inputs{float_input(x, "x", s)};
  for (const auto& [v, what] : {std::pair{&weight, "weight"}, std::pair{&bias, "bias"}}) {
    if (*v) {
      check_vector(**v, cols, what);
      inputs.push_back(float_input(**v, what, s));
    }
  }
  return mx::array(x.shape(), mx::float32,
                   std::make_shared<Norm>(s, eps, rms, weight.has_value(), bias.has_value(),
                                          threads),
                   std::move(inputs));
}

mx::array attention(const mx::array& qkv, const mx::array& offsets, int heads,
                    const std::optional<mx::array>& query_bias, int threads, int kv_heads,
                    int window, bool causal, const std::optional<mx::array>& q_norm,
                    const std::optional<mx::array>& k_norm, float norm_eps, double rope_theta,
                    mx::StreamOrDevice stream = {}) {
  if (qkv.ndim() != 2) throw std::invalid_argument("qkv must be (tokens, 3 * dim)");
  if (kv_heads == 0) kv_heads = heads;
  if (heads < 1 || kv_heads < 1 || heads % kv_heads != 0)
    throw std::invalid_argument("heads must be a multiple of kv_heads, both at least 1");
  const int64_t columns = heads + 2 * kv_heads;
  if (qkv.shape(1) % columns != 0)
    throw std::invalid_argument(
        kv_heads == heads ? "qkv's last dimension must be 3 * heads * head width"
                          : "qkv's last dimension must be (heads + 2 * kv_heads) * head width");
  if (offsets.ndim() != 1 || offsets.shape(0) < 1)
    throw std::invalid_argument("offsets must be a vector (sequences + 1,)");
  if (threads < 1) throw std::invalid_argument("threads must be at least 1");
  const int64_t width = qkv.shape(1) / columns;
  if (rope_theta < 0 || (rope_theta > 0 && width % 2 != 0))
    throw std::invalid_argument("rope_theta needs an even head width and must be >= 0");
  const mx::Stream s = mx::to_stream(stream);
  std::vector<mx::array> inputs{float_input(qkv, "qkv", s), offsets_input(offsets, s)};
  if (query_bias) {
    check_vector(*query_bias, heads * width, "query_bias");
    inputs.push_back(float_input(*query_bias, "query_bias", s));
  }
  for (const auto& [v, what] : {std::pair{&q_norm, "q_norm"}, std::pair{&k_norm, "k_norm"}}) {
    if (*v) {
      check_vector(**v, width, what);
      inputs.push_back(float_input(**v, what, s));
    }
  }
  const int64_t side = window < 0 ? kUnbounded : window;
  const AttentionSettings settings{heads, kv_heads, width, side, causal ? 0 : side, norm_eps,
                                   rope_theta};
  mx::Shape shape{qkv.shape(0), static_cast<int>(heads * width)};
  return mx::array(std::move(shape), mx::float32,
                   std::make_shared<Attention>(s, settings, query_bias.has_value(),
                                               q_norm.has_value(), k_norm.has_value(), threads),
                   std::move(inputs));
}

mx::array linear(const mx::array& x, const mx::array& packed, int64_t cols,
                 const std::optional<mx::array>& bias, bool gelu, int threads,
                 const std::string& glu, const std::optional<mx::array>& residual,
                 mx::StreamOrDevice stream = {}) {
  if (x.ndim() < 1) throw std::invalid_argument("x must have at least one dimension");
  if (!packed_for(packed, x.shape(-1)))
    throw std::invalid_argument(
        "packed must come from pack_linear or pack_glu with the kernels in use and x's last "
        "dimension");
  const int64_t panel = kernels().panel_width();
  const bool gated = !glu.empty();
  if (gated && gelu) throw std::invalid_argument("gelu and glu exclude each other");
  if (cols < 1 || packed.shape(0) != (gated ? glu_panels(cols, panel) : panels(cols, panel)))
    throw std::invalid_argument("cols must be the packed weight's output features");
  if (threads < 1) throw std::invalid_argument("threads must be at least 1");
  const mx::Stream s = mx::to_stream(stream);
  std::vector<mx::array> inputs{float_input(x, "x", s), packed_input(packed, s)};
  if (bias) {
    check_vector(*bias, gated ? packed.shape(0) * panel : cols,
                 gated ? "bias (from pack_glu_bias)" : "bias");
    inputs.push_back(float_input(*bias, "bias", s));
  }
  mx::Shape shape = x.shape();
  shape.back() = static_cast<int>(cols);
  if (residual) {
    if (residual->shape() != shape)
      throw std::invalid_argument("residual must have the shape of the result");
    inputs.push_back(float_input(*residual, "residual", s));
  }
  const int mode = gated ? kGlu | activation_code(glu) : gelu ? kGelu : 0;
  return mx::array(std::move(shape), mx::float32,
                   std::make_shared<PackedLinear>(s, cols, bias.has_value(), mode,
                                                  residual.has_value(), threads),
                   std::move(inputs));
}

mx::array encoder(const mx::array& x, const mx::array& offsets,
                  const std::vector<mx::array>& layers, int heads, float eps, int threads,
                  mx::StreamOrDevice stream = {}) {
  if (x.ndim() != 2) throw std::invalid_argument("x must be (tokens, dim)");
  const int64_t dim = x.shape(1);
  if (heads < 1 || dim % heads != 0)
    throw std::invalid_argument("x's last dimension must be a multiple of heads");
  if (offsets.ndim() != 1 || offsets.shape(0) < 1)
    throw std::invalid_argument("offsets must be a vector (sequences + 1,)");
  if (layers.empty() || layers.size() % Encoder::kSlots != 0)
    throw std::invalid_argument("layers must hold " + std::to_string(Encoder::kSlots) +
                                " arrays per layer");
  if (threads < 1) throw std::invalid_argument("threads must be at least 1");
  const int64_t panel = kernels().panel_width();
  const int64_t hidden =
      layers[Encoder::kUpBias].ndim() == 1 ? layers[Encoder::kUpBias].shape(0) : 0;
  auto packed_shape = [&](const mx::array& p, int64_t depth, int64_t cols, size_t index) {
    if (!packed_for(p, depth) || p.shape(0) != panels(cols, panel))
      throw std::invalid_argument("layers[" + std::to_string(index) +
                                  "] must be a weight packed by pack_linear with the kernels "
                                  "in use, (" + std::to_string(cols) + ", " +
                                  std::to_string(depth) + ") before packing");
  };
  const mx::Stream s = mx::to_stream(stream);
  std::vector<mx::array> inputs{float_input(x, "x", s), offsets_input(offsets, s)};
  for (size_t i = 0; i < layers.size(); ++i) {
    const mx::array& a = layers[i];
    const std::string what = "layers[" + std::to_string(i) + "]";
    bool weight = true;
    switch (i % Encoder::kSlots) {
      case Encoder::kQkv: packed_shape(a, dim, 3 * dim, i); break;
      case Encoder::kOutput: packed_shape(a, dim, dim, i); break;
      case Encoder::kUp: packed_shape(a, dim, hidden, i); break;
      case Encoder::kDown: packed_shape(a, hidden, dim, i); break;
      case Encoder::kUpBias: check_vector(a, hidden, what.c_str()); weight = false; break;
      default: check_vector(a, dim, what.c_str()); weight = false;
    }
    if (weight && a.dtype() != layers[Encoder::kQkv].dtype())
      throw std::invalid_argument(what + " must be packed with the precision of layers[0]");
    inputs.push_back(weight ? packed_input(a, s) : float_input(a, what.c_str(), s));
  }
  return mx::array(x.shape(), mx::float32, std::make_shared<Encoder>(s, heads, eps, threads),
                   std::move(inputs));
}

mx::array transformer(const mx::array& x, const mx::array& offsets,
                      const std::vector<std::optional<mx::array>>& head,
                      const std::vector<std::optional<mx::array>>& layers, int heads,
                      int kv_heads, int head_dim, const std::string& norm_kind, float eps,
                      const std::string& activation, bool causal,
                      const std::vector<int64_t>& windows, const std::vector<double>& thetas,
                      bool gated, bool post_norm, int threads,
                      mx::StreamOrDevice stream = {}) {
  using T = Transformer;
  if (x.ndim() != 2) throw std::invalid_argument("x must be (tokens, dim)");
  if (offsets.ndim() != 1 || offsets.shape(0) < 1)
    throw std::invalid_argument("offsets must be a vector (sequences + 1,)");
  if (heads < 1 || kv_heads < 1 || heads % kv_heads != 0 || head_dim < 1)
    throw std::invalid_argument(
        "heads must be a multiple of kv_heads, and heads, kv_heads and head_dim at least 1");
  if (norm_kind != "layer" && norm_kind != "rms")
    throw std::invalid_argument("norm must be 'layer' or 'rms', got '" + norm_kind + "'");
  const int act = activation_code(activation);
  if (act == 0) throw std::invalid_argument("activation must be given for the MLP");
  if (threads < 1) throw std::invalid_argument("threads must be at least 1");
  if (head.size() != T::kHeads)
    throw std::invalid_argument("head must hold 4 arrays or None: the embedding norm's weight "
                                "and bias, the final norm's weight and bias");
  if (windows.empty() || thetas.size() != windows.size() ||
      layers.size() != windows.size() * T::kSlots)
    throw std::invalid_argument("layers must hold " + std::to_string(T::kSlots) +
                                " arrays or None per layer, and windows and rope_thetas one "
                                "value per layer");
  for (double theta : thetas)
    if (theta < 0 || (theta > 0 && head_dim % 2 != 0))
      throw std::invalid_argument("rope_thetas need an even head_dim and must be >= 0");
  const int64_t dim = x.shape(1), panel = kernels().panel_width();
  const int64_t q_dim = int64_t{heads} * head_dim;
  const int64_t qkv_cols = (int64_t{heads} + 2 * kv_heads) * head_dim;
  const auto& down = layers[T::kDown];
  const int64_t hidden = down && down->ndim() == 3 ? packed_depth(*down) : 0;
  const mx::Stream s = mx::to_stream(stream);
  std::vector<mx::array> inputs{float_input(x, "x", s), offsets_input(offsets, s)};
  std::vector<bool> present;
  // Checks an optional input and adds it: a vector of `size`, or with `depth` a weight of
  // `size` outputs packed by `packer` (pack_linear or pack_glu), then required.
  auto add = [&](const std::optional<mx::array>& a, const std::string& what, int64_t size,
                 int64_t depth = 0, const char* packer = "pack_linear") {
    present.push_back(a.has_value());
    if (!a) {
      if (depth) throw std::invalid_argument(what + " is required");
      return;
    }
    const bool glu = std::string(packer) == "pack_glu";
    if (depth && (!packed_for(*a, depth) ||
                  a->shape(0) != (glu ? glu_panels(size, panel) : panels(size, panel))))
      throw std::invalid_argument(what + " must be a weight packed by " + packer +
                                  " with the kernels in use, (" + std::to_string(size) + ", " +
                                  std::to_string(depth) + ") before packing");
    if (depth && layers[T::kQkv] && a->dtype() != layers[T::kQkv]->dtype())
      throw std::invalid_argument(what + " must be packed with the precision of layers[" +
                                  std::to_string(T::kQkv) + "]");
    if (!depth) check_vector(*a, size, what.c_str());
    inputs.push_back(depth ? packed_input(*a, s) : float_input(*a, what.c_str(), s));
  };
  for (size_t i = 0; i < head.size(); ++i) add(head[i], "head[" + std::to_string(i) + "]", dim);
  for (size_t i = 0; i < layers.size(); ++i) {
    const auto& a = layers[i];
    const std::string what = "layers[" + std::to_string(i) + "]";
    switch (i % T::kSlots) {
      case T::kQkv: add(a, what, qkv_cols, dim); break;
      case T::kQkvBias: add(a, what, qkv_cols); break;
      case T::kQNorm:
      case T::kKNorm: add(a, what, head_dim); break;
      case T::kOut: add(a, what, dim, q_dim); break;
      case T::kUp: add(a, what, hidden, dim, gated ? "pack_glu" : "pack_linear"); break;
      case T::kUpBias: add(a, what, gated ? glu_panels(hidden, panel) * panel : hidden); break;
      case T::kDown: add(a, what, dim, hidden); break;
      default: add(a, what, dim);
    }
  }
  T::Settings settings{heads, kv_heads, head_dim, norm_kind == "rms", causal, act, eps, gated,
                       windows, thetas, post_norm};
  return mx::array(x.shape(), mx::float32,
                   std::make_shared<T>(s, std::move(settings), std::move(present), threads),
                   std::move(inputs));
}

}  // namespace jme_native

NB_MODULE(_jme_native, m) {
  m.doc() =
      "Fused CPU kernels for jupyter_mlx_embed's fast path (MLX primitives). Each op takes a "
      "keyword-only stream (mx.Stream or mx.Device; default: the current stream).";
  m.def("add_layernorm", &jme_native::add_layernorm, "h"_a, "residual"_a.none(),
        "bias"_a.none(), "weight"_a, "norm_bias"_a, "eps"_a, nb::kw_only(),
        "stream"_a = nb::none(),
        "LayerNorm(h + residual + bias) * weight + norm_bias over the last axis.");
  m.def("norm", &jme_native::norm, "x"_a, "weight"_a.none() = nb::none(),
        "bias"_a.none() = nb::none(), "eps"_a = 1e-5f, nb::kw_only(), "rms"_a = false,
        "threads"_a = 1, "stream"_a = nb::none(),
        "LayerNorm (or RMSNorm if rms) of x over its last axis, times weight, plus bias (each "
        "optional), its rows split over `threads` threads.");
  m.def("attention", &jme_native::attention, "qkv"_a, "offsets"_a, "heads"_a,
        "query_bias"_a.none() = nb::none(), "threads"_a = 1, nb::kw_only(), "kv_heads"_a = 0,
        "window"_a = -1, "causal"_a = false, "q_norm"_a.none() = nb::none(),
        "k_norm"_a.none() = nb::none(), "norm_eps"_a = 1e-6f, "rope_theta"_a = 0.0,
        "stream"_a = nb::none(),
        "Softmax attention per head and sequence over a packed (tokens, (heads + 2 * kv_heads) "
        "* width) fused projection (queries, keys, values; kv_heads 0: as many as heads) with "
        "scaled queries (plus query_bias), each query head reading key/value head "
        "h // (heads // kv_heads); sequence b is rows offsets[b] to offsets[b + 1]. Query i "
        "sees keys i - window ... i + window (window < 0: all), none after i if causal. "
        "q_norm/k_norm: RMSNorm weights (width) of every query/key head (norm_eps); "
        "rope_theta > 0: rotary embedding of q and k (halves rotated, positions from 0 in each "
        "sequence), after the norms. The (sequence, head) pairs are split over `threads` "
        "threads.");
  m.def("pack_linear", &jme_native::pack_linear, "weight"_a, nb::kw_only(),
        "precision"_a = "fp32", "stream"_a = nb::none(),
        "A linear layer's (out, in) weight packed for linear() with the kernels in use. "
        "precision 'bf16' (where has_bf16()): rounded to bfloat16, and the products that use "
        "it round their inputs to bfloat16 and sum in float32; 'int8' (where has_int8()): "
        "rounded to int8 with one scale per output feature, and the products that use it "
        "round their inputs to int8 with one scale per row and sum in int32.");
  m.def("pack_glu", &jme_native::pack_glu, "activated"_a, "gate"_a, nb::kw_only(),
        "precision"_a = "fp32", "stream"_a = nb::none(),
        "The two (out, in) weights of a gated product, act(x @ activated.T) * (x @ gate.T), "
        "packed together for linear(..., glu=act) with the kernels in use (precision: as "
        "pack_linear's).");
  m.def("pack_glu_bias", &jme_native::pack_glu_bias, "activated"_a, "gate"_a, nb::kw_only(),
        "stream"_a = nb::none(), "The biases of pack_glu's two weights, in its order.");
  m.def("linear", &jme_native::linear, "x"_a, "packed"_a, "cols"_a,
        "bias"_a.none() = nb::none(), "gelu"_a = false, "threads"_a = 1, nb::kw_only(),
        "glu"_a = "", "residual"_a.none() = nb::none(), "stream"_a = nb::none(),
        "x @ weight.T (+ bias, then the exact (erf) GELU if gelu) for a weight packed by "
        "pack_linear (cols: its output features), its columns split over `threads` threads "
        "(the stream's own and helpers). glu ('gelu', 'silu' or 'gelu_tanh'): the gated "
        "product of weights packed by pack_glu (bias from pack_glu_bias). Plus residual if "
        "given.");
  m.def("encoder", &jme_native::encoder, "x"_a, "offsets"_a, "layers"_a, "heads"_a, "eps"_a,
        "threads"_a = 1, nb::kw_only(), "stream"_a = nb::none(),
        "A post-LayerNorm BERT encoder over a packed batch x (tokens, dim) in one op. layers: "
        "per layer, the fused QKV weight packed (scaled queries), the query bias, the output "
        "weight packed, its bias, LayerNorm weight and bias, the up weight packed, its bias "
        "(GELU follows), the down weight packed, its bias, LayerNorm weight and bias.");
  m.def("transformer", &jme_native::transformer, "x"_a, "offsets"_a, "head"_a, "layers"_a,
        nb::kw_only(), "heads"_a, "kv_heads"_a, "head_dim"_a, "norm"_a, "eps"_a,
        "activation"_a, "causal"_a, "windows"_a, "rope_thetas"_a, "gated"_a = true,
        "post_norm"_a = false, "threads"_a = 1, "stream"_a = nb::none(),
        "A pre-norm transformer over a packed batch x (tokens, dim) in one op. head: the "
        "embedding norm's weight and bias, the final norm's weight and bias (each None if "
        "absent). layers: per layer, 18 arrays or None: attention norm weight, bias; fused "
        "QKV weight packed (queries, keys, values; scaled queries), its bias; q_norm, k_norm "
        "(RMSNorm per head); output weight packed, its bias; post-attention norm weight, "
        "bias; MLP norm weight, bias; up weights packed by pack_glu, bias (pack_glu_bias) (gated=False: "
        "one weight packed by pack_linear and its bias, act(x @ up.T + b)); down "
        "weight packed, its bias; post-MLP norm weight, bias. norm: 'layer' or 'rms'; "
        "activation: the gate's ('gelu', 'silu', 'gelu_tanh'); windows: per layer, keys "
        "within this distance (< 0: all); rope_thetas: per layer (0: no rotary embedding); "
        "post_norm: the post-attention and post-MLP norms take the residual sum, "
        "x = norm(x + f(x)) (a post-norm BERT), rather than x += norm(f(x)).");
  m.def("isa", [] { return std::string(jme_native::kernels().name); },
        "The instruction set of the kernels in use.");
  m.def("set_isa", &jme_native::set_isa, "name"_a, "Use the 'avx2' or 'avx512' kernels.");
  m.def("supported_isas", &jme_native::supported_isas, "Instruction sets this CPU runs.");
  m.def("has_bf16", [] { return jme_native::kernels().bf16.product != nullptr; },
        "Whether the kernels in use have bfloat16 products (AVX-512 on a CPU with AMX or "
        "AVX512_BF16): pack_linear's precision='bf16'.");
  m.def(
      "precisions",
      [] {
        const jme_native::Kernels& k = jme_native::kernels();
        std::map<std::string, std::string> found;
        if (k.bf16.product) found["bf16"] = k.bf16.name;
        if (k.int8.product) found["int8"] = k.int8.name;
        return found;
      },
      "The reduced precisions (pack_linear's 'bf16', 'int8') the kernels in use have, each "
      "with what runs its products: bf16 'amx' or 'avx512_bf16', int8 'avx2' or "
      "'avx512_vnni'.");
  m.def("bf16_products", &jme_native::bf16_products,
        "What runs the AVX-512 kernels' bfloat16 products: 'amx' or 'avx512_bf16' (AMX "
        "first, where the CPU has it), '' where the CPU has neither.");
  m.def("set_bf16_products", &jme_native::set_bf16_products, "name"_a,
        "Run the bfloat16 products on 'amx' or 'avx512_bf16' (the same packed weights).");
  m.def("has_int8", [] { return jme_native::kernels().int8.product != nullptr; },
        "Whether the kernels in use have int8 products (AVX2; AVX-512 on a CPU with "
        "AVX512_VNNI): pack_linear's precision='int8'.");
}
