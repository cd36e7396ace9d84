// MLX primitives for the CPU fast path (engine-private): fused bias + GELU, residual add +
// LayerNorm, and multi-head attention over a fused QKV projection, each one pass of
// vectorised code where MLX's x86 CPU backend runs several scalar ones.
//
// Built at install time (jupyter_mlx_embed/engine/native.py) with nanobind in MLX's nanobind
// domain, so mlx.core.array objects pass in and out as they are and the ops join MLX's lazy
// graph like any other: they run on the stream that is current when they are called.

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <vector>

#include <nanobind/nanobind.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include "mlx/allocator.h"
#include "mlx/backend/cpu/encoder.h"
#include "mlx/mlx.h"
#include "mlx/primitives.h"

namespace mx = mlx::core;
namespace nb = nanobind;
using namespace nb::literals;

namespace jme_native {

#define JME_DECLARE_KERNELS(isa)                                                             \
  namespace isa {                                                                            \
  void bias_gelu(const float*, const float*, float*, int64_t, int64_t);                      \
  void add_layernorm(const float*, const float*, const float*, const float*, const float*,   \
                     float*, int64_t, int64_t, float);                                       \
  int64_t attention_scratch(int64_t, int64_t);                                               \
  void attention(const float*, const float*, const int32_t*, float*, float*, int64_t,       \
                 int64_t, int64_t, int64_t);                                                 \
  }
JME_DECLARE_KERNELS(avx2)
JME_DECLARE_KERNELS(avx512)

struct Kernels {
  const char* name;
  decltype(&avx2::bias_gelu) bias_gelu;
  decltype(&avx2::add_layernorm) add_layernorm;
  decltype(&avx2::attention_scratch) attention_scratch;
  decltype(&avx2::attention) attention;
};

const Kernels kAvx2{"avx2", avx2::bias_gelu, avx2::add_layernorm, avx2::attention_scratch,
                    avx2::attention};
const Kernels kAvx512{"avx512", avx512::bias_gelu, avx512::add_layernorm,
                      avx512::attention_scratch, avx512::attention};

bool supports(const Kernels& k) {
  __builtin_cpu_init();
  if (&k == &kAvx512)
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw");
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

std::vector<std::string> supported_isas() {
  std::vector<std::string> names;
  for (const Kernels* k : {&kAvx512, &kAvx2})
    if (supports(*k)) names.emplace_back(k->name);
  return names;
}

// The kernels in use: the widest the CPU runs, until set_isa() says otherwise.
const Kernels* active = supports(kAvx512) ? &kAvx512 : supports(kAvx2) ? &kAvx2 : nullptr;

const Kernels& kernels() {
  if (active == nullptr) throw std::runtime_error("this CPU has neither AVX2+FMA nor AVX-512");
  return *active;
}

void set_isa(const std::string& name) {
  for (const Kernels* k : {&kAvx512, &kAvx2}) {
    if (name == k->name) {
      if (!supports(*k)) throw std::invalid_argument("this CPU cannot run isa='" + name + "'");
      active = k;
      return;
    }
  }
  throw std::invalid_argument("isa must be 'avx2' or 'avx512', got '" + name + "'");
}

// ------------------------------------------------------------------------------------------
// Primitives
// ------------------------------------------------------------------------------------------

class CpuOnly : public mx::Primitive {
 public:
  using mx::Primitive::Primitive;
  void eval_gpu(const std::vector<mx::array>&, std::vector<mx::array>&) override {
    throw std::runtime_error(std::string(name()) + " has only a CPU implementation");
  }
};

void allocate(mx::array& out) { out.set_data(mx::allocator::malloc(out.nbytes())); }

class BiasGelu : public CpuOnly {
 public:
  using CpuOnly::CpuOnly;
  const char* name() const override { return "JmeBiasGelu"; }
  bool is_equivalent(const mx::Primitive& other) const override {
    return dynamic_cast<const BiasGelu*>(&other) != nullptr;
  }

  void eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override {
    const mx::array& x = inputs[0];
    mx::array& out = outputs[0];
    allocate(out);
    const int64_t cols = x.shape(-1);
    auto& encoder = mx::cpu::get_command_encoder(stream());
    encoder.set_input_array(x);
    encoder.set_input_array(inputs[1]);
    encoder.set_output_array(out);
    encoder.dispatch([kernel = kernels().bias_gelu, x = x.data<float>(),
                      bias = inputs[1].data<float>(), o = out.data<float>(),
                      rows = static_cast<int64_t>(x.size()) / cols, cols]() {
      kernel(x, bias, o, rows, cols);
    });
  }
};

class AddLayerNorm : public CpuOnly {
 public:
  AddLayerNorm(mx::Stream stream, float eps, bool residual, bool bias)
      : CpuOnly(stream), eps_(eps), residual_(residual), bias_(bias) {}
  const char* name() const override { return "JmeAddLayerNorm"; }
  bool is_equivalent(const mx::Primitive& other) const override {
    auto* o = dynamic_cast<const AddLayerNorm*>(&other);
    return o && o->eps_ == eps_ && o->residual_ == residual_ && o->bias_ == bias_;
  }

  void eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override {
    const mx::array& h = inputs[0];
    mx::array& out = outputs[0];
    allocate(out);
    size_t next = 1;
    const float* residual = residual_ ? inputs[next++].data<float>() : nullptr;
    const float* bias = bias_ ? inputs[next++].data<float>() : nullptr;
    const float* gamma = inputs[next].data<float>();
    const float* beta = inputs[next + 1].data<float>();
    const int64_t cols = h.shape(-1);
    auto& encoder = mx::cpu::get_command_encoder(stream());
    for (const auto& in : inputs) encoder.set_input_array(in);
    encoder.set_output_array(out);
    encoder.dispatch([kernel = kernels().add_layernorm, h = h.data<float>(), residual, bias,
                      gamma, beta, o = out.data<float>(),
                      rows = static_cast<int64_t>(h.size()) / cols, cols, eps = eps_]() {
      kernel(h, residual, bias, gamma, beta, o, rows, cols, eps);
    });
  }

 private:
  float eps_;
  bool residual_;
  bool bias_;
};

class Attention : public CpuOnly {
 public:
  Attention(mx::Stream stream, int heads) : CpuOnly(stream), heads_(heads) {}
  const char* name() const override { return "JmeAttention"; }
  bool is_equivalent(const mx::Primitive& other) const override {
    auto* o = dynamic_cast<const Attention*>(&other);
    return o && o->heads_ == heads_;
  }

  void eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override {
    const mx::array& qkv = inputs[0];
    const mx::array& offsets = inputs[1];
    const float* query_bias = inputs.size() > 2 ? inputs[2].data<float>() : nullptr;
    mx::array& out = outputs[0];
    allocate(out);
    const int64_t width = qkv.shape(1) / 3 / heads_;
    auto& encoder = mx::cpu::get_command_encoder(stream());
    for (const auto& in : inputs) encoder.set_input_array(in);
    encoder.set_output_array(out);
    encoder.dispatch([k = &kernels(), qkv = qkv.data<float>(), query_bias,
                      offsets = offsets.data<int32_t>(),
                      o = out.data<float>(), sequences = static_cast<int64_t>(offsets.size()) - 1,
                      tokens = static_cast<int64_t>(qkv.shape(0)),
                      heads = static_cast<int64_t>(heads_), width]() {
      // The offsets are read here, on the stream, where their values are known. A task
      // cannot report an error, so offsets out of order or range are clamped (the Python
      // side never makes such), and rows outside every sequence are zeroed.
      thread_local std::vector<int32_t> bounds;
      bounds.resize(static_cast<size_t>(sequences) + 1);
      int64_t longest = 0, previous = 0;
      for (int64_t b = 0; b <= sequences; ++b) {
        const int64_t at = std::clamp<int64_t>(offsets[b], previous, tokens);
        if (b > 0) longest = std::max(longest, at - previous);
        bounds[b] = static_cast<int32_t>(previous = at);
      }
      const int64_t dim = heads * width;
      std::fill(o, o + bounds[0] * dim, 0.0f);
      std::fill(o + bounds[sequences] * dim, o + tokens * dim, 0.0f);
      // One scratch buffer per stream thread, grown as needed and kept.
      thread_local std::vector<float> scratch;
      const auto need = static_cast<size_t>(k->attention_scratch(longest, width));
      if (scratch.size() < need) scratch.resize(need);
      k->attention(qkv, query_bias, bounds.data(), o, scratch.data(), 0, sequences, heads,
                   width);
    });
  }

 private:
  int heads_;
};

// ------------------------------------------------------------------------------------------
// Ops
// ------------------------------------------------------------------------------------------

mx::array float_input(const mx::array& a, const char* what) {
  if (a.dtype() != mx::float32)
    throw std::invalid_argument(std::string(what) + " must be float32");
  return mx::contiguous(a);
}

void check_vector(const mx::array& v, int64_t size, const char* what) {
  if (v.ndim() != 1 || v.shape(0) != size)
    throw std::invalid_argument(std::string(what) + " must have shape (" +
                                std::to_string(size) + ",)");
}

mx::array bias_gelu(const mx::array& x, const mx::array& bias) {
  if (x.ndim() < 1) throw std::invalid_argument("x must have at least one dimension");
  check_vector(bias, x.shape(-1), "bias");
  mx::Stream s = mx::default_stream(mx::default_device());
  return mx::array(x.shape(), mx::float32, std::make_shared<BiasGelu>(s),
                   {float_input(x, "x"), float_input(bias, "bias")});
}

mx::array add_layernorm(const mx::array& h, const std::optional<mx::array>& residual,
                        const std::optional<mx::array>& bias, const mx::array& weight,
                        const mx::array& norm_bias, float eps) {
  if (h.ndim() < 1) throw std::invalid_argument("h must have at least one dimension");
  const int64_t cols = h.shape(-1);
  std::vector<mx::array> inputs{float_input(h, "h")};
  if (residual) {
    if (residual->shape() != h.shape())
      throw std::invalid_argument("residual must have the shape of h");
    inputs.push_back(float_input(*residual, "residual"));
  }
  if (bias) {
    check_vector(*bias, cols, "bias");
    inputs.push_back(float_input(*bias, "bias"));
  }
  check_vector(weight, cols, "weight");
  check_vector(norm_bias, cols, "norm_bias");
  inputs.push_back(float_input(weight, "weight"));
  inputs.push_back(float_input(norm_bias, "norm_bias"));
  mx::Stream s = mx::default_stream(mx::default_device());
  return mx::array(h.shape(), mx::float32,
                   std::make_shared<AddLayerNorm>(s, eps, residual.has_value(), bias.has_value()),
                   std::move(inputs));
}

mx::array attention(const mx::array& qkv, const mx::array& offsets, int heads,
                    const std::optional<mx::array>& query_bias) {
  if (qkv.ndim() != 2) throw std::invalid_argument("qkv must be (tokens, 3 * dim)");
  if (heads < 1 || qkv.shape(1) % (3 * heads) != 0)
    throw std::invalid_argument("qkv's last dimension must be 3 * heads * head width");
  if (offsets.ndim() != 1 || offsets.shape(0) < 1)
    throw std::invalid_argument("offsets must be a vector (sequences + 1,)");
  std::vector<mx::array> inputs{float_input(qkv, "qkv"),
                                mx::contiguous(mx::astype(offsets, mx::int32))};
  if (query_bias) {
    check_vector(*query_bias, qkv.shape(1) / 3, "query_bias");
    inputs.push_back(float_input(*query_bias, "query_bias"));
  }
  mx::Stream s = mx::default_stream(mx::default_device());
  mx::Shape shape{qkv.shape(0), qkv.shape(1) / 3};
  return mx::array(std::move(shape), mx::float32, std::make_shared<Attention>(s, heads),
                   std::move(inputs));
}

}  // namespace jme_native

NB_MODULE(_jme_native, m) {
  m.doc() = "Fused CPU kernels for jupyter_mlx_embed's BERT fast path (MLX primitives).";
  m.def("bias_gelu", &jme_native::bias_gelu, "x"_a, "bias"_a,
        "gelu(x + bias) with the exact (erf) GELU, bias along the last axis.");
  m.def("add_layernorm", &jme_native::add_layernorm, "h"_a, "residual"_a.none(),
        "bias"_a.none(), "weight"_a, "norm_bias"_a, "eps"_a,
        "LayerNorm(h + residual + bias) * weight + norm_bias over the last axis.");
  m.def("attention", &jme_native::attention, "qkv"_a, "offsets"_a, "heads"_a,
        "query_bias"_a.none() = nb::none(),
        "Softmax attention per head and sequence over a packed (tokens, 3 * dim) fused "
        "projection with scaled queries (plus query_bias); sequence b is rows offsets[b] to "
        "offsets[b + 1].");
  m.def("isa", [] { return std::string(jme_native::kernels().name); },
        "The instruction set of the kernels in use.");
  m.def("set_isa", &jme_native::set_isa, "name"_a, "Use the 'avx2' or 'avx512' kernels.");
  m.def("supported_isas", &jme_native::supported_isas, "Instruction sets this CPU runs.");
}
