// MLX primitives for the CPU fast path (engine-private): matrix products with weights packed
// once (bias and GELU fused in), residual add + LayerNorm, and multi-head attention over a
// fused QKV projection, each one pass of vectorised code where MLX's x86 CPU backend runs
// several scalar ones (or OpenBLAS, slow on a few rows, the products).
//
// Built at install time (jupyter_mlx_embed/engine/native.py) with nanobind in MLX's nanobind
// domain, so mlx.core.array objects pass in and out as they are and the ops join MLX's lazy
// graph like any other. Like MLX's own ops, each takes a `stream` (an mx.Stream or mx.Device,
// passed as mx::StreamOrDevice) and runs on the stream that is current when it is called if
// given none.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <memory>
#include <mutex>
#include <system_error>
#include <thread>
#include <vector>

#include <unistd.h>

#include <nanobind/nanobind.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/variant.h>
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
  void add_layernorm(const float*, const float*, const float*, const float*, const float*,   \
                     float*, int64_t, int64_t, float);                                       \
  int64_t attention_scratch(int64_t, int64_t);                                               \
  void attention(const float*, const float*, const int32_t*, float*, float*, int64_t,       \
                 int64_t, int64_t, int64_t);                                                 \
  int64_t panel_width();                                                                     \
  void packed_product(const float*, const float*, const float*, bool, float*, int64_t,        \
                      int64_t, int64_t, int64_t, int64_t);                                   \
  }
JME_DECLARE_KERNELS(avx2)
JME_DECLARE_KERNELS(avx512)

struct Kernels {
  const char* name;
  decltype(&avx2::add_layernorm) add_layernorm;
  decltype(&avx2::attention_scratch) attention_scratch;
  decltype(&avx2::attention) attention;
  decltype(&avx2::panel_width) panel_width;
  decltype(&avx2::packed_product) packed_product;
};

const Kernels kAvx2{"avx2",          avx2::add_layernorm, avx2::attention_scratch,
                    avx2::attention, avx2::panel_width,   avx2::packed_product};
const Kernels kAvx512{"avx512",          avx512::add_layernorm, avx512::attention_scratch,
                      avx512::attention, avx512::panel_width,   avx512::packed_product};

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
// Helper threads: one batch's matrix product split over the cores
// ------------------------------------------------------------------------------------------

// A batch of one part runs on one MLX stream, hence one thread. Its matrix products and
// attention can use the other cores through these helpers. A job is cut into chunks that the
// calling thread and the helpers claim one by one, so a helper that wakes late (it sleeps
// between requests) costs nothing: the caller has claimed the chunks meanwhile, and it waits
// only for chunks a helper has started. Between jobs a helper spins briefly (the next product
// of the same forward pass follows within microseconds), then sleeps on an atomic wait.
class Helpers {
 public:
  using Task = void (*)(const void* job, int64_t first, int64_t last);

  // Runs task over [0, count) on this thread and up to `threads - 1` helpers. Falls back to
  // this thread alone while another caller holds the helpers.
  void run(Task task, const void* job, int64_t count, int threads) {
    threads = static_cast<int>(std::min<int64_t>({threads, count, kMaxThreads}));
    std::unique_lock<std::mutex> hold(busy_, std::try_to_lock);
    if (threads < 2 || !hold.owns_lock() || !start(threads - 1)) {
      task(job, 0, count);
      return;
    }
    task_ = task;
    job_ = job;
    count_ = count;
    helpers_ = threads - 1;
    const uint64_t chunks = std::min<int64_t>(count, threads * kChunksPerThread);
    const uint64_t generation = (word_.load(std::memory_order_relaxed) >> kChunkBits) + 1;
    const uint64_t word = generation << kChunkBits | chunks;
    word_.store(word, std::memory_order_seq_cst);
    word_.notify_all();
    work(word);
    while (started_.load(std::memory_order_seq_cst) != 0) __builtin_ia32_pause();
  }

 private:
  static constexpr int kMaxThreads = 64;
  static constexpr int64_t kChunksPerThread = 4;
  static constexpr int kChunkBits = 16;  // a job's word: generation << kChunkBits | chunks
  static constexpr std::chrono::microseconds kSpin{100};

  // Claims and runs chunks of the job `word` names until none is left. claimed_[c] holds the
  // last generation whose chunk c was claimed; a chunk is claimed by raising it to this one.
  // A helper counts itself in started_ before it tries, so that the caller, once every chunk
  // is claimed, waits for the helpers still running theirs. A helper that claims a chunk
  // therefore finds its job unfinished and the job's fields still its own, even when it
  // woke so late that a later job is being published: the chunk count comes from the word.
  void work(uint64_t word, bool helper = false) {
    const uint64_t generation = word >> kChunkBits;
    const auto chunks = static_cast<int64_t>(word & ((uint64_t{1} << kChunkBits) - 1));
    for (int64_t i = 0; i < chunks; ++i) {
      // The caller claims from the front, helpers from the back: each thread reads a run of
      // adjacent panels, which the prefetchers follow from one chunk into the next.
      const int64_t c = helper ? chunks - 1 - i : i;
      uint64_t seen = claimed_[c].load(std::memory_order_relaxed);
      if (seen >= generation) continue;
      if (helper) started_.fetch_add(1, std::memory_order_seq_cst);
      if (claimed_[c].compare_exchange_strong(seen, generation, std::memory_order_seq_cst))
        task_(job_, count_ * c / chunks, count_ * (c + 1) / chunks);
      if (helper) started_.fetch_sub(1, std::memory_order_seq_cst);
    }
  }

  // Makes sure `wanted` helpers run in this process (a fork leaves the child none).
  bool start(int wanted) {
    if (owner_ != getpid()) {
      threads_ = 0;
      owner_ = getpid();
    }
    try {
      for (; threads_ < wanted; ++threads_)
        std::thread(&Helpers::serve, this, threads_ + 1, word_.load()).detach();
    } catch (const std::system_error&) {
      return threads_ >= wanted;
    }
    return true;
  }

  void serve(int index, uint64_t seen) {
    for (;;) {
      const auto until = std::chrono::steady_clock::now() + kSpin;
      uint64_t now = word_.load(std::memory_order_seq_cst);
      while (now == seen && std::chrono::steady_clock::now() < until) {
        __builtin_ia32_pause();
        now = word_.load(std::memory_order_seq_cst);
      }
      if (now == seen) {
        word_.wait(seen, std::memory_order_seq_cst);
        continue;
      }
      seen = now;
      if (index <= helpers_) work(now, true);
    }
  }

  std::mutex busy_;
  pid_t owner_ = getpid();
  int threads_ = 0;
  std::atomic<uint64_t> word_{0};
  std::atomic<int> started_{0};
  std::atomic<uint64_t> claimed_[kMaxThreads * kChunksPerThread] = {};
  Task task_ = nullptr;
  const void* job_ = nullptr;
  int64_t count_ = 0;
  int helpers_ = 0;
};

// Never destroyed: detached helpers may still be waiting on it at exit.
Helpers& helpers() {
  static Helpers* shared = new Helpers();
  return *shared;
}

// pack_linear's layout: a weight of `cols` output features and `depth` inputs becomes
// (panels(cols, panel), depth, panel), panel being the width of the kernels in use.
int64_t panels(int64_t cols, int64_t panel) { return (cols + panel - 1) / panel; }

// Whether `packed` has that layout for `depth` inputs (its panel count aside).
bool packed_for(const mx::array& packed, int64_t depth) {
  return packed.ndim() == 3 && packed.shape(2) == kernels().panel_width() &&
         packed.shape(1) == depth;
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
  Attention(mx::Stream stream, int heads, int threads)
      : CpuOnly(stream), heads_(heads), threads_(threads) {}
  const char* name() const override { return "JmeAttention"; }
  bool is_equivalent(const mx::Primitive& other) const override {
    auto* o = dynamic_cast<const Attention*>(&other);
    return o && o->heads_ == heads_ && o->threads_ == threads_;
  }

  struct Job {
    const Kernels* k;
    const float* qkv;
    const float* query_bias;
    const int32_t* bounds;
    float* out;
    int64_t heads, width, scratch;
  };

  // The (sequence, head) pairs [first, last), with this thread's scratch buffer (grown as
  // needed and kept).
  static void share(const void* job, int64_t first, int64_t last) {
    const auto* j = static_cast<const Job*>(job);
    thread_local std::vector<float> scratch;
    if (scratch.size() < static_cast<size_t>(j->scratch)) scratch.resize(j->scratch);
    j->k->attention(j->qkv, j->query_bias, j->bounds, j->out, scratch.data(), first, last,
                    j->heads, j->width);
  }

  // Attention of a packed batch (tokens rows) over `threads` threads. The offsets are read
  // here, on the stream, where their values are known: a task cannot report an error, so
  // offsets out of order or range are clamped into `bounds` (the Python side never makes
  // such), and rows outside every sequence are zeroed.
  static void run(const Kernels* k, const float* qkv, const float* query_bias,
                  const int32_t* offsets, int64_t sequences, int64_t tokens, float* out,
                  int64_t heads, int64_t width, int threads, std::vector<int32_t>& bounds) {
    bounds.resize(static_cast<size_t>(sequences) + 1);
    int64_t longest = 0, previous = 0;
    for (int64_t b = 0; b <= sequences; ++b) {
      const int64_t at = std::clamp<int64_t>(offsets[b], previous, tokens);
      if (b > 0) longest = std::max(longest, at - previous);
      bounds[b] = static_cast<int32_t>(previous = at);
    }
    const int64_t dim = heads * width;
    std::fill(out, out + bounds[0] * dim, 0.0f);
    std::fill(out + bounds[sequences] * dim, out + tokens * dim, 0.0f);
    const Job job{k,     qkv,   query_bias, bounds.data(), out,
                  heads, width, k->attention_scratch(longest, width)};
    helpers().run(&Attention::share, &job, sequences * heads, threads);
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
                      offsets = offsets.data<int32_t>(), o = out.data<float>(),
                      sequences = static_cast<int64_t>(offsets.size()) - 1,
                      tokens = static_cast<int64_t>(qkv.shape(0)),
                      heads = static_cast<int64_t>(heads_), width, threads = threads_]() {
      thread_local std::vector<int32_t> bounds;
      run(k, qkv, query_bias, offsets, sequences, tokens, o, heads, width, threads, bounds);
    });
  }

 private:
  int heads_;
  int threads_;
};

class PackedLinear : public CpuOnly {
 public:
  PackedLinear(mx::Stream stream, int64_t cols, bool bias, bool gelu, int threads)
      : CpuOnly(stream), cols_(cols), bias_(bias), gelu_(gelu), threads_(threads) {}
  const char* name() const override { return "JmePackedLinear"; }
  bool is_equivalent(const mx::Primitive& other) const override {
    auto* o = dynamic_cast<const PackedLinear*>(&other);
    return o && o->cols_ == cols_ && o->bias_ == bias_ && o->gelu_ == gelu_ &&
           o->threads_ == threads_;
  }

  struct Job {
    decltype(&avx2::packed_product) kernel;
    const float* x;
    const float* packed;
    const float* bias;
    bool gelu;
    float* out;
    int64_t rows, depth, cols;
  };

  static void share(const void* job, int64_t first, int64_t last) {
    const auto* j = static_cast<const Job*>(job);
    j->kernel(j->x, j->packed, j->bias, j->gelu, j->out, j->rows, j->depth, j->cols, first,
              last);
  }

  void eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override {
    const mx::array& x = inputs[0];
    const mx::array& packed = inputs[1];
    mx::array& out = outputs[0];
    allocate(out);
    auto& encoder = mx::cpu::get_command_encoder(stream());
    for (const auto& in : inputs) encoder.set_input_array(in);
    encoder.set_output_array(out);
    const int64_t depth = x.shape(-1);
    const Job job{kernels().packed_product,
                  x.data<float>(),
                  packed.data<float>(),
                  bias_ ? inputs[2].data<float>() : nullptr,
                  gelu_,
                  out.data<float>(),
                  static_cast<int64_t>(x.size()) / depth,
                  depth,
                  cols_};
    encoder.dispatch([job, panels = static_cast<int64_t>(packed.shape(0)), threads = threads_]() {
      helpers().run(&PackedLinear::share, &job, panels, threads);
    });
  }

 private:
  int64_t cols_;
  bool bias_;
  bool gelu_;
  int threads_;
};

// A whole BERT encoder (post-LayerNorm layers) in one task: the products, attention and
// LayerNorms of every layer one after the other, on this stream's thread and the helpers.
// One primitive instead of seven per layer saves MLX's graph building and scheduling, which
// for one sentence is about a tenth of the forward pass, and keeps the helpers busy.
class Encoder : public CpuOnly {
 public:
  // Inputs of one layer, in this order (see encoder() below).
  enum Slot { kQkv, kQueryBias, kOutput, kOutputBias, kNorm1, kNorm1Bias,
              kUp, kUpBias, kDown, kDownBias, kNorm2, kNorm2Bias, kSlots };

  Encoder(mx::Stream stream, int heads, float eps, int threads)
      : CpuOnly(stream), heads_(heads), eps_(eps), threads_(threads) {}
  const char* name() const override { return "JmeEncoder"; }
  bool is_equivalent(const mx::Primitive& other) const override {
    auto* o = dynamic_cast<const Encoder*>(&other);
    return o && o->heads_ == heads_ && o->eps_ == eps_ && o->threads_ == threads_;
  }

  struct NormJob {
    decltype(&avx2::add_layernorm) kernel;
    const float *h, *bias, *gamma, *beta;
    float* x;  // the residual, overwritten by the result
    int64_t cols;
    float eps;
  };

  static void norm_rows(const void* job, int64_t first, int64_t last) {
    const auto* j = static_cast<const NormJob*>(job);
    j->kernel(j->h + first * j->cols, j->x + first * j->cols, j->bias, j->gamma, j->beta,
              j->x + first * j->cols, last - first, j->cols, j->eps);
  }

  void eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override {
    mx::array& out = outputs[0];
    allocate(out);
    auto& encoder = mx::cpu::get_command_encoder(stream());
    for (const auto& in : inputs) encoder.set_input_array(in);
    encoder.set_output_array(out);
    std::vector<const float*> weights;
    for (size_t i = 2; i < inputs.size(); ++i) weights.push_back(inputs[i].data<float>());
    const int64_t dim = inputs[0].shape(1);
    const int64_t hidden = inputs[2 + kUpBias].shape(0);
    encoder.dispatch([k = &kernels(), x_in = inputs[0].data<float>(),
                      offsets = inputs[1].data<int32_t>(),
                      sequences = static_cast<int64_t>(inputs[1].size()) - 1, x = out.data<float>(),
                      tokens = static_cast<int64_t>(inputs[0].shape(0)), dim, hidden,
                      weights = std::move(weights), heads = static_cast<int64_t>(heads_),
                      eps = eps_, threads = threads_]() {
      // Scratch for this pass only (uninitialised; every step writes before it reads): kept
      // per thread, a large batch's buffers would stay allocated for good.
      auto scratch = [](int64_t floats) { return std::unique_ptr<float[]>(new float[floats]); };
      const auto qkv = scratch(tokens * 3 * dim), up = scratch(tokens * hidden);
      const auto context = scratch(tokens * dim), h = scratch(tokens * dim);
      thread_local std::vector<int32_t> bounds;
      std::copy(x_in, x_in + tokens * dim, x);
      const int64_t panel = k->panel_width();
      auto product = [&](const float* in, const float* packed, const float* bias, bool gelu,
                         float* result, int64_t depth, int64_t cols) {
        const PackedLinear::Job job{k->packed_product, in, packed, bias, gelu, result,
                                    tokens, depth, cols};
        helpers().run(&PackedLinear::share, &job, panels(cols, panel), threads);
      };
      auto norm = [&](const float* bias, const float* gamma, const float* beta) {
        const NormJob job{k->add_layernorm, h.get(), bias, gamma, beta, x, dim, eps};
        helpers().run(&Encoder::norm_rows, &job, tokens, threads);
      };
      for (size_t at = 0; at + kSlots <= weights.size(); at += kSlots) {
        const float* const* w = weights.data() + at;
        product(x, w[kQkv], nullptr, false, qkv.get(), dim, 3 * dim);
        Attention::run(k, qkv.get(), w[kQueryBias], offsets, sequences, tokens, context.get(),
                       heads, dim / heads, threads, bounds);
        product(context.get(), w[kOutput], nullptr, false, h.get(), dim, dim);
        norm(w[kOutputBias], w[kNorm1], w[kNorm1Bias]);
        product(x, w[kUp], w[kUpBias], true, up.get(), dim, hidden);
        product(up.get(), w[kDown], nullptr, false, h.get(), hidden, dim);
        norm(w[kDownBias], w[kNorm2], w[kNorm2Bias]);
      }
    });
  }

 private:
  int heads_;
  float eps_;
  int threads_;
};

// ------------------------------------------------------------------------------------------
// Ops
// ------------------------------------------------------------------------------------------

mx::array float_input(const mx::array& a, const char* what, mx::Stream s) {
  if (a.dtype() != mx::float32)
    throw std::invalid_argument(std::string(what) + " must be float32");
  return mx::contiguous(a, false, s);
}

// An op's int32 offsets, contiguous, on its stream.
mx::array offsets_input(const mx::array& offsets, mx::Stream s) {
  return mx::contiguous(mx::astype(offsets, mx::int32, s), false, s);
}

void check_vector(const mx::array& v, int64_t size, const char* what) {
  if (v.ndim() != 1 || v.shape(0) != size)
    throw std::invalid_argument(std::string(what) + " must have shape (" +
                                std::to_string(size) + ",)");
}

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

mx::array attention(const mx::array& qkv, const mx::array& offsets, int heads,
                    const std::optional<mx::array>& query_bias, int threads,
                    mx::StreamOrDevice stream = {}) {
  if (qkv.ndim() != 2) throw std::invalid_argument("qkv must be (tokens, 3 * dim)");
  if (heads < 1 || qkv.shape(1) % (3 * heads) != 0)
    throw std::invalid_argument("qkv's last dimension must be 3 * heads * head width");
  if (offsets.ndim() != 1 || offsets.shape(0) < 1)
    throw std::invalid_argument("offsets must be a vector (sequences + 1,)");
  const mx::Stream s = mx::to_stream(stream);
  std::vector<mx::array> inputs{float_input(qkv, "qkv", s), offsets_input(offsets, s)};
  if (query_bias) {
    check_vector(*query_bias, qkv.shape(1) / 3, "query_bias");
    inputs.push_back(float_input(*query_bias, "query_bias", s));
  }
  mx::Shape shape{qkv.shape(0), qkv.shape(1) / 3};
  if (threads < 1) throw std::invalid_argument("threads must be at least 1");
  return mx::array(std::move(shape), mx::float32,
                   std::make_shared<Attention>(s, heads, threads), std::move(inputs));
}

mx::array pack_linear(const mx::array& weight, mx::StreamOrDevice stream = {}) {
  if (weight.ndim() != 2) throw std::invalid_argument("weight must be (out, in)");
  const mx::Stream s = mx::to_stream(stream);
  const int64_t panel = kernels().panel_width();
  const int64_t cols = weight.shape(0), depth = weight.shape(1);
  const int64_t count = panels(cols, panel);
  mx::array padded = mx::pad(float_input(weight, "weight", s),
                             {{0, static_cast<int>(count * panel - cols)}, {0, 0}},
                             mx::array(0), "constant", s);
  mx::array packed = mx::reshape(
      padded, {static_cast<int>(count), static_cast<int>(panel), static_cast<int>(depth)}, s);
  return mx::contiguous(mx::transpose(packed, {0, 2, 1}, s), false, s);
}

mx::array linear(const mx::array& x, const mx::array& packed, int64_t cols,
                 const std::optional<mx::array>& bias, bool gelu, int threads,
                 mx::StreamOrDevice stream = {}) {
  if (x.ndim() < 1) throw std::invalid_argument("x must have at least one dimension");
  if (!packed_for(packed, x.shape(-1)))
    throw std::invalid_argument(
        "packed must come from pack_linear with the kernels in use and x's last dimension");
  if (cols < 1 || packed.shape(0) != panels(cols, kernels().panel_width()))
    throw std::invalid_argument("cols must be the packed weight's output features");
  if (threads < 1) throw std::invalid_argument("threads must be at least 1");
  const mx::Stream s = mx::to_stream(stream);
  std::vector<mx::array> inputs{float_input(x, "x", s), float_input(packed, "packed", s)};
  if (bias) {
    check_vector(*bias, cols, "bias");
    inputs.push_back(float_input(*bias, "bias", s));
  }
  mx::Shape shape = x.shape();
  shape.back() = static_cast<int>(cols);
  return mx::array(std::move(shape), mx::float32,
                   std::make_shared<PackedLinear>(s, cols, bias.has_value(), gelu, threads),
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
  const int64_t hidden = layers[Encoder::kUpBias].ndim() == 1 ? layers[Encoder::kUpBias].shape(0) : 0;
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
    switch (i % Encoder::kSlots) {
      case Encoder::kQkv: packed_shape(a, dim, 3 * dim, i); break;
      case Encoder::kOutput: packed_shape(a, dim, dim, i); break;
      case Encoder::kUp: packed_shape(a, dim, hidden, i); break;
      case Encoder::kDown: packed_shape(a, hidden, dim, i); break;
      case Encoder::kUpBias: check_vector(a, hidden, what.c_str()); break;
      default: check_vector(a, dim, what.c_str());
    }
    inputs.push_back(float_input(a, what.c_str(), s));
  }
  return mx::array(x.shape(), mx::float32, std::make_shared<Encoder>(s, heads, eps, threads),
                   std::move(inputs));
}

}  // namespace jme_native

NB_MODULE(_jme_native, m) {
  m.doc() =
      "Fused CPU kernels for jupyter_mlx_embed's BERT fast path (MLX primitives). Each op "
      "takes a keyword-only stream (mx.Stream or mx.Device; default: the current stream).";
  m.def("add_layernorm", &jme_native::add_layernorm, "h"_a, "residual"_a.none(),
        "bias"_a.none(), "weight"_a, "norm_bias"_a, "eps"_a, nb::kw_only(),
        "stream"_a = nb::none(),
        "LayerNorm(h + residual + bias) * weight + norm_bias over the last axis.");
  m.def("attention", &jme_native::attention, "qkv"_a, "offsets"_a, "heads"_a,
        "query_bias"_a.none() = nb::none(), "threads"_a = 1, nb::kw_only(),
        "stream"_a = nb::none(),
        "Softmax attention per head and sequence over a packed (tokens, 3 * dim) fused "
        "projection with scaled queries (plus query_bias); sequence b is rows offsets[b] to "
        "offsets[b + 1]; the (sequence, head) pairs are split over `threads` threads.");
  m.def("pack_linear", &jme_native::pack_linear, "weight"_a, nb::kw_only(),
        "stream"_a = nb::none(),
        "A linear layer's (out, in) weight packed for linear() with the kernels in use.");
  m.def("linear", &jme_native::linear, "x"_a, "packed"_a, "cols"_a,
        "bias"_a.none() = nb::none(), "gelu"_a = false, "threads"_a = 1, nb::kw_only(),
        "stream"_a = nb::none(),
        "x @ weight.T (+ bias, then the exact (erf) GELU if gelu) for a weight packed by "
        "pack_linear (cols: its output features), its columns split over `threads` threads "
        "(the stream's own and helpers).");
  m.def("encoder", &jme_native::encoder, "x"_a, "offsets"_a, "layers"_a, "heads"_a, "eps"_a,
        "threads"_a = 1, nb::kw_only(), "stream"_a = nb::none(),
        "A post-LayerNorm BERT encoder over a packed batch x (tokens, dim) in one op. layers: "
        "per layer, the fused QKV weight packed (scaled queries), the query bias, the output "
        "weight packed, its bias, LayerNorm weight and bias, the up weight packed, its bias "
        "(GELU follows), the down weight packed, its bias, LayerNorm weight and bias.");
  m.def("isa", [] { return std::string(jme_native::kernels().name); },
        "The instruction set of the kernels in use.");
  m.def("set_isa", &jme_native::set_isa, "name"_a, "Use the 'avx2' or 'avx512' kernels.");
  m.def("supported_isas", &jme_native::supported_isas, "Instruction sets this CPU runs.");
}
