// The native module's runtime (engine-private): which instruction set's kernels run (the
// widest this CPU supports, or the one set_isa() names), the helper threads that split one
// batch's products and attention over the cores, and the shared rotary tables.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <map>
#include <mutex>
#include <stdexcept>
#include <system_error>
#include <thread>

#include <sys/syscall.h>
#include <unistd.h>

#include "native.h"

namespace jme_native {

namespace {

bool supports_bf16() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512bf16");
}

bool supports_vnni() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512vnni");
}

// AMX's bfloat16 tiles, once Linux has let this process use them (the tiles' 8 KiB of state
// are saved on a context switch only for processes that asked).
bool supports_amx() {
  __builtin_cpu_init();
  if (!__builtin_cpu_supports("amx-tile") || !__builtin_cpu_supports("amx-bf16")) return false;
#ifdef __linux__
  constexpr long kRequestPermission = 0x1023;  // ARCH_REQ_XCOMP_PERM
  constexpr long kTileData = 18;               // XFEATURE_XTILEDATA
  return syscall(SYS_arch_prctl, kRequestPermission, kTileData) == 0;
#else
  return false;
#endif
}

constexpr Products kNone{nullptr, nullptr, nullptr, nullptr, nullptr, nullptr};
const Products kAmx{avx512amx::product_scratch, avx512amx::packed_product,
                    avx512amx::tile_panels,     avx512amx::quantized_size,
                    avx512amx::quantize_inputs, "amx"};
const Products kAvx512Bf16{avx512bf16::product_scratch, avx512bf16::packed_product,
                           avx512bf16::tile_panels, nullptr, nullptr, "avx512_bf16"};
const bool kHasAmx = supports_amx(), kHasAvx512Bf16 = supports_bf16();

const Kernels kAvx2{"avx2",
                    avx2::add_layernorm,
                    avx2::norm_rows,
                    avx2::attention_scratch,
                    avx2::attention,
                    avx2::panel_width,
                    {avx2::product_scratch, avx2::packed_product, avx2::tile_panels, nullptr,
                     nullptr, "avx2"},
                    kNone,
                    {avx2int8::product_scratch, avx2int8::packed_product, avx2int8::tile_panels,
                     avx2int8::quantized_size, avx2int8::quantize_inputs, "avx2"}};
// Not const: set_bf16_products() picks its bfloat16 products.
Kernels kAvx512{
    "avx512",
    avx512::add_layernorm,
    avx512::norm_rows,
    avx512::attention_scratch,
    avx512::attention,
    avx512::panel_width,
    {avx512::product_scratch, avx512::packed_product, avx512::tile_panels, nullptr, nullptr,
     "avx512"},
    kHasAmx ? kAmx : kHasAvx512Bf16 ? kAvx512Bf16 : kNone,
    supports_vnni() ? Products{avx512int8::product_scratch, avx512int8::packed_product,
                               avx512int8::tile_panels,
                               avx512int8::quantized_size, avx512int8::quantize_inputs,
                               "avx512_vnni"}
                    : kNone};

bool supports(const Kernels& k) {
  __builtin_cpu_init();
  if (&k == &kAvx512)
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw");
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

// The kernels in use: the widest the CPU runs, until set_isa() says otherwise.
const Kernels* active = supports(kAvx512) ? &kAvx512 : supports(kAvx2) ? &kAvx2 : nullptr;

}  // namespace

const Kernels& kernels() {
  if (active == nullptr) throw std::runtime_error("this CPU has neither AVX2+FMA nor AVX-512");
  return *active;
}

void set_isa(const std::string& name) {
  for (const Kernels* k : {static_cast<const Kernels*>(&kAvx512), &kAvx2}) {
    if (name == k->name) {
      if (!supports(*k)) throw std::invalid_argument("this CPU cannot run isa='" + name + "'");
      active = k;
      return;
    }
  }
  throw std::invalid_argument("isa must be 'avx2' or 'avx512', got '" + name + "'");
}

std::string bf16_products() { return kAvx512.bf16.name ? kAvx512.bf16.name : ""; }

void set_bf16_products(const std::string& name) {
  for (const auto& [products, has] : {std::pair{&kAmx, kHasAmx}, {&kAvx512Bf16, kHasAvx512Bf16}}) {
    if (name == products->name) {
      if (!has) throw std::invalid_argument("this CPU cannot run bf16 products on '" + name + "'");
      kAvx512.bf16 = *products;
      return;
    }
  }
  throw std::invalid_argument("bf16 products must be 'amx' or 'avx512_bf16', got '" + name + "'");
}

std::vector<std::string> supported_isas() {
  std::vector<std::string> names;
  for (const Kernels* k : {static_cast<const Kernels*>(&kAvx512), &kAvx2})
    if (supports(*k)) names.emplace_back(k->name);
  return names;
}

// ------------------------------------------------------------------------------------------
// Helper threads: one batch's matrix product split over the cores
// ------------------------------------------------------------------------------------------

namespace {

// A batch of one part runs on one MLX stream, hence one thread. Its matrix products and
// attention can use the other cores through these helpers. A job is cut into chunks that the
// calling thread and the helpers claim one by one, so a helper that wakes late (it sleeps
// between requests) costs nothing: the caller has claimed the chunks meanwhile, and it waits
// only for chunks a helper has started. Between jobs a helper spins briefly (the next product
// of the same forward pass follows within microseconds), then sleeps on an atomic wait.
class Helpers {
 public:
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

}  // namespace

void run_on_helpers(Task task, const void* job, int64_t count, int threads) {
  helpers().run(task, job, count, threads);
}

// ------------------------------------------------------------------------------------------
// Rotary tables
// ------------------------------------------------------------------------------------------

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

}  // namespace jme_native
