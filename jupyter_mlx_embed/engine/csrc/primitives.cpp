// The MLX primitives of the native module (engine-private): how each evaluates on the CPU,
// on the stream's thread and the helper threads, with the kernels of the instruction set in
// use. Their declarations (and what the ops give them) are in native.h; ops.cpp builds
// arrays with them. Whole encoders run as one primitive: BERT's post-LayerNorm layers
// (Encoder) and pre-norm layers (Transformer: ModernBERT, Qwen3, Gemma 3).

#include <algorithm>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "mlx/allocator.h"
#include "mlx/backend/cpu/encoder.h"

#include "native.h"

namespace jme_native {

namespace {

// Gives `out` its (row-contiguous) data, starting at a cache line. MLX's CPU allocator puts
// an array's data 8 bytes past the start of a malloc block, so that a 64-byte vector load of
// packed weights straddled two cache lines: the products ran 1.08x faster on weights 64-byte
// aligned (one Sapphire Rapids-class core, 1200 x 768 x 3072).
void allocate(mx::array& out) {
  constexpr int64_t kLine = 64;
  mx::allocator::Data data = mx::allocator::malloc(out.nbytes() + kLine);
  const auto start = reinterpret_cast<uintptr_t>(data.buffer().raw_ptr());
  const int64_t offset = static_cast<int64_t>((kLine - start % kLine) % kLine);
  const auto largest = std::max_element(out.shape().begin(), out.shape().end());
  const bool column = out.size() <= 1 || static_cast<int64_t>(out.size()) == *largest;
  out.set_data(std::move(data), out.size(), out.strides(), mx::array::Flags{true, true, column},
               offset);
}

// Every array's data in order, with a null where `present` says an optional one is absent.
std::vector<const float*> slots(const std::vector<mx::array>& inputs, size_t first,
                                const std::vector<bool>& present) {
  std::vector<const float*> data;
  size_t next = first;
  for (bool here : present) data.push_back(here ? inputs[next++].data<float>() : nullptr);
  return data;
}

// Scratch for one forward pass (uninitialised; every step writes before it reads): kept per
// thread, a large batch's buffers would stay allocated for good.
std::unique_ptr<float[]> scratch(int64_t floats) {
  return std::unique_ptr<float[]>(new float[floats]);
}

// LayerNorm or RMSNorm of rows split over threads (the helpers' task).
struct NormJob {
  decltype(&avx2::norm_rows) kernel;
  const float *x, *gamma, *beta;
  float* out;
  int64_t cols;
  float eps;
  int mode;

  static void share(const void* job, int64_t first, int64_t last) {
    const auto* j = static_cast<const NormJob*>(job);
    j->kernel(j->x + first * j->cols, j->gamma, j->beta, j->out + first * j->cols,
              last - first, j->cols, j->eps, j->mode);
  }

  void run(int64_t rows, int threads) const {
    run_on_helpers(&NormJob::share, this, rows, threads);
  }
};

// Residual add + LayerNorm of rows split over threads (the helpers' task): x = LayerNorm(h +
// x + bias) * gamma + beta, as each layer of Encoder ends its attention and its MLP.
struct AddNormJob {
  decltype(&avx2::add_layernorm) kernel;
  const float *h, *bias, *gamma, *beta;
  float* x;  // the residual, overwritten by the result
  int64_t cols;
  float eps;

  static void share(const void* job, int64_t first, int64_t last) {
    const auto* j = static_cast<const AddNormJob*>(job);
    j->kernel(j->h + first * j->cols, j->x + first * j->cols, j->bias, j->gamma, j->beta,
              j->x + first * j->cols, last - first, j->cols, j->eps);
  }
};

// Attention of (sequence, query head) pairs split over threads (the helpers' task).
struct AttentionJob {
  const Kernels* k;
  const AttentionSpec* spec;
  const float* qkv;
  const int32_t* bounds;
  float* out;
  int64_t scratch;

  // The (sequence, head) pairs [first, last), with this thread's scratch buffer (grown as
  // needed and kept).
  static void share(const void* job, int64_t first, int64_t last) {
    const auto* j = static_cast<const AttentionJob*>(job);
    thread_local std::vector<float> scratch;
    if (scratch.size() < static_cast<size_t>(j->scratch)) scratch.resize(j->scratch);
    j->k->attention(j->spec, j->qkv, j->bounds, j->out, scratch.data(), first, last);
  }
};

// `offsets` clamped into order and into [0, tokens], as `bounds`; returns the longest
// sequence.
int64_t clamp_bounds(const int32_t* offsets, int64_t sequences, int64_t tokens,
                     std::vector<int32_t>& bounds) {
  bounds.resize(static_cast<size_t>(sequences) + 1);
  int64_t longest = 0, previous = 0;
  for (int64_t b = 0; b <= sequences; ++b) {
    const int64_t at = std::clamp<int64_t>(offsets[b], previous, tokens);
    if (b > 0) longest = std::max(longest, at - previous);
    bounds[b] = static_cast<int32_t>(previous = at);
  }
  return longest;
}

// Attention of a packed batch (tokens rows) over `threads` threads, with the rotary table
// of `rope_theta` (0: none). The offsets are read here, on the stream, where their values
// are known: a task cannot report an error, so offsets out of order or range are clamped
// into `bounds` (the Python side never makes such), and rows outside every sequence are
// zeroed.
void run_attention(const Kernels* k, AttentionSpec spec, double rope_theta, const float* qkv,
                   const int32_t* offsets, int64_t sequences, int64_t tokens, float* out,
                   int threads, std::vector<int32_t>& bounds) {
  const int64_t longest = clamp_bounds(offsets, sequences, tokens, bounds);
  const int64_t dim = spec.heads * spec.width;
  std::fill(out, out + bounds[0] * dim, 0.0f);
  std::fill(out + bounds[sequences] * dim, out + tokens * dim, 0.0f);
  RopeTable table;
  if (rope_theta > 0) {
    table = rope_table(rope_theta, spec.width, longest);
    spec.rope = table->data();
  }
  const AttentionJob job{k, &spec, qkv, bounds.data(), out,
                         k->attention_scratch(longest, spec.width)};
  run_on_helpers(&AttentionJob::share, &job, sequences * spec.heads, threads);
}

// What a whole-model primitive's packed weights hold (its op checks that they all have one
// precision, and that every other input is float32 or, the offsets, int32).
Weights packed_weights(const std::vector<mx::array>& inputs) {
  for (const auto& a : inputs)
    if (a.dtype() == mx::bfloat16 || a.dtype() == mx::int8) return weights_of(a);
  return Weights::kFloat32;
}

// A product with packed weights split over threads by panels (the helpers' task).
struct ProductJob {
  const Kernels* k;
  const float* x;
  const void* packed;  // floats, bfloat16 or int8 (`weights`)
  const float* bias;
  int mode;
  float* out;
  int64_t rows, depth, cols;
  Weights weights;

  // The runs [first, last) of `width` adjacent panels (of `panels`) of the product of
  // `inputs` (x, or x prepared), with this thread's scratch buffer (allocated once).
  struct Share {
    const ProductJob* job;
    const void* inputs;
    int64_t panels, width;
    static void run(const void* share, int64_t first, int64_t last) {
      const auto* s = static_cast<const Share*>(share);
      const ProductJob& j = *s->job;
      const Products& products = j.k->products(j.weights);
      thread_local std::vector<float> scratch;
      const auto size = static_cast<size_t>(products.scratch());
      if (scratch.size() < size) scratch.resize(size);
      products.product(s->inputs, j.packed, j.bias, j.mode, j.out, j.rows, j.depth, j.cols,
                       first * s->width, std::min(last * s->width, s->panels), scratch.data());
    }
  };

  // Rows [first, last) of x prepared into `out` (the inputs of int8 weights, or of bfloat16
  // ones on AMX).
  struct Quantize {
    const ProductJob* job;
    void* out;
    static void run(const void* quantize, int64_t first, int64_t last) {
      const auto* q = static_cast<const Quantize*>(quantize);
      const ProductJob& j = *q->job;
      j.k->products(j.weights).quantize(j.x, j.rows, j.depth, first, last, q->out);
    }
  };

  // The product over `panels` panels on `threads` threads (products with prepared inputs:
  // those made first, once, their rows split over the same threads).
  void run(int64_t panels, int threads) const {
    const Products& products = k->products(weights);
    // One run of adjacent panels per thread, a whole number of tiles' panels: every run reads
    // all the inputs again, so runs as long as they can be (four per thread, which the
    // helpers otherwise take for balance, ran 5110 x 3072 x 768 at 207 against 269 GFLOP/s on
    // two Sapphire Rapids-class cores).
    const int64_t tile = products.tile_panels(), pieces = (panels + tile - 1) / tile;
    const int64_t width = (pieces + threads - 1) / threads * tile;
    const int64_t runs = (panels + width - 1) / width;
    if (!products.quantize) {
      const Share share{this, x, panels, width};
      run_on_helpers(&Share::run, &share, runs, threads);
      return;
    }
    thread_local std::vector<float> quantized;
    const auto size = static_cast<size_t>((products.quantized_size(rows, depth) + 3) / 4);
    if (quantized.size() < size) quantized.resize(size);
    const Quantize quantize{this, quantized.data()};
    run_on_helpers(&Quantize::run, &quantize, rows, threads);
    const Share share{this, quantized.data(), panels, width};
    run_on_helpers(&Share::run, &share, runs, threads);
  }
};

}  // namespace

void CpuOnly::eval_gpu(const std::vector<mx::array>&, std::vector<mx::array>&) {
  throw std::runtime_error(std::string(name()) + " has only a CPU implementation");
}

void Aligned::eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) {
  const mx::array& in = inputs[0];
  mx::array& out = outputs[0];
  allocate(out);
  auto& encoder = mx::cpu::get_command_encoder(stream());
  encoder.set_input_array(in);
  encoder.set_output_array(out);
  encoder.dispatch([from = in.data<char>(), to = out.data<char>(), bytes = in.nbytes()]() {
    std::copy(from, from + bytes, to);
  });
}

void AddLayerNorm::eval_cpu(const std::vector<mx::array>& inputs,
                            std::vector<mx::array>& outputs) {
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

void Norm::eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) {
  const mx::array& x = inputs[0];
  mx::array& out = outputs[0];
  allocate(out);
  const auto w = slots(inputs, 1, {weight_, bias_});
  auto& encoder = mx::cpu::get_command_encoder(stream());
  for (const auto& in : inputs) encoder.set_input_array(in);
  encoder.set_output_array(out);
  const int64_t cols = x.shape(-1);
  const NormJob job{kernels().norm_rows, x.data<float>(), w[0], w[1], out.data<float>(),
                    cols, eps_, rms_ ? kRms : 0};
  encoder.dispatch([job, rows = static_cast<int64_t>(x.size()) / cols, threads = threads_]() {
    job.run(rows, threads);
  });
}

void Attention::eval_cpu(const std::vector<mx::array>& inputs,
                         std::vector<mx::array>& outputs) {
  const mx::array& qkv = inputs[0];
  const mx::array& offsets = inputs[1];
  const auto w = slots(inputs, 2, present_);
  mx::array& out = outputs[0];
  allocate(out);
  auto& encoder = mx::cpu::get_command_encoder(stream());
  for (const auto& in : inputs) encoder.set_input_array(in);
  encoder.set_output_array(out);
  const AttentionSettings& s = settings_;
  const AttentionSpec spec{s.heads, s.kv_heads, s.width, s.left, s.right,
                           w[0],    w[1],       w[2],    s.eps,  nullptr};
  encoder.dispatch([k = &kernels(), spec, theta = s.rope_theta, qkv = qkv.data<float>(),
                    offsets = offsets.data<int32_t>(), o = out.data<float>(),
                    sequences = static_cast<int64_t>(offsets.size()) - 1,
                    tokens = static_cast<int64_t>(qkv.shape(0)), threads = threads_]() {
    thread_local std::vector<int32_t> bounds;
    run_attention(k, spec, theta, qkv, offsets, sequences, tokens, o, threads, bounds);
  });
}

void PackedLinear::eval_cpu(const std::vector<mx::array>& inputs,
                            std::vector<mx::array>& outputs) {
  const mx::array& x = inputs[0];
  const mx::array& packed = inputs[1];
  mx::array& out = outputs[0];
  allocate(out);
  auto& encoder = mx::cpu::get_command_encoder(stream());
  for (const auto& in : inputs) encoder.set_input_array(in);
  encoder.set_output_array(out);
  const int64_t depth = x.shape(-1);
  const float* residual = residual_ ? inputs.back().data<float>() : nullptr;
  const ProductJob job{&kernels(),
                       x.data<float>(),
                       packed.data<void>(),
                       bias_ ? inputs[2].data<float>() : nullptr,
                       mode_ | (residual ? kAccumulate : 0),
                       out.data<float>(),
                       static_cast<int64_t>(x.size()) / depth,
                       depth,
                       cols_,
                       weights_of(packed)};
  encoder.dispatch([job, residual, panels = static_cast<int64_t>(packed.shape(0)),
                    threads = threads_]() {
    if (residual) std::copy(residual, residual + job.rows * job.cols, job.out);
    job.run(panels, threads);
  });
}

void Encoder::eval_cpu(const std::vector<mx::array>& inputs,
                       std::vector<mx::array>& outputs) {
  mx::array& out = outputs[0];
  allocate(out);
  auto& encoder = mx::cpu::get_command_encoder(stream());
  for (const auto& in : inputs) encoder.set_input_array(in);
  encoder.set_output_array(out);
  std::vector<const float*> weights;
  for (size_t i = 2; i < inputs.size(); ++i) weights.push_back(inputs[i].data<float>());
  const Weights kind = packed_weights(inputs);
  const int64_t dim = inputs[0].shape(1);
  const int64_t hidden = inputs[2 + kUpBias].shape(0);
  encoder.dispatch([k = &kernels(), x_in = inputs[0].data<float>(),
                    offsets = inputs[1].data<int32_t>(),
                    sequences = static_cast<int64_t>(inputs[1].size()) - 1, x = out.data<float>(),
                    tokens = static_cast<int64_t>(inputs[0].shape(0)), dim, hidden,
                    weights = std::move(weights), heads = static_cast<int64_t>(heads_),
                    eps = eps_, kind, threads = threads_]() {
    const auto qkv = scratch(tokens * 3 * dim), up = scratch(tokens * hidden);
    const auto context = scratch(tokens * dim), h = scratch(tokens * dim);
    thread_local std::vector<int32_t> bounds;
    std::copy(x_in, x_in + tokens * dim, x);
    const int64_t panel = k->panel_width();
    auto product = [&](const float* in, const float* packed, const float* bias, bool gelu,
                       float* result, int64_t depth, int64_t cols) {
      const ProductJob job{k,      in,     packed, bias, gelu ? kGelu : 0,
                           result, tokens, depth,  cols, kind};
      job.run(panels(cols, panel), threads);
    };
    auto norm = [&](const float* bias, const float* gamma, const float* beta) {
      const AddNormJob job{k->add_layernorm, h.get(), bias, gamma, beta, x, dim, eps};
      run_on_helpers(&AddNormJob::share, &job, tokens, threads);
    };
    const int64_t width = dim / heads;
    for (size_t at = 0; at + kSlots <= weights.size(); at += kSlots) {
      const float* const* w = weights.data() + at;
      product(x, w[kQkv], nullptr, false, qkv.get(), dim, 3 * dim);
      const AttentionSpec spec{heads,         heads,   width,   kUnbounded, kUnbounded,
                               w[kQueryBias], nullptr, nullptr, 0.0f,       nullptr};
      run_attention(k, spec, 0.0, qkv.get(), offsets, sequences, tokens, context.get(), threads,
                    bounds);
      product(context.get(), w[kOutput], nullptr, false, h.get(), dim, dim);
      norm(w[kOutputBias], w[kNorm1], w[kNorm1Bias]);
      product(x, w[kUp], w[kUpBias], true, up.get(), dim, hidden);
      product(up.get(), w[kDown], nullptr, false, h.get(), hidden, dim);
      norm(w[kDownBias], w[kNorm2], w[kNorm2Bias]);
    }
  });
}

void Transformer::eval_cpu(const std::vector<mx::array>& inputs,
                           std::vector<mx::array>& outputs) {
  mx::array& out = outputs[0];
  allocate(out);
  auto& encoder = mx::cpu::get_command_encoder(stream());
  for (const auto& in : inputs) encoder.set_input_array(in);
  encoder.set_output_array(out);
  std::vector<const float*> w = slots(inputs, 2, present_);
  const Weights kind = packed_weights(inputs);
  const Settings& s = settings_;
  const int64_t hidden = packed_depth(
      inputs[2 + std::count(present_.begin(), present_.begin() + kHeads + kDown, true)]);
  encoder.dispatch([k = &kernels(), x_in = inputs[0].data<float>(),
                    offsets = inputs[1].data<int32_t>(),
                    sequences = static_cast<int64_t>(inputs[1].size()) - 1,
                    x = out.data<float>(), tokens = static_cast<int64_t>(inputs[0].shape(0)),
                    dim = static_cast<int64_t>(inputs[0].shape(1)), hidden, w = std::move(w),
                    s, kind, threads = threads_]() {
    run(*k, s, x_in, offsets, sequences, x, tokens, dim, hidden, w, kind, threads);
  });
}

void Transformer::run(const Kernels& k, const Settings& s, const float* x_in,
                      const int32_t* offsets, int64_t sequences, float* x, int64_t tokens,
                      int64_t dim, int64_t hidden, const std::vector<const float*>& w,
                      Weights weights, int threads) {
  const int64_t q_dim = s.heads * s.width;
  const int64_t qkv_cols = (s.heads + 2 * s.kv_heads) * s.width;
  const int64_t panel = k.panel_width();
  const auto qkv = scratch(tokens * qkv_cols), context = scratch(tokens * q_dim);
  const auto h = scratch(tokens * dim), up = scratch(tokens * hidden);
  thread_local std::vector<int32_t> bounds;
  std::copy(x_in, x_in + tokens * dim, x);
  auto product = [&](const float* in, const float* packed, const float* bias, int mode,
                     float* result, int64_t depth, int64_t cols) {
    const ProductJob job{&k, in, packed, bias, mode, result, tokens, depth, cols, weights};
    job.run(mode & kGlu ? glu_panels(cols, panel) : panels(cols, panel), threads);
  };
  // in -> out (out += with kNormAccumulate); in may be out.
  auto norm = [&](const float* in, const float* weight, const float* bias, float* result,
                  int mode) {
    const NormJob job{k.norm_rows, in, weight, bias, result, dim, s.eps,
                      mode | (s.rms ? kRms : 0)};
    job.run(tokens, threads);
  };
  if (w[kEmbedNorm]) norm(x, w[kEmbedNorm], w[kEmbedNormBias], x, 0);
  for (size_t layer = 0; layer < s.windows.size(); ++layer) {
    const float* const* l = w.data() + kHeads + layer * kSlots;
    const float* in = x;
    if (l[kAttnNorm]) {
      norm(x, l[kAttnNorm], l[kAttnNormBias], h.get(), 0);
      in = h.get();
    }
    product(in, l[kQkv], l[kQkvBias], 0, qkv.get(), dim, qkv_cols);
    const int64_t window = s.windows[layer] < 0 ? kUnbounded : s.windows[layer];
    const AttentionSpec spec{s.heads, s.kv_heads, s.width, window, s.causal ? 0 : window,
                             nullptr, l[kQNorm],  l[kKNorm], s.eps, nullptr};
    run_attention(&k, spec, s.thetas[layer], qkv.get(), offsets, sequences, tokens,
                  context.get(), threads, bounds);
    if (l[kPostAttnNorm] && s.post_norm) {
      product(context.get(), l[kOut], l[kOutBias], kAccumulate, x, q_dim, dim);
      norm(x, l[kPostAttnNorm], l[kPostAttnNormBias], x, 0);
    } else if (l[kPostAttnNorm]) {
      product(context.get(), l[kOut], l[kOutBias], 0, h.get(), q_dim, dim);
      norm(h.get(), l[kPostAttnNorm], l[kPostAttnNormBias], x, kNormAccumulate);
    } else {
      product(context.get(), l[kOut], l[kOutBias], kAccumulate, x, q_dim, dim);
    }
    in = x;
    if (l[kMlpNorm]) {
      norm(x, l[kMlpNorm], l[kMlpNormBias], h.get(), 0);
      in = h.get();
    }
    product(in, l[kUp], l[kUpBias], (s.gated ? kGlu : 0) | s.activation, up.get(), dim, hidden);
    if (l[kPostMlpNorm] && s.post_norm) {
      product(up.get(), l[kDown], l[kDownBias], kAccumulate, x, hidden, dim);
      norm(x, l[kPostMlpNorm], l[kPostMlpNormBias], x, 0);
    } else if (l[kPostMlpNorm]) {
      product(up.get(), l[kDown], l[kDownBias], 0, h.get(), hidden, dim);
      norm(h.get(), l[kPostMlpNorm], l[kPostMlpNormBias], x, kNormAccumulate);
    } else {
      product(up.get(), l[kDown], l[kDownBias], kAccumulate, x, hidden, dim);
    }
  }
  if (w[kFinalNorm]) norm(x, w[kFinalNorm], w[kFinalNormBias], x, 0);
}

}  // namespace jme_native
