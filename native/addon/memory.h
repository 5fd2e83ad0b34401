// Memory the addon owns: the storage of the library's tensors (handed to
// JavaScript as external ArrayBuffers, marked as the addon's) and the private
// copies async calls make of memory they do not own.
//
// A block is reference counted. The ArrayBuffer over it holds one reference,
// dropped by its finalizer: Node runs that finalizer once V8 has freed the
// backing store (after every ArrayBuffer sharing it is gone) or when the
// environment is torn down (the ArrayBuffer is detached first). Each async
// job that uses the block holds another, so a job never outlives the memory
// it reads and writes, whatever JavaScript does to the ArrayBuffer meanwhile.
// A block whose count reaches zero goes to a process-wide cache of recently
// freed blocks (size classes, bounded total) and is handed out again, so a
// fresh multi-megabyte result does not fault in new pages on every call.
#pragma once

#include <napi.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <list>

namespace attn {
namespace addon {

class Block {
 public:
  // A block of at least `bytes` bytes (64-byte aligned), zeroed when `zero`,
  // with one reference. Throws std::bad_alloc.
  static Block* create(std::size_t bytes, bool zero);

  void retain() { refs_.fetch_add(1, std::memory_order_relaxed); }
  long refs() const { return refs_.load(std::memory_order_acquire); }
  // Drops a reference; the last one returns the block to the cache (or frees it).
  void release();

  void* data() { return reinterpret_cast<char*>(this) + kHeader; }
  std::size_t capacity() const { return capacity_; }

  // The block whose data() is p.
  static Block* from_data(void* p) { return reinterpret_cast<Block*>(static_cast<char*>(p) - kHeader); }

  static constexpr std::size_t kHeader = 64;

 private:
  Block(void* raw, std::size_t capacity) : raw_(raw), capacity_(capacity) {}
  friend class BlockCache;

  std::atomic<long> refs_{1};
  void* raw_;                          // what the system allocator returned
  std::size_t capacity_;               // usable bytes from data()
  std::list<Block*>::iterator lru_{};  // its place in the cache's age order while cached
};
static_assert(sizeof(Block) <= Block::kHeader, "the header fits before the data");

// The cache's counters, for tests and diagnostics.
struct BlockStats {
  std::size_t cached_bytes;   // in the cache, ready to be handed out
  std::size_t live_bytes;     // in blocks with references
  std::uint64_t reused;       // blocks handed out from the cache
  std::uint64_t allocated;    // blocks of a cached size (64 KiB and more) taken from the system allocator
};
BlockStats block_stats();

// The block behind typed array `v` when its memory is the addon's (its
// ArrayBuffer was made by allocate_array_buffer and is not detached), else null.
Block* owned_block(napi_env env, napi_value v);

// An external ArrayBuffer of `bytes` over a new block, marked as the addon's,
// or an empty value when this runtime refuses external ArrayBuffers.
// Throws std::bad_alloc.
Napi::Value allocate_array_buffer(Napi::Env env, std::size_t bytes, bool zero);

}  // namespace addon
}  // namespace attn
