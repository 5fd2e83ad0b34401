#include "memory.h"

#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <list>
#include <mutex>
#include <new>
#include <thread>
#include <unordered_map>
#include <vector>

namespace attn {
namespace addon {

namespace {

// Blocks below this size are freed at once (the system allocator serves them
// from memory it already holds); larger ones are cached.
constexpr std::size_t kMinCached = std::size_t{64} << 10;
// The most memory the cache keeps for reuse, process-wide.
constexpr std::size_t kCacheLimit = std::size_t{128} << 20;

// Capacity for a request: 64-byte steps below kMinCached, then four size
// classes per power of two (at most a quarter more than asked).
std::size_t capacity_for(std::size_t bytes) {
  if (bytes < kMinCached) return (bytes + 63) / 64 * 64 + (bytes == 0 ? 64 : 0);
  std::size_t p = kMinCached;
  while (p <= bytes / 2) p *= 2;  // p <= bytes < 2p
  const std::size_t step = p / 4;
  return (bytes + step - 1) / step * step;
}

const napi_type_tag kOwnedTag = {0x3c5e9a1f7b2d4e60ULL, 0xa4d1870e6f9b2c35ULL};

// Frees large blocks on a background thread: returning tens of megabytes to
// the system takes milliseconds (the pages are unmapped), and the last
// reference to a block is usually dropped on the main thread (by a finalizer),
// where that would stall the event loop.
class Reaper {
 public:
  static Reaper& global() {
    // Never destroyed; its thread is detached and ends with the process.
    static Reaper* reaper = new Reaper();
    return *reaper;
  }

  void free_later(std::vector<void*> raws) {
    if (raws.empty()) return;
    {
      std::lock_guard<std::mutex> lk(mu_);
      for (void* r : raws) queue_.push_back(r);
      if (!started_) {
        started_ = true;
        try {
          std::thread([this] { run(); }).detach();
        } catch (...) {
          started_ = false;  // no thread: free here
          for (void* r : queue_) std::free(r);
          queue_.clear();
          return;
        }
      }
    }
    cv_.notify_one();
  }

 private:
  void run() {
    std::unique_lock<std::mutex> lk(mu_);
    for (;;) {
      cv_.wait(lk, [this] { return !queue_.empty(); });
      std::vector<void*> batch;
      batch.swap(queue_);
      lk.unlock();
      for (void* r : batch) std::free(r);
      lk.lock();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<void*> queue_;
  bool started_ = false;
};

// Blocks from this size up are freed by the Reaper.
constexpr std::size_t kReapFrom = std::size_t{1} << 20;

}  // namespace

// The process-wide cache of free blocks: per capacity a stack (newest last),
// and one list of every cached block, newest first, to evict the oldest.
class BlockCache {
 public:
  static BlockCache& global() {
    // Never destroyed: async jobs may still release blocks while the process exits.
    static BlockCache* cache = new BlockCache();
    return *cache;
  }

  Block* take(std::size_t bytes, bool zero) {
    const std::size_t cap = capacity_for(bytes);
    if (cap < bytes || cap > (std::size_t{1} << 60)) throw std::bad_alloc();
    Block* b = nullptr;
    {
      std::lock_guard<std::mutex> lk(mu_);
      auto it = free_.find(cap);
      if (it != free_.end() && !it->second.empty()) {
        b = it->second.back();
        it->second.pop_back();
        order_.erase(b->lru_);
        cached_ -= cap;
        ++reused_;
      } else if (cap >= kMinCached) {
        ++allocated_;
      }
      live_ += cap;
    }
    if (b) {
      b->refs_.store(1, std::memory_order_relaxed);
      if (zero) std::memset(b->data(), 0, bytes);
      return b;
    }
    const std::size_t total = cap + Block::kHeader + 64;
    void* raw = zero ? std::calloc(1, total) : std::malloc(total);
    if (!raw) {
      std::lock_guard<std::mutex> lk(mu_);
      live_ -= cap;
      throw std::bad_alloc();
    }
    const std::uintptr_t at = (reinterpret_cast<std::uintptr_t>(raw) + 63) & ~std::uintptr_t{63};
    return new (reinterpret_cast<void*>(at)) Block(raw, cap);
  }

  void put(Block* b) {
    const std::size_t cap = b->capacity_;
    std::vector<void*> to_free, to_reap;
    {
      std::lock_guard<std::mutex> lk(mu_);
      live_ -= cap;
      if (cap < kMinCached || cap > kCacheLimit) {
        (cap >= kReapFrom ? to_reap : to_free).push_back(b->raw_);
      } else {
        while (cached_ + cap > kCacheLimit && !order_.empty()) {
          Block* old = order_.back();
          order_.pop_back();
          std::vector<Block*>& stack = free_[old->capacity_];
          stack.erase(stack.begin());  // the oldest of its size is the oldest cached
          cached_ -= old->capacity_;
          (old->capacity_ >= kReapFrom ? to_reap : to_free).push_back(old->raw_);
        }
        order_.push_front(b);
        b->lru_ = order_.begin();
        free_[cap].push_back(b);
        cached_ += cap;
      }
    }
    for (void* raw : to_free) std::free(raw);
    Reaper::global().free_later(std::move(to_reap));
  }

  BlockStats stats() {
    std::lock_guard<std::mutex> lk(mu_);
    return BlockStats{cached_, live_, reused_, allocated_};
  }

 private:
  std::mutex mu_;
  std::unordered_map<std::size_t, std::vector<Block*>> free_;
  std::list<Block*> order_;
  std::size_t cached_ = 0, live_ = 0;
  std::uint64_t reused_ = 0, allocated_ = 0;
};

Block* Block::create(std::size_t bytes, bool zero) { return BlockCache::global().take(bytes, zero); }

void Block::release() {
  if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) BlockCache::global().put(this);
}

BlockStats block_stats() { return BlockCache::global().stats(); }

Block* owned_block(napi_env env, napi_value v) {
  napi_value ab;
  if (napi_get_typedarray_info(env, v, nullptr, nullptr, nullptr, &ab, nullptr) != napi_ok) return nullptr;
  bool tagged = false;
  if (napi_check_object_type_tag(env, ab, &kOwnedTag, &tagged) != napi_ok || !tagged) return nullptr;
  void* data = nullptr;
  if (napi_get_arraybuffer_info(env, ab, &data, nullptr) != napi_ok || data == nullptr) return nullptr;  // detached
  return Block::from_data(data);
}

Napi::Value allocate_array_buffer(Napi::Env env, std::size_t bytes, bool zero) {
  Block* b = Block::create(bytes, zero);
  b->retain();  // the finalizer's reference; create()'s stays with this frame
  napi_value ab;
  auto finalize = [](napi_env, void*, void* hint) { static_cast<Block*>(hint)->release(); };
  if (napi_create_external_arraybuffer(env, b->data(), bytes, finalize, b, &ab) != napi_ok) {
    // Refused (a length over the runtime's limit, external memory not
    // allowed, the environment going away): the caller uses memory of its own.
    // On some refusals Node has already run the finalizer; nothing else can
    // hold the block yet, so its count says whether it did.
    if (b->refs() == 2) b->release();
    b->release();
    napi_value pending;
    bool has = false;
    if (napi_is_exception_pending(env, &has) == napi_ok && has) napi_get_and_clear_last_exception(env, &pending);
    return Napi::Value();
  }
  b->release();
  // A failed tag only means the addon treats the memory as not its own
  // (async calls copy it).
  napi_type_tag_object(env, ab, &kOwnedTag);
  return Napi::Value(env, ab);
}

}  // namespace addon
}  // namespace attn
