// MLX primitives for the CPU fast path (engine-private): matrix products with weights packed
// once (bias and an activation fused in, gated (GLU) products, results added to a residual),
// LayerNorm and RMSNorm, and attention over a fused QKV projection (grouped key/value heads,
// sliding windows, causal masks, per-head RMSNorm and rotary embeddings applied as q and k are
// read), each one pass of vectorised code where MLX's x86 CPU backend runs several scalar
// ones (or OpenBLAS, slow on a few rows, the products). Whole encoders run as one primitive:
// BERT's post-LayerNorm layers (`encoder`) and pre-norm layers (`transformer`: ModernBERT,
// Qwen3).
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
#include <cmath>
#include <cstdlib>
#include <map>
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

// What attention() computes: the same definition as in native_simd.cpp (plain data).
struct AttentionSpec {
  int64_t heads, kv_heads, width;  // query heads, key/value heads (dividing heads), head width
  int64_t left, right;             // query i sees keys i - left ... i + right of its sequence
  const float* query_bias;         // (heads * width) added to the queries, or null
  const float* q_norm;             // (width) RMSNorm weights of every query head, or null
  const float* k_norm;             // likewise for the keys
  float norm_eps;
  const float* rope;               // rotary table: per position, width/2 cosines then sines
};

// A packed product's epilogue: the same values as in native_simd.cpp.
constexpr int kActivationMask = 3, kGelu = 1, kSilu = 2, kGeluTanh = 3;
constexpr int kGlu = 4, kAccumulate = 8;
// norm_rows' flags: the same values as in native_simd.cpp.
constexpr int kRms = 1, kNormAccumulate = 2;
// A window side that no sequence reaches.
constexpr int64_t kUnbounded = int64_t{1} << 40;

#define JME_DECLARE_KERNELS(isa)                                                             \
  namespace isa {                                                                            \
  void add_layernorm(const float*, const float*, const float*, const float*, const float*,   \
                     float*, int64_t, int64_t, float);                                       \
  void norm_rows(const float*, const float*, const float*, float*, int64_t, int64_t, float,  \
                 int);                                                                       \
  int64_t attention_scratch(int64_t, int64_t);                                               \
  void attention(const AttentionSpec*, const float*, const int32_t*, float*, float*,         \
                 int64_t, int64_t);                                                          \
  int64_t panel_width();                                                                     \
  int64_t product_scratch();                                                                 \
  void packed_product(const float*, const float*, const float*, int, float*, int64_t,         \
                      int64_t, int64_t, int64_t, int64_t, float*);                           \
  }
JME_DECLARE_KERNELS(avx2)
JME_DECLARE_KERNELS(avx512)

struct Kernels {
  const char* name;
  decltype(&avx2::add_layernorm) add_layernorm;
  decltype(&avx2::norm_rows) norm_rows;
  decltype(&avx2::attention_scratch) attention_scratch;
  decltype(&avx2::attention) attention;
  decltype(&avx2::panel_width) panel_width;
  decltype(&avx2::product_scratch) product_scratch;
  decltype(&avx2::packed_product) packed_product;
};

const Kernels kAvx2{"avx2",           avx2::add_layernorm, avx2::norm_rows,
                    avx2::attention_scratch, avx2::attention, avx2::panel_width,
                    avx2::product_scratch, avx2::packed_product};
const Kernels kAvx512{"avx512",           avx512::add_layernorm, avx512::norm_rows,
                      avx512::attention_scratch, avx512::attention, avx512::panel_width,
                      avx512::product_scratch, avx512::packed_product};

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

// pack_glu's layout: a gated product of `cols` outputs has panels(cols, panel / 2) panels,
// each the panel / 2 activated rows then the same rows of the gate.
int64_t glu_panels(int64_t cols, int64_t panel) { return panels(cols, panel / 2); }

// Rotary tables: row t holds cos(t f_i) for i < width / 2, then sin(t f_i), with
// f_i = theta^(-2i / width) (mx.fast.rope's frequencies), computed in double precision.
// One table per (theta, width), grown as longer sequences come and shared: a table handed
// out stays valid while its holder runs.
using RopeTable = std::shared_ptr<const std::vector<float>>;

RopeTable rope_table(double theta, int64_t width, int64_t length) {
  static std::mutex lock;
  static auto* tables = new std::map<std::pair<double, int64_t>, RopeTable>();
  std::lock_guard<std::mutex> hold(lock);
  RopeTable& table = (*tables)[{theta, width}];
  if (table && static_cast<int64_t>(table->size()) >= length * width) return table;
  const int64_t kept = table ? static_cast<int64_t>(table->size()) / width : 0;
  const int64_t rows = std::max<int64_t>({length, 64, 2 * kept});
  auto grown = std::make_shared<std::vector<float>>(rows * width);
  const int64_t half = width / 2;
  for (int64_t i = 0; i < half; ++i) {
    const double frequency = std::pow(theta, -2.0 * static_cast<double>(i) / width);
    for (int64_t t = 0; t < rows; ++t) {
      (*grown)[t * width + i] = static_cast<float>(std::cos(t * frequency));
      (*grown)[t * width + half + i] = static_cast<float>(std::sin(t * frequency));
    }
  }
  table = std::move(grown);
  return table;
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

// Every array's data in order, with a null where `present` says an optional one is absent.
std::vector<const float*> slots(const std::vector<mx::array>& inputs, size_t first,
                                const std::vector<bool>& present) {
  std::vector<const float*> data;
  size_t next = first;
  for (bool here : present) data.push_back(here ? inputs[next++].data<float>() : nullptr);
  return data;
}

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

  void run(int64_t rows, int threads) const { helpers().run(&NormJob::share, this, rows, threads); }
};

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

  void eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override {
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

  struct Job {
    const Kernels* k;
    const AttentionSpec* spec;
    const float* qkv;
    const int32_t* bounds;
    float* out;
    int64_t scratch;
  };

  // The (sequence, head) pairs [first, last), with this thread's scratch buffer (grown as
  // needed and kept).
  static void share(const void* job, int64_t first, int64_t last) {
    const auto* j = static_cast<const Job*>(job);
    thread_local std::vector<float> scratch;
    if (scratch.size() < static_cast<size_t>(j->scratch)) scratch.resize(j->scratch);
    j->k->attention(j->spec, j->qkv, j->bounds, j->out, scratch.data(), first, last);
  }

  // Attention of a packed batch (tokens rows) over `threads` threads, with the rotary table
  // of `rope_theta` (0: none). The offsets are read here, on the stream, where their values
  // are known: a task cannot report an error, so offsets out of order or range are clamped
  // into `bounds` (the Python side never makes such), and rows outside every sequence are
  // zeroed.
  static void run(const Kernels* k, AttentionSpec spec, double rope_theta, const float* qkv,
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
    const Job job{k, &spec, qkv, bounds.data(), out, k->attention_scratch(longest, spec.width)};
    helpers().run(&Attention::share, &job, sequences * spec.heads, threads);
  }

  // `offsets` clamped into order and into [0, tokens], as `bounds`; returns the longest
  // sequence.
  static int64_t clamp_bounds(const int32_t* offsets, int64_t sequences, int64_t tokens,
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

  void eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override {
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
      run(k, spec, theta, qkv, offsets, sequences, tokens, o, threads, bounds);
    });
  }

 private:
  AttentionSettings settings_;
  std::vector<bool> present_;  // query_bias, q_norm, k_norm
  int threads_;
};

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

  struct Job {
    const Kernels* k;
    const float* x;
    const float* packed;
    const float* bias;
    int mode;
    float* out;
    int64_t rows, depth, cols;

    // The panels [first, last), with this thread's scratch buffer (allocated once).
    static void share(const void* job, int64_t first, int64_t last) {
      const auto* j = static_cast<const Job*>(job);
      thread_local std::vector<float> scratch;
      const auto size = static_cast<size_t>(j->k->product_scratch());
      if (scratch.size() < size) scratch.resize(size);
      j->k->packed_product(j->x, j->packed, j->bias, j->mode, j->out, j->rows, j->depth,
                           j->cols, first, last, scratch.data());
    }

    // The product over `panels` panels on `threads` threads.
    void run(int64_t panels, int threads) const {
      helpers().run(&Job::share, this, panels, threads);
    }
  };

  void eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override {
    const mx::array& x = inputs[0];
    const mx::array& packed = inputs[1];
    mx::array& out = outputs[0];
    allocate(out);
    auto& encoder = mx::cpu::get_command_encoder(stream());
    for (const auto& in : inputs) encoder.set_input_array(in);
    encoder.set_output_array(out);
    const int64_t depth = x.shape(-1);
    const float* residual = residual_ ? inputs.back().data<float>() : nullptr;
    const Job job{&kernels(),
                  x.data<float>(),
                  packed.data<float>(),
                  bias_ ? inputs[2].data<float>() : nullptr,
                  mode_ | (residual ? kAccumulate : 0),
                  out.data<float>(),
                  static_cast<int64_t>(x.size()) / depth,
                  depth,
                  cols_};
    encoder.dispatch([job, residual, panels = static_cast<int64_t>(packed.shape(0)),
                      threads = threads_]() {
      if (residual) std::copy(residual, residual + job.rows * job.cols, job.out);
      job.run(panels, threads);
    });
  }

 private:
  int64_t cols_;
  bool bias_;
  int mode_;
  bool residual_;
  int threads_;
};

// Scratch for one forward pass (uninitialised; every step writes before it reads): kept per
// thread, a large batch's buffers would stay allocated for good.
std::unique_ptr<float[]> scratch(int64_t floats) {
  return std::unique_ptr<float[]>(new float[floats]);
}

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
      const auto qkv = scratch(tokens * 3 * dim), up = scratch(tokens * hidden);
      const auto context = scratch(tokens * dim), h = scratch(tokens * dim);
      thread_local std::vector<int32_t> bounds;
      std::copy(x_in, x_in + tokens * dim, x);
      const int64_t panel = k->panel_width();
      auto product = [&](const float* in, const float* packed, const float* bias, bool gelu,
                         float* result, int64_t depth, int64_t cols) {
        const PackedLinear::Job job{k, in, packed, bias, gelu ? kGelu : 0,
                                    result, tokens, depth, cols};
        job.run(panels(cols, panel), threads);
      };
      auto norm = [&](const float* bias, const float* gamma, const float* beta) {
        const NormJob job{k->add_layernorm, h.get(), bias, gamma, beta, x, dim, eps};
        helpers().run(&Encoder::norm_rows, &job, tokens, threads);
      };
      const int64_t width = dim / heads;
      for (size_t at = 0; at + kSlots <= weights.size(); at += kSlots) {
        const float* const* w = weights.data() + at;
        product(x, w[kQkv], nullptr, false, qkv.get(), dim, 3 * dim);
        const AttentionSpec spec{heads,         heads,   width,   kUnbounded, kUnbounded,
                                 w[kQueryBias], nullptr, nullptr, 0.0f,       nullptr};
        Attention::run(k, spec, 0.0, qkv.get(), offsets, sequences, tokens, context.get(),
                       threads, bounds);
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

// A pre-norm transformer (ModernBERT, Qwen3; the shape of Gemma 3's too) in one task, on this
// stream's thread and the helpers: per layer
//
//   x += [post_attn_norm] (attention(attn_norm(x) @ Wqkv (+ b)) @ Wo (+ b))
//   x += [post_mlp_norm] (glu(mlp_norm(x) @ Wup (+ b)) @ Wdown (+ b))
//
// with each norm a LayerNorm or an RMSNorm (weight and bias optional; an absent attn_norm or
// mlp_norm is the identity, an absent post norm is left out), glu the gated activation
// act(a) * g of the two halves of the up projection, and attention the fused kernel above
// (grouped key/value heads, the layer's window, causal or not, per-head q/k RMSNorm and the
// layer's rotary embedding). An embedding norm may come first and a final norm last. The
// residual additions ride in the products' epilogues.
class Transformer : public CpuOnly {
 public:
  // Inputs of one layer, in this order (see transformer() below); None where absent.
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
    std::vector<int64_t> windows;  // per layer: keys within this distance, or < 0 (all)
    std::vector<double> thetas;    // per layer: rotary base, or 0 (none)

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

  void eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override {
    mx::array& out = outputs[0];
    allocate(out);
    auto& encoder = mx::cpu::get_command_encoder(stream());
    for (const auto& in : inputs) encoder.set_input_array(in);
    encoder.set_output_array(out);
    std::vector<const float*> w = slots(inputs, 2, present_);
    const Settings& s = settings_;
    const int64_t hidden = inputs[2 + std::count(present_.begin(), present_.begin() +
                                                 kHeads + kDown, true)].shape(1);
    encoder.dispatch([k = &kernels(), x_in = inputs[0].data<float>(),
                      offsets = inputs[1].data<int32_t>(),
                      sequences = static_cast<int64_t>(inputs[1].size()) - 1,
                      x = out.data<float>(), tokens = static_cast<int64_t>(inputs[0].shape(0)),
                      dim = static_cast<int64_t>(inputs[0].shape(1)), hidden, w = std::move(w),
                      s, threads = threads_]() {
      run(*k, s, x_in, offsets, sequences, x, tokens, dim, hidden, w, threads);
    });
  }

 private:
  static void run(const Kernels& k, const Settings& s, const float* x_in,
                  const int32_t* offsets, int64_t sequences, float* x, int64_t tokens,
                  int64_t dim, int64_t hidden, const std::vector<const float*>& w,
                  int threads) {
    const int64_t q_dim = s.heads * s.width;
    const int64_t qkv_cols = (s.heads + 2 * s.kv_heads) * s.width;
    const int64_t panel = k.panel_width();
    const auto qkv = scratch(tokens * qkv_cols), context = scratch(tokens * q_dim);
    const auto h = scratch(tokens * dim), up = scratch(tokens * hidden);
    thread_local std::vector<int32_t> bounds;
    std::copy(x_in, x_in + tokens * dim, x);
    auto product = [&](const float* in, const float* packed, const float* bias, int mode,
                       float* result, int64_t depth, int64_t cols) {
      const PackedLinear::Job job{&k, in, packed, bias, mode, result, tokens, depth, cols};
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
      Attention::run(&k, spec, s.thetas[layer], qkv.get(), offsets, sequences, tokens,
                     context.get(), threads, bounds);
      if (l[kPostAttnNorm]) {
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
      product(in, l[kUp], l[kUpBias], kGlu | s.activation, up.get(), dim, hidden);
      if (l[kPostMlpNorm]) {
        product(up.get(), l[kDown], l[kDownBias], 0, h.get(), hidden, dim);
        norm(h.get(), l[kPostMlpNorm], l[kPostMlpNormBias], x, kNormAccumulate);
      } else {
        product(up.get(), l[kDown], l[kDownBias], kAccumulate, x, hidden, dim);
      }
    }
    if (w[kFinalNorm]) norm(x, w[kFinalNorm], w[kFinalNormBias], x, 0);
  }

  Settings settings_;
  std::vector<bool> present_;  // per input after x and offsets: given or None
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

// The epilogue code of an activation's name ("" for none).
int activation_code(const std::string& name) {
  if (name.empty() || name == "none") return 0;
  if (name == "gelu") return kGelu;
  if (name == "silu") return kSilu;
  if (name == "gelu_tanh") return kGeluTanh;
  throw std::invalid_argument("activation must be 'gelu', 'silu' or 'gelu_tanh', got '" + name +
                              "'");
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

mx::array pack_glu(const mx::array& activated, const mx::array& gate,
                   mx::StreamOrDevice stream = {}) {
  if (activated.ndim() != 2 || gate.shape() != activated.shape())
    throw std::invalid_argument("activated and gate must be (out, in) weights of one shape");
  const mx::Stream s = mx::to_stream(stream);
  const int64_t panel = kernels().panel_width();
  const int64_t depth = activated.shape(1);
  mx::array rows = interleave_halves(float_input(activated, "activated", s),
                                     float_input(gate, "gate", s), s);
  mx::array packed = mx::reshape(rows, {static_cast<int>(rows.shape(0) / panel),
                                        static_cast<int>(panel), static_cast<int>(depth)}, s);
  return mx::contiguous(mx::transpose(packed, {0, 2, 1}, s), false, s);
}

mx::array pack_glu_bias(const mx::array& activated, const mx::array& gate,
                        mx::StreamOrDevice stream = {}) {
  if (activated.ndim() != 1 || gate.shape() != activated.shape())
    throw std::invalid_argument("activated and gate must be bias vectors of one shape");
  const mx::Stream s = mx::to_stream(stream);
  return mx::contiguous(interleave_halves(float_input(activated, "activated", s),
                                          float_input(gate, "gate", s), s),
                        false, s);
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
  std::vector<mx::array> inputs{float_input(x, "x", s), float_input(packed, "packed", s)};
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


mx::array transformer(const mx::array& x, const mx::array& offsets,
                      const std::vector<std::optional<mx::array>>& head,
                      const std::vector<std::optional<mx::array>>& layers, int heads,
                      int kv_heads, int head_dim, const std::string& norm_kind, float eps,
                      const std::string& activation, bool causal,
                      const std::vector<int64_t>& windows, const std::vector<double>& thetas,
                      int threads, mx::StreamOrDevice stream = {}) {
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
  if (act == 0) throw std::invalid_argument("activation must be given for the gated MLP");
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
  const int64_t hidden = down && down->ndim() == 3 ? down->shape(1) : 0;
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
    if (!depth) check_vector(*a, size, what.c_str());
    inputs.push_back(float_input(*a, what.c_str(), s));
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
      case T::kUp: add(a, what, hidden, dim, "pack_glu"); break;
      case T::kUpBias: add(a, what, glu_panels(hidden, panel) * panel); break;
      case T::kDown: add(a, what, dim, hidden); break;
      default: add(a, what, dim);
    }
  }
  T::Settings settings{heads,        kv_heads, head_dim, norm_kind == "rms", causal, act, eps,
                       windows,      thetas};
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
        "stream"_a = nb::none(),
        "A linear layer's (out, in) weight packed for linear() with the kernels in use.");
  m.def("pack_glu", &jme_native::pack_glu, "activated"_a, "gate"_a, nb::kw_only(),
        "stream"_a = nb::none(),
        "The two (out, in) weights of a gated product, act(x @ activated.T) * (x @ gate.T), "
        "packed together for linear(..., glu=act) with the kernels in use.");
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
        "activation"_a, "causal"_a, "windows"_a, "rope_thetas"_a, "threads"_a = 1,
        "stream"_a = nb::none(),
        "A pre-norm transformer over a packed batch x (tokens, dim) in one op. head: the "
        "embedding norm's weight and bias, the final norm's weight and bias (each None if "
        "absent). layers: per layer, 18 arrays or None: attention norm weight, bias; fused "
        "QKV weight packed (queries, keys, values; scaled queries), its bias; q_norm, k_norm "
        "(RMSNorm per head); output weight packed, its bias; post-attention norm weight, "
        "bias; MLP norm weight, bias; up weights packed by pack_glu, bias (pack_glu_bias); down "
        "weight packed, its bias; post-MLP norm weight, bias. norm: 'layer' or 'rms'; "
        "activation: the gate's ('gelu', 'silu', 'gelu_tanh'); windows: per layer, keys "
        "within this distance (< 0: all); rope_thetas: per layer (0: no rotary embedding).");
  m.def("isa", [] { return std::string(jme_native::kernels().name); },
        "The instruction set of the kernels in use.");
  m.def("set_isa", &jme_native::set_isa, "name"_a, "Use the 'avx2' or 'avx512' kernels.");
  m.def("supported_isas", &jme_native::supported_isas, "Instruction sets this CPU runs.");
}
